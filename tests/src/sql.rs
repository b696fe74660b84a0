//! Small helpers for tests that read query results as text and look at
//! what EXPLAIN and errors say, and how much memory a backend used.

use crate::PgCluster;
use postgres::error::SqlState;
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

/// The peak resident memory of the client's backend so far, in kB (VmHWM
/// of `/proc/<pid>/status`: the tests run on the server's machine).
pub fn backend_peak_rss_kb(client: &mut Client) -> u64 {
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pg_backend_pid")
        .get(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// By how many MB running `sql` grows the backend's peak memory, with its
/// rows as [`texts`]. `warm_up` runs first (connections, caches), and JIT
/// is off: a big estimate would turn it on and add ~55 MB once.
pub fn peak_growth_mb(client: &mut Client, warm_up: &str, sql: &str) -> (Vec<String>, u64) {
    client.batch_execute("SET jit = off").expect("SET jit");
    texts(client, warm_up);
    let before = backend_peak_rss_kb(client);
    let rows = texts(client, sql);
    (rows, (backend_peak_rss_kb(client) - before) / 1024)
}

/// Asserts that `sql` fails because a wrapper could not connect (HV00N),
/// with a message naming `host` (as `at host:`) and `cause`, never `secret`.
pub fn assert_refused(client: &mut Client, sql: &str, host: &str, cause: &str, secret: &str) {
    let err = client
        .query(sql, &[])
        .expect_err("the connection should be refused");
    let db = err.as_db_error().expect("a server error");
    assert_eq!(
        db.code(),
        &SqlState::FDW_UNABLE_TO_ESTABLISH_CONNECTION,
        "{db}"
    );
    let message = db.message();
    assert!(message.contains(&format!("at {host}:")), "{message}");
    assert!(message.contains(cause), "{message}");
    assert!(!message.contains(secret), "{message}");
}

/// What two queries must share to give the same result: the type of each
/// column, and every row as text (sorted, the order being unspecified).
pub fn result_of(client: &mut Client, sql: &str) -> (Vec<String>, Vec<String>) {
    let types = client
        .prepare(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .columns()
        .iter()
        .map(|c| c.type_().name().to_string())
        .collect();
    let mut rows = texts(client, &format!("SELECT q::text FROM ({sql}) q"));
    rows.sort();
    (types, rows)
}

/// Asserts that `q`, which reads the foreign table `table`, gives the same
/// column types and rows (at least one) as over the table's local `copy`.
pub fn assert_same_as_copy(client: &mut Client, table: &str, q: &str) {
    let foreign = result_of(client, q);
    assert_eq!(foreign, result_of(client, &q.replace(table, "copy")), "{q}");
    assert!(!foreign.1.is_empty(), "{q}");
}

/// Asserts what aggregate pushdown over the foreign `table` (columns `k`
/// and `x` int, copied locally as `copy`) must get right besides the plain
/// query: a pushed aggregate rescanned under a nested loop returns its
/// groups again, and one over a parameter stays local and correct.
pub fn assert_aggregates_survive_rescans_and_parameters(client: &mut Client, table: &str) {
    client
        .batch_execute(
            "SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_material = off",
        )
        .unwrap();
    // (The nullable side of a LEFT JOIN is the inner side of a nested loop.)
    let q = format!(
        "SELECT g.i, s.c FROM generate_series(3, 0, -1) g(i)
         LEFT JOIN (SELECT k, count(*) AS c FROM {table} GROUP BY k) s ON s.k = g.i"
    );
    assert!(remote_sql(client, &q).contains("GROUP BY"));
    assert_same_as_copy(client, table, &q);
    client.batch_execute("RESET ALL").unwrap();

    // A parameter is known only when the scan starts: not pushed.
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE by_x(int) AS SELECT k, count(*) FROM {table} WHERE x > $1 GROUP BY k;
             PREPARE by_x_again(int) AS SELECT k, count(*) FROM {table} WHERE x > $1 GROUP BY k"
        ))
        .unwrap();
    let sql = remote_sql(client, "EXECUTE by_x(3)");
    assert!(!sql.contains("GROUP BY"), "{sql}");
    let groups = |client: &mut Client, sql: &str| {
        let mut rows: Vec<(Option<i32>, i64)> = client
            .query(sql, &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(
        // (Another statement: supabase-wrappers 0.1.28 frees its scan state
        // with the first run of a plan, so a plan cannot run twice.)
        groups(client, "EXECUTE by_x_again(3)"),
        groups(
            client,
            "SELECT k, count(*) FROM copy WHERE x > 3 GROUP BY k"
        )
    );
    client.batch_execute("RESET ALL").unwrap();
}
