//! Prometheus metrics at `/metrics` (OpenMetrics text): requests by route
//! template, method and status, their latency, whether the database answers,
//! webhook deliveries, SSO logins and the build. The route label is the matched template (`/webhooks/{name}`),
//! never the raw path, and unknown methods count as `other`, so label
//! cardinality stays bounded whatever clients send.

use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::time::{Duration, Instant};

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The route label of requests that matched no route.
pub const UNMATCHED: &str = "unmatched";
/// Latency buckets in seconds, from a cache hit to a slow webhook handler.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SsoLabels {
    provider: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

/// The registry and the handles the middleware and probes update.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    db_up: Gauge,
    webhook_deliveries: Family<WebhookLabels, Counter>,
    webhook_batch: Histogram,
    webhook_audit_dropped: Counter,
    sso_logins: Family<SsoLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("integration_sidecar");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let durations: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register_with_unit(
            "http_request_duration",
            "Time from request to response headers, by route template and method",
            Unit::Seconds,
            durations.clone(),
        );
        let db_up = Gauge::default();
        registry.register(
            "db_up",
            "1 when the last database check succeeded, else 0",
            db_up.clone(),
        );
        let webhook_deliveries = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by webhook (configured names only, else _unknown) and outcome",
            webhook_deliveries.clone(),
        );
        let webhook_batch = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        registry.register(
            "webhook_commit_batch_size",
            "Events stored per group commit",
            webhook_batch.clone(),
        );
        let webhook_audit_dropped = Counter::default();
        registry.register(
            "webhook_refusals_not_audited",
            "Refused webhook deliveries that could not be written to the audit log",
            webhook_audit_dropped.clone(),
        );
        let sso_logins = Family::<SsoLabels, Counter>::default();
        registry.register(
            "sso_logins",
            "SSO logins by provider (configured names only) and outcome (ok or the refusal kind)",
            sso_logins.clone(),
        );
        registry.register(
            "build",
            "Version of the running sidecar",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            registry,
            requests,
            durations,
            db_up,
            webhook_deliveries,
            webhook_batch,
            webhook_audit_dropped,
            sso_logins,
        }
    }

    fn observe(&self, route: String, method: &Method, status: StatusCode, elapsed: Duration) {
        let method = method_label(method);
        self.durations
            .get_or_create(&RouteLabels {
                route: route.clone(),
                method,
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: status.as_u16(),
            })
            .inc();
    }

    pub fn set_db_up(&self, up: bool) {
        self.db_up.set(i64::from(up));
    }

    /// Counts one webhook delivery with its outcome.
    pub fn count_webhook(&self, webhook: &str, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn observe_webhook_batch(&self, events: usize) {
        self.webhook_batch.observe(events as f64);
    }

    pub fn count_audit_dropped(&self, refusals: usize) {
        self.webhook_audit_dropped.inc_by(refusals as u64);
    }

    /// The OpenMetrics text exposition of every metric.
    /// Counts one SSO login of a configured provider with its outcome.
    pub fn count_sso_login(&self, provider: &str, outcome: &'static str) {
        self.sso_logins
            .get_or_create(&SsoLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .inc();
    }

    fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape(State(state): State<AppState>) -> Response {
    // Refresh db_up so it is never older than the scrape; check_database
    // logs a failure itself, and the scrape succeeds either way.
    state.check_database().await.ok();
    let database = database_metrics(&state).await;
    match state.metrics.render() {
        Ok(mut body) => {
            // The database's families go before the closing `# EOF`.
            if let Some(end) = body.rfind("# EOF") {
                body.insert_str(end, &database);
            }
            ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
        }
        Err(_) => crate::errors::json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode the metrics",
        ),
    }
}

const DATABASE_METRICS: &str =
    "SELECT name, type, help, labels, value FROM integration.metrics ORDER BY name, labels::text";

/// One row of `integration.metrics`.
struct DatabaseSample {
    name: String,
    kind: String,
    help: String,
    labels: serde_json::Value,
    value: f64,
}

/// The extension's own metrics (`integration.metrics`: the HTTP queue,
/// webhook events, dropped audit events, failed key checks), or nothing
/// when the database cannot tell (down, or an extension without the view).
async fn database_metrics(state: &AppState) -> String {
    let rows = match state.db.client().await {
        Ok(client) => client.query(DATABASE_METRICS, &[]).await,
        Err(_) => return String::new(),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %crate::db::describe(&e), "cannot read integration.metrics");
            return String::new();
        }
    };
    let samples: Vec<DatabaseSample> = rows
        .iter()
        .filter_map(|row| {
            Some(DatabaseSample {
                name: row.try_get("name").ok()?,
                kind: row.try_get("type").ok()?,
                help: row.try_get("help").ok()?,
                labels: row.try_get("labels").ok()?,
                value: row.try_get("value").ok()?,
            })
        })
        .collect();
    render_database(&samples)
}

