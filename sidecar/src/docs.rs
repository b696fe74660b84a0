//! `GET /docs`: Swagger UI over `/openapi.json`, read and tried in the
//! browser with no internet. Every file comes from the swagger-ui release
//! the `utoipa-swagger-ui` crate embeds at build time (its `vendored`
//! feature takes the zip from the `utoipa-swagger-ui-vendored` crate, so the
//! build downloads nothing); only the files the page loads are served, with
//! a Content-Security-Policy that lets it reach no other origin than the
//! sidecar's own. [`DocsAccess`] decides who may read the page and the
//! document: in `authenticated` mode [`authenticate`] wants a valid session
//! or an API key with scope `docs`, checked by `integration.verify_api_key`
//! like every other key, or a browser's sign-in with such a key
//! ([`sign_in`]). `/docs/sql` is the SQL API reference ([`reference`]),
//! under the same rule.

mod html;
mod reference;
mod sign_in;

pub use reference::Cache as ReferenceCache;

use crate::config::DocsAccess;
use crate::errors::{json_error, DATABASE_UNAVAILABLE};
use crate::state::AppState;
use crate::webhooks::RequestHeaders;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use integration_core::webhooks::api_key;
use std::sync::{Arc, LazyLock};
use utoipa_swagger_ui::Config;

/// The scope an API key needs to read the docs.
pub const SCOPE: &str = "docs";

/// The files of the swagger-ui distribution the page loads; the rest of the
/// distribution (source maps, the ES bundles, the OAuth2 redirect page) is
/// not served.
const FILES: [&str; 8] = [
    "index.html",
    "index.css",
    "swagger-ui.css",
    "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.js",
    "swagger-initializer.js",
    "favicon-32x32.png",
    "favicon-16x16.png",
];

/// The page's own origin only: no CDN, font, validator or other API.
/// swagger-ui sets inline styles, and draws its icons as `data:` images.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; \
     frame-ancestors 'none'";

/// swagger-ui's configuration: the document relative to `/docs/` (so a
/// path prefix of a reverse proxy is kept), no online validator (it would
/// send the document to swagger.io), no configuration from the query
/// string, no top bar inviting another document's URL, and "Try it out"
/// open on every operation.
static CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::from("../openapi.json")
            .validator_url("none")
            .use_base_layout()
            .query_config_enabled(false)
            .try_it_out_enabled(true)
            .display_request_duration(true)
            .persist_authorization(false),
    )
});

/// `/docs`, `/docs/sql` and `/openapi.json` as `access` says, behind
/// [`authenticate`] in `authenticated` mode (with `POST /docs/key` to sign
/// in); nothing in `off` mode (all answer 404). `/docs/sql` is a static
/// segment, so it wins over `/docs/{file}`.
pub fn router(state: &AppState, access: DocsAccess) -> Router<AppState> {
    let routes = Router::new()
        .route("/docs", get(|| async { Redirect::permanent("docs/") }))
        .route("/docs/", get(|| serve_file(None)))
        .route("/docs/sql", get(reference::serve))
        .route(
            "/docs/{file}",
            get(|Path(file): Path<String>| serve_file(Some(file))),
        )
        .merge(crate::openapi::router());
    match access {
        DocsAccess::Public => routes,
        DocsAccess::Authenticated => routes
            .route_layer(from_fn_with_state(state.clone(), authenticate))
            .route("/docs/key", post(sign_in::post_key)),
        DocsAccess::Off => Router::new(),
    }
}

/// One file of the page (`None`: the page itself).
async fn serve_file(file: Option<String>) -> Response {
    let name = file.as_deref().unwrap_or("index.html");
    if !FILES.contains(&name) {
        return json_error(StatusCode::NOT_FOUND, format!("no file /docs/{name}"));
    }
    match utoipa_swagger_ui::serve(name, CONFIG.clone()) {
        Ok(Some(found)) => {
            let mut response = found.bytes.into_owned().into_response();
            let headers = response.headers_mut();
            if let Ok(kind) = HeaderValue::from_str(&found.content_type) {
                headers.insert(header::CONTENT_TYPE, kind);
            }
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Ok(None) => json_error(StatusCode::NOT_FOUND, format!("no file /docs/{name}")),
        Err(e) => {
            tracing::error!(error = %e, file = name, "cannot serve a Swagger UI file");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "cannot serve the docs")
        }
    }
}

