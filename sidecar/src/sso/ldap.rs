//! LDAP logins (`POST /auth/{provider}/login` with a username and password):
//! direct bind to a DN made from `user_dn_template`, or search-then-bind
//! (a service account, or anonymous, finds the one entry matching
//! `search_filter` under `search_base`, then the user binds as it). The
//! username is escaped for where it goes (RFC 4514 in a DN, RFC 4515 in a
//! filter). `ldaps://` or `starttls: true`, verified against `ca_cert` (PEM)
//! when given, else the system roots. Groups come from `group_attribute`.
//!
//! Config keys: `url`, `user_dn_template` | `search_base` + `search_filter`
//! [+ `bind_dn`, secret `bind_password`], `starttls`, `ca_cert`,
//! `group_attribute` (memberOf), `email_attribute` (mail), `name_attribute` (cn),
//! `timeout_seconds` (10).

use super::{Identity, Protocol, SsoError};
use futures_util::future::BoxFuture;
use ldap3::{
    dn_escape, ldap_escape, Ldap as Conn, LdapConnAsync, LdapConnSettings, Scope, SearchEntry,
};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Longest username accepted.
const MAX_USERNAME: usize = 256;
/// Longest password accepted.
const MAX_PASSWORD: usize = 1024;
/// LDAP result code 49: invalid credentials.
const INVALID_CREDENTIALS: u32 = 49;

enum Locate {
    /// Direct bind: the DN is the template with the escaped username.
    Template(String),
    /// Search then bind, as `bind` (DN and password) or anonymously.
    Search {
        base: String,
        filter: String,
        bind: Option<(String, String)>,
    },
}

pub struct Ldap {
    url: String,
    starttls: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    locate: Locate,
    group_attribute: String,
    email_attribute: String,
    name_attribute: String,
    timeout: Duration,
}

fn text(config: &Value, key: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("config key {key} must be a string")),
    }
}

impl Ldap {
    pub fn from_config(config: &Value, secrets: &Value) -> Result<Ldap, String> {
        let url = text(config, "url")?.ok_or("config lacks url")?;
        if !(url.starts_with("ldap://") || url.starts_with("ldaps://")) {
            return Err(format!("url {url} must start with ldap:// or ldaps://"));
        }
        let starttls = config
            .get("starttls")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if starttls && url.starts_with("ldaps://") {
            return Err("starttls is for ldap:// URLs; ldaps:// is TLS already".into());
        }
        let tls = text(config, "ca_cert")?
            .map(|pem| tls_config(&pem))
            .transpose()?;
        let locate = match (
            text(config, "user_dn_template")?,
            text(config, "search_filter")?,
        ) {
            (Some(template), None) => Locate::Template(template),
            (None, Some(filter)) => Locate::Search {
                base: text(config, "search_base")?.ok_or("search_filter needs search_base")?,
                filter,
                bind: match text(config, "bind_dn")? {
                    Some(dn) => Some((
                        dn,
                        text(secrets, "bind_password")?
                            .ok_or("bind_dn needs the secret bind_password")?,
                    )),
                    None => None,
                },
            },
            _ => return Err("give exactly one of user_dn_template or search_filter".into()),
        };
        let timeout = config
            .get("timeout_seconds")
            .and_then(Value::as_u64)
            .unwrap_or(10)
            .clamp(1, 60);
        Ok(Ldap {
            url,
            starttls,
            tls,
            locate,
            group_attribute: text(config, "group_attribute")?.unwrap_or_else(|| "memberOf".into()),
            email_attribute: text(config, "email_attribute")?.unwrap_or_else(|| "mail".into()),
            name_attribute: text(config, "name_attribute")?.unwrap_or_else(|| "cn".into()),
            timeout: Duration::from_secs(timeout),
        })
    }

