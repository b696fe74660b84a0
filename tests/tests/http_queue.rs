//! End-to-end: the durable outbound HTTP queue against real servers on
//! loopback (httpbin and our own test server): delivery, callbacks,
//! retries, the concurrency caps under 2 000 queued requests, a crash with
//! requests queued, two databases at once, and who may see what.

use integration_tests::{HttpBin, PgCluster, TestServer};
use postgres::error::SqlState;
use postgres::Client;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Database `db` with the extension, allowed to reach loopback.
fn database(cluster: &PgCluster, db: &str) -> Client {
    let mut client = cluster.create_database(db);
    client
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" SET integration.http_allowed_networks = '127.0.0.1/32'"
        ))
        .unwrap();
    cluster.connect(db)
}

/// Waits until `sql` (a count) reaches `want`; panics with the log after `limit`.
fn wait_for_count(cluster: &PgCluster, db: &mut Client, sql: &str, want: i64, limit: Duration) {
    let start = Instant::now();
    loop {
        let n: i64 = db.query_one(sql, &[]).unwrap().get(0);
        if n >= want {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{sql}: {n} of {want} after {limit:?}\n{}",
            cluster.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn body_json(db: &mut Client, id: i64) -> Value {
    let text: String = db
        .query_one(
            "SELECT convert_from(body, 'UTF8') FROM integration.http_responses WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    serde_json::from_str(&text).unwrap()
}

fn db_error(result: Result<impl Sized, postgres::Error>) -> (SqlState, String) {
    let error = result.err().expect("expected an error");
    let db = error.as_db_error().expect("a database error");
    (db.code().clone(), db.message().to_string())
}

#[test]
fn queued_requests_are_delivered_and_call_back_as_their_role() {
    let cluster = PgCluster::start();
    let bin = HttpBin::start();
    let mut db = database(&cluster, "app");
    db.batch_execute(
        "CREATE ROLE worker_app LOGIN IN ROLE integration_user;
         CREATE TABLE done (id bigint, status int, by_role name, at_role name);
         GRANT INSERT ON done TO worker_app;
         CREATE FUNCTION on_done(r integration.http_responses) RETURNS void
             LANGUAGE sql AS $$ INSERT INTO public.done VALUES (r.id, r.status, r.created_by, current_user) $$;
         GRANT EXECUTE ON FUNCTION on_done(integration.http_responses) TO worker_app;",
    )
    .unwrap();
    let mut app = cluster.connect_as("app", "worker_app");
    let id: i64 = app
        .query_one(
            "SELECT integration.http_enqueue('POST', $1, headers => '{\"X-Test\": \"q\"}',
                 body => convert_to('{\"n\": 1}', 'UTF8'), params => '{\"a\": \"b c\"}',
                 callback => 'on_done(integration.http_responses)')",
            &[&bin.url("/post")],
        )
        .unwrap()
        .get(0);
    let row = app
        .query_one(
            "SELECT status, attempts, error, content_type, method, url
             FROM integration.http_result($1, '20 seconds')",
            &[&id],
        )
        .unwrap();
    assert_eq!(
        row.get::<_, Option<i32>>(0),
        Some(200),
        "{}",
        cluster.log_tail()
    );
    assert_eq!(row.get::<_, i32>(1), 1);
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("application/json")
    );
    assert_eq!(row.get::<_, String>(4), "POST");
    assert!(row.get::<_, String>(5).ends_with("/post?a=b+c"));
    let echoed = body_json(&mut app, id);
    assert_eq!(echoed["data"], "{\"n\": 1}");
    assert_eq!(echoed["headers"]["X-Test"], "q");
    assert_eq!(
        echoed["headers"]["Content-Type"],
        "application/octet-stream"
    );
    assert_eq!(echoed["args"]["a"], "b c");
    // The request left the queue; the callback ran as the caller.
    let left: i64 = app
        .query_one("SELECT count(*) FROM integration.http_requests", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    wait_for_count(
        &cluster,
        &mut db,
        "SELECT count(*) FROM done",
        1,
        Duration::from_secs(10),
    );
    let done = db
        .query_one(
            "SELECT id, status, by_role::text, at_role::text FROM done",
            &[],
        )
        .unwrap();
    assert_eq!(done.get::<_, i64>(0), id);
    assert_eq!(done.get::<_, i32>(1), 200);
    assert_eq!(done.get::<_, String>(2), "worker_app");
    assert_eq!(done.get::<_, String>(3), "worker_app");
    // The attempt is audited under the caller's name, without headers or body.
    wait_for_count(
        &cluster,
        &mut db,
        "SELECT count(*) FROM integration.audit_log
         WHERE action = 'http.request' AND actor = 'worker_app' AND ok
           AND detail->>'status' = '200' AND detail->>'method' = 'POST'
           AND NOT detail::text LIKE '%X-Test%'",
        1,
        Duration::from_secs(10),
    );
}

#[test]
fn failing_callbacks_and_wrong_callbacks() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = database(&cluster, "app");
    db.batch_execute(
        "CREATE FUNCTION boom(r integration.http_responses) RETURNS void
             LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'callback says no'; END $$;
         CREATE FUNCTION wrong(n int) RETURNS void LANGUAGE sql AS 'SELECT 1';
         CREATE TABLE only_superusers (who name);
         CREATE ROLE mallory LOGIN IN ROLE integration_user;
         CREATE FUNCTION escalate(r integration.http_responses) RETURNS void
             LANGUAGE plpgsql AS $$ BEGIN
                 RESET ROLE;
                 INSERT INTO public.only_superusers VALUES (current_user);
             END $$;
         GRANT EXECUTE ON FUNCTION escalate(integration.http_responses) TO mallory;",
    )
    .unwrap();
    // The worker's session is a superuser's: a callback must not get back to it.
    let mut mallory = cluster.connect_as("app", "mallory");
    let sneaky: i64 = mallory
        .query_one(
            "SELECT integration.http_enqueue('GET', $1, callback => 'escalate(integration.http_responses)')",
            &[&server.url("/y")],
        )
        .unwrap()
        .get(0);
    wait_for_count(
        &cluster,
        &mut db,
        &format!("SELECT count(*) FROM integration.http_responses WHERE id = {sneaky} AND callback_error IS NOT NULL"),
        1,
        Duration::from_secs(20),
    );
    let error: String = db
        .query_one(
            "SELECT callback_error FROM integration.http_responses WHERE id = $1",
            &[&sneaky],
        )
        .unwrap()
        .get(0);
    assert!(error.contains("cannot set parameter \"role\""), "{error}");
    let escalated: i64 = db
        .query_one("SELECT count(*) FROM only_superusers", &[])
        .unwrap()
        .get(0);
    assert_eq!(escalated, 0);
    let (code, message) = db_error(db.query_one(
        "SELECT integration.http_enqueue('GET', $1, callback => 'wrong(int)')",
        &[&server.url("/x")],
    ));
    assert_eq!(code, SqlState::INVALID_PARAMETER_VALUE);
    assert!(message.contains("integration.http_responses"), "{message}");
    let id: i64 = db
        .query_one(
            "SELECT integration.http_enqueue('GET', $1, callback => 'boom(integration.http_responses)')",
            &[&server.url("/x")],
        )
        .unwrap()
        .get(0);
    wait_for_count(
        &cluster,
        &mut db,
        &format!("SELECT count(*) FROM integration.http_responses WHERE id = {id} AND callback_error IS NOT NULL"),
        1,
        Duration::from_secs(20),
    );
    let row = db
        .query_one(
            "SELECT status, callback_error FROM integration.http_responses WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), Some(200));
    assert!(row.get::<_, String>(1).contains("callback says no"));
}

#[test]
fn retries_back_off_and_honour_retry_after() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = database(&cluster, "app");
    let enqueue = |db: &mut Client, path: &str, retries: i32| -> i64 {
        db.query_one(
            "SELECT integration.http_enqueue('GET', $1, retries => $2, backoff => '50 ms',
                                             timeout => '2 seconds')",
            &[&server.url(path), &retries],
        )
        .unwrap()
        .get(0)
    };
    // Two 503s asking for one second each, then a 200.
    let recovers = enqueue(&mut db, "/seq/a/503,503,200?retry_after=1", 5);
    // 500 for ever: the last answer is the result once retries run out.
    let gives_up = enqueue(&mut db, "/seq/b/500", 2);
    // 404 is not retried.
    let not_found = enqueue(&mut db, "/seq/c/404,200", 5);
    // A 429 without Retry-After, then success.
    let throttled = enqueue(&mut db, "/seq/d/429,200", 1);
    // The connection is closed without an answer: retried, then an error.
    let closes = enqueue(&mut db, "/close", 1);
    let result = |db: &mut Client, id: i64| {
        db.query_one(
            "SELECT status, attempts, error, completed_at - created_at
             FROM integration.http_result($1, '30 seconds')",
            &[&id],
        )
        .unwrap()
    };
    let row = result(&mut db, recovers);
    assert_eq!(
        row.get::<_, Option<i32>>(0),
        Some(200),
        "{}",
        cluster.log_tail()
    );
    assert_eq!(row.get::<_, i32>(1), 3);
    assert_eq!(server.hits("/seq/a/503,503,200"), 3);
    // Both waits were at least the second the server asked for.
    let waited: i64 = db
        .query_one(
            "SELECT extract(epoch FROM completed_at - created_at)::bigint * 1000
             FROM integration.http_responses WHERE id = $1",
            &[&recovers],
        )
        .unwrap()
        .get(0);
    assert!(
        waited >= 2000,
        "Retry-After ignored: done after {waited} ms"
    );

    let row = result(&mut db, gives_up);
    assert_eq!(row.get::<_, Option<i32>>(0), Some(500));
    assert_eq!(row.get::<_, i32>(1), 3);
    assert_eq!(server.hits("/seq/b/500"), 3);

    let row = result(&mut db, not_found);
    assert_eq!(row.get::<_, Option<i32>>(0), Some(404));
    assert_eq!(row.get::<_, i32>(1), 1);

    let row = result(&mut db, throttled);
    assert_eq!(row.get::<_, Option<i32>>(0), Some(200));
    assert_eq!(row.get::<_, i32>(1), 2);

    let row = result(&mut db, closes);
    assert_eq!(row.get::<_, Option<i32>>(0), None);
    assert_eq!(row.get::<_, i32>(1), 2);
    let error: String = row.get(2);
    assert!(error.contains("127.0.0.1"), "{error}");
    assert_eq!(server.hits("/close"), 2);
}

#[test]
fn policy_is_checked_when_queued_and_when_delivered() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = cluster.create_database("app");
    // Loopback is refused by default: at once, with the reason.
    let (code, message) = db_error(db.query_one(
        "SELECT integration.http_enqueue('GET', $1)",
        &[&server.url("/x")],
    ));
    assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE);
    assert!(message.contains("127.0.0.1"), "{message}");
    // A host name that resolves to loopback passes the URL check but not
    // the address check at delivery; that is final, not retried.
    let id: i64 = db
        .query_one(
            "SELECT integration.http_enqueue('GET', $1, retries => 3)",
            &[&format!("http://localhost:{}/x", server.port())],
        )
        .unwrap()
        .get(0);
    let row = db
        .query_one(
            "SELECT status, attempts, error FROM integration.http_result($1, '20 seconds')",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), None);
    assert_eq!(row.get::<_, i32>(1), 1);
    let error: String = row.get(2);
    assert!(error.contains("localhost"), "{error}");
    assert_eq!(server.hits("/x"), 0);
    for (args, fragment) in [
        ("'GET', 'ftp://example.com/'", "http"),
        ("'G T', 'https://example.com/'", "method"),
        ("'GET', 'https://example.com/', retries => 101", "retries"),
        ("'GET', 'https://example.com/', headers => '[1]'", "headers"),
    ] {
        let (_, message) =
            db_error(db.query_one(&format!("SELECT integration.http_enqueue({args})"), &[]));
        assert!(message.contains(fragment), "{args}: {message}");
    }
}

