//! End-to-end: a remote database is not trusted (issue 24). Hostile
//! catalogs, session changes through the pass-through and misbehaving
//! servers must not inject SQL into, crash, hang or read the memory of the
//! local backend.

use integration_tests::{MariaDb, PgCluster};
use postgres::Client;
use serde_json::Value;

/// MariaDB with database `shop` (tables `notes` and `canary`) and a local
/// database with it as data source `my`.
fn maria_source() -> (MariaDb, PgCluster, Client) {
    let maria = MariaDb::start();
    maria.sql(
        "CREATE DATABASE shop; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'pw';
         GRANT ALL ON shop.* TO 'app'@'127.0.0.1';
         CREATE TABLE shop.notes (id INT PRIMARY KEY, body TEXT);
         CREATE TABLE shop.canary (id INT PRIMARY KEY);",
    );
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    db.execute(
        "SELECT integration.add_data_source('my', $1)",
        &[&format!("mysql://app:pw@127.0.0.1:{}/shop", maria.port())],
    )
    .unwrap();
    (maria, local, db)
}

/// A pass-through `SET sql_mode` turns NO_BACKSLASH_ESCAPES off for the
/// pooled connection; the wrapper's next INSERT must still store the value
/// as text, not run the statement hidden in it (item 5).
#[test]
fn a_pass_through_set_cannot_turn_a_value_into_sql() {
    let (_maria, _local, mut db) = maria_source();
    db.query(
        "SELECT * FROM integration.query('my', 'SET sql_mode = ''STRICT_ALL_TABLES''')",
        &[],
    )
    .unwrap();
    let hostile = "a\\'); DROP TABLE canary; -- ";
    db.execute(
        "INSERT INTO my.notes VALUES (1, $1), (2, 'plain')",
        &[&hostile],
    )
    .unwrap();
    let stored: String = db
        .query_one("SELECT body FROM my.notes WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, hostile);
    let canary: Value = db
        .query_one(
            "SELECT * FROM integration.query('my', 'SELECT COUNT(*) AS n FROM canary')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(canary["n"], 0, "the canary table is still there");
    // The wrapper's own session settings are back after the pass-through.
    let mode: Value = db
        .query_one(
            "SELECT * FROM integration.query('my', 'SELECT @@SESSION.sql_mode AS m')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        mode["m"].as_str().unwrap().contains("NO_BACKSLASH_ESCAPES"),
        "{mode}"
    );
}
