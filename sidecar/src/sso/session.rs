//! Session tokens and cookies. A session is an EdDSA JWT signed with the
//! active key of `integration.signing_keys` (claims `sub`, `role`, `email`,
//! `name`, `idp`, `identity`, `exp`, `iat`, `iss`, `aud`, `jti`); it is set as a
//! `Secure` (under https), `HttpOnly`, `SameSite=Lax` cookie and verified
//! against every published key, so tokens signed before a rotation stay valid.

use super::config::Keys;
use super::SsoError;
use axum::http::{header, HeaderMap, HeaderValue};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_core::jwt::{self, VerifyOptions};
use integration_core::sso::SESSION_ALG;
use rand::rngs::OsRng;
use rand::RngCore;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `aud` of every session token; `integration.verify_jwt(token)` expects it.
pub const AUDIENCE: &str = "pg_integration";
/// The cookie holding the session token.
pub const COOKIE: &str = "pg_integration_session";
/// Longest token or cookie value read from a request.
const MAX_TOKEN_BYTES: usize = 8192;

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `bytes` random bytes, base64url: state, nonce, PKCE verifier, `jti`.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Who a session is for, as minted.
pub struct SessionClaims<'a> {
    pub provider: &'a str,
    pub subject: &'a str,
    pub role: &'a str,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub identity_id: i64,
    pub lifetime_secs: i64,
}

/// The session's `sub`: `provider:subject`. Provider names hold no `:`, so
/// the same subject at two providers never gives the same `sub`; the raw
/// subject is the `idp_sub` claim and the provider the `idp` claim.
pub fn session_subject(provider: &str, subject: &str) -> String {
    format!("{provider}:{subject}")
}

/// Signs a session token with the active key; returns it, its expiry and its `jti`.
pub fn mint(
    keys: &Keys,
    issuer: &str,
    who: &SessionClaims<'_>,
) -> Result<(String, i64, String), SsoError> {
    let active = keys
        .active
        .as_ref()
        .ok_or_else(|| SsoError::Unavailable("no active signing key yet".into()))?;
    let now = unix_now();
    let exp = now + who.lifetime_secs;
    let jti = random_token(16);
    let claims = json!({
        "iss": issuer, "aud": AUDIENCE, "sub": session_subject(who.provider, who.subject),
        "idp_sub": who.subject, "role": who.role,
        "email": who.email, "name": who.name, "idp": who.provider,
        "identity": who.identity_id, "iat": now, "exp": exp, "jti": jti,
    });
    let token = jwt::sign(&claims, &active.private_pem, SESSION_ALG, Some(&active.kid))
        .map_err(|e| SsoError::Internal(format!("cannot sign the session token: {e}")))?;
    Ok((token, exp, jti))
}

/// Verifies a token minted by [`mint`] (any published key) and returns its claims.
pub fn verify(keys: &Keys, issuer: &str, token: &str, audience: &str) -> Result<Value, String> {
    let options = VerifyOptions {
        audience: Some(audience.to_owned()),
        issuer: Some(issuer.to_owned()),
        ..VerifyOptions::default()
    };
    jwt::verify(token, &keys.jwks(unix_now()).to_string(), &options).map_err(|e| e.to_string())
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| v.len() <= MAX_TOKEN_BYTES)
}

/// The session token of a request: the cookie, else an `Authorization: Bearer` header.
pub fn request_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, COOKIE).or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|v| v.len() <= MAX_TOKEN_BYTES)
    })
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: i64, path: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x_pg_integration_session=evil; pg_integration_session=tok"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("tok"));
        assert_eq!(request_token(&headers), Some("tok"));
        let mut bearer = HeaderMap::new();
        bearer.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(request_token(&bearer), Some("abc"));
        assert_eq!(request_token(&HeaderMap::new()), None);
    }

    #[test]
    fn session_cookies_are_http_only_same_site_and_secure_under_https() {
        let value = set_cookie(COOKIE, "tok", 60, "/", true);
        assert_eq!(
            value.to_str().unwrap_or_default(),
            "pg_integration_session=tok; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        let plain = set_cookie(COOKIE, "", 0, "/", false);
        assert!(!plain.to_str().unwrap_or_default().contains("Secure"));
    }
}
