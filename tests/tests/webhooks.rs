//! End-to-end tests of webhook ingress: the real sidecar binary in front of a
//! real PostgreSQL with pg_integration. Every signature scheme with valid,
//! tampered, stale, replayed and rotated-secret deliveries (one table of
//! the secret-based schemes, plus Standard Webhooks `v1a` ed25519); a
//! custom target table; every status code; concurrent redelivery;
//! handlers; reload after alter_webhook; the database stopped under load;
//! and `kill -9` of the sidecar under load.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use integration_tests::{sample, PgCluster, Sidecar};
use postgres::error::SqlState;
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

/// Signs a delivery: (secret, delivery id, timestamp, body) → headers.
type Signer = fn(&str, &str, i64, &[u8]) -> Vec<(String, String)>;

/// One secret-based scheme in the table of `secret_schemes_…` below.
struct SchemeCase {
    name: &'static str,
    /// The rest of the create_webhook arguments after name and scheme.
    options: &'static str,
    sign: Signer,
    /// The scheme signs a timestamp, so a stale one must be refused.
    timestamped: bool,
    /// The signature covers the body (basic credentials do not).
    body_signed: bool,
}

fn secret_scheme_cases() -> Vec<SchemeCase> {
    vec![
        SchemeCase {
            name: "standard",
            options: "",
            sign: |s, id, ts, body| standard(s, id, ts, body),
            timestamped: true,
            body_signed: true,
        },
        SchemeCase {
            name: "github",
            options: "",
            sign: |s, id, _, body| github(s, id, body),
            timestamped: false,
            body_signed: true,
        },
        SchemeCase {
            name: "stripe",
            options: "",
            sign: |s, _, ts, body| stripe(s, ts, body),
            timestamped: true,
            body_signed: true,
        },
        SchemeCase {
            name: "slack",
            options: "",
            sign: |s, _, ts, body| slack(s, ts, body),
            timestamped: true,
            body_signed: true,
        },
        SchemeCase {
            name: "hmac-sha256",
            options: ", signature_header => 'X-Hook-Signature', delivery_id => 'X-Hook-Id'",
            sign: |s, id, _, body| {
                vec![
                    (
                        "X-Hook-Signature".into(),
                        format!("sha256={}", hex(&hmac(s.as_bytes(), &[body]))),
                    ),
                    ("X-Hook-Id".into(), id.into()),
                ]
            },
            timestamped: false,
            body_signed: true,
        },
        SchemeCase {
            name: "basic",
            options: ", delivery_id => '/id'",
            sign: |s, _, _, _| vec![("Authorization".into(), format!("Basic {}", B64.encode(s)))],
            timestamped: false,
            body_signed: false,
        },
    ]
}

/// A body carrying `id` where Stripe (`/id`), Slack (`/event_id`) and a
/// configured `/id` pointer read the delivery id.
fn body_for(id: &str) -> Vec<u8> {
    json!({"id": id, "event_id": id, "type": "test"})
        .to_string()
        .into_bytes()
}

/// A secret of the same form that is not the webhook's.
fn wrong_secret(secret: &str) -> String {
    match secret.strip_prefix("whsec_") {
        Some(_) => format!("whsec_{}", B64.encode(b"not the secret of this webhook!!")),
        None if secret.contains(':') => format!("{secret}x"),
        None => format!("{secret}0"),
    }
}

