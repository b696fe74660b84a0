//! End-to-end tests of the `integration-sidecar` binary: its command line, the
//! probes and metrics against a real PostgreSQL with pg_integration (down,
//! up, down and up again), HTTPS, and a clean exit on SIGTERM. The binary must
//! be built first (`cargo build -p integration-sidecar`; `make test-e2e` does).

use integration_tests::{free_port, workspace_root, PgCluster};
use reqwest::blocking::Client;
use serde_json::{json, Value};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Given in every DATABASE_URL (trust authentication ignores it), so the tests
/// can prove it never reaches a log line or an HTTP answer.
const PASSWORD: &str = "never-print-me-7f3a";
/// Every variable the sidecar reads; cleared so the caller's environment
/// cannot change what a test sees.
const SIDECAR_VARIABLES: [&str; 8] = [
    "DATABASE_URL",
    "LISTEN_ADDR",
    "PUBLIC_URL",
    "LOG_FORMAT",
    "DB_POOL_SIZE",
    "TLS_CERT",
    "TLS_KEY",
    "RUST_LOG",
];
/// How long a started sidecar may take to answer /healthz.
const START_TIMEOUT: Duration = Duration::from_secs(20);

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

/// A running sidecar whose output goes to a log file; killed on drop, its
/// log printed (and kept) when the test failed.
struct Sidecar {
    child: Child,
    base_url: String,
    client: Client,
    /// Holds the log; removed on drop unless the test failed.
    dir: PathBuf,
    log_path: PathBuf,
}

impl Sidecar {
    /// Starts the binary with DATABASE_URL and LISTEN_ADDR in its environment
    /// and `args` on its command line, and waits until /healthz answers. With
    /// `ca_pem` it speaks HTTPS and trusts only that certificate.
    fn start(database_url: &str, args: &[&str], ca_pem: Option<&[u8]>) -> Sidecar {
        let port = free_port();
        let dir = scratch_dir(&format!("port-{port}"));
        let log_path = dir.join("sidecar.log");
        let log = File::create(&log_path).expect("create the sidecar log");
        let child = sidecar_command()
            .env("DATABASE_URL", database_url)
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .args(args)
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn integration-sidecar");
        let mut client = Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy();
        let scheme = match ca_pem {
            Some(pem) => {
                let ca = reqwest::Certificate::from_pem(pem).expect("a PEM certificate");
                client = client
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(ca);
                "https"
            }
            None => "http",
        };
        let mut sidecar = Sidecar {
            child,
            base_url: format!("{scheme}://127.0.0.1:{port}"),
            client: client.build().expect("an HTTP client"),
            dir,
            log_path,
        };
        sidecar.wait_until_healthy();
        sidecar
    }

    fn wait_until_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the sidecar exited at start with {status}:\n{}", self.log());
            }
            let last = match self.client.get(format!("{}/healthz", self.base_url)).send() {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => format!("status {}", r.status()),
                Err(e) => format!("{e:?}"),
            };
            if Instant::now() > deadline {
                panic!(
                    "/healthz did not answer 200 within {START_TIMEOUT:?} (last: {last}):\n{}",
                    self.log()
                );
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// GETs `path` and returns the status and the JSON body.
    fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base_url))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()));
        let status = response.status().as_u16();
        let body = response
            .text()
            .unwrap_or_else(|e| panic!("GET {path} body: {e}"));
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} answered {status} with non-JSON ({e}): {body}"));
        (status, json)
    }

    /// The Prometheus text of /metrics.
    fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.base_url))
            .send()
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", self.log()));
        assert_eq!(response.status().as_u16(), 200, "GET /metrics");
        response.text().expect("the /metrics body")
    }

    /// Polls `path` until it answers `status`, for at most `within`.
    fn wait_for(&self, path: &str, status: u16, within: Duration) -> (u16, Value) {
        let deadline = Instant::now() + within;
        loop {
            let answer = self.get(path);
            if answer.0 == status {
                return answer;
            }
            if Instant::now() > deadline {
                panic!(
                    "GET {path} still answers {} {} after {within:?}, expected {status}\n{}",
                    answer.0,
                    answer.1,
                    self.log()
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Sends SIGTERM and waits for the exit; returns its status and how long it took.
    fn terminate(&mut self) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM failed");
        let status = wait_with_deadline(&mut self.child, Duration::from_secs(15))
            .unwrap_or_else(|| panic!("the sidecar ignored SIGTERM for 15 s:\n{}", self.log()));
        (status, sent.elapsed())
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
        if std::thread::panicking() {
            eprintln!("--- sidecar log ---\n{}", self.log());
        } else {
            fs::remove_dir_all(&self.dir).ok();
        }
    }
}

/// The value of the sample `name` whose labels include `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, l)) => (n, l),
            None => (series, ""),
        };
        let matches = series_name == name
            && labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
        if matches {
            value.parse().ok()
        } else {
            None
        }
    })
}

/// The sidecar binary with none of its variables inherited from the caller.
fn sidecar_command() -> Command {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let binary = target.join("debug").join("integration-sidecar");
    assert!(
        binary.is_file(),
        "{} is missing: build it first with `cargo build -p integration-sidecar` \
         (`make test-e2e` does)",
        binary.display()
    );
    let mut cmd = Command::new(binary);
    for variable in SIDECAR_VARIABLES {
        cmd.env_remove(variable);
    }
    cmd.stdin(Stdio::null());
    cmd
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

fn wait_with_deadline(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return Some(status);
        }
        sleep(Duration::from_millis(20));
    }
    None
}

/// A fresh folder for this test process under the system temp folder.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("pg_integration-e2e")
        .join(format!("sidecar-{}-{name}", std::process::id()));
    fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
