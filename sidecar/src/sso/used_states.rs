//! Login states are single-use: a callback spends its `state` before the
//! provider is asked anything, so a kept login cookie cannot finish a second
//! login. The record is `integration.sso_use_login_state(hash, expires_at)`
//! (shared by every replica); with an extension that lacks that function
//! the sidecar falls back to a record of its own, which holds for this
//! replica only, and says so in its log. Only a SHA-256 of the state is kept.

use super::SsoError;
use crate::state::AppState;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Most states the local record keeps; past it (after expired ones are
/// dropped) new logins are refused rather than made replayable.
const MAX_LOCAL_STATES: usize = 100_000;

/// The local record: state hash → Unix time it expires.
#[derive(Default)]
pub struct LocalStates {
    used: Mutex<HashMap<[u8; 32], i64>>,
    /// Whether the database has the shared record (false once it said it has not).
    no_shared: AtomicBool,
}

impl LocalStates {
    /// True when `hash` was not used yet (it is now).
    fn spend(&self, hash: [u8; 32], expires_at: i64, now: i64) -> Result<bool, SsoError> {
        let mut used = self
            .used
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if used.len() >= MAX_LOCAL_STATES {
            used.retain(|_, exp| *exp >= now);
        }
        if used.len() >= MAX_LOCAL_STATES {
            return Err(SsoError::Unavailable(
                "too many logins in progress; retry in a few minutes".into(),
            ));
        }
        Ok(used.insert(hash, expires_at).is_none())
    }
}

/// Spends the login state `state` (valid until `expires_at`, Unix time);
/// refuses one spent already.
pub async fn spend(app: &AppState, state: &str, expires_at: i64) -> Result<(), SsoError> {
    let hash: [u8; 32] = Sha256::digest(state.as_bytes()).into();
    let local = &app.sso.used_states;
    let first = if local.no_shared.load(Ordering::Relaxed) {
        local.spend(hash, expires_at, super::session::unix_now())?
    } else {
        match spend_shared(app, &hash, expires_at).await {
            Ok(first) => first,
            Err(Unshared::Failed(e)) => return Err(e),
            Err(Unshared::Missing) => {
                tracing::warn!(
                    "integration.sso_use_login_state is missing (the extension is older than \
                     the sidecar): login states are single-use on this replica only"
                );
                local.no_shared.store(true, Ordering::Relaxed);
                local.spend(hash, expires_at, super::session::unix_now())?
            }
        }
    };
    if first {
        Ok(())
    } else {
        Err(SsoError::BadRequest(
            "this login was finished already: start again at /auth/{provider}/login".into(),
        ))
    }
}

/// Why the shared record did not answer.
enum Unshared {
    /// The extension lacks the function.
    Missing,
    /// The database failed: the login is refused (503), a state is never
    /// accepted unrecorded.
    Failed(SsoError),
}

/// The shared record: true when the state was not used yet.
async fn spend_shared(app: &AppState, hash: &[u8; 32], expires_at: i64) -> Result<bool, Unshared> {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let client = app
        .db
        .client()
        .await
        .map_err(|e| Unshared::Failed(SsoError::Database(e.to_string())))?;
    client
        .query_one(
            "SELECT integration.sso_use_login_state($1, to_timestamp($2::float8))",
            &[&hex, &(expires_at as f64)],
        )
        .await
        .map(|row| row.get::<_, bool>(0))
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION) {
                Unshared::Missing
            } else {
                Unshared::Failed(SsoError::Database(format!(
                    "cannot record a used login state: {}",
                    crate::db::describe(&e)
                )))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_spent_once_and_a_full_record_refuses() {
        let local = LocalStates::default();
        assert!(matches!(local.spend([1; 32], 100, 50), Ok(true)));
        assert!(matches!(local.spend([1; 32], 100, 50), Ok(false)));
        assert!(matches!(local.spend([2; 32], 100, 50), Ok(true)));
    }
}
