//! Back-channel single logout: a login whose protocol names a logout key
//! (CAS: the service ticket's SHA-256) keeps it with its session
//! (`integration.sso_cas_link_session`); the identity provider's later
//! `POST` of a `logoutRequest` to the callback ends that session
//! (`integration.sso_cas_single_logout`, audited as a logout). A request for
//! an unknown key is answered 200 and changes nothing. With an extension
//! older than the sidecar (no such functions) logins go on without single
//! logout, and the log says so.

use super::config::Provider;
use super::{provider, record_unsolicited, SsoError};
use crate::state::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::error::SqlState;

/// Set once the database said it has no record of logout keys.
static NO_LINKS: AtomicBool = AtomicBool::new(false);

/// Keeps `key` with the session `jti` (expiring at `exp`, Unix time).
pub async fn link(
    state: &AppState,
    provider: &Provider,
    key: &str,
    jti: &str,
    subject: &str,
    exp: i64,
) -> Result<(), SsoError> {
    if NO_LINKS.load(Ordering::Relaxed) {
        return Ok(());
    }
    let client = state
        .db
        .client()
        .await
        .map_err(|e| SsoError::Database(e.to_string()))?;
    let result = client
        .execute(
            "SELECT integration.sso_cas_link_session($1, $2, $3, $4, to_timestamp($5::bigint))",
            &[&provider.name, &key, &jti, &subject, &exp],
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) => {
            tracing::warn!(
                "integration.sso_cas_link_session is missing (the extension is older than the \
                 sidecar): CAS sessions cannot be ended by single logout until it is updated"
            );
            NO_LINKS.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(SsoError::Database(format!(
            "cannot keep the session for single logout: {}",
            crate::db::describe(&e)
        ))),
    }
}

/// `POST /auth/{provider}/callback` with a `logoutRequest` field.
pub async fn handle(state: &AppState, name: &str, logout_request: &str) -> Response {
    let provider = match provider(state, name) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = async {
        let protocol = provider
            .protocol
            .as_ref()
            .map_err(|e| SsoError::Unavailable(e.clone()))?;
        let key = protocol.logout_request_key(logout_request)?;
        let client = state
            .db
            .client()
            .await
            .map_err(|e| SsoError::Database(e.to_string()))?;
        client
            .query_one(
                "SELECT integration.sso_cas_single_logout($1, $2)",
                &[&provider.name, &key],
            )
            .await
            .map(|row| row.get::<_, bool>(0))
            .map_err(|e| {
                if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) {
                    SsoError::Unavailable(
                        "single logout needs a newer pg_integration extension".into(),
                    )
                } else {
                    SsoError::Database(format!(
                        "cannot end the session: {}",
                        crate::db::describe(&e)
                    ))
                }
            })
    }
    .await;
    match result {
        Ok(ended) => {
            tracing::info!(provider = %provider.name, ended, "SSO single logout");
            (StatusCode::OK, Json(json!({ "session_ended": ended }))).into_response()
        }
        // Anyone may post one: refusals are audited in bulk.
        Err(e) => {
            record_unsolicited(state, &provider.name, &e).await;
            e.into_response()
        }
    }
}
