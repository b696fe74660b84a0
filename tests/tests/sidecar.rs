//! End-to-end tests of the `integration-sidecar` binary: its command line, the
//! probes and metrics against a real PostgreSQL with pg_integration (down,
//! up, down and up again), HTTPS, and a clean exit on SIGTERM. The binary must
//! be built first (`cargo build -p integration-sidecar`; `make test-e2e` does).

use integration_tests::{free_port, sample, scratch_dir, sidecar_command, PgCluster, Sidecar};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Given in every DATABASE_URL (trust authentication ignores it), so the tests
/// can prove it never reaches a log line or an HTTP answer.
const PASSWORD: &str = "never-print-me-7f3a";

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let secret_url = format!("postgresql://integration_sidecar:{PASSWORD}@127.0.0.1/db");
    let out = run_to_exit(
        sidecar_command()
            .env("DATABASE_URL", secret_url)
            .arg("--help"),
    );
    assert!(out.status.success(), "--help failed: {}", text(&out.stderr));
    let help = text(&out.stdout);
    for (flag, variable) in [
        ("--database-url", "DATABASE_URL"),
        ("--listen-addr", "LISTEN_ADDR"),
        ("--public-url", "PUBLIC_URL"),
        ("--log-format", "LOG_FORMAT"),
        ("--db-pool-size", "DB_POOL_SIZE"),
        ("--tls-cert", "TLS_CERT"),
        ("--tls-key", "TLS_KEY"),
        ("--header-read-timeout", "HEADER_READ_TIMEOUT"),
        ("--idle-timeout", "IDLE_TIMEOUT"),
        ("--max-connections", "MAX_CONNECTIONS"),
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
        assert!(
            help.contains(&format!("[env: {variable}")),
            "--help does not mention {variable}:\n{help}"
        );
    }
    assert!(
        !help.contains(PASSWORD),
        "--help shows DATABASE_URL:\n{help}"
    );
}

#[test]
fn refuses_to_start_without_database_url() {
    let out =
        run_to_exit(sidecar_command().env("LISTEN_ADDR", format!("127.0.0.1:{}", free_port())));
    assert!(!out.status.success(), "started without DATABASE_URL");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--database-url") && stderr.contains("DATABASE_URL"),
        "the error does not say what is missing:\n{stderr}"
    );
}

#[test]
fn probes_and_metrics_follow_the_database_and_sigterm_stops_cleanly() {
    let cluster = PgCluster::start();
    let db = "sidecar_e2e";
    let mut admin = cluster.create_database(db);
    admin
        .batch_execute("ALTER ROLE integration_sidecar LOGIN")
        .expect("let integration_sidecar log in");
    let url = format!(
        "postgresql://integration_sidecar:{PASSWORD}@127.0.0.1:{}/{db}",
        cluster.port()
    );
    let mut sidecar = Sidecar::start(&url, &["--log-format", "json"], None);

    assert_eq!(sidecar.get("/healthz"), (200, json!({"status": "ok"})));
    assert_eq!(
        sidecar.get("/readyz"),
        (200, json!({"status": "ready", "database": "ok"}))
    );
    let sessions: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE usename = 'integration_sidecar' AND application_name = 'integration-sidecar'",
            &[],
        )
        .expect("pg_stat_activity")
        .get(0);
    assert!(
        sessions >= 1,
        "no session of integration_sidecar named integration-sidecar"
    );

    let healthz_ok = [("route", "/healthz"), ("method", "GET"), ("status", "200")];
    let before = sample(
        &sidecar.metrics(),
        "integration_sidecar_http_requests_total",
        &healthz_ok,
    )
    .expect("/healthz was counted");
    for _ in 0..3 {
        assert_eq!(sidecar.get("/healthz").0, 200);
    }
    let metrics = sidecar.metrics();
    assert_eq!(
        sample(
            &metrics,
            "integration_sidecar_http_requests_total",
            &healthz_ok
        ),
        Some(before + 3.0),
        "{metrics}"
    );
    let readyz_ok = [("route", "/readyz"), ("method", "GET"), ("status", "200")];
    assert_eq!(
        sample(
            &metrics,
            "integration_sidecar_http_requests_total",
            &readyz_ok
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "integration_sidecar_http_request_duration_seconds_count",
            &[("route", "/healthz"), ("method", "GET")]
        )
        .is_some_and(|n| n >= before + 3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "integration_sidecar_db_up", &[]),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "integration_sidecar_build_info", &[]).is_some(),
        "{metrics}"
    );

    cluster.stop();
    let (status, body) = sidecar.wait_for("/readyz", 503, Duration::from_secs(5));
    assert_eq!(body["status"], "unavailable", "{body}");
    let reason = body["database"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "503 without a reason: {body}");
    assert!(!reason.contains(PASSWORD), "the password leaked: {body}");
    assert_eq!(status, 503);
    assert_eq!(
        sidecar.get("/healthz").0,
        200,
        "liveness must not follow the database"
    );
    assert_eq!(
        sample(&sidecar.metrics(), "integration_sidecar_db_up", &[]),
        Some(0.0)
    );

    cluster.restart();
    sidecar.wait_for("/readyz", 200, Duration::from_secs(15));

    let (exit, took) = sidecar.terminate();
    assert!(exit.success(), "SIGTERM ended the sidecar with {exit}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");

    let log = sidecar.log();
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "request"
            && l["method"] == "GET"
            && l["route"] == "/healthz"
            && l["status"] == 200
            && l["latency_ms"].is_number()),
        "no access log line for GET /healthz:\n{log}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "shutting down"),
        "no shutdown line:\n{log}"
    );
}

