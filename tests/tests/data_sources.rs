//! End-to-end: `add_data_source`, `test_data_source` and `query` against a
//! second PostgreSQL cluster and a MariaDB, as an integration_admin member;
//! refused to others, judged by the invoker (after SET ROLE), never showing
//! the password.

use integration_tests::sql::db_message;
use integration_tests::{MariaDb, PgCluster};
use postgres::error::SqlState;
use serde_json::{json, Value};

const PASSWORD: &str = "S3cret-pw!";

#[test]
fn a_data_source_is_one_call_and_answers_queries_with_bound_parameters() {
    let remote = PgCluster::start();
    remote
        .connect("postgres")
        .batch_execute("CREATE DATABASE remote")
        .unwrap();
    remote
        .connect("remote")
        .batch_execute(&format!(
            "CREATE ROLE remote_user LOGIN PASSWORD '{PASSWORD}';
             CREATE SCHEMA sales AUTHORIZATION remote_user;
             SET ROLE remote_user;
             CREATE TABLE sales.orders (id int PRIMARY KEY, total numeric(10,2), note text);
             INSERT INTO sales.orders VALUES (1, 10.00, 'a'), (2, 12.50, 'b');
             CREATE TABLE sales.skipped (id int PRIMARY KEY);"
        ))
        .unwrap();
    let maria = MariaDb::start();
    maria.sql(&format!(
        "CREATE DATABASE shop; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
         GRANT ALL ON shop.* TO 'app'@'127.0.0.1';
         CREATE TABLE shop.items (id INT PRIMARY KEY, price DECIMAL(10,2), name VARCHAR(20));
         INSERT INTO shop.items VALUES (1, 9.99, 'pen'), (2, 100.00, 'book');"
    ));
    let local = PgCluster::start();
    let mut postgres = local.create_database("app");
    postgres
        .batch_execute(
            "CREATE ROLE ds_admin LOGIN IN ROLE integration_admin;
             GRANT CREATE ON DATABASE app TO ds_admin;
             CREATE ROLE helper NOLOGIN;
             GRANT helper TO ds_admin;
             GRANT USAGE ON SCHEMA integration TO helper;
             GRANT EXECUTE ON FUNCTION integration.test_data_source(text) TO helper;
             CREATE ROLE nobody LOGIN;",
        )
        .unwrap();
    let mut admin = local.connect_as("app", "ds_admin");

    let pg_url = format!(
        "postgresql://remote_user:{}@127.0.0.1:{}/remote",
        PASSWORD.replace('!', "%21"),
        remote.port()
    );
    let schema: String = admin
        .query_one(
            "SELECT integration.add_data_source('erp', $1, '{\"remote_schema\": \"sales\", \"tables\": [\"orders\"]}')",
            &[&pg_url],
        )
        .unwrap()
        .get(0);
    assert_eq!(schema, "erp");
    let total: String = admin
        .query_one("SELECT sum(total)::text FROM erp.orders", &[])
        .unwrap()
        .get(0);
    assert_eq!(total, "22.50");
    let tables: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_foreign_table f JOIN pg_class c ON c.oid = f.ftrelid
             WHERE c.relnamespace = 'erp'::regnamespace",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "LIMIT TO (orders)");

    let status: Value = admin
        .query_one("SELECT integration.test_data_source('erp')", &[])
        .unwrap()
        .get(0);
    assert_eq!(status["reachable"], json!(true), "{status}");
    assert!(
        status["version"]
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL 15"),
        "{status}"
    );

    let rows: Vec<Value> = admin
        .query(
            "SELECT integration.query('erp', 'SELECT id, total, note FROM sales.orders WHERE id = $1 OR note = $2 ORDER BY id', $1)",
            &[&json!([2, "a"])],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows,
        [
            json!({"id": 1, "total": 10.00, "note": "a"}),
            json!({"id": 2, "total": 12.50, "note": "b"})
        ]
    );
    // A pass-through write belongs to the local transaction.
    let mut tx = admin.transaction().unwrap();
    tx.query(
        "SELECT integration.query('erp', 'INSERT INTO sales.orders VALUES ($1, $2) RETURNING id', '[3, \"1.5\"]')",
        &[],
    )
    .unwrap();
    tx.rollback().unwrap();
    let n: i64 = remote
        .connect("remote")
        .query_one("SELECT count(*) FROM sales.orders", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // MariaDB, with `?` placeholders and exact decimals.
    let my_url = format!(
        "mariadb://app:{}@127.0.0.1:{}/shop",
        PASSWORD.replace('!', "%21"),
        maria.port()
    );
    admin
        .query_one("SELECT integration.add_data_source('shop', $1)", &[&my_url])
        .unwrap();
    let names: String = admin
        .query_one(
            "SELECT string_agg(name, ',' ORDER BY id) FROM shop.items",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(names, "pen,book");
    let status: Value = admin
        .query_one("SELECT integration.test_data_source('shop')", &[])
        .unwrap()
        .get(0);
    assert!(
        status["version"].as_str().unwrap().contains("MariaDB"),
        "{status}"
    );
    let rows: Vec<Value> = admin
        .query(
            "SELECT integration.query('shop', 'SELECT id, price, name FROM items WHERE price > ? ORDER BY id', '[\"10\"]')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, [json!({"id": 2, "price": "100.00", "name": "book"})]);

    // Unreachable: a report, not an error, and no password in it.
    let closed = integration_tests::free_port();
    let err = admin
        .query_one(
            "SELECT integration.add_data_source('gone', $1)",
            &[&format!("postgresql://u:{PASSWORD}@127.0.0.1:{closed}/x")],
        )
        .unwrap_err();
    assert!(!format!("{err:?}").contains(PASSWORD), "{err:?}");
    admin
        .batch_execute(&format!(
            "CREATE SERVER gone FOREIGN DATA WRAPPER postgres_wrapper OPTIONS (host '127.0.0.1', port '{closed}', dbname 'x');
             CREATE USER MAPPING FOR CURRENT_USER SERVER gone OPTIONS (user 'u', password '{PASSWORD}');"
        ))
        .unwrap();
    let status: Value = admin
        .query_one("SELECT integration.test_data_source('gone')", &[])
        .unwrap()
        .get(0);
    assert_eq!(status["reachable"], json!(false), "{status}");
    assert!(!status.to_string().contains(PASSWORD), "{status}");

    // The audit log records the sources without their secrets.
    let audit: Vec<Value> = postgres
        .query(
            "SELECT detail FROM integration.audit_log WHERE action = 'add_data_source' ORDER BY at",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(audit.len(), 2);
    assert!(
        audit.iter().all(|d| !d.to_string().contains("S3cret")),
        "{audit:?}"
    );

    // Others are refused; the invoker counts, not the session user.
    let mut nobody = local.connect_as("app", "nobody");
    let err = nobody
        .query_one("SELECT integration.test_data_source('erp')", &[])
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    admin.batch_execute("SET ROLE helper").unwrap();
    let err = admin
        .query_one("SELECT integration.test_data_source('erp')", &[])
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
    assert!(db_message(&err).contains("integration_admin"), "{err:?}");
    admin.batch_execute("RESET ROLE").unwrap();

    // Another admin without USAGE on the server is refused, even though a
    // PUBLIC user mapping exists (issue 24, item 6).
    admin
        .batch_execute(&format!(
            "CREATE USER MAPPING FOR PUBLIC SERVER erp OPTIONS (user 'remote_user', password '{PASSWORD}')"
        ))
        .unwrap();
    postgres
        .batch_execute("CREATE ROLE admin_two LOGIN IN ROLE integration_admin")
        .unwrap();
    let mut other = local.connect_as("app", "admin_two");
    for sql in [
        "SELECT integration.test_data_source('erp')",
        "SELECT integration.query('erp', 'SELECT 1')",
    ] {
        let err = other.query_one(sql, &[]).unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err:?}"
        );
        assert!(db_message(&err).contains("foreign server erp"), "{err:?}");
    }
    admin
        .batch_execute("GRANT USAGE ON FOREIGN SERVER erp TO admin_two")
        .unwrap();
    let status: Value = other
        .query_one("SELECT integration.test_data_source('erp')", &[])
        .unwrap()
        .get(0);
    assert_eq!(status["reachable"], json!(true), "{status}");
}
