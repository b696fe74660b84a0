//! `integration-sidecar`: the HTTP side of pg_integration. `main` reads the
//! configuration, starts logging, builds the shared state (database pool and
//! metrics), merges the capability routers under the global layers (JSON
//! errors, body limit, timeout, metrics, access log) and serves until SIGTERM
//! or SIGINT.

mod config;
mod db;
mod docs;
mod errors;
mod health;
mod listen;
mod logging;
mod metrics;
mod openapi;
mod server;
mod sso;
mod state;
mod webhooks;

use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// Largest request body accepted by any route.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest a request may take before it is answered 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = config::Config::parse();
    logging::init(config.log_format);
    // rustls needs one process-wide crypto provider; ring is chosen
    // explicitly so no other provider (aws-lc) is ever built or picked.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    match run(config).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot run");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: config::Config) -> Result<(), StartError> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        database = %config.database_url,
        db_pool_size = config.db_pool_size,
        "starting"
    );
    let db = db::Database::new(&config.database_url, usize::from(config.db_pool_size))?;
    let server = server::Server::bind(&config).await?;
    // Half the pool commits webhook batches; the rest serves probes and API keys.
    let workers = usize::from(config.db_pool_size).div_ceil(2);
    let state = state::AppState::new(
        db.clone(),
        metrics::Metrics::new(),
        workers,
        &config.public_url(),
    );
    // Logs whether the database is reachable; the sidecar serves either way.
    state.check_database().await.ok();
    sso::spawn_coalesced_flush(state.clone());
    server.serve(app(state.clone(), config.docs())).await?;
    // Refusals gathered for a later audit row get it before the pool closes.
    sso::flush_coalesced(&state, true).await;
    db.close();
    Ok(())
}

