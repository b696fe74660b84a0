//! End-to-end tests of webhook ingress: the real sidecar binary in front of a
//! real PostgreSQL with pg_integration. Every signature scheme with valid,
//! tampered, stale, replayed and rotated-secret deliveries; every status
//! code; concurrent redelivery; handlers; reload after alter_webhook; the
//! database stopped under load; and `kill -9` of the sidecar under load.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use integration_tests::{sample, PgCluster, Sidecar};
use postgres::fallible_iterator::FallibleIterator;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, sleep};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DB: &str = "webhooks_e2e";

/// A cluster with the extension and integration_sidecar allowed to log in.
fn setup() -> (PgCluster, postgres::Client) {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database(DB);
    admin
        .batch_execute("ALTER ROLE integration_sidecar LOGIN")
        .expect("let integration_sidecar log in");
    (cluster, admin)
}

/// A sidecar for `cluster`; it loads the webhooks that exist when it starts.
fn start_sidecar(cluster: &PgCluster) -> Sidecar {
    let sidecar = Sidecar::start(&cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(Duration::from_secs(10), || {
        sidecar.log().contains("webhook configuration loaded")
    });
    sidecar
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Headers of a Standard Webhooks delivery signed with `secret` (whsec_…).
fn standard(secret: &str, id: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    let key = B64
        .decode(secret.trim_start_matches("whsec_"))
        .expect("base64 secret");
    let sig = B64.encode(hmac(
        &key,
        &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body],
    ));
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), format!("v1,{sig}")),
    ]
}

fn github(secret: &str, delivery: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("X-GitHub-Delivery".into(), delivery.into()),
        ("X-GitHub-Event".into(), "push".into()),
        (
            "X-Hub-Signature-256".into(),
            format!("sha256={}", hex(&hmac(secret.as_bytes(), &[body]))),
        ),
    ]
}

fn stripe(secret: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    let sig = hex(&hmac(
        secret.as_bytes(),
        &[ts.to_string().as_bytes(), b".", body],
    ));
    vec![("Stripe-Signature".into(), format!("t={ts},v1={sig}"))]
}

fn slack(secret: &str, ts: i64, body: &[u8]) -> Vec<(String, String)> {
    let sig = hex(&hmac(
        secret.as_bytes(),
        &[b"v0:", ts.to_string().as_bytes(), b":", body],
    ));
    vec![
        ("X-Slack-Request-Timestamp".into(), ts.to_string()),
        ("X-Slack-Signature".into(), format!("v0={sig}")),
    ]
}

struct Answer {
    status: u16,
    body: Value,
}