/// Every secret-based scheme, table-driven: valid, replayed, tampered and
/// stale deliveries; then rotation (old and new both accepted until
/// drop_old_webhook_secrets, after which only the new one), a rotation to a
/// given secret, and a rotation with `old_valid_for` after which the old
/// secret expires by itself.
#[test]
fn secret_schemes_verify_valid_replayed_tampered_stale_and_rotated_deliveries() {
    let (cluster, mut admin) = setup();
    let cases = secret_scheme_cases();
    let mut secrets = Vec::new();
    for case in &cases {
        let hook = format!("rot-{}", case.name);
        let secret = create(
            &mut admin,
            &format!("'{hook}', '{}'{}", case.name, case.options),
        )
        .1
        .unwrap_or_else(|| panic!("{}: a generated secret", case.name));
        secrets.push(secret);
    }
    let sidecar = start_sidecar(&cluster);
    let mut n = 0;
    // Sends a fresh delivery signed with `secret` at `ts`; its status.
    let mut send = |case: &SchemeCase, secret: &str, ts: i64| -> u16 {
        n += 1;
        let id = format!("{}-{n}", case.name);
        let body = body_for(&id);
        let a = post_ok(
            &sidecar,
            &format!("rot-{}", case.name),
            &(case.sign)(secret, &id, ts, &body),
            &body,
        );
        assert!(
            a.status != 200 || a.body["duplicate"] == false,
            "{}: {}",
            case.name,
            a.body
        );
        a.status
    };

    for (case, old) in cases.iter().zip(&secrets) {
        let hook = format!("rot-{}", case.name);
        let who = case.name;
        // Valid, then replayed: the same event, nothing new written.
        let id = format!("{who}-first");
        let body = body_for(&id);
        let headers = (case.sign)(old, &id, now(), &body);
        let first = post_ok(&sidecar, &hook, &headers, &body);
        assert_eq!(first.status, 200, "{who}: {}", first.body);
        assert_eq!(first.body["duplicate"], false, "{who}");
        assert_eq!(first.body["delivery_id"], id.as_str(), "{who}");
        let replay = post_ok(&sidecar, &hook, &headers, &body);
        assert_eq!(replay.status, 200, "{who}: {}", replay.body);
        assert_eq!(replay.body["duplicate"], true, "{who}");
        assert_eq!(replay.body["event_id"], first.body["event_id"], "{who}");
        // Tampered: another body under the same signature, or a wrong secret.
        if case.body_signed {
            let other = body_for(&format!("{who}-tampered"));
            let a = post_ok(&sidecar, &hook, &headers, &other);
            assert_eq!(a.status, 401, "{who} tampered body: {}", a.body);
        }
        assert_eq!(
            send(case, &wrong_secret(old), now()),
            401,
            "{who} wrong secret"
        );
        // Stale and future timestamps, outside ±300 s.
        if case.timestamped {
            assert_eq!(send(case, old, now() - 301), 401, "{who} stale");
            assert_eq!(send(case, old, now() + 301), 401, "{who} from the future");
            assert_eq!(send(case, old, now() - 200), 200, "{who} within tolerance");
        }

        // Rotation to a generated secret: both accepted…
        let new: String = admin
            .query_one("SELECT integration.rotate_webhook_secret($1)", &[&hook])
            .unwrap_or_else(|e| panic!("{who} rotate: {:?}", e.as_db_error()))
            .get(0);
        assert_ne!(&new, old, "{who}");
        wait_until(Duration::from_secs(5), || send(case, &new, now()) == 200);
        assert_eq!(
            send(case, old, now()),
            200,
            "{who}: the old secret during the rotation"
        );
        if case.timestamped {
            assert_eq!(
                send(case, &new, now() - 301),
                401,
                "{who} stale, new secret"
            );
        }
        let active: i64 = admin
            .query_one(
                "SELECT active_secrets FROM integration.webhook_list WHERE name = $1",
                &[&hook],
            )
            .expect("webhook_list")
            .get(0);
        assert_eq!(active, 2, "{who}");
        // …until the old one is dropped.
        let dropped: i32 = admin
            .query_one("SELECT integration.drop_old_webhook_secrets($1)", &[&hook])
            .expect("drop old")
            .get(0);
        assert_eq!(dropped, 1, "{who}");
        wait_until(Duration::from_secs(5), || send(case, old, now()) == 401);
        assert_eq!(
            send(case, &new, now()),
            200,
            "{who}: the new secret after the drop"
        );

        // Rotation to a given secret, the previous one valid for 2 s more.
        let given = match case.name {
            "standard" => format!("whsec_{}", B64.encode(format!("given secret of {hook}!"))),
            "basic" => format!("webhook:given-{hook}"),
            _ => format!("given-secret-{hook}"),
        };
        let returned: String = admin
            .query_one(
                "SELECT integration.rotate_webhook_secret($1, $2, old_valid_for => '2 seconds')",
                &[&hook, &given],
            )
            .unwrap_or_else(|e| panic!("{who} rotate to a given secret: {:?}", e.as_db_error()))
            .get(0);
        assert_eq!(returned, given, "{who}");
        wait_until(Duration::from_secs(5), || send(case, &given, now()) == 200);
        let rotated = Instant::now();
        assert_eq!(
            send(case, &new, now()),
            200,
            "{who}: the previous secret within old_valid_for"
        );
        sleep(Duration::from_secs(3).saturating_sub(rotated.elapsed()));
        assert_eq!(
            send(case, &new, now()),
            401,
            "{who}: the previous secret after old_valid_for"
        );
        assert_eq!(send(case, &given, now()), 200, "{who}: the given secret");
    }
}

/// An ed25519 key pair from a 32-byte seed given in hex, and its public key
/// as a Standard Webhooks `whpk_` secret.
fn ed25519_key(seed_hex: &str) -> (ed25519_dalek::SigningKey, String) {
    let seed: Vec<u8> = (0..seed_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&seed_hex[i..i + 2], 16).expect("hex"))
        .collect();
    let key = ed25519_dalek::SigningKey::from_bytes(&<[u8; 32]>::try_from(seed).expect("32 bytes"));
    let public = format!("whpk_{}", B64.encode(key.verifying_key().as_bytes()));
    (key, public)
}

/// A `v1a,<base64 ed25519 signature>` entry over `id.timestamp.body`.
fn v1a(key: &ed25519_dalek::SigningKey, id: &str, ts: i64, body: &[u8]) -> String {
    use ed25519_dalek::Signer;
    let message = [id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body].concat();
    format!("v1a,{}", B64.encode(key.sign(&message).to_bytes()))
}

fn standard_headers(id: &str, ts: i64, signature: String) -> Vec<(String, String)> {
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), signature),
    ]
}

