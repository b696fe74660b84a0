// Verifies JWTs with panva's `jose`, as a third party would: the keys come
// from a JWKS fetched over HTTP, the token must be EdDSA, carry the expected
// `aud` (and `iss`), an unexpired `exp`, a `sub` and a string `role`.
// Run by tests/tests/independent_verifiers.rs from build/oidc (where `jose`
// is installed). Input on stdin, one JSON object:
//   {"jwks_url": "...", "audience": "...", "issuer": "...", "tokens": {"name": "eyJ…", …}}
// Output on stdout, one JSON line, for each name:
//   {"ok": true, "claims": {…}} or {"ok": false, "error": "<jose error code>", "claim": …, "message": …}
import { createRemoteJWKSet, jwtVerify } from 'jose';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const { jwks_url: jwksUrl, audience, issuer, tokens } = JSON.parse(input);
const jwks = createRemoteJWKSet(new URL(jwksUrl));
const results = {};
for (const [name, token] of Object.entries(tokens)) {
  try {
    const { payload } = await jwtVerify(token, jwks, {
      algorithms: ['EdDSA'],
      audience,
      issuer,
      requiredClaims: ['exp', 'sub', 'role'],
    });
    if (typeof payload.role !== 'string') {
      throw Object.assign(new Error('the role claim is not a string'), { code: 'ROLE_NOT_A_STRING' });
    }
    results[name] = { ok: true, claims: payload };
  } catch (e) {
    results[name] = { ok: false, error: e.code ?? e.name, claim: e.claim ?? null, message: e.message };
  }
}
console.log(JSON.stringify(results));
