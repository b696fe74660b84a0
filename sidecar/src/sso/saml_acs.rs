//! The SAML ACS (`POST /auth/{provider}/callback` with `SAMLResponse`) and
//! what it needs from the database. The IdP's POST is cross-site, so the
//! `SameSite=Lax` login cookie does not come with it: a SAML login in
//! progress is kept in `integration.saml_pending_requests` by the SHA-256 of
//! its RelayState (the login `state`) and taken there once. Assertion IDs
//! are spent in `integration.used_saml_assertions` (every replica refuses a
//! replay). Without those functions (an older extension) SAML logins are
//! refused (503), never accepted unrecorded.

use super::{
    check_redirect, complete, provider, record_failure, record_unsolicited, Credentials, SingleUse,
    SsoError,
};
use crate::state::AppState;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tokio_postgres::error::SqlState;

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A database error, or the extension lacking `function` (refused: 503).
fn db_error(function: &str, e: &tokio_postgres::Error) -> SsoError {
    if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) {
        SsoError::Unavailable(format!(
            "SAML logins need integration.{function}, which this extension lacks: upgrade pg_integration"
        ))
    } else {
        SsoError::Database(format!(
            "integration.{function} failed: {}",
            crate::db::describe(e)
        ))
    }
}

/// Keeps a SAML login in progress: the AuthnRequest's ID (in `keep`), where
/// to go afterwards, until `expires_at` (Unix time), found by `state`.
pub async fn store_pending(
    app: &AppState,
    provider: &str,
    state: &str,
    redirect_to: Option<&str>,
    keep: &Value,
    expires_at: i64,
) -> Result<(), SsoError> {
    let request_id = keep["request_id"]
        .as_str()
        .ok_or_else(|| SsoError::Internal("the SAML login kept no request ID".into()))?;
    let client = app
        .db
        .client()
        .await
        .map_err(|e| SsoError::Database(e.to_string()))?;
    client
        .execute(
            "SELECT integration.sso_saml_store_request($1, $2, $3, $4, $5, to_timestamp($6::float8))",
            &[
                &provider,
                &request_id,
                &sha256_hex(state),
                &redirect_to,
                keep,
                &(expires_at as f64),
            ],
        )
        .await
        .map_err(|e| db_error("sso_saml_store_request", &e))?;
    Ok(())
}

/// A SAML login in progress, taken (it cannot be taken again).
struct Pending {
    redirect_to: Option<String>,
    kept: Value,
}

/// Takes the provider's login in progress sent with `relay_state`; `None`
/// when there is none (never started, expired, or finished already).
async fn take_pending(
    app: &AppState,
    provider: &str,
    relay_state: &str,
) -> Result<Option<Pending>, SsoError> {
    let client = app
        .db
        .client()
        .await
        .map_err(|e| SsoError::Database(e.to_string()))?;
    let row = client
        .query_opt(
            "SELECT redirect_to, kept FROM integration.sso_saml_take_request($1, $2)",
            &[&provider, &sha256_hex(relay_state)],
        )
        .await
        .map_err(|e| db_error("sso_saml_take_request", &e))?;
    Ok(row.map(|row| Pending {
        redirect_to: row.get(0),
        kept: row.get(1),
    }))
}

/// Spends a SAML assertion's ID; a replay is refused.
pub async fn use_once(app: &AppState, provider: &str, once: &SingleUse) -> Result<(), SsoError> {
    let client = app
        .db
        .client()
        .await
        .map_err(|e| SsoError::Database(e.to_string()))?;
    let first: bool = client
        .query_one(
            "SELECT integration.sso_use_saml_assertion($1, $2, to_timestamp($3::float8))",
            &[&provider, &once.id_hash, &(once.until as f64)],
        )
        .await
        .map_err(|e| db_error("sso_use_saml_assertion", &e))?
        .get(0);
    if first {
        Ok(())
    } else {
        Err(SsoError::Rejected(
            "the SAML assertion was used already (a replayed response)".into(),
        ))
    }
}

/// `POST /auth/{provider}/callback` with `SAMLResponse` (and `RelayState`).
pub async fn handle(app: &AppState, name: &str, params: &HashMap<String, String>) -> Response {
    let provider = match provider(app, name) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let relay_state = params.get("RelayState").map(String::as_str);
    let pending = match relay_state {
        Some(relay_state) if !relay_state.is_empty() => {
            match take_pending(app, &provider.name, relay_state).await {
                Ok(pending) => pending,
                Err(e) => {
                    record_failure(app, &provider.name, &e, None).await;
                    return e.into_response();
                }
            }
        }
        _ => None,
    };
    let solicited = pending.is_some();
    let result = async {
        let protocol = provider
            .protocol
            .as_ref()
            .map_err(|e| SsoError::Unavailable(e.clone()))?;
        if !protocol.keeps_login_in_database() {
            return Err(SsoError::BadRequest(format!(
                "SSO provider {} is not a SAML provider: it takes no SAMLResponse",
                provider.name
            )));
        }
        // No login in progress: an IdP-initiated login, which the protocol
        // accepts only when the provider allows it.
        let (redirect_to, kept) = match pending {
            Some(p) => (p.redirect_to, p.kept),
            None => (None, Value::Null),
        };
        // The allowlist may have changed since the login started.
        check_redirect(&provider, redirect_to.as_deref())?;
        let identity = protocol
            .finish_login(Credentials::Callback {
                params,
                kept: &kept,
            })
            .await?;
        Ok((identity, redirect_to))
    }
    .await;
    match result {
        Ok((identity, redirect_to)) => {
            complete(app, &provider, identity, redirect_to.as_deref()).await
        }
        // Anyone may post these at will: audited in bulk.
        Err(e) if !solicited => {
            record_unsolicited(app, &provider.name, &e).await;
            e.into_response()
        }
        Err(e) => {
            record_failure(app, &provider.name, &e, None).await;
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_states_and_assertion_ids_are_kept_as_sha256_hex() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
