//! SSO logins ending in a signed session JWT. Each protocol is one module
//! behind [`Protocol`] (start the login, finish it into an [`Identity`]); the
//! parts every protocol shares are here: role mapping (first matching rule,
//! else the provider's default role, else refusal), the `redirect_to`
//! allowlist, identity upsert and audit (`integration.sso_record_login`),
//! the session token and cookie, `/auth/session`, `/auth/logout` and
//! `/.well-known/jwks.json`.

mod browser;
mod cas;
mod claims;
mod config;
mod endpoints;
mod idp_http;
mod ldap;
mod oauth2;
mod oidc;
mod saml;
mod saml_acs;
mod saml_sp_key;
pub mod session;
mod single_logout;
mod used_states;

use crate::errors::json_error;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use browser::{browser_login, callback, callback_form};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use integration_core::sso::{map_role, redirect_allowed, MappingInput};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::Lookup;
pub use config::{Cache, Loaded, Provider};
use session::{SessionClaims, COOKIE};

/// Who logged in, as a protocol reports it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Stable and unique within the provider (OIDC `sub`, LDAP entry DN).
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Group names for role mapping (LDAP group DNs, OIDC `groups`).
    pub groups: Vec<String>,
    /// Every claim or attribute, stored in `identities.claims` (never a token).
    pub claims: Value,
    /// What a back-channel logout will name to end the session this login
    /// starts (CAS: the SHA-256 of the service ticket), kept with the session.
    pub logout_key: Option<String>,
    /// What this login may be finished with once only (a SAML assertion's
    /// ID): spent in the database before the session is minted.
    pub single_use: Option<SingleUse>,
}

/// An identifier a login may use once, until a moment after which the
/// protocol would refuse it anyway.
#[derive(Debug, Clone)]
pub struct SingleUse {
    /// SHA-256 (hex) of the identifier; the identifier is not stored.
    pub id_hash: String,
    /// Unix time until which it must be remembered.
    pub until: i64,
}

/// What a login is finished with.
pub enum Credentials<'a> {
    /// A password form (LDAP).
    Password {
        username: &'a str,
        password: &'a str,
    },
    /// A redirect back from the identity provider (OIDC, OAuth2, later SAML
    /// and CAS), with what [`Protocol::start_login`] asked to keep (nonce,
    /// PKCE verifier) once the `state` was checked.
    Callback {
        params: &'a HashMap<String, String>,
        kept: &'a Value,
    },
}

/// Where a browser login starts, and what to keep until the callback.
pub struct LoginStart {
    pub url: String,
    /// Kept in the signed login cookie: nonce, PKCE verifier.
    pub keep: Value,
}

/// Answered by a protocol asked for a kind of login it does not do.
const PASSWORD_ONLY: &str =
    "this provider logs in with POST /auth/{provider}/login (username and password)";
const BROWSER_ONLY: &str = "this provider logs in with GET /auth/{provider}/login";

