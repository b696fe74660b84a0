//! End-to-end tests of `GET /docs`: the real sidecar in front of a real
//! PostgreSQL with pg_integration. Headless Chromium (tests/browser/docs.mjs)
//! renders Swagger UI, which lists the configured webhooks and SSO provider,
//! loads nothing from another origin, and delivers events with "Try it
//! out" (to a `none` webhook, and to an `api-key` one after the Authorize
//! button) that land in `integration.webhook_events`. Over plain HTTP,
//! `--docs off` answers 404 and `--docs authenticated` wants an API key with
//! scope `docs` (401 without one, 403 with another scope) or a session of
//! the sidecar that no logout ended. A browser without credentials gets a
//! sign-in form that takes a `docs` key (over HTTP and in Chromium), and
//! `/docs/sql` lists every function a user may execute.

use integration_tests::chromium::{artifacts_dir, run_script};
use integration_tests::{PgCluster, Sidecar};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::thread::sleep;
use std::time::{Duration, Instant};

const DB: &str = "docs_e2e";

/// A cluster with the extension, the webhooks `plain` (none), `keyed`
/// (api-key) and `gh` (github), the LDAP provider `dir`, and the role keys
/// are made for.
fn cluster() -> (PgCluster, postgres::Client) {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database(DB);
    admin
        .batch_execute(
            "ALTER ROLE integration_sidecar LOGIN;
             CREATE ROLE app_user;
             SELECT integration.create_webhook('plain', 'none');
             SELECT integration.create_webhook('keyed', 'api-key');
             SELECT integration.create_webhook('gh', 'github', 'github-secret-value-1');
             SELECT integration.create_sso_provider('dir', 'ldap',
                 jsonb_build_object('url', 'ldap://127.0.0.1:9', 'bind_dn', 'cn=reader,dc=x',
                     'bind_password', 'ldap-bind-password-2', 'search_base', 'dc=x',
                     'search_filter', '(uid={username})'),
                 default_role => 'app_user');",
        )
        .expect("the configuration");
    (cluster, admin)
}

/// A sidecar with `args`, once both configurations are loaded.
fn sidecar(cluster: &PgCluster, args: &[&str]) -> Sidecar {
    let sidecar = Sidecar::start(&cluster.url(DB, "integration_sidecar"), args, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = sidecar.log();
        if log.contains("webhook configuration loaded") && log.contains("SSO configuration loaded")
        {
            return sidecar;
        }
        assert!(Instant::now() < deadline, "not loaded:\n{log}");
        sleep(Duration::from_millis(50));
    }
}

