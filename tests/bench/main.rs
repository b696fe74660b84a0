//! `make bench`: measured figures, never asserted. Each figure is printed
//! beside the limit measured in the same run on the same cluster, as a ratio.
//!
//! api_keys: 100 000 `verify_api_key` calls in one statement (warm cache),
//! 20 000 distinct keys verified once each in a fresh session (cold cache),
//! against the same check written in plain SQL (pgcrypto digest + indexed
//! lookup + revoked/expiry test) and against the bare loop.
//!
//! http: 5 000 sequential `http_get` calls in one statement against a
//! loopback nginx, beside `wrk -c1 -t1` on the same URL (the limit of one
//! connection doing one request at a time).
//!
//! http queue: 10 000 requests queued in one statement, timed from the
//! commit until every response is stored, beside `wrk -c32` on the same
//! URL (what the same server answers with 32 connections), with the
//! worker's default caps raised to 32 per host.
//!
//! jwt: 100 000 `verify_jwt` HS256 checks in one statement against the
//! pgjwt-style check in plain SQL (pgcrypto hmac + base64url decoding). The
//! token is made to depend on the row so the planner cannot fold the
//! plain-SQL check (its functions are immutable) into one evaluation.
//!
//! fdw: see `fdw.rs` — full scans, index lookups, ORDER BY … LIMIT and bulk
//! inserts through mysql_wrapper/postgres_wrapper, mysql_fdw/postgres_fdw and
//! the client limits, on the same 1 000 000-row table.
//!
//! sso: see `sso.rs` — SAML logins at the ACS, beside `/healthz`.
//!
//! webhooks: 1 KB GitHub-signed deliveries (a new delivery id each) sent by
//! wrk from 64 connections to the release sidecar, beside wrk on `/healthz`
//! (the HTTP limit) and pgbench running the same INSERT with 64 clients (one
//! commit per event), on a cluster with fsync and synchronous_commit on.

mod fdw;
mod sso;

use hmac::{Hmac, Mac};
use integration_tests::{scratch_dir, workspace_root, Nginx, PgCluster, Sidecar};
use postgres::Client;
use sha2::Sha256;
use std::fs;
use std::process::Command;
use std::time::Instant;

const WARM_CALLS: i64 = 100_000;
const COLD_KEYS: i64 = 20_000;
const RUNS: usize = 5;

/// `bench [SECTION…]` runs the named sections (api_keys, jwt, http,
/// http_queue, webhooks, sso, fdw), all of them when none is named.
fn main() {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    let runs = |section: &str| wanted.is_empty() || wanted.iter().any(|w| w == section);
    let cluster = PgCluster::start();
    let mut db = cluster.create_database("bench");
    db.batch_execute(PLAIN_SQL_SETUP).expect("plain SQL setup");
    println!("# pg_integration benchmarks (release build, PostgreSQL 15, loopback)");
    if runs("api_keys") {
        api_keys(&cluster, &mut db);
    }
    if runs("jwt") {
        jwt(&mut db);
    }
    if runs("http") {
        http(&mut db);
    }
    if runs("http_queue") {
        http_queue(&cluster, &mut db);
    }
    drop(db);
    drop(cluster);
    if runs("webhooks") {
        webhooks();
    }
    if runs("sso") {
        sso::sso();
    }
    if runs("fdw") {
        fdw::fdw();
    }
}

/// Connections of wrk and clients of pgbench.
const CONNECTIONS: u32 = 64;