#[test]
fn two_thousand_queued_requests_respect_the_caps() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = database(&cluster, "app");
    db.batch_execute(
        "ALTER DATABASE app SET integration.http_queue_host_concurrency = 6;
         ALTER DATABASE app SET integration.http_queue_concurrency = 40;",
    )
    .unwrap();
    let mut db = cluster.connect("app");
    db.execute(
        "SELECT integration.http_enqueue('GET', $1 || '/slow/5?n=' || n) FROM generate_series(1, 2000) n",
        &[&server.url("")],
    )
    .unwrap();
    wait_for_count(
        &cluster,
        &mut db,
        "SELECT count(*) FROM integration.http_responses WHERE status = 200",
        2000,
        Duration::from_secs(120),
    );
    let max = server.max_in_flight();
    assert!(max <= 6, "{max} requests to one host at once, the cap is 6");
    assert!(max >= 2, "requests were never in flight together ({max})");
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT id), max(attempts) FROM integration.http_responses",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2000);
    assert_eq!(row.get::<_, i64>(1), 2000);
    assert_eq!(row.get::<_, Option<i32>>(2), Some(1));
    assert_eq!(server.hits("/slow/5"), 2000);
    let left: i64 = db
        .query_one("SELECT count(*) FROM integration.http_requests", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[test]
fn helpers_share_a_backlog_and_leave_when_it_is_drained() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = database(&cluster, "app");
    db.batch_execute(
        "ALTER DATABASE app SET integration.http_queue_workers = 2;
         ALTER DATABASE app SET integration.http_queue_host_concurrency = 3;",
    )
    .unwrap();
    let mut db = cluster.connect("app");
    db.execute(
        "SELECT integration.http_enqueue('GET', $1 || '/slow/20?n=' || n) FROM generate_series(1, 600) n",
        &[&server.url("")],
    )
    .unwrap();
    let workers = "SELECT count(*) FROM pg_stat_activity
                   WHERE backend_type = 'pg_integration worker' AND datname = 'app'";
    let start = Instant::now();
    let mut most_workers = 0;
    loop {
        let n: i64 = db.query_one(workers, &[]).unwrap().get(0);
        most_workers = most_workers.max(n);
        let done: i64 = db
            .query_one("SELECT count(*) FROM integration.http_responses", &[])
            .unwrap()
            .get(0);
        if done == 600 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{done} of 600 delivered\n{}",
            cluster.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(most_workers, 2, "the worker never got a helper");
    // Each worker keeps its own cap of 3 per host.
    let max = server.max_in_flight();
    assert!(
        max > 3,
        "never more in flight than one worker allows ({max})"
    );
    assert!(
        max <= 6,
        "{max} requests to one host at once, two workers allow 6"
    );
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT id), max(attempts), count(*) FILTER (WHERE status = 200)
             FROM integration.http_responses",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 600);
    assert_eq!(row.get::<_, i64>(1), 600);
    assert_eq!(row.get::<_, Option<i32>>(2), Some(1));
    assert_eq!(row.get::<_, i64>(3), 600);
    assert_eq!(
        server.hits("/slow/20"),
        600,
        "a request was delivered twice"
    );
    // The helper leaves once nothing is due, the worker a few seconds later
    // (it waits for more work in between, without spinning).
    let start = Instant::now();
    let mut alone = false;
    loop {
        let left: i64 = db.query_one(workers, &[]).unwrap().get(0);
        alone |= left == 1;
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{left} workers stayed after the queue drained"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alone, "the helper did not leave before the worker");
}

#[test]
fn queued_requests_survive_a_crash() {
    let cluster = PgCluster::start_with(&[("synchronous_commit", "on")]);
    let server = TestServer::start();
    let mut db = database(&cluster, "app");
    db.batch_execute("ALTER DATABASE app SET integration.http_queue_host_concurrency = 2")
        .unwrap();
    let mut db = cluster.connect("app");
    db.execute(
        "SELECT integration.http_enqueue('GET', $1 || '/slow/30?n=' || n) FROM generate_series(1, 300) n",
        &[&server.url("")],
    )
    .unwrap();
    wait_for_count(
        &cluster,
        &mut db,
        "SELECT count(*) FROM integration.http_responses",
        10,
        Duration::from_secs(30),
    );
    drop(db);
    cluster.crash();
    let delivered_before = server.hits("/slow/30");
    assert!(delivered_before < 300, "the queue drained before the crash");
    // Nobody calls in after the restart: the launcher must find the queue.
    cluster.restart();
    let mut db = cluster.connect("app");
    wait_for_count(
        &cluster,
        &mut db,
        "SELECT count(*) FROM integration.http_responses",
        300,
        Duration::from_secs(120),
    );
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE status = 200)
             FROM integration.http_responses",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 300);
    assert_eq!(row.get::<_, i64>(1), 300);
    assert_eq!(row.get::<_, i64>(2), 300);
    let left: i64 = db
        .query_one("SELECT count(*) FROM integration.http_requests", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // Requests the worker had claimed at the crash may have reached the
    // server twice: the two in flight, and those answered whose responses
    // were not committed yet. A worker claims at most twice its host
    // concurrency ahead (4 here), so never more than that.
    assert!(
        server.hits("/slow/30") <= 304,
        "{}",
        server.hits("/slow/30")
    );
}

#[test]
fn two_databases_use_the_queue_at_once() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut a = database(&cluster, "a");
    let mut b = database(&cluster, "b");
    for (db, name) in [(&mut a, "a"), (&mut b, "b")] {
        db.execute(
            "SELECT integration.http_enqueue('GET', $1 || '/from/' || $2 || '?n=' || n)
             FROM generate_series(1, 200) n",
            &[&server.url(""), &name],
        )
        .unwrap();
    }
    for (db, name) in [(&mut a, "a"), (&mut b, "b")] {
        wait_for_count(
            &cluster,
            db,
            "SELECT count(*) FROM integration.http_responses WHERE status = 200",
            200,
            Duration::from_secs(60),
        );
        let others: i64 = db
            .query_one(
                "SELECT count(*) FROM integration.http_responses WHERE url NOT LIKE '%/from/' || $1 || '?%'",
                &[&name],
            )
            .unwrap()
            .get(0);
        assert_eq!(others, 0);
    }
    assert_eq!(server.hits("/from/a"), 200);
    assert_eq!(server.hits("/from/b"), 200);
}

