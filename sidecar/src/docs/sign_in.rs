//! Signing in to the docs from a browser with an API key of scope `docs`
//! (`authenticated` mode). A browser asking for a page without credentials
//! gets a small form ([`refusal`], 401); it posts the key to
//! `POST /docs/key`, which checks it as the middleware does and sets the
//! cookie [`COOKIE`] for [`LIFETIME_SECS`]: `HttpOnly`, `SameSite=Strict`,
//! `Secure` under https. The cookie never holds the key: only its id and
//! the cookie's expiry, with an HMAC-SHA256 under a secret derived from the
//! active session signing key; every request checks the HMAC in constant
//! time and asks `integration.api_key_allows(id, 'docs')`, so a revoked,
//! expired or narrowed key is refused at once. Rotating the signing key
//! ends these sign-ins. A post from another origin is refused (no
//! cross-site sign-in).

use super::html::{self, escape};
use super::{key_access, Access, SCOPE};
use crate::errors::{json_error, DATABASE_UNAVAILABLE};
use crate::sso::session::{self, unix_now};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The cookie of a docs sign-in.
pub const COOKIE: &str = "pg_integration_docs";
/// How long a sign-in lasts: 8 hours.
pub const LIFETIME_SECS: i64 = 8 * 60 * 60;
/// Binds a cookie to this use (the label of the secret's derivation and of
/// every HMAC).
const LABEL: &[u8] = b"pg_integration docs sign-in v2";
/// A cookie's body: the key id and the expiry, 8 bytes each.
const BODY_BYTES: usize = 16;
const TAG_BYTES: usize = 32;

/// The form's fields.
#[derive(serde::Deserialize)]
pub struct KeyForm {
    key: String,
    /// Which page to go back to: `sql` for `/docs/sql`, else `/docs/`.
    #[serde(default)]
    then: String,
}

/// Whether the request is a browser's asking for a page.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// A refusal of the docs at `path` with `status`: the sign-in form for a
/// browser, the JSON error for anyone else.
pub fn refusal(headers: &HeaderMap, path: &str, status: StatusCode, message: &str) -> Response {
    if !wants_html(headers) {
        return json_error(status, message);
    }
    // Relative, so a reverse proxy's path prefix is kept.
    let action = if path.starts_with("/docs/") {
        "key"
    } else {
        "docs/key"
    };
    let then = if path == "/docs/sql" { "sql" } else { "" };
    form(status, action, then, message)
}

fn form(status: StatusCode, action: &str, then: &str, message: &str) -> Response {
    let body = format!(
        "<h1>pg_integration API docs</h1>\n<p class=\"error\">{}</p>\n\
         <form method=\"post\" action=\"{}\"><p><label for=\"key\">An API key with scope \
         <code>{SCOPE}</code></label><br><input id=\"key\" name=\"key\" type=\"password\" \
         autocomplete=\"off\" required autofocus></p><input type=\"hidden\" name=\"then\" \
         value=\"{}\"><p><button type=\"submit\">Sign in</button></p></form>\n\
         <p>A session of this sidecar (an SSO login) opens the docs too.</p>",
        escape(message),
        escape(action),
        escape(then)
    );
    html::respond(status, html::document("Sign in to the API docs", &body))
}

/// `POST /docs/key`: a key of scope `docs` gets the cookie and a redirect
/// to the page it came from; another key 403, an invalid one 401 (the form
/// again for a browser).
pub async fn post_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<KeyForm>,
) -> Response {
    if !crate::sso::from_own_origin(&state, &headers) {
        return json_error(
            StatusCode::FORBIDDEN,
            "a key may be posted only from the sidecar's own origin (PUBLIC_URL)",
        );
    }
    let then = if form.then == "sql" { "sql" } else { "" };
    let key = form.key.trim();
    let refuse = |status, message: String| {
        if wants_html(&headers) {
            self::form(status, "key", then, &message)
        } else {
            json_error(status, message)
        }
    };
    let id = match key_access(&state, key).await {
        Ok(Access::Granted(id)) => id,
        Ok(Access::WithoutScope) => {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("the API key lacks scope {SCOPE}"),
            )
        }
        Ok(Access::Refused) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                format!("the API key is invalid; the docs need one with scope {SCOPE}"),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot verify an API key for the docs");
            return json_error(StatusCode::SERVICE_UNAVAILABLE, DATABASE_UNAVAILABLE);
        }
    };
    let Some(signed) = secret(&state).map(|s| sign(&s, id, unix_now() + LIFETIME_SECS)) else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the signing keys are not loaded yet",
        );
    };
    let mut response = (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, format!("./{then}"))],
    )
        .into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&signed, LIFETIME_SECS, state.sso.secure_cookies),
    );
    response
}

