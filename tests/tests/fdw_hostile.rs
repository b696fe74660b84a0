//! End-to-end: a remote database is not trusted (issue 24). Hostile
//! catalogs, session changes through the pass-through and misbehaving
//! servers must not inject SQL into, crash, hang or read the memory of the
//! local backend.

use integration_tests::{MariaDb, PgCluster};
use postgres::error::SqlState;
use postgres::Client;
use serde_json::Value;

/// The server survived: no backend was killed by a signal.
fn assert_no_crash(cluster: &PgCluster) {
    let log = cluster.log();
    assert!(!log.contains("terminated by signal"), "{log}");
}

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

/// Columns declared with local types the remote values do not have: each
/// value goes through the local type's input function, so it is either a
/// valid value of that type or an error, never bytes read as another type
/// (item 4: a blob declared `int8[]` gave an array of heap pointers).
#[test]
fn declared_local_types_get_checked_conversions_not_raw_bytes() {
    let (maria, local, mut db) = maria_source();
    maria.sql(
        "CREATE TABLE shop.odd (id INT PRIMARY KEY, bl BLOB, price DECIMAL(10,2), t TIME, t2 TIME,
                                short VARCHAR(10));
         INSERT INTO shop.odd VALUES (1, X'00FF0102', 12.50, '10:30:00', '-838:59:59', 'toolong');",
    );
    db.batch_execute(
        "CREATE FOREIGN TABLE public.odd (id int, bl int8[], price money, t time, t2 time,
                                          short varchar(3))
             SERVER my OPTIONS (table_name 'odd');",
    )
    .unwrap();
    let row = db
        .query_one("SELECT price::text, t::text FROM public.odd", &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "$12.50");
    assert_eq!(row.get::<_, String>(1), "10:30:00");
    for (column, codes) in [
        (
            "bl",
            &[
                SqlState::FDW_INVALID_DATA_TYPE,
                SqlState::INVALID_TEXT_REPRESENTATION,
            ][..],
        ),
        (
            "t2",
            &[
                SqlState::DATETIME_FIELD_OVERFLOW,
                SqlState::INVALID_TIME_ZONE_DISPLACEMENT_VALUE,
            ][..],
        ),
        ("short", &[SqlState::STRING_DATA_RIGHT_TRUNCATION][..]),
    ] {
        let error = db
            .query_one(&format!("SELECT {column} FROM public.odd"), &[])
            .unwrap_err();
        let code = error.code().cloned();
        assert!(
            code.as_ref().is_some_and(|c| codes.contains(c)),
            "{column}: {error:?}"
        );
    }
    assert_no_crash(&local);
}

