//! The SSO configuration cache: every row of `integration.sso_providers`
//! (secrets included) turned into a ready protocol, and the signing keys,
//! kept current by `listen::spawn_reloader` on `integration_sso_config`. When
//! no key is active the loader asks the database for one
//! (`integration.ensure_signing_key()`), so a fresh install signs at once.

use super::{cas, ldap, oauth2, oidc, saml, Protocol};
use crate::db::describe;
use crate::listen::Reload;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

const LOAD_PROVIDERS: &str = "
    SELECT name, kind, config, secrets, role_mapping, default_role::text AS default_role,
           allowed_redirects, extract(epoch FROM session_lifetime)::bigint AS lifetime, enabled
    FROM integration.sso_providers";
const LOAD_KEYS: &str = "
    SELECT kid, private_pem, public_jwk, retired_at IS NULL AS active,
           extract(epoch FROM publish_until)::bigint AS publish_until
    FROM integration.signing_keys
    WHERE retired_at IS NULL OR publish_until > now()";

/// One provider as the login routes need it.
pub struct Provider {
    pub name: String,
    pub role_mapping: Value,
    pub default_role: Option<String>,
    pub allowed_redirects: Vec<String>,
    pub lifetime_secs: i64,
    pub enabled: bool,
    /// The protocol, or why its configuration cannot be used.
    pub protocol: Result<Arc<dyn Protocol>, String>,
}

/// The key that signs new sessions.
pub struct ActiveKey {
    pub kid: String,
    pub private_pem: String,
}

/// The signing keys: the active one and every public key still published.
#[derive(Default)]
pub struct Keys {
    pub active: Option<ActiveKey>,
    /// Public JWKs with the Unix time they stop being published (`None`: active).
    published: Vec<(Value, Option<i64>)>,
}

impl Keys {
    /// The JWKS of the keys published at `now`.
    pub fn jwks(&self, now: i64) -> Value {
        let keys: Vec<&Value> = self
            .published
            .iter()
            .filter(|(_, until)| until.is_none_or(|t| t > now))
            .map(|(jwk, _)| jwk)
            .collect();
        json!({ "keys": keys })
    }
}

/// One load: every provider by name and the keys. Each load replaces it
/// as a whole.
pub struct Loaded {
    pub providers: HashMap<String, Arc<Provider>>,
    keys: Arc<Keys>,
}

/// The cache shared by every request; empty until the first load.
#[derive(Clone)]
pub struct Cache {
    loaded: Arc<RwLock<Option<Arc<Loaded>>>>,
    /// The sidecar's public URL, base of the callback URLs.
    public_url: Arc<str>,
}

/// What a provider lookup found.
pub enum Lookup {
    Found(Arc<Provider>),
    Unknown,
    NotLoaded,
}

impl Cache {
    pub fn new(public_url: Arc<str>) -> Cache {
        Cache {
            loaded: Arc::default(),
            public_url,
        }
    }

    /// The latest load, or `None` before the first.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn provider(&self, name: &str) -> Lookup {
        match self.current() {
            None => Lookup::NotLoaded,
            Some(loaded) => loaded
                .providers
                .get(name)
                .cloned()
                .map_or(Lookup::Unknown, Lookup::Found),
        }
    }

    /// The keys, or `None` before the first load.
    pub fn keys(&self) -> Option<Arc<Keys>> {
        self.current().map(|loaded| loaded.keys.clone())
    }

    async fn load(&self, client: &tokio_postgres::Client) -> Result<(), String> {
        let mut keys = load_keys(client).await?;
        if keys.active.is_none() {
            client
                .query_one("SELECT integration.ensure_signing_key()", &[])
                .await
                .map_err(|e| format!("cannot create a signing key: {}", describe(&e)))?;
            keys = load_keys(client).await?;
        }
        let rows = client
            .query(LOAD_PROVIDERS, &[])
            .await
            .map_err(|e| format!("cannot load integration.sso_providers: {}", describe(&e)))?;
        let mut providers = HashMap::new();
        for row in rows {
            match parse_provider(&row, &self.public_url) {
                Ok(provider) => {
                    if let Err(e) = &provider.protocol {
                        tracing::error!(provider = %provider.name, error = %e,
                            "SSO provider cannot be used until its configuration is fixed");
                    }
                    providers.insert(provider.name.clone(), Arc::new(provider));
                }
                Err(e) => {
                    tracing::error!(error = %e, "skipping an SSO provider that cannot be read")
                }
            }
        }
        tracing::info!(
            providers = providers.len(),
            active_kid = keys.active.as_ref().map_or("", |k| k.kid.as_str()),
            "SSO configuration loaded"
        );
        *self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(Loaded {
            providers,
            keys: Arc::new(keys),
        }));
        Ok(())
    }
}

