//! End-to-end tests of `GET /openapi.json`: the real sidecar binary in front
//! of a real PostgreSQL with pg_integration. A webhook created, changed and
//! dropped while the sidecar runs shows in, changes in and disappears from
//! the document without a restart; the ETag follows the content and
//! `If-None-Match` is answered 304; the document of every kind of webhook
//! and of SSO providers validates as OpenAPI 3.1 with `openapi-spec-validator`
//! (PyPI, in the harness's virtualenv: `make test-deps`); and schemathesis
//! (PyPI, build/schemathesis) fuzzes every operation of a live sidecar for
//! two minutes with all its checks, after which every stored event must
//! answer an accepted delivery.

use integration_tests::{scratch_dir, workspace_root, PgCluster, Sidecar};
use serde_json::{json, Value};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

const DB: &str = "openapi_e2e";
/// How long a committed change may take to show in the document.
const RELOAD_WITHIN: Duration = Duration::from_secs(10);

fn wait_until(within: Duration, mut attempt: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !attempt() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        sleep(Duration::from_millis(50));
    }
}

/// `GET /openapi.json`, optionally with `If-None-Match`: status, ETag, body text.
fn fetch(sidecar: &Sidecar, if_none_match: Option<&str>) -> (u16, String, String) {
    let mut request = sidecar.client.get(sidecar.url("/openapi.json"));
    if let Some(tag) = if_none_match {
        request = request.header("If-None-Match", tag);
    }
    let response = request
        .send()
        .unwrap_or_else(|e| panic!("GET /openapi.json: {e}\n{}", sidecar.log()));
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, etag, response.text().expect("the body"))
}

/// The document once `ready` holds for it, with its ETag and text.
fn document_when(sidecar: &Sidecar, ready: impl Fn(&Value) -> bool) -> (Value, String, String) {
    let mut last = None;
    let deadline = Instant::now() + RELOAD_WITHIN;
    loop {
        let (status, etag, text) = fetch(sidecar, None);
        assert_eq!(status, 200, "{text}");
        let doc: Value = serde_json::from_str(&text).expect("a JSON document");
        if ready(&doc) {
            return (doc, etag, text);
        }
        assert!(
            Instant::now() < deadline,
            "the document did not change within {RELOAD_WITHIN:?}: {}\n{}",
            last.unwrap_or(text),
            sidecar.log()
        );
        last = Some(text);
        sleep(Duration::from_millis(50));
    }
}

