"""Verifies JWTs with PyJWT (and `cryptography` for EdDSA), as a third party
would: the keys come from a JWKS fetched over HTTP, the token must be EdDSA,
carry the expected `aud` (and `iss`), an unexpired `exp`, a `sub` and a
string `role`. Run by tests/tests/independent_verifiers.rs with the test
virtualenv's python. Same input and output as jose_verify.mjs: a JSON object
on stdin, one JSON line on stdout with, for each token name,
{"ok": true, "claims": {...}} or {"ok": false, "error": "<exception class>", "message": ...}.
"""

import json
import sys

import jwt


def main():
    request = json.load(sys.stdin)
    keys = jwt.PyJWKClient(request["jwks_url"])
    results = {}
    for name, token in request["tokens"].items():
        try:
            key = keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["EdDSA"],
                audience=request["audience"],
                issuer=request["issuer"],
                options={"require": ["exp", "aud", "iss", "sub", "role"]},
            )
            if not isinstance(claims["role"], str):
                raise jwt.InvalidTokenError("the role claim is not a string")
            results[name] = {"ok": True, "claims": claims}
        except jwt.PyJWTError as e:
            results[name] = {"ok": False, "error": type(e).__name__, "message": str(e)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
