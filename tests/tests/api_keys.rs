//! End-to-end: API keys, roles and the audit writer on a real cluster, with
//! the connections that applications and PostgREST really make.

use integration_tests::PgCluster;
use postgres::error::SqlState;
use postgres::Client;
use std::time::{Duration, Instant};

const SETUP: &str = "
    CREATE ROLE app_user LOGIN IN ROLE integration_user;
    CREATE ROLE web_user NOLOGIN;
    CREATE ROLE other_role NOLOGIN;
    CREATE ROLE key_admin LOGIN IN ROLE integration_admin, web_user;
    CREATE ROLE nobody LOGIN;
";

fn create_key(client: &mut Client, role: &str, scopes: &str) -> String {
    client
        .query_one(
            "SELECT integration.create_api_key('e2e key', $1, $2::text::text[])",
            &[&role, &scopes],
        )
        .expect("create_api_key")
        .get(0)
}

fn key_id(token: &str) -> i64 {
    token
        .strip_prefix("pgik_")
        .and_then(|rest| rest.split('_').next())
        .and_then(|id| id.parse().ok())
        .expect("token has an id")
}

fn verifies(client: &mut Client, token: &str) -> bool {
    client
        .query("SELECT id FROM integration.verify_api_key($1)", &[&token])
        .expect("verify_api_key")
        .len()
        == 1
}

fn sqlstate(result: Result<impl Sized, postgres::Error>) -> SqlState {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e
            .code()
            .cloned()
            .unwrap_or_else(|| panic!("no SQLSTATE: {e}")),
    }
}

