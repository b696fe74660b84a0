//! End-to-end: synchronous outbound HTTP from SQL against a real httpbin on
//! loopback, with the SSRF policy, limits, cancellation and the audit log.

use integration_tests::{HttpBin, PgCluster};
use postgres::error::SqlState;
use postgres::Client;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A cluster, a database with the extension, httpbin, and a session that
/// may reach 127.0.0.1 (loopback is refused by default).
fn setup() -> (PgCluster, Client, HttpBin) {
    let cluster = PgCluster::start();
    let mut db = cluster.create_database("app");
    db.batch_execute("ALTER DATABASE app SET integration.http_allowed_networks = '127.0.0.1/32'")
        .unwrap();
    let db = cluster.connect("app");
    (cluster, db, HttpBin::start())
}

fn json(db: &mut Client, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Value {
    let text: String = db
        .query_one(
            &format!("SELECT convert_from(r.body_bytes, 'UTF8') FROM {sql} r"),
            params,
        )
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{sql}: {e}: {text}"))
}

fn sqlstate(result: Result<impl Sized, postgres::Error>) -> (SqlState, String) {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("not a database error: {e}"));
            (db.code().clone(), db.message().to_string())
        }
    }
}

#[test]
fn every_method_and_body_type_round_trips() {
    let (_cluster, mut db, bin) = setup();
    let get = json(
        &mut db,
        "integration.http_get($1, params => '{\"q\": \"a b&c=é\", \"n\": 3, \"tag\": [\"x\", \"y\"]}', headers => '{\"X-Test\": \"1\"}')",
        &[&bin.url("/get")],
    );
    assert_eq!(get["args"]["q"], "a b&c=é");
    assert_eq!(get["args"]["n"], "3");
    assert_eq!(get["args"]["tag"], serde_json::json!(["x", "y"]));
    assert_eq!(get["headers"]["X-Test"], "1");

    let post = json(
        &mut db,
        "integration.http_post($1, '{\"a\": [1, 2]}'::jsonb)",
        &[&bin.url("/post")],
    );
    assert_eq!(post["json"], serde_json::json!({"a": [1, 2]}));
    assert_eq!(post["headers"]["Content-Type"], "application/json");

    let text = json(
        &mut db,
        "integration.http_put($1, 'plain text'::text)",
        &[&bin.url("/put")],
    );
    assert_eq!(text["data"], "plain text");
    let xml = json(
        &mut db,
        "integration.http_patch($1, '<a>1</a>'::text, '{\"Content-Type\": \"application/xml\"}')",
        &[&bin.url("/patch")],
    );
    assert_eq!(xml["data"], "<a>1</a>");
    assert_eq!(xml["headers"]["Content-Type"], "application/xml");

    let form = json(
        &mut db,
        "integration.http_post_form($1, '{\"name\": \"Zoë & co\", \"n\": 2}')",
        &[&bin.url("/post")],
    );
    assert_eq!(form["form"]["name"], "Zoë & co");
    assert_eq!(form["form"]["n"], "2");

    let bytes = json(
        &mut db,
        "integration.http_post($1, '\\x00ff10'::bytea)",
        &[&bin.url("/post")],
    );
    assert_eq!(bytes["data"], "data:application/octet-stream;base64,AP8Q");

    let delete = json(
        &mut db,
        "integration.http_delete($1)",
        &[&bin.url("/delete")],
    );
    assert!(delete["url"].as_str().unwrap().ends_with("/delete"));

    let generic = json(
        &mut db,
        "integration.http('put', $1, '{\"Content-Type\": \"text/csv\"}', convert_to('a,b', 'UTF8'))",
        &[&bin.url("/put")],
    );
    assert_eq!(generic["data"], "a,b");
    assert_eq!(generic["headers"]["Content-Type"], "text/csv");

    let head = db
        .query_one(
            "SELECT status, length(body_bytes) FROM integration.http_head($1)",
            &[&bin.url("/get")],
        )
        .unwrap();
    assert_eq!((head.get::<_, i32>(0), head.get::<_, i32>(1)), (200, 0));
}

