"""A SAML 2.0 identity provider on pysaml2 for the end-to-end tests
(tests/src/saml_idp.rs runs it; it signs with Debian's xmlsec1, RSA-SHA256).

Settings come from the environment: PORT (it listens on 127.0.0.1 and calls
itself http://localhost:PORT, another site than the sidecar's 127.0.0.1),
KEY_FILE and CERT_FILE (its signing key and certificate, made by the
harness), SP_METADATA (space-separated URLs of the SP metadata documents of
the providers it serves, fetched at its first login), SIGN (`response`: the
Response and the Assertion are signed; `assertion`: only the Assertion),
WANT_SIGNED_REQUESTS (`1`: AuthnRequests must carry a redirect signature by
a signing certificate of the SP's metadata; unsigned or badly signed ones
get a 403), ENCRYPT (`1`: the signed Assertion is encrypted, AES-256-CBC with
RSA-OAEP, to the encryption certificate of the SP's metadata; an SP whose
metadata names none gets it encrypted to the IdP's own certificate, as a
misconfigured IdP would).

Pages: GET /metadata (its own metadata), GET /sso (the HTTP-Redirect
binding: a password form), POST /login (checks the password and answers
with the form that posts the SAMLResponse to the SP's ACS), GET
/idp-initiated?sp=ENTITY_ID&RelayState=… (the same form, then an unsolicited
Response). Users: alice (groups staff, dba) and bob (group users).
"""

import html
import os
import secrets
import tempfile
import threading
import urllib.parse
import urllib.request
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIServer, make_server

import saml2.entity
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, sigver, xmldsig
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_UNSPECIFIED, NameID
from saml2.server import Server

PORT = int(os.environ["PORT"])
BASE = f"http://localhost:{PORT}"
SIGN_RESPONSE = os.environ.get("SIGN", "response") == "response"
WANT_SIGNED_REQUESTS = os.environ.get("WANT_SIGNED_REQUESTS") == "1"
ENCRYPT = os.environ.get("ENCRYPT") == "1"
AES256_CBC = "http://www.w3.org/2001/04/xmlenc#aes256-cbc"
USERS = {
    "alice": {
        "password": "alice-password",
        "identity": {"mail": ["alice@example.org"], "cn": ["Alice Liddell"], "groups": ["staff", "dba"]},
    },
    "bob": {
        "password": "bob-password",
        "identity": {"mail": ["bob@example.org"], "cn": ["Bob Bobson"], "groups": ["users"]},
    },
}
PASSWORD_CLASS = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"


def config(sp_metadata_files):
    conf = IdPConfig()
    conf.load(
        {
            "entityid": f"{BASE}/metadata",
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [(f"{BASE}/sso", BINDING_HTTP_REDIRECT)],
                    },
                    "name_id_format": [NAMEID_FORMAT_EMAILADDRESS, NAMEID_FORMAT_UNSPECIFIED],
                    "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None}},
                    "sign_response": SIGN_RESPONSE,
                    "sign_assertion": True,
                    "want_authn_requests_signed": WANT_SIGNED_REQUESTS,
                },
            },
            "key_file": os.environ["KEY_FILE"],
            "cert_file": os.environ["CERT_FILE"],
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "metadata": {"local": sp_metadata_files},
        }
    )
    return conf


_server = None
_server_lock = threading.Lock()
# Logins waiting for their password: key -> (sp entity id, request id or None, acs, relay state).
_pending = {}


def _aes_encryption_part(**kwargs):
    return _pysaml2_encryption_part(msg_enc=AES256_CBC, **kwargs)


# pysaml2 encrypts with 3DES unless told otherwise, which the sidecar
# refuses; real IdPs are set to AES. Its encryption template and session key
# are switched to AES-256-CBC here.
_pysaml2_encryption_part = sigver.pre_encryption_part
saml2.entity.pre_encryption_part = _aes_encryption_part


def _aes_session_key(encrypt_assertion):
    def encrypt(statement, enc_key, template, key_type=None, node_xpath=None):
        return encrypt_assertion(statement, enc_key, template, "aes-256", node_xpath)

    return encrypt


