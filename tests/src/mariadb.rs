//! A throwaway MariaDB 10.11 (Debian's mariadb-server): `mariadb-install-db`
//! into a fresh folder, `mariadbd` on a free loopback port with its own
//! socket, stopped and removed on drop. SQL goes through the `mariadb` client.

use crate::process::{free_port, run_checked};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static SERVERS: AtomicUsize = AtomicUsize::new(0);

/// The root password of every throwaway server.
pub const MARIADB_ROOT_PASSWORD: &str = "root-pw";

pub struct MariaDb {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        Self::start_with(&[])
    }

    /// Starts a server that also accepts TLS with `cert` and `key`.
    pub fn start_with_tls(ca: &Path, cert: &Path, key: &Path) -> MariaDb {
        Self::start_with(&[
            format!("--ssl-ca={}", ca.display()),
            format!("--ssl-cert={}", cert.display()),
            format!("--ssl-key={}", key.display()),
        ])
    }

    /// Starts a server with extra `mariadbd` arguments.
    pub fn start_with(args: &[String]) -> MariaDb {
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir()
            .join("pg_integration-e2e")
            .join(format!("mariadb-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the MariaDB folder");
        let data = dir.join("data");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).expect("create the MariaDB tmpdir");
        run_checked(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(["--user=root", "--auth-root-authentication-method=normal"])
                .args(["--skip-test-db", "--skip-name-resolve"])
                // Concurrent bootstraps must not share /tmp temporary tables.
                .arg(format!("--tmpdir={}", tmp.display())),
            "mariadb-install-db",
        );
        let port = free_port();
        let log = fs::File::create(dir.join("server.log")).expect("create the server log");
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
            .args([
                "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=0",
            ])
            .args([
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
            ])
            .arg("--default-time-zone=+00:00")
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        let server = MariaDb { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("mariadb")
                .args(server.socket_args())
                .args(["-uroot", "-e", "SELECT 1"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server.run(
            server.socket_args(),
            &format!(
                "ALTER USER root@localhost IDENTIFIED BY '{MARIADB_ROOT_PASSWORD}'; \
             CREATE USER IF NOT EXISTS root@'127.0.0.1'; \
             ALTER USER root@'127.0.0.1' IDENTIFIED BY '{MARIADB_ROOT_PASSWORD}'; \
             GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;"
            ),
        );
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn socket_args(&self) -> Vec<String> {
        vec![
            "--no-defaults".into(),
            format!("--socket={}", self.dir.join("sock").display()),
        ]
    }

    /// Runs SQL as root over TCP and returns the rows, tab-separated.
    pub fn sql(&self, sql: &str) -> String {
        self.run(
            vec![
                "--no-defaults".into(),
                "--protocol=tcp".into(),
                "-h127.0.0.1".into(),
                format!("-P{}", self.port),
                format!("-p{MARIADB_ROOT_PASSWORD}"),
            ],
            sql,
        )
    }

    fn run(&self, connect: Vec<String>, sql: &str) -> String {
        let mut child = Command::new("mariadb")
            .args(connect)
            .args(["-uroot", "-N", "-B", "--default-character-set=utf8mb4"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the mariadb client");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(sql.as_bytes())
            .expect("send SQL");
        let out = child.wait_with_output().expect("mariadb client");
        assert!(
            out.status.success(),
            "mariadb: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