fn refuse<'a, T: Send + 'a>(why: &'static str) -> BoxFuture<'a, Result<T, SsoError>> {
    Box::pin(async move { Err(SsoError::BadRequest(why.into())) })
}

/// One login protocol: start the login, finish it into an [`Identity`].
/// Browser protocols implement [`Protocol::start_login`] and
/// [`Protocol::finish_callback`]; password protocols [`Protocol::finish_password`];
/// the defaults refuse the kind of login a protocol does not do.
pub trait Protocol: Send + Sync {
    /// Where to send the browser to log in; `state` comes back in the callback.
    fn start_login<'a>(&'a self, _state: &'a str) -> BoxFuture<'a, Result<LoginStart, SsoError>> {
        refuse(PASSWORD_ONLY)
    }

    /// Finishes a redirect login; `kept` is what `start_login` asked to keep.
    fn finish_callback<'a>(
        &'a self,
        _params: &'a HashMap<String, String>,
        _kept: &'a Value,
    ) -> BoxFuture<'a, Result<Identity, SsoError>> {
        refuse(PASSWORD_ONLY)
    }

    /// Whether this protocol logs in with a username and password (a
    /// `POST /auth/{provider}/login` form); checked before the body is read.
    fn takes_password(&self) -> bool {
        false
    }

    /// Checks a username and password.
    fn finish_password<'a>(
        &'a self,
        _username: &'a str,
        _password: &'a str,
    ) -> BoxFuture<'a, Result<Identity, SsoError>> {
        refuse(BROWSER_ONLY)
    }

    /// Finishes a login, whatever the credentials.
    fn finish_login<'a>(
        &'a self,
        credentials: Credentials<'a>,
    ) -> BoxFuture<'a, Result<Identity, SsoError>> {
        match credentials {
            Credentials::Password { username, password } => {
                self.finish_password(username, password)
            }
            Credentials::Callback { params, kept } => self.finish_callback(params, kept),
        }
    }

    /// The key of the session a back-channel logout request (a form field
    /// `logoutRequest` posted to the callback) ends; the same as the
    /// [`Identity::logout_key`] of the login that started it.
    fn logout_request_key(&self, _logout_request: &str) -> Result<String, SsoError> {
        Err(SsoError::BadRequest(
            "this provider takes no back-channel logout request".into(),
        ))
    }

    /// Whether the login in progress must be found again without the login
    /// cookie (SAML: the IdP posts to the ACS cross-site, and a
    /// `SameSite=Lax` cookie does not come with that POST): it is kept in
    /// the database by the `state` sent as RelayState (saml_acs.rs).
    fn keeps_login_in_database(&self) -> bool {
        false
    }

    /// The service-provider metadata to give the identity provider (SAML),
    /// served at `GET /auth/{provider}/metadata`.
    fn sp_metadata(&self) -> Option<&str> {
        None
    }

    /// Where to end the session at the identity provider too (RP-initiated logout), if it can.
    fn logout_url<'a>(&'a self) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { None })
    }
}

/// Why a login was refused; every variant becomes a JSON answer.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("{0}")]
    BadRequest(String),
    /// The message is for the audit log; the answer says only that the credentials were refused.
    #[error("{0}")]
    BadCredentials(String),
    /// A redirect login whose answer did not verify (refused code, bad ID
    /// token, denied at the provider); the details go to the audit log only.
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    NoRole(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Unavailable(String),
    /// A database failure: logged, answered only as unavailable.
    #[error("{0}")]
    Database(String),
    #[error("{0}")]
    Internal(String),
}

