//! `POST /webhooks/{name}`: looks the webhook up in the cached configuration,
//! checks the source address, the body size, the signature (over the raw
//! bytes), the content type and the JSON Schema, then hands the event to the
//! group committer and answers 2xx only once its transaction committed.
//! Every answer is JSON; refusals are audited and counted per webhook.

mod body;
mod commit;
mod config;
mod refusals;

use crate::errors::json_error;
use crate::metrics::Metrics;
use crate::state::AppState;
use axum::body::to_bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use integration_core::webhooks::{api_key, Check, Headers, Scheme};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use commit::Committer;
pub use config::{Cache, Table, Webhook};
pub use refusals::Refusals;

/// Seconds a sender is asked to wait before retrying after a 503.
const RETRY_AFTER_SECONDS: &str = "5";
/// Most schema violations listed in a 422 answer.
const MAX_SCHEMA_ERRORS: usize = 20;
/// Longest a delivery waits for a validation slot and its JSON Schema
/// validation (a `pattern` can backtrack for seconds on a crafted string).
const SCHEMA_BUDGET: Duration = Duration::from_secs(10);

/// What the webhook route needs: the configuration cache, the committer and
/// the refusal audit queue.
#[derive(Clone)]
pub struct Webhooks {
    pub cache: Cache,
    pub committer: Committer,
    pub refusals: Refusals,
}

impl Webhooks {
    /// Starts the configuration reloader, the commit workers and the audit writer.
    pub fn start(db: &crate::db::Database, metrics: Arc<Metrics>, workers: usize) -> Webhooks {
        let cache = Cache::default();
        crate::listen::spawn_reloader(cache.clone(), db.clone());
        Webhooks {
            cache,
            committer: Committer::start(db.clone(), metrics.clone(), workers),
            refusals: Refusals::start(db.clone(), metrics),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks/{name}", post(receive))
}

/// Header access for the signature schemes.
pub(crate) struct RequestHeaders<'a>(pub(crate) &'a HeaderMap);

impl Headers for RequestHeaders<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }

    fn present(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// A refusal: its status, a metrics/audit reason and the message sent back.
struct Refused {
    status: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl Refused {
    fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            reason,
            message: message.into(),
            details: None,
        }
    }
}