/// Standard Webhooks `v1a` (ed25519, the webhook holds the `whpk_` public
/// key) through the real sidecar: valid, replayed, tampered, stale, several
/// signatures in one header, and rotation to another key pair.
#[test]
fn standard_v1a_ed25519_deliveries_end_to_end() {
    let (cluster, mut admin) = setup();
    // RFC 8032 section 7.1, TEST 1 and TEST 2 key pairs.
    let (key1, public1) =
        ed25519_key("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let (key2, public2) =
        ed25519_key("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb");
    let (_, echoed) = create(
        &mut admin,
        &format!("'ed', 'standard', secret => '{public1}'"),
    );
    assert_eq!(echoed, None, "a given key is not echoed");
    let sidecar = start_sidecar(&cluster);
    let send = |key: &ed25519_dalek::SigningKey, id: &str, ts: i64| {
        let body = body_for(id);
        post_ok(
            &sidecar,
            "ed",
            &standard_headers(id, ts, v1a(key, id, ts, &body)),
            &body,
        )
    };

    // Valid, then replayed.
    let body = br#"{"type":"user.created","id":"u1"}"#;
    let ts = now();
    let headers = standard_headers("ed-1", ts, v1a(&key1, "ed-1", ts, body));
    let first = post_ok(&sidecar, "ed", &headers, body);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["duplicate"], false);
    let replay = post_ok(&sidecar, "ed", &headers, body);
    assert_eq!(
        (
            replay.status,
            &replay.body["duplicate"],
            &replay.body["event_id"]
        ),
        (200, &json!(true), &first.body["event_id"]),
        "{}",
        replay.body
    );
    let stored: Vec<u8> = admin
        .query_one(
            "SELECT raw_body FROM integration.webhook_events WHERE webhook = 'ed' AND delivery_id = 'ed-1'",
            &[],
        )
        .expect("the v1a event")
        .get(0);
    assert_eq!(stored, body.to_vec());
    // Tampered body, id or timestamp; a key that is not the webhook's.
    let tampered = post_ok(
        &sidecar,
        "ed",
        &headers,
        br#"{"type":"user.created","id":"u2"}"#,
    );
    assert_eq!(tampered.status, 401, "{}", tampered.body);
    let mut other_id = headers.clone();
    other_id[0].1 = "ed-1b".into();
    assert_eq!(post_ok(&sidecar, "ed", &other_id, body).status, 401);
    let mut other_ts = headers.clone();
    other_ts[1].1 = (ts + 1).to_string();
    assert_eq!(post_ok(&sidecar, "ed", &other_ts, body).status, 401);
    assert_eq!(send(&key2, "ed-2", now()).status, 401, "a foreign key");
    // Stale and future.
    let stale = send(&key1, "ed-3", now() - 301);
    assert_eq!(stale.status, 401, "{}", stale.body);
    assert!(
        stale.body["error"]
            .as_str()
            .unwrap_or("")
            .contains("timestamp"),
        "{}",
        stale.body
    );
    assert_eq!(send(&key1, "ed-4", now() + 301).status, 401);
    // Several signatures in one header: any valid one is enough.
    let ts = now();
    let body = body_for("ed-5");
    let several = format!(
        "v1,{} {} {}",
        B64.encode([0u8; 32]),
        v1a(&key2, "ed-5", ts, &body),
        v1a(&key1, "ed-5", ts, &body)
    );
    let a = post_ok(
        &sidecar,
        "ed",
        &standard_headers("ed-5", ts, several),
        &body,
    );
    assert_eq!(a.status, 200, "{}", a.body);

    // Rotation to a second key pair: both until the first is dropped.
    let returned: String = admin
        .query_one(
            "SELECT integration.rotate_webhook_secret('ed', $1)",
            &[&public2],
        )
        .expect("rotate")
        .get(0);
    assert_eq!(returned, public2);
    let mut n = 10;
    let mut next = || {
        n += 1;
        format!("ed-{n}")
    };
    wait_until(Duration::from_secs(5), || {
        send(&key2, &next(), now()).status == 200
    });
    assert_eq!(
        send(&key1, &next(), now()).status,
        200,
        "the old key during the rotation"
    );
    let dropped: i32 = admin
        .query_one("SELECT integration.drop_old_webhook_secrets('ed')", &[])
        .expect("drop old")
        .get(0);
    assert_eq!(dropped, 1);
    wait_until(Duration::from_secs(5), || {
        send(&key1, &next(), now()).status == 401
    });
    assert_eq!(send(&key2, &next(), now()).status, 200);
    assert_eq!(
        send(&key2, &next(), now() - 301).status,
        401,
        "stale, new key"
    );
}

