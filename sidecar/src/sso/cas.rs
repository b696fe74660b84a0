//! CAS logins (protocol 2.0 and 3.0): the browser goes to
//! `{server_url}/login?service=…`, comes back to the callback with a service
//! ticket, and the ticket is validated server-to-server at
//! `{server_url}/p3/serviceValidate` (3, with attributes) or
//! `{server_url}/serviceValidate` (2, the user only: attributes a server
//! sends there anyway are not used) through the bounded,
//! TLS-verifying client of idp_http.rs. The `service` is the callback URL
//! with the login's `state`, kept in the signed login cookie, so the string
//! validated is the one the CAS server redirected with. The ticket's SHA-256
//! is kept with the session: a back-channel `logoutRequest` naming it ends
//! that session (single logout). A ticket is never logged or audited.
//!
//! Config keys: `server_url`, `version` (3), `attributes` (`{"email": A,
//! "name": A, "groups": A}`, CAS attribute names), `ca_cert` (PEM, for a
//! CAS server with a private CA), `allow_http` (false: test servers only).

use super::idp_http::IdpHttp;
use super::oauth2::text;
use super::{Identity, LoginStart, Protocol, SsoError};
use futures_util::future::BoxFuture;
use integration_core::cas::{self, ValidationResponse};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Longest ticket sent on to the CAS server (the specification asks
/// services to accept 256 characters).
const MAX_TICKET_CHARS: usize = 1024;

/// Which CAS attribute gives each part of the identity.
#[derive(Default)]
struct AttributeNames {
    email: Option<String>,
    name: Option<String>,
    groups: Option<String>,
}

pub struct Cas {
    server_url: String,
    version: u8,
    attributes: AttributeNames,
    callback: String,
    http: IdpHttp,
}

/// The hex SHA-256 of a service ticket: what is kept for single logout.
pub fn ticket_hash(ticket: &str) -> String {
    Sha256::digest(ticket.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Cas {
    pub fn from_config(config: &Value, callback: &str) -> Result<Cas, String> {
        let server_url = text(config, "server_url")?.ok_or("config lacks server_url")?;
        let parsed =
            url::Url::parse(&server_url).map_err(|e| format!("server_url {server_url}: {e}"))?;
        let allow_http = config
            .get("allow_http")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match parsed.scheme() {
            "https" => {}
            "http" if allow_http => {}
            _ => {
                return Err(format!(
                "server_url {server_url} must be https:// (\"allow_http\": true for a test server)"
            ))
            }
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(format!(
                "server_url {server_url} must have no query or fragment"
            ));
        }
        let version = match config.get("version") {
            None | Some(Value::Null) => 3,
            Some(v) if v.as_f64() == Some(3.0) => 3,
            Some(v) if v.as_f64() == Some(2.0) => 2,
            Some(other) => return Err(format!("version must be 2 or 3, not {other}")),
        };
        let attributes = match config.get("attributes") {
            None | Some(Value::Null) => AttributeNames::default(),
            Some(Value::Object(map)) => {
                if let Some(key) = map
                    .keys()
                    .find(|k| !["email", "name", "groups"].contains(&k.as_str()))
                {
                    return Err(format!(
                        "attributes may name email, name and groups, not {key}"
                    ));
                }
                let attributes = Value::Object(map.clone());
                AttributeNames {
                    email: text(&attributes, "email")?,
                    name: text(&attributes, "name")?,
                    groups: text(&attributes, "groups")?,
                }
            }
            Some(_) => return Err("attributes must be a JSON object".into()),
        };
        Ok(Cas {
            server_url: server_url.trim_end_matches('/').to_owned(),
            version,
            attributes,
            callback: callback.to_owned(),
            http: IdpHttp::from_config(config)?,
        })
    }

    /// Asks the CAS server about `ticket` for `service`.
    async fn validate(&self, service: &str, ticket: &str) -> Result<Identity, SsoError> {
        let url = cas::validate_url(&self.server_url, self.version, service, ticket);
        // Errors drop the URL: it holds the ticket.
        let response = self.http.client().get(url).send().await.map_err(|e| {
            SsoError::Upstream(format!(
                "the CAS server cannot be reached: {}",
                crate::db::describe(&e.without_url())
            ))
        })?;
        if !response.status().is_success() {
            return Err(SsoError::Upstream(format!(
                "the CAS server answered the ticket validation with {}",
                response.status()
            )));
        }
        let body = self
            .http
            .read(response)
            .await
            .map_err(|e| SsoError::Upstream(format!("ticket validation: {e}")))?;
        let answer = cas::parse_service_response(&body)
            .map_err(|e| SsoError::Upstream(format!("ticket validation: {e}")))?;
        match answer {
            // CAS 2.0 defines no attributes; some servers send them anyway,
            // and a version 2 provider is configured not to rely on them.
            ValidationResponse::Success(mut ok) if self.version < 3 => {
                ok.attributes.clear();
                Ok(self.identity(ok))
            }
            ValidationResponse::Success(ok) => Ok(self.identity(ok)),
            // The message may quote the ticket: only the code is kept.
            ValidationResponse::Failure { code, .. } => Err(refusal(&code)),
        }
    }

    fn identity(&self, ok: cas::CasSuccess) -> Identity {
        let first = |name: &Option<String>| {
            name.as_ref()
                .and_then(|n| ok.attributes.get(n))
                .and_then(|values| values.iter().find(|v| !v.trim().is_empty()))
                .cloned()
        };
        let email = first(&self.attributes.email);
        let name = first(&self.attributes.name);
        let groups = self
            .attributes
            .groups
            .as_ref()
            .and_then(|n| ok.attributes.get(n))
            .cloned()
            .unwrap_or_default();
        // One value as a string, several as an array (CAS's JSON form).
        let claims: Map<String, Value> = ok
            .attributes
            .into_iter()
            .map(|(k, mut values)| {
                let value = if values.len() == 1 {
                    Value::String(values.remove(0))
                } else {
                    json!(values)
                };
                (k, value)
            })
            .collect();
        Identity {
            subject: ok.user,
            email,
            name,
            groups,
            claims: Value::Object(claims),
            logout_key: None,
            single_use: None,
        }
    }
}

/// A CAS failure code as an answer: the ticket or service refused is the
/// user's problem (401); the CAS server's own failure is a bad gateway.
fn refusal(code: &str) -> SsoError {
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(60)
        .collect();
    match code.as_str() {
        "INTERNAL_ERROR" | "INVALID_REQUEST" | "" => SsoError::Upstream(format!(
            "the CAS server could not validate the ticket: {}",
            if code.is_empty() { "no code" } else { &code }
        )),
        _ => SsoError::Rejected(format!("the CAS server refused the ticket: {code}")),
    }
}

impl Protocol for Cas {
    fn start_login<'a>(&'a self, state: &'a str) -> BoxFuture<'a, Result<LoginStart, SsoError>> {
        Box::pin(async move {
            let service = cas::service_url(&self.callback, state);
            Ok(LoginStart {
                url: cas::login_url(&self.server_url, &service),
                keep: json!({ "service": service }),
            })
        })
    }

    fn finish_callback<'a>(
        &'a self,
        params: &'a HashMap<String, String>,
        kept: &'a Value,
    ) -> BoxFuture<'a, Result<Identity, SsoError>> {
        Box::pin(async move {
            let ticket = params
                .get("ticket")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| SsoError::BadRequest("the callback carries no ticket".into()))?;
            if ticket.chars().count() > MAX_TICKET_CHARS {
                return Err(SsoError::BadRequest(format!(
                    "the ticket is longer than {MAX_TICKET_CHARS} characters"
                )));
            }
            let service = kept["service"].as_str().ok_or_else(|| {
                SsoError::BadRequest("the login cookie holds no CAS service".into())
            })?;
            let mut identity = self.validate(service, ticket).await?;
            identity.logout_key = Some(ticket_hash(ticket));
            Ok(identity)
        })
    }

    /// The CAS server's own logout (which in turn sends single-logout
    /// requests to every service of that CAS session).
    fn logout_url<'a>(&'a self) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move { Some(format!("{}/logout", self.server_url)) })
    }

    fn logout_request_key(&self, logout_request: &str) -> Result<String, SsoError> {
        cas::parse_logout_request(logout_request.as_bytes())
            .map(|ticket| ticket_hash(&ticket))
            .map_err(|e| SsoError::BadRequest(format!("logoutRequest: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cas(config: Value) -> Result<Cas, String> {
        Cas::from_config(&config, "https://app.example.org/auth/campus/callback")
    }

    #[test]
    fn configs_are_checked() {
        assert!(cas(json!({"server_url": "https://cas.example.org/cas"})).is_ok());
        assert!(cas(json!({"server_url": "http://127.0.0.1:1/cas"})).is_err());
        assert!(cas(json!({"server_url": "http://127.0.0.1:1/cas", "allow_http": true})).is_ok());
        assert!(cas(json!({"server_url": "https://c/cas?x=1"})).is_err());
        assert!(cas(json!({"server_url": "https://c/cas", "version": 4})).is_err());
        assert!(cas(json!({"server_url": "https://c/cas", "attributes": {"mail": "x"}})).is_err());
        assert!(cas(json!({"server_url": "https://c/cas", "attributes": {"email": 1}})).is_err());
        assert!(cas(json!({})).is_err());
        let two = cas(json!({"server_url": "https://c/cas/", "version": 2})).expect("valid");
        assert_eq!((two.version, two.server_url.as_str()), (2, "https://c/cas"));
    }

    #[test]
    fn attributes_map_to_the_identity() {
        let p = cas(json!({"server_url": "https://c/cas",
            "attributes": {"email": "mail", "name": "cn", "groups": "memberOf"}}))
        .expect("valid");
        let mut attributes = std::collections::BTreeMap::new();
        attributes.insert("mail".to_owned(), vec!["a@example.org".to_owned()]);
        attributes.insert("memberOf".to_owned(), vec!["dba".into(), "staff".into()]);
        let id = p.identity(cas::CasSuccess {
            user: "alice".into(),
            attributes,
        });
        assert_eq!(id.subject, "alice");
        assert_eq!(id.email.as_deref(), Some("a@example.org"));
        assert_eq!(id.name, None);
        assert_eq!(id.groups, vec!["dba", "staff"]);
        assert_eq!(
            id.claims,
            json!({"mail": "a@example.org", "memberOf": ["dba", "staff"]})
        );
    }

    #[test]
    fn failure_codes_split_into_refusals_and_server_faults() {
        assert!(matches!(refusal("INVALID_TICKET"), SsoError::Rejected(_)));
        assert!(matches!(refusal("INVALID_SERVICE"), SsoError::Rejected(_)));
        assert!(matches!(refusal("INTERNAL_ERROR"), SsoError::Upstream(_)));
        assert!(matches!(refusal(""), SsoError::Upstream(_)));
    }

    #[test]
    fn logout_requests_give_the_hash_of_their_ticket() {
        let p = cas(json!({"server_url": "https://c/cas"})).expect("valid");
        let xml = r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"><samlp:SessionIndex>ST-1</samlp:SessionIndex></samlp:LogoutRequest>"#;
        assert_eq!(
            p.logout_request_key(xml).expect("parses"),
            ticket_hash("ST-1")
        );
        assert_eq!(ticket_hash("ST-1").len(), 64);
        assert!(p.logout_request_key("<x/>").is_err());
    }
}
