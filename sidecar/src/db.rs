//! The connection pool to PostgreSQL (deadpool over tokio-postgres, no TLS
//! yet). Connections open lazily, so a database that is down at start is not
//! fatal: the sidecar serves anyway and `/readyz` says 503 until it is back.
//! Error messages never carry the password; they name the redacted URL.

use crate::config::DatabaseUrl;
use deadpool_postgres::{
    Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::NoTls;

/// How the sidecar names itself in `pg_stat_activity` unless the URL says otherwise.
const APPLICATION_NAME: &str = "integration-sidecar";
/// Time allowed to open one connection unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a caller waits for a free connection when all are busy.
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on [`Database::ping`], so a readiness probe never hangs.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid DATABASE_URL {url}: {reason}; expected e.g. postgresql://integration_sidecar@localhost:5432/mydb")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    #[error("the database did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("{0}")]
    Unavailable(String),
}

/// A cheaply clonable handle on the pool.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    config: tokio_postgres::Config,
}

/// A connection outside the pool, for LISTEN; drive `connection` to use it.
pub type Dedicated = (
    tokio_postgres::Client,
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
);

impl Database {
    /// Builds a pool of at most `size` connections to `url`; opens none yet.
    pub fn new(url: &DatabaseUrl, size: usize) -> Result<Database, DbError> {
        let mut config =
            tokio_postgres::Config::from_str(url.expose()).map_err(|e| DbError::InvalidUrl {
                url: url.to_string(),
                reason: describe(&e),
            })?;
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(PING_TIMEOUT))
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        Ok(Database { pool, config })
    }

    /// Runs `SELECT 1` on a pooled connection, giving up after [`PING_TIMEOUT`].
    pub async fn ping(&self) -> Result<(), DbError> {
        let attempt = async {
            let client = self.pool.get().await.map_err(from_pool_error)?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| DbError::Unavailable(format!("SELECT 1 failed: {}", describe(&e))))?;
            Ok(())
        };
        tokio::time::timeout(PING_TIMEOUT, attempt)
            .await
            .map_err(|_| DbError::Timeout(PING_TIMEOUT))?
    }

    /// A pooled connection, or why none could be had.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(from_pool_error)
    }

    /// A new connection outside the pool (for LISTEN, which needs its own).
    pub async fn connect_dedicated(&self) -> Result<Dedicated, DbError> {
        self.config.connect(NoTls).await.map_err(|e| {
            DbError::Unavailable(format!("cannot connect to the database: {}", describe(&e)))
        })
    }

    /// Closes idle connections and refuses new checkouts; used at shutdown.
    pub fn close(&self) {
        self.pool.close();
    }
}

fn from_pool_error(err: PoolError) -> DbError {
    DbError::Unavailable(match err {
        PoolError::Backend(e) => format!("cannot connect to the database: {}", describe(&e)),
        PoolError::Timeout(TimeoutType::Wait) => {
            "every pooled database connection stayed busy".to_owned()
        }
        PoolError::Timeout(TimeoutType::Create) => {
            "connecting to the database timed out".to_owned()
        }
        other => format!("database pool: {other}"),
    })
}

/// An error and its causes on one line: tokio-postgres keeps the interesting
/// part ("Connection refused", the server's FATAL message) in the source.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> DatabaseUrl {
        s.parse().expect("infallible")
    }

    #[test]
    fn an_invalid_url_is_reported_without_its_password() {
        let err = Database::new(&url("postgresql://u:hunter2@db:notaport/app"), 1)
            .err()
            .expect("port is not a number");
        let message = err.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(
            message.contains("postgresql://u:***@db:notaport/app"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn ping_reports_a_refused_connection_quickly() {
        // Bind then drop: nothing listens on this port any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        let db = Database::new(
            &url(&format!("postgresql://u:hunter2@127.0.0.1:{port}/app")),
            1,
        )
        .expect("pool");
        let started = std::time::Instant::now();
        let err = db.ping().await.expect_err("nothing listens");
        assert!(started.elapsed() <= PING_TIMEOUT + Duration::from_millis(500));
        let message = err.to_string();
        assert!(
            message.starts_with("cannot connect to the database: error connecting to server"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
}
