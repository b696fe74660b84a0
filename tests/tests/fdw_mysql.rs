//! End-to-end: `mysql_wrapper` against a throwaway MariaDB 10.11: import
//! with exact types and real keys, pushdown shown by EXPLAIN (and text
//! conditions kept local, where MariaDB would ignore case), writes by
//! composite key on a table whose first column is not unique (mysql_fdw's
//! corruption), ROLLBACK, batch insert, reconnect after KILL, hostile
//! names (`lines` is a reserved word in MySQL), no credential in errors,
//! TLS verified against a throwaway CA, flat memory over a long scan,
//! aggregates pushed only where the result is the same.

use integration_tests::certs::ServerCertificate;
use integration_tests::sql::{
    assert_aggregates_survive_rescans_and_parameters, assert_refused, assert_same_as_copy,
    connect_recording_notices, db_message, peak_growth_mb, remote_sql, texts,
};
use integration_tests::{MariaDb, PgCluster};
use postgres::error::SqlState;
use postgres::Client;
use std::sync::{Arc, Mutex};

const PASSWORD: &str = "S3cret-pw!";

const REMOTE_SCHEMA: &str = r#"
    CREATE DATABASE shop CHARACTER SET utf8mb4;
    CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'S3cret-pw!';
    GRANT ALL ON shop.* TO 'app'@'127.0.0.1';
    USE shop;
    CREATE TABLE types (
        id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT UNSIGNED, mi MEDIUMINT,
        iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED, de DECIMAL(30,10), fl FLOAT, db DOUBLE,
        b1 BIT(1), b12 BIT(12), yr YEAR, vc VARCHAR(20), ch CHAR(5), tx TEXT, en ENUM('a','b c'),
        st SET('x','y'), js JSON, bl BLOB, vb VARBINARY(8), dt DATE, dtm DATETIME(6),
        ts TIMESTAMP(3) NULL, tm TIME(2), uu UUID
    );
    INSERT INTO types VALUES
      (1, -128, 255, 65535, -8388608, 4294967295, -9223372036854775808, 18446744073709551615,
       '12345678901234567890.0123456789', 1.5, -2.25e300, b'1', b'101010101010', 2024,
       'ünï ''q'' \\ 😀', 'ab', 'long', 'b c', 'x,y', '{"a": [1, 2.5, null]}', X'00FF27', X'0102',
       '2024-02-29', '1999-12-31 23:59:59.123456', '2024-06-01 10:00:00.5', '-838:59:59.99',
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    CREATE TABLE `lines` (order_id INT, line INT, qty INT NOT NULL, note TEXT, PRIMARY KEY (order_id, line));
    INSERT INTO `lines` VALUES (1,1,11,'x'),(1,2,12,'x'),(1,3,13,'x'),(2,1,21,'x'),(2,2,22,'x'),
                             (2,3,23,'x'),(3,1,31,'x'),(3,2,32,'x'),(3,3,33,'x');
    CREATE TABLE nokey (a INT, b TEXT);
    INSERT INTO nokey VALUES (1, 'one');
    CREATE TABLE `Tab``; DROP TABLE x --` (`col``q` INT PRIMARY KEY, `v'al` TEXT);
    CREATE TABLE big (id INT PRIMARY KEY, k INT NOT NULL, v VARCHAR(20), n INT NULL, KEY (k));
    INSERT INTO big SELECT seq, seq % 10, CONCAT('v', seq), IF(seq % 3 = 0, NULL, seq) FROM seq_1_to_1000;
"#;

struct Setup {
    remote: MariaDb,
    local: PgCluster,
    notices: Arc<Mutex<Vec<String>>>,
}

impl Setup {
    fn new(fetch_size: u32) -> Setup {
        let remote = MariaDb::start();
        remote.sql(REMOTE_SCHEMA);
        let local = PgCluster::start();
        local.create_database("app");
        let setup = Setup {
            remote,
            local,
            notices: Arc::new(Mutex::new(Vec::new())),
        };
        setup
            .client()
            .batch_execute(&format!(
                "CREATE SERVER maria FOREIGN DATA WRAPPER mysql_wrapper
                   OPTIONS (host '127.0.0.1', port '{}', dbname 'shop', fetch_size '{fetch_size}');
                 CREATE USER MAPPING FOR CURRENT_USER SERVER maria
                   OPTIONS (user 'app', password '{PASSWORD}');
                 CREATE SCHEMA imported;
                 IMPORT FOREIGN SCHEMA shop FROM SERVER maria INTO imported;",
                setup.remote.port()
            ))
            .unwrap();
        setup
    }

    fn client(&self) -> Client {
        connect_recording_notices(&self.local, "app", &self.notices)
    }
}

#[test]
fn import_creates_exact_types_and_reads_every_value_unchanged() {
    let setup = Setup::new(1);
    let mut local = setup.client();
    let types = texts(
        &mut local,
        "SELECT attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END
         FROM pg_attribute WHERE attrelid = 'imported.types'::regclass AND attnum > 0 ORDER BY attnum",
    );
    assert_eq!(
        types,
        [
            "id integer not null",
            "ti smallint",
            "tu smallint",
            "si integer",
            "mi integer",
            "iu bigint",
            "bi bigint",
            "bu numeric(20,0)",
            "de numeric(30,10)",
            "fl real",
            "db double precision",
            "b1 boolean",
            "b12 bigint",
            "yr smallint",
            "vc text",
            "ch text",
            "tx text",
            "en text",
            "st text",
            "js jsonb",
            "bl bytea",
            "vb bytea",
            "dt date",
            "dtm timestamp(6) without time zone",
            "ts timestamp(3) with time zone",
            "tm interval",
            "uu uuid",
        ]
    );
    local.batch_execute("SET timezone = 'UTC'").unwrap();
    let all = texts(
        &mut local,
        "SELECT concat_ws('|', id, ti, tu, si, mi, iu, bi, bu, de, fl, db, b1, b12, yr, vc, ch, tx, en,
                st, js, bl, vb, dt, dtm, ts, tm, uu) FROM imported.types ORDER BY id",
    );
    assert_eq!(
        all,
        [
            "1|-128|255|65535|-8388608|4294967295|-9223372036854775808|18446744073709551615|\
             12345678901234567890.0123456789|1.5|-2.25e+300|t|2730|2024|ünï 'q' \\ 😀|ab|long|b c|\
             x,y|{\"a\": [1, 2.5, null]}|\\x00ff27|\\x0102|2024-02-29|1999-12-31 23:59:59.123456|\
             2024-06-01 10:00:00.5+00|-838:59:59.99|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "2",
        ]
    );

    let options = texts(
        &mut local,
        "SELECT c.relname || ' ' || array_to_string(ftoptions, ',') FROM pg_foreign_table f
         JOIN pg_class c ON c.oid = f.ftrelid ORDER BY c.relname",
    );
    assert!(
        options
            .iter()
            .any(|o| o.starts_with("types ") && o.contains("rowid_column=id")),
        "{options:?}"
    );
    assert!(
        options.iter().any(|o| o.starts_with("lines ")
            && o.contains("rowid_column=__rowid")
            && o.contains(r#"primary_key=["order_id","line"]"#)),
        "{options:?}"
    );
    assert!(options
        .iter()
        .any(|o| o.starts_with("nokey ") && !o.contains("rowid_column")));
    let notices = setup.notices.lock().unwrap().clone();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("nokey") && n.contains("read-only")),
        "{notices:?}"
    );
    let err = local
        .execute("DELETE FROM imported.nokey", &[])
        .unwrap_err();
    assert!(db_message(&err).contains("rowid_column"), "{err:?}");

    local
        .batch_execute(
            "CREATE SCHEMA only_lines; IMPORT FOREIGN SCHEMA shop LIMIT TO (lines) FROM SERVER maria INTO only_lines;
             CREATE SCHEMA but_big; IMPORT FOREIGN SCHEMA shop EXCEPT (big, types) FROM SERVER maria INTO but_big;",
        )
        .unwrap();
    let listed = texts(
        &mut local,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('only_lines', 'but_big') ORDER BY 1",
    );
    assert_eq!(
        listed,
        [
            "but_big.Tab`; DROP TABLE x --",
            "but_big.lines",
            "but_big.nokey",
            "only_lines.lines"
        ]
    );
}