fn post(
    sidecar: &Sidecar,
    name: &str,
    content_type: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Answer, String> {
    let mut request = sidecar
        .client
        .post(sidecar.url(&format!("/webhooks/{name}")))
        .body(body.to_vec());
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let response = request.send().map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().map_err(|e| e.to_string())?;
    let body = serde_json::from_str(&text)
        .map_err(|e| format!("{status} with a non-JSON body ({e}): {text}"))?;
    Ok(Answer { status, body })
}

fn post_ok(sidecar: &Sidecar, name: &str, headers: &[(String, String)], body: &[u8]) -> Answer {
    post(sidecar, name, "application/json", headers, body)
        .unwrap_or_else(|e| panic!("POST /webhooks/{name}: {e}\n{}", sidecar.log()))
}

fn create(admin: &mut postgres::Client, sql: &str) -> (String, Option<String>) {
    let row = admin
        .query_one(
            &format!("SELECT * FROM integration.create_webhook({sql})"),
            &[],
        )
        .unwrap_or_else(|e| panic!("create_webhook({sql}): {:?}", e.as_db_error()));
    (row.get(0), row.get(1))
}

fn count(admin: &mut postgres::Client, sql: &str) -> i64 {
    admin
        .query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {:?}", e.as_db_error()))
        .get(0)
}

/// Polls until the sidecar answers `status` to a delivery (a reload happened).
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

#[test]
fn every_scheme_verifies_valid_tampered_stale_replayed_and_rotated_deliveries() {
    let (cluster, mut admin) = setup();
    let (path, std_secret) = create(&mut admin, "'std', 'standard'");
    assert_eq!(path, "/webhooks/std");
    let std_secret = std_secret.expect("a generated whsec_ secret");
    assert!(std_secret.starts_with("whsec_"), "{std_secret}");
    let (_, none) = create(
        &mut admin,
        "'gh', 'github', secret => 'It''s a Secret to Everybody'",
    );
    assert_eq!(none, None, "a given secret is not echoed");
    let gh_secret = "It's a Secret to Everybody";
    let stripe_secret = create(&mut admin, "'pay', 'stripe'").1.expect("secret");
    let slack_secret = create(&mut admin, "'chat', 'slack'").1.expect("secret");
    let hmac_secret = create(
        &mut admin,
        "'erp', 'hmac-sha256', signature_header => 'X-ERP-Signature', \
         signature_encoding => 'base64', delivery_id => 'X-ERP-Id'",
    )
    .1
    .expect("secret");
    let basic_secret = create(&mut admin, "'basic', 'basic'").1.expect("secret");
    create(&mut admin, "'open', 'none'");
    create(&mut admin, "'keyed', 'api-key'");
    admin
        .batch_execute("CREATE ROLE hook_sender NOLOGIN")
        .expect("role");
    let good_key: String = admin
        .query_one(
            "SELECT integration.create_api_key('sender', 'hook_sender', '{webhooks:keyed}')",
            &[],
        )
        .expect("key")
        .get(0);
    let sidecar = start_sidecar(&cluster);
    let wrong_scope: String = admin
        .query_one(
            "SELECT integration.create_api_key('other', 'hook_sender', '{webhooks:other}')",
            &[],
        )
        .expect("key")
        .get(0);

    // Standard Webhooks: valid, replayed, tampered, stale.
    let body = br#"{"type":"invoice.paid","amount":42}"#;
    let headers = standard(&std_secret, "msg_1", now(), body);
    let first = post_ok(&sidecar, "std", &headers, body);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["duplicate"], false);
    let event_id = first.body["event_id"].as_i64().expect("an event id");
    let replay = post_ok(&sidecar, "std", &headers, body);
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["duplicate"], true);
    assert_eq!(replay.body["event_id"], event_id);
    let tampered = post_ok(
        &sidecar,
        "std",
        &headers,
        br#"{"type":"invoice.paid","amount":43}"#,
    );
    assert_eq!(tampered.status, 401, "{}", tampered.body);
    let stale = standard(&std_secret, "msg_2", now() - 301, body);
    let stale = post_ok(&sidecar, "std", &stale, body);
    assert_eq!(stale.status, 401);
    assert!(
        stale.body["error"]
            .as_str()
            .unwrap_or("")
            .contains("timestamp"),
        "{}",
        stale.body
    );
    let row = admin
        .query_one(
            "SELECT webhook, delivery_id, payload, raw_body, headers, content_type, host(source)
               FROM integration.webhook_events WHERE id = $1",
            &[&event_id],
        )
        .expect("the stored event");
    assert_eq!(row.get::<_, String>(0), "std");
    assert_eq!(row.get::<_, String>(1), "msg_1");
    assert_eq!(
        row.get::<_, Value>(2),
        json!({"type": "invoice.paid", "amount": 42})
    );
    assert_eq!(row.get::<_, Vec<u8>>(3), body.to_vec());
    let stored_headers: Value = row.get(4);
    assert_eq!(stored_headers["webhook-id"], "msg_1");
    assert!(
        stored_headers.get("webhook-signature").is_none(),
        "{stored_headers}"
    );
    assert_eq!(row.get::<_, String>(5), "application/json");
    assert_eq!(row.get::<_, String>(6), "127.0.0.1");

    // GitHub: valid, replayed (same X-GitHub-Delivery), tampered.
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    let h = github(gh_secret, "72d3162e-cc78-11e3-81ab-4c9367dc0958", body);
    let a = post_ok(&sidecar, "gh", &h, body);
    assert_eq!(
        (a.status, &a.body["duplicate"]),
        (200, &json!(false)),
        "{}",
        a.body
    );
    let b = post_ok(&sidecar, "gh", &h, body);
    assert_eq!((b.status, &b.body["event_id"]), (200, &a.body["event_id"]));
    assert_eq!(post_ok(&sidecar, "gh", &h, b"{}").status, 401);

    // Stripe: the delivery id is the event id in the body.
    let body = br#"{"id":"evt_123","object":"event","type":"charge.succeeded"}"#;
    let a = post_ok(&sidecar, "pay", &stripe(&stripe_secret, now(), body), body);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["delivery_id"], "evt_123");
    let again = post_ok(&sidecar, "pay", &stripe(&stripe_secret, now(), body), body);
    assert_eq!(
        (again.status, &again.body["duplicate"]),
        (200, &json!(true))
    );
    assert_eq!(
        post_ok(
            &sidecar,
            "pay",
            &stripe(&stripe_secret, now() - 600, body),
            body
        )
        .status,
        401
    );
    assert_eq!(
        post_ok(&sidecar, "pay", &stripe("whsec_wrong", now(), body), body).status,
        401
    );

    // Slack: form bodies are stored as objects.
    let body = b"token=x&team_id=T1&command=%2Fdeploy&text=prod";
    let a = post(
        &sidecar,
        "chat",
        "application/x-www-form-urlencoded",
        &slack(&slack_secret, now(), body),
        body,
    )
    .expect("slack");
    assert_eq!(a.status, 200, "{}", a.body);
    let payload: Value = admin
        .query_one(
            "SELECT payload FROM integration.webhook_events WHERE id = $1",
            &[&a.body["event_id"].as_i64().expect("id")],
        )
        .expect("slack event")
        .get(0);
    assert_eq!(payload["command"], "/deploy");
    let stale = slack(&slack_secret, now() - 400, body);
    assert_eq!(
        post(
            &sidecar,
            "chat",
            "application/x-www-form-urlencoded",
            &stale,
            body
        )
        .expect("slack")
        .status,
        401
    );

    // Generic HMAC (base64) with a configured delivery-id header; XML body.
    let body = b"<order id=\"7\"/>";
    let sig = B64.encode(hmac(hmac_secret.as_bytes(), &[body]));
    let h = vec![
        ("X-ERP-Signature".to_owned(), sig),
        ("X-ERP-Id".to_owned(), "order-7".to_owned()),
    ];
    let a = post(&sidecar, "erp", "application/xml", &h, body).expect("erp");
    assert_eq!(
        (a.status, &a.body["delivery_id"]),
        (200, &json!("order-7")),
        "{}",
        a.body
    );
    let b = post(&sidecar, "erp", "application/xml", &h, b"<order id=\"8\"/>").expect("erp");
    assert_eq!(b.status, 401);

    // Basic, none and api-key.
    let auth = format!("Basic {}", B64.encode(&basic_secret));
    let basic = |value: &str| vec![("Authorization".to_owned(), value.to_owned())];
    assert_eq!(post_ok(&sidecar, "basic", &basic(&auth), b"{}").status, 200);
    assert_eq!(
        post_ok(
            &sidecar,
            "basic",
            &basic("Basic d2ViaG9vazp3cm9uZw=="),
            b"{}"
        )
        .status,
        401
    );
    assert_eq!(
        post(&sidecar, "open", "text/plain", &[], b"hello")
            .expect("open")
            .status,
        200
    );
    let bearer = |key: &str| vec![("Authorization".to_owned(), format!("Bearer {key}"))];
    assert_eq!(
        post_ok(&sidecar, "keyed", &bearer(&good_key), b"{}").status,
        200
    );
    assert_eq!(
        post_ok(&sidecar, "keyed", &bearer(&wrong_scope), b"{}").status,
        401
    );
    assert_eq!(post_ok(&sidecar, "keyed", &[], b"{}").status, 401);

    // Rotation: old and new secrets both work until the old one is dropped.
    let new_secret: String = admin
        .query_one("SELECT integration.rotate_webhook_secret('gh')", &[])
        .expect("rotate")
        .get(0);
    let body = br#"{"n":1}"#;
    wait_until(Duration::from_secs(5), || {
        post_ok(&sidecar, "gh", &github(&new_secret, "rot-new", body), body).status == 200
    });
    assert_eq!(
        post_ok(&sidecar, "gh", &github(gh_secret, "rot-old", body), body).status,
        200,
        "the old secret works during the rotation"
    );
    let dropped: i32 = admin
        .query_one("SELECT integration.drop_old_webhook_secrets('gh')", &[])
        .expect("drop old")
        .get(0);
    assert_eq!(dropped, 1);
    wait_until(Duration::from_secs(5), || {
        post_ok(&sidecar, "gh", &github(gh_secret, "rot-old-2", body), body).status == 401
    });
    assert_eq!(
        post_ok(
            &sidecar,
            "gh",
            &github(&new_secret, "rot-new-2", body),
            body
        )
        .status,
        200
    );

    // Refusals are audited without secrets or bodies.
    sleep(Duration::from_millis(600));
    let refused = count(
        &mut admin,
        "SELECT count(*) FROM integration.audit_log WHERE action = 'webhook.refused' AND NOT ok",
    );
    assert!(refused >= 10, "only {refused} refusals audited");
    let audit: String = admin
        .query_one(
            "SELECT string_agg(detail::text || target, ' ') FROM integration.audit_log",
            &[],
        )
        .expect("audit")
        .get(0);
    for secret in [
        &std_secret,
        gh_secret,
        &stripe_secret,
        &new_secret,
        &good_key,
    ] {
        assert!(!audit.contains(secret), "a secret is in the audit log");
    }
    assert!(
        !audit.contains("invoice.paid"),
        "a body is in the audit log"
    );

    // Metrics per webhook and outcome.
    let metrics = sidecar.metrics();
    let stored = [("webhook", "std"), ("outcome", "stored")];
    assert_eq!(
        sample(
            &metrics,
            "integration_sidecar_webhook_deliveries_total",
            &stored
        ),
        Some(1.0),
        "{metrics}"
    );
    let bad = [("webhook", "gh"), ("outcome", "bad_signature")];
    assert!(
        sample(
            &metrics,
            "integration_sidecar_webhook_deliveries_total",
            &bad
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
}

#[test]
fn status_codes_payloads_reload_notify_and_handlers() {
    let (cluster, mut admin) = setup();
    admin
        .batch_execute(
            "CREATE ROLE app NOLOGIN;
             GRANT integration_admin TO app;
             CREATE SCHEMA app AUTHORIZATION app;
             CREATE FUNCTION app.answer(event jsonb) RETURNS jsonb
             LANGUAGE plpgsql SECURITY DEFINER AS $$
             BEGIN
                 IF event->'payload'->>'fail' = 'yes' THEN
                     RAISE EXCEPTION 'refusing order %', event->'payload'->>'order';
                 END IF;
                 RETURN jsonb_build_object('status', 201,
                     'headers', jsonb_build_object('x-order', event->'payload'->>'order'),
                     'body', jsonb_build_object('accepted', event->'payload'->'order',
                                                'event', event->'id'));
             END $$;
             ALTER FUNCTION app.answer(jsonb) OWNER TO app;",
        )
        .expect("handler");
    create(
        &mut admin,
        r#"'orders', 'none', handler => 'app.answer(jsonb)',
           json_schema => '{"type":"object","required":["order"],
                            "properties":{"order":{"type":"integer"}}}',
           max_body_bytes => 1000, delivery_id => '/order'"#,
    );
    create(
        &mut admin,
        "'private', 'none', allowed_ips => '{10.0.0.0/8}'",
    );
    let sidecar = start_sidecar(&cluster);
    let mut listener = cluster.connect(DB);
    listener
        .batch_execute("LISTEN integration_webhook")
        .expect("LISTEN");

    let send = |name: &str, ct: &str, body: &[u8]| {
        post(&sidecar, name, ct, &[], body).unwrap_or_else(|e| panic!("{e}\n{}", sidecar.log()))
    };
    // The handler's answer becomes the HTTP answer.
    let a = send("orders", "application/json", br#"{"order": 1}"#);
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["accepted"], 1);
    let event_id = a.body["event"].as_i64().expect("event id");
    let mut notes = Vec::new();
    {
        let mut notifications = listener.notifications();
        let mut it = notifications.timeout_iter(Duration::from_secs(5));
        if let Some(n) = it.next().expect("notification") {
            notes.push(n.payload().to_owned());
        }
    }
    assert_eq!(notes, vec![event_id.to_string()]);
    // A handler error rolls back that event alone and answers 500.
    let failed = send(
        "orders",
        "application/json",
        br#"{"order": 2, "fail": "yes"}"#,
    );
    assert_eq!(failed.status, 500, "{}", failed.body);
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM integration.webhook_events WHERE delivery_id = '2'"
        ),
        0,
        "nothing half-stored"
    );
    assert_eq!(
        send("orders", "application/json", br#"{"order": 3}"#).status,
        201
    );

    // Every status code, each answered in JSON.
    let unknown = send("nope", "application/json", b"{}");
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let get = sidecar.get("/webhooks/orders");
    assert_eq!(get.0, 405, "{}", get.1);
    assert_eq!(send("private", "application/json", b"{}").status, 403);
    let big = format!(r#"{{"order": 4, "pad": "{}"}}"#, "x".repeat(2000));
    assert_eq!(
        send("orders", "application/json", big.as_bytes()).status,
        413
    );
    assert_eq!(send("orders", "image/png", b"\x89PNG").status, 415);
    assert_eq!(send("orders", "application/json", b"{not json").status, 422);
    let invalid = send("orders", "application/json", br#"{"order": "five"}"#);
    assert_eq!(invalid.status, 422, "{}", invalid.body);
    assert_eq!(
        invalid.body["details"][0]["path"], "/order",
        "{}",
        invalid.body
    );

    // Reload after alter_webhook: disabled → 404, enabled → back.
    admin
        .batch_execute("SELECT integration.alter_webhook('orders', enabled => false)")
        .expect("disable");
    wait_until(Duration::from_secs(5), || {
        send("orders", "application/json", br#"{"order": 5}"#).status == 404
    });
    admin
        .batch_execute(
            "SELECT integration.alter_webhook('orders', enabled => true, reset => '{json_schema,handler}')",
        )
        .expect("enable");
    wait_until(Duration::from_secs(5), || {
        send("orders", "application/json", br#"{"order": "six"}"#).status == 200
    });
    // The view shows no secret; PUBLIC and integration_user cannot read secrets.
    let columns: Vec<String> = admin
        .query(
            "SELECT column_name::text FROM information_schema.columns
              WHERE table_schema = 'integration' AND table_name = 'webhook_list'",
            &[],
        )
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !columns
            .iter()
            .any(|c| c.contains("secret") && c != "active_secrets" && c != "secret_created_at"),
        "{columns:?}"
    );
    admin
        .batch_execute("CREATE ROLE nobody NOLOGIN; GRANT integration_user TO nobody")
        .expect("role");
    for table in ["webhook_secrets", "webhooks", "webhook_events"] {
        let err = admin
            .batch_execute(&format!(
                "BEGIN; SET LOCAL ROLE nobody; SELECT * FROM integration.{table}; COMMIT"
            ))
            .expect_err("integration_user must not read it");
        assert!(format!("{err:?}").contains("permission denied"), "{err:?}");
        admin.batch_execute("ROLLBACK").ok();
    }
    let err = admin
        .batch_execute("BEGIN; SET LOCAL ROLE integration_sidecar; INSERT INTO integration.webhook_events (webhook, raw_body) VALUES ('x', '')")
        .expect_err("the sidecar has no INSERT right");
    assert!(format!("{err:?}").contains("permission denied"), "{err:?}");
    admin.batch_execute("ROLLBACK").ok();
}

#[test]
fn concurrent_redelivery_of_one_id_is_stored_once() {
    let (cluster, mut admin) = setup();
    let secret = create(&mut admin, "'gh', 'github'").1.expect("secret");
    let sidecar = Arc::new(start_sidecar(&cluster));
    let body = br#"{"action":"opened"}"#.to_vec();
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (sidecar, secret, body) = (sidecar.clone(), secret.clone(), body.clone());
            thread::spawn(move || {
                let h = github(&secret, "same-delivery", &body);
                (0..4)
                    .map(|_| {
                        let a = post_ok(&sidecar, "gh", &h, &body);
                        assert_eq!(a.status, 200, "{}", a.body);
                        a.body["event_id"].as_i64().expect("id")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let ids: HashSet<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "every answer names the one stored event: {ids:?}"
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM integration.webhook_events"
        ),
        1
    );
}

/// The load threads, the delivery ids answered 2xx, and the count of 503s.
type Load = (
    Vec<thread::JoinHandle<()>>,
    Arc<Mutex<BTreeMap<String, u16>>>,
    Arc<AtomicUsize>,
);

/// Sends distinct signed deliveries from `connections` threads until `stop`,
/// recording every delivery id answered 2xx (and how many 503s).
fn load(
    sidecar: Arc<Mutex<Sidecar>>,
    secret: String,
    connections: usize,
    stop: Arc<AtomicBool>,
) -> Load {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let threads = (0..connections)
        .map(|t| {
            let (sidecar, secret, stop, acked, unavailable) = (
                sidecar.clone(),
                secret.clone(),
                stop.clone(),
                acked.clone(),
                unavailable.clone(),
            );
            thread::spawn(move || {
                let (url, client) = {
                    let s = sidecar.lock().expect("sidecar");
                    (s.url("/webhooks/load"), s.client.clone())
                };
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = format!("t{t}-{n}");
                    let body = format!(r#"{{"n":{n},"thread":{t}}}"#).into_bytes();
                    let mut request = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .timeout(Duration::from_secs(10))
                        .body(body.clone());
                    for (k, v) in standard(&secret, &id, now(), &body) {
                        request = request.header(k, v);
                    }
                    match request.send() {
                        Ok(r) if r.status().is_success() => {
                            acked.lock().expect("acked").insert(id, r.status().as_u16());
                        }
                        Ok(r) if r.status().as_u16() == 503 => {
                            assert!(
                                r.headers().contains_key("retry-after"),
                                "503 without Retry-After"
                            );
                            unavailable.fetch_add(1, Ordering::Relaxed);
                            sleep(Duration::from_millis(20));
                        }
                        Ok(r) => panic!("unexpected {}: {:?}", r.status(), r.text()),
                        // The sidecar was killed or is restarting.
                        Err(_) => sleep(Duration::from_millis(20)),
                    }
                }
            })
        })
        .collect();
    (threads, acked, unavailable)
}

/// Every acknowledged delivery id is in the table exactly once.
fn assert_exactly_once(admin: &mut postgres::Client, acked: &BTreeMap<String, u16>) {
    let rows = admin
        .query(
            "SELECT delivery_id, count(*) FROM integration.webhook_events
              WHERE webhook = 'load' GROUP BY delivery_id",
            &[],
        )
        .expect("events");
    let stored: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(
        stored.values().all(|&n| n == 1),
        "a delivery is stored twice"
    );
    let missing: Vec<&String> = acked
        .keys()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged deliveries are lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[test]
fn database_stopped_under_load_answers_503_loses_nothing_and_recovers() {
    let (cluster, mut admin) = setup();
    let secret = create(&mut admin, "'load', 'standard'").1.expect("secret");
    drop(admin);
    let sidecar = Arc::new(Mutex::new(start_sidecar(&cluster)));
    let stop = Arc::new(AtomicBool::new(false));
    let (threads, acked, unavailable) = load(sidecar.clone(), secret, 8, stop.clone());
    sleep(Duration::from_secs(2));
    let before = acked.lock().expect("acked").len();
    cluster.stop();
    sleep(Duration::from_secs(2));
    let during = acked.lock().expect("acked").len();
    cluster.restart();
    let recovered_from = during;
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().expect("acked").len() < recovered_from + 50 {
        assert!(
            Instant::now() < deadline,
            "no recovery after the restart:\n{}",
            sidecar.lock().expect("s").log()
        );
        sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    assert!(before > 0, "nothing acknowledged before the stop");
    assert!(
        unavailable.load(Ordering::Relaxed) > 0,
        "no 503 while the database was down"
    );
    let mut admin = cluster.connect(DB);
    assert_exactly_once(&mut admin, &acked.lock().expect("acked"));
}

#[test]
fn kill_9_under_load_keeps_every_acknowledged_delivery_exactly_once() {
    let (cluster, mut admin) = setup();
    let secret = create(&mut admin, "'load', 'standard'").1.expect("secret");
    let sidecar = Arc::new(Mutex::new(start_sidecar(&cluster)));
    let stop = Arc::new(AtomicBool::new(false));
    let (threads, acked, _) = load(sidecar.clone(), secret.clone(), 8, stop.clone());
    sleep(Duration::from_secs(2));
    sidecar.lock().expect("sidecar").kill9();
    sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    let acked = acked.lock().expect("acked").clone();
    assert!(acked.len() > 10, "too few deliveries before the kill");
    // Senders retry; a new sidecar answers a redelivery with the stored event.
    let second = start_sidecar(&cluster);
    for id in acked.keys().rev().take(20) {
        let (t, n) = id
            .trim_start_matches('t')
            .split_once('-')
            .expect("t{thread}-{n}");
        let body = format!(r#"{{"n":{n},"thread":{t}}}"#).into_bytes();
        let again = post_ok(&second, "load", &standard(&secret, id, now(), &body), &body);
        assert_eq!(
            (again.status, &again.body["duplicate"]),
            (200, &json!(true)),
            "{id}: {}",
            again.body
        );
    }
    assert_exactly_once(&mut admin, &acked);
}
