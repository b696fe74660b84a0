//! End-to-end: `postgres_wrapper` against a second, throwaway PostgreSQL 15
//! cluster: import with exact types and real keys, pushdown shown by
//! EXPLAIN, writes by composite key, ROLLBACK, batch insert, reconnect after
//! the remote killed the session, hostile names, no credential in errors,
//! TLS verified against a throwaway CA, flat memory over a long scan,
//! RETURNING of what the remote stored, aggregates pushed only where the
//! result is the same.

use integration_tests::certs::ServerCertificate;
use integration_tests::sql::{
    assert_aggregates_survive_rescans_and_parameters, assert_refused, assert_same_as_copy,
    connect_recording_notices, db_message, peak_growth_mb, remote_sql, texts,
};
use integration_tests::PgCluster;
use postgres::error::SqlState;
use postgres::Client;
use std::sync::{Arc, Mutex};

const PASSWORD: &str = "S3cret-pw!";

const REMOTE_SCHEMA: &str = r#"
    CREATE ROLE remote_user LOGIN PASSWORD 'S3cret-pw!';
    CREATE SCHEMA "we""ird" AUTHORIZATION remote_user;
    SET ROLE remote_user;
    CREATE TYPE "we""ird".mood AS ENUM ('sad', 'happy');
    CREATE TABLE "we""ird".types (
        id int PRIMARY KEY,
        b boolean, i2 smallint, i8 bigint, r real, d double precision,
        n numeric(38,12), t text, vc varchar(20), ch char(3),
        dt date, tm time(3), ts timestamp(6), tz timestamptz, iv interval,
        js json, jb jsonb, by bytea, u uuid, ip inet, arr int[], m "we""ird".mood
    );
    INSERT INTO "we""ird".types VALUES
      (1, true, -32768, 9223372036854775807, 1.5, -2.25e300,
       '12345678901234567890123456.123456789012', 'ünï ''quoted'' \ 😀', 'varchar', 'ab',
       '2024-02-29', '23:59:59.999', '1999-12-31 23:59:59.123456', '2024-06-01 12:00:00+02',
       '1 year 2 mons 3 days 04:05:06.789', '{"a": [1, 2.5, null]}', '{"k": "v"}', '\x00ff27',
       'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.1.2.3/32', '{1,NULL,3}', 'happy'),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      (3, false, 0, -1, 'NaN', '-Infinity', '-0.000000000001', '', '', '', '0001-01-01',
       '00:00', '2000-01-01', '1970-01-01 00:00:00+00', '-1 days', '[]', '{}', '', NULL, NULL,
       '{}', 'sad');
    CREATE TABLE "we""ird".lines (
        order_id int, line int, qty int NOT NULL, note text,
        PRIMARY KEY (order_id, line)
    );
    INSERT INTO "we""ird".lines SELECT o, l, o * 10 + l, 'x' FROM generate_series(1, 3) o, generate_series(1, 3) l;
    CREATE TABLE "we""ird".nokey (a int, b text);
    INSERT INTO "we""ird".nokey VALUES (1, 'one');
    CREATE TABLE "we""ird"."Tab; DROP TABLE x --" ("col""q" int PRIMARY KEY, "v'al" text);
    CREATE TABLE "we""ird".big (id int PRIMARY KEY, k int, v text);
    INSERT INTO "we""ird".big SELECT g, g % 10, 'v' || g FROM generate_series(1, 1000) g;
    CREATE INDEX ON "we""ird".big (k);
    RESET ROLE;
"#;

struct Setup {
    remote: PgCluster,
    local: PgCluster,
    notices: Arc<Mutex<Vec<String>>>,
}