/// Every route under the global layers. Layers listed later wrap the ones
/// before, so the access log and metrics see the final (JSON) answer.
/// `docs` says who may read `/docs` and `/openapi.json`.
fn app(state: state::AppState, docs: config::DocsAccess) -> Router {
    Router::new()
        .merge(health::router())
        .merge(metrics::router())
        .merge(webhooks::router())
        .merge(sso::router())
        .merge(docs::router(&state, docs))
        .fallback(errors::not_found)
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(CatchPanicLayer::new())
        .layer(from_fn(errors::json_errors))
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .layer(from_fn(logging::access_log))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::{header, Request};
    use serde_json::Value;
    use tower::ServiceExt;

    /// An app whose database refuses connections (nothing listens on the port).
    fn app_without_database() -> Router {
        app_without_database_with(config::DocsAccess::Public)
    }

    /// [`app_without_database`] with the docs served as `docs` says.
    fn app_without_database_with(docs: config::DocsAccess) -> Router {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        let url = format!("postgresql://integration_sidecar:hunter2@127.0.0.1:{port}/app")
            .parse()
            .expect("infallible");
        let db = db::Database::new(&url, 1).expect("pool");
        let public_url = url::Url::parse("http://127.0.0.1:8080/").expect("a URL");
        app(
            state::AppState::new(db, metrics::Metrics::new(), 1, &public_url),
            docs,
        )
    }

    async fn call(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = app.clone().oneshot(req).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            headers,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).expect("request")
    }

    fn json(body: &str) -> Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    }

    #[tokio::test]
    async fn healthz_is_ok_even_without_a_database() {
        let app = app_without_database();
        let (status, _, body) = call(&app, get("/healthz")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json(&body), serde_json::json!({"status": "ok"}));
    }

    #[tokio::test]
    async fn readyz_is_503_with_a_request_id_but_not_the_driver_error() {
        let app = app_without_database();
        let (status, _, body) = call(&app, get("/readyz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body = json(&body);
        assert_eq!(body["status"], "unavailable");
        assert_eq!(body["database"], "unreachable");
        assert!(body["request_id"].is_string(), "{body}");
        let text = body.to_string();
        assert!(!text.contains("cannot connect"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[tokio::test]
    async fn openapi_json_is_503_until_the_configuration_is_loaded() {
        let app = app_without_database();
        let (status, headers, body) = call(&app, get("/openapi.json")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(json(&body)["error"].is_string(), "{body}");
        assert!(!headers.contains_key(header::ETAG), "{headers:?}");
    }

    #[tokio::test]
    async fn error_answers_are_json() {
        let app = app_without_database();
        let (status, _, body) = call(&app, get("/no/such/route?x=1")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json(&body)["error"], "no route for GET /no/such/route");

        let post = Request::post("/healthz")
            .body(Body::empty())
            .expect("request");
        let (status, headers, body) = call(&app, post).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(json(&body)["error"].is_string(), "{body}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(headers.contains_key(header::ALLOW), "{headers:?}");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_with_413() {
        let app = app_without_database();
        let big = Request::post("/healthz")
            .header(header::CONTENT_LENGTH, MAX_BODY_BYTES + 1)
            .body(Body::from(vec![b'x'; MAX_BODY_BYTES + 1]))
            .expect("request");
        let (status, _, body) = call(&app, big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(json(&body)["error"].is_string(), "{body}");
    }

    #[tokio::test]
    async fn metrics_count_requests_by_route_template() {
        let app = app_without_database();
        call(&app, get("/healthz")).await;
        call(&app, get("/healthz")).await;
        call(&app, get("/one/unknown/path")).await;
        call(&app, get("/another/unknown/path")).await;
        let (status, headers, text) = call(&app, get("/metrics")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.starts_with("application/openmetrics-text")),
            "{headers:?}"
        );
        for line in [
            r#"integration_sidecar_http_requests_total{route="/healthz",method="GET",status="200"} 2"#,
            r#"integration_sidecar_http_requests_total{route="unmatched",method="GET",status="404"} 2"#,
            "integration_sidecar_db_up 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[tokio::test]
    async fn docs_serve_swagger_ui_from_the_sidecar_only() {
        let app = app_without_database();
        let (status, headers, _) = call(&app, get("/docs")).await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "docs/");
        let (status, headers, page) = call(&app, get("/docs/")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("swagger-ui-bundle.js"), "{page}");
        let policy = headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("text");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        let (status, headers, _) = call(&app, get("/docs/swagger-ui-bundle.js")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.contains("javascript")),
            "{headers:?}"
        );
        let (status, _, body) = call(&app, get("/docs/swagger-ui.js.map")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(json(&body)["error"].is_string(), "{body}");
    }

    #[tokio::test]
    async fn docs_off_answers_404_for_the_page_and_the_document() {
        let app = app_without_database_with(config::DocsAccess::Off);
        for path in ["/docs", "/docs/", "/docs/index.html", "/openapi.json"] {
            let (status, _, body) = call(&app, get(path)).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert!(json(&body)["error"].is_string(), "{body}");
        }
    }

    #[tokio::test]
    async fn authenticated_docs_want_credentials_before_anything() {
        let app = app_without_database_with(config::DocsAccess::Authenticated);
        for path in ["/docs", "/docs/", "/docs/swagger-ui.css", "/openapi.json"] {
            let (status, _, body) = call(&app, get(path)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert!(json(&body)["error"].is_string(), "{body}");
        }
        // A key is checked by the database, which is down here: 503, never 200.
        let with_key = Request::get("/docs/")
            .header(header::AUTHORIZATION, "Bearer pgi_not_checked")
            .body(Body::empty())
            .expect("request");
        let (status, _, _) = call(&app, with_key).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn docs_sql_is_its_own_route_not_a_file_of_swagger_ui() {
        let app = app_without_database();
        // The reference reads the database (down here): its 503, not the
        // 404 of `/docs/{file}` for a file Swagger UI lacks.
        let (status, _, body) = call(&app, get("/docs/sql")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(!body.contains("no file"), "{body}");
        // Signing in exists only when the docs want credentials.
        let post = Request::post("/docs/key")
            .body(Body::empty())
            .expect("request");
        let (status, _, _) = call(&app, post).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn authenticated_docs_show_browsers_a_sign_in_form() {
        let app = app_without_database_with(config::DocsAccess::Authenticated);
        for (path, action) in [
            ("/docs/", "key"),
            ("/docs/sql", "key"),
            ("/docs", "docs/key"),
        ] {
            let page = Request::get(path)
                .header(header::ACCEPT, "text/html,application/xhtml+xml")
                .body(Body::empty())
                .expect("request");
            let (status, headers, body) = call(&app, page).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert!(
                headers[header::CONTENT_TYPE]
                    .to_str()
                    .is_ok_and(|v| v.starts_with("text/html")),
                "{path}: {headers:?}"
            );
            assert!(
                body.contains(&format!("action=\"{action}\"")),
                "{path}: {body}"
            );
        }
        // From another origin the key is not even checked.
        let cross = Request::post("/docs/key")
            .header(header::ORIGIN, "http://evil.example")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("key=pgik_1_x"))
            .expect("request");
        let (status, _, body) = call(&app, cross).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(json(&body)["error"].is_string(), "{body}");
    }
}