/// Samples in OpenMetrics text: a `# TYPE` and `# HELP` line per family
/// (the rows come sorted by name), a counter's samples named `…_total`.
fn render_database(samples: &[DatabaseSample]) -> String {
    let escape = |text: &str| {
        text.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    let mut out = String::new();
    let mut family = "";
    for sample in samples {
        let kind = if sample.kind == "counter" {
            "counter"
        } else {
            "gauge"
        };
        if sample.name != family {
            family = &sample.name;
            out.push_str(&format!("# TYPE {family} {kind}\n"));
            out.push_str(&format!("# HELP {family} {}\n", escape(&sample.help)));
        }
        let labels: Vec<String> = sample
            .labels
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v.as_str().unwrap_or_default())))
                    .collect()
            })
            .unwrap_or_default();
        let suffix = if kind == "counter" { "_total" } else { "" };
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        out.push_str(&format!(
            "{}{suffix}{labels} {}\n",
            sample.name, sample.value
        ));
    }
    out
}

/// Middleware counting and timing every answered request.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = route_label(&req);
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .observe(route, &method, response.status(), started.elapsed());
    response
}

/// The matched route template, or [`UNMATCHED`].
pub fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned())
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_metrics_are_families_with_escaped_labels_and_counter_totals() {
        let sample =
            |name: &str, kind: &str, labels: serde_json::Value, value: f64| DatabaseSample {
                name: name.into(),
                kind: kind.into(),
                help: "what it \\ counts\nhere".into(),
                labels,
                value,
            };
        let text = render_database(&[
            sample(
                "integration_audit_events_dropped",
                "counter",
                serde_json::json!({}),
                7.0,
            ),
            sample(
                "integration_webhook_events_last_minute",
                "gauge",
                serde_json::json!({"webhook": "a\"b"}),
                2.0,
            ),
            sample(
                "integration_webhook_events_last_minute",
                "gauge",
                serde_json::json!({"webhook": "c"}),
                0.5,
            ),
        ]);
        assert_eq!(
            text,
            "# TYPE integration_audit_events_dropped counter\n\
             # HELP integration_audit_events_dropped what it \\\\ counts\\nhere\n\
             integration_audit_events_dropped_total 7\n\
             # TYPE integration_webhook_events_last_minute gauge\n\
             # HELP integration_webhook_events_last_minute what it \\\\ counts\\nhere\n\
             integration_webhook_events_last_minute{webhook=\"a\\\"b\"} 2\n\
             integration_webhook_events_last_minute{webhook=\"c\"} 0.5\n"
        );
    }

    #[test]
    fn the_exposition_is_openmetrics_text_with_every_metric() {
        let metrics = Metrics::new();
        metrics.observe(
            "/healthz".into(),
            &Method::GET,
            StatusCode::OK,
            Duration::from_millis(3),
        );
        metrics.observe(
            "/healthz".into(),
            &Method::GET,
            StatusCode::OK,
            Duration::from_millis(30),
        );
        metrics.observe(
            UNMATCHED.into(),
            &Method::from_bytes(b"BREW").unwrap(),
            StatusCode::NOT_FOUND,
            Duration::ZERO,
        );
        metrics.set_db_up(true);
        let text = metrics.render().expect("encodes");
        let version = env!("CARGO_PKG_VERSION");
        for line in [
            "# TYPE integration_sidecar_http_requests counter",
            r#"integration_sidecar_http_requests_total{route="/healthz",method="GET",status="200"} 2"#,
            r#"integration_sidecar_http_requests_total{route="unmatched",method="other",status="404"} 1"#,
            "# TYPE integration_sidecar_http_request_duration_seconds histogram",
            "# UNIT integration_sidecar_http_request_duration_seconds seconds",
            r#"integration_sidecar_http_request_duration_seconds_bucket{le="0.005",route="/healthz",method="GET"} 1"#,
            r#"integration_sidecar_http_request_duration_seconds_bucket{le="0.05",route="/healthz",method="GET"} 2"#,
            r#"integration_sidecar_http_request_duration_seconds_count{route="/healthz",method="GET"} 2"#,
            "# TYPE integration_sidecar_db_up gauge",
            "integration_sidecar_db_up 1",
            "# TYPE integration_sidecar_build info",
            &format!(r#"integration_sidecar_build_info{{version="{version}"}} 1"#),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_database_gauge_follows_the_last_check() {
        let metrics = Metrics::new();
        metrics.set_db_up(true);
        metrics.set_db_up(false);
        let text = metrics.render().expect("encodes");
        assert!(
            text.lines().any(|l| l == "integration_sidecar_db_up 0"),
            "{text}"
        );
    }
}