/// What wrk or pgbench reported.
struct Run {
    rps: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

fn webhooks() {
    let seconds: u32 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    // Durable commits: group commit matters only when a commit costs a flush.
    let cluster = PgCluster::start_with(&[
        ("fsync", "on"),
        ("synchronous_commit", "on"),
        ("max_connections", "200"),
    ]);
    let mut db = cluster.create_database("bench");
    db.batch_execute("ALTER ROLE integration_sidecar LOGIN")
        .expect("sidecar login");
    let secret: String = db
        .query_one(
            "SELECT new_secret FROM integration.create_webhook('bench', 'github')",
            &[],
        )
        .expect("create_webhook")
        .get(0);
    let pad = "x".repeat(1024 - 60);
    let body = format!(r#"{{"action":"opened","number":"1","pad":"{pad}"}}"#);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    std::env::set_var(
        "INTEGRATION_SIDECAR_BIN",
        workspace_root().join("target/release/integration-sidecar"),
    );
    let sidecar = Sidecar::start(
        &cluster.url("bench", "integration_sidecar"),
        &["--db-pool-size", "16"],
        None,
    );
    let dir = scratch_dir("bench");
    // The signature covers the body only, so each request may carry a new
    // X-GitHub-Delivery: every request is a new event, never a duplicate.
    let lua = dir.join("deliveries.lua");
    fs::write(
        &lua,
        format!(
            r#"local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("prefix", "w" .. threads .. "-")
end
function init(args)
  n = 0
  wrk.method = "POST"
  wrk.body = '{body}'
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-GitHub-Event"] = "pull_request"
  wrk.headers["X-Hub-Signature-256"] = "sha256={signature}"
end
function request()
  n = n + 1
  wrk.headers["X-GitHub-Delivery"] = prefix .. n
  return wrk.format()
end
"#
        ),
    )
    .expect("write the wrk script");
    // The same INSERT as the sidecar's, alone and with the NOTIFY that every
    // stored event sends (Postgres serialises the commits of transactions
    // that notify, so this is the limit of one commit per notified event).
    let row = format!(
        "INSERT INTO integration.webhook_events \
         (webhook, delivery_id, headers, payload, raw_body, content_type, source) \
         VALUES ('pgbench', 'p' || :client_id || '-' || :r, \
         '{{\"x-github-event\": \"pull_request\"}}', '{body}', \
         convert_to('{body}', 'UTF8'), 'application/json', '127.0.0.1')"
    );
    let insert = dir.join("insert.sql");
    fs::write(
        &insert,
        format!("\\set r random(1, 1000000000000)\n{row};\n"),
    )
    .expect("write the pgbench script");
    let notified = dir.join("insert_notify.sql");
    fs::write(
        &notified,
        format!(
            "\\set r random(1, 1000000000000)\n\
             WITH e AS ({row} RETURNING id) \
             SELECT pg_notify('integration_webhook', e.id::text) FROM e;\n"
        ),
    )
    .expect("write the pgbench script");

    println!("\n## webhooks: {CONNECTIONS} connections, {seconds} s each, fsync and synchronous_commit on");
    let health = wrk(&sidecar.url("/healthz"), None, seconds, CONNECTIONS);
    let hooks = wrk(
        &sidecar.url("/webhooks/bench"),
        Some(&lua),
        seconds,
        CONNECTIONS,
    );
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM integration.webhook_events WHERE webhook = 'bench'",
            &[],
        )
        .expect("count")
        .get(0);
    let pg = pgbench(&cluster, &insert, seconds);
    let pg_notify = pgbench(&cluster, &notified, seconds);
    let batch = batch_sizes(&sidecar.metrics());
    print_run("wrk GET /healthz (HTTP limit)", &health);
    print_run("wrk POST /webhooks/bench (1 KB, signed)", &hooks);
    print_run("pgbench same INSERT, 1 commit/event", &pg);
    print_run("pgbench same INSERT + NOTIFY", &pg_notify);
    println!("events stored by the sidecar         {stored:>10}");
    println!("mean events per group commit         {batch:>10.1}");
    println!(
        "ratio webhooks / pgbench             {:>10.2}x",
        hooks.rps / pg.rps
    );
    println!(
        "ratio webhooks / pgbench with NOTIFY {:>10.2}x",
        hooks.rps / pg_notify.rps
    );
    println!(
        "ratio webhooks / healthz             {:>10.2}x",
        hooks.rps / health.rps
    );
}

fn print_run(what: &str, run: &Run) {
    let ms = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.2} ms"));
    println!(
        "{what:<40} {:>9.0} req/s  p50 {:>9}  p99 {:>9}",
        run.rps,
        ms(run.p50_ms),
        ms(run.p99_ms)
    );
}

fn wrk(url: &str, script: Option<&std::path::Path>, seconds: u32, connections: u32) -> Run {
    let mut cmd = Command::new("wrk");
    let threads = connections.min(2);
    cmd.args([
        "-t",
        &threads.to_string(),
        "-c",
        &connections.to_string(),
        "-d",
    ])
    .arg(format!("{seconds}s"))
    .arg("--latency");
    if let Some(script) = script {
        cmd.arg("-s").arg(script);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(errors) = text.lines().find(|l| l.contains("Non-2xx")) {
        println!("wrk {url}: {}", errors.trim());
    }
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
    };
    Run {
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p50_ms: field("50%").and_then(|v| wrk_ms(&v)),
        p99_ms: field("99%").and_then(|v| wrk_ms(&v)),
    }
}

