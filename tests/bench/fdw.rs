//! fdw: the same 1 000 000-row table (int PK, indexed int, decimal, varchar,
//! datetime, char(60)) in a MariaDB and in a second PostgreSQL cluster, read
//! and written through our wrappers and through their peers (mysql_fdw,
//! postgres_fdw) in the same run, beside the limits: the mariadb client
//! writing to /dev/null, psql COPY TO STDOUT, LOAD DATA LOCAL INFILE and
//! \copy. Full scans fetch every column (`count(s.*)`); each figure is the
//! best of three, with the backend's peak memory growth for that statement.

use integration_tests::{scratch_dir, MariaDb, PgCluster, MARIADB_ROOT_PASSWORD};
use std::fs;
use std::process::{Command, Stdio};
use std::time::Instant;

const ROWS: i64 = 1_000_000;
const INSERTS: i64 = 100_000;
const RUNS: usize = 3;

fn best(mut run: impl FnMut() -> f64) -> f64 {
    (0..RUNS).map(|_| run()).fold(f64::INFINITY, f64::min)
}

/// Seconds of `sql` on a fresh connection, and how much the backend's
/// peak resident memory grew (MB) while it ran.
fn statement(local: &PgCluster, sql: &str) -> (f64, f64) {
    let mut client = local.connect("bench");
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let before = peak_kb(pid);
    let started = Instant::now();
    client
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let seconds = started.elapsed().as_secs_f64();
    (seconds, (peak_kb(pid) - before) as f64 / 1024.0)
}