async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| config::canonical(info.0.ip()));
    let webhooks = &state.webhooks;
    let webhook = match webhooks.cache.find(&name, &state.db).await {
        config::Lookup::Found(w) if w.enabled => w,
        config::Lookup::Found(_) | config::Lookup::Unknown => {
            state.metrics.count_webhook("_unknown", "not_found");
            return json_error(StatusCode::NOT_FOUND, format!("no webhook named {name}"));
        }
        config::Lookup::NotLoaded => {
            state.metrics.count_webhook("_unknown", "unavailable");
            return unavailable(
                "the webhook configuration is not loaded yet: the database is unreachable",
            );
        }
    };
    let (parts, body) = req.into_parts();
    let result = async {
        if !webhook.allows(source) {
            return Err(Refused::new(
                StatusCode::FORBIDDEN,
                "address_not_allowed",
                "this address may not deliver to this webhook",
            ));
        }
        if let Some(length) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            if length > webhook.max_body_bytes {
                return Err(too_large(webhook.max_body_bytes));
            }
        }
        let raw = to_bytes(body, webhook.max_body_bytes)
            .await
            .map_err(|_| too_large(webhook.max_body_bytes))?;
        let headers = RequestHeaders(&parts.headers);
        verify(&state, &webhook, &headers, &raw).await?;
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let payload = body::parse(content_type.as_deref(), &raw)
            .map_err(|(status, reason, message)| Refused::new(status, reason, message))?;
        let payload = validate(&webhook, payload).await?;
        let delivery_id = match &webhook.delivery_id {
            Some(d) => d.extract(&headers, payload.as_ref()).map_err(|e| {
                Refused::new(StatusCode::BAD_REQUEST, "bad_delivery_id", e.to_string())
            })?,
            None => None,
        };
        Ok(commit::Event {
            webhook: webhook.id,
            delivery_id,
            headers: body::stored_headers(&webhook.scheme, &parts.headers),
            payload,
            raw_body: raw.to_vec(),
            content_type,
            source,
        })
    }
    .await;
    let event = match result {
        Ok(event) => event,
        Err(refused) => {
            state.metrics.count_webhook(&webhook.name, refused.reason);
            if refused.status == StatusCode::SERVICE_UNAVAILABLE {
                return unavailable(refused.message);
            }
            let delivery_id = webhook
                .delivery_id
                .as_ref()
                .and_then(|d| d.extract(&RequestHeaders(&parts.headers), None).ok())
                .flatten();
            webhooks.refusals.record(
                &webhook.name,
                refused.status.as_u16(),
                refused.reason,
                &refused.message,
                source,
                delivery_id.as_deref(),
            );
            let mut answer = json!({ "error": refused.message });
            if let Some(details) = refused.details {
                answer["details"] = details;
            }
            return (refused.status, Json(answer)).into_response();
        }
    };
    let delivery_id = event.delivery_id.clone();
    match webhooks.committer.submit(event).await {
        commit::Outcome::Stored {
            event_id,
            duplicate,
            response,
        } => {
            state.metrics.count_webhook(
                &webhook.name,
                if duplicate { "duplicate" } else { "stored" },
            );
            let default =
                json!({ "event_id": event_id, "duplicate": duplicate, "delivery_id": delivery_id });
            match response {
                Some(response) if !duplicate => handler_answer(&webhook.name, response, default),
                _ => (StatusCode::OK, Json(default)).into_response(),
            }
        }
        commit::Outcome::Failed(error) => {
            state.metrics.count_webhook(&webhook.name, "handler_error");
            tracing::warn!(webhook = %webhook.name, error = %error, "webhook event rolled back");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the webhook's handler or target table failed; nothing was stored",
            )
        }
        commit::Outcome::Refused(error) => {
            state
                .metrics
                .count_webhook(&webhook.name, "invalid_payload");
            tracing::warn!(webhook = %webhook.name, error = %error, "webhook event refused by the database");
            json_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the database cannot store this payload; nothing was stored",
            )
        }
        commit::Outcome::Gone => {
            state.metrics.count_webhook(&webhook.name, "not_found");
            json_error(StatusCode::NOT_FOUND, format!("no webhook named {name}"))
        }
        commit::Outcome::Unavailable(reason) => {
            state.metrics.count_webhook(&webhook.name, "unavailable");
            tracing::warn!(webhook = %webhook.name, error = %reason, "webhook event not stored");
            unavailable("the database is unavailable; the event was not stored, retry later")
        }
    }
}

fn too_large(limit: usize) -> Refused {
    Refused::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the body exceeds this webhook's limit of {limit} bytes"),
    )
}

fn unavailable(message: impl Into<String>) -> Response {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    response
}

async fn verify(
    state: &AppState,
    webhook: &config::Webhook,
    headers: &RequestHeaders<'_>,
    raw: &[u8],
) -> Result<(), Refused> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let secrets = webhook.secrets_at(now);
    Check {
        secrets: &secrets,
        now,
        tolerance: webhook.tolerance,
    }
    .verify(&webhook.scheme, headers, raw)
    .map_err(|e| Refused::new(StatusCode::UNAUTHORIZED, e.reason(), e.to_string()))?;
    if webhook.scheme == Scheme::ApiKey {
        let token = api_key(headers).unwrap_or_default();
        let scope = format!("webhooks:{}", webhook.name);
        let client = state.db.client().await.map_err(|e| database_refused(&e))?;
        let rows = client
            .query(
                "SELECT 1 FROM integration.verify_api_key($1, $2)",
                &[&token, &scope],
            )
            .await
            .map_err(|e| database_refused(&crate::db::describe(&e)))?;
        if rows.is_empty() {
            return Err(Refused::new(
                StatusCode::UNAUTHORIZED,
                "bad_api_key",
                format!("the API key is invalid or lacks scope {scope}"),
            ));
        }
    }
    Ok(())
}

