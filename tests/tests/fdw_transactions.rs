//! End-to-end, through both wrappers: a rolled-back subtransaction
//! (ROLLBACK TO SAVEPOINT, a PL/pgSQL EXCEPTION block) undoes its remote
//! writes too, released and committed ones stay, and a remote error caught
//! by an EXCEPTION block leaves the rest of the transaction usable (see
//! `fdw::xact`); a cancelled local statement (statement_timeout) stops the
//! remote statement it waits for (see `fdw::wait_cancellable`).

use integration_tests::remotes::Remotes;
use postgres::error::SqlState;
use postgres::Client;

/// The writes of one transaction with savepoints, then a PL/pgSQL block
/// that catches a remote duplicate-key error; what must be left remotely.
fn write_with_subtransactions(db: &mut Client, table: &str) -> Vec<i32> {
    db.batch_execute(&format!(
        "BEGIN;
         INSERT INTO {table} VALUES (1, 'kept');
         SAVEPOINT a;
         INSERT INTO {table} VALUES (2, 'rolled back');
         ROLLBACK TO SAVEPOINT a;
         INSERT INTO {table} VALUES (3, 'kept');
         SAVEPOINT b;
         INSERT INTO {table} VALUES (4, 'released');
         RELEASE SAVEPOINT b;
         SAVEPOINT c;
         SAVEPOINT d;
         INSERT INTO {table} VALUES (5, 'released into c, rolled back with it');
         RELEASE SAVEPOINT d;
         UPDATE {table} SET v = 'updated, rolled back' WHERE id = 1;
         ROLLBACK TO SAVEPOINT c;
         SELECT count(*) FROM {table};
         COMMIT;"
    ))
    .unwrap_or_else(|e| panic!("{table}: {e:?}"));
    db.batch_execute(&format!(
        "DO $$ BEGIN
           INSERT INTO {table} VALUES (10, 'kept');
           BEGIN
             INSERT INTO {table} VALUES (11, 'rolled back');
             INSERT INTO {table} VALUES (1, 'duplicate key');
           EXCEPTION WHEN others THEN NULL;
           END;
           INSERT INTO {table} VALUES (12, 'kept');
         END $$"
    ))
    .unwrap_or_else(|e| panic!("{table}: {e:?}"));
    // A scan inside a subtransaction that is rolled back, then one after.
    let count: i64 = {
        let mut tx = db.transaction().unwrap();
        tx.batch_execute(&format!(
            "SAVEPOINT s; SELECT count(*) FROM {table}; ROLLBACK TO SAVEPOINT s"
        ))
        .unwrap();
        let count = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0);
        tx.commit().unwrap();
        count
    };
    assert_eq!(count, 5, "{table}");
    let kept: String = db
        .query_one(&format!("SELECT v FROM {table} WHERE id = 1"), &[])
        .unwrap()
        .get(0);
    assert_eq!(kept, "kept", "{table}: the rolled-back UPDATE stays undone");
    vec![1, 3, 4, 10, 12]
}

/// Both remotes with a table `sp` (id int key, v text) each.
fn sources() -> (Remotes, Client) {
    Remotes::start(
        "CREATE TABLE public.sp (id int PRIMARY KEY, v text);
         GRANT ALL ON public.sp TO remote_user;",
        "CREATE TABLE shop.sp (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB;",
    )
}

#[test]
fn rolled_back_subtransactions_undo_their_remote_writes() {
    let (servers, mut db) = sources();
    let want = write_with_subtransactions(&mut db, "pgsrc.sp");
    let got: Vec<i32> = servers
        .postgres
        .connect("postgres")
        .query("SELECT id FROM public.sp ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(got, want, "PostgreSQL remote");

    let want = write_with_subtransactions(&mut db, "mysrc.sp");
    let got: Vec<i32> = servers
        .maria
        .sql("SELECT id FROM shop.sp ORDER BY id")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(got, want, "MariaDB remote");
}

/// Asserts that `sql` is cancelled by the local statement_timeout.
fn assert_cancelled(db: &mut Client, sql: &str) {
    let err = db
        .batch_execute(&format!("SET statement_timeout = '300ms'; {sql}"))
        .expect_err(sql);
    assert_eq!(
        err.code(),
        Some(&SqlState::QUERY_CANCELED),
        "{sql}: {err:?}"
    );
    db.batch_execute("RESET statement_timeout").unwrap();
}

#[test]
fn a_cancelled_statement_stops_the_remote_one() {
    let (servers, mut db) = sources();
    let maria = &servers.maria;
    let mut remote_db = servers.postgres.connect("postgres");
    remote_db
        .batch_execute(
            "CREATE VIEW public.slow AS SELECT g AS id, pg_sleep(0.05)::text AS s
               FROM generate_series(1, 1000) g;
             GRANT SELECT ON public.slow TO remote_user;",
        )
        .unwrap();
    maria.sql(
        "CREATE VIEW shop.slow AS SELECT id, SLEEP(0.05) AS s FROM shop.sp;
         INSERT INTO shop.sp WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 1000)
           SELECT n, 'x' FROM g;",
    );
    db.batch_execute(
        "CREATE FOREIGN TABLE pgsrc.slow (id int, s text) SERVER pgsrc
           OPTIONS (table_name 'slow');
         CREATE FOREIGN TABLE mysrc.slow (id int, s text) SERVER mysrc
           OPTIONS (table_name 'slow');",
    )
    .unwrap();

    // Each would run for 50 s without the cancel.
    assert_cancelled(&mut db, "SELECT * FROM pgsrc.slow");
    assert_cancelled(
        &mut db,
        "SELECT * FROM integration.query('pgsrc', 'SELECT pg_sleep(50)')",
    );
    let running: i64 = remote_db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE state = 'active' AND pid <> pg_backend_pid() AND query ~ 'sleep'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(running, 0, "the remote statements were stopped");

    assert_cancelled(&mut db, "SELECT * FROM mysrc.slow");
    assert_cancelled(
        &mut db,
        "SELECT * FROM integration.query('mysrc', 'SELECT SLEEP(50)')",
    );
    let running = maria.sql(
        "SELECT count(*) FROM information_schema.processlist
         WHERE id <> connection_id() AND info LIKE '%SLEEP%' AND info NOT LIKE '%processlist%'",
    );
    assert_eq!(running.trim(), "0", "the remote statements were stopped");

    // The connections are usable afterwards.
    let count: i64 = db
        .query_one("SELECT count(*) FROM mysrc.sp", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 1000);
    let count: i64 = db
        .query_one("SELECT count(*) FROM pgsrc.sp", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}
