//! A throwaway PostgreSQL 15 cluster: `initdb` into a fresh folder, started on a
//! free loopback port with `pg_integration` preloaded, removed on drop.
//! The binaries come from `pg_config --bindir` (Debian's postgresql-15).

use crate::process::{as_postgres, free_port, run_checked, running_as_root};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// A running cluster; dropping it stops the server and deletes its folder.
pub struct PgCluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
}

impl PgCluster {
    /// Starts a cluster with `shared_preload_libraries = 'pg_integration'`.
    pub fn start() -> PgCluster {
        Self::start_with(&[])
    }

    /// Starts a cluster with extra `postgresql.conf` lines.
    pub fn start_with(settings: &[(&str, &str)]) -> PgCluster {
        let bindir = PathBuf::from(
            run_checked(
                Command::new("pg_config").arg("--bindir"),
                "pg_config --bindir",
            )
            .trim(),
        );
        let n = CLUSTERS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir()
            .join("pg_integration-e2e")
            .join(format!("pg-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the cluster folder");
        if running_as_root() {
            // Only this cluster's folder and the shared parent itself: other
            // tests may be running initdb under the parent right now.
            run_checked(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(dir.parent().unwrap())
                    .arg(&dir),
                "chown the cluster folder to postgres",
            );
        }
        let cluster = PgCluster {
            dir,
            bindir,
            port: free_port(),
        };
        run_checked(
            as_postgres(cluster.bin("initdb").to_str().unwrap())
                .args(["-D", cluster.data().to_str().unwrap()])
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-N",
                ]),
            "initdb",
        );
        let mut conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             shared_preload_libraries = 'pg_integration'\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nmax_connections = 50\n\
             log_min_messages = info\n",
            cluster.port,
            cluster.dir.display()
        );
        for (name, value) in settings {
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        let conf_path = cluster.data().join("postgresql.conf");
        let mut text = fs::read_to_string(&conf_path).expect("read postgresql.conf");
        text.push_str(&conf);
        fs::write(&conf_path, text).expect("write postgresql.conf");
        cluster.restart();
        cluster
    }

    /// Starts a cluster that also accepts TLS with `cert` and `key` (which
    /// this gives to the `postgres` user, mode 0600, as PostgreSQL demands).
    pub fn start_with_tls(cert: &Path, key: &Path) -> PgCluster {
        crate::certs::key_for_postgres(key);
        Self::start_with(&[
            ("ssl", "on"),
            ("ssl_cert_file", cert.to_str().expect("a UTF-8 path")),
            ("ssl_key_file", key.to_str().expect("a UTF-8 path")),
        ])
    }

    /// Lets `user` in over TLS only, with a client certificate signed by
    /// `ca` that names the user (`cert` authentication), and reloads.
    pub fn require_client_certificate(&self, ca: &Path, user: &str) {
        let hba_path = self.data().join("pg_hba.conf");
        let hba = fs::read_to_string(&hba_path).expect("read pg_hba.conf");
        fs::write(
            &hba_path,
            format!(
                "hostssl all {user} 127.0.0.1/32 cert\nhost all {user} 127.0.0.1/32 reject\n{hba}"
            ),
        )
        .expect("write pg_hba.conf");
        let ca = ca.display().to_string();
        let mut db = self.connect("postgres");
        db.batch_execute(&format!("ALTER SYSTEM SET ssl_ca_file = '{ca}'"))
            .expect("ssl_ca_file");
        db.batch_execute("SELECT pg_reload_conf()").expect("reload");
        // The postmaster reloads asynchronously; new sessions see it then.
        for _ in 0..100 {
            let row = self.connect("postgres").query_one("SHOW ssl_ca_file", &[]);
            if row.is_ok_and(|r| r.get::<_, String>(0) == ca) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the server did not reload ssl_ca_file\n{}", self.log_tail());
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq URL for `user` on database `db`.
    pub fn url(&self, db: &str, user: &str) -> String {
        format!("postgresql://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// A connected client as `postgres` on database `db`.
    pub fn connect(&self, db: &str) -> postgres::Client {
        self.connect_as(db, "postgres")
    }

    /// A connected client as `user` on database `db`.
    pub fn connect_as(&self, db: &str, user: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db, user), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {db} as {user}: {e}\n{}", self.log_tail()))
    }

    /// Creates database `db` with the extension installed.
    pub fn create_database(&self, db: &str) -> postgres::Client {
        self.connect("postgres")
            .batch_execute(&format!("CREATE DATABASE \"{db}\""))
            .expect("create database");
        let mut client = self.connect(db);
        client
            .batch_execute("CREATE EXTENSION pg_integration")
            .unwrap_or_else(|e| panic!("CREATE EXTENSION: {e}\n{}", self.log_tail()));
        client
    }

    /// `pg_dump` of database `db` with `args`, as `postgres`; panics on failure.
    pub fn pg_dump(&self, db: &str, args: &[&str]) -> String {
        run_checked(
            Command::new(self.bin("pg_dump"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(args)
                .arg(db),
            "pg_dump",
        )
    }

    /// Stops the server (fast shutdown); [`PgCluster::restart`] brings it back.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"], "pg_ctl stop");
    }

    /// Stops the server the way a crash does (immediate shutdown: no
    /// checkpoint, crash recovery at the next start).
    pub fn crash(&self) {
        self.pg_ctl(
            &["-m", "immediate", "-w", "stop"],
            "pg_ctl stop -m immediate",
        );
    }

    /// Starts a stopped server again on the same port with the same data.
    pub fn restart(&self) {
        let log = self.log_path();
        self.pg_ctl(
            &["-l", log.to_str().unwrap(), "-w", "-t", "60", "start"],
            "pg_ctl start",
        );
    }

    fn pg_ctl(&self, args: &[&str], what: &str) {
        run_checked(
            as_postgres(self.bin("pg_ctl").to_str().unwrap())
                .args(["-D", self.data().to_str().unwrap()])
                .args(args),
            what,
        );
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!("--- server log ---\n{}", lines[start..].join("\n"))
    }

    /// The whole server log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        let _ = as_postgres(self.bin("pg_ctl").to_str().unwrap())
            .args([
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
