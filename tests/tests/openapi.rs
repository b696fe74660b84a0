//! End-to-end tests of `GET /openapi.json`: the real sidecar binary in front
//! of a real PostgreSQL with pg_integration. A webhook created, changed and
//! dropped while the sidecar runs shows in, changes in and disappears from
//! the document without a restart; the ETag follows the content and
//! `If-None-Match` is answered 304.

use integration_tests::{PgCluster, Sidecar};
use serde_json::{json, Value};
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

#[test]
fn a_webhook_created_changed_and_dropped_shows_changes_and_disappears_without_a_restart() {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database(DB);
    admin
        .batch_execute("ALTER ROLE integration_sidecar LOGIN")
        .expect("let integration_sidecar log in");
    let version: String = admin
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_integration'",
            &[],
        )
        .expect("the extension version")
        .get(0);
    let sidecar = Sidecar::start(&cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(Duration::from_secs(10), || {
        let log = sidecar.log();
        log.contains("webhook configuration loaded") && log.contains("SSO configuration loaded")
    });

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
