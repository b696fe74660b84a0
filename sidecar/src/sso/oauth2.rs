//! Generic OAuth2 logins (GitHub-style providers without ID tokens): the
//! authorization-code flow with PKCE (S256, unless `pkce: false` for servers
//! that reject it), then the identity from `userinfo_url` read with the
//! access token and picked by claim paths. Also the parts OIDC shares:
//! reading userinfo (through the bounded client of idp_http.rs) and an
//! identity out of a JSON document.
//!
//! Config keys: `authorize_url`, `token_url`, `userinfo_url`, `client_id`,
//! secret `client_secret` (absent: a public client), `scopes` (array),
//! `pkce` (true), `subject_claim` (sub), `email_claim` (email),
//! `name_claim` (name), `groups_claim` (groups), `ca_cert` (PEM, for a
//! provider with a private CA), `allow_http` (false: every URL must be
//! https), `endpoint_hosts` (hosts besides authorize_url's that
//! `token_url` and `userinfo_url` may be on). A claim path is a member
//! name or a JSON pointer (`/data/login`).

use super::endpoints::EndpointPolicy;
use super::idp_http::IdpHttp;
use super::{Identity, LoginStart, Protocol, SsoError};
use futures_util::future::BoxFuture;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde_json::{json, Value};
use std::collections::HashMap;

/// The HTTP client for identity providers (see idp_http.rs).
pub fn http_client(config: &Value) -> Result<IdpHttp, String> {
    IdpHttp::from_config(config)
}

pub fn text(config: &Value, key: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("config key {key} must be a string")),
    }
}

pub fn required(config: &Value, key: &str) -> Result<String, String> {
    text(config, key)?.ok_or_else(|| format!("config lacks {key}"))
}

pub fn scopes(config: &Value, default: &[&str]) -> Result<Vec<String>, String> {
    match config.get("scopes") {
        None | Some(Value::Null) => Ok(default.iter().map(|s| (*s).to_owned()).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "scopes must be an array of strings".to_owned())
            })
            .collect(),
        Some(_) => Err("scopes must be an array of strings".into()),
    }
}

/// Where the identity lies in a claims document.
pub struct ClaimPaths {
    subject: String,
    email: String,
    name: String,
    groups: String,
}

impl ClaimPaths {
    pub fn from_config(config: &Value) -> Result<ClaimPaths, String> {
        Ok(ClaimPaths {
            subject: text(config, "subject_claim")?.unwrap_or_else(|| "sub".into()),
            email: text(config, "email_claim")?.unwrap_or_else(|| "email".into()),
            name: text(config, "name_claim")?.unwrap_or_else(|| "name".into()),
            groups: text(config, "groups_claim")?.unwrap_or_else(|| "groups".into()),
        })
    }

    /// The identity in `claims`; the subject must be there (a string or a number).
    pub fn identity(&self, claims: Value) -> Result<Identity, SsoError> {
        let subject = claim_text(&claims, &self.subject).ok_or_else(|| {
            SsoError::Upstream(format!(
                "the identity provider sent no subject at {}",
                self.subject
            ))
        })?;
        let groups = claim(&claims, &self.groups)
            .map(|v| match v {
                Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
                other => scalar_text(other).into_iter().collect(),
            })
            .unwrap_or_default();
        Ok(Identity {
            subject,
            email: claim_text(&claims, &self.email),
            name: claim_text(&claims, &self.name),
            groups,
            claims,
            logout_key: None,
            single_use: None,
        })
    }
}

