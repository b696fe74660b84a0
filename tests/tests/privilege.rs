//! End-to-end: no path from an integration role to superuser (issue 22).
//! Each test is an attack that worked on the code before it: user code run
//! by the queue's background worker (a superuser's session) or by a
//! `SECURITY DEFINER` function must run as its owner, contained, and leave
//! nothing behind. Every test ends by checking that no role became superuser
//! and that the queue and audit log still serve other users.

use integration_tests::{PgCluster, TestServer};
use postgres::Client;
use std::time::{Duration, Instant};

/// Database `app` with the extension, allowed to reach loopback, and two
/// login roles of `integration_user`: `attacker`, who owns schema `app`, and
/// `bystander`, whose queued requests must keep being delivered.
fn setup(cluster: &PgCluster) -> Client {
    let mut db = cluster.create_database("app");
    db.batch_execute(
        "ALTER DATABASE app SET integration.http_allowed_networks = '127.0.0.1/32';
         CREATE ROLE attacker LOGIN IN ROLE integration_user;
         CREATE SCHEMA app AUTHORIZATION attacker;
         CREATE ROLE bystander LOGIN IN ROLE integration_user;
         CREATE TABLE public.bystander_done (id bigint, at_role name);
         GRANT INSERT ON public.bystander_done TO bystander;
         CREATE FUNCTION public.bystander_cb(r integration.http_responses) RETURNS void
             LANGUAGE sql AS $$ INSERT INTO public.bystander_done VALUES (r.id, current_user) $$;
         GRANT EXECUTE ON FUNCTION public.bystander_cb(integration.http_responses) TO bystander;",
    )
    .unwrap();
    cluster.connect("app")
}

/// What the attacker plants: `app.now()` (and friends) that make the
/// attacker superuser when a superuser's session finds them first, and a
/// table `app.ran` that the callbacks write to.
const PLANTED: &str = "
    CREATE TABLE app.ran (callback text);
    CREATE FUNCTION app.escalate() RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
            EXECUTE 'ALTER ROLE attacker SUPERUSER';
        END IF;
    END $$;
    CREATE FUNCTION app.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
    BEGIN PERFORM app.escalate(); RETURN pg_catalog.now(); END $$;
    CREATE FUNCTION app.pg_backend_pid() RETURNS int LANGUAGE plpgsql AS $$
    BEGIN PERFORM app.escalate(); RETURN pg_catalog.pg_backend_pid(); END $$;
    CREATE FUNCTION app.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS $$
    BEGIN PERFORM app.escalate(); RETURN QUERY SELECT * FROM pg_catalog.unnest($1); END $$;
    GRANT USAGE ON SCHEMA app TO PUBLIC;
    GRANT INSERT ON app.ran TO PUBLIC;";

/// A callback of the attacker's that runs `body` (PL/pgSQL) and records itself.
fn callback(db: &mut Client, name: &str, body: &str) {
    db.batch_execute(&format!(
        "CREATE FUNCTION app.{name}(r integration.http_responses) RETURNS void
         LANGUAGE plpgsql AS $cb$
         BEGIN
             INSERT INTO app.ran VALUES ('{name}');
             {body}
         END $cb$;"
    ))
    .unwrap();
}

fn enqueue(db: &mut Client, url: &str, callback: &str) -> i64 {
    db.query_one(
        "SELECT integration.http_enqueue('GET', $1, callback => $2::text::regprocedure)",
        &[&url, &callback],
    )
    .unwrap()
    .get(0)
}

