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

/// Stores one delivery per `(webhook, delivery id)` through the sidecar's
/// function, as the sidecar does, in one batch; returns each event id or error.
fn ingest(
    cluster: &PgCluster,
    db: &mut Client,
    deliveries: &[(&str, &str)],
) -> Vec<(Option<i64>, Option<String>)> {
    let ids: Vec<i64> = deliveries
        .iter()
        .map(|(name, _)| {
            db.query_one(
                "SELECT id FROM integration.webhooks WHERE name = $1",
                &[name],
            )
            .unwrap()
            .get(0)
        })
        .collect();
    let delivery_ids: Vec<&str> = deliveries.iter().map(|(_, d)| *d).collect();
    let n = deliveries.len() as i32;
    let mut sidecar = cluster.connect_as("app", "integration_sidecar");
    sidecar
        .query(
            "SELECT event_id, error FROM integration.ingest_webhook_events(
                 $1, $2, array_fill('{}'::jsonb, ARRAY[$3::int]), array_fill('{\"a\": 1}'::jsonb, ARRAY[$3::int]),
                 array_fill('\\x7b7d'::bytea, ARRAY[$3::int]), array_fill('application/json'::text, ARRAY[$3::int]),
                 array_fill('127.0.0.1'::inet, ARRAY[$3::int]))
             ORDER BY ord",
            &[&ids, &delivery_ids, &n],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn webhook_targets_and_handlers_run_as_their_owners_never_as_superuser() {
    let cluster = PgCluster::start();
    let mut db = cluster.create_database("app");
    db.batch_execute(
        "ALTER ROLE integration_sidecar LOGIN;
         CREATE ROLE attacker LOGIN IN ROLE integration_admin;
         CREATE ROLE team NOLOGIN;
         GRANT team TO attacker;
         CREATE SCHEMA app AUTHORIZATION attacker;",
    )
    .unwrap();
    let supers = superusers(&mut db);
    let mut attacker = cluster.connect_as("app", "attacker");
    attacker.batch_execute(PLANTED).unwrap();
    attacker
        .batch_execute(
            "CREATE TABLE app.events (LIKE integration.webhook_events INCLUDING ALL);
             CREATE TABLE app.seen (what text, who name);
             CREATE FUNCTION app.spy() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 PERFORM app.escalate();
                 INSERT INTO app.seen VALUES (TG_OP, current_user);
                 RETURN coalesce(NEW, OLD);
             END $$;
             CREATE TRIGGER spy BEFORE INSERT OR DELETE ON app.events
                 FOR EACH ROW EXECUTE FUNCTION app.spy();
             CREATE FUNCTION app.handler(event jsonb) RETURNS jsonb
                 LANGUAGE sql SECURITY DEFINER AS $$ SELECT NULL::jsonb $$;
             SELECT * FROM integration.create_webhook('mine', 'none', target => 'app.events');
             SELECT * FROM integration.create_webhook('handled', 'none', handler => 'app.handler(jsonb)');
             -- Once the webhook exists, the handler becomes SECURITY INVOKER.
             CREATE OR REPLACE FUNCTION app.handler(event jsonb) RETURNS jsonb
                 LANGUAGE plpgsql SECURITY INVOKER AS $$
             BEGIN
                 PERFORM app.escalate();
                 INSERT INTO app.seen VALUES ('handler', current_user);
                 RETURN jsonb_build_object('status', 202);
             END $$;",
        )
        .unwrap();
    // A superuser's webhook into the attacker's table: the trigger is the
    // attacker's code and runs as the attacker.
    db.batch_execute(
        "SELECT * FROM integration.create_webhook('theirs', 'none', target => 'app.events')",
    )
    .unwrap();
    let stored = ingest(
        &cluster,
        &mut db,
        &[("mine", "d1"), ("theirs", "d2"), ("handled", "d3")],
    );
    for (event, error) in &stored {
        assert!(
            event.is_some() && error.is_none(),
            "{stored:?}\n{}",
            cluster.log_tail()
        );
    }
    let seen: Vec<(String, String)> = db
        .query("SELECT what, who::text FROM app.seen ORDER BY 1, 2", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let attacker_did = |what: &str| (what.to_string(), "attacker".to_string());
    assert_eq!(
        seen,
        [
            attacker_did("INSERT"),
            attacker_did("INSERT"),
            attacker_did("handler")
        ]
    );
    // Dropping a webhook with its events deletes as the table's owner too.
    db.batch_execute("SELECT integration.drop_webhook('theirs', drop_events => true)")
        .unwrap();
    let deleted_as: Vec<String> = db
        .query("SELECT who::text FROM app.seen WHERE what = 'DELETE'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(deleted_as, ["attacker"]);
    assert_eq!(superusers(&mut db), supers, "{}", cluster.log_tail());

    // The extension's own runner is not for its users.
    let refused = attacker
        .query_one("SELECT integration._run_as('postgres', 'SELECT 1', 1)", &[])
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
}

#[test]
fn a_webhook_whose_creator_lost_its_rights_fails_alone_and_is_audited() {
    let cluster = PgCluster::start();
    let mut db = cluster.create_database("app");
    db.batch_execute(
        "ALTER ROLE integration_sidecar LOGIN;
         CREATE ROLE creator LOGIN IN ROLE integration_admin;
         CREATE ROLE team NOLOGIN;
         GRANT team TO creator;
         CREATE SCHEMA app AUTHORIZATION team;
         CREATE TABLE app.team_events (LIKE integration.webhook_events INCLUDING ALL);
         ALTER TABLE app.team_events OWNER TO team;",
    )
    .unwrap();
    let mut creator = cluster.connect_as("app", "creator");
    creator
        .batch_execute(
            "SELECT * FROM integration.create_webhook('team', 'none', target => 'app.team_events');
             SELECT * FROM integration.create_webhook('plain', 'none');",
        )
        .unwrap();
    let first = ingest(&cluster, &mut db, &[("team", "t1"), ("plain", "p1")]);
    assert!(
        first.iter().all(|(id, e)| id.is_some() && e.is_none()),
        "{first:?}"
    );
    db.batch_execute("REVOKE team FROM creator").unwrap();
    let second = ingest(&cluster, &mut db, &[("team", "t2"), ("plain", "p2")]);
    let (team_id, team_error) = &second[0];
    assert_eq!(*team_id, None);
    assert!(
        team_error
            .as_deref()
            .is_some_and(|e| e.contains("may not insert into app.team_events")),
        "{second:?}"
    );
    // The other webhook in the same batch is stored.
    assert!(second[1].0.is_some() && second[1].1.is_none(), "{second:?}");
    let audited: i64 = db
        .query_one(
            "SELECT count(*) FROM integration.audit_log
             WHERE action = 'webhook.store_failed' AND target = 'webhook:team' AND NOT ok
               AND actor = 'creator' AND detail->>'sqlstate' = '42501'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(audited, 1);
    let stored: i64 = db
        .query_one("SELECT count(*) FROM app.team_events", &[])
        .unwrap()
        .get(0);
    assert_eq!(stored, 1);
}

#[test]
fn keys_are_revoked_only_by_members_of_their_role_and_authenticate_binds_to_its_role() {
    let cluster = PgCluster::start();
    let mut db = cluster.create_database("app");
    db.batch_execute(
        "CREATE ROLE admin_a LOGIN IN ROLE integration_admin;
         CREATE ROLE api_role NOLOGIN;
         GRANT api_role TO admin_a;
         CREATE ROLE gate LOGIN IN ROLE integration_user;
         CREATE ROLE other_role NOLOGIN;
         GRANT api_role, other_role TO gate;",
    )
    .unwrap();
    let superuser_key: String = db
        .query_one(
            "SELECT integration.create_api_key('root', current_user::text)",
            &[],
        )
        .unwrap()
        .get(0);
    let superuser_key_id: i64 = db
        .query_one(
            "SELECT id FROM integration.api_keys WHERE name = 'root'",
            &[],
        )
        .unwrap()
        .get(0);
    let mut admin = cluster.connect_as("app", "admin_a");
    let refused = admin
        .query_one(
            "SELECT integration.revoke_api_key($1)",
            &[&superuser_key_id],
        )
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused}"
    );
    let still_valid: i64 = db
        .query_one(
            "SELECT count(*) FROM integration.verify_api_key($1)",
            &[&superuser_key],
        )
        .unwrap()
        .get(0);
    assert_eq!(still_valid, 1);
    // A key of a role the admin belongs to: revoked.
    let token: String = admin
        .query_one("SELECT integration.create_api_key('svc', 'api_role')", &[])
        .unwrap()
        .get(0);
    let key_id: i64 = admin
        .query_one(
            "SELECT id FROM integration.api_keys WHERE name = 'svc'",
            &[],
        )
        .unwrap()
        .get(0);

    // authenticate's key id holds only while its role is current.
    let mut gate = cluster.connect_as("app", "gate");
    let mut tx = gate.transaction().unwrap();
    let id: i64 = tx
        .query_one("SELECT integration.authenticate($1)", &[&token])
        .unwrap()
        .get(0);
    assert_eq!(id, key_id);
    let shown = |tx: &mut postgres::Transaction| -> (String, String) {
        let row = tx
            .query_one(
                "SELECT current_user::text, current_setting('integration.api_key_id', true)",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(shown(&mut tx), ("api_role".into(), key_id.to_string()));
    tx.batch_execute("RESET ROLE").unwrap();
    assert_eq!(shown(&mut tx), ("gate".into(), String::new()));
    tx.batch_execute("SET LOCAL ROLE other_role").unwrap();
    assert_eq!(shown(&mut tx), ("other_role".into(), String::new()));
    tx.commit().unwrap();
    let after: String = gate
        .query_one(
            "SELECT current_setting('integration.api_key_id', true)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(after, "");
    let null = gate
        .query_one("SELECT integration.authenticate(NULL)", &[])
        .unwrap_err();
    assert_eq!(
        null.code(),
        Some(&postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{:?}",
        null.as_db_error()
    );

    assert!(admin
        .query_one("SELECT integration.revoke_api_key($1)", &[&key_id])
        .unwrap()
        .get::<_, bool>(0));
}