impl SsoError {
    fn status(&self) -> StatusCode {
        match self {
            SsoError::BadRequest(_) => StatusCode::BAD_REQUEST,
            SsoError::BadCredentials(_) | SsoError::Rejected(_) => StatusCode::UNAUTHORIZED,
            SsoError::NoRole(_) => StatusCode::FORBIDDEN,
            SsoError::NotFound(_) => StatusCode::NOT_FOUND,
            SsoError::Upstream(_) => StatusCode::BAD_GATEWAY,
            SsoError::Unavailable(_) | SsoError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            SsoError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable code for metrics.
    fn kind(&self) -> &'static str {
        match self {
            SsoError::BadRequest(_) => "bad_request",
            SsoError::BadCredentials(_) => "bad_credentials",
            SsoError::Rejected(_) => "rejected",
            SsoError::NoRole(_) => "no_role",
            SsoError::NotFound(_) => "not_found",
            SsoError::Upstream(_) => "upstream",
            SsoError::Unavailable(_) | SsoError::Database(_) => "unavailable",
            SsoError::Internal(_) => "internal",
        }
    }

    /// What the audit log is told: a database failure only as such (its
    /// text may quote the failing row; the server log has it).
    fn audit_reason(&self) -> String {
        match self {
            SsoError::Database(_) => "the login could not be recorded in the database".into(),
            other => other.to_string(),
        }
    }

    /// What the client is told: never which of username or password was
    /// wrong, and no URL (a provider's internal endpoints stay in the audit
    /// log and the server log).
    fn public_message(&self) -> String {
        match self {
            SsoError::BadCredentials(_) => "invalid username or password".into(),
            SsoError::Rejected(_) => "the login was refused; start again".into(),
            SsoError::Database(_) => crate::errors::DATABASE_UNAVAILABLE.into(),
            other => without_urls(&other.to_string()),
        }
    }
}

/// `text` with every `scheme://…` replaced by `<url>`.
fn without_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || "`'\"<>()[]{},;".contains(c))
            .map_or(rest.len(), |i| at + i);
        // Punctuation after a URL belongs to the sentence.
        let end = scheme_start
            + rest[scheme_start..end]
                .trim_end_matches(|c: char| ".:!?".contains(c))
                .len();
        out.push_str(&rest[..scheme_start]);
        out.push_str("<url>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

impl IntoResponse for SsoError {
    fn into_response(self) -> Response {
        if let SsoError::Database(detail) = &self {
            tracing::warn!(error = %detail, "SSO: database error");
        }
        json_error(self.status(), self.public_message())
    }
}

/// What the SSO routes share: the configuration cache and the issuer.
#[derive(Clone)]
pub struct Sso {
    pub cache: Cache,
    /// `iss` of session tokens: the sidecar's public URL without a trailing slash.
    pub issuer: Arc<str>,
    /// Whether cookies get `Secure` (the public URL is https).
    pub secure_cookies: bool,
    /// Callbacks that arrive without a login cookie, audited in bulk.
    pub unsolicited: Arc<Coalesced>,
    /// Spent login states, when the database keeps no shared record.
    pub used_states: Arc<used_states::LocalStates>,
}

/// How long refusals of one kind are gathered into one audit row.
const COALESCE_WINDOW: Duration = Duration::from_secs(60);
/// How often gathered refusals whose window ended are written: a burst
/// followed by silence gets its counted row within a few seconds of the
/// window's end (and at shutdown), not only when the next refusal comes.
const COALESCE_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Refusals anyone can cause at will (a callback without a login cookie
/// needs no secret), counted per provider: the first of a window is
/// audited at once, the next ones as one row with their count once the
/// window ended ([`flush_coalesced`]), so the counts of the rows add up to
/// the refusals.
#[derive(Default)]
pub struct Coalesced {
    seen: std::sync::Mutex<HashMap<String, Gathered>>,
}

/// The refusals of one provider since its last row.
struct Gathered {
    /// When the last row was written.
    since: Instant,
    count: u64,
    /// The audit reason of the latest one.
    reason: String,
}

impl Coalesced {
    /// `Some(n)`: audit one row for `n` refusals now (this one and those
    /// gathered since the last row); `None`: counted for a later row.
    fn hit(&self, provider: &str, reason: &str, now: Instant) -> Option<u64> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.get_mut(provider) {
            Some(g) if now.duration_since(g.since) < COALESCE_WINDOW => {
                g.count += 1;
                reason.clone_into(&mut g.reason);
                None
            }
            Some(g) => {
                let n = g.count + 1;
                g.since = now;
                g.count = 0;
                Some(n)
            }
            None => {
                seen.insert(
                    provider.to_owned(),
                    Gathered {
                        since: now,
                        count: 0,
                        reason: String::new(),
                    },
                );
                Some(1)
            }
        }
    }

    /// Takes the counts due for a row: those whose window ended by `now`,
    /// or all of them when `everything` (at shutdown). Providers with
    /// nothing gathered and an ended window are forgotten, so their next
    /// refusal is audited at once.
    fn take(&self, now: Instant, everything: bool) -> Vec<(String, u64, String)> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut due = Vec::new();
        seen.retain(|provider, g| {
            let ended = now.duration_since(g.since) >= COALESCE_WINDOW;
            if g.count > 0 && (ended || everything) {
                due.push((provider.clone(), g.count, std::mem::take(&mut g.reason)));
                g.since = now;
                g.count = 0;
                return true;
            }
            !ended
        });
        due
    }
}

/// The audit reason of a row standing for `n` refusals.
fn coalesced_reason(reason: &str, n: u64) -> String {
    format!(
        "{reason} ({n} such callbacks since the last row; at most one row per {} s)",
        COALESCE_WINDOW.as_secs()
    )
}

/// Writes the rows of gathered refusals whose window ended (all of them
/// when `everything`).
pub async fn flush_coalesced(state: &AppState, everything: bool) {
    for (provider, n, reason) in state.sso.unsolicited.take(Instant::now(), everything) {
        audit_failure(state, &provider, &coalesced_reason(&reason, n), None).await;
    }
}