#[test]
fn responses_carry_status_headers_binary_bodies_and_timing() {
    let (_cluster, mut db, bin) = setup();
    let teapot = db
        .query_one(
            "SELECT status, body FROM integration.http_get($1)",
            &[&bin.url("/status/418")],
        )
        .unwrap();
    assert_eq!(teapot.get::<_, i32>(0), 418, "a non-2xx status is a result");
    let headers = db
        .query_one(
            "SELECT headers->>'x-out', content_type, elapsed > interval '0'
             FROM integration.http_get($1, params => '{\"X-Out\": \"yes\"}')",
            &[&bin.url("/response-headers")],
        )
        .unwrap();
    assert_eq!(headers.get::<_, String>(0), "yes");
    assert_eq!(headers.get::<_, String>(1), "application/json");
    assert!(headers.get::<_, bool>(2));
    let binary = db
        .query_one(
            "SELECT length(body_bytes), body IS NULL FROM integration.http_get($1)",
            &[&bin.url("/bytes/4096?seed=7")],
        )
        .unwrap();
    assert_eq!(binary.get::<_, i32>(0), 4096);
    assert!(
        binary.get::<_, bool>(1),
        "bytes that are not UTF-8 have no text body"
    );
}

#[test]
fn limits_and_timeouts_raise_clear_errors() {
    let (_cluster, mut db, bin) = setup();
    let (code, message) = sqlstate(db.query_one(
        "SELECT integration.http_get($1, timeout => '300 ms')",
        &[&bin.url("/delay/5")],
    ));
    assert_eq!(code, SqlState::QUERY_CANCELED);
    assert!(
        message.contains("127.0.0.1") && message.contains("timed out"),
        "{message}"
    );

    db.batch_execute("SET integration.http_max_response_bytes = 1000")
        .unwrap();
    let (code, message) = sqlstate(db.query_one(
        "SELECT integration.http_get($1)",
        &[&bin.url("/bytes/5000")],
    ));
    assert_eq!(code, SqlState::PROGRAM_LIMIT_EXCEEDED);
    assert!(message.contains("larger than 1000 bytes"), "{message}");
    db.batch_execute("RESET integration.http_max_response_bytes")
        .unwrap();

    let ok: i32 = db
        .query_one(
            "SELECT status FROM integration.http_get($1)",
            &[&bin.url("/redirect/3")],
        )
        .unwrap()
        .get(0);
    assert_eq!(ok, 200);
    db.batch_execute("SET integration.http_max_redirects = 2")
        .unwrap();
    let (code, message) = sqlstate(db.query_one(
        "SELECT integration.http_get($1)",
        &[&bin.url("/redirect/3")],
    ));
    assert_eq!(code, SqlState::PROGRAM_LIMIT_EXCEEDED);
    assert!(message.contains("redirects"), "{message}");

    let get = bin.url("/get");
    for (sql, url, what) in [
        (
            "SELECT integration.http('NOT A METHOD', $1)",
            get.as_str(),
            "invalid HTTP method",
        ),
        (
            "SELECT integration.http_get($1)",
            "not a url",
            "invalid URL",
        ),
        ("SELECT integration.http_get($1)", "ftp://127.0.0.1/", "ftp"),
    ] {
        let (code, message) = sqlstate(db.query_one(sql, &[&url]));
        assert!(
            code == SqlState::INVALID_PARAMETER_VALUE || code == SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}: {code:?}"
        );
        assert!(message.contains(what), "{sql}: {message}");
    }
}