/// Runs `setup` (several statements) then `sql` in a session of its own
/// and returns the outcome, failing the test if it has not returned after
/// a minute (the backend hung).
fn within_a_minute(
    cluster: &PgCluster,
    setup: &str,
    sql: &str,
) -> Result<Vec<postgres::Row>, postgres::Error> {
    let mut client = cluster.connect("app");
    let (setup, sql) = (setup.to_string(), sql.to_string());
    let (tx, rx) = std::sync::mpsc::channel();
    let shown = sql.clone();
    std::thread::spawn(move || {
        let _ = tx.send(
            client
                .batch_execute(&setup)
                .and_then(|()| client.query(&sql, &[])),
        );
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the backend hung on: {shown}\n{}", cluster.log_tail()))
}

/// A scan stopped early (LIMIT over a local filter) of a remote result
/// that never ends: the rest is not read (it would never be), the remote
/// statement is stopped, and the connection serves the next statement
/// (item 3).
#[test]
fn a_limit_over_an_endless_remote_result_returns() {
    let (maria, local, _db) = maria_source();
    maria.sql("CREATE VIEW shop.endless AS SELECT seq AS a FROM shop.seq_1_to_1000000000000;");
    let mut db = local.connect("app");
    db.batch_execute(
        "CREATE FOREIGN TABLE public.endless (a bigint) SERVER my OPTIONS (table_name 'endless');
         ALTER DATABASE app SET statement_timeout = '30s';",
    )
    .unwrap();
    let rows = within_a_minute(
        &local,
        "",
        "SELECT a FROM public.endless WHERE md5(a::text) <> '' LIMIT 1",
    )
    .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
    let rows = within_a_minute(
        &local,
        "BEGIN; SELECT a FROM public.endless WHERE md5(a::text) <> '' LIMIT 2;
         SELECT count(*) FROM my.notes; COMMIT;",
        "SELECT 1",
    );
    assert!(rows.is_ok(), "{rows:?}");
    assert_no_crash(&local);
}

/// A PostgreSQL "server" that accepts connections and never answers: the
/// handshake is bounded by connect_timeout, and a statement_timeout or a
/// cancel ends the wait sooner (item 3).
#[test]
fn a_silent_server_cannot_hold_the_backend() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&held);
    std::thread::spawn(move || {
        for stream in silent.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    db.batch_execute(&format!(
        "CREATE SERVER silent FOREIGN DATA WRAPPER postgres_wrapper
             OPTIONS (host '127.0.0.1', port '{port}', dbname 'x', connect_timeout '2');
         CREATE SERVER patient FOREIGN DATA WRAPPER postgres_wrapper
             OPTIONS (host '127.0.0.1', port '{port}', dbname 'x', connect_timeout '600');
         CREATE USER MAPPING FOR PUBLIC SERVER silent OPTIONS (user 'u', password 'p');
         CREATE USER MAPPING FOR PUBLIC SERVER patient OPTIONS (user 'u', password 'p');
         CREATE FOREIGN TABLE public.quiet (a int) SERVER silent OPTIONS (table_name 't');
         CREATE FOREIGN TABLE public.quieter (a int) SERVER patient OPTIONS (table_name 't');"
    ))
    .unwrap();
    let error = within_a_minute(&local, "", "SELECT * FROM public.quiet").unwrap_err();
    let message = error.as_db_error().map(|e| e.message().to_string());
    assert!(
        message.as_deref().is_some_and(|m| m.contains("handshake")),
        "{error:?}"
    );
    let error = within_a_minute(
        &local,
        "SET statement_timeout = '1s'",
        "SELECT * FROM public.quieter",
    )
    .unwrap_err();
    assert_eq!(error.code(), Some(&SqlState::QUERY_CANCELED), "{error:?}");
    assert!(!held.lock().unwrap().is_empty(), "the server was reached");
    assert_no_crash(&local);
}

/// A PostgreSQL "server" that asks for the password in clear text
/// (AuthenticationCleartextPassword) and records what comes back.
fn cleartext_asker() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = std::sync::Arc::clone(&received);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut length = [0u8; 4];
            if stream.read_exact(&mut length).is_err() {
                continue;
            }
            let mut startup = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
            if stream.read_exact(&mut startup).is_err() {
                continue;
            }
            let _ = stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]);
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            keep.lock().unwrap().extend_from_slice(&answer);
        }
    });
    (port, received)
}

