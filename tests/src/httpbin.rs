//! httpbin (the server pgsql-http tests against), run by gunicorn from the
//! virtualenv that `make test` creates under build/venv, on a free loopback
//! port; stopped on drop.

use crate::process::{free_port, workspace_root};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct HttpBin {
    child: Child,
    port: u16,
}

impl HttpBin {
    pub fn start() -> HttpBin {
        let gunicorn = workspace_root().join("build/venv/bin/gunicorn");
        assert!(
            gunicorn.exists(),
            "{} is missing: run `make test-deps` (make test does it)",
            gunicorn.display()
        );
        let port = free_port();
        let child = Command::new(&gunicorn)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args([
                "--workers",
                "4",
                "--worker-class",
                "gthread",
                "--threads",
                "8",
            ])
            .args(["--timeout", "120", "--log-level", "warning"])
            .arg("httpbin:app")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", gunicorn.display()));
        let server = HttpBin { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "httpbin did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for HttpBin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