/// `GET path` with `headers`: the status and the body.
fn get(sidecar: &Sidecar, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = sidecar.client.get(sidecar.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", sidecar.log()));
    (
        response.status().as_u16(),
        response.text().expect("the body"),
    )
}

#[test]
fn swagger_ui_renders_offline_and_try_it_out_stores_an_event() {
    let (cluster, mut admin) = cluster();
    let key: String = admin
        .query_one(
            "SELECT integration.create_api_key('keyed sender', 'app_user', '{webhooks:keyed}')",
            &[],
        )
        .expect("create_api_key")
        .get(0);
    // On loopback the docs are public by default.
    let sidecar = sidecar(&cluster, &[]);
    let origin = sidecar.url("/");
    let result = run_script(
        "docs.mjs",
        "docs",
        json!({
            "url": sidecar.url("/docs"),
            "deliveries": [
                { "webhook": "plain", "payload": { "from": "docs", "n": 7 } },
                { "webhook": "keyed", "payload": { "keyed": true }, "key": key },
            ],
        }),
    );
    assert!(
        result["title"]
            .as_str()
            .is_some_and(|t| t.contains("pg_integration sidecar")),
        "{result}"
    );
    let paths: Vec<&str> = result["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for path in [
        "/webhooks/plain",
        "/webhooks/keyed",
        "/webhooks/gh",
        "/auth/dir/login",
        "/openapi.json",
    ] {
        assert!(paths.contains(&path), "{path} not shown: {paths:?}");
    }
    let requests: Vec<&str> = result["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        requests
            .iter()
            .any(|r| r.ends_with("/docs/swagger-ui-bundle.js")),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|r| r.starts_with(&origin)),
        "a request left the sidecar's origin {origin}: {requests:?}"
    );
    assert_eq!(result["console_errors"], json!([]), "{result}");
    let stored = [
        ("plain", r#"{"n": 7, "from": "docs"}"#),
        ("keyed", r#"{"keyed": true}"#),
    ];
    for (delivery, (webhook, payload)) in result["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .zip(stored)
    {
        assert_eq!(delivery["status"], 200, "{delivery}\n{}", sidecar.log());
        assert_eq!(delivery["shown_status"], "200", "{delivery}");
        let answer: Value = serde_json::from_str(delivery["answer"].as_str().expect("text"))
            .expect("a JSON answer");
        let id = answer["event_id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{answer}"));
        let row = admin
            .query_one(
                "SELECT webhook, payload::text FROM integration.webhook_events WHERE id = $1",
                &[&id],
            )
            .expect("the stored event");
        assert_eq!(row.get::<_, String>(0), webhook);
        assert_eq!(row.get::<_, String>(1), payload);
    }
    assert!(artifacts_dir("docs").join("docs.png").exists());
}

/// A new API key of role app_user with `scopes` (an array literal).
fn api_key(admin: &mut postgres::Client, scopes: &str) -> String {
    admin
        .query_one(
            "SELECT integration.create_api_key('docs e2e', 'app_user', $1::text::text[])",
            &[&scopes],
        )
        .expect("create_api_key")
        .get(0)
}

#[test]
fn docs_off_are_404_and_authenticated_docs_want_a_docs_key_or_a_session() {
    let (cluster, mut admin) = cluster();
    let docs_key = api_key(&mut admin, "{docs}");
    let other_key = api_key(&mut admin, "{webhooks:keyed}");

    let off = sidecar(&cluster, &["--docs", "off"]);
    for path in ["/docs", "/docs/", "/openapi.json"] {
        let (status, body) = get(&off, path, &[]);
        assert_eq!(status, 404, "{path}: {body}");
    }
    drop(off);

    let closed = sidecar(&cluster, &["--docs", "authenticated"]);
    let bearer = |token: &str| format!("Bearer {token}");
    for path in ["/docs/", "/docs/swagger-ui-bundle.js", "/openapi.json"] {
        let (status, body) = get(&closed, path, &[]);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(serde_json::from_str::<Value>(&body).is_ok_and(|b| b["error"].is_string()));
        let (status, body) = get(&closed, path, &[("Authorization", &bearer("pgik_1_nope"))]);
        assert_eq!(status, 401, "{path}: {body}");
        let (status, body) = get(&closed, path, &[("Authorization", &bearer(&other_key))]);
        assert_eq!(status, 403, "{path}: {body}");
        let (status, body) = get(&closed, path, &[("Authorization", &bearer(&docs_key))]);
        assert_eq!(status, 200, "{path}: {body}");
        let (status, body) = get(&closed, path, &[("X-API-Key", &docs_key)]);
        assert_eq!(status, 200, "{path}: {body}");
    }
    // `/docs` itself: 401 before the redirect to `/docs/`, followed with the key.
    let (status, _) = get(&closed, "/docs", &[]);
    assert_eq!(status, 401);
    let (status, page) = get(&closed, "/docs", &[("Authorization", &bearer(&docs_key))]);
    assert_eq!(status, 200);
    assert!(page.contains("swagger-ui-bundle.js"), "{page}");
    // A session of this sidecar (the cookie of an SSO login) opens them too,
    // until a logout ends it; a token signed by another key does not.
    let session = |pem_query: &str| -> String {
        let mut admin = cluster.connect(DB);
        let pem_and_kid = admin.query_one(pem_query, &[]).expect("a signing key");
        let (pem, kid): (String, Option<String>) = (pem_and_kid.get(0), pem_and_kid.get(1));
        admin
            .query_one(
                "SELECT integration.sign_jwt(jsonb_build_object('sub', 'docs:reader',
                     'role', 'app_user', 'aud', 'pg_integration', 'iss', $3::text,
                     'jti', md5(random()::text)), $1, 'EdDSA', '1 hour', $2)",
                &[&pem, &kid, &closed.url("")],
            )
            .expect("sign a session token")
            .get(0)
    };
    let ours =
        session("SELECT private_pem, kid FROM integration.signing_keys WHERE retired_at IS NULL");
    let forged = session("SELECT private_pem, NULL FROM integration._generate_signing_key()");
    let cookie = |token: &str| format!("pg_integration_session={token}");
    for path in ["/docs/", "/openapi.json"] {
        let (status, body) = get(&closed, path, &[("Cookie", &cookie(&ours))]);
        assert_eq!(status, 200, "{path}: {body}");
        let (status, body) = get(&closed, path, &[("Cookie", &cookie(&forged))]);
        assert_eq!(status, 401, "{path}: {body}");
    }
    let logout = closed
        .client
        .post(closed.url("/auth/logout"))
        .header("Cookie", cookie(&ours))
        .send()
        .expect("POST /auth/logout");
    assert_eq!(logout.status().as_u16(), 200, "{:?}", logout.text());
    let (status, body) = get(&closed, "/docs/", &[("Cookie", &cookie(&ours))]);
    assert_eq!(status, 401, "an ended session: {body}");
    // A revoked key is refused at once.
    admin
        .batch_execute(
            "SELECT integration.revoke_api_key(id) FROM integration.api_keys \
             WHERE scopes = '{docs}'",
        )
        .expect("revoke the docs key");
    let (status, _) = get(
        &closed,
        "/openapi.json",
        &[("Authorization", &bearer(&docs_key))],
    );
    assert_eq!(status, 401);
}

