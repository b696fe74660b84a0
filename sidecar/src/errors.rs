//! Every error answer is JSON, `{"error": "<what went wrong>", "request_id"}`,
//! except the HTML pages a handler answers a browser with (the docs'
//! sign-in form).
//! Handlers build theirs with [`json_error`]; [`json_errors`] rewrites the
//! plain-text or empty bodies that axum and tower-http produce (404, 405,
//! 413, timeouts, panics) and adds the request id to every error body. What
//! went wrong inside (a database error) is logged with the request id and
//! answered only as [`DATABASE_UNAVAILABLE`].

use crate::logging::RequestId;
use axum::body::to_bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Longest plain-text error body kept as the JSON message.
const MAX_MESSAGE_BYTES: usize = 1024;
/// Largest JSON error body given a `request_id` (larger ones pass as they are).
const MAX_JSON_ERROR_BYTES: usize = 64 * 1024;
/// What a client is told when the database failed; the detail is logged.
pub const DATABASE_UNAVAILABLE: &str =
    "the database is unavailable; retry later (quote the request_id to the operator)";

/// A JSON error answer.
pub fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The fallback for paths no router knows.
pub async fn not_found(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

/// Middleware turning a non-JSON error answer into a JSON one, keeping its
/// status and headers (such as `Allow` on a 405).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().cloned();
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    if is_html(response.headers()) {
        return response;
    }
    if is_json(response.headers()) {
        return match request_id {
            Some(id) => with_request_id(response, id.0).await,
            None => response,
        };
    }
    let (mut parts, body) = response.into_parts();
    let text = to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    let message = text.unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_owned()
    });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let mut json = json_error(status, message);
    for (name, value) in &parts.headers {
        json.headers_mut().append(name, value.clone());
    }
    match request_id {
        Some(id) => with_request_id(json, id.0).await,
        None => json,
    }
}

/// `response` with `"request_id"` added to its JSON object body.
async fn with_request_id(response: Response, id: String) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_JSON_ERROR_BYTES).await else {
        tracing::warn!("an error body too large to carry a request id was dropped");
        return json_error(parts.status, "the error answer was too large");
    };
    let mut value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(value @ serde_json::Value::Object(_)) => value,
        _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    value["request_id"] = serde_json::Value::String(id);
    parts.headers.remove(header::CONTENT_LENGTH);
    (parts, Json(value)).into_response()
}

/// The media type of the body, without parameters.
fn media_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
}

fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|mime| {
        mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
    })
}

fn is_html(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|mime| mime.eq_ignore_ascii_case("text/html"))
}
