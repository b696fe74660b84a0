//! The webhook configuration cache: every row of `integration.webhooks` with
//! its secrets, kept current by `listen::spawn_reloader` on channel
//! `integration_webhook_config`. Until the first load, lookups say so. A
//! name the last load did not have is looked up in the database once, so a
//! webhook created a moment ago is served before its notification arrives.

use crate::db::{describe, Database};
use crate::listen::Reload;
use futures_util::future::BoxFuture;
use integration_core::webhooks::{DeliveryId, Scheme, DEFAULT_TOLERANCE_SECONDS};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const LOAD: &str = "
    SELECT w.id, w.name, w.signature, w.signature_header, w.signature_encoding,
           extract(epoch FROM w.tolerance)::bigint AS tolerance, w.delivery_id,
           w.json_schema::text AS json_schema, w.allowed_ips::text[] AS allowed_ips,
           w.max_body_bytes, w.enabled, w.handler IS NOT NULL AS has_handler,
           coalesce((SELECT array_agg(s.secret ORDER BY s.id DESC) FROM integration.webhook_secrets s
                      WHERE s.webhook = w.id), '{}') AS secrets,
           coalesce((SELECT array_agg(coalesce(extract(epoch FROM s.expires_at)::bigint, 9223372036854775807)
                                      ORDER BY s.id DESC)
                       FROM integration.webhook_secrets s WHERE s.webhook = w.id), '{}') AS expiries
    FROM integration.webhooks w";

const EXTENSION_VERSION: &str =
    "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_integration'";

/// Most JSON Schema validations of one webhook running at once.
const SCHEMA_SLOTS: usize = 2;

/// One webhook as the handler needs it.
pub struct Webhook {
    pub id: i64,
    pub name: String,
    pub scheme: Scheme,
    pub tolerance: i64,
    pub delivery_id: Option<DeliveryId>,
    /// The compiled schema, or why it does not compile.
    pub schema: Option<Result<jsonschema::Validator, String>>,
    /// The schema as configured, for the OpenAPI document (`None` also
    /// when its text is not JSON).
    pub schema_source: Option<serde_json::Value>,
    /// Whether a handler function may give the answer.
    pub has_handler: bool,
    /// Slots for validations of this webhook's payloads, each run on a
    /// blocking thread: a slow schema can only delay its own deliveries.
    pub schema_slots: Arc<tokio::sync::Semaphore>,
    pub allowed: Option<Vec<IpNet>>,
    pub max_body_bytes: usize,
    pub enabled: bool,
    /// Newest first, each with its expiry in Unix seconds (`i64::MAX`: none).
    secrets: Vec<(String, i64)>,
}

impl Webhook {
    /// The secrets still valid at `now`, newest first.
    pub fn secrets_at(&self, now: i64) -> Vec<String> {
        self.secrets
            .iter()
            .filter(|(_, expires)| *expires > now)
            .map(|(secret, _)| secret.clone())
            .collect()
    }

    pub fn allows(&self, ip: Option<IpAddr>) -> bool {
        match (&self.allowed, ip) {
            (None, _) => true,
            (Some(nets), Some(ip)) => nets.iter().any(|net| net.contains(&canonical(ip))),
            (Some(_), None) => false,
        }
    }
}