/// Writes due rows of gathered refusals every [`COALESCE_FLUSH_EVERY`]
/// until the sidecar stops (which writes the rest: [`flush_coalesced`]).
pub fn spawn_coalesced_flush(state: AppState) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(COALESCE_FLUSH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            flush_coalesced(&state, false).await;
        }
    });
}

impl Sso {
    pub fn start(db: &crate::db::Database, public_url: &url::Url) -> Sso {
        let issuer: Arc<str> = public_url.as_str().trim_end_matches('/').into();
        let cache = Cache::new(issuer.clone());
        crate::listen::spawn_reloader(cache.clone(), db.clone());
        Sso {
            cache,
            issuer,
            secure_cookies: public_url.scheme() == "https",
            unsolicited: Arc::default(),
            used_states: Arc::default(),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/auth/{provider}/login",
            post(password_login).get(browser_login),
        )
        .route(
            "/auth/{provider}/callback",
            get(callback).post(callback_form),
        )
        .route("/auth/{provider}/metadata", get(saml::metadata))
        .route("/auth/session", get(current_session))
        .route("/auth/logout", post(logout))
        .route("/.well-known/jwks.json", get(jwks))
}

fn provider(state: &AppState, name: &str) -> Result<Arc<Provider>, SsoError> {
    match state.sso.cache.provider(name) {
        Lookup::Found(p) if p.enabled => Ok(p),
        Lookup::Found(_) | Lookup::Unknown => {
            Err(SsoError::NotFound(format!("no SSO provider named {name}")))
        }
        Lookup::NotLoaded => Err(SsoError::Unavailable(
            "the SSO configuration is not loaded yet".into(),
        )),
    }
}

/// Largest password-login body read: a username, a password and a
/// redirect URL fit, and nothing larger is parsed before authentication.
const MAX_LOGIN_BODY_BYTES: usize = 8 * 1024;

/// Reads and drops what is left of a body (the global body limit bounds
/// it): an answer sent before the request's body was read makes the
/// server close the connection, which can reset it before the client has
/// read the answer.
async fn drain(body: Body) {
    let mut chunks = body.into_data_stream();
    while let Some(Ok(_)) = chunks.next().await {}
}

/// The body if it holds at most `limit` bytes; a longer one is drained
/// (without being kept) and gives `None`.
async fn read_bounded(body: Body, limit: usize) -> Option<Bytes> {
    let mut chunks = body.into_data_stream();
    let mut kept = Some(Vec::new());
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.ok()?;
        if let Some(buf) = &mut kept {
            if buf.len() + chunk.len() > limit {
                kept = None;
            } else {
                buf.extend_from_slice(&chunk);
            }
        }
    }
    kept.map(Bytes::from)
}

/// The fields of a password login, from a JSON or form body.
fn login_fields(headers: &HeaderMap, body: &Bytes) -> Result<HashMap<String, String>, SsoError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/x-www-form-urlencoded") {
        return Ok(form_urlencoded::parse(body).into_owned().collect());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        SsoError::BadRequest(format!(
            "send JSON {{\"username\", \"password\"}} or a form: {e}"
        ))
    })?;
    let Value::Object(map) = value else {
        return Err(SsoError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
        .collect())
}