    async fn connect(&self) -> Result<Conn, SsoError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.timeout)
            .set_starttls(self.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| {
                SsoError::Upstream(format!("cannot reach the LDAP server {}: {e}", self.url))
            })?;
        ldap3::drive!(conn);
        ldap.with_timeout(self.timeout);
        Ok(ldap)
    }

    fn attributes(&self) -> Vec<&str> {
        vec![
            &self.group_attribute,
            &self.email_attribute,
            &self.name_attribute,
            "uid",
        ]
    }

    async fn login(&self, username: &str, password: &str) -> Result<Identity, SsoError> {
        check_credentials(username, password)?;
        let mut ldap = self.connect().await?;
        let result = self.bind_and_read(&mut ldap, username, password).await;
        ldap.unbind().await.ok();
        let entry = result?;
        Ok(self.identity(username, entry))
    }

    async fn bind_and_read(
        &self,
        ldap: &mut Conn,
        username: &str,
        password: &str,
    ) -> Result<SearchEntry, SsoError> {
        let upstream = |e: ldap3::LdapError| SsoError::Upstream(format!("LDAP: {e}"));
        let dn = match &self.locate {
            Locate::Template(template) => user_dn(template, username),
            Locate::Search { base, filter, bind } => {
                if let Some((bind_dn, bind_password)) = bind {
                    ldap.simple_bind(bind_dn, bind_password)
                        .await
                        .map_err(upstream)?
                        .success()
                        .map_err(|e| {
                            SsoError::Upstream(format!("the LDAP service account cannot bind: {e}"))
                        })?;
                }
                let (entries, _) = ldap
                    .search(
                        base,
                        Scope::Subtree,
                        &user_filter(filter, username),
                        vec!["1.1"],
                    )
                    .await
                    .map_err(upstream)?
                    .success()
                    .map_err(|e| SsoError::Upstream(format!("LDAP search failed: {e}")))?;
                match entries.as_slice() {
                    [one] => search_entry(one.clone())?.dn,
                    [] => return Err(SsoError::BadCredentials("no such LDAP user".into())),
                    _ => {
                        return Err(SsoError::BadCredentials(
                            "the LDAP search found several users".into(),
                        ))
                    }
                }
            }
        };
        let bound = ldap.simple_bind(&dn, password).await.map_err(upstream)?;
        if bound.rc == INVALID_CREDENTIALS {
            return Err(SsoError::BadCredentials(
                "the LDAP server refused the password".into(),
            ));
        }
        bound
            .success()
            .map_err(|e| SsoError::Upstream(format!("LDAP bind failed: {e}")))?;
        // Read the entry as the user: their own attributes and groups.
        let (entries, _) = ldap
            .search(&dn, Scope::Base, "(objectClass=*)", self.attributes())
            .await
            .map_err(upstream)?
            .success()
            .map_err(|e| SsoError::Upstream(format!("cannot read the LDAP entry: {e}")))?;
        let entry = entries.into_iter().next().ok_or_else(|| {
            SsoError::Upstream("the LDAP entry of the user cannot be read".into())
        })?;
        search_entry(entry)
    }

    fn identity(&self, username: &str, entry: SearchEntry) -> Identity {
        let first = |attribute: &str| {
            entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(attribute))
                .and_then(|(_, v)| v.first().cloned())
        };
        let groups: Vec<String> = entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&self.group_attribute))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut claims = Map::new();
        claims.insert("dn".into(), entry.dn.clone().into());
        claims.insert("username".into(), username.into());
        for (k, v) in &entry.attrs {
            claims.insert(k.clone(), v.clone().into());
        }
        Identity {
            subject: entry.dn.clone(),
            email: first(&self.email_attribute),
            name: first(&self.name_attribute),
            groups,
            claims: Value::Object(claims),
            logout_key: None,
            single_use: None,
        }
    }
}

impl Protocol for Ldap {
    fn takes_password(&self) -> bool {
        true
    }

    fn finish_password<'a>(
        &'a self,
        username: &'a str,
        password: &'a str,
    ) -> BoxFuture<'a, Result<Identity, SsoError>> {
        Box::pin(self.login(username, password))
    }
}

/// A search result entry; ldap3 panics on malformed BER, which a broken or
/// hostile server could send, so the panic becomes an upstream error.
fn search_entry(raw: ldap3::ResultEntry) -> Result<SearchEntry, SsoError> {
    std::panic::catch_unwind(|| SearchEntry::construct(raw))
        .map_err(|_| SsoError::Upstream("the LDAP server sent a malformed entry".into()))
}

/// An empty password would be an unauthenticated bind (RFC 4513 5.1.2), which
/// many servers answer with success: refuse it before asking.
fn check_credentials(username: &str, password: &str) -> Result<(), SsoError> {
    if username.trim().is_empty() || username.len() > MAX_USERNAME {
        return Err(SsoError::BadRequest(format!(
            "username must have 1 to {MAX_USERNAME} bytes"
        )));
    }
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(SsoError::BadRequest(format!(
            "password must have 1 to {MAX_PASSWORD} bytes"
        )));
    }
    Ok(())
}

/// The DN of `username` from a template such as `uid={username},ou=people,dc=example,dc=org`.
fn user_dn(template: &str, username: &str) -> String {
    template.replace("{username}", &dn_escape(username))
}