/// The key id of the request's sign-in cookie, if it carries one whose
/// HMAC holds and which has not expired (the key itself is not checked here).
pub fn cookie_key_id(state: &AppState, headers: &HeaderMap) -> Option<i64> {
    let value = session::cookie(headers, COOKIE)?;
    verify(&secret(state)?, value, unix_now())
}

/// A `Set-Cookie` of the sign-in; `max_age` 0 deletes it.
pub fn set_cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The sealing secret: HMAC-SHA256 of [`LABEL`] under the active signing
/// key's private PEM, so every replica derives the same one.
fn secret(state: &AppState) -> Option<[u8; 32]> {
    let keys = state.sso.cache.keys()?;
    let active = keys.active.as_ref()?;
    derive(&active.private_pem)
}

fn derive(private_pem: &str) -> Option<[u8; 32]> {
    let mut mac = Hmac::<Sha256>::new_from_slice(private_pem.as_bytes()).ok()?;
    mac.update(LABEL);
    Some(mac.finalize().into_bytes().into())
}

fn mac(secret: &[u8; 32], body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(LABEL);
    mac.update(body);
    mac
}

/// Key `id` and the expiry `exp` (Unix seconds) with their HMAC, base64url.
fn sign(secret: &[u8; 32], id: i64, exp: i64) -> String {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&exp.to_be_bytes());
    let tag = mac(secret, &out).finalize().into_bytes();
    out.extend_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(out)
}

/// The key id of `value`, if its HMAC under `secret` holds (compared in
/// constant time) and its expiry is after `now`.
fn verify(secret: &[u8; 32], value: &str, now: i64) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
    if bytes.len() != BODY_BYTES + TAG_BYTES {
        return None;
    }
    let (body, tag) = bytes.split_at(BODY_BYTES);
    mac(secret, body).verify_slice(tag).ok()?;
    let id = i64::from_be_bytes(body[..8].try_into().ok()?);
    let exp = i64::from_be_bytes(body[8..].try_into().ok()?);
    (exp > now).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_names_its_key_holds_with_its_secret_only_and_until_it_expires() {
        let secret = derive("-----BEGIN PRIVATE KEY-----one").expect("derived");
        let other = derive("-----BEGIN PRIVATE KEY-----two").expect("derived");
        let value = sign(&secret, 12, 1_000);
        assert_eq!(verify(&secret, &value, 999), Some(12));
        assert_eq!(verify(&secret, &value, 1_000), None, "expired");
        assert_eq!(verify(&other, &value, 999), None, "another signing key");
        let mut bytes = URL_SAFE_NO_PAD.decode(&value).expect("base64");
        bytes[7] ^= 1; // another key id
        assert_eq!(verify(&secret, &URL_SAFE_NO_PAD.encode(&bytes), 999), None);
        bytes[7] ^= 1;
        bytes[15] ^= 1; // a later expiry
        assert_eq!(verify(&secret, &URL_SAFE_NO_PAD.encode(&bytes), 999), None);
        assert_eq!(verify(&secret, "short", 999), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_https() {
        let value = set_cookie("v", LIFETIME_SECS, true);
        assert_eq!(
            value.to_str().unwrap_or_default(),
            "pg_integration_docs=v; Path=/; Max-Age=28800; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie("", 0, false)
            .to_str()
            .unwrap_or_default()
            .contains("Secure"));
    }

    #[tokio::test]
    async fn browsers_get_the_form_and_other_clients_json() {
        let mut browser = HeaderMap::new();
        browser.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
        );
        let page = refusal(&browser, "/docs/sql", StatusCode::UNAUTHORIZED, "<no key>");
        assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
        assert!(page.headers()[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|v| v.starts_with("text/html")));
        let body = axum::body::to_bytes(page.into_body(), usize::MAX)
            .await
            .expect("the page");
        let body = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(
            body.contains("<form method=\"post\" action=\"key\">"),
            "{body}"
        );
        assert!(body.contains("name=\"then\" value=\"sql\""), "{body}");
        assert!(body.contains("&lt;no key&gt;"), "{body}");
        assert!(!body.contains("<script"), "{body}");
        let root = refusal(&browser, "/docs", StatusCode::UNAUTHORIZED, "x");
        let body = axum::body::to_bytes(root.into_body(), usize::MAX)
            .await
            .expect("the page");
        let body = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(body.contains("action=\"docs/key\""), "{body}");
        let api = refusal(&HeaderMap::new(), "/docs/", StatusCode::UNAUTHORIZED, "x");
        assert_eq!(api.headers()[header::CONTENT_TYPE], "application/json");
    }
}