/// `POST /auth/{provider}/login`: a password login (LDAP).
async fn password_login(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let provider = match provider(&state, &name) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    // The provider's kind first: a browser provider never reads the body.
    let refused = match &provider.protocol {
        Ok(protocol) if protocol.takes_password() => None,
        Ok(_) => Some(SsoError::BadRequest(BROWSER_ONLY.into())),
        Err(e) => Some(SsoError::Unavailable(e.clone())),
    };
    if let Some(e) = refused {
        drain(body).await;
        record_failure(&state, &provider.name, &e, None).await;
        return e.into_response();
    }
    let Some(body) = read_bounded(body, MAX_LOGIN_BODY_BYTES).await else {
        return json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a login body holds at most {MAX_LOGIN_BODY_BYTES} bytes"),
        );
    };
    let fields = match login_fields(&headers, &body) {
        Ok(fields) => fields,
        Err(e) => return e.into_response(),
    };
    let username = fields.get("username").map_or("", String::as_str);
    let redirect_to = fields.get("redirect_to").map(String::as_str);
    let checked = check_origin(&state, &provider, &headers)
        .and_then(|()| check_redirect(&provider, redirect_to));
    if let Err(e) = checked {
        record_failure(&state, &provider.name, &e, Some(username)).await;
        return e.into_response();
    }
    let result = match &provider.protocol {
        Ok(protocol) => {
            protocol
                .finish_login(Credentials::Password {
                    username,
                    password: fields.get("password").map_or("", String::as_str),
                })
                .await
        }
        Err(e) => Err(SsoError::Unavailable(e.clone())),
    };
    match result {
        Ok(identity) => complete(&state, &provider, identity, redirect_to).await,
        Err(e) => {
            record_failure(&state, &provider.name, &e, Some(username)).await;
            e.into_response()
        }
    }
}

/// A browser posting the login form must do so from the sidecar's own
/// origin or the origin of an allowed redirect (no login CSRF from other
/// sites). Clients that send no `Origin` (scripts, servers) are not browsers.
fn check_origin(
    state: &AppState,
    provider: &Provider,
    headers: &HeaderMap,
) -> Result<(), SsoError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let origin_of = |u: &str| {
        url::Url::parse(u)
            .ok()
            .map(|u| u.origin().ascii_serialization())
    };
    let allowed = std::iter::once(&*state.sso.issuer)
        .chain(provider.allowed_redirects.iter().map(String::as_str))
        .any(|u| origin_of(u).as_deref() == Some(origin));
    if allowed {
        Ok(())
    } else {
        Err(SsoError::BadRequest(format!(
            "a login form of SSO provider {} may be posted only from the sidecar or an allowed redirect's origin",
            provider.name
        )))
    }
}

fn check_redirect(provider: &Provider, redirect_to: Option<&str>) -> Result<(), SsoError> {
    match redirect_to {
        Some(target) if !redirect_allowed(target, &provider.allowed_redirects) => {
            Err(SsoError::BadRequest(format!(
                "redirect_to is not on the allowlist of SSO provider {}",
                provider.name
            )))
        }
        _ => Ok(()),
    }
}

