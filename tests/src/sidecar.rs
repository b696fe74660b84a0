//! The `integration-sidecar` binary under test: started with a database URL
//! and a free loopback port, its output kept in a log file, killed on drop
//! (and its log printed when the test failed). Tests build it first
//! (`cargo build -p integration-sidecar`; `make test-e2e` does).

use crate::process::{free_port, workspace_root};
use reqwest::blocking::Client;
use serde_json::Value;
use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Every variable the sidecar reads; cleared so the caller's environment
/// cannot change what a test sees.
pub const SIDECAR_VARIABLES: [&str; 12] = [
    "DATABASE_URL",
    "LISTEN_ADDR",
    "PUBLIC_URL",
    "LOG_FORMAT",
    "DB_POOL_SIZE",
    "TLS_CERT",
    "TLS_KEY",
    "RUST_LOG",
    "HEADER_READ_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "DOCS",
];
/// How long a started sidecar may take to answer /healthz.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running sidecar whose output goes to a log file; killed on drop, its
/// log printed (and kept) when the test failed.
pub struct Sidecar {
    child: Child,
    pub base_url: String,
    pub client: Client,
    /// Holds the log; removed on drop unless the test failed.
    dir: PathBuf,
    log_path: PathBuf,
}

impl Sidecar {
    /// Starts the binary with DATABASE_URL and LISTEN_ADDR in its environment
    /// and `args` on its command line, and waits until /healthz answers. With
    /// `ca_pem` it speaks HTTPS and trusts only that certificate.
    pub fn start(database_url: &str, args: &[&str], ca_pem: Option<&[u8]>) -> Sidecar {
        Self::start_on(free_port(), database_url, args, ca_pem)
    }

    /// Like [`Sidecar::start`] on a given port, for peers that must know
    /// the sidecar's address before it starts (OIDC redirect URIs).
    pub fn start_on(
        port: u16,
        database_url: &str,
        args: &[&str],
        ca_pem: Option<&[u8]>,
    ) -> Sidecar {
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

    /// The sidecar's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GETs `path` and returns the status and the JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
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
    pub fn metrics(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.base_url))
            .send()
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", self.log()));
        assert_eq!(response.status().as_u16(), 200, "GET /metrics");
        response.text().expect("the /metrics body")
    }

    /// Polls `path` until it answers `status`, for at most `within`.
    pub fn wait_for(&self, path: &str, status: u16, within: Duration) -> (u16, Value) {
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
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
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

    /// Kills the process with SIGKILL (no graceful shutdown) and reaps it.
    pub fn kill9(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn log(&self) -> String {
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
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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
pub fn sidecar_command() -> Command {
    // The bench runs the release build: INTEGRATION_SIDECAR_BIN names it.
    let binary = std::env::var_os("INTEGRATION_SIDECAR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"));
            target.join("debug").join("integration-sidecar")
        });
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
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("pg_integration-e2e")
        .join(format!("sidecar-{}-{name}", std::process::id()));
    fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}