#[test]
fn statement_timeout_and_cancel_stop_a_running_call() {
    let (cluster, mut db, bin) = setup();
    db.batch_execute("SET statement_timeout = '300ms'").unwrap();
    let started = Instant::now();
    let (code, _) =
        sqlstate(db.query_one("SELECT integration.http_get($1)", &[&bin.url("/delay/10")]));
    assert_eq!(code, SqlState::QUERY_CANCELED);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped long before the server answered"
    );
    db.batch_execute("RESET statement_timeout").unwrap();

    let pid: i32 = db.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let mut other = cluster.connect("app");
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        other
            .execute("SELECT pg_cancel_backend($1)", &[&pid])
            .unwrap();
    });
    let started = Instant::now();
    let (code, _) =
        sqlstate(db.query_one("SELECT integration.http_get($1)", &[&bin.url("/delay/10")]));
    canceller.join().unwrap();
    assert_eq!(code, SqlState::QUERY_CANCELED);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The session stays usable and its connections too.
    let status: i32 = db
        .query_one(
            "SELECT status FROM integration.http_get($1)",
            &[&bin.url("/get")],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, 200);
}

#[test]
fn the_policy_refuses_private_addresses_hosts_and_redirects() {
    let cluster = PgCluster::start();
    let mut db = cluster.create_database("app");
    let bin = HttpBin::start();
    let refused = |db: &mut Client, url: String| {
        sqlstate(db.query_one("SELECT integration.http_get($1)", &[&url]))
    };

    let (code, message) = refused(&mut db, bin.url("/get"));
    assert_eq!(
        code,
        SqlState::INSUFFICIENT_PRIVILEGE,
        "loopback is refused by default"
    );
    assert!(
        message.contains("127.0.0.1") && message.contains("loopback"),
        "{message}"
    );
    let (code, message) = refused(&mut db, format!("http://localhost:{}/get", bin.port()));
    assert_eq!(
        code,
        SqlState::INSUFFICIENT_PRIVILEGE,
        "a name resolving to loopback too"
    );
    assert!(message.contains("localhost"), "{message}");
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
    ] {
        let (code, _) = refused(&mut db, url.to_string());
        assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE, "{url}");
    }

    db.batch_execute("SET integration.http_allowed_networks = '127.0.0.1/32'")
        .unwrap();
    let redirect = format!(
        "{}?url=http://127.0.0.2:{}/get",
        bin.url("/redirect-to"),
        bin.port()
    );
    let (code, message) = refused(&mut db, redirect);
    assert_eq!(
        code,
        SqlState::INSUFFICIENT_PRIVILEGE,
        "every redirect hop is checked"
    );
    assert!(message.contains("127.0.0.2"), "{message}");

    db.batch_execute("SET integration.http_allowed_hosts = 'api.example.com, *.example.org'")
        .unwrap();
    let (code, message) = refused(&mut db, bin.url("/get"));
    assert_eq!(
        code,
        SqlState::INSUFFICIENT_PRIVILEGE,
        "hosts outside the allowlist"
    );
    assert!(message.contains("127.0.0.1"), "{message}");

    // Roles: only superusers change the policy; PUBLIC cannot call at all.
    db.batch_execute(
        "CREATE ROLE caller LOGIN IN ROLE integration_user; CREATE ROLE stranger LOGIN;
         ALTER ROLE caller SET integration.http_allowed_networks = '127.0.0.1/32';",
    )
    .unwrap();
    let mut caller = cluster.connect_as("app", "caller");
    let status: i32 = caller
        .query_one(
            "SELECT status FROM integration.http_get($1)",
            &[&bin.url("/get")],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, 200, "the role's own policy applies");
    let (code, _) =
        sqlstate(caller.batch_execute("SET integration.http_allowed_networks = '0.0.0.0/0'"));
    assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE);
    let mut stranger = cluster.connect_as("app", "stranger");
    let (code, _) =
        sqlstate(stranger.query_one("SELECT integration.http_get($1)", &[&bin.url("/get")]));
    assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE);
}