/// Maps the role, records the login, mints the session and answers: a 303
/// to `redirect_to` with the token in the fragment, or JSON.
async fn complete(
    state: &AppState,
    provider: &Provider,
    identity: Identity,
    redirect_to: Option<&str>,
) -> Response {
    if let Some(once) = &identity.single_use {
        if let Err(e) = saml_acs::use_once(state, &provider.name, once).await {
            record_failure(state, &provider.name, &e, Some(&identity.subject)).await;
            return e.into_response();
        }
    }
    let identity = match claims::storable(identity) {
        Ok(identity) => identity,
        Err(e) => {
            record_failure(state, &provider.name, &e, None).await;
            return e.into_response();
        }
    };
    let input = MappingInput {
        groups: &identity.groups,
        claims: &identity.claims,
    };
    let Some(role) = map_role(
        &provider.role_mapping,
        &input,
        provider.default_role.as_deref(),
    ) else {
        let e = SsoError::NoRole(format!(
            "no role of SSO provider {} applies to this identity",
            provider.name
        ));
        record_failure(state, &provider.name, &e, Some(&identity.subject)).await;
        return e.into_response();
    };
    let identity_id = match record_login(state, provider, &identity, &role).await {
        Ok(id) => id,
        Err(e) => {
            record_failure(state, &provider.name, &e, Some(&identity.subject)).await;
            return e.into_response();
        }
    };
    let Some(keys) = state.sso.cache.keys() else {
        return SsoError::Unavailable("the SSO configuration is not loaded yet".into())
            .into_response();
    };
    let who = SessionClaims {
        provider: &provider.name,
        subject: &identity.subject,
        role: &role,
        email: identity.email.as_deref(),
        name: identity.name.as_deref(),
        identity_id,
        lifetime_secs: provider.lifetime_secs,
    };
    let (token, exp, jti) = match session::mint(&keys, &state.sso.issuer, &who) {
        Ok(minted) => minted,
        Err(e) => return e.into_response(),
    };
    if let Some(key) = &identity.logout_key {
        if let Err(e) =
            single_logout::link(state, provider, key, &jti, &identity.subject, exp).await
        {
            record_failure(state, &provider.name, &e, Some(&identity.subject)).await;
            return e.into_response();
        }
    }
    state.metrics.count_sso_login(&provider.name, "ok");
    let cookie = session::set_cookie(
        COOKIE,
        &token,
        provider.lifetime_secs,
        "/",
        state.sso.secure_cookies,
    );
    let mut response = match redirect_to {
        Some(target) => {
            let location = format!(
                "{target}#access_token={token}&token_type=Bearer&expires_in={}",
                provider.lifetime_secs
            );
            let mut r = StatusCode::SEE_OTHER.into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, value);
            }
            r
        }
        None => Json(json!({
            "access_token": token, "token_type": "Bearer", "expires_at": exp,
            "role": role, "sub": session::session_subject(&provider.name, &identity.subject),
            "idp_sub": identity.subject, "email": identity.email,
        }))
        .into_response(),
    };
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn record_login(
    state: &AppState,
    provider: &Provider,
    identity: &Identity,
    role: &str,
) -> Result<i64, SsoError> {
    let client = state
        .db
        .client()
        .await
        .map_err(|e| SsoError::Database(e.to_string()))?;
    check_session_role(&client, &provider.name, role).await?;
    let row = client
        .query_one(
            "SELECT integration.sso_record_login($1, $2, $3, $4, $5, $6, $7::text::name)",
            &[
                &provider.name,
                &identity.subject,
                &identity.email,
                &identity.name,
                &identity.groups,
                &identity.claims,
                &role,
            ],
        )
        .await
        .map_err(|e| {
            SsoError::Database(format!(
                "cannot record the login: {}",
                crate::db::describe(&e)
            ))
        })?;
    Ok(row.get(0))
}

/// What makes a role unfit for a session, through any membership
/// (`pg_has_role(…, 'MEMBER')` covers the role itself and every role it
/// can SET ROLE to): a superuser, BYPASSRLS, REPLICATION or CREATEROLE
/// role, a predefined role that reads or writes everything or signals
/// backends, our own privileged roles, or the right to read the signing
/// keys. The role itself is named first, then the role that makes it unfit.
/// The rule of `integration.session_role_unfit` (sql/sso.sql), the one
/// saving a provider checks too: why the role may not be given, or NULL.
const DANGEROUS_MEMBERSHIP: &str = "SELECT integration.session_role_unfit($1::text::name)";

/// Checks at every login that `role` is still a plain role: a role made
/// superuser, or granted a dangerous role, after its mapping was saved gets
/// no session (403, audited).
async fn check_session_role(
    client: &tokio_postgres::Client,
    provider: &str,
    role: &str,
) -> Result<(), SsoError> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1::text::name",
            &[&role],
        )
        .await
        .map_err(|e| SsoError::Database(crate::db::describe(&e)))?;
    if exists.is_none() {
        return Err(SsoError::NoRole(format!(
            "role {role} of SSO provider {provider} does not exist"
        )));
    }
    let found = client
        .query_opt(DANGEROUS_MEMBERSHIP, &[&role])
        .await
        .map_err(|e| SsoError::Database(crate::db::describe(&e)))?;
    match found.and_then(|row| row.get::<_, Option<String>>(0)) {
        None => Ok(()),
        Some(why) => Err(SsoError::NoRole(format!(
            "role {role} of SSO provider {provider} may not be given to a session: {why}"
        ))),
    }
}

/// Audits a refused login; the audit is best effort (the answer does not wait on it failing).
async fn record_failure(
    state: &AppState,
    provider: &str,
    error: &SsoError,
    username: Option<&str>,
) {
    tracing::info!(provider, error = %error, "SSO login refused");
    state.metrics.count_sso_login(provider, error.kind());
    audit_failure(state, provider, &error.audit_reason(), username).await;
}