/// Events of a webhook whose `target` is the application's own table (with
/// a schema-qualified, quoted name and an extra column), with and without a
/// handler: stored there and only there, deduplicated there, notified, and
/// dropped with drop_webhook(drop_events). A target without the unique
/// index on (webhook, delivery_id) is refused.
#[test]
fn custom_target_table_receives_events() {
    let (cluster, mut admin) = setup();
    admin
        .batch_execute(
            r#"CREATE SCHEMA app;
               CREATE TABLE app."Deliveries" (LIKE integration.webhook_events INCLUDING ALL,
                                              handled boolean NOT NULL DEFAULT false);
               CREATE TABLE app.no_unique (LIKE integration.webhook_events INCLUDING DEFAULTS INCLUDING IDENTITY);
               CREATE FUNCTION app.mark(event jsonb) RETURNS jsonb
               LANGUAGE plpgsql SECURITY DEFINER AS $$
               BEGIN
                   UPDATE app."Deliveries" SET handled = true WHERE id = (event->>'id')::bigint;
                   RETURN jsonb_build_object('status', 202, 'body',
                       jsonb_build_object('marked', event->'id'));
               END $$;"#,
        )
        .expect("application tables");
    create(
        &mut admin,
        r#"'mine', 'none', target => 'app."Deliveries"', delivery_id => '/id'"#,
    );
    create(
        &mut admin,
        r#"'mine-h', 'none', target => 'app."Deliveries"', delivery_id => '/id',
           handler => 'app.mark(jsonb)'"#,
    );
    let err = admin
        .query_one(
            "SELECT * FROM integration.create_webhook('bad', 'none', target => 'app.no_unique')",
            &[],
        )
        .expect_err("a target without the unique index");
    assert_eq!(
        err.code(),
        Some(&postgres::error::SqlState::INVALID_COLUMN_REFERENCE),
        "{err:?}"
    );
    let sidecar = start_sidecar(&cluster);
    let mut listener = cluster.connect(DB);
    listener
        .batch_execute("LISTEN integration_webhook")
        .expect("LISTEN");

    let body = body_for("c1");
    let a = post_ok(&sidecar, "mine", &[], &body);
    assert_eq!(
        (a.status, &a.body["duplicate"]),
        (200, &json!(false)),
        "{}",
        a.body
    );
    let event_id = a.body["event_id"].as_i64().expect("event id");
    let again = post_ok(&sidecar, "mine", &[], &body);
    assert_eq!(
        (
            again.status,
            &again.body["duplicate"],
            &again.body["event_id"]
        ),
        (200, &json!(true), &a.body["event_id"]),
        "{}",
        again.body
    );
    let h = post_ok(&sidecar, "mine-h", &[], &body_for("c1"));
    assert_eq!(h.status, 202, "{}", h.body);
    let marked = h.body["marked"].as_i64().expect("handler answer");
    assert_eq!(
        post_ok(&sidecar, "mine-h", &[], &body_for("c1")).body["event_id"],
        marked,
        "a redelivery to the handler's webhook names the stored event"
    );
    let mut notes = Vec::new();
    {
        let mut notifications = listener.notifications();
        let mut it = notifications.timeout_iter(Duration::from_secs(2));
        while let Some(n) = it.next().expect("notification") {
            notes.push(n.payload().to_owned());
        }
    }
    assert_eq!(notes, vec![event_id.to_string(), marked.to_string()]);

    let rows = admin
        .query(
            r#"SELECT id, webhook, delivery_id, payload, handled FROM app."Deliveries" ORDER BY id"#,
            &[],
        )
        .expect("the custom table");
    let rows: Vec<(i64, String, String, Value, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let payload: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        rows,
        vec![
            (event_id, "mine".into(), "c1".into(), payload.clone(), false),
            (marked, "mine-h".into(), "c1".into(), payload, true),
        ]
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM integration.webhook_events"
        ),
        0,
        "nothing in the default table"
    );
    let dropped: bool = admin
        .query_one(
            "SELECT integration.drop_webhook('mine', drop_events => true)",
            &[],
        )
        .expect("drop")
        .get(0);
    assert!(dropped);
    assert_eq!(
        count(&mut admin, r#"SELECT count(*) FROM app."Deliveries""#),
        1,
        "only the dropped webhook's events are deleted"
    );
}