#[test]
fn callers_see_and_cancel_only_their_own_requests() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = database(&cluster, "app");
    db.batch_execute(
        "CREATE ROLE alice LOGIN IN ROLE integration_user;
         CREATE ROLE bob LOGIN IN ROLE integration_user;
         CREATE ROLE nobody LOGIN;",
    )
    .unwrap();
    let mut alice = cluster.connect_as("app", "alice");
    let mut bob = cluster.connect_as("app", "bob");
    // Far in the future: retried only after an hour.
    let id: i64 = alice
        .query_one(
            "SELECT integration.http_enqueue('GET', $1, retries => 1, backoff => '1 hour')",
            &[&server.url("/seq/slowpoke/503")],
        )
        .unwrap()
        .get(0);
    let (code, _) = db_error(bob.query_one("SELECT * FROM integration.http_result($1)", &[&id]));
    assert_eq!(code, SqlState::NO_DATA_FOUND);
    let seen: i64 = bob
        .query_one("SELECT count(*) FROM integration.http_requests", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 0);
    assert_eq!(
        bob.execute("DELETE FROM integration.http_requests", &[])
            .unwrap(),
        0
    );
    // Not finished yet: NULL, not an error.
    wait_for_count(
        &cluster,
        &mut db,
        "SELECT count(*) FROM integration.http_requests WHERE attempts = 1 AND claimed_by IS NULL",
        1,
        Duration::from_secs(20),
    );
    let pending = alice
        .query_one("SELECT (integration.http_result($1)).id", &[&id])
        .unwrap();
    assert_eq!(pending.get::<_, Option<i64>>(0), None);
    // Alice cancels hers.
    assert_eq!(
        alice
            .execute(
                "DELETE FROM integration.http_requests WHERE id = $1",
                &[&id]
            )
            .unwrap(),
        1
    );
    let (code, _) = db_error(alice.query_one("SELECT * FROM integration.http_result($1)", &[&id]));
    assert_eq!(code, SqlState::NO_DATA_FOUND);
    // Without integration_user there is nothing to call.
    let mut nobody = cluster.connect_as("app", "nobody");
    let (code, _) = db_error(nobody.query_one(
        "SELECT integration.http_enqueue('GET', 'https://example.com/')",
        &[],
    ));
    assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE);
    // Waiting inside the transaction that queued it would wait for ever.
    let mut tx = alice.transaction().unwrap();
    let id: i64 = tx
        .query_one(
            "SELECT integration.http_enqueue('GET', $1)",
            &[&server.url("/x")],
        )
        .unwrap()
        .get(0);
    let (code, message) = db_error(tx.query_one(
        "SELECT * FROM integration.http_result($1, '1 second')",
        &[&id],
    ));
    assert_eq!(code, SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
    assert!(message.contains("COMMIT"), "{message}");
}

