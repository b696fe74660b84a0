//! End-to-end tests of SSO: the real sidecar in front of a real PostgreSQL
//! with pg_integration, a real OpenLDAP server and a real OpenID provider. Admin functions refuse
//! non-admins (also after SET ROLE) and hide secrets; LDAP logins by direct
//! bind and by search-then-bind over LDAPS and StartTLS, wrong passwords,
//! filter injection, role mapping from groups, the redirect allowlist;
//! session cookies, `/auth/session`, logout; signing-key rotation with old
//! tokens valid while published; `verify_jwt(token)` in SQL accepting session
//! tokens and refusing forged or expired ones; and the PostgREST path (role
//! claim → SET ROLE → row-level security). OIDC: the code flow with PKCE
//! driven through the provider's login form, tampered state, replayed
//! code, wrong nonce, HMAC-signed ID tokens, public clients, RP-initiated
//! logout, provider key rotation; and generic OAuth2 from a userinfo URL.

use integration_tests::ldap::{ADMINS_GROUP, BASE_DN, READER_DN, READER_PASSWORD};
use integration_tests::oidc_provider::{CONFIDENTIAL_SECRET, HS256_SECRET, OAUTH2_SECRET};
use integration_tests::web::{
    answer, browser as new_browser, browser_trusting, client, query, resolve, session,
    sso_database, verify_in_sql, wait_until, Answer,
};
use integration_tests::{sample, OidcProvider, PgCluster, RogueOidc, Sidecar, Slapd};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::thread::sleep;
use std::time::{Duration, Instant};

const DB: &str = "sso_e2e";

/// A cluster with the extension, a login for the sidecar, two plain roles
/// to map to, and a signing key (so the sidecar's first load is its only one
/// until a test changes something).
fn setup() -> (PgCluster, postgres::Client) {
    let cluster = PgCluster::start();
    let admin = sso_database(&cluster, DB);
    (cluster, admin)
}

fn start_sidecar(cluster: &PgCluster) -> Sidecar {
    let sidecar = Sidecar::start(&cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(|| loads(&sidecar) >= 1);
    sidecar
}

/// How many times the sidecar loaded the SSO configuration.
fn loads(sidecar: &Sidecar) -> usize {
    sidecar.log().matches("SSO configuration loaded").count()
}

/// Runs `sql` and waits for the reload it causes.
fn change(admin: &mut postgres::Client, sidecar: &Sidecar, sql: &str) {
    let before = loads(sidecar);
    admin
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {:?}", e.as_db_error()));
    wait_until(|| loads(sidecar) > before);
}

fn login(sidecar: &Sidecar, provider: &str, fields: Value) -> Answer {
    answer(
        client()
            .post(sidecar.url(&format!("/auth/{provider}/login")))
            .header("content-type", "application/json")
            .body(fields.to_string())
            .send()
            .unwrap_or_else(|e| panic!("POST login: {e}\n{}", sidecar.log())),
    )
}

fn password_login(sidecar: &Sidecar, provider: &str, user: &str, password: &str) -> Answer {
    login(
        sidecar,
        provider,
        json!({"username": user, "password": password}),
    )
}

/// Logs in and returns the session token.
fn token(sidecar: &Sidecar, provider: &str, user: &str, password: &str) -> String {
    let a = password_login(sidecar, provider, user, password);
    assert_eq!(a.status, 200, "{user}: {}\n{}", a.body, sidecar.log());
    a.body["access_token"].as_str().expect("a token").to_owned()
}

fn ldap_provider(slapd: &Slapd, name: &str) -> String {
    format!(
        "SELECT integration.create_sso_provider('{name}', 'ldap',
            jsonb_build_object('url', '{}', 'user_dn_template', 'uid={{username}},ou=people,{BASE_DN}'),
            role_mapping => '[{{\"group\": \"{ADMINS_GROUP}\", \"role\": \"app_admin\"}}]',
            default_role => 'app_user',
            allowed_redirects => ARRAY['http://127.0.0.1:9/app/'])",
        slapd.url()
    )
}

/// [`setup`] with a directory server and the LDAP provider `corp` using it.
fn ldap_setup() -> (PgCluster, postgres::Client, Slapd) {
    let (cluster, mut admin) = setup();
    let slapd = Slapd::start();
    admin
        .batch_execute(&ldap_provider(&slapd, "corp"))
        .expect("provider");
    (cluster, admin, slapd)
}

fn sql_error(result: Result<u64, postgres::Error>) -> (String, String) {
    let e = result.expect_err("refused");
    let db = e.as_db_error().expect("a server error");
    (db.code().code().to_owned(), db.message().to_owned())
}

#[test]
fn admin_functions_check_the_invoker_and_hide_secrets() {
    let (cluster, mut admin) = setup();
    admin
        .batch_execute(
            "CREATE ROLE alice LOGIN IN ROLE integration_admin;
             CREATE ROLE mallory LOGIN;
             GRANT mallory TO alice;
             GRANT USAGE ON SCHEMA integration TO mallory;",
        )
        .expect("roles");
    let create = "SELECT integration.create_sso_provider('corp', 'ldap',
        '{\"url\": \"ldap://127.0.0.1:1\", \"search_base\": \"dc=x\",
          \"search_filter\": \"(uid={username})\", \"bind_dn\": \"cn=svc\",
          \"bind_password\": \"svc-pass-123\"}', default_role => 'app_user')";

    let mut mallory = cluster.connect_as(DB, "mallory");
    let (code, _) = sql_error(mallory.execute(create, &[]));
    assert_eq!(code, "42501", "a non-admin is refused");

    // alice is an admin, but after SET ROLE she acts as mallory: refused,
    // because rights are checked against current_user, not session_user.
    let mut alice = cluster.connect_as(DB, "alice");
    alice.batch_execute("SET ROLE mallory").expect("set role");
    let (code, _) = sql_error(alice.execute(create, &[]));
    assert_eq!(code, "42501", "SET ROLE to a non-admin is refused");
    let (code, message) = sql_error(alice.execute(
        "SELECT integration._create_sso_provider('alice', 'x', 'ldap', '{}', '[]', NULL, '{}', NULL, NULL)",
        &[],
    ));
    assert_eq!(code, "42501", "{message}");
    alice.batch_execute("RESET ROLE").expect("reset role");
    // Calling the inner function directly cannot name another actor.
    let (code, message) = sql_error(alice.execute(
        "SELECT integration._create_sso_provider('postgres', 'x', 'ldap', '{}', '[]', NULL, '{}', NULL, NULL)",
        &[],
    ));
    assert_eq!(code, "42501", "{message}");

    alice
        .execute(create, &[])
        .expect("an admin creates a provider");
    let (code, message) = sql_error(alice.execute(
        "SELECT integration.alter_sso_provider('corp', default_role => 'postgres')",
        &[],
    ));
    assert_eq!(
        code, "42501",
        "superuser roles are not given to sessions: {message}"
    );
    // Nor a role that only belongs to one that reads or writes everything.
    admin
        .batch_execute("CREATE ROLE reader NOLOGIN; GRANT pg_read_all_data TO reader;")
        .expect("reader");
    let (code, message) = sql_error(alice.execute(
        "SELECT integration.alter_sso_provider('corp', default_role => 'reader')",
        &[],
    ));
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("pg_read_all_data"), "{message}");
    let (code, _) = sql_error(alice.execute(
        "SELECT integration.alter_sso_provider('corp', allowed_redirects => ARRAY['https://user@evil.example/'])",
        &[],
    ));
    assert_eq!(code, "22023");

    // The secret moved out of config; admins see only that it is set.
    let row = alice
        .query_one(
            "SELECT config, secrets_set, created_by::text FROM integration.sso_provider_list WHERE name = 'corp'",
            &[],
        )
        .expect("list");
    let config: Value = row.get(0);
    assert!(config.get("bind_password").is_none(), "{config}");
    assert_eq!(row.get::<_, Vec<String>>(1), vec!["bind_password"]);
    assert_eq!(row.get::<_, String>(2), "alice");
    let (code, _) = sql_error(alice.execute("SELECT secrets FROM integration.sso_providers", &[]));
    assert_eq!(code, "42501", "admins cannot read secrets");
    let (code, _) =
        sql_error(alice.execute("SELECT private_pem FROM integration.signing_keys", &[]));
    assert_eq!(code, "42501", "admins cannot read private keys");
    let mut sidecar_db = cluster.connect_as(DB, "integration_sidecar");
    let secrets: Value = sidecar_db
        .query_one(
            "SELECT secrets FROM integration.sso_providers WHERE name = 'corp'",
            &[],
        )
        .expect("the sidecar reads secrets")
        .get(0);
    assert_eq!(secrets, json!({"bind_password": "svc-pass-123"}));
    let (code, _) = sql_error(sidecar_db.execute(create, &[]));
    assert_eq!(code, "42501", "the sidecar is no admin");

    let audit: i64 = admin
        .query_one(
            "SELECT count(*) FROM integration.audit_log
              WHERE action = 'sso.provider.create' AND actor = 'alice' AND ok",
            &[],
        )
        .expect("audit")
        .get(0);
    assert_eq!(audit, 1);
    let leaked: i64 = admin
        .query_one(
            "SELECT count(*) FROM integration.audit_log WHERE detail::text LIKE '%svc-pass-123%'",
            &[],
        )
        .expect("audit")
        .get(0);
    assert_eq!(leaked, 0, "no secret in the audit log");
    assert!(alice
        .query_one("SELECT integration.drop_sso_provider('corp')", &[])
        .expect("drop")
        .get::<_, bool>(0));
}

