//! Structured logs with `tracing`: text or one JSON object per line on
//! standard output, filtered by `RUST_LOG` (default `info`), and one line per
//! request with method, route template, path, status and latency. Query
//! strings are not logged: they may carry codes and tokens.

use crate::config::LogFormat;
use crate::metrics::route_label;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use std::io::IsTerminal;
use std::time::Instant;
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

/// Middleware writing one log line per answered request.
pub async fn access_log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = route_label(&req);
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    tracing::info!(
        %method,
        route,
        path,
        status = response.status().as_u16(),
        latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        "request"
    );
    response
}