/// Lets a request through with a session that verifies (cookie, or the
/// session token as a bearer), an API key of scope [`SCOPE`]
/// (`Authorization: Bearer` or `X-Api-Key`), or a browser's sign-in cookie
/// whose key still verifies with that scope. No credentials, or ones that
/// do not verify: 401; a valid key without the scope: 403 (a browser gets
/// the sign-in form with either).
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match crate::sso::has_session(&state, request.headers()).await {
        Ok(true) => return next.run(request).await,
        Ok(false) => {}
        Err(e) => return e.into_response(),
    }
    let headers = request.headers();
    let path = request.uri().path();
    let (access, signed_in) = match api_key(&RequestHeaders(headers)) {
        Some(token) => (key_access(&state, token).await, false),
        None => match sign_in::cookie_key_id(&state, headers) {
            Some(id) => (signed_in_access(&state, id).await, true),
            None => {
                return sign_in::refusal(
                    headers,
                    path,
                    StatusCode::UNAUTHORIZED,
                    &format!("the docs need a session or an API key with scope {SCOPE}"),
                )
            }
        },
    };
    match access {
        Ok(Access::Granted(_)) => next.run(request).await,
        Ok(Access::WithoutScope) => sign_in::refusal(
            headers,
            path,
            StatusCode::FORBIDDEN,
            &format!("the API key lacks scope {SCOPE}"),
        ),
        Ok(Access::Refused) => {
            let mut response = sign_in::refusal(
                headers,
                path,
                StatusCode::UNAUTHORIZED,
                &format!("the API key is invalid; the docs need one with scope {SCOPE}"),
            );
            if signed_in {
                response.headers_mut().append(
                    header::SET_COOKIE,
                    sign_in::set_cookie("", 0, state.sso.secure_cookies),
                );
            }
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot verify an API key for the docs");
            json_error(StatusCode::SERVICE_UNAVAILABLE, DATABASE_UNAVAILABLE)
        }
    }
}

/// What an API key may do with the docs.
enum Access {
    /// Key id.
    Granted(i64),
    WithoutScope,
    Refused,
}

/// Asks `integration.verify_api_key` (which checks the hash in constant
/// time, expiry and revocation, and audits failures) with the scope, and
/// only when that fails once more without it, to tell 403 from 401.
async fn key_access(state: &AppState, token: &str) -> Result<Access, String> {
    let client = state.db.client().await.map_err(|e| e.to_string())?;
    let verify = |scope: Option<&'static str>| {
        let client = &client;
        async move {
            client
                .query(
                    "SELECT id FROM integration.verify_api_key($1, $2)",
                    &[&token, &scope],
                )
                .await
                .map(|rows| rows.first().map(|row| row.get::<_, i64>(0)))
                .map_err(|e| crate::db::describe(&e))
        }
    };
    Ok(if let Some(id) = verify(Some(SCOPE)).await? {
        Access::Granted(id)
    } else if verify(None).await?.is_some() {
        Access::WithoutScope
    } else {
        Access::Refused
    })
}

/// A sign-in cookie's key, by id: `integration.api_key_allows` says whether
/// it is still valid with the scope (revoked, expired or narrowed: refused).
async fn signed_in_access(state: &AppState, id: i64) -> Result<Access, String> {
    let client = state.db.client().await.map_err(|e| e.to_string())?;
    let allowed: bool = client
        .query_one("SELECT integration.api_key_allows($1, $2)", &[&id, &SCOPE])
        .await
        .map_err(|e| crate::db::describe(&e))?
        .get(0);
    Ok(if allowed {
        Access::Granted(id)
    } else {
        Access::Refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_file_is_in_the_embedded_distribution() {
        for name in FILES {
            let file = utoipa_swagger_ui::serve(name, CONFIG.clone())
                .expect("readable")
                .unwrap_or_else(|| panic!("{name} is not embedded"));
            assert!(!file.bytes.is_empty(), "{name}");
        }
    }

    #[test]
    fn the_page_loads_our_document_and_nothing_from_elsewhere() {
        let file = utoipa_swagger_ui::serve("swagger-initializer.js", CONFIG.clone())
            .expect("readable")
            .expect("embedded");
        let script = String::from_utf8(file.bytes.into_owned()).expect("utf-8");
        assert!(script.contains(r#""url": "../openapi.json""#), "{script}");
        assert!(script.contains(r#""validatorUrl": "none""#), "{script}");
        assert!(!script.contains("petstore"), "{script}");
        assert!(!script.contains("http"), "{script}");
        let page = utoipa_swagger_ui::serve("index.html", CONFIG.clone())
            .expect("readable")
            .expect("embedded");
        let page = String::from_utf8(page.bytes.into_owned()).expect("utf-8");
        for src in page.split(['"', '\'']).filter(|s| s.starts_with("./")) {
            assert!(
                FILES.contains(&&src[2..]),
                "the page loads {src}, not served"
            );
        }
        assert!(!page.contains("//"), "an absolute URL in the page: {page}");
    }
}