/// wrk prints latencies as `812.00us`, `3.41ms` or `1.02s`.
fn wrk_ms(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        _ => return None,
    })
}

fn pgbench(cluster: &PgCluster, script: &std::path::Path, seconds: u32) -> Run {
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "prepared",
            "-j",
            "2",
            "-c",
            &CONNECTIONS.to_string(),
        ])
        .args([
            "-T",
            &seconds.to_string(),
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .args(["-p", &cluster.port().to_string(), "-f"])
        .arg(script)
        .arg("bench")
        .output()
        .expect("run pgbench");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let average = text
        .lines()
        .find_map(|l| l.strip_prefix("latency average = "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    // pgbench reports the mean latency only; it is shown in the p50 column.
    Run {
        rps: tps,
        p50_ms: average,
        p99_ms: None,
    }
}

/// Mean events per group commit, from the sidecar's histogram.
fn batch_sizes(metrics: &str) -> f64 {
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let sum = value("integration_sidecar_webhook_commit_batch_size_sum ");
    let count = value("integration_sidecar_webhook_commit_batch_size_count ");
    if count > 0.0 {
        sum / count
    } else {
        0.0
    }
}

const HTTP_CALLS: i64 = 5_000;

fn http(db: &mut Client) {
    let nginx = Nginx::start();
    let url = nginx.url("/ok");
    db.batch_execute("SET integration.http_allowed_networks = '127.0.0.1/32'")
        .unwrap();
    let limit = wrk(&url, None, 5, 1).rps;
    let mut rates: Vec<f64> = (0..3)
        .map(|_| {
            let start = Instant::now();
            let n: i64 = db
                .query_one(
                    "SELECT count(*) FILTER (WHERE (r).status = 200)
                     FROM (SELECT integration.http_get($2) AS r
                           FROM generate_series(1, $1::bigint)) calls",
                    &[&HTTP_CALLS, &url],
                )
                .unwrap()
                .get(0);
            assert_eq!(n, HTTP_CALLS);
            HTTP_CALLS as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let ours = rates[1];
    println!(
        "\n## http: {HTTP_CALLS} sequential http_get in one session, loopback nginx (median of 3)"
    );
    println!("wrk -c1 -t1 (the limit)        {limit:8.0} requests/s");
    println!("integration.http_get           {ours:8.0} calls/s");
    println!("ratio ours / wrk               {:8.2}x", ours / limit);
}

const QUEUED: i64 = 10_000;

fn http_queue(cluster: &PgCluster, db: &mut Client) {
    let nginx = Nginx::start();
    let url = nginx.url("/ok");
    db.batch_execute("ALTER DATABASE bench SET integration.http_allowed_networks = '127.0.0.1/32'")
        .unwrap();
    let limit = wrk(&url, None, 5, 32).rps;
    println!(
        "\n## http queue: {QUEUED} queued requests until all responses are stored (median of 3)"
    );
    println!("wrk -c32 (the limit)           {limit:8.0} requests/s");
    // 32 in flight in all, as wrk's 32 connections, shared by the workers.
    for workers in [1, 2] {
        let cap = 32 / workers;
        db.batch_execute(&format!(
            "ALTER DATABASE bench SET integration.http_queue_workers = {workers};
             ALTER DATABASE bench SET integration.http_queue_host_concurrency = {cap};
             ALTER DATABASE bench SET integration.http_queue_concurrency = {cap};"
        ))
        .unwrap();
        // The worker reads the settings when it starts: let it leave first.
        wait_for_no_worker(db);
        let mut db = cluster.connect("bench");
        let (ours, enqueue) = queue_rates(&mut db, &url);
        println!(
            "{workers} worker(s): http_enqueue + delivery {ours:8.0} requests/s ({:.2}x wrk)",
            ours / limit
        );
        println!("  of which http_enqueue alone  {enqueue:8.0} calls/s");
    }
}

/// Waits until the database's queue workers have left.
fn wait_for_no_worker(db: &mut Client) {
    loop {
        let running: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE backend_type = 'pg_integration worker' AND datname = current_database()",
                &[],
            )
            .unwrap()
            .get(0);
        if running == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Medians of 3 runs: requests/s from enqueue to the last stored response,
/// and `http_enqueue` calls/s alone.
fn queue_rates(db: &mut Client, url: &str) -> (f64, f64) {
    let mut enqueue_rates = Vec::new();
    let mut rates: Vec<f64> = (0..3)
        .map(|_| {
            db.batch_execute("TRUNCATE integration.http_responses")
                .unwrap();
            let start = Instant::now();
            db.execute(
                "SELECT integration.http_enqueue('GET', $2) FROM generate_series(1, $1::bigint)",
                &[&QUEUED, &url],
            )
            .unwrap();
            enqueue_rates.push(QUEUED as f64 / start.elapsed().as_secs_f64());
            loop {
                let waiting: bool = db
                    .query_one("SELECT EXISTS (SELECT FROM integration.http_requests)", &[])
                    .unwrap()
                    .get(0);
                if !waiting {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let ok: i64 = db
                .query_one(
                    "SELECT count(*) FROM integration.http_responses WHERE status = 200",
                    &[],
                )
                .unwrap()
                .get(0);
            assert_eq!(ok, QUEUED);
            QUEUED as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    enqueue_rates.sort_by(f64::total_cmp);
    (rates[1], enqueue_rates[1])
}

const PLAIN_SQL_SETUP: &str = "
    CREATE EXTENSION pgcrypto;
    CREATE ROLE web_user NOLOGIN;
    CREATE TABLE plain_keys (
        id bigint PRIMARY KEY, name text, role text, scopes text[], metadata jsonb,
        secret_hash bytea, expires_at timestamptz, revoked_at timestamptz);
    CREATE FUNCTION plain_verify(token text)
    RETURNS TABLE (id bigint, name text, role text, scopes text[], metadata jsonb)
    LANGUAGE sql STABLE AS $$
        SELECT k.id, k.name, k.role, k.scopes, k.metadata
        FROM plain_keys k
        WHERE k.id = split_part(token, '_', 2)::bigint
          AND k.secret_hash = digest(split_part(token, '_', 3), 'sha256')
          AND k.revoked_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > now())
    $$;
    CREATE FUNCTION plain_base64url(data text) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
        SELECT decode(translate(data, '-_', '+/')
                      || repeat('=', (4 - length(data) % 4) % 4), 'base64')
    $$;
    CREATE FUNCTION plain_jwt_verify(token text, secret text) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
        SELECT CASE
            WHEN translate(encode(hmac(split_part(token, '.', 1) || '.' || split_part(token, '.', 2),
                                       secret, 'sha256'), 'base64'), E'+/=\n', '-_') = split_part(token, '.', 3)
             AND (convert_from(plain_base64url(split_part(token, '.', 2)), 'utf8')::jsonb->>'exp')::numeric
                 > extract(epoch from now())
            THEN convert_from(plain_base64url(split_part(token, '.', 2)), 'utf8')::jsonb
        END
    $$;
";

fn jwt(db: &mut Client) {
    let secret = "a-benchmark-secret-of-at-least-32-bytes";
    let token: String = db
        .query_one(
            "SELECT integration.sign_jwt('{\"sub\":\"alice\",\"role\":\"web_user\"}', $1, 'HS256',
                                         expires_in => interval '1 hour')",
            &[&secret],
        )
        .unwrap()
        .get(0);
    let ours = per_call(
        db,
        "SELECT count(integration.verify_jwt($2 || left(g::text, 0), $3)) FROM generate_series(1, $1::bigint) g",
        &[&WARM_CALLS, &token, &secret],
        WARM_CALLS,
    );
    let plain = per_call(
        db,
        "SELECT count(plain_jwt_verify($2 || left(g::text, 0), $3)) FROM generate_series(1, $1::bigint) g",
        &[&WARM_CALLS, &token, &secret],
        WARM_CALLS,
    );
    println!(
        "\n## jwt: HS256 verification, {WARM_CALLS} calls in one statement (median of {RUNS})"
    );
    println!("integration.verify_jwt         {ours:8.3} µs/call");
    println!("plain SQL (pgjwt-style)        {plain:8.3} µs/call");
    println!("ratio plain SQL / ours         {:8.2}x", plain / ours);
}

/// Median wall time of `sql` over `RUNS` runs, in microseconds per `calls`.
fn per_call(
    client: &mut Client,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
    calls: i64,
) -> f64 {
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let n: i64 = client.query_one(sql, params).expect(sql).get(0);
            assert_eq!(n, calls, "every call must verify: {sql}");
            start.elapsed().as_secs_f64() * 1e6 / calls as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn api_keys(cluster: &PgCluster, db: &mut Client) {
    let token: String = db
        .query_one(
            "SELECT integration.create_api_key('bench', 'web_user', '{orders:read}', metadata => '{\"team\":\"a\"}')",
            &[],
        )
        .unwrap()
        .get(0);
    let plain_token = "pgplain_1_secretsecretsecretsecretsecretsecretsec";
    db.execute(
        "INSERT INTO plain_keys VALUES (1, 'bench', 'web_user', '{orders:read}', '{\"team\":\"a\"}',
                digest('secretsecretsecretsecretsecretsecretsec', 'sha256'), NULL, NULL)",
        &[],
    )
    .unwrap();

    let loop_only = per_call(
        db,
        "SELECT count(*) FROM (SELECT g FROM generate_series(1, $1::bigint) g) s",
        &[&WARM_CALLS],
        WARM_CALLS,
    );
    let ours = per_call(
        db,
        "SELECT count(*) FROM (SELECT integration.verify_api_key($2) FROM generate_series(1, $1::bigint)) s",
        &[&WARM_CALLS, &token],
        WARM_CALLS,
    );
    let plain = per_call(
        db,
        "SELECT count(*) FROM (SELECT plain_verify($2) FROM generate_series(1, $1::bigint)) s",
        &[&WARM_CALLS, &plain_token],
        WARM_CALLS,
    );
    println!("\n## api_keys: verify_api_key, {WARM_CALLS} calls in one statement, warm cache (median of {RUNS})");
    println!("bare loop                      {loop_only:8.3} µs/row");
    println!("integration.verify_api_key     {ours:8.3} µs/call");
    println!("plain SQL (pgcrypto + index)   {plain:8.3} µs/call");
    println!("ratio plain SQL / ours         {:8.2}x", plain / ours);
    println!(
        "ratio net of the loop          {:8.2}x",
        (plain - loop_only) / (ours - loop_only)
    );

    // Cold: distinct keys, each verified once, in a fresh session.
    db.batch_execute(&format!(
        "CREATE TABLE cold_tokens AS
           SELECT integration.create_api_key('cold ' || g, 'web_user') AS token
           FROM generate_series(1, {COLD_KEYS}) g;
         INSERT INTO plain_keys
           SELECT 1000 + g, 'cold', 'web_user', '{{}}', '{{}}',
                  digest('s' || g, 'sha256'), NULL, NULL
           FROM generate_series(1, {COLD_KEYS}) g;
         CREATE TABLE cold_plain AS
           SELECT 'pgplain_' || (1000 + g) || '_s' || g AS token FROM generate_series(1, {COLD_KEYS}) g;"
    ))
    .unwrap();
    let cold = |sql: &str| {
        let mut times: Vec<f64> = (0..RUNS)
            .map(|_| {
                let mut fresh = cluster.connect("bench");
                let start = Instant::now();
                let n: i64 = fresh.query_one(sql, &[]).expect(sql).get(0);
                assert_eq!(n, COLD_KEYS, "{sql}");
                start.elapsed().as_secs_f64() * 1e6 / COLD_KEYS as f64
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[RUNS / 2]
    };
    let ours_cold =
        cold("SELECT count(*) FROM (SELECT integration.verify_api_key(token) FROM cold_tokens) s");
    let plain_cold = cold("SELECT count(*) FROM (SELECT plain_verify(token) FROM cold_plain) s");
    println!("\n## api_keys: {COLD_KEYS} distinct keys verified once each, fresh session (median of {RUNS})");
    println!("integration.verify_api_key     {ours_cold:8.3} µs/call");
    println!("plain SQL (pgcrypto + index)   {plain_cold:8.3} µs/call");
    println!(
        "ratio plain SQL / ours         {:8.2}x",
        plain_cold / ours_cold
    );
}