#[test]
fn every_call_is_audited_without_headers_or_bodies() {
    let (_cluster, mut db, bin) = setup();
    db.query_one(
        "SELECT integration.http_post($1, 'secret body'::text, '{\"Authorization\": \"Bearer hunter2\"}')",
        &[&bin.url("/post")],
    )
    .unwrap();
    let _ = db.query_one(
        "SELECT integration.http_get($1, timeout => '100ms')",
        &[&bin.url("/delay/3")],
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let rows = loop {
        let rows = db
            .query(
                "SELECT target, ok, detail FROM integration.audit_log WHERE action = 'http.request' ORDER BY id",
                &[],
            )
            .unwrap();
        if rows.len() >= 2 || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(rows.len(), 2);
    let first: Value = rows[0].get(2);
    assert_eq!(rows[0].get::<_, String>(0), "127.0.0.1");
    assert!(rows[0].get::<_, bool>(1));
    assert_eq!(first["method"], "POST");
    assert_eq!(first["status"], 200);
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    let second: Value = rows[1].get(2);
    assert!(!rows[1].get::<_, bool>(1));
    assert_eq!(second["error"], "timeout");
    for row in &rows {
        let detail: Value = row.get(2);
        let text = detail.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("secret body"),
            "{text}"
        );
    }
}

#[test]
fn multipart_bodies_carry_fields_and_files() {
    let (_cluster, mut db, bin) = setup();
    let post = json(
        &mut db,
        "integration.http_post_multipart($1,
             fields => '{\"title\": \"héllo\", \"n\": 2}',
             files => ARRAY[
                 ROW('upload', 'a.pdf', 'application/pdf', '\\x00ff0d0a'::bytea)::integration.http_file,
                 ROW('notes', 'n.txt', NULL, convert_to('line', 'UTF8'))::integration.http_file])",
        &[&bin.url("/post")],
    );
    assert_eq!(post["form"]["title"], "héllo");
    assert_eq!(post["form"]["n"], "2");
    assert_eq!(
        post["files"]["upload"],
        "data:application/pdf;base64,AP8NCg=="
    );
    assert_eq!(post["files"]["notes"], "line");
    let content_type = post["headers"]["Content-Type"].as_str().unwrap();
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type}"
    );
}

/// A redirect to another origin (here another port) drops credential
/// headers, as browsers and curl do; no request carries a Referer; a
/// caller's `Host` header is refused; an invalid URL's error shows no
/// password or query (issue 23, item 2).
#[test]
fn redirects_to_other_origins_drop_credentials_and_errors_hide_urls_secrets() {
    let (_cluster, mut db, bin) = setup();
    let other = HttpBin::start();
    let headers =
        r#"{"X-Api-Key": "k-secret", "Authorization": "Bearer t-secret", "X-Trace": "kept"}"#;
    let echoed = |db: &mut Client, url: String| -> Value {
        json(
            db,
            "integration.http_get($1, headers => $2::text::jsonb)",
            &[&url, &headers],
        )["headers"]
            .clone()
    };
    let same = echoed(
        &mut db,
        format!("{}?url=/headers&status_code=307", bin.url("/redirect-to")),
    );
    assert_eq!(same["X-Api-Key"], "k-secret", "{same}");
    assert_eq!(same["Authorization"], "Bearer t-secret", "{same}");
    assert!(same.get("Referer").is_none(), "{same}");
    for status in [302, 307] {
        let away = echoed(
            &mut db,
            format!(
                "{}?url={}&status_code={status}",
                bin.url("/redirect-to"),
                other.url("/headers")
            ),
        );
        assert!(away.get("X-Api-Key").is_none(), "{status}: {away}");
        assert!(away.get("Authorization").is_none(), "{status}: {away}");
        assert!(away.get("Referer").is_none(), "{status}: {away}");
        assert_eq!(away["X-Trace"], "kept", "{status}: {away}");
    }

    let (code, message) = sqlstate(db.query_one(
        "SELECT integration.http_get($1, headers => '{\"Host\": \"internal.example\"}')",
        &[&bin.url("/headers")],
    ));
    assert_eq!(code, SqlState::INVALID_PARAMETER_VALUE);
    assert!(message.contains("Host"), "{message}");

    let (code, message) = sqlstate(db.query_one(
        "SELECT integration.http_get('http://user:hunter2@exa mple.com/?token=tok-secret')",
        &[],
    ));
    assert_eq!(code, SqlState::INVALID_PARAMETER_VALUE);
    assert!(message.contains("invalid URL"), "{message}");
    assert!(
        !message.contains("hunter2") && !message.contains("tok-secret"),
        "{message}"
    );
}