#[test]
fn readyz_is_503_while_the_database_is_unreachable_from_the_start() {
    let url = format!(
        "postgresql://integration_sidecar:{PASSWORD}@127.0.0.1:{}/none",
        free_port()
    );
    let mut sidecar = Sidecar::start(&url, &[], None);
    assert_eq!(sidecar.get("/healthz").0, 200);
    let started = Instant::now();
    let (status, body) = sidecar.get("/readyz");
    assert!(started.elapsed() < Duration::from_secs(3), "/readyz hung");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert!(!body.to_string().contains(PASSWORD), "{body}");
    let (exit, _) = sidecar.terminate();
    assert!(exit.success(), "SIGTERM ended the sidecar with {exit}");
    assert!(!sidecar.log().contains(PASSWORD), "{}", sidecar.log());
}

#[test]
fn serves_https_when_given_a_certificate_and_key() {
    let dir = scratch_dir("tls");
    let (conf, cert, key) = (
        dir.join("openssl.cnf"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    // A self-signed server certificate (CA:FALSE: webpki refuses a CA
    // certificate as the server's own, which openssl's defaults would make).
    fs::write(
        &conf,
        "[req]\nprompt = no\ndistinguished_name = dn\nx509_extensions = leaf\n\
         [dn]\nCN = 127.0.0.1\n\
         [leaf]\nbasicConstraints = critical, CA:FALSE\nsubjectAltName = IP:127.0.0.1\n\
         keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .expect("write the openssl config");
    let out = run_to_exit(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-config"])
            .arg(&conf)
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    assert!(out.status.success(), "openssl req: {}", text(&out.stderr));
    let ca = fs::read(&cert).expect("read the certificate");

    let url = format!(
        "postgresql://integration_sidecar@127.0.0.1:{}/none",
        free_port()
    );
    let tls_args = ["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)];
    let mut sidecar = Sidecar::start(&url, &tls_args, Some(&ca));
    assert_eq!(sidecar.get("/healthz"), (200, json!({"status": "ok"})));
    assert!(
        Client::new()
            .get(sidecar.base_url.replace("https://", "http://") + "/healthz")
            .timeout(Duration::from_secs(5))
            .send()
            .map_or(true, |r| !r.status().is_success()),
        "plain HTTP was served on the HTTPS port"
    );
    let (exit, took) = sidecar.terminate();
    assert!(exit.success(), "SIGTERM ended the sidecar with {exit}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    fs::remove_dir_all(&dir).ok();
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/PID/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

/// Whether the server closed `stream` before `deadline`: reads (and drops
/// whatever answer comes) until end of file or a reset.
fn closed_by_server(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream
            .set_read_timeout(Some(left))
            .expect("set a read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_and_half_header_connections_are_capped_and_closed_while_others_are_served() {
    const HELD: usize = 200;
    let url = format!(
        "postgresql://integration_sidecar@127.0.0.1:{}/none",
        free_port()
    );
    let args = [
        "--header-read-timeout",
        "2",
        "--idle-timeout",
        "3",
        "--max-connections",
        "100",
    ];
    let sidecar = Sidecar::start(&url, &args, None);
    assert_eq!(sidecar.get("/healthz").0, 200);
    let rss_before = rss_kib(sidecar.pid());
    let addr = sidecar.base_url.trim_start_matches("http://").to_owned();
    // Half of them stop in the middle of a request head; the other half
    // send a whole request and then keep the connection open, idle.
    let mut held: Vec<TcpStream> = (0..HELD)
        .map(|i| {
            let mut stream = TcpStream::connect(&addr).expect("connect");
            let request: &[u8] = if i % 2 == 0 {
                b"POST /webhooks/slow HTTP/1.1\r\nHost: a\r\nX-Slow: "
            } else {
                b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
            };
            stream.write_all(request).expect("send");
            stream
        })
        .collect();
    // Another client is served meanwhile (once the cap frees a slot).
    let patient = Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .expect("a client");
    let answer = patient
        .get(format!("{}/healthz", sidecar.base_url))
        .send()
        .unwrap_or_else(|e| panic!("another client was not served: {e}\n{}", sidecar.log()));
    assert_eq!(answer.status().as_u16(), 200);
    // The server closes every held connection by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    let open = held
        .iter_mut()
        .map(|stream| closed_by_server(stream, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(
        open, 0,
        "{open} of {HELD} idle or half-header connections are still open"
    );
    assert!(
        sidecar.log().contains("connection limit reached"),
        "no log line says the connection cap was reached:\n{}",
        sidecar.log()
    );
    assert_eq!(sidecar.get("/healthz").0, 200);
    let rss_after = rss_kib(sidecar.pid());
    eprintln!("sidecar RSS: {rss_before} KiB before {HELD} held connections, {rss_after} KiB after they were closed");
}

/// Runs `cmd` to completion and collects its output, killing it after 30 s
/// so a test cannot hang.
fn run_to_exit(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(output) => output.expect("collect the output"),
        Err(_) => {
            Command::new("kill").args(["-KILL", &pid]).status().ok();
            panic!("{cmd:?} was still running after 30 s");
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The extension's own metrics (`integration.metrics`: HTTP queue, webhook
/// events, dropped audit events, failed key checks) reach /metrics in a
/// form a Prometheus parser reads (issue 33).
#[test]
fn database_metrics_are_served_to_prometheus() {
    let cluster = PgCluster::start();
    let db = "metrics_e2e";
    let mut admin = cluster.create_database(db);
    admin
        .batch_execute(&format!(
            "ALTER ROLE integration_sidecar LOGIN;
             ALTER DATABASE {db} SET integration.http_allowed_networks = '127.0.0.1/32';
             SELECT * FROM integration.create_webhook('hook', 'none');"
        ))
        .unwrap();
    let mut admin = cluster.connect(db);
    // Refused at once (nothing listens on port 1), retried in an hour: queued.
    admin
        .batch_execute(
            "SELECT integration.http_enqueue('GET', 'http://127.0.0.1:1/', retries => 5, backoff => '1 hour');
             SELECT integration.verify_api_key('not-a-key');
             SELECT integration.verify_api_key('not-a-key-either');",
        )
        .unwrap();
    let url = format!(
        "postgresql://integration_sidecar:{PASSWORD}@127.0.0.1:{}/{db}",
        cluster.port()
    );
    let sidecar = Sidecar::start(&url, &[], None);
    let client = Client::new();
    for n in 0..2 {
        let status = client
            .post(sidecar.url("/webhooks/hook"))
            .header("Content-Type", "application/json")
            .body(format!("{{\"n\": {n}}}"))
            .send()
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}\n{}", sidecar.log());
    }
    let value = |scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    };
    let start = Instant::now();
    loop {
        let text = sidecar.metrics();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"));
        let failures = value(
            &scrape,
            "integration_api_key_failures_last_minute",
            Some(("reason", "malformed")),
        );
        if failures == Some(2.0) {
            assert_eq!(
                value(&scrape, "integration_http_queue_requests", None),
                Some(1.0),
                "{text}"
            );
            assert_eq!(
                value(
                    &scrape,
                    "integration_webhook_events_last_minute",
                    Some(("webhook", "hook"))
                ),
                Some(2.0),
                "{text}"
            );
            assert_eq!(
                value(&scrape, "integration_audit_events_dropped_total", None),
                Some(0.0),
                "{text}"
            );
            assert!(
                value(&scrape, "integration_sidecar_db_up", None) == Some(1.0),
                "{text}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "failed verifications never counted ({failures:?})\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