/// Waits until `sql` (a count) reaches `want`; panics with the log after 30 s.
fn wait_for(cluster: &PgCluster, db: &mut Client, sql: &str, want: i64) {
    let start = Instant::now();
    loop {
        let n: i64 = db.query_one(sql, &[]).unwrap().get(0);
        if n >= want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{sql}: {n} of {want}\n{}",
            cluster.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn superusers(db: &mut Client) -> Vec<String> {
    db.query(
        "SELECT rolname::text FROM pg_roles WHERE rolsuper ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The bystander's requests are still delivered, their callbacks run as the
/// bystander, and the audit log records them.
fn queue_still_serves_others(cluster: &PgCluster, db: &mut Client, server: &TestServer) {
    let mut bystander = cluster.connect_as("app", "bystander");
    let before: i64 = db
        .query_one("SELECT count(*) FROM public.bystander_done", &[])
        .unwrap()
        .get(0);
    for _ in 0..3 {
        enqueue(
            &mut bystander,
            &server.url("/bystander"),
            "public.bystander_cb(integration.http_responses)",
        );
    }
    wait_for(
        cluster,
        db,
        "SELECT count(*) FROM public.bystander_done WHERE at_role = 'bystander'",
        before + 3,
    );
    wait_for(
        cluster,
        db,
        "SELECT count(*) FROM integration.audit_log
         WHERE action = 'http.request' AND actor = 'bystander'",
        before + 3,
    );
}

#[test]
fn queue_callbacks_leave_no_setting_in_the_workers_session() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = setup(&cluster);
    let supers = superusers(&mut db);
    let mut attacker = cluster.connect_as("app", "attacker");
    attacker.batch_execute(PLANTED).unwrap();
    let attacks = [
        (
            "path",
            "PERFORM pg_catalog.set_config('search_path', 'app, pg_catalog', false);",
        ),
        (
            "read_only",
            "PERFORM pg_catalog.set_config('default_transaction_read_only', 'on', false);",
        ),
        (
            "timeout",
            "PERFORM pg_catalog.set_config('statement_timeout', '1', false);",
        ),
        (
            "replica",
            "PERFORM pg_catalog.set_config('session_replication_role', 'replica', false);",
        ),
        (
            "local_path",
            "SET search_path = app, pg_catalog; SET default_transaction_read_only = on;",
        ),
    ];
    for (name, body) in attacks {
        callback(&mut attacker, name, body);
        enqueue(
            &mut attacker,
            &server.url("/attack"),
            &format!("app.{name}(integration.http_responses)"),
        );
    }
    // Every callback ran (or failed, as session_replication_role needs a
    // superuser), and the worker went on with its own statements.
    wait_for(
        &cluster,
        &mut db,
        "SELECT count(*) FROM integration.http_responses
         WHERE created_by = 'attacker' AND callback_error IS NOT NULL",
        1,
    );
    wait_for(
        &cluster,
        &mut db,
        "SELECT count(*) FROM app.ran",
        (attacks.len() - 1) as i64,
    );
    let replica_error: Option<String> = db
        .query_one(
            "SELECT callback_error FROM integration.http_responses
             WHERE callback = 'app.replica(integration.http_responses)'::regprocedure",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        replica_error
            .as_deref()
            .is_some_and(|e| e.contains("permission denied")),
        "{replica_error:?}"
    );
    // The worker's statements after the callbacks (claims, scheduling,
    // audit) ran with its own settings: others are served, nobody escalated.
    queue_still_serves_others(&cluster, &mut db, &server);
    assert_eq!(superusers(&mut db), supers, "{}", cluster.log_tail());
}

#[test]
fn a_callback_that_breaks_the_session_restarts_the_worker() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = setup(&cluster);
    let mut attacker = cluster.connect_as("app", "attacker");
    attacker.batch_execute(PLANTED).unwrap();
    // A session-level advisory lock outlives any GUC nest level and any
    // subtransaction: only a new session drops it.
    callback(
        &mut attacker,
        "hold",
        "PERFORM pg_catalog.pg_advisory_lock(4242);",
    );
    enqueue(
        &mut attacker,
        &server.url("/hold"),
        "app.hold(integration.http_responses)",
    );
    wait_for(&cluster, &mut db, "SELECT count(*) FROM app.ran", 1);
    wait_for(
        &cluster,
        &mut db,
        "SELECT (count(*) = 0)::int::bigint FROM pg_locks
         WHERE locktype = 'advisory' AND objid = 4242",
        1,
    );
    assert!(
        cluster
            .log()
            .contains("left the worker's session changed (advisory locks held)"),
        "{}",
        cluster.log_tail()
    );
    queue_still_serves_others(&cluster, &mut db, &server);
}