#[test]
fn old_responses_expire() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = database(&cluster, "app");
    db.batch_execute("ALTER DATABASE app SET integration.http_response_ttl = '1s'")
        .unwrap();
    let mut db = cluster.connect("app");
    let enqueue = |db: &mut Client| -> i64 {
        db.query_one(
            "SELECT integration.http_enqueue('GET', $1)",
            &[&server.url("/x")],
        )
        .unwrap()
        .get(0)
    };
    let first = enqueue(&mut db);
    db.query_one(
        "SELECT integration.http_result($1, '20 seconds')",
        &[&first],
    )
    .unwrap();
    // The worker removes it once it is older than a second, while it runs;
    // a second request keeps it running.
    std::thread::sleep(Duration::from_millis(1500));
    let second = enqueue(&mut db);
    wait_for_count(
        &cluster,
        &mut db,
        &format!("SELECT count(*) FROM integration.http_responses WHERE id = {second}"),
        1,
        Duration::from_secs(20),
    );
    wait_for_count(
        &cluster,
        &mut db,
        &format!("SELECT 1 - count(*) FROM integration.http_responses WHERE id = {first}"),
        1,
        Duration::from_secs(20),
    );
}

/// Intervals are bounded when a request is queued, and a row that holds a
/// huge one anyway (queued before the bound) cannot stall the queue: the
/// claim step once overflowed `now() + timeout` for every user (issue 27,
/// item 1).
#[test]
fn huge_intervals_are_refused_and_cannot_stall_the_queue() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = database(&cluster, "app");
    for (arguments, what) in [
        (
            "timeout => '106751000 days'",
            "timeout must be at most 1 day",
        ),
        (
            "backoff => '1000 years'",
            "backoff must be between 0 and 1 day",
        ),
    ] {
        let (code, message) = db_error(db.query_one(
            &format!("SELECT integration.http_enqueue('GET', $1, {arguments})"),
            &[&server.url("/x")],
        ));
        assert_eq!(code, SqlState::INVALID_PARAMETER_VALUE);
        assert!(message.contains(what), "{message}");
    }
    let mut tx = db.transaction().unwrap();
    let old: i64 = tx
        .query_one(
            "SELECT integration.http_enqueue('GET', $1)",
            &[&server.url("/old")],
        )
        .unwrap()
        .get(0);
    tx.execute(
        "UPDATE integration.http_requests SET timeout = '106751000 days' WHERE id = $1",
        &[&old],
    )
    .unwrap();
    tx.commit().unwrap();
    let ids: Vec<i64> = (0..3)
        .map(|_| {
            db.query_one(
                "SELECT integration.http_enqueue('GET', $1)",
                &[&server.url("/y")],
            )
            .unwrap()
            .get(0)
        })
        .collect();
    for id in ids.iter().chain([&old]) {
        let status: Option<i32> = db
            .query_one(
                "SELECT status FROM integration.http_result($1, '20 seconds')",
                &[id],
            )
            .unwrap()
            .get(0);
        assert_eq!(status, Some(200), "request {id}\n{}", cluster.log_tail());
    }
}