#[test]
fn pushdown_uses_the_remote_index_and_keeps_text_semantics_local() {
    let setup = Setup::new(64);
    let mut local = setup.client();

    let q =
        "SELECT id::text AS t FROM imported.big WHERE k = 3 AND id >= 100 ORDER BY id DESC LIMIT 3";
    let sql = remote_sql(&mut local, q);
    assert!(
        sql.contains("`k` = 3") && sql.contains("`id` >= 100"),
        "{sql}"
    );
    // No `id IS NULL` key in front (what mysql_fdw sends): the index serves it.
    assert!(sql.ends_with("ORDER BY `id` DESC LIMIT 3"), "{sql}");
    assert_eq!(texts(&mut local, q), ["993", "983", "973"]);

    let q = "SELECT id::text AS t FROM imported.big WHERE id IN (5, 7, 9) AND n IS NOT NULL ORDER BY id";
    let sql = remote_sql(&mut local, q);
    assert!(
        sql.contains("`id` IN (5, 7, 9)") && sql.contains("`n` IS NOT NULL"),
        "{sql}"
    );
    assert_eq!(texts(&mut local, q), ["5", "7"]);

    // MariaDB compares text ignoring case: that condition stays local.
    let q = "SELECT id::text AS t FROM imported.big WHERE v = 'V5'";
    assert!(!remote_sql(&mut local, q).contains("WHERE"));
    assert!(texts(&mut local, q).is_empty());
    assert_eq!(
        texts(
            &mut local,
            "SELECT id::text AS t FROM imported.big WHERE v = 'v5'"
        ),
        ["5"]
    );

    // A nullable column sorts NULLs differently: no ORDER BY/LIMIT remote.
    let q = "SELECT coalesce(n::text, 'NULL') AS t FROM imported.big ORDER BY n DESC LIMIT 2";
    assert!(!remote_sql(&mut local, q).contains("LIMIT"));
    assert_eq!(texts(&mut local, q), ["NULL", "NULL"]);
    let q = "SELECT n::text AS t FROM imported.big ORDER BY n ASC NULLS FIRST LIMIT 1 OFFSET 333";
    assert!(remote_sql(&mut local, q).ends_with("ORDER BY `n` ASC LIMIT 334"));
    assert_eq!(texts(&mut local, q), ["1"]);

    // Streaming in batches of 64, and a join of two tables of one server
    // (two scans open at once).
    let n: i64 = local
        .query_one("SELECT count(b.*) FROM imported.big b", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
    let n: i64 = local
        .query_one(
            "SELECT count(*) FROM imported.big a JOIN imported.big b ON b.id = a.id + 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 999);
}

#[test]
fn writes_go_by_the_composite_key_and_follow_the_local_transaction() {
    let setup = Setup::new(100);
    let mut local = setup.client();
    let lines = "SELECT CONCAT(order_id, '/', line, '=', qty) FROM shop.`lines` ORDER BY 1;";
    let before = setup.remote.sql(lines);

    // order_id is not unique: only the keyed row may change.
    assert_eq!(
        local
            .execute(
                "UPDATE imported.lines SET qty = 999 WHERE order_id = 2 AND line = 3",
                &[]
            )
            .unwrap(),
        1
    );
    assert_eq!(
        local
            .execute(
                "DELETE FROM imported.lines WHERE order_id = 3 AND line = 1",
                &[]
            )
            .unwrap(),
        1
    );
    let want = before
        .replace("2/3=23\n", "2/3=999\n")
        .replace("3/1=31\n", "");
    assert_eq!(setup.remote.sql(lines), want);
    // MySQL cannot send back the rows it wrote (MariaDB not for UPDATE):
    // RETURNING is refused, not answered with what was sent.
    let err = local
        .execute(
            "INSERT INTO imported.lines (order_id, line, qty) VALUES (8, 8, 8) RETURNING qty",
            &[],
        )
        .unwrap_err();
    assert!(
        db_message(&err).contains("RETURNING is not supported"),
        "{err:?}"
    );
    assert_eq!(setup.remote.sql(lines), want);

    let mut tx = local.transaction().unwrap();
    tx.execute("UPDATE imported.types SET vc = 'changed' WHERE id = 1", &[])
        .unwrap();
    tx.execute("DELETE FROM imported.lines WHERE order_id = 1", &[])
        .unwrap();
    tx.execute(
        "INSERT INTO imported.lines (order_id, line, qty) VALUES (9, 9, 9)",
        &[],
    )
    .unwrap();
    tx.rollback().unwrap();
    assert_eq!(setup.remote.sql(lines), want);
    assert_eq!(
        setup.remote.sql("SELECT vc FROM shop.types WHERE id = 1;"),
        "ünï 'q' \\\\ 😀\n"
    );

    local
        .batch_execute(
            "ALTER FOREIGN TABLE imported.lines OPTIONS (ADD batch_size '250');
             INSERT INTO imported.lines (order_id, line, qty, note)
             SELECT 100 + g / 10, g % 10, g, 'batch ' || g FROM generate_series(0, 999) g",
        )
        .unwrap();
    assert_eq!(
        setup
            .remote
            .sql("SELECT COUNT(*) FROM shop.`lines` WHERE order_id >= 100;"),
        "1000\n"
    );

    let err = local
        .batch_execute(
            "INSERT INTO imported.lines (order_id, line, qty) VALUES (500, 1, 1), (1, 1, 1)",
        )
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INTEGRITY_CONSTRAINT_VIOLATION),
        "{err:?}"
    );
    assert!(db_message(&err).contains("Duplicate entry"), "{err:?}");
    assert_eq!(
        setup
            .remote
            .sql("SELECT COUNT(*) FROM shop.`lines` WHERE order_id = 500;"),
        "0\n"
    );

    // Values of every type written back exactly.
    local
        .batch_execute(
            r#"SET timezone = 'Asia/Kolkata';
               INSERT INTO imported.types (id, tu, bu, de, b1, b12, vc, en, js, bl, dt, dtm, ts, tm, uu)
               VALUES (10, 200, 18446744073709551615, -0.0000000001, true, 4095, 'it''s \ x', 'a',
                       '{"x": 1}', '\x00ff', '2024-01-02', '2024-01-02 03:04:05.678901',
                       '2024-01-02 05:30:00+05:30', '-1 day 02:00:00.5', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12');
               UPDATE imported.types SET bi = -5, tx = NULL WHERE id = 10;"#,
        )
        .unwrap();
    assert_eq!(
        setup.remote.sql(
            "SELECT CONCAT_WS('|', tu, bu, de, b1 + 0, b12 + 0, vc, en, js, HEX(bl), dt, dtm, ts, tm, uu, bi,
                    IFNULL(tx, 'NULL')) FROM shop.types WHERE id = 10;"
        ),
        "200|18446744073709551615|-0.0000000001|1|4095|it's \\\\ x|a|{\"x\":1}|00FF|2024-01-02|\
         2024-01-02 03:04:05.678901|2024-01-02 00:00:00.000|-21:59:59.50|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12|-5|NULL\n"
    );
}