impl Setup {
    fn new(fetch_size: u32) -> Setup {
        let remote = PgCluster::start();
        remote
            .connect("postgres")
            .batch_execute("CREATE DATABASE remote")
            .unwrap();
        remote
            .connect("remote")
            .batch_execute(REMOTE_SCHEMA)
            .unwrap();
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
                "CREATE SERVER remote FOREIGN DATA WRAPPER postgres_wrapper
                   OPTIONS (host '127.0.0.1', port '{}', dbname 'remote', fetch_size '{fetch_size}');
                 CREATE USER MAPPING FOR CURRENT_USER SERVER remote
                   OPTIONS (user 'remote_user', password '{PASSWORD}');
                 CREATE SCHEMA imported;",
                setup.remote.port()
            ))
            .unwrap();
        setup
    }

    fn client(&self) -> Client {
        connect_recording_notices(&self.local, "app", &self.notices)
    }

    fn remote(&self) -> Client {
        self.remote.connect("remote")
    }

    fn import(&self, client: &mut Client) {
        client
            .batch_execute(r#"IMPORT FOREIGN SCHEMA "we""ird" FROM SERVER remote INTO imported"#)
            .unwrap();
    }
}

#[test]
fn import_creates_exact_types_and_reads_every_value_unchanged() {
    let setup = Setup::new(2);
    let mut local = setup.client();
    setup.import(&mut local);

    let types = texts(
        &mut local,
        "SELECT attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END
         FROM pg_attribute WHERE attrelid = 'imported.types'::regclass AND attnum > 0 ORDER BY attnum",
    );
    assert_eq!(
        types,
        [
            "id integer not null",
            "b boolean",
            "i2 smallint",
            "i8 bigint",
            "r real",
            "d double precision",
            "n numeric(38,12)",
            "t text",
            "vc text",
            "ch text",
            "dt date",
            "tm time(3) without time zone",
            "ts timestamp(6) without time zone",
            "tz timestamp with time zone",
            "iv interval",
            "js jsonb",
            "jb jsonb",
            "by bytea",
            "u uuid",
            "ip text",
            "arr text",
            "m text",
        ]
    );
    // Every value, compared in its text form on both sides (the same
    // settings: UTC, ISO dates), NULLs and extremes included.
    let columns =
        "id, b, i2, i8, r, d, n, t, vc, ch, dt, tm, ts, tz, iv, js::jsonb, jb, by, u, ip, arr, m";
    let row_text = format!(
        "SELECT concat_ws('|', {}) FROM %s ORDER BY id",
        columns
            .split(", ")
            .map(|c| format!("coalesce(({c})::text, 'NULL')"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    local.batch_execute("SET timezone = 'UTC'").unwrap();
    let mut remote = setup.remote();
    remote.batch_execute("SET timezone = 'UTC'").unwrap();
    let want = texts(&mut remote, &row_text.replace("%s", r#""we""ird".types"#));
    let got = texts(&mut local, &row_text.replace("%s", "imported.types"));
    assert_eq!(got, want);
    assert!(
        want[0].contains("12345678901234567890123456.123456789012"),
        "{}",
        want[0]
    );

    // The real key is recorded: single, composite, none (read-only).
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
    assert!(
        options
            .iter()
            .any(|o| o.starts_with("nokey ") && !o.contains("rowid_column")),
        "{options:?}"
    );
    assert!(
        setup
            .notices
            .lock()
            .unwrap()
            .iter()
            .any(|n| n.contains("nokey") && n.contains("read-only")),
        "{:?}",
        setup.notices.lock().unwrap()
    );
    let err = local
        .execute("UPDATE imported.nokey SET b = 'x'", &[])
        .unwrap_err();
    assert!(db_message(&err).contains("rowid_column"), "{err:?}");

    // LIMIT TO and EXCEPT.
    local
        .batch_execute(
            r#"CREATE SCHEMA only_lines; CREATE SCHEMA but_lines;
               IMPORT FOREIGN SCHEMA "we""ird" LIMIT TO (lines) FROM SERVER remote INTO only_lines;
               IMPORT FOREIGN SCHEMA "we""ird" EXCEPT (lines, big) FROM SERVER remote INTO but_lines;"#,
        )
        .unwrap();
    let listed = texts(
        &mut local,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('only_lines', 'but_lines') ORDER BY 1",
    );
    assert_eq!(
        listed,
        [
            "but_lines.Tab; DROP TABLE x --",
            "but_lines.nokey",
            "but_lines.types",
            "only_lines.lines"
        ]
    );
}

#[test]
fn conditions_order_and_limit_are_pushed_and_results_stay_right() {
    let setup = Setup::new(100);
    let mut local = setup.client();
    setup.import(&mut local);

    let q = "SELECT id FROM imported.big WHERE k = 3 AND id >= 100 AND v LIKE 'v1%' ORDER BY id DESC LIMIT 3";
    let sql = remote_sql(&mut local, q);
    for cond in [r#""k" = 3"#, r#""id" >= 100"#, r#""v"::text LIKE 'v1%'"#] {
        assert!(sql.contains(cond), "{cond} not in {sql}");
    }
    assert!(
        sql.ends_with(r#"ORDER BY "id" DESC NULLS FIRST LIMIT 3"#),
        "{sql}"
    );
    assert_eq!(
        texts(&mut local, &q.replace("SELECT id", "SELECT id::text AS t")),
        ["193", "183", "173"]
    );

    let q = "SELECT id::text AS t FROM imported.big WHERE id IN (5, 7, 9) AND v IS NOT NULL ORDER BY id";
    let sql = remote_sql(&mut local, q);
    assert!(sql.contains(r#""id" IN (5, 7, 9)"#), "{sql}");
    assert!(sql.contains(r#""v"::text IS NOT NULL"#), "{sql}");
    assert_eq!(texts(&mut local, q), ["5", "7", "9"]);

    // A condition that stays local: the LIMIT must stay local too.
    let q = "SELECT id::text AS t FROM imported.big WHERE id % 7 = 0 ORDER BY id LIMIT 2 OFFSET 1";
    let sql = remote_sql(&mut local, q);
    assert!(!sql.contains("LIMIT"), "{sql}");
    assert_eq!(texts(&mut local, q), ["14", "21"]);
    // All pushed: LIMIT covers the OFFSET the local Limit node applies.
    let q = "SELECT id::text AS t FROM imported.big ORDER BY id LIMIT 2 OFFSET 5";
    assert!(remote_sql(&mut local, q).ends_with("LIMIT 7"));
    assert_eq!(texts(&mut local, q), ["6", "7"]);

    // A join: the LIMIT belongs to the join, not to the scan.
    local
        .batch_execute("CREATE TABLE picks (id int); INSERT INTO picks VALUES (500), (600)")
        .unwrap();
    let q =
        "SELECT b.id::text AS t FROM imported.big b JOIN picks p USING (id) ORDER BY b.id LIMIT 2";
    assert!(!remote_sql(&mut local, q).contains("LIMIT"));
    assert_eq!(texts(&mut local, q), ["500", "600"]);

    // Text order depends on the collation: not pushed with a LIMIT.
    let q = "SELECT v FROM imported.big ORDER BY v LIMIT 1";
    assert!(!remote_sql(&mut local, q).contains("LIMIT"));
    // Streaming in batches of 100 returns every row once.
    let n: i64 = local
        .query_one("SELECT count(b.*) FROM imported.big b", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
}

#[test]
fn writes_go_by_the_real_key_and_follow_the_local_transaction() {
    let setup = Setup::new(50);
    let mut local = setup.client();
    setup.import(&mut local);
    let mut remote = setup.remote();
    let lines = r#"SELECT order_id || '/' || line || '=' || qty FROM "we""ird".lines ORDER BY 1"#;
    let before = texts(&mut remote, lines);

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
    let after = texts(&mut remote, lines);
    let mut want: Vec<String> = before
        .iter()
        .filter(|l| !l.starts_with("3/1="))
        .map(|l| {
            if l.starts_with("2/3=") {
                "2/3=999".to_string()
            } else {
                l.clone()
            }
        })
        .collect();
    want.sort();
    assert_eq!(after, want);

    // ROLLBACK leaves the remote untouched.
    let mut tx = local.transaction().unwrap();
    tx.execute("UPDATE imported.types SET t = 'changed' WHERE id = 1", &[])
        .unwrap();
    tx.execute("DELETE FROM imported.lines WHERE order_id = 1", &[])
        .unwrap();
    tx.execute(
        "INSERT INTO imported.lines (order_id, line, qty) VALUES (9, 9, 9)",
        &[],
    )
    .unwrap();
    tx.rollback().unwrap();
    assert_eq!(texts(&mut remote, lines), want);
    let t: String = remote
        .query_one(r#"SELECT t FROM "we""ird".types WHERE id = 1"#, &[])
        .unwrap()
        .get(0);
    assert!(t.starts_with("ünï"), "{t}");

    // Batched insert of 1000 rows in one statement, committed with it.
    local
        .batch_execute(
            "ALTER FOREIGN TABLE imported.lines OPTIONS (ADD batch_size '100');
             INSERT INTO imported.lines (order_id, line, qty, note)
             SELECT 100 + g / 10, g % 10, g, 'batch ' || g FROM generate_series(0, 999) g",
        )
        .unwrap();
    let n: i64 = remote
        .query_one(
            r#"SELECT count(*) FROM "we""ird".lines WHERE order_id >= 100"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
    // A remote constraint error comes back with its SQLSTATE, and the
    // statement's earlier rows are rolled back with it.
    let err = local
        .batch_execute(
            "INSERT INTO imported.lines (order_id, line, qty) VALUES (500, 1, 1), (1, 1, 1)",
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{err}");
    assert!(!db_message(&err).contains(PASSWORD));
    let n: i64 = remote
        .query_one(
            r#"SELECT count(*) FROM "we""ird".lines WHERE order_id = 500"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // Single-column key with every type written back.
    local
        .batch_execute(
            "INSERT INTO imported.types (id, b, n, t, dt, ts, tz, iv, jb, by, u, ip, arr, m)
             VALUES (10, true, 0.000000000001, 'it''s \\ x', '2024-01-02', '2024-01-02 03:04:05.678901',
                     '2024-01-02 03:04:05+05', '2 hours', '{\"x\": 1}', '\\x0001', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12',
                     '192.168.0.1', '{4,5}', 'sad');
             UPDATE imported.types SET i8 = -5, t = NULL WHERE id = 10;",
        )
        .unwrap();
    let row: String = remote
        .query_one(
            r#"SELECT concat_ws('|', b, n, coalesce(t, 'NULL'), i8, dt, ts, tz AT TIME ZONE 'UTC', iv, jb, by, u, ip, arr, m)
               FROM "we""ird".types WHERE id = 10"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        row,
        r#"t|0.000000000001|NULL|-5|2024-01-02|2024-01-02 03:04:05.678901|2024-01-01 22:04:05|02:00:00|{"x": 1}|\x0001|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12|192.168.0.1|{4,5}|sad"#
    );

    // Every row read is written back the same, in one batch: extremes,
    // NaN and infinities, unicode, empty values, NULLs, enum and array.
    let columns = "b, i2, i8, r, d, n, t, vc, ch, dt, tm, ts, tz, iv, js, jb, by, u, ip, arr, m";
    local
        .batch_execute(&format!(
            "INSERT INTO imported.types (id, {columns})
             SELECT id + 100, {columns} FROM imported.types WHERE id <= 3"
        ))
        .unwrap();
    // (json keeps its text: compare it as jsonb, the whitespace being lost
    // in reading it as a JSON value.)
    let compared = columns.replace("js,", "js::jsonb,");
    let mut rows = |range: &str, offset: i32| -> String {
        remote
            .query_one(
                &format!(
                    r#"SELECT string_agg(ROW(id - {offset}, {compared})::text, ';' ORDER BY id)
                       FROM "we""ird".types WHERE {range}"#
                ),
                &[],
            )
            .unwrap()
            .get(0)
    };
    let (copied, original) = (rows("id > 100", 100), rows("id <= 3", 0));
    assert_eq!(copied, original);
}

#[test]
fn returning_shows_the_rows_the_remote_stored() {
    let setup = Setup::new(100);
    // A remote trigger changes what is stored: RETURNING must show that,
    // not what was sent.
    setup
        .remote()
        .batch_execute(
            r#"SET ROLE remote_user;
               CREATE TABLE "we""ird".ret (id int PRIMARY KEY, v text, stamp text);
               CREATE FUNCTION "we""ird".stamp() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN NEW.v := upper(NEW.v); NEW.stamp := TG_OP; RETURN NEW; END $$;
               CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON "we""ird".ret
                 FOR EACH ROW EXECUTE FUNCTION "we""ird".stamp();
               RESET ROLE;"#,
        )
        .unwrap();
    let mut local = setup.client();
    setup.import(&mut local);
    let shown = "RETURNING id || ' ' || v || ' ' || stamp";
    assert_eq!(
        texts(
            &mut local,
            &format!("INSERT INTO imported.ret VALUES (1, 'a', 'sent'), (2, 'b', 'sent') {shown}")
        ),
        ["1 A INSERT", "2 B INSERT"]
    );
    assert_eq!(
        texts(
            &mut local,
            &format!("UPDATE imported.ret SET v = 'c' WHERE id = 2 {shown}")
        ),
        ["2 C UPDATE"]
    );
    assert_eq!(
        texts(
            &mut local,
            &format!("DELETE FROM imported.ret WHERE id = 1 {shown}")
        ),
        ["1 A INSERT"]
    );
    assert_eq!(
        texts(
            &mut setup.remote(),
            r#"SELECT id || ' ' || v || ' ' || stamp FROM "we""ird".ret"#
        ),
        ["2 C UPDATE"]
    );
    // A composite key (read through __rowid) and a count that matches.
    assert_eq!(
        texts(
            &mut local,
            "UPDATE imported.lines SET qty = qty + 100 WHERE order_id = 1 RETURNING line || ':' || qty"
        ),
        ["1:111", "2:112", "3:113"]
    );
    let deleted = local
        .execute(
            "DELETE FROM imported.lines WHERE order_id = 3 RETURNING line",
            &[],
        )
        .unwrap();
    assert_eq!(deleted, 3);
}

#[test]
fn reconnects_after_the_remote_killed_the_session() {
    let setup = Setup::new(100);
    let mut local = setup.client();
    setup.import(&mut local);
    let count = "SELECT count(*)::text FROM imported.big";
    assert_eq!(texts(&mut local, count), ["1000"]);
    let killed: i64 = setup
        .remote()
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'pg_integration postgres_wrapper'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(texts(&mut local, count), ["1000"]);
    // And the connection is reused, not opened per statement.
    assert_eq!(texts(&mut local, count), ["1000"]);
    let sessions: i64 = setup
        .remote()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_integration postgres_wrapper'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(sessions, 1);
}

#[test]
fn hostile_names_are_quoted_and_credentials_never_show() {
    let setup = Setup::new(100);
    let mut local = setup.client();
    setup.import(&mut local);
    local
        .batch_execute(
            r#"INSERT INTO imported."Tab; DROP TABLE x --" ("col""q", "v'al") VALUES (1, 'a''); DROP TABLE y; --');
               UPDATE imported."Tab; DROP TABLE x --" SET "v'al" = "v'al" || '\' WHERE "col""q" = 1;"#,
        )
        .unwrap();
    let v: String = setup
        .remote()
        .query_one(
            r#"SELECT "v'al" FROM "we""ird"."Tab; DROP TABLE x --""#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(v, "a'); DROP TABLE y; --\\");
    assert_eq!(
        texts(
            &mut local,
            r#"SELECT "v'al" FROM imported."Tab; DROP TABLE x --" WHERE "v'al" = 'a''); DROP TABLE y; --\'"#
        ),
        [v]
    );

    // An unreachable server and a missing remote table: errors with an
    // SQLSTATE, and never the password, also not in EXPLAIN.
    let explain = texts(
        &mut local,
        "EXPLAIN (VERBOSE) SELECT * FROM imported.big WHERE id = 1",
    )
    .join("\n");
    assert!(!explain.contains(PASSWORD), "{explain}");
    local
        .batch_execute(
            "CREATE FOREIGN TABLE imported.missing (id int) SERVER remote OPTIONS (schema_name 'nope', table_name 'nope')",
        )
        .unwrap();
    let err = local
        .query("SELECT * FROM imported.missing", &[])
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_TABLE), "{err}");
    assert!(!db_message(&err).contains(PASSWORD));
    let closed = integration_tests::free_port();
    local
        .batch_execute(&format!(
            "CREATE SERVER closed FOREIGN DATA WRAPPER postgres_wrapper OPTIONS (host '127.0.0.1', port '{closed}', dbname 'remote');
             CREATE USER MAPPING FOR CURRENT_USER SERVER closed OPTIONS (user 'remote_user', password '{PASSWORD}');
             CREATE FOREIGN TABLE imported.gone (id int) SERVER closed OPTIONS (table_name 'big')"
        ))
        .unwrap();
    let err = local.query("SELECT * FROM imported.gone", &[]).unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(
        db.code(),
        &SqlState::FDW_UNABLE_TO_ESTABLISH_CONNECTION,
        "{db}"
    );
    assert!(!db.message().contains(PASSWORD), "{db}");
    // Credentials belong in user mappings only.
    let err = local
        .batch_execute(
            "CREATE SERVER bad FOREIGN DATA WRAPPER postgres_wrapper OPTIONS (password 'x')",
        )
        .unwrap_err();
    assert!(db_message(&err).contains("password"), "{err:?}");
}

#[test]
fn tls_verifies_the_certificate_and_the_host_name() {
    let dir = std::env::temp_dir()
        .join("pg_integration-e2e")
        .join(format!("pg-tls-{}", std::process::id()));
    let certs = ServerCertificate::new(&dir.join("remote"), "DNS:localhost");
    let stranger = ServerCertificate::new(&dir.join("stranger"), "DNS:localhost");
    let remote = PgCluster::start_with_tls(&certs.cert, &certs.key);
    remote
        .connect("postgres")
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'sealed')",
        )
        .unwrap();
    let local = PgCluster::start();
    let mut client = local.create_database("app");
    let ca = certs.ca.display();
    let server = |client: &mut Client, name: &str, host: &str, port: u16, tls: &str| {
        client
            .batch_execute(&format!(
                "CREATE SERVER {name} FOREIGN DATA WRAPPER postgres_wrapper
                   OPTIONS (host '{host}', port '{port}', dbname 'postgres'{tls});
                 CREATE USER MAPPING FOR CURRENT_USER SERVER {name}
                   OPTIONS (user 'postgres', password '{PASSWORD}');
                 CREATE FOREIGN TABLE {name} (id int, v text) SERVER {name} OPTIONS (table_name 't')"
            ))
            .unwrap();
    };
    let port = remote.port();

    // Verified: the certificate names localhost and chains to our CA; the
    // remote's own statistics say the session is encrypted.
    let full = format!(", sslmode 'verify-full', sslrootcert '{ca}'");
    server(&mut client, "verified", "localhost", port, &full);
    assert_eq!(texts(&mut client, "SELECT v FROM verified"), ["sealed"]);
    let ssl = texts(
        &mut client,
        "SELECT q::text FROM integration.query('verified',
           'SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()') q",
    );
    assert_eq!(ssl.len(), 1);
    assert!(ssl[0].contains(r#""ssl": true"#), "{ssl:?}");
    assert!(ssl[0].contains("TLSv1."), "{ssl:?}");
    // verify-ca forgives only the name: 127.0.0.1 is not in the certificate.
    let ca_only = format!(", sslmode 'verify-ca', sslrootcert '{ca}'");
    server(&mut client, "ca_only", "127.0.0.1", port, &ca_only);
    assert_eq!(texts(&mut client, "SELECT v FROM ca_only"), ["sealed"]);
    // add_data_source takes the TLS settings as URL parameters.
    client
        .batch_execute(&format!(
            "SELECT integration.add_data_source('by_url',
               'postgresql://postgres:{PASSWORD}@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={ca}',
               '{{\"tables\": [\"t\"]}}')"
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
    // Under verify-full, the name must match (also for `require`).
    server(&mut client, "wrong_name", "127.0.0.1", port, &full);
    refused(&mut client, "wrong_name", "127.0.0.1", "not valid for name");
    let require = format!(", sslmode 'require', sslrootcert '{ca}'");
    server(&mut client, "require_name", "127.0.0.1", port, &require);
    refused(
        &mut client,
        "require_name",
        "127.0.0.1",
        "not valid for name",
    );
    // A certificate from another CA (of the same name: rustls reports a
    // bad signature rather than an unknown issuer).
    let stranger_ca = format!(
        ", sslmode 'verify-ca', sslrootcert '{}'",
        stranger.ca.display()
    );
    server(&mut client, "wrong_ca", "localhost", port, &stranger_ca);
    refused(
        &mut client,
        "wrong_ca",
        "localhost",
        "invalid peer certificate: BadSignature",
    );
    // A server without TLS (the local cluster) is not used in plain text.
    server(&mut client, "plain", "127.0.0.1", local.port(), &full);
    refused(
        &mut client,
        "plain",
        "127.0.0.1",
        "server does not support TLS",
    );

    // Modes that may fall back to plain text are not offered, and a root
    // certificate without a mode means TLS verified against it, never a
    // silent plain connection (nor an error).
    let err = client
        .batch_execute(
            "CREATE SERVER prefer FOREIGN DATA WRAPPER postgres_wrapper OPTIONS (sslmode 'prefer')",
        )
        .unwrap_err();
    assert!(db_message(&err).contains("sslmode"), "{err:?}");
    server(
        &mut client,
        "half",
        "localhost",
        port,
        &format!(", sslrootcert '{ca}'"),
    );
    let rows = client.query("SELECT v FROM half", &[]).unwrap();
    assert_eq!(rows.len(), 1);
    let ssl: String = client
        .query_one(
            "SELECT q->>'ssl' FROM integration.query('half',
                 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()') q",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ssl, "true", "the connection with only sslrootcert used TLS");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Aggregates the remote computes as PostgreSQL does go remote with their
/// GROUP BY; every query gives what it gives over a local copy, with the
/// same types.
#[test]
fn aggregates_are_pushed_where_the_remote_computes_the_same_result() {
    let setup = Setup::new(100);
    setup
        .remote()
        .batch_execute(
            r#"CREATE TABLE "we""ird".sales (
                 id int PRIMARY KEY, k int, day date, x int, big bigint, n numeric(12,3), t text);
               INSERT INTO "we""ird".sales
                 SELECT g, g % 4, date '2024-01-01' + g % 3,
                        CASE WHEN g % 5 = 0 THEN NULL ELSE g * 7 % 11 END,
                        CASE WHEN g % 4 = 1 THEN NULL ELSE 9000000000000000000 - g END,
                        CASE WHEN g % 6 = 0 THEN NULL ELSE g * 1.125 - 20 END,
                        CASE WHEN g % 2 = 0 THEN 'a' || g ELSE 'B' || g END
                 FROM generate_series(1, 200) g;
               INSERT INTO "we""ird".sales VALUES (1000, NULL, NULL, 1, NULL, 0.001, NULL);
               GRANT SELECT ON "we""ird".sales TO remote_user"#,
        )
        .unwrap();
    let mut local = setup.client();
    setup.import(&mut local);
    local
        .batch_execute("CREATE TABLE copy AS SELECT * FROM imported.sales")
        .unwrap();
    let same = |local: &mut Client, q: &str| assert_same_as_copy(local, "imported.sales", q);

    let pushed = [
        ("SELECT count(*) FROM imported.sales", "SELECT count(*) FROM "),
        (
            "SELECT k, count(*), count(x), sum(x), avg(x), min(x), max(x),
                    sum(n), avg(n), min(n), max(n), sum(big), avg(big), min(day), max(day)
             FROM imported.sales GROUP BY k",
            r#"SELECT "k", count(*), count("x"), sum("x"), avg("x"), min("x"), max("x"), sum("n"), avg("n"), min("n"), max("n"), sum("big"), avg("big"), min("day"), max("day") FROM "we""ird"."sales" GROUP BY "k""#,
        ),
        (
            "SELECT sum(n), day, count(t), k FROM imported.sales GROUP BY k, day",
            r#" GROUP BY "k", "day""#,
        ),
        (
            "SELECT count(*), avg(n) FROM imported.sales WHERE x >= 3 AND day IS NOT NULL GROUP BY k",
            r#"WHERE "x" >= 3 AND "day" IS NOT NULL GROUP BY "k""#,
        ),
        ("SELECT count(*), sum(x) FROM imported.sales WHERE x > 1000", "sum(\"x\")"),
    ];
    for (q, remote) in pushed {
        let sql = remote_sql(&mut local, q);
        assert!(sql.contains(remote), "{remote} not in {sql}");
        same(&mut local, q);
    }
    let q = "SELECT k, max(n) FROM imported.sales GROUP BY k ORDER BY 2 DESC NULLS LAST LIMIT 2";
    assert!(remote_sql(&mut local, q).contains("max(\"n\")"));
    assert_eq!(
        texts(&mut local, &format!("SELECT q::text FROM ({q}) q")),
        texts(
            &mut local,
            &format!(
                "SELECT q::text FROM ({}) q",
                q.replace("imported.sales", "copy")
            )
        )
    );

    // Computed locally, from the rows the scan reads.
    let local_only = [
        "SELECT k, count(*) FROM imported.sales WHERE md5(t) <> md5('a2') GROUP BY k",
        "SELECT k, count(*) FROM imported.sales WHERE 100 < id GROUP BY k",
        "SELECT k, count(DISTINCT x) FROM imported.sales GROUP BY k",
        "SELECT k, sum(x) FROM imported.sales GROUP BY k HAVING sum(x) > 100",
        "SELECT k, min(t), max(t) FROM imported.sales GROUP BY k",
        "SELECT t, count(*) FROM imported.sales GROUP BY t",
        "SELECT k, sum(x) FILTER (WHERE x > 2) FROM imported.sales GROUP BY k",
        "SELECT k, sum(x) + 1 FROM imported.sales GROUP BY k",
        "SELECT k, sum(x * 2) FROM imported.sales GROUP BY k",
    ];
    assert_aggregates_survive_rescans_and_parameters(&mut local, "imported.sales");

    for q in local_only {
        let sql = remote_sql(&mut local, q);
        assert!(
            !sql.contains("GROUP BY") && !sql.contains("count(") && !sql.contains("sum("),
            "{q}: {sql}"
        );
        same(&mut local, q);
    }
}

#[test]
fn a_two_million_row_scan_keeps_the_backend_memory_flat() {
    let remote = PgCluster::start();
    remote
        .connect("postgres")
        .batch_execute(
            "CREATE VIEW gen AS SELECT g AS id, 'row number ' || g AS v, g * 1.5 AS n,
               now() - g * interval '1 second' AS at FROM generate_series(1, 2000000) g",
        )
        .unwrap();
    let local = PgCluster::start();
    let mut client = local.create_database("app");
    client
        .batch_execute(&format!(
            "CREATE SERVER remote FOREIGN DATA WRAPPER postgres_wrapper
               OPTIONS (host '127.0.0.1', port '{}', dbname 'postgres', fetch_size '2000');
             CREATE USER MAPPING FOR CURRENT_USER SERVER remote OPTIONS (user 'postgres');
             CREATE FOREIGN TABLE gen (id int, v text, n numeric, at timestamptz)
               SERVER remote OPTIONS (table_name 'gen')",
            remote.port()
        ))
        .unwrap();
    let scan = "SELECT count(v)::text || ' ' || sum(n)::text || ' ' || count(at)::text FROM gen";
    let warm_up = scan.replace("FROM gen", "FROM (SELECT * FROM gen LIMIT 5000) s");
    let (rows, grown_mb) = peak_growth_mb(&mut client, &warm_up, scan);
    assert_eq!(rows, ["2000000 3000001500000.0 2000000"]);
    eprintln!("postgres_wrapper: a 2 M row scan grew the backend's peak RSS by {grown_mb} MB");
    // Values kept for the whole scan cost ~75 MB per million rows here.
    assert!(grown_mb < 20, "the backend grew by {grown_mb} MB");
}