/// The search filter for `username` from a template such as `(&(objectClass=person)(uid={username}))`.
fn user_filter(template: &str, username: &str) -> String {
    template.replace("{username}", &ldap_escape(username))
}

fn tls_config(pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = pem.as_bytes();
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| format!("ca_cert is not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("ca_cert holds an unusable certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("ca_cert holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_usernames_stay_one_rdn_value() {
        let template = "uid={username},ou=people,dc=example,dc=org";
        assert_eq!(
            user_dn(template, "ada"),
            "uid=ada,ou=people,dc=example,dc=org"
        );
        // A comma or plus would add an RDN or attribute; `=`, quotes, angle
        // brackets, semicolons and backslashes are escaped as well.
        assert_eq!(
            user_dn(template, "x,ou=admins"),
            r"uid=x\2cou\3dadmins,ou=people,dc=example,dc=org"
        );
        assert_eq!(
            user_dn(template, r#"a+cn=b"<>;\"#),
            r"uid=a\2bcn\3db\22\3c\3e\3b\5c,ou=people,dc=example,dc=org"
        );
        // Leading `#` or space and a trailing space are escaped (RFC 4514 2.4).
        assert_eq!(user_dn("uid={username}", "#x "), r"uid=\23x\20");
        assert_eq!(user_dn("uid={username}", " x"), r"uid=\20x");
        assert_eq!(user_dn("uid={username}", "a\0b"), r"uid=a\00b");
    }

    #[test]
    fn hostile_usernames_stay_one_filter_value() {
        let template = "(&(objectClass=inetOrgPerson)(uid={username}))";
        assert_eq!(
            user_filter(template, "ada"),
            "(&(objectClass=inetOrgPerson)(uid=ada))"
        );
        // The classic injection: close the assertion and add an always-true one.
        assert_eq!(
            user_filter(template, "*)(uid=*))(|(uid=*"),
            r"(&(objectClass=inetOrgPerson)(uid=\2a\29\28uid=\2a\29\29\28|\28uid=\2a))"
        );
        assert_eq!(user_filter("(uid={username})", r"a\b"), r"(uid=a\5cb)");
        assert_eq!(user_filter("(uid={username})", "a\0"), r"(uid=a\00)");
        assert_eq!(user_filter("(uid={username})", "*"), r"(uid=\2a)");
    }

    #[test]
    fn a_malformed_entry_from_the_server_is_an_upstream_error() {
        use ldap3::asn1::{StructureTag, TagClass, PL};
        // A search result entry (application 4) whose payload is a bare
        // octet string, not the sequence of DN and attributes.
        let hostile = ldap3::ResultEntry::new(StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::P(b"not an entry".to_vec()),
        });
        assert!(matches!(search_entry(hostile), Err(SsoError::Upstream(_))));
    }

    #[test]
    fn empty_passwords_are_refused_before_any_bind() {
        assert!(matches!(
            check_credentials("ada", ""),
            Err(SsoError::BadRequest(_))
        ));
        assert!(matches!(
            check_credentials(" ", "pw"),
            Err(SsoError::BadRequest(_))
        ));
        assert!(check_credentials("ada", "pw").is_ok());
    }

    #[test]
    fn configurations_are_checked_when_loaded() {
        let none = serde_json::json!({});
        let ok = serde_json::json!({"url": "ldap://127.0.0.1:389", "user_dn_template": "uid={username},dc=x"});
        assert!(Ldap::from_config(&ok, &none).is_ok());
        for (config, error) in [
            (
                serde_json::json!({"url": "http://x", "user_dn_template": "uid={username}"}),
                "must start",
            ),
            (serde_json::json!({"url": "ldap://x"}), "exactly one"),
            (
                serde_json::json!({"url": "ldap://x", "search_filter": "(uid={username})"}),
                "search_base",
            ),
            (
                serde_json::json!({"url": "ldap://x", "search_filter": "(uid={username})", "search_base": "dc=x", "bind_dn": "cn=svc"}),
                "bind_password",
            ),
            (
                serde_json::json!({"url": "ldaps://x", "starttls": true, "user_dn_template": "uid={username}"}),
                "starttls",
            ),
            (
                serde_json::json!({"url": "ldaps://x", "ca_cert": "junk", "user_dn_template": "uid={username}"}),
                "no certificate",
            ),
        ] {
            let err = Ldap::from_config(&config, &none).err().unwrap_or_default();
            assert!(err.contains(error), "{config}: {err}");
        }
    }
}
