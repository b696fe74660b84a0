//! Liveness and readiness probes. `/healthz` answers 200 while the process
//! serves; `/readyz` answers 200 only when the database answers `SELECT 1`
//! within the ping timeout, else 503; why is logged (with the request id),
//! not answered.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.check_database().await {
        Ok(()) => Json(json!({ "status": "ready", "database": "ok" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "unavailable",
                    "database": "unreachable",
                    "error": crate::errors::DATABASE_UNAVAILABLE,
                })),
            )
                .into_response()
        }
    }
}