#[test]
fn ldap_direct_bind_logs_in_maps_groups_and_sets_a_session_cookie() {
    let (cluster, mut admin, _slapd) = ldap_setup();
    // With no key at all, the sidecar makes the first one itself.
    admin
        .batch_execute("DELETE FROM integration.signing_keys")
        .expect("no keys");
    let sidecar = start_sidecar(&cluster);
    wait_until(|| {
        sidecar.get("/.well-known/jwks.json").1["keys"]
            .as_array()
            .is_some_and(|keys| keys.len() == 1)
    });

    let ada = password_login(&sidecar, "corp", "ada", "ada-secret");
    assert_eq!(ada.status, 200, "{}\n{}", ada.body, sidecar.log());
    assert_eq!(ada.body["role"], "app_admin", "ada is in the admins group");
    assert_eq!(ada.body["email"], "ada@example.org");
    let cookie = ada
        .cookies
        .iter()
        .find(|c| c.starts_with("pg_integration_session="))
        .expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain http public URL: {cookie}"
    );

    let bob = password_login(&sidecar, "corp", "bob", "bob-secret");
    assert_eq!(bob.status, 200, "{}", bob.body);
    assert_eq!(bob.body["role"], "app_user", "no group: the default role");

    // Wrong and empty passwords, unknown users: 401 or 400, never a session.
    for (user, password, status) in [
        ("ada", "wrong", 401),
        ("nobody", "ada-secret", 401),
        ("ada", "", 400),
        ("", "x", 400),
    ] {
        let a = password_login(&sidecar, "corp", user, password);
        assert_eq!(a.status, status, "{user}/{password}: {}", a.body);
        assert!(a.cookies.is_empty() && a.body.get("access_token").is_none());
    }
    assert_eq!(
        password_login(&sidecar, "corp", "ada", "wrong").body["error"],
        "invalid username or password"
    );

    // The session, by cookie and by bearer token.
    let token = ada.body["access_token"].as_str().expect("token");
    let by_cookie = answer(
        client()
            .get(sidecar.url("/auth/session"))
            .header("cookie", format!("pg_integration_session={token}"))
            .send()
            .expect("session"),
    );
    assert_eq!(by_cookie.status, 200, "{}", by_cookie.body);
    let claims = &by_cookie.body["session"];
    assert_eq!(claims["sub"], "corp:uid=ada,ou=people,dc=example,dc=org");
    assert_eq!(claims["idp_sub"], "uid=ada,ou=people,dc=example,dc=org");
    assert_eq!(claims["role"], "app_admin");
    assert_eq!(claims["aud"], "pg_integration");
    assert_eq!(claims["iss"], sidecar.base_url.as_str());
    assert_eq!(claims["idp"], "corp");
    assert_eq!(session(&sidecar, "not-a-token").status, 401);
    let none = answer(
        client()
            .get(sidecar.url("/auth/session"))
            .send()
            .expect("session"),
    );
    assert_eq!(none.status, 401);

    // Logout ends ada's session everywhere; bob's stays.
    assert_eq!(session(&sidecar, token).status, 200);
    let out = answer(
        client()
            .post(sidecar.url("/auth/logout"))
            .header("cookie", format!("pg_integration_session={token}"))
            .send()
            .expect("logout"),
    );
    assert_eq!(out.status, 200);
    assert_eq!(out.body["session_ended"], true, "{}", out.body);
    assert!(
        out.cookies
            .iter()
            .any(|c| c.starts_with("pg_integration_session=;") && c.contains("Max-Age=0")),
        "{:?}",
        out.cookies
    );
    let after = session(&sidecar, token);
    assert_eq!(after.status, 401, "{}", after.body);
    assert_eq!(after.body["error"], "the session was ended by a logout");
    let refused = verify_in_sql(&mut admin, token).expect_err("ended in SQL too");
    assert!(refused.contains("ended by a logout"), "{refused}");
    let bob_token = bob.body["access_token"].as_str().expect("bob's token");
    assert!(verify_in_sql(&mut admin, bob_token).is_ok());
    assert_eq!(session(&sidecar, bob_token).status, 200);
    let logouts: i64 = admin
        .query_one(
            "SELECT count(*) FROM integration.audit_log WHERE action = 'sso.logout' AND ok",
            &[],
        )
        .expect("audit")
        .get(0);
    assert_eq!(logouts, 1);
    let anonymous = answer(
        client()
            .post(sidecar.url("/auth/logout"))
            .send()
            .expect("logout"),
    );
    assert_eq!(anonymous.body["session_ended"], false, "nothing to end");

    // A browser-style login is not what LDAP does.
    let get = answer(
        client()
            .get(sidecar.url("/auth/corp/login"))
            .send()
            .expect("get"),
    );
    assert_eq!(get.status, 400, "{}", get.body);
    assert_eq!(password_login(&sidecar, "nope", "ada", "x").status, 404);
    let metrics = sidecar.metrics();
    for (outcome, expected) in [("ok", 2.0), ("bad_credentials", 3.0), ("bad_request", 3.0)] {
        let labels = [("provider", "corp"), ("outcome", outcome)];
        assert_eq!(
            sample(&metrics, "integration_sidecar_sso_logins_total", &labels),
            Some(expected),
            "{outcome}\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("provider=\"nope\""),
        "unknown providers add no series"
    );

    // Identities and audit rows; no password anywhere.
    let row = admin
        .query_one(
            "SELECT email, name, groups, role::text, logins FROM integration.identities
              WHERE provider = 'corp' AND subject = 'uid=ada,ou=people,dc=example,dc=org'",
            &[],
        )
        .expect("ada's identity");
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("ada@example.org")
    );
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("Ada Lovelace")
    );
    assert_eq!(row.get::<_, Vec<String>>(2), vec![ADMINS_GROUP.to_owned()]);
    assert_eq!(row.get::<_, String>(3), "app_admin");
    assert_eq!(row.get::<_, i64>(4), 1);
    let (ok, failed): (i64, i64) = {
        let r = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE ok), count(*) FILTER (WHERE NOT ok)
                   FROM integration.audit_log WHERE action = 'sso.login'",
                &[],
            )
            .expect("audit");
        (r.get(0), r.get(1))
    };
    assert_eq!(ok, 2);
    assert!(failed >= 5, "{failed} failures audited");
    let leaked: i64 = admin
        .query_one(
            "SELECT count(*) FROM integration.audit_log
              WHERE detail::text ~ '(ada|bob)-secret' OR detail::text LIKE '%' || $1 || '%'",
            &[&token],
        )
        .expect("audit")
        .get(0);
    assert_eq!(leaked, 0, "no password or token in the audit log");
    assert!(
        !sidecar.log().contains("ada-secret"),
        "no password in the log"
    );
}

#[test]
fn an_https_sidecar_sets_secure_session_cookies() {
    let (cluster, _admin, _slapd) = ldap_setup();
    let dir = integration_tests::scratch_dir("sso-tls");
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    integration_tests::certs::make_certificate(&dir, &ca, &cert, &key);
    let ca_pem = std::fs::read(&ca).expect("read the CA");
    let args = [
        "--tls-cert",
        cert.to_str().expect("UTF-8 path"),
        "--tls-key",
        key.to_str().expect("UTF-8 path"),
    ];
    let sidecar = Sidecar::start(
        &cluster.url(DB, "integration_sidecar"),
        &args,
        Some(&ca_pem),
    );
    wait_until(|| loads(&sidecar) >= 1);
    let response = sidecar
        .client
        .post(sidecar.url("/auth/corp/login"))
        .header("content-type", "application/json")
        .body(json!({"username": "bob", "password": "bob-secret"}).to_string())
        .send()
        .expect("POST login over https");
    let a = answer(response);
    assert_eq!(a.status, 200, "{}", a.body);
    let cookie = a
        .cookies
        .iter()
        .find(|c| c.starts_with("pg_integration_session="))
        .expect("a session cookie");
    assert!(
        cookie.ends_with("; HttpOnly; SameSite=Lax; Secure"),
        "{cookie}"
    );
    // The session's issuer is the https public URL.
    let token = a.body["access_token"].as_str().expect("a token");
    let (status, session) = {
        let r = answer(
            sidecar
                .client
                .get(sidecar.url("/auth/session"))
                .bearer_auth(token)
                .send()
                .expect("session"),
        );
        (r.status, r.body)
    };
    assert_eq!(status, 200, "{session}");
    assert!(
        session["session"]["iss"]
            .as_str()
            .is_some_and(|iss| iss.starts_with("https://127.0.0.1:")),
        "{session}"
    );
    drop(sidecar);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn redirect_to_must_be_on_the_allowlist() {
    let (cluster, _admin, _slapd) = ldap_setup();
    let sidecar = start_sidecar(&cluster);
    let good = login(
        &sidecar,
        "corp",
        json!({"username": "bob", "password": "bob-secret", "redirect_to": "http://127.0.0.1:9/app/home"}),
    );
    assert_eq!(good.status, 303, "{}", good.body);
    let location = good.location.expect("a Location");
    assert!(
        location.starts_with("http://127.0.0.1:9/app/home#access_token="),
        "{location}"
    );
    for evil in [
        "http://evil.example/app/",
        "http://127.0.0.1:9.evil.example/app/",
        "http://127.0.0.1:9@evil.example/app/",
        "//evil.example/",
        "http://127.0.0.1:9/other",
        "javascript:alert(1)",
    ] {
        let refused = login(
            &sidecar,
            "corp",
            json!({"username": "bob", "password": "bob-secret", "redirect_to": evil}),
        );
        assert_eq!(refused.status, 400, "{evil}: {}", refused.body);
        assert!(
            refused.location.is_none() && refused.cookies.is_empty(),
            "{evil}"
        );
    }
    // A login form posted by a browser from another site is refused.
    for (origin, status) in [
        ("http://evil.example", 400),
        ("http://127.0.0.1:9", 200),
        (sidecar.base_url.as_str(), 200),
    ] {
        let a = answer(
            client()
                .post(sidecar.url("/auth/corp/login"))
                .header("origin", origin)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("username=bob&password=bob-secret")
                .send()
                .expect("form post"),
        );
        assert_eq!(a.status, status, "{origin}: {}", a.body);
    }
    let get = answer(
        client()
            .get(sidecar.url("/auth/corp/login?redirect_to=http://evil.example/"))
            .send()
            .expect("get"),
    );
    assert_eq!(get.status, 400);
    assert!(
        get.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("allowlist"),
        "{}",
        get.body
    );
}

#[test]
fn ldap_search_then_bind_over_ldaps_and_starttls_escapes_the_filter() {
    let (cluster, mut admin) = setup();
    let slapd = Slapd::start();
    let ca = slapd.ca_pem.replace('\'', "''");
    admin
        .batch_execute(&format!(
            "SELECT integration.create_sso_provider('dir', 'ldap',
                jsonb_build_object('url', '{}', 'ca_cert', '{ca}',
                    'search_base', 'ou=people,{BASE_DN}',
                    'search_filter', '(&(objectClass=inetOrgPerson)(uid={{username}}))',
                    'bind_dn', '{READER_DN}', 'bind_password', '{READER_PASSWORD}'),
                role_mapping => '[{{\"group\": \"{ADMINS_GROUP}\", \"role\": \"app_admin\"}}]',
                default_role => 'app_user')",
            slapd.tls_url()
        ))
        .expect("provider");
    let sidecar = start_sidecar(&cluster);

    let ada = password_login(&sidecar, "dir", "ada", "ada-secret");
    assert_eq!(ada.status, 200, "LDAPS: {}\n{}", ada.body, sidecar.log());
    assert_eq!(ada.body["role"], "app_admin");
    // A uid with a `*` is found only as itself; a `*` typed by a user is no wildcard.
    let alice = password_login(&sidecar, "dir", "al*ce", "alice-secret");
    assert_eq!(alice.status, 200, "{}", alice.body);
    assert_eq!(
        alice.body["sub"],
        "dir:uid=al*ce,ou=people,dc=example,dc=org"
    );
    for hostile in ["a*", "*", "*)(uid=*", "ada)(|(uid=*", "*)(objectClass=*"] {
        let a = password_login(&sidecar, "dir", hostile, "ada-secret");
        assert_eq!(a.status, 401, "{hostile}: {}", a.body);
    }
    assert_eq!(
        password_login(&sidecar, "dir", "ada", "bob-secret").status,
        401
    );

    // StartTLS on the plain port, verified against the same CA.
    change(
        &mut admin,
        &sidecar,
        &format!("SELECT integration.alter_sso_provider('dir', config => '{{\"url\": \"{}\", \"starttls\": true}}')", slapd.url()),
    );
    let starttls = password_login(&sidecar, "dir", "bob", "bob-secret");
    assert_eq!(
        starttls.status,
        200,
        "StartTLS: {}\n{}",
        starttls.body,
        sidecar.log()
    );
    assert_eq!(starttls.body["role"], "app_user");

    // Without our CA the self-signed certificate is refused: 502, no session.
    change(
        &mut admin,
        &sidecar,
        "SELECT integration.alter_sso_provider('dir', config => '{\"ca_cert\": null}')",
    );
    let untrusted = password_login(&sidecar, "dir", "bob", "bob-secret");
    assert_eq!(untrusted.status, 502, "{}", untrusted.body);

    // A wrong service password is the server's problem, not the user's: 502.
    change(
        &mut admin,
        &sidecar,
        &format!(
            "SELECT integration.alter_sso_provider('dir', config => jsonb_build_object('ca_cert', '{ca}', 'bind_password', 'wrong'))"
        ),
    );
    let broken = password_login(&sidecar, "dir", "bob", "bob-secret");
    assert_eq!(broken.status, 502, "{}", broken.body);
    assert!(
        !broken.body.to_string().contains("wrong"),
        "{}",
        broken.body
    );
}