/// Audits a refused callback that came without a login cookie: at most one
/// row per provider and [`COALESCE_WINDOW`], saying how many it stands for.
async fn record_unsolicited(state: &AppState, provider: &str, error: &SsoError) {
    tracing::info!(provider, error = %error, "SSO callback without a login in progress");
    state.metrics.count_sso_login(provider, error.kind());
    let reason = error.audit_reason();
    if let Some(n) = state.sso.unsolicited.hit(provider, &reason, Instant::now()) {
        audit_failure(state, provider, &coalesced_reason(&reason, n), None).await;
    }
}

async fn audit_failure(state: &AppState, provider: &str, reason: &str, username: Option<&str>) {
    let Ok(client) = state.db.client().await else {
        return;
    };
    // Text holds no NUL in PostgreSQL: a typed username could carry one.
    let reason = reason.replace('\0', "");
    let username = username.map(|u| u.replace('\0', ""));
    if let Err(e) = client
        .execute(
            "SELECT integration.sso_record_failure($1, $2, $3)",
            &[&provider, &reason, &username],
        )
        .await
    {
        tracing::warn!(error = %crate::db::describe(&e), "cannot audit a refused SSO login");
    }
}

/// The verified claims of the request's session token, or why there are none.
fn request_session(state: &AppState, headers: &HeaderMap) -> Result<Value, SsoError> {
    let token = session::request_token(headers)
        .ok_or_else(|| SsoError::BadCredentials("no session".into()))?;
    let keys =
        state.sso.cache.keys().ok_or_else(|| {
            SsoError::Unavailable("the SSO configuration is not loaded yet".into())
        })?;
    session::verify(&keys, &state.sso.issuer, token, session::AUDIENCE)
        .map_err(|e| SsoError::BadCredentials(format!("invalid session: {e}")))
}

/// Whether the request carries a session token that verifies and that no
/// logout ended (the check of `GET /auth/session`); only a database failure
/// is an error.
pub async fn has_session(state: &AppState, headers: &HeaderMap) -> Result<bool, SsoError> {
    match request_session(state, headers) {
        Ok(claims) => Ok(!ended(state, &claims).await?),
        Err(_) => Ok(false),
    }
}

/// Asks the database whether a logout ended the session `claims` describe.
async fn ended(state: &AppState, claims: &Value) -> Result<bool, SsoError> {
    let client = state
        .db
        .client()
        .await
        .map_err(|e| SsoError::Database(e.to_string()))?;
    let jti = claims["jti"].as_str().unwrap_or_default();
    let row = client
        .query_one("SELECT integration.session_ended($1)", &[&jti])
        .await
        .map_err(|e| SsoError::Database(crate::db::describe(&e)))?;
    Ok(row.get(0))
}

/// `GET /auth/session`: the claims of the current session, or 401.
async fn current_session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let claims = match request_session(&state, &headers) {
        Ok(claims) => claims,
        // Say why (no cookie, expired, bad signature): it is the caller's own token.
        Err(SsoError::BadCredentials(why)) => return json_error(StatusCode::UNAUTHORIZED, why),
        Err(e) => return e.into_response(),
    };
    match ended(&state, &claims).await {
        Ok(false) => Json(json!({ "session": claims })).into_response(),
        Ok(true) => json_error(
            StatusCode::UNAUTHORIZED,
            "the session was ended by a logout",
        ),
        Err(e) => e.into_response(),
    }
}

/// Whether a request may come from a browser page: it has no `Origin`
/// header (not a browser's cross-origin request) or its `Origin` is the
/// sidecar's own (`PUBLIC_URL`).
pub fn from_own_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let ours = url::Url::parse(&state.sso.issuer)
        .ok()
        .map(|u| u.origin().ascii_serialization());
    ours.as_deref() == Some(origin.to_str().unwrap_or_default())
}