impl Reload for Cache {
    const WHAT: &'static str = "SSO configuration";
    const CHANNEL: &'static str = "integration_sso_config";

    fn reload<'a>(
        &'a self,
        client: &'a tokio_postgres::Client,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.load(client))
    }
}

async fn load_keys(client: &tokio_postgres::Client) -> Result<Keys, String> {
    let rows = client
        .query(LOAD_KEYS, &[])
        .await
        .map_err(|e| format!("cannot load integration.signing_keys: {}", describe(&e)))?;
    let mut keys = Keys::default();
    for row in rows {
        let get = |e: tokio_postgres::Error| describe(&e);
        let jwk: Value = row.try_get("public_jwk").map_err(get)?;
        let until: Option<i64> = row.try_get("publish_until").map_err(get)?;
        if row.try_get::<_, bool>("active").map_err(get)? {
            keys.active = Some(ActiveKey {
                kid: row.try_get("kid").map_err(get)?,
                private_pem: row.try_get("private_pem").map_err(get)?,
            });
        }
        keys.published.push((jwk, until));
    }
    Ok(keys)
}

fn parse_provider(row: &tokio_postgres::Row, public_url: &str) -> Result<Provider, String> {
    let get = |e: tokio_postgres::Error| describe(&e);
    let name: String = row.try_get("name").map_err(get)?;
    let kind: String = row.try_get("kind").map_err(get)?;
    let config: Value = row.try_get("config").map_err(get)?;
    let secrets: Value = row.try_get("secrets").map_err(get)?;
    let protocol = protocol(&name, &kind, &config, &secrets, public_url);
    Ok(Provider {
        role_mapping: row.try_get("role_mapping").map_err(get)?,
        default_role: row.try_get("default_role").map_err(get)?,
        allowed_redirects: row.try_get("allowed_redirects").map_err(get)?,
        lifetime_secs: row.try_get("lifetime").map_err(get)?,
        enabled: row.try_get("enabled").map_err(get)?,
        protocol,
        name,
    })
}

/// The protocol of provider `name` of `kind`, or why it cannot be used.
fn protocol(
    name: &str,
    kind: &str,
    config: &Value,
    secrets: &Value,
    public_url: &str,
) -> Result<Arc<dyn Protocol>, String> {
    let callback = format!("{public_url}/auth/{name}/callback");
    match kind {
        "ldap" => ldap::Ldap::from_config(config, secrets).map(|p| Arc::new(p) as _),
        "oidc" => oidc::Oidc::from_config(config, secrets, &callback).map(|p| Arc::new(p) as _),
        "oauth2" => {
            oauth2::OAuth2::from_config(config, secrets, &callback).map(|p| Arc::new(p) as _)
        }
        "cas" => cas::Cas::from_config(config, &callback).map(|p| Arc::new(p) as _),
        "saml" => {
            saml::Saml::from_config(config, secrets, public_url, name).map(|p| Arc::new(p) as _)
        }
        other => Err(format!(
            "{other} logins are not implemented by this sidecar yet"
        )),
    }
    .map_err(|e| format!("SSO provider {name}: {e}"))
}

#[cfg(test)]
impl Provider {
    /// An enabled provider as a load would make it from `config` and
    /// `secrets`, for tests of what is built from one.
    pub fn example(name: &str, kind: &str, config: &Value, secrets: &Value) -> Provider {
        Provider {
            name: name.to_owned(),
            role_mapping: json!([]),
            default_role: None,
            allowed_redirects: Vec::new(),
            lifetime_secs: 3600,
            enabled: true,
            protocol: protocol(name, kind, config, secrets, "https://sidecar.example"),
        }
    }
}