#[test]
fn reconnects_after_the_server_killed_the_session() {
    let setup = Setup::new(100);
    let mut local = setup.client();
    let count = "SELECT count(*)::text FROM imported.big";
    assert_eq!(texts(&mut local, count), ["1000"]);
    let ids = setup
        .remote
        .sql("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app';");
    assert_eq!(ids.lines().count(), 1, "{ids}");
    setup.remote.sql(&format!("KILL {};", ids.trim()));
    assert_eq!(texts(&mut local, count), ["1000"]);
    assert_eq!(texts(&mut local, count), ["1000"]);
    let sessions = setup
        .remote
        .sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app';");
    assert_eq!(sessions, "1\n");
}

#[test]
fn hostile_names_are_quoted_and_credentials_never_show() {
    let setup = Setup::new(100);
    let mut local = setup.client();
    local
        .batch_execute(
            r#"INSERT INTO imported."Tab`; DROP TABLE x --" ("col`q", "v'al") VALUES (1, 'a''); DROP TABLE y; -- \');
               UPDATE imported."Tab`; DROP TABLE x --" SET "v'al" = "v'al" || '`' WHERE "col`q" = 1;"#,
        )
        .unwrap();
    assert_eq!(
        setup
            .remote
            .sql("SELECT `v'al` FROM shop.`Tab``; DROP TABLE x --`;"),
        "a'); DROP TABLE y; -- \\\\`\n"
    );
    let explain = texts(
        &mut local,
        "EXPLAIN (VERBOSE) SELECT * FROM imported.big WHERE id = 1",
    )
    .join("\n");
    assert!(!explain.contains(PASSWORD), "{explain}");

    local
        .batch_execute(&format!(
            "CREATE SERVER wrongpw FOREIGN DATA WRAPPER mysql_wrapper OPTIONS (host '127.0.0.1', port '{}', dbname 'shop');
             CREATE USER MAPPING FOR CURRENT_USER SERVER wrongpw OPTIONS (user 'app', password 'not-{PASSWORD}');
             CREATE FOREIGN TABLE imported.denied (id int) SERVER wrongpw OPTIONS (table_name 'big');",
            setup.remote.port()
        ))
        .unwrap();
    let err = local
        .query("SELECT * FROM imported.denied", &[])
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err:?}"
    );
    assert!(db_message(&err).contains("Access denied"), "{err:?}");
    assert!(!db_message(&err).contains(PASSWORD), "{err:?}");

    let closed = integration_tests::free_port();
    local
        .batch_execute(&format!(
            "CREATE SERVER closed FOREIGN DATA WRAPPER mysql_wrapper OPTIONS (host '127.0.0.1', port '{closed}');
             CREATE USER MAPPING FOR CURRENT_USER SERVER closed OPTIONS (user 'app', password '{PASSWORD}');
             CREATE FOREIGN TABLE imported.gone (id int) SERVER closed OPTIONS (table_name 'big');"
        ))
        .unwrap();
    let err = local.query("SELECT * FROM imported.gone", &[]).unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::FDW_UNABLE_TO_ESTABLISH_CONNECTION),
        "{err:?}"
    );
    assert!(!db_message(&err).contains(PASSWORD), "{err:?}");
}

