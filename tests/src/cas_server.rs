//! django-cas-server (PyPI, on Django 5.2, installed under build/cas by
//! `make test-deps`) run by our start script `tests/cas/serve.py` on a free
//! loopback port, with its own folder and SQLite file: user `alice`
//! (attributes mail, cn, groups dba and staff), a service pattern for the
//! sidecar's callbacks with single logout, and another service. Stopped on
//! drop (or by [`CasServer::stop`]).

use crate::process::{free_port, wait_for_ports, workspace_root};
use crate::sidecar::scratch_dir;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The one user of the server and its password.
pub const CAS_USER: &str = "alice";
pub const CAS_PASSWORD: &str = "alice-password";
/// A service the server issues tickets for that is not the sidecar.
pub const OTHER_SERVICE: &str = "https://other.example.org/app";

pub struct CasServer {
    child: Option<Child>,
    pub port: u16,
    /// Holds the log and the SQLite file; removed on drop unless the test failed.
    dir: PathBuf,
    log_path: PathBuf,
}

impl CasServer {
    pub fn start() -> CasServer {
        let python = workspace_root().join("build/cas/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run `make test-deps` (make test does it)",
            python.display()
        );
        let port = free_port();
        let dir = scratch_dir(&format!("cas-{port}"));
        let log_path = dir.join("cas-server.log");
        let log = fs::File::create(&log_path).expect("create the CAS server log");
        let child = Command::new(&python)
            .arg(workspace_root().join("tests/cas/serve.py"))
            .env("PORT", port.to_string())
            .env("CAS_DIR", &dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", python.display()));
        let mut server = CasServer {
            child: Some(child),
            port,
            dir,
            log_path,
        };
        let log_path = server.log_path.clone();
        if let Some(child) = server.child.as_mut() {
            // Migrating a fresh SQLite file takes a few seconds on a busy machine.
            wait_for_ports(
                child,
                &[port],
                "django-cas-server",
                Duration::from_secs(120),
                || fs::read_to_string(&log_path).unwrap_or_default(),
            );
        }
        server
    }

    /// `http://127.0.0.1:PORT/cas`, the `server_url` of a provider.
    pub fn server_url(&self) -> String {
        format!("http://127.0.0.1:{}/cas", self.port)
    }

    /// Stops the server (its port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for CasServer {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- django-cas-server log ---\n{}", self.log());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