/// An allowance removed after a request was queued applies to its next
/// attempt: the worker checks the role's current policy as well as the one
/// stored with the request (issue 27, item 4).
#[test]
fn an_allowance_removed_after_queueing_stops_the_retries() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = database(&cluster, "app");
    let id: i64 = db
        .query_one(
            "SELECT integration.http_enqueue('GET', $1, retries => 20, backoff => '300 ms')",
            &[&server.url("/seq/revoked/503")],
        )
        .unwrap()
        .get(0);
    let start = Instant::now();
    while server.hits("/seq/revoked/503") < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            cluster.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    db.batch_execute("ALTER DATABASE app RESET integration.http_allowed_networks")
        .unwrap();
    let row = db
        .query_one(
            "SELECT status, error FROM integration.http_result($1, '30 seconds')",
            &[&id],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), None, "{}", cluster.log_tail());
    let error: Option<String> = row.get(1);
    assert!(
        error.as_deref().is_some_and(|e| e.contains("127.0.0.1")),
        "{error:?}"
    );
    // At most the attempt that was in flight when the allowance went.
    assert!(
        server.hits("/seq/revoked/503") <= 3,
        "{}",
        server.hits("/seq/revoked/503")
    );
}

/// One role cannot take the queue from the others: its queued requests and
/// body bytes are bounded at enqueue, it has at most
/// `http_queue_role_concurrency` requests in flight, and roles take turns,
/// so another role's request is answered within its own timeout while a
/// flood of slow requests waits (issue 27, item 2).
#[test]
fn a_flooding_role_cannot_hold_the_queue_or_delay_another() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = database(&cluster, "app");
    db.batch_execute(
        "ALTER DATABASE app SET integration.http_queue_concurrency = 4;
         ALTER DATABASE app SET integration.http_queue_role_concurrency = 2;
         CREATE ROLE flood LOGIN IN ROLE integration_user;
         CREATE ROLE victim LOGIN IN ROLE integration_user;
         CREATE ROLE bulky LOGIN IN ROLE integration_user;
         ALTER ROLE flood SET integration.http_queue_role_max_requests = 40;
         ALTER ROLE bulky SET integration.http_queue_role_max_bytes = '64kB';",
    )
    .unwrap();
    let mut flood = cluster.connect_as("app", "flood");
    // Slow requests, queued before the victim's: each holds a place 30 s.
    flood
        .execute(
            "SELECT integration.http_enqueue('GET', $1 || '/slow/30000?n=' || n)
             FROM generate_series(1, 40) n",
            &[&server.url("")],
        )
        .unwrap();
    let (code, message) = db_error(flood.query_one(
        "SELECT integration.http_enqueue('GET', $1)",
        &[&server.url("/slow/1")],
    ));
    assert_eq!(code, SqlState::CONFIGURATION_LIMIT_EXCEEDED);
    assert!(message.contains("has 40 HTTP requests queued"), "{message}");
    // The refusal is audited (by the worker, after the error).
    wait_for_count(
        &cluster,
        &mut db,
        "SELECT count(*) FROM integration.audit_log
         WHERE action = 'http.enqueue' AND actor = 'flood' AND NOT ok
           AND detail->>'reason' LIKE '%has 40 HTTP requests queued%'",
        1,
        Duration::from_secs(30),
    );
    // The flood's first requests are in flight before the victim queues.
    let start = Instant::now();
    while server.max_in_flight() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            cluster.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut victim = cluster.connect_as("app", "victim");
    let id: i64 = victim
        .query_one(
            "SELECT integration.http_enqueue('GET', $1, timeout => '5 s')",
            &[&server.url("/slow/10")],
        )
        .unwrap()
        .get(0);
    let status: Option<i32> = victim
        .query_one(
            "SELECT status FROM integration.http_result($1, '5 s')",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        status,
        Some(200),
        "the victim's request waited past its timeout\n{}",
        cluster.log_tail()
    );
    let max = server.max_in_flight();
    assert!(
        max <= 3,
        "{max} in flight: the flood had more than its 2 places"
    );
    // Bytes: 40 kB fits under 64 kB, another 40 kB does not until the
    // first has gone (here: cancelled).
    let mut bulky = cluster.connect_as("app", "bulky");
    let enqueue = "SELECT integration.http_enqueue('POST', $1, body => pg_catalog.convert_to(repeat('x', 40000), 'UTF8'))";
    bulky
        .query_one(enqueue, &[&server.url("/slow/30000")])
        .unwrap();
    let (code, message) = db_error(bulky.query_one(enqueue, &[&server.url("/slow/1")]));
    assert_eq!(code, SqlState::CONFIGURATION_LIMIT_EXCEEDED);
    assert!(message.contains("body bytes queued"), "{message}");
    bulky
        .execute("DELETE FROM integration.http_requests", &[])
        .unwrap();
    bulky.query_one(enqueue, &[&server.url("/slow/1")]).unwrap();
    flood
        .execute("DELETE FROM integration.http_requests", &[])
        .unwrap();
}