#[test]
fn tls_verifies_the_certificate_and_the_host_name() {
    let dir = std::env::temp_dir()
        .join("pg_integration-e2e")
        .join(format!("mariadb-tls-{}", std::process::id()));
    let certs = ServerCertificate::new(&dir.join("remote"), "DNS:localhost");
    let stranger = ServerCertificate::new(&dir.join("stranger"), "DNS:localhost");
    let remote = MariaDb::start_with_tls(&certs.ca, &certs.cert, &certs.key);
    remote.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v TEXT);
         INSERT INTO shop.t VALUES (1, 'sealed');
         CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'S3cret-pw!';
         GRANT ALL ON shop.* TO 'app'@'127.0.0.1';",
    );
    let plain = MariaDb::start();
    let local = PgCluster::start();
    let mut client = local.create_database("app");
    let ca = certs.ca.display();
    let server = |client: &mut Client, name: &str, host: &str, port: u16, tls: &str| {
        client
            .batch_execute(&format!(
                "CREATE SERVER {name} FOREIGN DATA WRAPPER mysql_wrapper
                   OPTIONS (host '{host}', port '{port}', dbname 'shop'{tls});
                 CREATE USER MAPPING FOR CURRENT_USER SERVER {name}
                   OPTIONS (user 'app', password '{PASSWORD}');
                 CREATE FOREIGN TABLE {name} (id int, v text) SERVER {name} OPTIONS (table_name 't')"
            ))
            .unwrap();
    };
    let port = remote.port();

    // Verified: the certificate names localhost and chains to our CA; the
    // remote says the session has a cipher.
    let full = format!(", ssl_mode 'verify_identity', ssl_ca '{ca}'");
    server(&mut client, "verified", "localhost", port, &full);
    assert_eq!(texts(&mut client, "SELECT v FROM verified"), ["sealed"]);
    let cipher = texts(
        &mut client,
        "SELECT q->>'VARIABLE_VALUE' FROM integration.query('verified',
           'SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS
            WHERE VARIABLE_NAME = ''SSL_CIPHER''') q",
    );
    assert_eq!(cipher.len(), 1);
    assert!(!cipher[0].is_empty() && cipher[0] != "NULL", "{cipher:?}");
    // add_data_source takes the TLS settings as URL parameters.
    client
        .batch_execute(&format!(
            "SELECT integration.add_data_source('by_url',
               'mariadb://app:{PASSWORD}@localhost:{port}/shop?ssl-mode=required&ssl-ca={ca}')"
        ))
        .unwrap();
    assert_eq!(texts(&mut client, "SELECT v FROM by_url.t"), ["sealed"]);

    // Refused, each with the host and the cause, never the password.
    let refused = |client: &mut Client, table: &str, host: &str, cause: &str| {
        assert_refused(
            client,
            &format!("SELECT v FROM {table}"),
            host,
            cause,
            PASSWORD,
        )
    };
    // The name must match, also for `required`.
    server(&mut client, "wrong_name", "127.0.0.1", port, &full);
    refused(&mut client, "wrong_name", "127.0.0.1", "not valid for name");
    let required = format!(", ssl_mode 'REQUIRED', ssl_ca '{ca}'");
    server(&mut client, "required_name", "127.0.0.1", port, &required);
    refused(
        &mut client,
        "required_name",
        "127.0.0.1",
        "not valid for name",
    );
    // A certificate from another CA (of the same name: rustls reports a
    // bad signature rather than an unknown issuer).
    let stranger_ca = format!(
        ", ssl_mode 'verify_identity', ssl_ca '{}'",
        stranger.ca.display()
    );
    server(&mut client, "wrong_ca", "localhost", port, &stranger_ca);
    refused(
        &mut client,
        "wrong_ca",
        "localhost",
        "invalid peer certificate: BadSignature",
    );
    // A server without TLS is not used in plain text.
    server(&mut client, "plain", "localhost", plain.port(), &full);
    refused(
        &mut client,
        "plain",
        "localhost",
        "server does not have this capability",
    );

    // Modes that may fall back to plain text are not offered.
    let err = client
        .batch_execute(
            "CREATE SERVER preferred FOREIGN DATA WRAPPER mysql_wrapper OPTIONS (ssl_mode 'preferred')",
        )
        .unwrap_err();
    assert!(db_message(&err).contains("ssl_mode"), "{err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Aggregates MariaDB computes as PostgreSQL does go remote with their
/// GROUP BY (an average as SUM and COUNT, divided locally: MariaDB's AVG
/// keeps 4 decimals); every query gives what it gives over a local copy,
/// with the same types.
#[test]
fn aggregates_are_pushed_where_the_remote_computes_the_same_result() {
    let setup = Setup::new(100);
    setup.remote.sql(
        "USE shop;
         CREATE TABLE sales (id INT PRIMARY KEY, k INT, day DATE, x INT NULL, big BIGINT NULL,
                             n DECIMAL(12,3) NULL, t VARCHAR(20));
         INSERT INTO sales SELECT seq, seq % 4, DATE '2024-01-01' + INTERVAL (seq % 3) DAY,
                IF(seq % 5 = 0, NULL, seq * 7 % 11),
                IF(seq % 4 = 1, NULL, 9000000000000000000 - seq),
                IF(seq % 6 = 0, NULL, seq * 1.125 - 20),
                IF(seq % 2 = 0, CONCAT('a', seq), CONCAT('B', seq))
           FROM seq_1_to_200;
         INSERT INTO sales VALUES (1000, NULL, NULL, 1, NULL, 0.001, NULL);",
    );
    let mut local = setup.client();
    local
        .batch_execute(
            "CREATE SCHEMA agg;
             IMPORT FOREIGN SCHEMA shop LIMIT TO (sales) FROM SERVER maria INTO agg;
             CREATE TABLE copy AS SELECT * FROM agg.sales",
        )
        .unwrap();
    let same = |local: &mut Client, q: &str| assert_same_as_copy(local, "agg.sales", q);

    let pushed = [
        ("SELECT count(*) FROM agg.sales", "SELECT COUNT(*) FROM "),
        (
            "SELECT k, count(*), count(x), sum(x), avg(x), min(x), max(x),
                    sum(n), avg(n), min(n), max(n), sum(big), avg(big), min(day), max(day)
             FROM agg.sales GROUP BY k",
            "SELECT `k`, COUNT(*), COUNT(`x`), SUM(`x`), SUM(`x`), COUNT(`x`), MIN(`x`), MAX(`x`), \
             SUM(`n`), SUM(`n`), COUNT(`n`), MIN(`n`), MAX(`n`), SUM((`big` + 0)), SUM((`big` + 0)), \
             COUNT((`big` + 0)), MIN(`day`), MAX(`day`) FROM `shop`.`sales` GROUP BY `k`",
        ),
        (
            "SELECT sum(n), day, count(t), k FROM agg.sales GROUP BY k, day",
            " GROUP BY `k`, `day`",
        ),
        (
            "SELECT count(*), avg(n) FROM agg.sales WHERE x >= 3 AND day IS NOT NULL GROUP BY k",
            "WHERE `x` >= 3 AND `day` IS NOT NULL GROUP BY `k`",
        ),
        (
            "SELECT count(*), sum(x) FROM agg.sales WHERE x > 1000",
            "SUM(`x`)",
        ),
    ];
    for (q, remote) in pushed {
        let sql = remote_sql(&mut local, q);
        assert!(sql.contains(remote), "{remote} not in {sql}");
        same(&mut local, q);
    }
    // PostgreSQL's digits, not MariaDB's four.
    assert_eq!(
        texts(&mut local, "SELECT avg(x)::text FROM agg.sales WHERE k = 1"),
        texts(&mut local, "SELECT avg(x)::text FROM copy WHERE k = 1")
    );

    // Computed locally, from the rows the scan reads: MariaDB compares and
    // orders text ignoring case.
    let local_only = [
        "SELECT k, count(*) FROM agg.sales WHERE md5(t) <> md5('a2') GROUP BY k",
        "SELECT k, count(*) FROM agg.sales WHERE t = 'b3' GROUP BY k",
        "SELECT k, count(*) FROM agg.sales WHERE 100 < id GROUP BY k",
        "SELECT k, count(DISTINCT x) FROM agg.sales GROUP BY k",
        "SELECT k, sum(x) FROM agg.sales GROUP BY k HAVING sum(x) > 100",
        "SELECT k, min(t), max(t) FROM agg.sales GROUP BY k",
        "SELECT t, count(*) FROM agg.sales GROUP BY t",
        "SELECT k, sum(x) + 1 FROM agg.sales GROUP BY k",
    ];
    assert_aggregates_survive_rescans_and_parameters(&mut local, "agg.sales");

    for q in local_only {
        let sql = remote_sql(&mut local, q);
        assert!(
            !sql.contains("GROUP BY") && !sql.contains("COUNT(") && !sql.contains("SUM("),
            "{q}: {sql}"
        );
        if q.contains("'b3'") {
            assert!(texts(&mut local, q).is_empty());
        } else {
            same(&mut local, q);
        }
    }
}

#[test]
fn a_two_million_row_scan_keeps_the_backend_memory_flat() {
    let remote = MariaDb::start();
    remote.sql(
        "CREATE DATABASE gen; USE gen; CREATE VIEW gen AS SELECT seq AS id,
           CONCAT('row number ', seq) AS v, seq * 1.5 AS n,
           NOW() - INTERVAL seq SECOND AS at FROM seq_1_to_2000000;",
    );
    let local = PgCluster::start();
    let mut client = local.create_database("app");
    client
        .batch_execute(&format!(
            "CREATE SERVER remote FOREIGN DATA WRAPPER mysql_wrapper
               OPTIONS (host '127.0.0.1', port '{}', dbname 'gen', fetch_size '2000');
             CREATE USER MAPPING FOR CURRENT_USER SERVER remote
               OPTIONS (user 'root', password '{}');
             CREATE FOREIGN TABLE gen (id int, v text, n numeric, at timestamptz)
               SERVER remote OPTIONS (table_name 'gen')",
            remote.port(),
            integration_tests::MARIADB_ROOT_PASSWORD
        ))
        .unwrap();
    let scan = "SELECT count(v)::text || ' ' || sum(n)::text || ' ' || count(at)::text FROM gen";
    let warm_up = scan.replace("FROM gen", "FROM (SELECT * FROM gen LIMIT 5000) s");
    let (rows, grown_mb) = peak_growth_mb(&mut client, &warm_up, scan);
    assert_eq!(rows, ["2000000 3000001500000.0 2000000"]);
    eprintln!("mysql_wrapper: a 2 M row scan grew the backend's peak RSS by {grown_mb} MB");
    // Values kept for the whole scan cost ~75 MB per million rows here.
    assert!(grown_mb < 20, "the backend grew by {grown_mb} MB");
}
