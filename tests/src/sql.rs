//! Small helpers for tests that read query results as text and look at
//! what EXPLAIN and errors say.

use crate::PgCluster;
use postgres::Client;
use std::sync::{Arc, Mutex};

/// The first column of every row as text (`NULL` for NULL).
pub fn texts(client: &mut Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| {
            r.get::<_, Option<String>>(0)
                .unwrap_or_else(|| "NULL".into())
        })
        .collect()
}

/// The server's message of an error (not the client's "db error").
pub fn db_message(err: &postgres::Error) -> String {
    err.as_db_error()
        .map(|db| db.message().to_string())
        .unwrap_or_else(|| err.to_string())
}

/// The `Remote SQL` line of `EXPLAIN (VERBOSE)` for a foreign scan.
pub fn remote_sql(client: &mut Client, query: &str) -> String {
    texts(client, &format!("EXPLAIN (VERBOSE, COSTS OFF) {query}"))
        .into_iter()
        .find_map(|l| l.trim().strip_prefix("Remote SQL: ").map(str::to_string))
        .unwrap_or_else(|| panic!("no Remote SQL line for {query}"))
}

/// A client as `postgres` on `db` that records the NOTICEs it receives.
pub fn connect_recording_notices(
    cluster: &PgCluster,
    db: &str,
    notices: &Arc<Mutex<Vec<String>>>,
) -> Client {
    let notices = notices.clone();
    let mut config: postgres::Config = cluster.url(db, "postgres").parse().expect("URL");
    config.notice_callback(move |n| notices.lock().unwrap().push(n.message().to_string()));
    config.connect(postgres::NoTls).expect("connect")
}
