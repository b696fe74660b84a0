//! End-to-end, through both wrappers: conditions written constant first
//! (`5 < x`) select the same rows as written column first, and reach the
//! remote side with the operator turned around (`x > 5`; supabase-wrappers
//! alone would send `x < 5`, see `fdw::planner::column_first`); plans are
//! run again (prepared statements, PL/pgSQL) with new parameter values, a
//! correlated subquery passes its outer value down, and each scan of a
//! self-join shows its own remote SQL (see `fdw::scan`).

use integration_tests::remotes::Remotes;
use integration_tests::sql::{remote_sql, texts};
use postgres::Client;

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

/// The count of `table`'s rows with x above each floor, through `query`
/// (a statement with one parameter run again and again).
fn counts_above(db: &mut Client, query: &str) -> Vec<i64> {
    [0, 3, 9, 5, 10, 1, 7, 2]
        .iter()
        .map(|floor: &i32| db.query_one(query, &[floor]).unwrap().get(0))
        .collect()
}

const WANT_ABOVE: [i64; 8] = [10, 7, 1, 5, 0, 9, 3, 8];

fn check_plans_run_again(db: &mut Client, name: &str, table: &str) {
    // PL/pgSQL keeps a plan without parameters from its first call on, and
    // one with parameters once five calls chose the generic plan.
    db.batch_execute(&format!(
        "CREATE FUNCTION {name}_total() RETURNS bigint LANGUAGE plpgsql
           AS $$ BEGIN RETURN (SELECT sum(x) FROM {table}); END $$;
         CREATE FUNCTION {name}_above(floor int) RETURNS bigint LANGUAGE plpgsql
           AS $$ BEGIN RETURN (SELECT count(*) FROM {table} WHERE x > floor); END $$;"
    ))
    .unwrap();
    for _ in 0..3 {
        let total: i64 = db
            .query_one(&format!("SELECT {name}_total()"), &[])
            .unwrap()
            .get(0);
        assert_eq!(total, 55, "{name}_total()");
    }
    let above = format!("SELECT {name}_above($1)");
    assert_eq!(counts_above(db, &above), WANT_ABOVE, "{above}");

    // A generic plan: the parameter's value reaches the remote at each run.
    db.batch_execute(&format!(
        "SET plan_cache_mode = force_generic_plan;
         PREPARE {name}_above_p(int) AS SELECT count(*) FROM {table} WHERE x > $1;"
    ))
    .unwrap();
    let execute = format!("EXECUTE {name}_above_p($1)");
    let got: Vec<i64> = [0, 3, 9, 5, 10, 1, 7, 2]
        .iter()
        .map(|f: &i32| {
            let sql = execute.replace("$1", &f.to_string());
            db.query_one(&sql, &[]).unwrap().get(0)
        })
        .collect();
    assert_eq!(got, WANT_ABOVE, "{execute}");
    let plan = remote_sql(db, &format!("EXECUTE {name}_above_p(4)"));
    assert!(plan.contains("> $1"), "the parameter goes remote: {plan}");
    db.batch_execute("RESET plan_cache_mode").unwrap();

    // A correlated subquery: the outer row's value is a parameter of the
    // scan, which is rescanned with each new value.
    let values = texts(
        db,
        &format!(
            "SELECT string_agg((SELECT x * 10 FROM {table} t WHERE t.id = g)::text, ',' ORDER BY g)
             FROM generate_series(0, 4) g"
        ),
    );
    assert_eq!(values, ["10,20,30,40"]);

    // A self-join: each scan sends its own conditions.
    let lines = texts(
        db,
        &format!(
            "EXPLAIN (VERBOSE, COSTS OFF)
             SELECT a.id, b.id FROM {table} a, {table} b WHERE a.x = 1 AND b.x = 2"
        ),
    );
    let remote: Vec<&String> = lines.iter().filter(|l| l.contains("Remote SQL")).collect();
    assert_eq!(remote.len(), 2, "{lines:?}");
    assert!(remote.iter().any(|l| l.contains("= 1")), "{lines:?}");
    assert!(remote.iter().any(|l| l.contains("= 2")), "{lines:?}");
    let pairs: i64 = db
        .query_one(
            &format!("SELECT count(*) FROM {table} a, {table} b WHERE a.x = 1 AND b.x = 2"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(pairs, 1);
}

#[test]
fn conditions_parameters_and_reused_plans_through_both_wrappers() {
    let (_servers, mut db) = Remotes::start(
        "CREATE TABLE public.t (id int PRIMARY KEY, x int);
         INSERT INTO public.t SELECT g, g FROM generate_series(1, 10) g;
         GRANT SELECT ON public.t TO remote_user;",
        "CREATE TABLE shop.t (id INT PRIMARY KEY, x INT);
         INSERT INTO shop.t VALUES (1,1),(2,2),(3,3),(4,4),(5,5),(6,6),(7,7),(8,8),(9,9),(10,10);",
    );
    for name in ["pgsrc", "mysrc"] {
        check(&mut db, &format!("{name}.t"));
        check_plans_run_again(&mut db, name, &format!("{name}.t"));
    }
}