#[test]
fn rotated_keys_keep_old_tokens_valid_while_published_and_sql_verifies_sessions() {
    let (cluster, mut admin, _slapd) = ldap_setup();
    let sidecar = start_sidecar(&cluster);
    let old = token(&sidecar, "corp", "bob", "bob-secret");
    let claims = verify_in_sql(&mut admin, &old).expect("SQL verifies a session token");
    assert_eq!(claims["role"], "app_user");
    let (_, jwks) = sidecar.get("/.well-known/jwks.json");
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
    let sql_jwks: Value = admin
        .query_one("SELECT integration.session_jwks()", &[])
        .expect("jwks")
        .get(0);
    assert_eq!(jwks, sql_jwks, "the sidecar and SQL publish the same keys");

    // Rotation: a new key signs, the old one stays published.
    let before = loads(&sidecar);
    let new_kid: String = admin
        .query_one("SELECT integration.rotate_signing_key()", &[])
        .expect("rotate")
        .get(0);
    wait_until(|| loads(&sidecar) > before);
    let (_, jwks) = sidecar.get("/.well-known/jwks.json");
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2), "{jwks}");
    let new = token(&sidecar, "corp", "bob", "bob-secret");
    let header = |t: &str| -> Value {
        use base64::Engine;
        let part = t.split('.').next().unwrap_or_default();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .expect("base64url header"),
        )
        .expect("JSON header")
    };
    assert_eq!(header(&new)["kid"], new_kid.as_str());
    assert_eq!(header(&new)["alg"], "EdDSA");
    assert_ne!(header(&old)["kid"], new_kid.as_str());
    assert_eq!(session(&sidecar, &old).status, 200, "old token still valid");
    assert!(verify_in_sql(&mut admin, &old).is_ok());

    // Rotating with no grace unpublishes the key at once: its tokens stop verifying.
    change(
        &mut admin,
        &sidecar,
        "SELECT integration.rotate_signing_key(grace => '0')",
    );
    assert_eq!(session(&sidecar, &new).status, 401);
    let refused = verify_in_sql(&mut admin, &new).expect_err("unpublished key");
    assert!(refused.contains("kid"), "{refused}");
    assert_eq!(
        session(&sidecar, &old).status,
        200,
        "the first key is still in its window"
    );

    // Forgeries: an expired token signed with the real key, a token signed
    // by another key under the real kid, and `alg: none`.
    let (kid, pem): (String, String) = {
        let r = admin
            .query_one(
                "SELECT kid, private_pem FROM integration.signing_keys WHERE retired_at IS NULL",
                &[],
            )
            .expect("active key");
        (r.get(0), r.get(1))
    };
    let expired: String = admin
        .query_one(
            "SELECT integration.sign_jwt(jsonb_build_object('sub', 'x', 'role', 'app_user',
                 'aud', 'pg_integration', 'exp', extract(epoch FROM now())::bigint - 3600), $1, 'EdDSA', kid => $2)",
            &[&pem, &kid],
        )
        .expect("sign")
        .get(0);
    assert!(verify_in_sql(&mut admin, &expired)
        .expect_err("expired")
        .contains("expired"));
    assert_eq!(session(&sidecar, &expired).status, 401);
    let other_pem: String = admin
        .query_one(
            "SELECT private_pem FROM integration._generate_signing_key()",
            &[],
        )
        .expect("another key")
        .get(0);
    let forged: String = admin
        .query_one(
            "SELECT integration.sign_jwt(jsonb_build_object('sub', 'x', 'role', 'app_admin',
                 'aud', 'pg_integration'), $1, 'EdDSA', '1 hour', $2)",
            &[&other_pem, &kid],
        )
        .expect("sign")
        .get(0);
    assert!(verify_in_sql(&mut admin, &forged)
        .expect_err("forged")
        .contains("signature"));
    assert_eq!(session(&sidecar, &forged).status, 401);
    let parts: Vec<&str> = new.split('.').collect();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
    assert!(verify_in_sql(&mut admin, &unsigned).is_err());
    assert_eq!(session(&sidecar, &unsigned).status, 401);
}

#[test]
fn a_session_token_drives_row_level_security_the_way_postgrest_does() {
    let (cluster, mut admin, _slapd) = ldap_setup();
    admin
        .batch_execute(
            "CREATE TABLE notes (owner text NOT NULL, body text NOT NULL);
             ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own_notes ON notes
                 USING (owner = current_setting('request.jwt.claims', true)::jsonb->>'sub');
             GRANT SELECT ON notes TO app_user, app_admin;
             INSERT INTO notes VALUES
                 ('corp:uid=bob,ou=people,dc=example,dc=org', 'bob''s note'),
                 ('corp:uid=ada,ou=people,dc=example,dc=org', 'ada''s note');
             CREATE ROLE authenticator LOGIN;
             GRANT app_user, app_admin, integration_user TO authenticator;",
        )
        .expect("schema");
    let sidecar = start_sidecar(&cluster);
    let bob = token(&sidecar, "corp", "bob", "bob-secret");

    // What PostgREST does with jwt-role-claim-key = '.role': verify, publish
    // the claims in request.jwt.claims, SET LOCAL ROLE to the role claim.
    let mut authenticator = cluster.connect_as(DB, "authenticator");
    let mut tx = authenticator.transaction().expect("begin");
    let claims: Value = tx
        .query_one("SELECT integration.verify_jwt($1)", &[&bob])
        .expect("verify")
        .get(0);
    tx.execute(
        "SELECT set_config('request.jwt.claims', $1, true)",
        &[&claims.to_string()],
    )
    .expect("claims");
    let role = claims["role"].as_str().expect("a role claim");
    assert_eq!(role, "app_user");
    tx.batch_execute(&format!("SET LOCAL ROLE {role}"))
        .expect("set role");
    let bodies: Vec<String> = tx
        .query("SELECT body FROM notes", &[])
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(bodies, vec!["bob's note".to_owned()]);
    tx.rollback().expect("rollback");
}

// ---- OIDC and generic OAuth2 against oidc-provider ----

/// Follows redirects from `url` until one points at the sidecar (returned,
/// not visited) or a page answers; panics on a page.
fn follow_to_sidecar(browser: &Client, sidecar: &Sidecar, mut url: String) -> String {
    for _ in 0..10 {
        let a = answer(browser.get(&url).send().expect("GET"));
        let location = a
            .location
            .unwrap_or_else(|| panic!("{url} answered {} {}", a.status, a.body));
        url = resolve(&url, &location);
        if url.starts_with(&sidecar.base_url) {
            return url;
        }
    }
    panic!("too many redirects");
}

/// Starts a login at the sidecar; returns the authorization URL at the provider.
fn start_login(browser: &Client, sidecar: &Sidecar, provider: &str) -> String {
    let a = answer(
        browser
            .get(sidecar.url(&format!("/auth/{provider}/login")))
            .send()
            .expect("GET login"),
    );
    assert_eq!(a.status, 302, "{}\n{}", a.body, sidecar.log());
    a.location.expect("a Location")
}