/// A password never crosses the network in plain text unless the server
/// allows it (issue 28): a server that asks for it in clear text on a
/// connection without TLS is refused before it is sent, and a host off
/// this machine without TLS is refused before connecting, for both wrappers.
#[test]
fn a_password_is_never_sent_in_plain_text_unless_allowed() {
    let (port, received) = cleartext_asker();
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    let error = db
        .execute(
            "SELECT integration.add_data_source('asker', $1)",
            &[&format!(
                "postgresql://u:secret-pw@127.0.0.1:{port}/x?sslmode=disable"
            )],
        )
        .unwrap_err();
    let message = error.as_db_error().map(|e| e.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("password in clear text")),
        "{error:?}"
    );
    let seen = String::from_utf8_lossy(&received.lock().unwrap()).to_string();
    assert!(
        !seen.contains("secret-pw"),
        "the password was sent: {seen:?}"
    );
    // Allowed by the server option: the same server then gets it.
    let _ = db.execute(
        "SELECT integration.add_data_source('asker', $1)",
        &[&format!(
            "postgresql://u:secret-pw@127.0.0.1:{port}/x?sslmode=disable&allow_password_without_tls=true"
        )],
    );
    let start = std::time::Instant::now();
    while !String::from_utf8_lossy(&received.lock().unwrap()).contains("secret-pw") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the allowed password never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Off this machine without TLS: refused before any connection (the
    // address is TEST-NET-1, never routed).
    for url in [
        "postgresql://u:pw@192.0.2.1/x?sslmode=disable",
        "mysql://u:pw@192.0.2.1/x?ssl-mode=disabled",
    ] {
        let error = db
            .execute("SELECT integration.add_data_source('far', $1)", &[&url])
            .unwrap_err();
        let message = error.as_db_error().map(|e| e.message().to_string());
        assert!(
            message.as_deref().is_some_and(
                |m| m.contains("password would cross the network to 192.0.2.1 without TLS")
            ),
            "{url}: {error:?}"
        );
    }
    assert_no_crash(&local);
}

/// The pass-through streams (issue 28): a caller that takes three rows of
/// a result that never ends gets them, for both wrappers, where a
/// pass-through that read its whole result first would never return; the
/// connection serves the next statement, and a data-modifying statement
/// (which a cursor refuses) still runs.
#[test]
fn the_pass_through_streams_its_result() {
    let (maria, local, _db) = maria_source();
    let remote = PgCluster::start();
    remote
        .connect("postgres")
        .batch_execute(
            "CREATE ROLE remote_user LOGIN PASSWORD 'pw';
             CREATE TABLE public.log (id int);
             GRANT ALL ON public.log TO remote_user;",
        )
        .unwrap();
    let mut db = local.connect("app");
    db.execute(
        "SELECT integration.add_data_source('pg', $1)",
        &[&format!(
            "postgresql://remote_user:pw@127.0.0.1:{}/postgres",
            remote.port()
        )],
    )
    .unwrap();
    db.batch_execute("ALTER DATABASE app SET statement_timeout = '30s'")
        .unwrap();
    let _ = &maria;
    for (source, endless) in [
        ("pg", "SELECT generate_series(1, 1000000000000) AS g"),
        ("my", "SELECT seq AS g FROM seq_1_to_1000000000000"),
    ] {
        let rows = within_a_minute(
            &local,
            "",
            &format!("SELECT integration.query('{source}', '{endless}')->>'g' AS g LIMIT 3"),
        )
        .unwrap_or_else(|e| panic!("{source}: {e}"));
        let got: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(got, ["1", "2", "3"], "{source}");
        // Stopped early inside a transaction, the connection goes on.
        let rows = within_a_minute(
            &local,
            &format!(
                "BEGIN; SELECT integration.query('{source}', '{endless}') LIMIT 2;
                 SELECT integration.query('{source}', 'SELECT 7 AS n'); COMMIT;"
            ),
            "SELECT 1",
        );
        assert!(rows.is_ok(), "{source}: {rows:?}");
    }
    // A result read to its end closes its cursor at once: in one remote
    // transaction, the next call sees only its own.
    let mut tx = db.transaction().unwrap();
    tx.query("SELECT integration.query('pg', 'SELECT 1 AS a')", &[])
        .unwrap();
    let open: Value = tx
        .query_one(
            "SELECT * FROM integration.query('pg', 'SELECT count(*) AS n FROM pg_catalog.pg_cursors WHERE pg_catalog.length(name) > 0')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(open["n"], 1, "{open}");
    tx.commit().unwrap();
    let id: Value = db
        .query_one(
            "SELECT * FROM integration.query('pg', 'INSERT INTO public.log VALUES (5) RETURNING id')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(id["id"], 5);
    assert_no_crash(&local);
}
