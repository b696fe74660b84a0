//! End-to-end: conditions written constant first (`5 < x`) select the same
//! rows through both wrappers as written column first, and reach the
//! remote side with the operator turned around (`x > 5`); supabase-wrappers
//! alone would send `x < 5` (see `fdw::planner::column_first`).

use integration_tests::sql::remote_sql;
use integration_tests::{MariaDb, PgCluster};
use postgres::Client;

const PASSWORD: &str = "S3cret-pw!";

/// Each query with the count of x in 1..=10 it must find.
const CASES: [(&str, i64); 6] = [
    ("5 < x", 5),
    ("3 >= x", 3),
    ("7 > x AND 2 <= x", 5),
    ("x < 5", 4),
    ("4 = x", 1),
    ("10 <> x", 9),
];

fn check(db: &mut Client, table: &str) {
    for (condition, want) in CASES {
        let sql = format!("SELECT count(*) FROM {table} WHERE {condition}");
        let got: i64 = db.query_one(&sql, &[]).unwrap().get(0);
        assert_eq!(got, want, "{sql}");
    }
    let plan = remote_sql(db, &format!("SELECT x FROM {table} WHERE 5 < x"));
    assert!(
        plan.contains("> 5"),
        "the remote SQL keeps 5 < x's sense: {plan}"
    );
}

#[test]
fn constant_first_conditions_keep_their_sense_through_both_wrappers() {
    let remote = PgCluster::start();
    remote
        .connect("postgres")
        .batch_execute(&format!(
            "CREATE ROLE remote_user LOGIN PASSWORD '{PASSWORD}';
             CREATE TABLE public.t (id int PRIMARY KEY, x int);
             INSERT INTO public.t SELECT g, g FROM generate_series(1, 10) g;
             GRANT SELECT ON public.t TO remote_user;"
        ))
        .unwrap();
    let maria = MariaDb::start();
    maria.sql(&format!(
        "CREATE DATABASE shop; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';
         GRANT ALL ON shop.* TO 'app'@'127.0.0.1';
         CREATE TABLE shop.t (id INT PRIMARY KEY, x INT);
         INSERT INTO shop.t VALUES (1,1),(2,2),(3,3),(4,4),(5,5),(6,6),(7,7),(8,8),(9,9),(10,10);"
    ));
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    let password = PASSWORD.replace('!', "%21");
    let sources = [
        (
            "pgsrc",
            format!(
                "postgresql://remote_user:{password}@127.0.0.1:{}/postgres",
                remote.port()
            ),
            "public",
        ),
        (
            "mysrc",
            format!("mysql://app:{password}@127.0.0.1:{}/shop", maria.port()),
            "shop",
        ),
    ];
    for (name, url, schema) in &sources {
        db.execute(
            "SELECT integration.add_data_source($1, $2, jsonb_build_object('remote_schema', $3::text))",
            &[name, url, schema],
        )
        .unwrap();
        check(&mut db, &format!("{name}.t"));
    }
}