#[test]
fn admin_functions_act_as_the_calling_role_not_the_login_role() {
    let (_cluster, mut db) = setup();
    db.batch_execute(
        "CREATE ROLE hooks_admin NOLOGIN IN ROLE integration_admin;
         CREATE TABLE private_events (LIKE integration.webhook_events INCLUDING ALL);
         SET ROLE hooks_admin;",
    )
    .unwrap();
    // The login role (a superuser) could fill private_events; the role
    // calling now cannot, and that is what counts.
    let error = db
        .query(
            "SELECT * FROM integration.create_webhook('private', 'github', 'a-long-secret',
                                                      target => 'private_events')",
            &[],
        )
        .unwrap_err();
    let error = error.as_db_error().unwrap();
    assert_eq!(*error.code(), SqlState::INSUFFICIENT_PRIVILEGE);
    assert!(
        error.message().contains("hooks_admin"),
        "{}",
        error.message()
    );
    // Its own webhooks land in the extension's table; they are recorded as its.
    db.query(
        "SELECT * FROM integration.create_webhook('mine', 'github', 'a-long-secret')",
        &[],
    )
    .unwrap();
    db.query_one("SELECT integration.rotate_webhook_secret('mine')", &[])
        .unwrap();
    // A forged caller is refused.
    let error = db
        .query(
            "SELECT integration.drop_webhook('mine', caller => 'AAAA:postgres')",
            &[],
        )
        .unwrap_err();
    assert_eq!(
        *error.as_db_error().unwrap().code(),
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    db.batch_execute("RESET ROLE").unwrap();
    let created_by: String = db
        .query_one(
            "SELECT created_by::text FROM integration.webhooks WHERE name = 'mine'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(created_by, "hooks_admin");
    let actors: Vec<String> = db
        .query(
            "SELECT actor FROM integration.audit_log
             WHERE action IN ('webhook.create', 'webhook.rotate_secret') ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actors, ["hooks_admin", "hooks_admin"]);
}

/// A signed body PostgreSQL cannot store (NUL in JSON, text or a form).
fn poison(n: usize) -> (&'static str, Vec<u8>) {
    match n % 3 {
        0 => (
            "application/json",
            format!(r#"{{"n":{n},"a":"\u0000"}}"#).into_bytes(),
        ),
        1 => ("text/plain", format!("poison {n}\0end").into_bytes()),
        _ => (
            "application/x-www-form-urlencoded",
            format!("n={n}&a=%00").into_bytes(),
        ),
    }
}

#[test]
fn a_nul_in_one_body_fails_only_that_delivery() {
    const VALID_THREADS: usize = 6;
    const VALID_EACH: usize = 25;
    const POISON_THREADS: usize = 3;
    const POISON_EACH: usize = 10;
    let (cluster, mut admin) = setup();
    let secret = create(&mut admin, "'load', 'standard'").1.expect("secret");
    let sidecar = Arc::new(start_sidecar(&cluster));
    let send = |sidecar: &Sidecar, id: &str, content_type: &str, body: &[u8]| {
        post(
            sidecar,
            "load",
            content_type,
            &standard(&secret, id, now(), body),
            body,
        )
        .unwrap_or_else(|e| panic!("POST {id}: {e}\n{}", sidecar.log()))
    };
    let statuses: Vec<(bool, String, u16, Value)> = thread::scope(|scope| {
        let mut threads = Vec::new();
        for t in 0..VALID_THREADS {
            let (sidecar, send) = (sidecar.clone(), &send);
            threads.push(scope.spawn(move || {
                (0..VALID_EACH)
                    .map(|n| {
                        let id = format!("valid-{t}-{n}");
                        let body = format!(r#"{{"t":{t},"n":{n}}}"#).into_bytes();
                        let a = send(&sidecar, &id, "application/json", &body);
                        (true, id, a.status, a.body)
                    })
                    .collect::<Vec<_>>()
            }));
        }
        for t in 0..POISON_THREADS {
            let (sidecar, send) = (sidecar.clone(), &send);
            threads.push(scope.spawn(move || {
                (0..POISON_EACH)
                    .map(|n| {
                        let id = format!("poison-{t}-{n}");
                        let (content_type, body) = poison(t * POISON_EACH + n);
                        let a = send(&sidecar, &id, content_type, &body);
                        (false, id, a.status, a.body)
                    })
                    .collect::<Vec<_>>()
            }));
        }
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect()
    });
    let wrong: Vec<_> = statuses
        .iter()
        .filter(|(valid, _, status, _)| *status != if *valid { 200 } else { 422 })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} answers are wrong (valid must be 200, poison 422): {:?}",
        wrong.len(),
        statuses.len(),
        &wrong[..wrong.len().min(5)]
    );
    let rows = admin
        .query(
            "SELECT delivery_id, count(*) FROM integration.webhook_events
              WHERE webhook = 'load' GROUP BY delivery_id",
            &[],
        )
        .expect("events");
    let stored: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let valid: BTreeMap<String, i64> = statuses
        .iter()
        .filter(|(valid, ..)| *valid)
        .map(|(_, id, ..)| (id.clone(), 1))
        .collect();
    assert_eq!(valid.len(), VALID_THREADS * VALID_EACH);
    assert_eq!(
        stored, valid,
        "every valid delivery is stored exactly once and no poison is"
    );
}

#[test]
fn numbers_are_stored_and_validated_exactly_as_sent() {
    let (cluster, mut admin) = setup();
    // 12345678901234567890 and …891 are one f64: rounded, the first is
    // refused by exclusiveMaximum and the second accepted.
    create(
        &mut admin,
        r#"'exact', 'none', delivery_id => '/id', json_schema =>
           '{"properties":{"big":{"exclusiveMaximum":12345678901234567891}}}'"#,
    );
    let sidecar = Arc::new(start_sidecar(&cluster));
    let send = |body: &str| {
        post(&sidecar, "exact", "application/json", &[], body.as_bytes())
            .unwrap_or_else(|e| panic!("{e}\n{}", sidecar.log()))
    };
    let exact = r#"{"id":"exact","big":12345678901234567890,"neg0":-0,
                    "huge":1e400,"tiny":0.1000000000000000000001,"id_num":900719925474099312}"#;
    let a = send(exact);
    assert_eq!(a.status, 200, "{}", a.body);
    let a = send(r#"{"id":"over","big":12345678901234567891}"#);
    assert_eq!(a.status, 422, "the schema sees the exact value: {}", a.body);
    let row = admin
        .query_one(
            "SELECT payload->>'big', payload->>'neg0', (payload->>'huge')::numeric = 1e400,
                    payload->>'tiny', payload->>'id_num'
               FROM integration.webhook_events WHERE delivery_id = 'exact'",
            &[],
        )
        .expect("the exact event");
    assert_eq!(row.get::<_, String>(0), "12345678901234567890");
    // jsonb keeps numbers as numeric, which has no negative zero.
    assert_eq!(row.get::<_, String>(1), "0");
    assert!(row.get::<_, bool>(2), "1e400 is stored as 10^400");
    assert_eq!(row.get::<_, String>(3), "0.1000000000000000000001");
    assert_eq!(row.get::<_, String>(4), "900719925474099312");

    // Numbers past PostgreSQL's numeric range parse as JSON but cannot be
    // stored: they are refused alone while concurrent valid deliveries of
    // the same batches are stored.
    let answers: Vec<(String, u16)> = thread::scope(|scope| {
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let send = &send;
                scope.spawn(move || {
                    (0..20)
                        .map(|n| {
                            let id = format!("n-{t}-{n}");
                            let body = if t % 3 == 0 {
                                format!(r#"{{"id":"{id}","huge":1e999999}}"#)
                            } else {
                                format!(r#"{{"id":"{id}","big":{n}}}"#)
                            };
                            (id, send(&body).status)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect()
    });
    for (id, status) in &answers {
        let expected = if id.starts_with("n-0-") || id.starts_with("n-3-") {
            422
        } else {
            200
        };
        assert_eq!(*status, expected, "{id}\n{}", sidecar.log());
    }
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM integration.webhook_events WHERE delivery_id LIKE 'n-%'"
        ),
        80
    );
}

#[test]
fn a_slow_schema_pattern_does_not_stall_other_requests() {
    const SLOW_REQUESTS: usize = 3;
    let (cluster, mut admin) = setup();
    // Backtracks up to the regex engine's limit on every string of "a"s
    // (each string differs: the validator skips a subject it gave up on).
    create(
        &mut admin,
        r#"'slow', 'none', json_schema => '{"properties":{"s":{"type":"array",
             "items":{"type":"string","pattern":"^(?:(a|a)+(?=\\1)b|a)"}}}}'"#,
    );
    let sidecar = start_sidecar(&cluster);
    let strings: Vec<String> = (0..1000)
        .map(|i| format!("{}{i}", "a".repeat(30)))
        .collect();
    let body = serde_json::to_vec(&json!({ "s": strings })).expect("a body");
    let running = AtomicUsize::new(SLOW_REQUESTS);
    let started = Instant::now();
    let (answers, probes) = thread::scope(|scope| {
        let slow: Vec<_> = (0..SLOW_REQUESTS)
            .map(|_| {
                let (sidecar, body, running) = (&sidecar, &body, &running);
                scope.spawn(move || {
                    let answer = sidecar
                        .client
                        .post(sidecar.url("/webhooks/slow"))
                        .header("content-type", "application/json")
                        .timeout(Duration::from_secs(600))
                        .body(body.clone())
                        .send()
                        .and_then(|r| Ok((r.status().as_u16(), r.text()?)));
                    running.fetch_sub(1, Ordering::SeqCst);
                    answer
                })
            })
            .collect();
        // /healthz answers, again and again, while the validations run.
        let mut probes = 0;
        while running.load(Ordering::SeqCst) > 0 {
            let health = sidecar
                .client
                .get(sidecar.url("/healthz"))
                .timeout(Duration::from_secs(5))
                .send();
            let still_running = running.load(Ordering::SeqCst) > 0;
            match health {
                Ok(r) if r.status().is_success() => probes += usize::from(still_running),
                other => panic!("/healthz failed while a slow schema ran: {other:?}"),
            }
            sleep(Duration::from_millis(100));
        }
        let answers: Vec<_> = slow
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        (answers, probes)
    });
    eprintln!("slow validations took {:?}", started.elapsed());
    for answer in &answers {
        let (status, text) = answer.as_ref().expect("an answer");
        assert!(
            *status == 422 && text.contains("took more than"),
            "a validation over its budget is refused: {status} {}",
            &text[..text.len().min(600)]
        );
    }
    assert!(
        probes >= 10,
        "/healthz answered only {probes} times while the validations ran"
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM integration.webhook_events"
        ),
        0
    );
}

#[test]
fn database_errors_are_logged_with_a_request_id_not_answered() {
    let (cluster, mut admin) = setup();
    admin
        .batch_execute("CREATE ROLE app NOLOGIN")
        .expect("role");
    create(&mut admin, "'keyed', 'api-key'");
    let token: String = admin
        .query_one(
            "SELECT integration.create_api_key('sender', 'app', ARRAY['webhooks:keyed'])",
            &[],
        )
        .expect("an API key")
        .get(0);
    let sidecar = start_sidecar(&cluster);
    // The sidecar's role loses its login: every new connection fails with
    // "FATAL: role … is not permitted to log in".
    admin
        .batch_execute(
            "ALTER ROLE integration_sidecar NOLOGIN;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE usename = 'integration_sidecar';",
        )
        .expect("NOLOGIN");
    let leaks = |text: &str| {
        ["FATAL", "not permitted", "integration_sidecar", "db error"]
            .iter()
            .any(|leak| text.contains(leak))
    };
    let (_, ready) = sidecar.wait_for("/readyz", 503, Duration::from_secs(10));
    assert!(!leaks(&ready.to_string()), "/readyz: {ready}");
    // A pooled connection the server killed fails one request with
    // "connection closed" before the pool drops it: the next request meets
    // the refused login. Each answer must hide the error either way.
    let mut header_id = String::new();
    for _ in 0..5 {
        let response = sidecar
            .client
            .post(sidecar.url("/webhooks/keyed"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(r#"{"n":1}"#)
            .send()
            .expect("POST");
        assert_eq!(response.status().as_u16(), 503);
        header_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("an X-Request-Id header");
        let text = response.text().expect("a body");
        assert!(
            !leaks(&text),
            "the database error reached the client: {text}"
        );
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["request_id"], header_id.as_str(), "{body}");
        if sidecar
            .log()
            .lines()
            .any(|l| l.contains(&header_id) && l.contains("not permitted to log in"))
        {
            break;
        }
    }
    assert!(
        sidecar
            .log()
            .lines()
            .any(|l| l.contains(&header_id) && l.contains("not permitted to log in")),
        "no log line gives the detail with request id {header_id}:\n{}",
        sidecar.log()
    );
}

#[test]
fn delivery_ids_are_kept_exactly_or_refused_never_dropped() {
    let (cluster, mut admin) = setup();
    create(&mut admin, "'ids', 'none', delivery_id => '/id'");
    create(&mut admin, "'hdr', 'none', delivery_id => 'X-Delivery'");
    let sidecar = start_sidecar(&cluster);
    let send = |body: Value| {
        post(
            &sidecar,
            "ids",
            "application/json",
            &[],
            body.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", sidecar.log()))
    };
    let stored = |body: Value| {
        let a = send(body.clone());
        assert_eq!(a.status, 200, "{body}: {}", a.body);
        a.body["duplicate"].as_bool().expect("duplicate")
    };
    // Kept exactly: spaces inside a JSON string count; a number is its JSON text.
    assert!(!stored(json!({"id": " 42 "})));
    assert!(
        !stored(json!({"id": "42"})),
        "\" 42 \" and \"42\" are two ids"
    );
    assert!(
        stored(json!({"id": 42})),
        "42 and \"42\" are one id (README)"
    );
    assert!(!stored(json!({"id": "évènement"})));
    assert!(stored(json!({"id": "évènement"})));
    assert!(!stored(json!({"id": "x".repeat(500)})));
    assert!(stored(json!({"id": "x".repeat(500)})));
    // Refused, never stored without an id.
    for body in [json!({"id": "x".repeat(501)}), json!({"id": ""})] {
        let a = send(body.clone());
        assert_eq!(a.status, 400, "{}", a.body);
    }
    let response = sidecar
        .client
        .post(sidecar.url("/webhooks/hdr"))
        .header("content-type", "application/json")
        .header(
            "x-delivery",
            reqwest::header::HeaderValue::from_bytes(b"\xe9v\xe9nement").expect("obs-text"),
        )
        .body("{}")
        .send()
        .expect("POST");
    assert_eq!(response.status().as_u16(), 400, "a non-ASCII header id");
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM integration.webhook_events WHERE delivery_id IS NULL"
        ),
        0
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM integration.webhook_events"
        ),
        4
    );
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// One round of hostile input from several threads beside valid signed
/// deliveries: NUL bodies, numbers past `numeric`, unusable delivery ids,
/// 1 MiB login bodies, half-sent request heads. Returns the valid ids sent.
fn hostile_round(sidecar: &Sidecar, secret: &str, round: usize) -> Vec<String> {
    use std::io::Write;
    let addr = sidecar.base_url.trim_start_matches("http://").to_owned();
    let half_open: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).expect("connect");
            s.write_all(b"POST /webhooks/load HTTP/1.1\r\nHost: a\r\n")
                .expect("send");
            s
        })
        .collect();
    let mut amplifier = b"[".to_vec();
    while amplifier.len() < 1_000_000 {
        amplifier.extend_from_slice(br#"{"":0},"#);
    }
    amplifier.extend_from_slice(br#"{"":0}]"#);
    let valid = thread::scope(|scope| {
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let amplifier = &amplifier;
                scope.spawn(move || {
                    let mut valid = Vec::new();
                    for n in 0..40 {
                        let signed = |id: &str, content_type: &str, body: &[u8]| {
                            post(
                                sidecar,
                                "load",
                                content_type,
                                &standard(secret, id, now(), body),
                                body,
                            )
                            .unwrap_or_else(|e| panic!("{id}: {e}\n{}", sidecar.log()))
                        };
                        let id = format!("r{round}-t{t}-{n}");
                        let (expected, a) = match (t, n % 4) {
                            (0, _) => {
                                let (content_type, body) = poison(n);
                                (422, signed(&id, content_type, &body))
                            }
                            (1, 0) => (400, signed(&"x".repeat(501), "application/json", b"{}")),
                            (1, 1) => (422, signed(&id, "application/json", br#"{"n":1e999999}"#)),
                            (1, _) => {
                                let a = answer_of(
                                    sidecar
                                        .client
                                        .post(sidecar.url("/auth/generic/login"))
                                        .header("content-type", "application/json")
                                        .body(amplifier.clone()),
                                );
                                (400, a)
                            }
                            _ => {
                                let body =
                                    format!(r#"{{"t":{t},"n":{n},"big":12345678901234567890}}"#);
                                valid.push(id.clone());
                                (200, signed(&id, "application/json", body.as_bytes()))
                            }
                        };
                        assert_eq!(a.status, expected, "{id}: {}", a.body);
                    }
                    valid
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("thread"))
            .collect()
    });
    drop(half_open);
    valid
}

fn answer_of(request: reqwest::blocking::RequestBuilder) -> Answer {
    let response = request.send().expect("send");
    let status = response.status().as_u16();
    let body = serde_json::from_str(&response.text().unwrap_or_default()).unwrap_or(Value::Null);
    Answer { status, body }
}

#[test]
fn hostile_input_beside_valid_deliveries_stores_each_valid_one_once_and_memory_returns() {
    let (cluster, mut admin) = setup();
    let secret = create(&mut admin, "'load', 'standard'").1.expect("secret");
    admin
        .batch_execute(
            "CREATE ROLE app_user NOLOGIN;
             SELECT integration.create_sso_provider('generic', 'oauth2',
                 jsonb_build_object('authorize_url', 'http://127.0.0.1:9/auth',
                     'token_url', 'http://127.0.0.1:9/token', 'userinfo_url', 'http://127.0.0.1:9/me',
                     'client_id', 'c', 'client_secret', 's', 'allow_http', true),
                 default_role => 'app_user')",
        )
        .expect("an SSO provider");
    let sidecar = start_sidecar(&cluster);
    // Two rounds warm the allocator up; memory is measured from there.
    let mut valid = hostile_round(&sidecar, &secret, 0);
    valid.extend(hostile_round(&sidecar, &secret, 1));
    let rss_start = rss_kib(sidecar.pid());
    for round in 2..=5 {
        valid.extend(hostile_round(&sidecar, &secret, round));
    }
    let rss_end = rss_kib(sidecar.pid());
    eprintln!(
        "{} valid deliveries among 6 rounds of 240 requests and 50 half-open connections; \
         RSS {rss_start} KiB after the second round, {rss_end} KiB after the last",
        valid.len()
    );
    let rows = admin
        .query(
            "SELECT delivery_id, count(*) FROM integration.webhook_events GROUP BY delivery_id",
            &[],
        )
        .expect("events");
    let stored: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected: BTreeMap<String, i64> = valid.into_iter().map(|id| (id, 1)).collect();
    assert_eq!(stored, expected, "every valid delivery once, nothing else");
    assert!(
        rss_end * 5 <= rss_start * 6,
        "RSS grew from {rss_start} to {rss_end} KiB (more than 20%)"
    );
}

/// A target table that refuses one event of a batch (here a CHECK
/// constraint) fails that event alone: the others of the same target are
/// stored one by one.
#[test]
fn one_event_a_target_refuses_fails_alone() {
    let (_cluster, mut admin) = setup();
    admin
        .batch_execute(
            "CREATE SCHEMA app;
             CREATE TABLE app.events (LIKE integration.webhook_events INCLUDING ALL,
                                      CHECK (payload->>'bad' IS NULL));",
        )
        .expect("target table");
    create(&mut admin, "'checked', 'none', target => 'app.events'");
    let id: i64 = admin
        .query_one(
            "SELECT id FROM integration.webhooks WHERE name = 'checked'",
            &[],
        )
        .unwrap()
        .get(0);
    let rows = admin
        .query(
            "SELECT ord, event_id, error FROM integration.ingest_webhook_events(
                 ARRAY[$1, $1, $1]::bigint[], ARRAY['a', 'b', 'c'], NULL::jsonb[],
                 ARRAY['{}', '{\"bad\": true}', '{}']::jsonb[],
                 ARRAY['\\x7b7d', '\\x7b7d', '\\x7b7d']::bytea[], NULL::text[], NULL::inet[])
             ORDER BY ord",
            &[&id],
        )
        .unwrap();
    let outcome: Vec<(Option<i64>, Option<String>)> =
        rows.iter().map(|r| (r.get(1), r.get(2))).collect();
    assert!(
        outcome[0].0.is_some() && outcome[0].1.is_none(),
        "{outcome:?}"
    );
    assert!(outcome[1].0.is_none(), "{outcome:?}");
    assert!(
        outcome[1]
            .1
            .as_deref()
            .is_some_and(|e| e.starts_with("23514")),
        "{outcome:?}"
    );
    assert!(
        outcome[2].0.is_some() && outcome[2].1.is_none(),
        "{outcome:?}"
    );
    assert_eq!(count(&mut admin, "SELECT count(*) FROM app.events"), 2);
}

/// A webhook created a moment ago is served before the sidecar's reload
/// (issue 31): an unknown name is looked up in the database once. Here the
/// configuration triggers are off, so no notification ever comes: only the
/// lookup can find it. A name found missing is not looked up again at once.
#[test]
fn a_webhook_is_served_before_the_reload_notifies_the_sidecar() {
    let (cluster, mut admin) = setup();
    let sidecar = start_sidecar(&cluster);
    let missing = post(&sidecar, "fresh", "application/json", &[], b"{}").unwrap();
    assert_eq!(missing.status, 404, "{}", missing.body);
    admin
        .batch_execute("SET session_replication_role = replica")
        .unwrap();
    create(&mut admin, "'fresh', 'none'");
    admin
        .batch_execute("RESET session_replication_role")
        .unwrap();
    wait_until(Duration::from_secs(10), || {
        post(&sidecar, "fresh", "application/json", &[], b"{\"n\": 1}")
            .is_ok_and(|a| a.status == 200)
    });
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM integration.webhook_events WHERE webhook = 'fresh'"
        ),
        1
    );
    let loads = sidecar
        .log()
        .matches("webhook configuration loaded")
        .count();
    assert_eq!(loads, 1, "the sidecar reloaded: the test proves nothing");
    // Names that no webhook can have never reach the database.
    let odd = post(&sidecar, "..hidden", "application/json", &[], b"{}").unwrap();
    assert_eq!(odd.status, 404);
}