def server():
    """The pysaml2 Server, built at the first login with the SPs' metadata."""
    global _server
    with _server_lock:
        if _server is None:
            folder = tempfile.mkdtemp(prefix="saml-idp-sp-")
            files = []
            for i, url in enumerate(os.environ.get("SP_METADATA", "").split()):
                path = os.path.join(folder, f"sp-{i}.xml")
                with urllib.request.urlopen(url, timeout=10) as answer, open(path, "wb") as out:
                    out.write(answer.read())
                files.append(path)
            _server = Server(config=config(files))
            _server.sec.encrypt_assertion = _aes_session_key(_server.sec.encrypt_assertion)
        return _server


def page(start_response, status, body, content_type="text/html; charset=utf-8"):
    data = body.encode()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]


def login_form(key, error=""):
    note = f"<p class=error>{html.escape(error)}</p>" if error else ""
    return f"""<!doctype html><title>Test IdP login</title>{note}
<form method="post" action="/login">
<input type="hidden" name="key" value="{html.escape(key)}">
<label>User <input name="username" id="username"></label>
<label>Password <input type="password" name="password" id="password"></label>
<button type="submit" id="submit">Sign in</button>
</form>"""


def app(environ, start_response):
    path = environ["PATH_INFO"]
    method = environ["REQUEST_METHOD"]
    query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    if method == "GET" and path == "/metadata":
        xml = str(entity_descriptor(config([])))
        return page(start_response, "200 OK", xml, "application/samlmetadata+xml")
    if method == "GET" and path == "/sso":
        srv = server()
        try:
            request = srv.parse_authn_request(
                query["SAMLRequest"],
                BINDING_HTTP_REDIRECT,
                relay_state=query.get("RelayState"),
                sigalg=query.get("SigAlg"),
                signature=query.get("Signature"),
            ).message
        except Exception as e:
            print(f"AuthnRequest refused: {type(e).__name__}: {e}", flush=True)
            return page(start_response, "403 Forbidden", f"AuthnRequest refused: {type(e).__name__}", "text/plain")
        sp = request.issuer.text
        acs = request.assertion_consumer_service_url or srv.metadata.assertion_consumer_service(sp, BINDING_HTTP_POST)[0]["location"]
        key = secrets.token_urlsafe(16)
        _pending[key] = (sp, request.id, acs, query.get("RelayState"))
        return page(start_response, "200 OK", login_form(key))
    if method == "GET" and path == "/idp-initiated":
        srv = server()
        sp = query["sp"]
        acs = srv.metadata.assertion_consumer_service(sp, BINDING_HTTP_POST)[0]["location"]
        key = secrets.token_urlsafe(16)
        _pending[key] = (sp, None, acs, query.get("RelayState"))
        return page(start_response, "200 OK", login_form(key))
    if method == "POST" and path == "/login":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        form = dict(urllib.parse.parse_qsl(environ["wsgi.input"].read(length).decode()))
        key = form.get("key", "")
        if key not in _pending:
            return page(start_response, "400 Bad Request", "unknown login")
        user = USERS.get(form.get("username", ""))
        if user is None or not secrets.compare_digest(user["password"], form.get("password", "")):
            return page(start_response, "200 OK", login_form(key, "wrong user or password"))
        sp, request_id, acs, relay_state = _pending.pop(key)
        srv = server()
        identity = user["identity"]
        encryption = {}
        if ENCRYPT:
            encryption["encrypt_assertion"] = True
            if not srv.has_encrypt_cert_in_metadata(sp):
                with open(os.environ["CERT_FILE"]) as own:
                    encryption["encrypt_cert_assertion"] = own.read()
        response = srv.create_authn_response(
            identity,
            in_response_to=request_id,
            destination=acs,
            sp_entity_id=sp,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=identity["mail"][0]),
            authn={"class_ref": PASSWORD_CLASS},
            sign_response=SIGN_RESPONSE,
            sign_assertion=True,
            sign_alg=xmldsig.SIG_RSA_SHA256,
            digest_alg=xmldsig.DIGEST_SHA256,
            **encryption,
        )
        http = srv.apply_binding(BINDING_HTTP_POST, str(response), acs, relay_state, response=True)
        return page(start_response, "200 OK", http["data"])
    return page(start_response, "404 Not Found", "not found", "text/plain")


class Threaded(ThreadingMixIn, WSGIServer):
    daemon_threads = True


if __name__ == "__main__":
    with make_server("127.0.0.1", PORT, app, server_class=Threaded) as httpd:
        print(f"SAML IdP on {BASE}", flush=True)
        httpd.serve_forever()