#[cfg(test)]
impl Webhook {
    /// A webhook as a load would make it, for tests of what is built from one.
    pub fn example(
        name: &str,
        scheme: Scheme,
        secrets: &[&str],
        schema: Option<serde_json::Value>,
    ) -> Webhook {
        Webhook {
            id: 1,
            name: name.to_owned(),
            delivery_id: scheme.default_delivery_id(),
            scheme,
            tolerance: DEFAULT_TOLERANCE_SECONDS,
            schema: schema
                .as_ref()
                .map(|s| jsonschema::validator_for(s).map_err(|e| e.to_string())),
            schema_source: schema,
            has_handler: false,
            schema_slots: Arc::new(tokio::sync::Semaphore::new(SCHEMA_SLOTS)),
            allowed: None,
            max_body_bytes: 1024,
            enabled: true,
            secrets: secrets
                .iter()
                .map(|s| ((*s).to_owned(), i64::MAX))
                .collect(),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every webhook by name, and the version of the extension that serves them.
#[derive(Default)]
pub struct Table {
    pub webhooks: HashMap<String, Arc<Webhook>>,
    /// `pg_extension.extversion` of pg_integration when the table was loaded.
    pub extension_version: Option<String>,
}

/// The cache shared by every request; `None` until the first load. Each
/// load replaces the table as a whole, so a reader holding one sees one load.
#[derive(Clone, Default)]
pub struct Cache {
    table: Arc<RwLock<Option<Arc<Table>>>>,
    /// Names looked up in the database and not found, and when: not looked
    /// up again for [`MISS_KEPT`], so a flood of unknown names costs little.
    misses: Arc<Mutex<HashMap<String, Instant>>>,
}

/// How long a name found missing in the database is not looked up again.
const MISS_KEPT: Duration = Duration::from_secs(2);
/// Missing names remembered at most (then forgotten all at once).
const MISSES_KEPT: usize = 10_000;

/// Whether `name` could be a webhook's (the table's CHECK on `name`).
fn possible_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 100
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What a lookup found.
pub enum Lookup {
    Found(Arc<Webhook>),
    Unknown,
    NotLoaded,
}

impl Cache {
    /// The table of the latest load, or `None` before the first.
    pub fn snapshot(&self) -> Option<Arc<Table>> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn get(&self, name: &str) -> Lookup {
        match self.snapshot() {
            None => Lookup::NotLoaded,
            Some(table) => table
                .webhooks
                .get(name)
                .cloned()
                .map_or(Lookup::Unknown, Lookup::Found),
        }
    }

    /// As [`Cache::get`], but a name the last load did not have is looked
    /// up in the database (unless it was found missing a moment ago): a
    /// webhook created since is found at once, on every replica, instead
    /// of a 404 until the reload.
    pub async fn find(&self, name: &str, db: &Database) -> Lookup {
        match self.get(name) {
            Lookup::Unknown if possible_name(name) => {}
            other => return other,
        }
        let recent = |misses: &HashMap<String, Instant>| {
            misses.get(name).is_some_and(|at| at.elapsed() < MISS_KEPT)
        };
        if recent(
            &self
                .misses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ) {
            return Lookup::Unknown;
        }
        let Ok(client) = db.client().await else {
            return Lookup::Unknown;
        };
        let row = match client
            .query_opt(&format!("{LOAD} WHERE w.name = $1"), &[&name])
            .await
        {
            Ok(row) => row,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "cannot look up a webhook");
                return Lookup::Unknown;
            }
        };
        let Some(row) = row else {
            let mut misses = self
                .misses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if misses.len() >= MISSES_KEPT {
                misses.clear();
            }
            misses.insert(name.to_string(), Instant::now());
            return Lookup::Unknown;
        };
        match parse_row(&row) {
            Ok(webhook) => Lookup::Found(self.add(webhook)),
            Err(e) => {
                tracing::error!(error = %e, "skipping a webhook that cannot be used");
                Lookup::Unknown
            }
        }
    }

    /// Adds one webhook to the loaded table (a new table: readers holding
    /// the old one keep it); the next load replaces both.
    fn add(&self, webhook: Webhook) -> Arc<Webhook> {
        let webhook = Arc::new(webhook);
        let mut guard = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(table) = guard.as_ref() {
            let mut webhooks = table.webhooks.clone();
            webhooks.insert(webhook.name.clone(), Arc::clone(&webhook));
            *guard = Some(Arc::new(Table {
                webhooks,
                extension_version: table.extension_version.clone(),
            }));
        }
        webhook
    }

    fn set(&self, table: Table) {
        *self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(table));
        self.misses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

impl Reload for Cache {
    const WHAT: &'static str = "webhook configuration";
    const CHANNEL: &'static str = "integration_webhook_config";

    fn reload<'a>(
        &'a self,
        client: &'a tokio_postgres::Client,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.load(client))
    }
}

impl Cache {
    async fn load(&self, client: &tokio_postgres::Client) -> Result<(), String> {
        let rows = client
            .query(LOAD, &[])
            .await
            .map_err(|e| format!("cannot load integration.webhooks: {}", describe(&e)))?;
        let extension_version = client
            .query_opt(EXTENSION_VERSION, &[])
            .await
            .map_err(|e| format!("cannot read the extension version: {}", describe(&e)))?
            .map(|row| row.try_get::<_, String>(0))
            .transpose()
            .map_err(|e| describe(&e))?;
        let mut table = Table {
            webhooks: HashMap::new(),
            extension_version,
        };
        for row in rows {
            match parse_row(&row) {
                Ok(webhook) => {
                    table
                        .webhooks
                        .insert(webhook.name.clone(), Arc::new(webhook));
                }
                Err(e) => tracing::error!(error = %e, "skipping a webhook that cannot be used"),
            }
        }
        tracing::info!(
            webhooks = table.webhooks.len(),
            "webhook configuration loaded"
        );
        self.set(table);
        Ok(())
    }
}

fn parse_row(row: &tokio_postgres::Row) -> Result<Webhook, String> {
    let get = |e: tokio_postgres::Error| describe(&e);
    let name: String = row.try_get("name").map_err(get)?;
    let scheme = Scheme::parse(
        row.try_get("signature").map_err(get)?,
        row.try_get("signature_header").map_err(get)?,
        row.try_get("signature_encoding").map_err(get)?,
    )
    .map_err(|e| format!("webhook {name}: {e}"))?;
    let delivery_id = row
        .try_get::<_, Option<&str>>("delivery_id")
        .map_err(get)?
        .map(DeliveryId::parse)
        .or_else(|| scheme.default_delivery_id());
    let schema_source: Option<Result<serde_json::Value, String>> = row
        .try_get::<_, Option<&str>>("json_schema")
        .map_err(get)?
        .map(|text| serde_json::from_str(text).map_err(|e| e.to_string()));
    let schema = schema_source.as_ref().map(|source| {
        source
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|schema| jsonschema::validator_for(schema).map_err(|e| e.to_string()))
    });
    let allowed = row
        .try_get::<_, Option<Vec<String>>>("allowed_ips")
        .map_err(get)?
        .map(|nets| {
            nets.iter()
                .map(|net| {
                    net.parse::<IpNet>()
                        .map_err(|e| format!("webhook {name}: {net}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let secrets: Vec<String> = row.try_get("secrets").map_err(get)?;
    let expiries: Vec<i64> = row.try_get("expiries").map_err(get)?;
    let max_body: i32 = row.try_get("max_body_bytes").map_err(get)?;
    Ok(Webhook {
        id: row.try_get("id").map_err(get)?,
        scheme,
        tolerance: row
            .try_get::<_, Option<i64>>("tolerance")
            .map_err(get)?
            .unwrap_or(DEFAULT_TOLERANCE_SECONDS),
        delivery_id,
        schema,
        schema_source: schema_source.and_then(Result::ok),
        has_handler: row.try_get("has_handler").map_err(get)?,
        schema_slots: Arc::new(tokio::sync::Semaphore::new(SCHEMA_SLOTS)),
        allowed,
        max_body_bytes: usize::try_from(max_body).unwrap_or(0),
        enabled: row.try_get("enabled").map_err(get)?,
        secrets: secrets.into_iter().zip(expiries).collect(),
        name,
    })
}

#[cfg(test)]
mod name_tests {
    use super::possible_name;

    #[test]
    fn only_names_a_webhook_can_have_are_looked_up() {
        let longest = "x".repeat(100);
        for name in ["a", "orders.v2", "Stripe-live_1", longest.as_str()] {
            assert!(possible_name(name), "{name}");
        }
        let too_long = "x".repeat(101);
        for name in ["", ".hidden", "-x", "a/b", "a b", "é", too_long.as_str()] {
            assert!(!possible_name(name), "{name}");
        }
    }
}