/// The sidecar's client without redirects (to see the sign-in's own answer).
fn no_redirects() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

/// `POST /docs/key` with `key` as the form sends it, from `origin`: the
/// status, the `Set-Cookie` and `Location` headers, and the body.
fn sign_in(
    sidecar: &Sidecar,
    key: &str,
    origin: &str,
) -> (u16, Option<String>, Option<String>, String) {
    let response = no_redirects()
        .post(sidecar.url("/docs/key"))
        .header("Origin", origin)
        .form(&[("key", key), ("then", "")])
        .send()
        .expect("POST /docs/key");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (cookie, location) = (header("set-cookie"), header("location"));
    (
        response.status().as_u16(),
        cookie,
        location,
        response.text().expect("the body"),
    )
}

#[test]
fn a_browser_signs_in_to_authenticated_docs_with_a_docs_key() {
    let (cluster, mut admin) = cluster();
    let docs_key = api_key(&mut admin, "{docs}");
    let other_key = api_key(&mut admin, "{webhooks:keyed}");
    let closed = sidecar(&cluster, &["--docs", "authenticated"]);
    let origin = closed.url("");
    let html = ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8");

    // A browser gets the form, a tool the JSON 401.
    for path in ["/docs/", "/docs/sql"] {
        let (status, page) = get(&closed, path, &[html]);
        assert_eq!(status, 401, "{path}: {page}");
        assert!(
            page.contains("<form method=\"post\" action=\"key\">"),
            "{path}: {page}"
        );
        assert!(page.contains("name=\"key\""), "{page}");
        let (status, body) = get(&closed, path, &[("Accept", "application/json")]);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(serde_json::from_str::<Value>(&body).is_ok_and(|b| b["error"].is_string()));
    }

    // From another origin the key is refused before it is checked.
    let (status, cookie, _, body) = sign_in(&closed, &docs_key, "http://evil.example");
    assert_eq!(status, 403, "{body}");
    assert_eq!(cookie, None);
    // A key without the scope: 403; no key at all: 401; neither sets a cookie.
    let (status, cookie, _, body) = sign_in(&closed, &other_key, &origin);
    assert_eq!((status, cookie), (403, None), "{body}");
    let (status, cookie, _, body) = sign_in(&closed, "pgik_1_nope", &origin);
    assert_eq!((status, cookie), (401, None), "{body}");

    // The docs key: a cookie that is not the key, and back to the page.
    let (status, cookie, location, body) = sign_in(&closed, &docs_key, &origin);
    assert_eq!(status, 303, "{body}\n{}", closed.log());
    assert_eq!(location.as_deref(), Some("./"));
    let cookie = cookie.expect("a Set-Cookie");
    for attribute in ["Path=/", "Max-Age=28800", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{attribute}: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    assert!(pair.starts_with("pg_integration_docs="), "{pair}");
    assert!(!pair.contains(&docs_key), "the key in clear: {pair}");
    let secret = docs_key.rsplit('_').next().expect("the secret part");
    assert!(!pair.contains(secret), "the key's secret in clear: {pair}");
    assert!(!closed.log().contains(secret), "the key in the log");
    for path in ["/docs/", "/openapi.json"] {
        let (status, body) = get(&closed, path, &[("Cookie", &pair), html]);
        assert_eq!(status, 200, "{path}: {body}");
    }
    // A cookie with one character changed (in the middle, where every bit
    // counts) opens nothing.
    let mut tampered = pair.clone().into_bytes();
    let middle = tampered.len() / 2 + 10;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("base64url");
    let (status, _) = get(&closed, "/docs/", &[("Cookie", &tampered)]);
    assert_eq!(status, 401);

    // Revoking the key ends the sign-in at once, and clears the cookie.
    admin
        .batch_execute(
            "SELECT integration.revoke_api_key(id) FROM integration.api_keys \
             WHERE scopes = '{docs}'",
        )
        .expect("revoke the docs key");
    let response = closed
        .client
        .get(closed.url("/openapi.json"))
        .header("Cookie", &pair)
        .send()
        .expect("GET /openapi.json");
    assert_eq!(response.status().as_u16(), 401);
    let cleared = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(cleared.starts_with("pg_integration_docs=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

#[test]
fn chromium_signs_in_through_the_form_and_reads_both_references() {
    let (cluster, mut admin) = cluster();
    let docs_key: String = admin
        .query_one(
            "SELECT integration.create_api_key('docs browser', 'app_user', '{docs}')",
            &[],
        )
        .expect("create_api_key")
        .get(0);
    let closed = sidecar(&cluster, &["--docs", "authenticated"]);
    let origin = closed.url("/");
    let result = run_script(
        "docs-sign-in.mjs",
        "docs-sign-in",
        json!({ "url": closed.url("/docs/"), "key": docs_key }),
    );
    assert_eq!(result["form_status"], 401, "{result}");
    assert!(
        result["title"]
            .as_str()
            .is_some_and(|t| t.contains("pg_integration sidecar")),
        "{result}\n{}",
        closed.log()
    );
    assert_eq!(result["sql_href"], closed.url("/docs/sql"), "{result}");
    assert_eq!(result["sql_status"], 200, "{result}");
    assert_eq!(
        result["sql_heading"], "pg_integration SQL API reference",
        "{result}"
    );
    let capabilities: Vec<&str> = result["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(capabilities.contains(&"api keys"), "{capabilities:?}");
    let cookie = &result["cookie"];
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    let requests: Vec<&str> = result["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        requests.iter().all(|r| r.starts_with(&origin)),
        "a request left the sidecar's origin {origin}: {requests:?}"
    );
    assert_eq!(result["console_errors"], json!([]), "{result}");
    assert!(artifacts_dir("docs-sign-in").join("docs-sql.png").exists());
}

#[test]
fn the_sql_reference_lists_every_function_users_may_execute() {
    let (cluster, mut admin) = cluster();
    let sidecar = sidecar(&cluster, &[]);
    let (status, page) = get(&sidecar, "/docs/sql", &[]);
    assert_eq!(status, 200, "{page}\n{}", sidecar.log());
    let granted: BTreeSet<String> = admin
        .query(
            "SELECT DISTINCT p.oid::regproc::text
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'integration'
               AND (has_function_privilege('integration_user', p.oid, 'EXECUTE')
                    OR has_function_privilege('integration_admin', p.oid, 'EXECUTE'))",
            &[],
        )
        .expect("the granted functions")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        granted.contains("integration.create_api_key"),
        "{granted:?}"
    );
    let listed: BTreeSet<String> = admin
        .query(
            "SELECT name FROM integration.api_reference WHERE kind = 'function'",
            &[],
        )
        .expect("integration.api_reference")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let missing: Vec<&String> = granted.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "granted but not in api_reference: {missing:?}"
    );
    // Each is on the page, under its name, with a description.
    for name in &granted {
        let id = format!("<article id=\"{name}\">");
        let at = page
            .find(&id)
            .unwrap_or_else(|| panic!("{name} is not on /docs/sql"));
        let article = &page[at..];
        let article = &article[..article.find("</article>").expect("the article's end")];
        let description = article
            .split("<dt>Description</dt><dd>")
            .nth(1)
            .and_then(|rest| rest.split("</dd>").next())
            .unwrap_or_default();
        assert!(
            !description.trim().is_empty(),
            "{name} has no description: {article}"
        );
    }
}
