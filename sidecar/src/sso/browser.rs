//! The browser half of redirect protocols: `GET /auth/{provider}/login`
//! checks `redirect_to`, draws a `state`, asks the protocol where to send
//! the browser and keeps state, redirect and the protocol's secrets (nonce,
//! PKCE verifier) in a short-lived login cookie signed with the session key
//! (so any replica can finish the login). `/auth/{provider}/callback`
//! checks that cookie and the returned `state` (constant time), spends the
//! state (used_states.rs: a login finishes once, even with a kept cookie),
//! clears the cookie and lets the protocol finish.

use super::config::Provider;
use super::session::{self, random_token, unix_now};
use super::{
    check_redirect, complete, provider, record_failure, record_unsolicited, Credentials, SsoError,
};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use integration_core::jwt;
use integration_core::sso::SESSION_ALG;
use serde_json::{json, Value};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

/// The cookie that carries a login in progress.
const LOGIN_COOKIE: &str = "pg_integration_login";
/// The `aud` of login cookies, so they can never pass for a session.
const LOGIN_AUDIENCE: &str = "pg_integration-login";
/// How long a user has to log in at the identity provider.
const LOGIN_SECONDS: i64 = 600;

fn callback_path(provider: &str) -> String {
    format!("/auth/{provider}/callback")
}

/// `GET /auth/{provider}/login[?redirect_to=…]`: redirects to the identity provider.
pub async fn browser_login(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let provider = match provider(&state, &name) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match start(
        &state,
        &provider,
        query.get("redirect_to").map(String::as_str),
    )
    .await
    {
        Ok(response) => response,
        Err(e) => {
            record_failure(&state, &provider.name, &e, None).await;
            e.into_response()
        }
    }
}

async fn start(
    state: &AppState,
    provider: &Provider,
    redirect_to: Option<&str>,
) -> Result<Response, SsoError> {
    check_redirect(provider, redirect_to)?;
    let protocol = provider
        .protocol
        .as_ref()
        .map_err(|e| SsoError::Unavailable(e.clone()))?;
    let login_state = random_token(32);
    let started = protocol.start_login(&login_state).await?;
    let keys =
        state.sso.cache.keys().ok_or_else(|| {
            SsoError::Unavailable("the SSO configuration is not loaded yet".into())
        })?;
    let active = keys
        .active
        .as_ref()
        .ok_or_else(|| SsoError::Unavailable("no active signing key yet".into()))?;
    let claims = json!({
        "iss": &*state.sso.issuer, "aud": LOGIN_AUDIENCE, "exp": unix_now() + LOGIN_SECONDS,
        "provider": provider.name, "state": login_state, "redirect_to": redirect_to,
        "keep": started.keep,
    });
    let cookie = jwt::sign(&claims, &active.private_pem, SESSION_ALG, Some(&active.kid))
        .map_err(|e| SsoError::Internal(format!("cannot sign the login cookie: {e}")))?;
    if protocol.keeps_login_in_database() {
        super::saml_acs::store_pending(
            state,
            &provider.name,
            &login_state,
            redirect_to,
            &started.keep,
            unix_now() + LOGIN_SECONDS,
        )
        .await?;
    }
    let location = HeaderValue::from_str(&started.url)
        .map_err(|_| SsoError::Internal("the login URL is not a valid header".into()))?;
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(
            LOGIN_COOKIE,
            &cookie,
            LOGIN_SECONDS,
            &callback_path(&provider.name),
            state.sso.secure_cookies,
        ),
    );
    Ok(response)
}

/// `GET /auth/{provider}/callback?code=…&state=…`.
pub async fn callback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    finish(&state, &name, &params, &headers).await
}

/// `POST /auth/{provider}/callback` (`response_mode=form_post`, the SAML
/// ACS, and CAS single logout).
pub async fn callback_form(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    // An identity provider's back channel, not a browser (CAS single logout).
    if let Some(logout_request) = params.get("logoutRequest") {
        return super::single_logout::handle(&state, &name, logout_request).await;
    }
    // The SAML HTTP-POST binding: cross-site, so without the login cookie.
    if params.contains_key("SAMLResponse") {
        return super::saml_acs::handle(&state, &name, &params).await;
    }
    finish(&state, &name, &params, &headers).await
}

async fn finish(
    state: &AppState,
    name: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let provider = match provider(state, name) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let result = async {
        let login = login_in_progress(state, &provider, params, headers)?;
        // Spent before the provider is asked anything: a kept cookie
        // cannot finish a second login.
        super::used_states::spend(
            state,
            login["state"].as_str().unwrap_or_default(),
            login["exp"]
                .as_i64()
                .unwrap_or_else(|| unix_now() + LOGIN_SECONDS),
        )
        .await?;
        let redirect_to = login["redirect_to"].as_str().map(str::to_owned);
        // The allowlist may have changed since the login started.
        check_redirect(&provider, redirect_to.as_deref())?;
        if let Some(error) = params.get("error") {
            let described = params.get("error_description").map_or("", String::as_str);
            return Err(SsoError::Rejected(format!(
                "the identity provider answered {}: {}",
                shorten(error),
                shorten(described)
            )));
        }
        let protocol = provider
            .protocol
            .as_ref()
            .map_err(|e| SsoError::Unavailable(e.clone()))?;
        let kept = login.get("keep").cloned().unwrap_or(Value::Null);
        let identity = protocol
            .finish_login(Credentials::Callback {
                params,
                kept: &kept,
            })
            .await?;
        Ok((identity, redirect_to))
    }
    .await;
    let mut response = match result {
        Ok((identity, redirect_to)) => {
            complete(state, &provider, identity, redirect_to.as_deref()).await
        }
        // Anyone may send these at will: audited in bulk.
        Err(e) if session::cookie(headers, LOGIN_COOKIE).is_none() => {
            record_unsolicited(state, &provider.name, &e).await;
            e.into_response()
        }
        Err(e) => {
            record_failure(state, &provider.name, &e, None).await;
            e.into_response()
        }
    };
    // The login cookie is spent either way.
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(
            LOGIN_COOKIE,
            "",
            0,
            &callback_path(&provider.name),
            state.sso.secure_cookies,
        ),
    );
    response
}

/// The verified login cookie, checked against the provider and the returned `state`.
fn login_in_progress(
    state: &AppState,
    provider: &Provider,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Value, SsoError> {
    let cookie = session::cookie(headers, LOGIN_COOKIE).ok_or_else(|| {
        SsoError::BadRequest("no login in progress: start at /auth/{provider}/login".into())
    })?;
    let keys =
        state.sso.cache.keys().ok_or_else(|| {
            SsoError::Unavailable("the SSO configuration is not loaded yet".into())
        })?;
    let login = session::verify(&keys, &state.sso.issuer, cookie, LOGIN_AUDIENCE)
        .map_err(|e| SsoError::BadRequest(format!("the login cookie is not valid: {e}")))?;
    if login["provider"].as_str() != Some(provider.name.as_str()) {
        return Err(SsoError::BadRequest(
            "the login was started with another provider".into(),
        ));
    }
    let expected = login["state"].as_str().unwrap_or_default().as_bytes();
    let returned = params.get("state").map_or(&[][..], |s| s.as_bytes());
    if expected.is_empty() || !bool::from(expected.ct_eq(returned)) {
        return Err(SsoError::BadRequest(
            "state does not match the login in progress".into(),
        ));
    }
    Ok(login)
}

fn shorten(text: &str) -> String {
    text.chars().take(200).collect()
}