/// Logs in at the provider's form from the authorization URL; returns the
/// callback URL the provider sends the browser back to (not yet visited).
fn login_at_provider(
    browser: &Client,
    sidecar: &Sidecar,
    authorize: &str,
    user: &str,
    password: &str,
) -> String {
    let mut url = authorize.to_owned();
    // The provider redirects to its interaction page, which shows the form.
    let form_url = loop {
        let a = answer(browser.get(&url).send().expect("GET"));
        match a.location {
            Some(location) => url = resolve(&url, &location),
            None => {
                assert_eq!(a.status, 200, "{url}: {}", a.text);
                break url;
            }
        }
        assert!(
            !url.starts_with(&sidecar.base_url),
            "the provider skipped its login form (a session of an earlier login?)"
        );
    };
    let a = answer(
        browser
            .post(format!("{form_url}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("login={user}&password={password}"))
            .send()
            .expect("POST the login form"),
    );
    let next = resolve(
        &form_url,
        &a.location
            .unwrap_or_else(|| panic!("form answered {}: {}", a.status, a.text)),
    );
    follow_to_sidecar(browser, sidecar, next)
}

fn oidc_login(
    browser: &Client,
    sidecar: &Sidecar,
    provider: &str,
    user: &str,
    password: &str,
) -> Answer {
    let authorize = start_login(browser, sidecar, provider);
    let callback = login_at_provider(browser, sidecar, &authorize, user, password);
    answer(browser.get(&callback).send().expect("GET callback"))
}

fn with_query(url: &str, name: &str, value: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).expect("URL");
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// A cluster, the provider and a sidecar port known to both, and the SSO providers.
fn oidc_setup() -> (PgCluster, postgres::Client, OidcProvider, u16) {
    let (cluster, mut admin) = setup();
    let port = integration_tests::free_port();
    let idp = OidcProvider::start(&format!("http://127.0.0.1:{port}"));
    let issuer = idp.issuer();
    let mapping = r#"'[{"group": "admins", "role": "app_admin"}]'"#;
    admin
        .batch_execute(&format!(
            "SELECT integration.create_sso_provider('oidc', 'oidc',
                 jsonb_build_object('issuer', '{issuer}', 'allow_http', true, 'client_id', 'confidential',
                     'client_secret', '{CONFIDENTIAL_SECRET}', 'scopes', jsonb_build_array('openid', 'email', 'profile', 'groups'),
                     'post_logout_redirect_uri', 'http://127.0.0.1:{port}/'),
                 role_mapping => {mapping}, default_role => 'app_user',
                 allowed_redirects => ARRAY['http://127.0.0.1:{port}/app/']);
             SELECT integration.create_sso_provider('oidc-public', 'oidc',
                 jsonb_build_object('issuer', '{issuer}', 'allow_http', true, 'client_id', 'public',
                     'scopes', jsonb_build_array('openid', 'email', 'groups')),
                 role_mapping => {mapping}, default_role => 'app_user');
             SELECT integration.create_sso_provider('oidc-hs256', 'oidc',
                 jsonb_build_object('issuer', '{issuer}', 'allow_http', true, 'client_id', 'hs256', 'client_secret', '{HS256_SECRET}'),
                 default_role => 'app_user');
             SELECT integration.create_sso_provider('generic', 'oauth2',
                 jsonb_build_object('authorize_url', '{issuer}/auth', 'token_url', '{issuer}/token',
                     'userinfo_url', '{issuer}/me', 'client_id', 'oauth2', 'client_secret', '{OAUTH2_SECRET}',
                     'allow_http', true,
                     'scopes', jsonb_build_array('openid', 'email', 'profile', 'groups')),
                 role_mapping => {mapping});"
        ))
        .expect("providers");
    (cluster, admin, idp, port)
}

#[test]
fn oidc_code_flow_with_pkce_logs_in_maps_groups_and_logs_out_at_the_provider() {
    let (cluster, mut admin, idp, port) = oidc_setup();
    let sidecar = Sidecar::start_on(port, &cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(|| loads(&sidecar) >= 1);

    let browser = new_browser();
    let authorize = start_login(&browser, &sidecar, "oidc");
    assert!(
        authorize.starts_with(&format!("{}/auth?", idp.issuer())),
        "{authorize}"
    );
    assert_eq!(
        query(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(query(&authorize, "response_type").as_deref(), Some("code"));
    assert!(query(&authorize, "nonce").is_some_and(|n| n.len() >= 16));
    assert!(query(&authorize, "state").is_some_and(|s| s.len() >= 32));
    let callback = login_at_provider(&browser, &sidecar, &authorize, "ada", "ada-password");
    let ada = answer(browser.get(&callback).send().expect("callback"));
    assert_eq!(ada.status, 200, "{}\n{}", ada.body, sidecar.log());
    assert_eq!(ada.body["role"], "app_admin", "ada is in the admins group");
    assert_eq!(ada.body["sub"], "oidc:ada");
    assert_eq!(ada.body["idp_sub"], "ada");
    assert_eq!(ada.body["email"], "ada@example.org");
    let row = admin
        .query_one(
            "SELECT groups, name, claims FROM integration.identities WHERE provider = 'oidc' AND subject = 'ada'",
            &[],
        )
        .expect("identity");
    assert_eq!(row.get::<_, Vec<String>>(0), vec!["admins".to_owned()]);
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("Ada Lovelace")
    );
    let claims: Value = row.get(2);
    assert!(
        claims.get("nonce").is_none() && claims["iss"] == idp.issuer().as_str(),
        "{claims}"
    );

    // The session is the browser's now, and logout points at the provider's end_session_endpoint.
    let current = answer(
        browser
            .get(sidecar.url("/auth/session"))
            .send()
            .expect("session"),
    );
    assert_eq!(current.status, 200, "{}", current.body);
    assert_eq!(current.body["session"]["idp"], "oidc");
    let out = answer(
        browser
            .post(sidecar.url("/auth/logout"))
            .send()
            .expect("logout"),
    );
    let end = out.body["end_session_url"]
        .as_str()
        .expect("RP-initiated logout")
        .to_owned();
    assert!(
        end.starts_with(&format!("{}/session/end?", idp.issuer())),
        "{end}"
    );
    assert_eq!(query(&end, "client_id").as_deref(), Some("confidential"));
    let confirm = answer(browser.get(&end).send().expect("end session"));
    assert_eq!(
        confirm.status, 200,
        "the provider asks to confirm the logout"
    );
    let gone = answer(
        browser
            .get(sidecar.url("/auth/session"))
            .send()
            .expect("session"),
    );
    assert_eq!(gone.status, 401, "the cookie was cleared");

    // Each person logs in from a browser of their own (the provider keeps a session).
    let browser = new_browser();
    let bob = oidc_login(&browser, &sidecar, "oidc", "bob", "bob-password");
    assert_eq!(bob.status, 200, "{}", bob.body);
    assert_eq!(bob.body["role"], "app_user");

    // Wrong password: the provider answers access_denied, the sidecar 401.
    let wrong = oidc_login(&new_browser(), &sidecar, "oidc", "ada", "nope");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.body.get("access_token").is_none());

    // A redirect_to on the allowlist gets the token in the fragment.
    let browser = new_browser();
    let a = answer(
        browser
            .get(sidecar.url(&format!(
                "/auth/oidc/login?redirect_to=http://127.0.0.1:{port}/app/home"
            )))
            .send()
            .expect("login"),
    );
    let authorize = a.location.expect("to the provider");
    let callback = login_at_provider(&browser, &sidecar, &authorize, "bob", "bob-password");
    let done = answer(browser.get(&callback).send().expect("callback"));
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(
        done.location
            .as_deref()
            .unwrap_or_default()
            .starts_with(&format!("http://127.0.0.1:{port}/app/home#access_token=")),
        "{:?}",
        done.location
    );
}

#[test]
fn oidc_refuses_tampered_state_replayed_codes_wrong_nonces_and_hmac_id_tokens() {
    let (cluster, _admin, _idp, port) = oidc_setup();
    let sidecar = Sidecar::start_on(port, &cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(|| loads(&sidecar) >= 1);

    // Tampered state: refused before the code is used; the same browser may not retry it.
    let browser = new_browser();
    let authorize = start_login(&browser, &sidecar, "oidc");
    let callback = login_at_provider(&browser, &sidecar, &authorize, "ada", "ada-password");
    let tampered = answer(
        browser
            .get(with_query(&callback, "state", "forged-state-value"))
            .send()
            .expect("callback"),
    );
    assert_eq!(tampered.status, 400, "{}", tampered.body);
    assert!(
        tampered.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("state"),
        "{}",
        tampered.body
    );
    let spent = answer(browser.get(&callback).send().expect("callback"));
    assert_eq!(
        spent.status, 400,
        "the login cookie is spent: {}",
        spent.body
    );

    // A callback without the login cookie (another browser): refused.
    let browser = new_browser();
    let authorize = start_login(&browser, &sidecar, "oidc");
    let callback = login_at_provider(&browser, &sidecar, &authorize, "ada", "ada-password");
    let stranger = answer(client().get(&callback).send().expect("callback"));
    assert_eq!(stranger.status, 400, "{}", stranger.body);

    // Replayed code: the same callback with the same login cookie, twice.
    let plain = client();
    let started = answer(
        plain
            .get(sidecar.url("/auth/oidc/login"))
            .send()
            .expect("login"),
    );
    let cookie = started
        .cookies
        .iter()
        .find_map(|c| {
            c.split(';')
                .next()
                .filter(|kv| kv.starts_with("pg_integration_login="))
        })
        .expect("a login cookie")
        .to_owned();
    // The provider's side runs in a second cookie jar; the sidecar's cookie is sent by hand.
    let idp_browser = new_browser();
    let callback = login_at_provider(
        &idp_browser,
        &sidecar,
        &started.location.expect("location"),
        "bob",
        "bob-password",
    );
    let first = answer(
        plain
            .get(&callback)
            .header("cookie", &cookie)
            .send()
            .expect("callback"),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let replay = answer(
        plain
            .get(&callback)
            .header("cookie", &cookie)
            .send()
            .expect("callback"),
    );
    // The state is spent before the code goes anywhere (the provider would
    // refuse the used code too).
    assert_eq!(
        replay.status, 400,
        "the sidecar refuses a spent state: {}",
        replay.body
    );
    assert!(replay.body.get("access_token").is_none());

    // Wrong nonce: the provider is asked for another nonce than the one the
    // sidecar keeps; the ID token carries it and is refused.
    let browser = new_browser();
    let authorize = start_login(&browser, &sidecar, "oidc");
    let other_nonce = with_query(&authorize, "nonce", "a-nonce-the-sidecar-never-made");
    let callback = login_at_provider(&browser, &sidecar, &other_nonce, "ada", "ada-password");
    let wrong_nonce = answer(browser.get(&callback).send().expect("callback"));
    assert_eq!(wrong_nonce.status, 401, "{}", wrong_nonce.body);
    assert!(sidecar.log().contains("nonce"), "the reason is logged");

    // An ID token signed with the client secret (HS256) is not accepted.
    let browser = new_browser();
    let hs = oidc_login(&browser, &sidecar, "oidc-hs256", "ada", "ada-password");
    assert_eq!(hs.status, 401, "{}\n{}", hs.body, sidecar.log());
    assert!(
        sidecar.log().contains("ID token was refused"),
        "{}",
        sidecar.log()
    );
}

#[test]
fn public_clients_generic_oauth2_and_provider_key_rotation() {
    let (cluster, mut admin, idp, port) = oidc_setup();
    let sidecar = Sidecar::start_on(port, &cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(|| loads(&sidecar) >= 1);
    let browser = new_browser();

    let public = oidc_login(&browser, &sidecar, "oidc-public", "ada", "ada-password");
    assert_eq!(public.status, 200, "{}\n{}", public.body, sidecar.log());
    assert_eq!(public.body["role"], "app_admin");

    // Generic OAuth2: identity from the userinfo URL; no default role, so
    // bob (no group) is refused with 403 and no session.
    let browser = new_browser();
    let authorize = start_login(&browser, &sidecar, "generic");
    assert_eq!(
        query(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query(&authorize, "nonce"),
        None,
        "plain OAuth2 has no nonce"
    );
    let callback = login_at_provider(&browser, &sidecar, &authorize, "ada", "ada-password");
    let ada = answer(browser.get(&callback).send().expect("callback"));
    assert_eq!(ada.status, 200, "{}\n{}", ada.body, sidecar.log());
    assert_eq!(ada.body["role"], "app_admin");
    assert_eq!(ada.body["email"], "ada@example.org");
    let browser = new_browser();
    let bob = oidc_login(&browser, &sidecar, "generic", "bob", "bob-password");
    assert_eq!(bob.status, 403, "{}", bob.body);
    assert!(bob
        .cookies
        .iter()
        .all(|c| !c.starts_with("pg_integration_session=")));
    let refused: i64 = admin
        .query_one(
            "SELECT count(*) FROM integration.audit_log
              WHERE action = 'sso.login' AND NOT ok AND target = 'sso_provider:generic'",
            &[],
        )
        .expect("audit")
        .get(0);
    assert_eq!(refused, 1);

    // The provider restarts with a new signing key. The sidecar cached the
    // old JWKS for oidc-public at the first login; it must fetch the new one.
    let idp = idp.restart();
    let browser = new_browser();
    let after = oidc_login(&browser, &sidecar, "oidc-public", "bob", "bob-password");
    assert_eq!(
        after.status,
        200,
        "{}\n{}\n{}",
        after.body,
        sidecar.log(),
        idp.log()
    );
    assert_eq!(after.body["role"], "app_user");
}

#[test]
fn oidc_over_https_trusts_the_configured_ca_and_nothing_else() {
    let (cluster, mut admin) = setup();
    let port = integration_tests::free_port();
    let idp = OidcProvider::start_tls(&format!("http://127.0.0.1:{port}"));
    let ca = idp.ca_pem.clone().expect("a CA");
    let issuer = idp.issuer();
    assert!(issuer.starts_with("https://"), "{issuer}");
    admin
        .execute(
            "SELECT integration.create_sso_provider('oidc', 'oidc',
                 jsonb_build_object('issuer', $1::text, 'client_id', 'confidential',
                     'client_secret', $2::text, 'ca_cert', $3::text,
                     'scopes', jsonb_build_array('openid', 'email', 'groups')),
                 role_mapping => '[{\"group\": \"admins\", \"role\": \"app_admin\"}]')",
            &[&issuer, &CONFIDENTIAL_SECRET, &ca],
        )
        .expect("the provider with our CA");
    admin
        .execute(
            "SELECT integration.create_sso_provider('oidc-public', 'oidc',
                 jsonb_build_object('issuer', $1::text, 'client_id', 'public'), default_role => 'app_user')",
            &[&issuer],
        )
        .expect("the provider without it");
    let sidecar = Sidecar::start_on(port, &cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(|| loads(&sidecar) >= 1);

    let browser = browser_trusting(Some(&ca));
    let ada = oidc_login(&browser, &sidecar, "oidc", "ada", "ada-password");
    assert_eq!(ada.status, 200, "{}\n{}", ada.body, sidecar.log());
    assert_eq!(ada.body["role"], "app_admin");

    // Without ca_cert the provider's certificate is not trusted: 502, no redirect.
    let untrusted = answer(
        browser
            .get(sidecar.url("/auth/oidc-public/login"))
            .send()
            .expect("login"),
    );
    assert_eq!(untrusted.status, 502, "{}", untrusted.body);
    assert!(
        untrusted.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("discovery"),
        "{}",
        untrusted.body
    );
}

/// A self-signed P-256 certificate standing for a SAML IdP's signing key
/// (nothing is signed before the ACS exists).
const SAML_IDP_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBgjCCASegAwIBAgIUO73co6/uLdveOVqoPV2edQcCTi0wCgYIKoZIzj0EAwIw
FTETMBEGA1UEAwwKdGVzdC1pZHAtMTAgFw0yNjEyMDYxNTE5MTdaGA8yMTI2MTEx
MjE1MTkxN1owFTETMBEGA1UEAwwKdGVzdC1pZHAtMTBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABOaI7OSsMCkg1YK397A1duYEEvOuA/aak9Ezp7tMJem3aOQcfq4v
6KRYQuOfhSBKd4WBN4pspOdpT+Px6mHHIuSjUzBRMB0GA1UdDgQWBBQCK56Y8Bn4
oyOmxrMgRtoSR+h4TzAfBgNVHSMEGDAWgBQCK56Y8Bn4oyOmxrMgRtoSR+h4TzAP
BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQDM05clhDFUyO42bVWs
On7ISWFx/IoYQVOzlXQ7HJyUrAIhAIrpJPZXqZP7MFJ9S/L5PFrT1HJo6cpS8937
4+1XHtkH
-----END CERTIFICATE-----
";

/// The XML of the AuthnRequest a HTTP-Redirect URL carries.
fn saml_request(url: &str) -> String {
    use base64::Engine;
    use std::io::Read;
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(query(url, "SAMLRequest").expect("SAMLRequest"))
        .expect("base64");
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(deflated.as_slice())
        .read_to_string(&mut xml)
        .expect("deflated XML");
    xml
}

#[test]
fn a_saml_provider_made_in_sql_serves_sp_metadata_and_redirects_with_an_authn_request() {
    let (cluster, mut admin) = setup();
    let create =
        "SELECT integration.create_sso_provider($1, 'saml', $2::jsonb, default_role => 'app_user')";
    let corp = json!({
        "idp_entity_id": "https://idp.example.net/saml",
        "idp_sso_url": "https://idp.example.net/sso",
        "idp_certificates": [SAML_IDP_CERT],
        "name_id_format": "emailAddress",
    });
    admin.execute(create, &[&"corp", &corp]).expect("corp");
    // SQL refuses a config that could verify nothing; stored behind its
    // back, the sidecar refuses to use it too.
    let unverifiable = json!({
        "idp_entity_id": "https://idp.example.net/saml",
        "idp_sso_url": "https://idp.example.net/sso",
    });
    let e = admin
        .execute(create, &[&"nocert", &unverifiable])
        .expect_err("refused in SQL");
    assert!(
        format!("{:?}", e.as_db_error()).contains("idp_certificates"),
        "{e:?}"
    );
    admin
        .execute(
            "INSERT INTO integration.sso_providers (name, kind, config, default_role, created_by)
             VALUES ('nocert', 'saml', $1::jsonb, 'app_user', current_user)",
            &[&unverifiable],
        )
        .expect("nocert");
    let sidecar = start_sidecar(&cluster);
    let base = &sidecar.base_url;

    let response = client()
        .get(sidecar.url("/auth/corp/metadata"))
        .send()
        .expect("GET metadata");
    assert_eq!(
        response.headers()["content-type"],
        "application/samlmetadata+xml"
    );
    let a = answer(response);
    assert_eq!(a.status, 200, "{}\n{}", a.text, sidecar.log());
    assert!(
        a.text
            .contains(&format!(r#"entityID="{base}/auth/corp/metadata""#)),
        "{}",
        a.text
    );
    assert!(a.text.contains(&format!(
        r#"<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{base}/auth/corp/callback""#
    )), "{}", a.text);
    assert!(a.text.contains(
        "<md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>"
    ), "{}", a.text);

    let browser = new_browser();
    let a = answer(
        browser
            .get(sidecar.url("/auth/corp/login"))
            .send()
            .expect("GET login"),
    );
    assert_eq!(a.status, 302, "{}\n{}", a.text, sidecar.log());
    let location = a.location.expect("a Location");
    assert!(
        location.starts_with("https://idp.example.net/sso?SAMLRequest="),
        "{location}"
    );
    let relay_state = query(&location, "RelayState").expect("RelayState");
    assert!(relay_state.len() >= 32, "{relay_state}");
    assert!(
        a.cookies
            .iter()
            .any(|c| c.starts_with("pg_integration_login=")),
        "{:?}",
        a.cookies
    );
    let xml = saml_request(&location);
    for expected in [
        r#"Destination="https://idp.example.net/sso""#.to_owned(),
        format!(r#"AssertionConsumerServiceURL="{base}/auth/corp/callback""#),
        format!(">{base}/auth/corp/metadata</saml2:Issuer>"),
        r#"Format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress""#.to_owned(),
    ] {
        assert!(xml.contains(&expected), "{expected} in {xml}");
    }
    // Each login its own request.
    let again = answer(
        client()
            .get(sidecar.url("/auth/corp/login"))
            .send()
            .expect("GET login"),
    );
    let id = |xml: &str| {
        xml.split(" ID=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .map(str::to_owned)
    };
    let other = saml_request(&again.location.expect("a Location"));
    assert!(id(&xml).is_some());
    assert_ne!(id(&xml), id(&other));

    // What is posted is no signed SAML Response: no session.
    let a = answer(
        browser
            .post(sidecar.url("/auth/corp/callback"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("SAMLResponse=PHg%2B&RelayState={relay_state}"))
            .send()
            .expect("POST callback"),
    );
    assert!((400..500).contains(&a.status), "{}: {}", a.status, a.text);
    assert!(a.body.get("access_token").is_none(), "{}", a.text);

    // A provider without a signing certificate is not used, and says why.
    for path in ["/auth/nocert/metadata", "/auth/nocert/login"] {
        let a = answer(client().get(sidecar.url(path)).send().expect("GET"));
        assert_eq!(a.status, 503, "{path}: {}", a.text);
        assert!(a.text.contains("idp_certificates"), "{path}: {}", a.text);
    }
    let a = answer(
        client()
            .get(sidecar.url("/auth/none/metadata"))
            .send()
            .expect("GET"),
    );
    assert_eq!(a.status, 404, "{}", a.text);
}

/// Peak resident memory of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

#[test]
fn a_login_post_is_checked_for_its_provider_and_size_before_its_body_is_parsed() {
    let (cluster, mut admin) = setup();
    // Neither server exists: nothing here may get as far as contacting one.
    admin
        .batch_execute(
            "SELECT integration.create_sso_provider('generic', 'oauth2',
                 jsonb_build_object('authorize_url', 'http://127.0.0.1:9/auth',
                     'token_url', 'http://127.0.0.1:9/token', 'userinfo_url', 'http://127.0.0.1:9/me',
                     'client_id', 'c', 'client_secret', 's', 'allow_http', true),
                 default_role => 'app_user');
             SELECT integration.create_sso_provider('dir', 'ldap',
                 jsonb_build_object('url', 'ldap://127.0.0.1:9',
                                    'user_dn_template', 'uid={username},ou=people,dc=x'),
                 default_role => 'app_user');",
        )
        .expect("providers");
    let sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=2"));
    let post = |provider: &str, body: Vec<u8>| {
        answer(
            client()
                .post(sidecar.url(&format!("/auth/{provider}/login")))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .unwrap_or_else(|e| panic!("POST login: {e}\n{}", sidecar.log())),
        )
    };
    // ~1 MiB of tiny objects: parsed, each costs far more than its 7 bytes.
    let mut amplifier = b"[".to_vec();
    while amplifier.len() < 1_000_000 {
        amplifier.extend_from_slice(br#"{"":0},"#);
    }
    amplifier.extend_from_slice(br#"{"":0}]"#);
    let peak_before = peak_rss_kib(sidecar.pid());
    for _ in 0..4 {
        let a = post("generic", amplifier.clone());
        assert_eq!(a.status, 400, "{}", a.text);
        assert!(
            a.body["error"]
                .as_str()
                .is_some_and(|e| e.contains("GET /auth/{provider}/login")),
            "a browser provider says how it logs in: {}",
            a.text
        );
        let a = post("dir", amplifier.clone());
        assert_eq!(
            a.status, 413,
            "a login body is a few KB at most: {}",
            a.text
        );
    }
    let peak_after = peak_rss_kib(sidecar.pid());
    eprintln!(
        "sidecar peak RSS: {peak_before} KiB before, {peak_after} KiB after 8 MiB of login bodies"
    );
    assert!(
        peak_after < peak_before + 32 * 1024,
        "login bodies were parsed: peak RSS went from {peak_before} to {peak_after} KiB"
    );
    // A small form still reaches the directory (which is not there).
    let a = post(
        "dir",
        serde_json::to_vec(&json!({"username": "ada", "password": "x"})).expect("json"),
    );
    assert!(
        ![400, 413].contains(&a.status),
        "a small login is not refused for its size: {} {}",
        a.status,
        a.text
    );
}

#[test]
fn logout_checks_the_origin_and_never_claims_success_without_the_database() {
    let (cluster, mut admin, _slapd) = ldap_setup();
    let sidecar = start_sidecar(&cluster);
    let token = token(&sidecar, "corp", "ada", "ada-secret");
    let logout = |origin: Option<&str>| {
        let mut request = client()
            .post(sidecar.url("/auth/logout"))
            .header("cookie", format!("pg_integration_session={token}"));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        answer(request.send().expect("logout"))
    };
    // Another origin, even on the same host, cannot log the user out.
    for origin in ["http://evil.example", "http://127.0.0.1:9"] {
        let a = logout(Some(origin));
        assert_eq!(a.status, 403, "{origin}: {}", a.text);
        assert!(a.cookies.is_empty(), "{origin}: the cookie was cleared");
    }
    assert_eq!(session(&sidecar, &token).status, 200);

    // The database is unavailable: the end of the session cannot be recorded.
    admin
        .batch_execute(
            "ALTER ROLE integration_sidecar NOLOGIN;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE usename = 'integration_sidecar';",
        )
        .expect("NOLOGIN");
    let a = logout(Some(&sidecar.base_url));
    assert_eq!(a.status, 503, "{}", a.text);
    assert_ne!(a.body["logged_out"], true, "{}", a.text);
    assert!(
        a.cookies.is_empty(),
        "the cookie was cleared: {:?}",
        a.cookies
    );

    admin
        .batch_execute("ALTER ROLE integration_sidecar LOGIN")
        .expect("LOGIN");
    // Pooled connections the server ended are dropped as they are noticed.
    let mut last = None;
    wait_until(|| {
        let a = logout(Some(&sidecar.base_url));
        let done = a.status != 503;
        last = Some(a);
        done
    });
    let a = last.expect("an answer");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["session_ended"], true, "{}", a.text);
    assert_eq!(session(&sidecar, &token).status, 401);
}

// ---- a misbehaving OpenID provider of ours (tests/src/rogue_oidc.rs) ----

/// Creates OIDC provider `name` for the rogue provider (over http, as tests do).
fn rogue_provider(admin: &mut postgres::Client, name: &str, idp: &RogueOidc) {
    admin
        .batch_execute(&format!(
            "SELECT integration.create_sso_provider('{name}', 'oidc',
                 jsonb_build_object('issuer', '{}', 'client_id', 'rogue-client',
                     'client_secret', 'rogue-secret-0123456789', 'allow_http', true),
                 default_role => 'app_user');",
            idp.issuer()
        ))
        .expect("provider");
}

/// A whole browser login at the rogue provider (which asks for no password).
fn rogue_login(sidecar: &Sidecar, provider: &str) -> Answer {
    let browser = new_browser();
    let a = answer(
        browser
            .get(sidecar.url(&format!("/auth/{provider}/login")))
            .send()
            .expect("GET login"),
    );
    let Some(authorize) = a.location else {
        return a;
    };
    let callback = follow_to_sidecar(&browser, sidecar, authorize);
    answer(browser.get(&callback).send().expect("GET callback"))
}

#[test]
fn answers_of_an_identity_provider_are_read_only_up_to_a_bound() {
    let (cluster, mut admin) = setup();
    let idp = RogueOidc::start();
    rogue_provider(&mut admin, "rogue", &idp);
    rogue_provider(&mut admin, "rogue-jwks", &idp);
    let sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=2"));

    let fine = rogue_login(&sidecar, "rogue");
    assert_eq!(fine.status, 200, "{}\n{}", fine.text, sidecar.log());
    assert_eq!(fine.body["role"], "app_user");

    // 128 MiB of token response: refused without being held.
    idp.behave(|b| b.token_padding = 128 << 20);
    let peak_before = peak_rss_kib(sidecar.pid());
    let huge = rogue_login(&sidecar, "rogue");
    let peak_after = peak_rss_kib(sidecar.pid());
    eprintln!(
        "sidecar peak RSS: {peak_before} KiB before, {peak_after} KiB after a 128 MiB token response"
    );
    assert_eq!(huge.status, 502, "{}", huge.text);
    assert!(huge.body.get("access_token").is_none(), "{}", huge.text);
    assert!(
        huge.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than")),
        "{}",
        huge.text
    );
    assert!(
        peak_after < peak_before + 32 * 1024,
        "the token response was held: peak RSS went from {peak_before} to {peak_after} KiB"
    );

    // A JWKS as large, at discovery (another provider: its own cache).
    idp.behave(|b| {
        b.token_padding = 0;
        b.jwks_padding = 128 << 20;
    });
    let huge = rogue_login(&sidecar, "rogue-jwks");
    assert_eq!(huge.status, 502, "{}", huge.text);
    let peak_jwks = peak_rss_kib(sidecar.pid());
    assert!(
        peak_jwks < peak_before + 32 * 1024,
        "the JWKS was held: peak RSS went from {peak_before} to {peak_jwks} KiB"
    );
    let refusals: i64 = admin
        .query_one(
            "SELECT count(*) FROM integration.audit_log
             WHERE action LIKE 'sso%' AND NOT ok AND detail::text LIKE '%larger than%'",
            &[],
        )
        .expect("audit")
        .get(0);
    assert!(refusals >= 1, "the refusals are audited");

    // The provider behaves again: logins work again.
    idp.behave(|b| b.jwks_padding = 0);
    let fine = rogue_login(&sidecar, "rogue");
    assert_eq!(fine.status, 200, "{}", fine.text);
}

#[test]
fn id_tokens_are_refused_for_short_rsa_keys_azp_nbf_and_iat_as_core_refuses_jwts() {
    let (cluster, mut admin) = setup();
    let idp = RogueOidc::start();
    rogue_provider(&mut admin, "rogue", &idp);
    let sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=1"));
    let fine = rogue_login(&sidecar, "rogue");
    assert_eq!(fine.status, 200, "{}\n{}", fine.text, sidecar.log());

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let cases: Vec<(&str, bool, Value)> = vec![
        ("a 1024-bit RSA key", true, json!({})),
        (
            "another authorized party",
            false,
            json!({"azp": "another-client"}),
        ),
        (
            "several audiences, no azp",
            false,
            json!({"aud": ["rogue-client", "another-client"]}),
        ),
        (
            "not valid for ten minutes",
            false,
            json!({"nbf": now + 600}),
        ),
        ("issued in the future", false, json!({"iat": now + 600})),
        ("issued an hour ago", false, json!({"iat": now - 3600})),
    ];
    for (what, small_key, claims) in cases {
        idp.behave(|b| {
            b.small_key = small_key;
            b.id_token_claims = claims.clone();
        });
        let a = rogue_login(&sidecar, "rogue");
        assert_eq!(a.status, 401, "{what}: {}", a.text);
        assert!(a.body.get("access_token").is_none(), "{what}: {}", a.text);
    }
    // Naming us as the authorized party is fine.
    idp.behave(|b| {
        b.small_key = false;
        b.id_token_claims = json!({"azp": "rogue-client"});
    });
    let fine = rogue_login(&sidecar, "rogue");
    assert_eq!(fine.status, 200, "{}", fine.text);
    assert!(
        sidecar.log().contains("shorter than 2048 bits"),
        "the short key is logged"
    );
}

#[test]
fn endpoints_named_in_discovery_must_be_https_on_the_issuers_host_and_errors_name_no_url() {
    let (cluster, mut admin) = setup();
    let idp = RogueOidc::start();
    let issuer = idp.issuer();
    let port = issuer.rsplit(':').next().expect("a port").to_owned();
    // One provider per case: each discovers afresh.
    for name in ["p-token", "p-jwks", "p-userinfo", "p-ftp"] {
        rogue_provider(&mut admin, name, &idp);
    }
    admin
        .batch_execute(&format!(
            "SELECT integration.create_sso_provider('p-listed', 'oidc',
                 jsonb_build_object('issuer', '{issuer}', 'client_id', 'rogue-client',
                     'client_secret', 'rogue-secret-0123456789', 'allow_http', true,
                     'endpoint_hosts', jsonb_build_array('localhost')),
                 default_role => 'app_user');
             SELECT integration.create_sso_provider('p-plain-http', 'oidc',
                 jsonb_build_object('issuer', '{issuer}', 'client_id', 'rogue-client',
                     'client_secret', 'rogue-secret-0123456789'),
                 default_role => 'app_user');"
        ))
        .expect("providers");
    let sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=6"));
    let no_url = |a: &Answer| {
        for internal in ["localhost", "127.0.0.1", "://"] {
            assert!(!a.text.contains(internal), "{internal} in {}", a.text);
        }
    };

    // `localhost` is the same server under another host name: a request
    // that reaches it is counted as `localhost/…`.
    let elsewhere = |path: &str| format!("http://localhost:{port}{path}");
    let cases = [
        ("p-token", "token_endpoint", "/token"),
        ("p-jwks", "jwks_uri", "/jwks"),
        ("p-userinfo", "userinfo_endpoint", "/userinfo"),
    ];
    for (provider, member, path) in cases {
        idp.behave(|b| b.discovery = json!({ member: elsewhere(path) }));
        let a = rogue_login(&sidecar, provider);
        assert_eq!(a.status, 502, "{provider}: {}", a.text);
        assert!(a.text.contains("issuer's host"), "{provider}: {}", a.text);
        no_url(&a);
        assert_eq!(
            idp.hits(&format!("localhost{path}")),
            0,
            "{provider}: the sidecar called {member} on another host"
        );
    }

    // Hosts listed in endpoint_hosts are allowed.
    idp.behave(|b| {
        b.discovery = json!({
            "token_endpoint": elsewhere("/token"), "jwks_uri": elsewhere("/jwks"),
            "userinfo_endpoint": elsewhere("/userinfo"),
        })
    });
    let listed = rogue_login(&sidecar, "p-listed");
    assert_eq!(listed.status, 200, "{}\n{}", listed.text, sidecar.log());
    assert_eq!(idp.hits("localhost/token"), 1);

    // Without allow_http an http issuer is never contacted.
    let before = idp.hits("/.well-known/openid-configuration");
    let plain = rogue_login(&sidecar, "p-plain-http");
    assert_eq!(plain.status, 503, "{}", plain.text);
    assert!(plain.text.contains("allow_http"), "{}", plain.text);
    no_url(&plain);
    assert_eq!(idp.hits("/.well-known/openid-configuration"), before);

    // https required for the endpoints too, allow_http aside.
    idp.behave(|b| {
        b.discovery = json!({ "token_endpoint": format!("ftp://127.0.0.1:{port}/token") })
    });
    let ftp = rogue_login(&sidecar, "p-ftp");
    assert_eq!(ftp.status, 502, "{}", ftp.text);
    assert!(ftp.text.contains("must be https"), "{}", ftp.text);
    no_url(&ftp);
}

#[test]
fn oauth2_urls_must_be_https_on_the_authorize_urls_host_and_errors_name_no_url() {
    let (cluster, mut admin) = setup();
    let idp = RogueOidc::start();
    let issuer = idp.issuer();
    let port = issuer.rsplit(':').next().expect("a port").to_owned();
    // `localhost` is the rogue provider under another host name.
    let elsewhere = format!("http://localhost:{port}");
    let mut provider = |name: &str, changes: Value| {
        let mut config = json!({
            "authorize_url": format!("{issuer}/authorize"), "token_url": format!("{issuer}/token"),
            "userinfo_url": format!("{issuer}/userinfo"), "client_id": "rogue-client",
            "client_secret": "rogue-secret-0123456789", "allow_http": true,
        });
        if let (Some(config), Some(changes)) = (config.as_object_mut(), changes.as_object()) {
            config.extend(changes.clone());
        }
        admin
            .execute(
                "SELECT integration.create_sso_provider($1, 'oauth2', $2, default_role => 'app_user')",
                &[&name, &config],
            )
            .unwrap_or_else(|e| panic!("{name}: {:?}", e.as_db_error()));
    };
    provider("o-fine", json!({}));
    provider(
        "o-token",
        json!({"token_url": format!("{elsewhere}/token")}),
    );
    provider(
        "o-userinfo",
        json!({"userinfo_url": format!("{elsewhere}/userinfo")}),
    );
    provider(
        "o-listed",
        json!({"token_url": format!("{elsewhere}/token"),
               "userinfo_url": format!("{elsewhere}/userinfo"), "endpoint_hosts": ["localhost"]}),
    );
    provider("o-plain-http", json!({"allow_http": null}));
    provider(
        "o-no-scheme",
        json!({"token_url": "idp.internal.example/token"}),
    );
    let sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=6"));
    let no_url = |a: &Answer| {
        for internal in ["localhost", "127.0.0.1", "://", "idp.internal"] {
            assert!(!a.text.contains(internal), "{internal} in {}", a.text);
        }
    };

    let fine = rogue_login(&sidecar, "o-fine");
    assert_eq!(fine.status, 200, "{}\n{}", fine.text, sidecar.log());
    assert_eq!(fine.body["idp_sub"], integration_tests::rogue_oidc::SUBJECT);

    // Token or userinfo URL on another host: the provider is not used at all.
    let authorized = idp.hits("/authorize");
    for (name, key) in [("o-token", "token_url"), ("o-userinfo", "userinfo_url")] {
        let a = rogue_login(&sidecar, name);
        assert_eq!(a.status, 503, "{name}: {}", a.text);
        assert!(
            a.text
                .contains(&format!("{key} is not on authorize_url's host")),
            "{name}: {}",
            a.text
        );
        no_url(&a);
    }
    assert_eq!(idp.hits("localhost/token"), 0, "the secret went elsewhere");
    assert_eq!(
        idp.hits("localhost/userinfo"),
        0,
        "the token went elsewhere"
    );

    // Hosts listed in endpoint_hosts are allowed.
    let listed = rogue_login(&sidecar, "o-listed");
    assert_eq!(listed.status, 200, "{}\n{}", listed.text, sidecar.log());
    assert_eq!(idp.hits("localhost/token"), 1);
    assert_eq!(idp.hits("localhost/userinfo"), 1);

    // Without allow_http nothing over http is contacted.
    let plain = rogue_login(&sidecar, "o-plain-http");
    assert_eq!(plain.status, 503, "{}", plain.text);
    assert!(
        plain.text.contains("authorize_url must be https"),
        "{}",
        plain.text
    );
    assert!(plain.text.contains("allow_http"), "{}", plain.text);
    no_url(&plain);

    // A URL an admin mistyped is not echoed to the browser.
    let mistyped = rogue_login(&sidecar, "o-no-scheme");
    assert_eq!(mistyped.status, 503, "{}", mistyped.text);
    assert!(
        mistyped.text.contains("token_url is not a URL"),
        "{}",
        mistyped.text
    );
    no_url(&mistyped);
    assert_eq!(
        idp.hits("/authorize"),
        authorized + 1,
        "only o-listed sent the browser to the provider"
    );
}

#[test]
fn an_email_address_reaches_the_session_only_when_the_provider_verified_it() {
    let (cluster, mut admin) = setup();
    let idp = RogueOidc::start();
    rogue_provider(&mut admin, "rogue", &idp);
    let sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=1"));
    let stored_email = |admin: &mut postgres::Client| -> Option<String> {
        admin
            .query_one(
                "SELECT email FROM integration.identities WHERE provider = 'rogue'",
                &[],
            )
            .expect("identity")
            .get(0)
    };
    for (verified, kept) in [
        (json!(false), false),
        (Value::Null, false),
        (json!(true), true),
        // A later unverified login clears the stored address.
        (json!(false), false),
    ] {
        idp.behave(|b| b.id_token_claims = json!({ "email_verified": verified.clone() }));
        let a = rogue_login(&sidecar, "rogue");
        assert_eq!(a.status, 200, "{verified}: {}\n{}", a.text, sidecar.log());
        let token = a.body["access_token"].as_str().expect("a token");
        let claims = session(&sidecar, token).body["session"].clone();
        if kept {
            assert_eq!(a.body["email"], "rogue@example.org", "{verified}");
            assert_eq!(claims["email"], "rogue@example.org", "{verified}");
            assert_eq!(
                stored_email(&mut admin).as_deref(),
                Some("rogue@example.org")
            );
        } else {
            assert!(a.body["email"].is_null(), "{verified}: {}", a.text);
            assert!(
                claims.get("email").is_none_or(Value::is_null),
                "{verified}: {claims}"
            );
            assert_eq!(stored_email(&mut admin), None, "{verified}");
        }
    }
}

/// Runs `statement` (with `$1` = `body`) then reads `notes` as the
/// session `token`, the way PostgREST runs a request: verify, publish the
/// claims in request.jwt.claims, SET LOCAL ROLE to the role claim.
fn as_session(cluster: &PgCluster, token: &str, statement: &str, body: &str) -> Vec<String> {
    let mut authenticator = cluster.connect_as(DB, "authenticator");
    let mut tx = authenticator.transaction().expect("begin");
    let claims: Value = tx
        .query_one("SELECT integration.verify_jwt($1)", &[&token])
        .expect("verify")
        .get(0);
    tx.execute(
        "SELECT set_config('request.jwt.claims', $1, true)",
        &[&claims.to_string()],
    )
    .expect("claims");
    let role = claims["role"].as_str().expect("a role claim");
    tx.batch_execute(&format!("SET LOCAL ROLE {role}"))
        .expect("set role");
    tx.execute(statement, &[&body]).expect(statement);
    let bodies = tx
        .query("SELECT body FROM notes ORDER BY body", &[])
        .expect("select")
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.commit().expect("commit");
    bodies
}

#[test]
fn the_same_subject_at_two_providers_is_two_people_to_row_level_security() {
    let (cluster, mut admin) = setup();
    // Two providers whose users are both called `rogue-user`.
    let idp = RogueOidc::start();
    let other = RogueOidc::start();
    rogue_provider(&mut admin, "staff", &idp);
    rogue_provider(&mut admin, "guests", &other);
    // The README's policy: rows belong to the session's `sub`.
    admin
        .batch_execute(
            "CREATE TABLE notes (
                 owner text NOT NULL DEFAULT current_setting('request.jwt.claims', true)::jsonb->>'sub',
                 body text NOT NULL);
             ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own_notes ON notes
                 USING (owner = current_setting('request.jwt.claims', true)::jsonb->>'sub');
             GRANT SELECT, INSERT ON notes TO app_user;
             CREATE ROLE authenticator LOGIN;
             GRANT app_user, integration_user TO authenticator;",
        )
        .expect("schema");
    let sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=2"));
    let staff = rogue_login(&sidecar, "staff");
    let guest = rogue_login(&sidecar, "guests");
    assert_eq!(staff.status, 200, "{}\n{}", staff.text, sidecar.log());
    assert_eq!(guest.status, 200, "{}", guest.text);
    let staff_token = staff.body["access_token"].as_str().expect("a token");
    let guest_token = guest.body["access_token"].as_str().expect("a token");

    let insert = "INSERT INTO notes (body) VALUES ($1)";
    let seen = as_session(&cluster, staff_token, insert, "the staff member's note");
    assert_eq!(seen, vec!["the staff member's note".to_owned()]);
    let seen = as_session(&cluster, guest_token, insert, "the guest's note");
    assert_eq!(
        seen,
        vec!["the guest's note".to_owned()],
        "the guest reads only the guest's rows"
    );
    let seen = as_session(&cluster, staff_token, "SELECT $1::text", "");
    assert_eq!(seen, vec!["the staff member's note".to_owned()]);

    // The format: `provider:subject`, the raw subject and the provider apart.
    assert_eq!(staff.body["sub"], "staff:rogue-user");
    assert_eq!(staff.body["idp_sub"], "rogue-user");
    assert_eq!(guest.body["sub"], "guests:rogue-user");
    let claims = verify_in_sql(&mut admin, guest_token).expect("valid");
    assert_eq!(claims["idp"], "guests");
    assert_eq!(claims["idp_sub"], "rogue-user");
}

/// Refusals of SSO logins audited with a reason containing `like`.
fn refusals(admin: &mut postgres::Client, like: &str) -> Vec<String> {
    admin
        .query(
            "SELECT detail->>'reason' FROM integration.audit_log
             WHERE action = 'sso.login' AND NOT ok AND detail->>'reason' LIKE '%' || $1 || '%'
             ORDER BY at",
            &[&like],
        )
        .expect("audit")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn claims_the_database_cannot_store_are_cleaned_or_refused_and_audited_without_database_text() {
    let (cluster, mut admin) = setup();
    let idp = RogueOidc::start();
    rogue_provider(&mut admin, "rogue", &idp);
    let sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=1"));
    let no_database_text = |a: &Answer| {
        for leak in [
            "DETAIL",
            "violates",
            "identities",
            "SQLSTATE",
            "0x00",
            "Failing row",
        ] {
            assert!(!a.text.contains(leak), "{leak} in {}", a.text);
        }
    };

    // A user-editable name with a NUL: cleaned, and the user logs in.
    idp.behave(|b| {
        b.id_token_claims = json!({"name": "Ada\u{0}Lovelace"});
        b.userinfo = json!({"nickname": "a\u{0}da", "n\u{0}ote": ["x\u{0}"]});
    });
    let a = rogue_login(&sidecar, "rogue");
    assert_eq!(a.status, 200, "{}\n{}", a.text, sidecar.log());
    let row = admin
        .query_one(
            "SELECT name, claims FROM integration.identities WHERE provider = 'rogue'",
            &[],
        )
        .expect("identity");
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("AdaLovelace")
    );
    let claims: Value = row.get(1);
    assert_eq!(claims["nickname"], "ada", "{claims}");
    assert_eq!(claims["note"], json!(["x"]), "{claims}");

    // Subjects that cannot be stored as they are: refused (401) and audited.
    for (subject, reason) in [
        ("s".repeat(600), "600 characters"),
        ("ro\u{0}gue".to_owned(), "NUL"),
    ] {
        idp.behave(|b| {
            b.id_token_claims = json!({ "sub": subject.clone() });
            b.userinfo = json!({ "sub": subject.clone() });
        });
        let a = rogue_login(&sidecar, "rogue");
        assert_eq!(a.status, 401, "{reason}: {}", a.text);
        no_database_text(&a);
        assert_eq!(refusals(&mut admin, reason).len(), 1, "{reason} is audited");
    }
    assert!(refusals(&mut admin, "database").is_empty());
}

/// Sends `n` callbacks without a login cookie (anyone can); each is refused.
fn unsolicited_callbacks(sidecar: &Sidecar, n: u64) {
    for _ in 0..n {
        let a = answer(
            client()
                .get(sidecar.url("/auth/rogue/callback?code=c&state=s"))
                .send()
                .expect("callback"),
        );
        assert_eq!(a.status, 400, "{}", a.text);
    }
}

/// The counts of the coalesced audit rows of callbacks without a login,
/// oldest first ("… (N such callbacks since the last row; …)").
fn coalesced_counts(admin: &mut postgres::Client) -> Vec<u64> {
    refusals(admin, "no login in progress")
        .iter()
        .map(|reason| {
            reason
                .split_once(" such callbacks")
                .and_then(|(before, _)| before.rsplit('(').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no count in {reason}"))
        })
        .collect()
}

#[test]
fn callbacks_without_a_login_are_audited_in_counted_rows_that_add_up_after_silence_and_at_shutdown()
{
    let (cluster, mut admin) = setup();
    let idp = RogueOidc::start();
    rogue_provider(&mut admin, "rogue", &idp);
    let mut sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=1"));

    // A burst: the first is audited at once, the others only counted.
    unsolicited_callbacks(&sidecar, 25);
    assert_eq!(coalesced_counts(&mut admin), vec![1]);

    // Then silence: once the minute is over the count gets its row anyway.
    let deadline = Instant::now() + Duration::from_secs(90);
    while coalesced_counts(&mut admin).iter().sum::<u64>() < 25 {
        assert!(
            Instant::now() < deadline,
            "the burst's count was not audited within 90 s: {:?}",
            coalesced_counts(&mut admin)
        );
        sleep(Duration::from_millis(500));
    }
    assert_eq!(coalesced_counts(&mut admin), vec![1, 24]);

    // Another burst right after that row waits for the next window...
    unsolicited_callbacks(&sidecar, 10);
    assert_eq!(coalesced_counts(&mut admin), vec![1, 24]);
    // ...and is written when the sidecar stops.
    let (status, _) = sidecar.terminate();
    assert!(status.success(), "{status}");
    let counts = coalesced_counts(&mut admin);
    assert_eq!(counts, vec![1, 24, 10], "35 callbacks, three rows");
}

#[test]
fn a_login_state_finishes_one_login_even_when_its_cookie_is_kept() {
    let (cluster, mut admin) = setup();
    let idp = RogueOidc::start();
    rogue_provider(&mut admin, "rogue", &idp);
    let sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=1"));

    // A client that keeps the login cookie although the callback deletes it.
    let start = answer(
        client()
            .get(sidecar.url("/auth/rogue/login"))
            .send()
            .expect("login"),
    );
    assert_eq!(start.status, 302, "{}", start.text);
    let authorize = start.location.expect("to the provider");
    let cookie = start
        .cookies
        .iter()
        .find_map(|c| {
            c.split(';')
                .next()
                .filter(|c| c.starts_with("pg_integration_login="))
        })
        .expect("a login cookie")
        .to_owned();
    let finish = || {
        // The provider hands out a fresh code for the same state and nonce.
        let back = answer(client().get(&authorize).send().expect("authorize"));
        let callback = back.location.expect("back to the sidecar");
        answer(
            client()
                .get(&callback)
                .header("cookie", &cookie)
                .send()
                .expect("callback"),
        )
    };
    let first = finish();
    assert_eq!(first.status, 200, "{}\n{}", first.text, sidecar.log());
    for _ in 0..2 {
        let again = finish();
        assert_eq!(again.status, 400, "{}", again.text);
        assert!(again.body.get("access_token").is_none(), "{}", again.text);
        assert!(again.text.contains("finished already"), "{}", again.text);
    }
    assert_eq!(
        idp.hits("/token"),
        1,
        "a spent state never reaches the token endpoint"
    );
}

/// A login started at `sidecar` by a client that will keep its login
/// cookie: where the provider is, and the cookie.
fn kept_login(sidecar: &Sidecar, provider: &str) -> (String, String) {
    let start = answer(
        client()
            .get(sidecar.url(&format!("/auth/{provider}/login")))
            .send()
            .expect("login"),
    );
    assert_eq!(start.status, 302, "{}", start.text);
    let cookie = start
        .cookies
        .iter()
        .find_map(|c| {
            c.split(';')
                .next()
                .filter(|c| c.starts_with("pg_integration_login="))
        })
        .expect("a login cookie")
        .to_owned();
    (start.location.expect("to the provider"), cookie)
}

/// Finishes a kept login at `sidecar` (whatever replica started it): the
/// provider hands out a fresh code for the same state, and the callback,
/// addressed to the public URL, is sent to `sidecar` as a load balancer would.
fn finish_kept_on(sidecar: &Sidecar, public: &str, authorize: &str, cookie: &str) -> Answer {
    let back = answer(client().get(authorize).send().expect("authorize"));
    let callback = back.location.expect("back to the sidecar");
    let path = callback
        .strip_prefix(public)
        .unwrap_or_else(|| panic!("{callback} is not under {public}"));
    answer(
        client()
            .get(sidecar.url(path))
            .header("cookie", cookie)
            .send()
            .expect("callback"),
    )
}

#[test]
fn a_login_state_finished_on_one_replica_is_refused_by_another() {
    let (cluster, mut admin) = setup();
    let idp = RogueOidc::start();
    rogue_provider(&mut admin, "rogue", &idp);
    // Two replicas on one database, behind one public address.
    let port = integration_tests::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let args = ["--public-url", public.as_str()];
    let database = cluster.url(DB, "integration_sidecar");
    let one = Sidecar::start_on(port, &database, &args, None);
    let two = Sidecar::start(&database, &args, None);
    for sidecar in [&one, &two] {
        wait_until(|| sidecar.log().contains("providers=1"));
    }

    // Either replica finishes a login the other started (the login cookie
    // is signed with the shared key)... but only once, whichever replica
    // the kept cookie comes back to.
    for (started, finished, replayed) in [(&one, &two, &one), (&two, &one, &two)] {
        let (authorize, cookie) = kept_login(started, "rogue");
        let first = finish_kept_on(finished, &public, &authorize, &cookie);
        assert_eq!(first.status, 200, "{}\n{}", first.text, finished.log());
        assert!(first.body["access_token"].is_string(), "{}", first.text);
        for sidecar in [replayed, finished] {
            let again = finish_kept_on(sidecar, &public, &authorize, &cookie);
            assert_eq!(again.status, 400, "{}", again.text);
            assert!(again.body.get("access_token").is_none(), "{}", again.text);
            assert!(again.text.contains("finished already"), "{}", again.text);
        }
    }
    assert_eq!(
        idp.hits("/token"),
        2,
        "a state spent on one replica never reaches the token endpoint from another"
    );
    let shared: i64 = admin
        .query_one("SELECT count(*) FROM integration.used_login_states", &[])
        .expect("the shared record")
        .get(0);
    assert_eq!(
        shared, 2,
        "both replicas recorded their state in the database"
    );
}

#[test]
fn a_role_that_became_privileged_after_its_mapping_was_saved_gets_no_session() {
    let (cluster, mut admin) = setup();
    let idp = RogueOidc::start();
    rogue_provider(&mut admin, "rogue", &idp);
    admin
        .batch_execute("CREATE ROLE boss SUPERUSER NOLOGIN")
        .expect("roles");
    let sidecar = start_sidecar(&cluster);
    wait_until(|| sidecar.log().contains("providers=1"));
    assert_eq!(rogue_login(&sidecar, "rogue").status, 200);

    // Each change comes after the provider (default_role app_user) was saved.
    for (grant, revoke, why) in [
        (
            "GRANT pg_read_all_data TO app_user",
            "REVOKE pg_read_all_data FROM app_user",
            "pg_read_all_data",
        ),
        (
            "GRANT pg_write_all_data TO app_user",
            "REVOKE pg_write_all_data FROM app_user",
            "pg_write_all_data",
        ),
        (
            "GRANT pg_signal_backend TO app_user",
            "REVOKE pg_signal_backend FROM app_user",
            "pg_signal_backend",
        ),
        (
            "GRANT boss TO app_user",
            "REVOKE boss FROM app_user",
            "boss",
        ),
        (
            "GRANT integration_admin TO app_user",
            "REVOKE integration_admin FROM app_user",
            "integration_admin",
        ),
        (
            "ALTER ROLE app_user SUPERUSER",
            "ALTER ROLE app_user NOSUPERUSER",
            "itself is privileged",
        ),
        (
            "GRANT SELECT ON integration.signing_keys TO app_user",
            "REVOKE SELECT ON integration.signing_keys FROM app_user",
            "signing_keys",
        ),
    ] {
        admin.batch_execute(grant).expect(grant);
        let a = rogue_login(&sidecar, "rogue");
        assert_eq!(a.status, 403, "{grant}: {}", a.text);
        assert!(a.body.get("access_token").is_none(), "{grant}: {}", a.text);
        let audited: Vec<String> = refusals(&mut admin, "may not be given to a session")
            .into_iter()
            .filter(|r| r.ends_with(why))
            .collect();
        assert_eq!(audited.len(), 1, "{grant}: audited, naming {why}");
        admin.batch_execute(revoke).expect(revoke);
    }
    let fine = rogue_login(&sidecar, "rogue");
    assert_eq!(fine.status, 200, "{}", fine.text);
}
