//! A remote PostgreSQL and a remote MariaDB behind one local database, as
//! the data sources `pgsrc` and `mysrc`: where tests that run the same
//! checks through both wrappers start from.

use crate::{MariaDb, PgCluster};
use postgres::Client;

/// The password of both remote users.
pub const REMOTE_PASSWORD: &str = "S3cret-pw!";

/// The servers; they stop when this is dropped.
pub struct Remotes {
    pub postgres: PgCluster,
    pub maria: MariaDb,
    pub local: PgCluster,
}

impl Remotes {
    /// Starts both remotes and runs `pg_setup` on the PostgreSQL one (as
    /// `postgres`, once the login role `remote_user` exists) and
    /// `maria_setup` on MariaDB (as root, once the database `shop` and the
    /// user `app` with every right on it exist); then a local database
    /// `app` with data sources `pgsrc` (schema `public`) and `mysrc`
    /// (database `shop`), whose tables are imported. Returns a client of
    /// `app` too.
    pub fn start(pg_setup: &str, maria_setup: &str) -> (Remotes, Client) {
        let postgres = PgCluster::start();
        postgres
            .connect("postgres")
            .batch_execute(&format!(
                "CREATE ROLE remote_user LOGIN PASSWORD '{REMOTE_PASSWORD}'; {pg_setup}"
            ))
            .expect("remote PostgreSQL set-up");
        let maria = MariaDb::start();
        maria.sql(&format!(
            "CREATE DATABASE shop; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{REMOTE_PASSWORD}';
             GRANT ALL ON shop.* TO 'app'@'127.0.0.1'; {maria_setup}"
        ));
        let local = PgCluster::start();
        let mut db = local.create_database("app");
        let password = REMOTE_PASSWORD.replace('!', "%21");
        let sources = [
            (
                "pgsrc",
                format!(
                    "postgresql://remote_user:{password}@127.0.0.1:{}/postgres",
                    postgres.port()
                ),
                "public",
            ),
            (
                "mysrc",
                format!("mysql://app:{password}@127.0.0.1:{}/shop", maria.port()),
                "shop",
            ),
        ];
        for (name, url, schema) in &sources {
            db.execute(
                "SELECT integration.add_data_source($1, $2, jsonb_build_object('remote_schema', $3::text))",
                &[name, url, schema],
            )
            .unwrap_or_else(|e| panic!("add_data_source {name}: {e:?}"));
        }
        (
            Remotes {
                postgres,
                maria,
                local,
            },
            db,
        )
    }
}
