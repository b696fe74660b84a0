//! Structured logs with `tracing`: text or one JSON object per line on
//! standard output, filtered by `RUST_LOG` (default `info`), and one line per
//! request with method, route template, path, status and latency. Query
//! strings are not logged: they may carry codes and tokens. Every request
//! gets a [`RequestId`], answered in `X-Request-Id` (and in JSON error
//! bodies) and attached to every log line written while it runs, so a client
//! quoting it finds the detail an answer leaves out.

use crate::config::LogFormat;
use crate::metrics::route_label;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::io::IsTerminal;
use std::time::Instant;
use tracing::Instrument;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// Installs the global subscriber; call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// The id of one request: 16 hex digits, random.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Middleware giving each request an id and writing one log line per
/// answered request.
pub async fn access_log(mut req: Request, next: Next) -> Response {
    let id = format!("{:016x}", rand::random::<u64>());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let route = route_label(&req);
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let span = tracing::info_span!("request", request_id = %id);
    let mut response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            %method,
            route,
            path,
            status = response.status().as_u16(),
            latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            "request"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
