//! What every handler can reach: the database pool, the metrics, the
//! webhook machinery and the SSO configuration. Also the
//! one database check shared by `/readyz` and `/metrics`, which keeps the
//! `db_up` gauge current and logs only when reachability changes.

use crate::db::{Database, DbError};
use crate::metrics::Metrics;
use crate::sso::Sso;
use crate::webhooks::Webhooks;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Cheap to clone: axum clones the state for every request, so the
/// fields live behind one `Arc` (cloning them each time cost allocations,
/// a `tokio_postgres::Config` among them, on every delivery).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub db: Database,
    pub metrics: Arc<Metrics>,
    pub webhooks: Webhooks,
    pub sso: Sso,
    pub openapi: crate::openapi::DocCache,
    /// The SQL API reference page (`/docs/sql`), rendered recently.
    pub sql_reference: crate::docs::ReferenceCache,
    db_status: AtomicU8,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// The state, with the webhook workers started (`commit_workers` of them)
    /// and the SSO configuration loading; `public_url` is the token issuer.
    pub fn new(
        db: Database,
        metrics: Metrics,
        commit_workers: usize,
        public_url: &url::Url,
    ) -> AppState {
        let metrics = Arc::new(metrics);
        AppState(Arc::new(Shared {
            webhooks: Webhooks::start(&db, metrics.clone(), commit_workers),
            sso: Sso::start(&db, public_url),
            openapi: crate::openapi::DocCache::default(),
            sql_reference: crate::docs::ReferenceCache::default(),
            db,
            metrics,
            db_status: AtomicU8::new(UNKNOWN),
        }))
    }

    /// Pings the database, records the outcome in `integration_sidecar_db_up`
    /// and logs a line when the outcome differs from the previous check.
    pub async fn check_database(&self) -> Result<(), DbError> {
        let result = self.db.ping().await;
        self.metrics.set_db_up(result.is_ok());
        let now = if result.is_ok() { UP } else { DOWN };
        if self.db_status.swap(now, Ordering::Relaxed) != now {
            match &result {
                Ok(()) => tracing::info!("database is reachable"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "database is unreachable; /readyz answers 503 until it is back"
                ),
            }
        }
        result
    }
}
