//! `sign_jwt` and `verify_jwt`: thin SQL adapters over `integration_core::jwt`.
//! The key decides which algorithms a token may use, so `alg: none` and
//! algorithm confusion are refused; errors carry SQLSTATE 28000 for bad
//! tokens and 22023 for bad keys or arguments.

use crate::audit;
use crate::errors::{self, raise};
use integration_core::jwt::{self, JwtError, VerifyOptions};
use pgrx::prelude::*;
use pgrx::JsonB;

fn sqlstate(error: &JwtError) -> PgSqlErrorCode {
    match error.kind() {
        "bad_key" | "unsupported_alg" | "bad_claims" => {
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
        }
        _ => PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Signs `claims` with `key` (a secret of at least 32 bytes for HS*, a PEM
/// private key otherwise). Adds `iat` when absent, and `exp` when
/// `expires_in` is given.
#[pg_extern(volatile, parallel_safe)]
fn sign_jwt(
    claims: JsonB,
    key: &str,
    algorithm: default!(&str, "'HS256'"),
    expires_in: default!(Option<Interval>, "NULL"),
    kid: default!(Option<&str>, "NULL"),
) -> String {
    errors::statement_carries_secret();
    let mut claims = claims.0;
    let Some(map) = claims.as_object_mut() else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "JWT claims must be a JSON object",
            None,
        );
    };
    let now = unix_now();
    map.entry("iat").or_insert(now.into());
    if let Some(interval) = expires_in {
        if !interval.is_positive() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "expires_in must be a positive interval",
                None,
            );
        }
        // A month counts as 30 days, as in Postgres' interval arithmetic.
        let seconds = i64::try_from(interval.as_micros() / 1_000_000).unwrap_or(i64::MAX);
        map.insert("exp".into(), now.saturating_add(seconds).into());
    }
    jwt::sign(&claims, key, algorithm, kid)
        .unwrap_or_else(|e| raise(sqlstate(&e), format!("cannot sign JWT: {e}"), None))
}

/// Verifies `token` against `key` (a secret, a PEM public key or
/// certificate, a JWK or a JWKS) and returns its claims. `exp` is required
/// unless `require_exp` is false; `aud` and `iss` are checked when given, and
/// a token carrying an `aud` needs `audience`. Raises 28000 with the reason.
#[pg_extern(stable, parallel_restricted)]
fn verify_jwt(
    token: &str,
    key: &str,
    audience: default!(Option<&str>, "NULL"),
    issuer: default!(Option<&str>, "NULL"),
    leeway: default!(i32, 30),
    require_exp: default!(bool, true),
) -> JsonB {
    errors::statement_carries_secret();
    let options = VerifyOptions {
        leeway_secs: u64::try_from(leeway).unwrap_or_else(|_| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                "leeway must not be negative",
                None,
            )
        }),
        audience: audience.map(str::to_owned),
        issuer: issuer.map(str::to_owned),
        require_exp,
        ..VerifyOptions::default()
    };
    match jwt::verify(token, key, &options) {
        Ok(claims) => JsonB(claims),
        Err(e) => {
            audit::refuse("jwt.verify", "", &e.to_string());
            raise(sqlstate(&e), format!("invalid JWT: {e}"), None)
        }
    }
}

/// A fresh Ed25519 key for SSO session tokens: its kid (RFC 7638 thumbprint),
/// its private half as PKCS#8 PEM and its public half as a JWK. Used by
/// `rotate_signing_key` and `ensure_signing_key`; executable by the owner only.
#[pg_extern(volatile, parallel_unsafe)]
fn _generate_signing_key() -> TableIterator<
    'static,
    (
        name!(kid, String),
        name!(private_pem, String),
        name!(public_jwk, JsonB),
    ),
> {
    let key = integration_core::sso::generate_signing_key();
    TableIterator::once((key.kid, key.private_pem, JsonB(key.public_jwk)))
}