fn claim<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    if path.starts_with('/') {
        claims.pointer(path)
    } else {
        claims.get(path)
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn claim_text(claims: &Value, path: &str) -> Option<String> {
    claim(claims, path).and_then(scalar_text)
}

/// GETs a userinfo document with the access token; a JSON object or an
/// error. The errors name no URL: they may be shown to the browser.
pub async fn userinfo(http: &IdpHttp, url: &str, access_token: &str) -> Result<Value, SsoError> {
    let response = http
        .client()
        .get(url)
        .bearer_auth(access_token)
        .header("accept", "application/json")
        .send()
        .await
        .map_err(|e| {
            SsoError::Upstream(format!(
                "userinfo: {}",
                crate::db::describe(&e.without_url())
            ))
        })?;
    if !response.status().is_success() {
        return Err(SsoError::Upstream(format!(
            "userinfo answered {}",
            response.status()
        )));
    }
    let body = http
        .read(response)
        .await
        .map_err(|e| SsoError::Upstream(format!("userinfo: {e}")))?;
    match serde_json::from_slice(&body) {
        Ok(Value::Object(map)) => Ok(Value::Object(map)),
        _ => Err(SsoError::Upstream("userinfo is not a JSON object".into())),
    }
}

/// The authorization code of a callback.
pub fn code(params: &HashMap<String, String>) -> Result<&str, SsoError> {
    params
        .get("code")
        .map(String::as_str)
        .ok_or_else(|| SsoError::BadRequest("the callback carries no code".into()))
}

/// A refused code exchange: the provider's refusal is the user's problem
/// (401: a replayed or forged code), anything else the provider's (502).
pub fn token_error<RE, T>(e: RequestTokenError<RE, T>) -> SsoError
where
    RE: std::error::Error + 'static,
    T: oauth2::ErrorResponse + 'static,
{
    match e {
        RequestTokenError::ServerResponse(refusal) => {
            SsoError::Rejected(format!("the token endpoint refused the code: {refusal}"))
        }
        other => SsoError::Upstream(format!(
            "the token endpoint cannot be used: {}",
            crate::db::describe(&other)
        )),
    }
}

pub struct OAuth2 {
    authorize_url: AuthUrl,
    token_url: TokenUrl,
    userinfo_url: String,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    redirect: RedirectUrl,
    scopes: Vec<String>,
    pkce: bool,
    paths: ClaimPaths,
    http: IdpHttp,
}

impl OAuth2 {
    pub fn from_config(config: &Value, secrets: &Value, redirect: &str) -> Result<OAuth2, String> {
        // The token and userinfo URLs get the code, the client secret and
        // the access token: https, on authorize_url's host unless listed.
        // Errors name the key, never the value: they may reach the browser.
        let authorize_url = required(config, "authorize_url")?;
        let endpoints = EndpointPolicy::from_config(config, "authorize_url", &authorize_url)?;
        let url = |key: &str| -> Result<String, String> {
            let value = required(config, key)?;
            endpoints.check(key, &value)?;
            Ok(value)
        };
        Ok(OAuth2 {
            authorize_url: AuthUrl::new(authorize_url).map_err(|e| e.to_string())?,
            token_url: TokenUrl::new(url("token_url")?).map_err(|e| e.to_string())?,
            userinfo_url: url("userinfo_url")?,
            client_id: ClientId::new(required(config, "client_id")?),
            client_secret: text(secrets, "client_secret")?.map(ClientSecret::new),
            redirect: RedirectUrl::new(redirect.to_owned()).map_err(|e| e.to_string())?,
            scopes: scopes(config, &[])?,
            pkce: config.get("pkce").and_then(Value::as_bool).unwrap_or(true),
            paths: ClaimPaths::from_config(config)?,
            http: http_client(config)?,
        })
    }

    fn client(
        &self,
    ) -> BasicClient<
        oauth2::EndpointSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    > {
        let client = BasicClient::new(self.client_id.clone())
            .set_auth_uri(self.authorize_url.clone())
            .set_token_uri(self.token_url.clone())
            .set_redirect_uri(self.redirect.clone());
        match &self.client_secret {
            Some(secret) => client.set_client_secret(secret.clone()),
            None => client,
        }
    }

    async fn finish(&self, code: &str, kept: &Value) -> Result<Identity, SsoError> {
        let client = self.client();
        let mut request = client.exchange_code(AuthorizationCode::new(code.to_owned()));
        if let Some(verifier) = kept["pkce"].as_str() {
            request = request.set_pkce_verifier(PkceCodeVerifier::new(verifier.to_owned()));
        }
        let token = request
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let claims = userinfo(
            &self.http,
            &self.userinfo_url,
            token.access_token().secret(),
        )
        .await?;
        self.paths.identity(claims)
    }
}

impl Protocol for OAuth2 {
    fn start_login<'a>(&'a self, state: &'a str) -> BoxFuture<'a, Result<LoginStart, SsoError>> {
        Box::pin(async move {
            let client = self.client();
            let state = state.to_owned();
            let mut request = client
                .authorize_url(move || CsrfToken::new(state))
                .add_scopes(self.scopes.iter().cloned().map(Scope::new));
            let mut keep = json!({});
            if self.pkce {
                let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
                request = request.set_pkce_challenge(challenge);
                keep["pkce"] = verifier.secret().clone().into();
            }
            let (url, _) = request.url();
            Ok(LoginStart {
                url: url.to_string(),
                keep,
            })
        })
    }

    fn finish_callback<'a>(
        &'a self,
        params: &'a HashMap<String, String>,
        kept: &'a Value,
    ) -> BoxFuture<'a, Result<Identity, SsoError>> {
        Box::pin(async move { self.finish(code(params)?, kept).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_cert_must_hold_a_certificate() {
        assert!(http_client(&json!({})).is_ok());
        let err = http_client(&json!({"ca_cert": "not a certificate"}))
            .err()
            .unwrap_or_default();
        assert!(err.contains("ca_cert"), "{err}");
        let err = http_client(&json!({"ca_cert": 7}))
            .err()
            .unwrap_or_default();
        assert!(err.contains("must be a string"), "{err}");
    }

    fn configured(changes: Value) -> Result<OAuth2, String> {
        let mut config = json!({
            "authorize_url": "https://login.example.com/oauth/authorize",
            "token_url": "https://login.example.com/oauth/token",
            "userinfo_url": "https://login.example.com/user", "client_id": "c",
        });
        if let (Some(config), Some(changes)) = (config.as_object_mut(), changes.as_object()) {
            config.extend(changes.clone());
        }
        OAuth2::from_config(&config, &json!({}), "https://sidecar.example/cb")
    }

    #[test]
    fn urls_must_be_https_and_on_the_authorize_urls_host_unless_configured() {
        assert!(configured(json!({})).is_ok());
        for (changes, why) in [
            (
                json!({"token_url": "http://login.example.com/token"}),
                "token_url must be https",
            ),
            (
                json!({"userinfo_url": "http://login.example.com/user"}),
                "userinfo_url must be https",
            ),
            (
                json!({"authorize_url": "http://login.example.com/authorize"}),
                "authorize_url must be https",
            ),
            (
                json!({"token_url": "https://tokens.internal.example/token"}),
                "token_url is not on authorize_url's host",
            ),
            (
                json!({"userinfo_url": "https://api.internal.example/user"}),
                "userinfo_url is not on authorize_url's host",
            ),
            (
                json!({"token_url": "idp.internal.example/token"}),
                "token_url is not a URL",
            ),
        ] {
            let err = configured(changes.clone()).err().unwrap_or_default();
            assert!(err.starts_with(why), "{changes}: {err}");
            assert!(!err.contains("internal"), "{changes}: {err}");
            assert!(!err.contains("://"), "{changes}: {err}");
        }
        let listed = configured(json!({
            "userinfo_url": "https://api.example.net/user", "endpoint_hosts": ["api.example.net"],
        }));
        assert!(listed.is_ok(), "{:?}", listed.err());
        let plain = configured(json!({
            "authorize_url": "http://127.0.0.1:9/authorize", "token_url": "http://127.0.0.1:9/token",
            "userinfo_url": "http://127.0.0.1:9/user", "allow_http": true,
        }));
        assert!(plain.is_ok(), "{:?}", plain.err());
    }

    #[test]
    fn identities_are_read_by_claim_paths() {
        let paths = ClaimPaths::from_config(&json!({
            "subject_claim": "id", "email_claim": "/emails/0", "name_claim": "login",
            "groups_claim": "/org/teams",
        }))
        .expect("paths");
        let identity = paths
            .identity(json!({
                "id": 583231, "login": "octocat", "emails": ["octo@example.org"],
                "org": {"teams": ["core", 7, null]},
            }))
            .expect("identity");
        assert_eq!(identity.subject, "583231");
        assert_eq!(identity.email.as_deref(), Some("octo@example.org"));
        assert_eq!(identity.name.as_deref(), Some("octocat"));
        assert_eq!(identity.groups, vec!["core", "7"]);
        let missing = paths.identity(json!({"login": "x"}));
        assert!(matches!(missing, Err(SsoError::Upstream(_))));
        let empty = paths.identity(json!({"id": ""}));
        assert!(matches!(empty, Err(SsoError::Upstream(_))));
    }
}