/// A cluster with the extension and integration_sidecar allowed to log in,
/// and a sidecar on it with both configurations loaded.
fn setup(prepare: &str) -> (PgCluster, postgres::Client, Sidecar) {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database(DB);
    admin
        .batch_execute("ALTER ROLE integration_sidecar LOGIN")
        .expect("let integration_sidecar log in");
    admin.batch_execute(prepare).expect("the configuration");
    let sidecar = Sidecar::start(&cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(Duration::from_secs(10), || {
        let log = sidecar.log();
        log.contains("webhook configuration loaded") && log.contains("SSO configuration loaded")
    });
    (cluster, admin, sidecar)
}

#[test]
fn the_document_of_every_kind_of_webhook_and_provider_is_valid_openapi_3_1() {
    let validator = workspace_root().join("build/venv/bin/openapi-spec-validator");
    assert!(
        validator.is_file(),
        "{} is missing: run `make test-deps`",
        validator.display()
    );
    let (_cluster, _admin, sidecar) = setup(
        "CREATE ROLE app_user;
         SELECT integration.create_webhook('plain', 'none');
         SELECT integration.create_webhook('keyed', 'api-key');
         SELECT integration.create_webhook('gh', 'github', 'github-secret-value-1');
         SELECT integration.create_webhook('sw', 'standard');
         SELECT integration.create_webhook('st', 'stripe', 'stripe-secret-value-2');
         SELECT integration.create_webhook('sl', 'slack', 'slack-secret-value-3');
         SELECT integration.create_webhook('b', 'basic', 'user:basic-password-4');
         SELECT integration.create_webhook('h', 'hmac-sha256', 'hmac-secret-value-5',
             signature_header => 'X-Sig', signature_encoding => 'base64',
             allowed_ips => ARRAY['127.0.0.1/32']::cidr[], delivery_id => 'X-Delivery');
         SELECT integration.create_webhook('orders', 'none', json_schema => '{
             \"$schema\": \"https://json-schema.org/draft/2020-12/schema\",
             \"type\": \"object\", \"required\": [\"id\"],
             \"properties\": {\"id\": {\"$ref\": \"#/$defs/id\"}, \"kind\": {\"const\": \"order\"}},
             \"$defs\": {\"id\": {\"type\": \"integer\", \"minimum\": 1}}}');
         SELECT integration.create_webhook('off', 'none', enabled => false);
         SELECT integration.create_sso_provider('dir', 'ldap',
             jsonb_build_object('url', 'ldap://127.0.0.1:9', 'bind_dn', 'cn=reader,dc=x',
                 'bind_password', 'ldap-bind-password-6', 'search_base', 'dc=x',
                 'search_filter', '(uid={username})'),
             default_role => 'app_user');
         SELECT integration.create_sso_provider('generic', 'oauth2',
             jsonb_build_object('authorize_url', 'http://127.0.0.1:9/auth',
                 'token_url', 'http://127.0.0.1:9/token', 'userinfo_url', 'http://127.0.0.1:9/me',
                 'client_id', 'c', 'client_secret', 'oauth2-client-secret-7', 'allow_http', true),
             default_role => 'app_user');",
    );
    let (doc, _, text) = document_when(&sidecar, |_| true);
    for name in ["plain", "keyed", "gh", "sw", "st", "sl", "b", "h", "orders"] {
        assert!(
            doc["paths"][format!("/webhooks/{name}")]["post"].is_object(),
            "{name}: {text}"
        );
    }
    assert!(doc["paths"].get("/webhooks/off").is_none());
    assert!(
        doc["paths"]["/auth/dir/login"]["post"].is_object(),
        "{text}"
    );
    assert!(
        doc["paths"]["/auth/generic/callback"]["get"].is_object(),
        "{text}"
    );
    for secret in [
        "github-secret-value-1",
        "stripe-secret-value-2",
        "slack-secret-value-3",
        "basic-password-4",
        "hmac-secret-value-5",
        "ldap-bind-password-6",
        "oauth2-client-secret-7",
    ] {
        assert!(!text.contains(secret), "{secret} is in the document");
    }

    let file = scratch_dir("openapi").join("openapi.json");
    std::fs::write(&file, &text).expect("write the document");
    let checked = Command::new(&validator)
        .args(["--schema", "3.1", "--errors", "all"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        checked.status.success(),
        "openapi-spec-validator refused the document:\n{}{}\n{text}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    // A document it refuses, so a validator that accepts anything fails here.
    let mut broken = doc.clone();
    broken["paths"]["/webhooks/plain"]["post"]["responses"] = json!({ "200": {} });
    std::fs::write(&file, broken.to_string()).expect("write the broken document");
    let refused = Command::new(&validator)
        .args(["--schema", "3.1"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        !refused.status.success(),
        "a response without a description passed"
    );
    std::fs::remove_dir_all(file.parent().expect("a folder")).ok();
}

#[test]
fn a_webhook_created_changed_and_dropped_shows_changes_and_disappears_without_a_restart() {
    let (_cluster, mut admin, sidecar) = setup("");
    let version: String = admin
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_integration'",
            &[],
        )
        .expect("the extension version")
        .get(0);

    let (before, before_tag, _) = document_when(&sidecar, |_| true);
    assert_eq!(before["openapi"], "3.1.0");
    assert_eq!(before["info"]["version"], version.as_str());
    assert_eq!(
        before["servers"][0]["url"]
            .as_str()
            .map(|u| u.trim_end_matches('/')),
        Some(sidecar.base_url.as_str())
    );
    assert!(before["paths"]["/healthz"]["get"].is_object(), "{before}");
    assert!(before["paths"].get("/webhooks/orders").is_none());
    assert!(
        before_tag.starts_with('"') && before_tag.len() > 2,
        "{before_tag}"
    );
    let (status, tag, body) = fetch(&sidecar, Some(&before_tag));
    assert_eq!(
        (status, tag.as_str(), body.as_str()),
        (304, before_tag.as_str(), "")
    );

    let secret = "orders-github-secret-1";
    admin
        .execute(
            "SELECT integration.create_webhook('orders', 'github', $1)",
            &[&secret],
        )
        .expect("create_webhook");
    let (created, created_tag, text) =
        document_when(&sidecar, |doc| doc["paths"]["/webhooks/orders"].is_object());
    let op = &created["paths"]["/webhooks/orders"]["post"];
    assert_eq!(op["parameters"][0]["name"], "X-Hub-Signature-256", "{op}");
    assert_eq!(op["parameters"][0]["required"], true, "{op}");
    assert!(!text.contains(secret), "the secret is in the document");
    assert_ne!(created_tag, before_tag);
    // The old tag no longer matches: the new document comes whole.
    let (status, _, body) = fetch(&sidecar, Some(&before_tag));
    assert_eq!(status, 200);
    assert_eq!(body, text);
    assert_eq!(fetch(&sidecar, Some(&created_tag)).0, 304);

    let schema = json!({ "type": "object", "required": ["id"],
                         "properties": { "id": { "type": "integer" } } });
    admin
        .execute(
            "SELECT integration.alter_webhook('orders', json_schema => $1)",
            &[&schema],
        )
        .expect("alter_webhook");
    let (changed, changed_tag, _) = document_when(&sidecar, |doc| {
        doc["components"]["schemas"].get("webhook.orders").is_some()
    });
    assert_eq!(changed["components"]["schemas"]["webhook.orders"], schema);
    let body = &changed["paths"]["/webhooks/orders"]["post"]["requestBody"];
    assert_eq!(body["required"], true, "{body}");
    assert_eq!(
        body["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/webhook.orders"
    );
    assert_ne!(changed_tag, created_tag);

    admin
        .execute("SELECT integration.drop_webhook('orders')", &[])
        .expect("drop_webhook");
    let (_, after_tag, _) = document_when(&sidecar, |doc| {
        doc["paths"].get("/webhooks/orders").is_none()
    });
    // The same configuration as at the start gives the same bytes, so the same tag.
    assert_eq!(after_tag, before_tag);
    assert_eq!(fetch(&sidecar, Some(&before_tag)).0, 304);
}

/// `(method, path, status)` of every exchange in a HAR file of schemathesis.
fn exchanges(har: &Value) -> Vec<(String, String, u16)> {
    har["log"]["entries"]
        .as_array()
        .expect("HAR entries")
        .iter()
        .map(|entry| {
            let url = entry["request"]["url"].as_str().expect("a request URL");
            let path = url
                .split_once("://")
                .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                .unwrap_or("/");
            let path = path.split('?').next().unwrap_or(path);
            (
                entry["request"]["method"]
                    .as_str()
                    .expect("a method")
                    .to_owned(),
                path.to_owned(),
                entry["response"]["status"].as_u64().expect("a status") as u16,
            )
        })
        .collect()
}

#[test]
fn schemathesis_finds_every_answer_in_the_document_and_stores_only_accepted_events() {
    let schemathesis = workspace_root().join("build/schemathesis/bin/schemathesis");
    assert!(
        schemathesis.is_file(),
        "{} is missing: run `make test-deps`",
        schemathesis.display()
    );
    let (_cluster, mut admin, sidecar) = setup(
        "CREATE ROLE app_user;
         SELECT integration.create_webhook('plain', 'none');
         SELECT integration.create_webhook('keyed', 'api-key');
         SELECT integration.create_webhook('gh', 'github', 'github-secret-value-1');
         SELECT integration.create_webhook('sw', 'standard');
         SELECT integration.create_webhook('orders', 'none', json_schema => '{
             \"type\": \"object\", \"required\": [\"id\"], \"additionalProperties\": false,
             \"properties\": {\"id\": {\"type\": \"integer\", \"minimum\": 1},
                            \"kind\": {\"enum\": [\"order\", \"refund\"]}}}');",
    );
    let key: String = admin
        .query_one(
            "SELECT integration.create_api_key('fuzz', 'app_user', ARRAY['webhooks:keyed'])",
            &[],
        )
        .expect("an API key")
        .get(0);
    let dir = scratch_dir("schemathesis");
    let har = dir.join("run.har");
    let run = Command::new(&schemathesis)
        .current_dir(&dir)
        .arg("run")
        .arg(sidecar.url("/openapi.json"))
        .args(["--checks", "all", "--max-examples", "30", "--seed", "1"])
        .args([
            "--max-redirects",
            "0",
            "--request-timeout",
            "10",
            "--workers",
            "2",
        ])
        .args([
            "--max-time",
            "120",
            "--no-color",
            "--generation-database",
            "none",
        ])
        .args(["--report", "har", "--report-har-path"])
        .arg(&har)
        .arg("--header")
        .arg(format!("X-API-Key: {key}"))
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    // Kept for reading after the run (and the note's figures).
    std::fs::write(
        workspace_root().join("build/schemathesis-report.txt"),
        &report,
    )
    .expect("save the report");
    assert!(
        run.status.success(),
        "schemathesis found failures:\n{report}"
    );
    let har: Value = serde_json::from_str(&std::fs::read_to_string(&har).expect("the HAR report"))
        .expect("a HAR document");
    let exchanges = exchanges(&har);
    assert!(
        exchanges.len() > 100,
        "only {} requests\n{report}",
        exchanges.len()
    );
    assert!(
        exchanges.iter().all(|(_, _, status)| *status < 500),
        "a server error\n{report}"
    );
    // Every stored event answers one accepted delivery: none for a refusal.
    for name in ["plain", "keyed", "gh", "sw", "orders"] {
        let path = format!("/webhooks/{name}");
        let accepted = exchanges
            .iter()
            .filter(|(method, p, status)| {
                method == "POST" && *p == path && (200..300).contains(status)
            })
            .count() as i64;
        let refused = exchanges
            .iter()
            .filter(|(method, p, status)| method == "POST" && *p == path && *status >= 400)
            .count();
        let stored: i64 = admin
            .query_one(
                "SELECT count(*) FROM integration.webhook_events WHERE webhook = $1",
                &[&name],
            )
            .expect("count the events")
            .get(0);
        assert_eq!(
            stored, accepted,
            "{name}: {stored} events stored for {accepted} accepted deliveries ({refused} refused)"
        );
        assert!(
            refused > 0,
            "{name}: schemathesis sent nothing it should refuse"
        );
        eprintln!("{name}: {accepted} accepted, {refused} refused, {stored} stored");
    }
    eprintln!("{report}");
    std::fs::remove_dir_all(&dir).ok();
}