/// Polls `sql` (returning one bigint) until it reaches `want` or 15 s pass.
fn wait_for_count(client: &mut Client, sql: &str, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let n: i64 = client.query_one(sql, &[]).expect(sql).get(0);
        if n >= want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_role_gets_exactly_its_privileges() {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database("app");
    admin.batch_execute(SETUP).unwrap();

    let mut key_admin = cluster.connect_as("app", "key_admin");
    let token = create_key(&mut key_admin, "web_user", "{orders:read}");
    let listed: i64 = key_admin
        .query_one("SELECT count(*) FROM integration.api_keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(listed, 1);
    assert_eq!(
        sqlstate(key_admin.query_one("SELECT integration.create_api_key('k', 'other_role')", &[])),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "a key may only act as a role its creator belongs to"
    );
    assert_eq!(
        sqlstate(key_admin.query_one("SELECT integration.create_api_key('k', 'postgres')", &[])),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "superuser roles need a superuser"
    );
    assert_eq!(
        sqlstate(key_admin.query("SELECT * FROM integration.api_key_store", &[])),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "hashes stay with the owner"
    );
    assert_eq!(
        sqlstate(key_admin.execute("DELETE FROM integration.audit_log", &[])),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "the audit log is append-only for everyone but its owner"
    );

    let mut user = cluster.connect_as("app", "app_user");
    assert!(verifies(&mut user, &token));
    for sql in [
        "SELECT * FROM integration.api_keys",
        "SELECT * FROM integration.audit_log",
        "SELECT integration.create_api_key('k', 'app_user')",
        "SELECT integration.revoke_api_key(1)",
    ] {
        assert_eq!(
            sqlstate(user.query(sql, &[])),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
    assert_eq!(
        sqlstate(user.batch_execute("SET integration.api_key_id = '1'")),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "the key id cannot be forged"
    );

    let mut nobody = cluster.connect_as("app", "nobody");
    assert_eq!(
        sqlstate(nobody.query("SELECT * FROM integration.verify_api_key('x')", &[])),
        SqlState::INSUFFICIENT_PRIVILEGE,
        "PUBLIC gets nothing"
    );

    // Roles are cluster-wide: a second database installs without conflict.
    let mut second = cluster.create_database("second");
    let n: i64 = second
        .query_one("SELECT count(*) FROM integration.api_keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[test]
fn revocation_reaches_other_sessions_on_their_next_call() {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database("app");
    admin.batch_execute(SETUP).unwrap();
    let token = create_key(&mut admin, "web_user", "{}");
    let mut user = cluster.connect_as("app", "app_user");
    for _ in 0..3 {
        assert!(verifies(&mut user, &token), "warm the cache");
    }
    admin
        .query_one("SELECT integration.revoke_api_key($1)", &[&key_id(&token)])
        .unwrap();
    assert!(
        !verifies(&mut user, &token),
        "revoked: the cache was dropped"
    );

    // A rotation in one session is seen by the other at once, and a
    // rolled-back revocation changes nothing.
    let token = create_key(&mut admin, "web_user", "{}");
    assert!(verifies(&mut user, &token));
    let mut tx = admin.transaction().unwrap();
    tx.query_one("SELECT integration.revoke_api_key($1)", &[&key_id(&token)])
        .unwrap();
    tx.rollback().unwrap();
    assert!(verifies(&mut user, &token));
    let rotated: String = admin
        .query_one(
            "SELECT integration.rotate_api_key($1, interval '0')",
            &[&key_id(&token)],
        )
        .unwrap()
        .get(0);
    assert!(!verifies(&mut user, &token));
    assert!(verifies(&mut user, &rotated));
}

/// A revocation that commits while another session is inside a REPEATABLE
/// READ transaction is seen by that transaction's next verification, with
/// the cache cold or warm, and by every later one (issue 23, item 1).
#[test]
fn revocation_reaches_repeatable_read_transactions_at_once() {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database("app");
    admin.batch_execute(SETUP).unwrap();
    let mut user = cluster.connect_as("app", "app_user");
    for warm in [false, true] {
        let token = create_key(&mut admin, "web_user", "{}");
        if warm {
            assert!(verifies(&mut user, &token));
        }
        let mut tx = user
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .start()
            .unwrap();
        tx.batch_execute("SELECT 1").unwrap();
        admin
            .query_one("SELECT integration.revoke_api_key($1)", &[&key_id(&token)])
            .unwrap();
        let rows = tx
            .query("SELECT * FROM integration.verify_api_key($1)", &[&token])
            .unwrap();
        assert!(
            rows.is_empty(),
            "warm cache {warm}: the revoked key verified"
        );
        tx.commit().unwrap();
        assert!(
            !verifies(&mut user, &token),
            "warm cache {warm}: after commit"
        );
        assert_eq!(
            sqlstate(user.query("SELECT integration.authenticate($1)", &[&token])),
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        );
        let used_after_revoke: bool = admin
            .query_one(
                "SELECT coalesce(last_used_at > revoked_at, false)
                 FROM integration.api_key_store WHERE id = $1",
                &[&key_id(&token)],
            )
            .unwrap()
            .get(0);
        assert!(!used_after_revoke);
    }
}

#[test]
fn failed_verifications_in_read_only_transactions_reach_the_audit_log() {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database("app");
    admin.batch_execute(SETUP).unwrap();
    let token = create_key(&mut admin, "web_user", "{orders:read}");
    let id = key_id(&token);
    let wrong_secret = integration_core_token_with_other_secret(&token);

    let mut user = cluster.connect_as("app", "app_user");
    user.batch_execute("BEGIN TRANSACTION READ ONLY").unwrap();
    assert!(!verifies(&mut user, "not a token"));
    assert!(!verifies(&mut user, &wrong_secret));
    assert!(user
        .query(
            "SELECT id FROM integration.verify_api_key($1, 'orders:write')",
            &[&token]
        )
        .unwrap()
        .is_empty());
    assert!(verifies(&mut user, &token));
    user.batch_execute("ROLLBACK").unwrap();
    // authenticate() raises, which would roll back any row written in place.
    assert_eq!(
        sqlstate(user.query("SELECT integration.authenticate($1)", &[&wrong_secret])),
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );

    let n = wait_for_count(
        &mut admin,
        "SELECT count(*) FROM integration.audit_log WHERE NOT ok",
        4,
    );
    assert_eq!(n, 4, "{}", cluster.log_tail());
    let rows = admin
        .query(
            "SELECT actor, action, coalesce(target, ''), detail->>'reason', detail::text
             FROM integration.audit_log WHERE NOT ok ORDER BY id",
            &[],
        )
        .unwrap();
    let seen: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let target = format!("api_key:{id}");
    assert_eq!(
        seen,
        vec![
            (
                "app_user".into(),
                "api_key.verify".into(),
                String::new(),
                "malformed".into()
            ),
            (
                "app_user".into(),
                "api_key.verify".into(),
                target.clone(),
                "wrong_secret".into()
            ),
            (
                "app_user".into(),
                "api_key.verify".into(),
                target.clone(),
                "missing_scope".into()
            ),
            (
                "app_user".into(),
                "api_key.authenticate".into(),
                target,
                "wrong_secret".into()
            ),
        ]
    );
    for row in &rows {
        let detail: String = row.get(4);
        assert!(!detail.contains(&token[10..]), "no token in the audit log");
    }

    // The successful use is recorded too, without a write by the caller.
    let used = wait_for_count(
        &mut admin,
        &format!("SELECT count(*) FROM integration.api_keys WHERE id = {id} AND last_used_at IS NOT NULL"),
        1,
    );
    assert_eq!(used, 1);
}

/// A token for the same key id with another (valid-looking) secret.
fn integration_core_token_with_other_secret(token: &str) -> String {
    let id = key_id(token);
    loop {
        let other = integration_core::api_keys::generate(id);
        if other != token {
            return other;
        }
    }
}

#[test]
fn authenticate_works_as_postgrest_db_pre_request() {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database("app");
    admin
        .batch_execute(
            "CREATE ROLE web_anon NOLOGIN IN ROLE integration_user;
             CREATE ROLE web_user NOLOGIN;
             CREATE ROLE authenticator LOGIN NOINHERIT IN ROLE web_anon, web_user;
             CREATE SCHEMA api;
             CREATE TABLE api.orders (id int, owner_key bigint);
             INSERT INTO api.orders VALUES (1, NULL);
             GRANT USAGE ON SCHEMA api TO web_anon, web_user;
             GRANT SELECT ON api.orders TO web_user;
             CREATE FUNCTION api.pre_request() RETURNS void LANGUAGE sql AS $$
               SELECT integration.authenticate(
                 current_setting('request.headers', true)::json->>'x-api-key')
             $$;
             GRANT EXECUTE ON FUNCTION api.pre_request() TO web_anon;",
        )
        .unwrap();
    let token = create_key(&mut admin, "web_user", "{}");

    // What PostgREST does per request: a transaction as authenticator,
    // SET LOCAL ROLE to the anonymous role, the request GUCs, then the
    // pre-request function, then the query.
    let mut authenticator = cluster.connect_as("app", "authenticator");
    let request =
        |client: &mut Client, key: &str| -> Result<(String, String, i64), postgres::Error> {
            let mut tx = client.build_transaction().read_only(true).start()?;
            tx.batch_execute("SET LOCAL ROLE web_anon")?;
            tx.execute(
                "SELECT set_config('request.headers', $1, true)",
                &[&format!("{{\"x-api-key\": \"{key}\"}}")],
            )?;
            tx.execute("SELECT api.pre_request()", &[])?;
            let row = tx.query_one(
                "SELECT current_user::text, current_setting('integration.api_key_id'), count(*)
             FROM api.orders",
                &[],
            )?;
            Ok((row.get(0), row.get(1), row.get(2)))
        };
    let (role, key, orders) = request(&mut authenticator, &token).expect("authenticated request");
    assert_eq!(role, "web_user");
    assert_eq!(key, key_id(&token).to_string());
    assert_eq!(orders, 1);
    assert_eq!(
        sqlstate(request(&mut authenticator, "pgik_1_bad")),
        SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    );
    // The role switch ends with the transaction.
    let after: String = authenticator
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(after, "authenticator");
}
