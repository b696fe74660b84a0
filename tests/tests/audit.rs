//! End-to-end: every refused request leaves an audit row with its reason
//! (never the secret), written by the background worker so that it
//! survives the error the refusal raises (issue 23, item 3); cancels of
//! queued requests and failing callbacks are audited too.

use integration_tests::{PgCluster, TestServer};
use postgres::Client;
use std::time::{Duration, Instant};

/// Waits until `audit_log` has a row matching `condition`; returns its
/// actor, target and reason.
fn audited(
    cluster: &PgCluster,
    db: &mut Client,
    condition: &str,
) -> (String, Option<String>, String) {
    let sql = format!(
        "SELECT actor, target, coalesce(detail->>'reason', detail->>'error', detail::text)
         FROM integration.audit_log WHERE {condition} ORDER BY id DESC LIMIT 1"
    );
    let start = Instant::now();
    loop {
        if let Some(row) = db.query_opt(&sql, &[]).unwrap() {
            return (row.get(0), row.get(1), row.get(2));
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no audit row where {condition}\n{}",
            cluster.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_refusal_cancel_and_callback_error_is_audited() {
    let cluster = PgCluster::start();
    let server = TestServer::start();
    let mut db = cluster.create_database("app");
    db.batch_execute(
        "CREATE ROLE u1 LOGIN IN ROLE integration_user;
         CREATE ROLE adm LOGIN IN ROLE integration_admin;
         CREATE ROLE other NOLOGIN;
         CREATE FUNCTION public.boom(r integration.http_responses) RETURNS void
             LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'callback says no'; END $$;",
    )
    .unwrap();
    let others_token: String = db
        .query_one("SELECT integration.create_api_key('theirs', 'other')", &[])
        .unwrap()
        .get(0);
    let others_id: i64 = db
        .query_one(
            "SELECT id FROM integration.api_keys WHERE name = 'theirs'",
            &[],
        )
        .unwrap()
        .get(0);

    let mut user = cluster.connect_as("app", "u1");
    let mut admin = cluster.connect_as("app", "adm");
    let fail = |client: &mut Client, sql: &str| {
        let error = client.batch_execute(sql).unwrap_err();
        assert!(error.as_db_error().is_some(), "{sql}: {error}");
    };
    fail(
        &mut user,
        "SELECT integration.http_get('http://u:pw-secret@no host/')",
    );
    fail(
        &mut user,
        "SELECT integration.http('NOT A METHOD', 'http://example.com/')",
    );
    fail(
        &mut user,
        "SELECT integration.http_get('http://example.com/', headers => '{\"Host\": \"internal\"}')",
    );
    fail(
        &mut user,
        "SELECT integration.http_enqueue('GET', 'http://127.0.0.1:1/')",
    );
    fail(
        &mut user,
        "SELECT integration.verify_jwt('not.a.jwt', 'key-0123456789abcdef0123456789abcdef')",
    );
    fail(
        &mut user,
        &format!("SELECT integration.authenticate('{others_token}')"),
    );
    fail(
        &mut admin,
        "SELECT integration.create_api_key('mine', 'other')",
    );
    fail(
        &mut admin,
        &format!("SELECT integration.rotate_api_key({others_id})"),
    );
    fail(
        &mut admin,
        &format!("SELECT integration.revoke_api_key({others_id})"),
    );

    let refused = |db: &mut Client, action: &str, actor: &str, reason_like: &str| {
        let (who, target, reason) = audited(
            &cluster,
            db,
            &format!(
                "action = '{action}' AND NOT ok AND actor = '{actor}'
                 AND detail->>'reason' LIKE '{reason_like}'"
            ),
        );
        assert_eq!(who, actor);
        assert!(!reason.contains("pw-secret"), "{reason}");
        target
    };
    refused(&mut db, "http.refused", "u1", "invalid URL%");
    refused(&mut db, "http.refused", "u1", "invalid HTTP method%");
    refused(&mut db, "http.refused", "u1", "%Host header%");
    let target = refused(&mut db, "http.enqueue", "u1", "%127.0.0.1%");
    assert_eq!(target.as_deref(), Some("127.0.0.1"));
    refused(&mut db, "jwt.verify", "u1", "%");
    let target = refused(&mut db, "api_key.authenticate", "u1", "%may not SET ROLE%");
    assert_eq!(target, Some(format!("api_key:{others_id}")));
    let target = refused(&mut db, "api_key.create", "adm", "permission denied%");
    assert_eq!(target.as_deref(), Some("role:other"));
    for action in ["api_key.rotate", "api_key.revoke"] {
        let target = refused(&mut db, action, "adm", "permission denied%");
        assert_eq!(target, Some(format!("api_key:{others_id}")));
    }

    // A caller cancels a queued request.
    let mut tx = user.transaction().unwrap();
    let id: i64 = tx
        .query_one(
            "SELECT integration.http_enqueue('GET', 'http://example.com/later')",
            &[],
        )
        .unwrap()
        .get(0);
    let deleted = tx
        .execute(
            "DELETE FROM integration.http_requests WHERE id = $1",
            &[&id],
        )
        .unwrap();
    assert_eq!(deleted, 1);
    tx.commit().unwrap();
    let (_, _, detail) = audited(
        &cluster,
        &mut db,
        "action = 'http.cancel' AND ok AND actor = 'u1'",
    );
    assert!(detail.contains(&format!("[{id}]")), "{detail}");

    // A callback that fails.
    db.batch_execute("SET integration.http_allowed_networks = '127.0.0.1/32'")
        .unwrap();
    let id: i64 = db
        .query_one(
            "SELECT integration.http_enqueue('GET', $1, callback => 'public.boom(integration.http_responses)')",
            &[&server.url("/cb")],
        )
        .unwrap()
        .get(0);
    let (_, target, error) = audited(&cluster, &mut db, "action = 'http.callback' AND NOT ok");
    assert_eq!(target, Some(format!("http_request:{id}")));
    assert!(error.contains("callback says no"), "{error}");
}

/// A flood of refusals cannot push other events out of the audit log:
/// identical ones are counted in one row, and a full ring slows the
/// flooding backend down instead of dropping events (issue 27, item 3).
#[test]
fn a_flood_of_refusals_is_counted_and_hides_nothing() {
    let cluster = PgCluster::start();
    let mut db = cluster.create_database("app");
    db.batch_execute("CREATE ROLE u1 LOGIN IN ROLE integration_user")
        .unwrap();
    let mut user = cluster.connect_as("app", "u1");
    let found: i64 = user
        .query_one(
            "SELECT count(*) FROM generate_series(1, 8000) g
             WHERE EXISTS (SELECT FROM integration.verify_api_key('x' || g))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(found, 0);
    let error = user
        .batch_execute("SELECT integration.http_get('http://127.0.0.1:1/after-the-flood')")
        .unwrap_err();
    assert!(error.as_db_error().is_some(), "{error}");
    audited(
        &cluster,
        &mut db,
        "action = 'http.request' AND actor = 'u1' AND target = '127.0.0.1' AND NOT ok",
    );
    let start = Instant::now();
    loop {
        let counted: i64 = db
            .query_one(
                "SELECT coalesce(sum(coalesce((detail->>'count')::bigint, 1)), 0)::bigint
                 FROM integration.audit_log
                 WHERE action = 'api_key.verify' AND actor = 'u1' AND detail->>'reason' = 'malformed'",
                &[],
            )
            .unwrap()
            .get(0);
        if counted == 8000 {
            break;
        }
        assert!(
            counted < 8000 && start.elapsed() < Duration::from_secs(30),
            "{counted} refusals audited\n{}",
            cluster.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rows: i64 = db
        .query_one(
            "SELECT count(*) FROM integration.audit_log WHERE action = 'api_key.verify'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(rows < 8000, "{rows} rows for 8000 identical refusals");
    let dropped: i64 = db
        .query_one(
            "SELECT count(*) FROM integration.audit_log WHERE action = 'audit.dropped'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dropped, 0);
}