/// Checks `payload` against the webhook's JSON Schema, if it has one, on a
/// blocking thread (a slow `pattern` must not stall the async workers that
/// answer everyone else) within [`SCHEMA_BUDGET`]; gives the payload back.
async fn validate(
    webhook: &Arc<config::Webhook>,
    payload: Option<Value>,
) -> Result<Option<Value>, Refused> {
    if webhook.schema.is_none() {
        return Ok(payload);
    }
    let deadline = Instant::now() + SCHEMA_BUDGET;
    let work = async {
        let slot = webhook
            .schema_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| schema_timeout())?;
        let webhook = webhook.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let schema = webhook.schema.as_ref().expect("checked above");
            check_schema(schema, payload.as_ref(), deadline).map(|()| payload)
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "JSON Schema validation panicked");
            Refused::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bad_schema",
                "the webhook's json_schema could not be checked",
            )
        })?
    };
    tokio::time::timeout_at(deadline.into(), work)
        .await
        .unwrap_or_else(|_| Err(schema_timeout()))
}

fn schema_timeout() -> Refused {
    Refused::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_timeout",
        format!(
            "checking the payload against the webhook's JSON Schema took more than {} s; \
             its patterns may need to backtrack too much on this payload",
            SCHEMA_BUDGET.as_secs()
        ),
    )
}

/// A 503 for a database failure: the detail is logged, not answered.
fn database_refused(detail: &dyn std::fmt::Display) -> Refused {
    tracing::warn!(error = %detail, "cannot verify an API key: database error");
    Refused::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        crate::errors::DATABASE_UNAVAILABLE,
    )
}

fn check_schema(
    schema: &Result<jsonschema::Validator, String>,
    payload: Option<&Value>,
    deadline: Instant,
) -> Result<(), Refused> {
    let validator = schema.as_ref().map_err(|e| {
        Refused::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad_schema",
            format!("the webhook's json_schema is invalid: {e}"),
        )
    })?;
    let payload = payload.ok_or_else(|| {
        Refused::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
            "this webhook validates a JSON Schema, so the body must be JSON or a form",
        )
    })?;
    let mut errors: Vec<Value> = Vec::new();
    for e in validator.iter_errors(payload).take(MAX_SCHEMA_ERRORS) {
        // The budget is checked between errors too, so that a thread given
        // up on stops soon after (a single match cannot be interrupted).
        if Instant::now() > deadline {
            return Err(schema_timeout());
        }
        errors.push(json!({ "path": e.instance_path().to_string(), "message": e.to_string() }));
    }
    if errors.is_empty() {
        return Ok(());
    }
    let mut refused = Refused::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_mismatch",
        "the payload does not match the webhook's JSON Schema",
    );
    refused.details = Some(Value::Array(errors));
    Err(refused)
}

/// The answer a handler returned: `{status, headers, body}`, each optional.
/// Invalid parts are ignored (and logged): the event is committed already.
fn handler_answer(webhook: &str, response: Value, default: Value) -> Response {
    let status = response
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| (200..600).contains(&s.as_u16()));
    if response.get("status").is_some() && status.is_none() {
        tracing::warn!(%webhook, "the handler returned an invalid status; answering 200");
    }
    let body = response.get("body").cloned().unwrap_or(default);
    let mut answer = (status.unwrap_or(StatusCode::OK), Json(body)).into_response();
    if let Some(headers) = response.get("headers").and_then(Value::as_object) {
        for (name, value) in headers {
            let parsed = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            );
            match parsed {
                (Ok(name), Some(Ok(value))) if name != header::CONTENT_TYPE => {
                    answer.headers_mut().insert(name, value);
                }
                _ => tracing::warn!(%webhook, header = %name, "ignoring a handler header"),
            }
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_answer_sets_status_headers_and_body() {
        let answer = handler_answer(
            "orders",
            json!({"status": 201, "headers": {"x-order": "7", "bad header": "x"}, "body": {"ok": true}}),
            json!({"event_id": 1}),
        );
        assert_eq!(answer.status(), StatusCode::CREATED);
        assert_eq!(answer.headers()["x-order"], "7");
        assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn an_invalid_handler_status_falls_back_to_200() {
        for status in [json!(99), json!(700), json!("201")] {
            let answer = handler_answer("orders", json!({"status": status}), json!({}));
            assert_eq!(answer.status(), StatusCode::OK);
        }
    }
}