fn peak_kb(pid: i32) -> i64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn shell(what: &str, cmd: &mut Command) -> f64 {
    let started = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

fn line(what: &str, rows: i64, (seconds, mb): (f64, f64), limit: f64) {
    println!(
        "  {what:<44} {:>10.0} rows/s  {:>8.1} ms  {:>5.2}× the limit  peak +{mb:.0} MB",
        rows as f64 / seconds,
        seconds * 1000.0,
        seconds / limit
    );
}

fn limit_line(what: &str, rows: i64, seconds: f64) {
    println!(
        "  {what:<44} {:>10.0} rows/s  {:>8.1} ms  (the limit)",
        rows as f64 / seconds,
        seconds * 1000.0
    );
}

fn measured(local: &PgCluster, sql: &str) -> (f64, f64) {
    let mut runs: Vec<(f64, f64)> = (0..RUNS).map(|_| statement(local, sql)).collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[0]
}

/// Full scans of every column (fetch_size 1000 for ours, the peer's
/// default of 100), an index lookup, ORDER BY … LIMIT and a GROUP BY of
/// 1000 groups, ours then the peer.
fn reads(local: &PgCluster, limit: f64, ours: (&str, &str), peer: (&str, &str)) {
    for ((who, schema), fetch) in [(ours, 1000), (peer, 100)] {
        let sql = format!("SELECT count(s.*) FROM {schema}.t s");
        let what = format!("full scan: {who} (fetch_size {fetch})");
        line(&what, ROWS, measured(local, &sql), limit);
    }
    for (what, sql) in [
        (
            "WHERE k = 7 (1000 rows)",
            "SELECT count(s.*) FROM %s.t s WHERE k = 7",
        ),
        (
            "ORDER BY id DESC LIMIT 10",
            "SELECT * FROM %s.t ORDER BY id DESC LIMIT 10",
        ),
        (
            "GROUP BY k: count(*), sum(amount)",
            "SELECT k, count(*), sum(amount) FROM %s.t GROUP BY k",
        ),
    ] {
        for (who, schema) in [ours, peer] {
            let (s, _) = measured(local, &sql.replace("%s", schema));
            println!("  {:<44} {:>8.1} ms", format!("{what}: {who}"), s * 1000.0);
        }
    }
}

/// The same INSERT … SELECT of INSERTS rows through each wrapper, into an
/// emptied remote table, best of RUNS.
fn inserts(local: &PgCluster, limit: f64, through: [(&str, &str); 2], empty: impl Fn()) {
    for (who, schema) in through {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            empty();
            runs.push(statement(
                local,
                &format!("INSERT INTO {schema}.t_ins {INSERT_SELECT}"),
            ));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        line(&format!("insert: {who}"), INSERTS, runs[0], limit);
    }
}

const MARIADB_TABLES: &str = "
    CREATE DATABASE bench;
    CREATE USER 'bench'@'127.0.0.1' IDENTIFIED BY 'bench-pw';
    GRANT ALL ON bench.* TO 'bench'@'127.0.0.1';
    USE bench;
    CREATE TABLE bench.t (id INT PRIMARY KEY, k INT NOT NULL, amount DECIMAL(12,2),
        name VARCHAR(40), created DATETIME, pad CHAR(60), KEY (k));
    INSERT INTO bench.t SELECT seq, seq % 1000, seq / 100, CONCAT('name ', seq),
        '2024-01-01' + INTERVAL seq SECOND, REPEAT('x', 60) FROM seq_1_to_1000000;
    CREATE TABLE bench.t_ins LIKE bench.t;
";

const PG_TABLES: &str = "
    CREATE ROLE bench LOGIN PASSWORD 'bench-pw';
    CREATE TABLE t (id int PRIMARY KEY, k int NOT NULL, amount numeric(12,2),
        name varchar(40), created timestamp, pad char(60));
    INSERT INTO t SELECT g, g % 1000, g / 100.0, 'name ' || g,
        timestamp '2024-01-01' + g * interval '1 second', repeat('x', 60)
        FROM generate_series(1, 1000000) g;
    CREATE INDEX ON t (k);
    CREATE TABLE t_ins (LIKE t INCLUDING ALL);
    GRANT ALL ON t, t_ins TO bench;
    ANALYZE t;
";

const INSERT_SELECT: &str = "SELECT g, g % 1000, g / 100.0, 'name ' || g,
    timestamp '2024-01-01' + g * interval '1 second', repeat('x', 60)
    FROM generate_series(1, 100000) g";

pub fn fdw() {
    println!("\n## fdw: {ROWS} rows, 6 columns; inserts of {INSERTS} rows");
    let maria = MariaDb::start();
    maria.sql(MARIADB_TABLES);
    let remote = PgCluster::start();
    remote
        .connect("postgres")
        .batch_execute("CREATE DATABASE bench")
        .unwrap();
    remote.connect("bench").batch_execute(PG_TABLES).unwrap();
    let local = PgCluster::start();
    let mut db = local.create_database("bench");
    db.batch_execute(&format!(
        "CREATE EXTENSION mysql_fdw; CREATE EXTENSION postgres_fdw;
         CREATE SERVER ours_my FOREIGN DATA WRAPPER mysql_wrapper
           OPTIONS (host '127.0.0.1', port '{mp}', dbname 'bench', batch_size '1000');
         CREATE USER MAPPING FOR CURRENT_USER SERVER ours_my OPTIONS (user 'bench', password 'bench-pw');
         CREATE SCHEMA ours_my; IMPORT FOREIGN SCHEMA bench FROM SERVER ours_my INTO ours_my;
         CREATE SERVER peer_my FOREIGN DATA WRAPPER mysql_fdw OPTIONS (host '127.0.0.1', port '{mp}');
         CREATE USER MAPPING FOR CURRENT_USER SERVER peer_my OPTIONS (username 'bench', password 'bench-pw');
         CREATE SCHEMA peer_my; IMPORT FOREIGN SCHEMA bench FROM SERVER peer_my INTO peer_my;
         CREATE SERVER ours_pg FOREIGN DATA WRAPPER postgres_wrapper
           OPTIONS (host '127.0.0.1', port '{pp}', dbname 'bench', batch_size '1000');
         CREATE USER MAPPING FOR CURRENT_USER SERVER ours_pg OPTIONS (user 'bench', password 'bench-pw');
         CREATE SCHEMA ours_pg; IMPORT FOREIGN SCHEMA public FROM SERVER ours_pg INTO ours_pg;
         CREATE SERVER peer_pg FOREIGN DATA WRAPPER postgres_fdw
           OPTIONS (host '127.0.0.1', port '{pp}', dbname 'bench', batch_size '100');
         CREATE USER MAPPING FOR CURRENT_USER SERVER peer_pg OPTIONS (user 'bench', password 'bench-pw');
         CREATE SCHEMA peer_pg; IMPORT FOREIGN SCHEMA public FROM SERVER peer_pg INTO peer_pg;",
        mp = maria.port(),
        pp = remote.port()
    ))
    .expect("set up the foreign servers");

    let mariadb = |args: &[&str]| {
        let mut cmd = Command::new("mariadb");
        cmd.args(["--no-defaults", "--protocol=tcp", "-h127.0.0.1"])
            .arg(format!("-P{}", maria.port()))
            .args(["-uroot", &format!("-p{MARIADB_ROOT_PASSWORD}")])
            .args(args);
        cmd
    };
    let bindir = String::from_utf8(
        Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("pg_config")
            .stdout,
    )
    .unwrap();
    let psql = |sql: &str| {
        let mut cmd = Command::new(format!("{}/psql", bindir.trim()));
        cmd.args(["-h", "127.0.0.1", "-p", &remote.port().to_string()])
            .args(["-U", "postgres", "-d", "bench", "-q", "-c", sql]);
        cmd
    };

    println!("### MariaDB {}", maria.sql("SELECT VERSION();").trim());
    let limit = best(|| {
        shell(
            "mariadb client",
            &mut mariadb(&["--quick", "-N", "-B", "-e", "SELECT * FROM bench.t"]),
        )
    });
    limit_line("full scan: mariadb client > /dev/null", ROWS, limit);
    reads(
        &local,
        limit,
        ("mysql_wrapper", "ours_my"),
        ("mysql_fdw", "peer_my"),
    );
    let csv = scratch_dir("fdw-bench").join("rows.csv");
    let mut text = String::new();
    for g in 1..=INSERTS {
        text.push_str(&format!(
            "{g},{},{}.{:02},name {g},2024-01-02 00:00:00,{}\n",
            g % 1000,
            g / 100,
            g % 100,
            "x".repeat(60)
        ));
    }
    fs::write(&csv, text).expect("write the CSV");
    let load = format!(
        "TRUNCATE bench.t_ins; LOAD DATA LOCAL INFILE '{}' INTO TABLE bench.t_ins FIELDS TERMINATED BY ','",
        csv.display()
    );
    let limit = best(|| {
        shell(
            "LOAD DATA",
            &mut mariadb(&["--local-infile=1", "-e", &load]),
        )
    });
    limit_line("insert: LOAD DATA LOCAL INFILE", INSERTS, limit);
    inserts(
        &local,
        limit,
        [
            ("mysql_wrapper (batch_size 1000)", "ours_my"),
            ("mysql_fdw", "peer_my"),
        ],
        || {
            maria.sql("TRUNCATE bench.t_ins;");
        },
    );

    println!("### PostgreSQL 15 (remote cluster)");
    let limit = best(|| shell("COPY", &mut psql("COPY t TO STDOUT")));
    limit_line("full scan: psql COPY t TO STDOUT", ROWS, limit);
    reads(
        &local,
        limit,
        ("postgres_wrapper", "ours_pg"),
        ("postgres_fdw", "peer_pg"),
    );
    let copy_in = format!("\\copy t_ins FROM '{}' CSV", csv.display());
    let limit = best(|| {
        shell("TRUNCATE", &mut psql("TRUNCATE t_ins"));
        shell("\\copy", &mut psql(&copy_in))
    });
    limit_line("insert: psql \\copy", INSERTS, limit);
    inserts(
        &local,
        limit,
        [
            ("postgres_wrapper (batch_size 1000)", "ours_pg"),
            ("postgres_fdw (batch_size 100)", "peer_pg"),
        ],
        || {
            remote
                .connect("bench")
                .batch_execute("TRUNCATE t_ins")
                .unwrap();
        },
    );
    drop(db);
}