/// `POST /auth/logout`: ends the session (its token is refused from now on
/// by `/auth/session` and `integration.verify_jwt(token)`), clears the cookie
/// and, when the session came from a provider with RP-initiated logout, says
/// where to end it there too. A browser may post it only from the sidecar's
/// own origin (`PUBLIC_URL`): another page, even a same-site one, cannot log
/// a user out. When the end of the session cannot be recorded the answer is
/// 503 and the cookie is kept: the token would stay valid, so nothing may say
/// the user is logged out.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !from_own_origin(&state, &headers) {
        return json_error(
            StatusCode::FORBIDDEN,
            "a logout may be posted only from the sidecar's own origin (PUBLIC_URL)",
        );
    }
    let claims = request_session(&state, &headers).ok();
    let mut ended = false;
    let mut end_session_url = None;
    if let Some(claims) = &claims {
        if let Err(e) = end_session(&state, claims).await {
            return e.into_response();
        }
        ended = true;
        let idp = claims["idp"].as_str().unwrap_or_default();
        if let Lookup::Found(provider) = state.sso.cache.provider(idp) {
            if let Ok(protocol) = &provider.protocol {
                end_session_url = protocol.logout_url().await;
            }
        }
    }
    let mut response = Json(json!({
        "logged_out": true, "session_ended": ended, "end_session_url": end_session_url,
    }))
    .into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(COOKIE, "", 0, "/", state.sso.secure_cookies),
    );
    response
}

async fn end_session(state: &AppState, claims: &Value) -> Result<(), SsoError> {
    let client = state
        .db
        .client()
        .await
        .map_err(|e| SsoError::Database(e.to_string()))?;
    let jti = claims["jti"].as_str().unwrap_or_default();
    let exp = claims["exp"].as_f64().unwrap_or_default();
    let idp = claims["idp"].as_str().unwrap_or_default();
    // The provider's own subject (sessions minted before `idp_sub` existed: `sub`).
    let sub = claims["idp_sub"]
        .as_str()
        .or_else(|| claims["sub"].as_str())
        .unwrap_or_default();
    client
        .execute(
            "SELECT integration.sso_end_session($1, to_timestamp($2), $3, $4)",
            &[&jti, &exp, &idp, &sub],
        )
        .await
        .map_err(|e| SsoError::Database(crate::db::describe(&e)))?;
    Ok(())
}

/// `GET /.well-known/jwks.json`: the public keys that verify session tokens.
async fn jwks(State(state): State<AppState>) -> Response {
    match state.sso.cache.keys() {
        Some(keys) => {
            let mut response = Json(keys.jwks(session::unix_now())).into_response();
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            );
            response
        }
        None => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the signing keys are not loaded yet",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesced_refusals_are_all_counted_once_in_rows_at_most_one_a_window() {
        let c = Coalesced::default();
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut counted = 0;
        // A burst: the first audited at once, the rest gathered.
        assert_eq!(c.hit("p", "r", t0), Some(1));
        counted += 1;
        for i in 0..9 {
            assert_eq!(c.hit("p", "r", at(i)), None);
        }
        assert_eq!(c.hit("q", "r", at(1)), Some(1));
        counted += 1;
        // Nothing is due before the window ends, then the burst's count is.
        assert!(c.take(at(59), false).is_empty());
        let due = c.take(at(60), false);
        assert_eq!(due, vec![("p".to_owned(), 9, "r".to_owned())]);
        counted += 9;
        // A refusal right after that row waits for the next window...
        assert_eq!(c.hit("p", "r", at(61)), None);
        assert!(c.take(at(100), false).is_empty());
        // ...unless the sidecar stops: then everything gathered is written.
        let rest = c.take(at(100), true);
        assert_eq!(rest, vec![("p".to_owned(), 1, "r".to_owned())]);
        counted += 1;
        assert_eq!(counted, 12, "every refusal is in exactly one row");
        // A quiet provider is forgotten: its next refusal is audited at once.
        assert!(c.take(at(200), true).is_empty());
        assert!(c.take(at(200), false).is_empty());
        assert_eq!(c.hit("p", "r", at(201)), Some(1));
    }

    #[test]
    fn answers_to_the_browser_carry_no_url() {
        assert_eq!(
            without_urls("OIDC discovery of http://10.0.0.7:8080/realms/x failed: `https://idp.internal/jwks` (no)"),
            "OIDC discovery of <url> failed: `<url>` (no)"
        );
        assert_eq!(without_urls("no url here"), "no url here");
        let e = SsoError::Upstream("userinfo ldap://a.b/c: refused".into());
        assert_eq!(e.public_message(), "userinfo <url>: refused");
    }
}
