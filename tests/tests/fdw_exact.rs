//! End-to-end: values read and written through the wrappers exactly, or
//! refused with an error, never silently changed (issue 28), against a
//! real MariaDB and a real PostgreSQL.

use integration_tests::{MariaDb, PgCluster};
use postgres::error::SqlState;
use serde_json::Value;

#[test]
fn mariadb_values_are_exact_or_refused() {
    let maria = MariaDb::start();
    maria.sql(
        "CREATE DATABASE shop; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'pw';
         GRANT ALL ON shop.* TO 'app'@'127.0.0.1';
         SET SESSION sql_mode = '';
         CREATE TABLE shop.exact (id INT PRIMARY KEY, js JSON, fl FLOAT, tx TEXT, d DATE);
         INSERT INTO shop.exact VALUES
           (1, '{\"n\": 12345678901234567890123}', 16777216, 'pass', '2020-01-01'),
           (2, NULL, 3.1415927, CONCAT('pa', CHAR(0), 'ss'), '2020-00-15');
         CREATE TABLE shop.loose (id INT PRIMARY KEY, tiny TINYINT, s CHAR(3)) ENGINE=MyISAM;",
    );
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    db.execute(
        "SELECT integration.add_data_source('my', $1)",
        &[&format!("mysql://app:pw@127.0.0.1:{}/shop", maria.port())],
    )
    .unwrap();
    let row = db
        .query_one(
            "SELECT js::text, fl = real '16777216' FROM my.exact WHERE id = 1",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "{\"n\": 12345678901234567890123}");
    assert!(row.get::<_, bool>(1), "FLOAT 16777216 read exactly");
    let pi: bool = db
        .query_one(
            "SELECT fl = real '3.1415927' FROM my.exact WHERE id = 2",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(pi, "FLOAT 3.1415927 read exactly");
    for (sql, code) in [
        (
            "SELECT tx FROM my.exact WHERE id = 2",
            SqlState::CHARACTER_NOT_IN_REPERTOIRE,
        ),
        (
            "SELECT d FROM my.exact WHERE id = 2",
            SqlState::DATETIME_FIELD_OVERFLOW,
        ),
    ] {
        let error = db.query_one(sql, &[]).unwrap_err();
        assert_eq!(error.code(), Some(&code), "{sql}: {error:?}");
    }
    // Strict mode on every connection: a value that does not fit is an
    // error, also in MyISAM, not 127 and 'too'.
    for sql in [
        "INSERT INTO my.loose VALUES (1, 300, 'ok')",
        "INSERT INTO my.loose VALUES (2, 1, 'toolong')",
    ] {
        assert!(db.execute(sql, &[]).is_err(), "{sql} was accepted");
    }
    let stored: Value = db
        .query_one(
            "SELECT * FROM integration.query('my', 'SELECT COUNT(*) AS n FROM loose')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored["n"], 0);
    // JSON written exactly.
    db.execute(
        "INSERT INTO my.exact (id, js) VALUES (4, '{\"n\": 98765432109876543210987}')",
        &[],
    )
    .unwrap();
    let written: Value = db
        .query_one(
            "SELECT * FROM integration.query('my', 'SELECT CAST(js AS CHAR) AS js FROM exact WHERE id = 4')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        written["js"]
            .as_str()
            .unwrap()
            .contains("98765432109876543210987"),
        "{written}"
    );
}

#[test]
fn postgres_json_numbers_are_exact_both_ways() {
    let remote = PgCluster::start();
    remote
        .connect("postgres")
        .batch_execute(
            "CREATE ROLE remote_user LOGIN PASSWORD 'pw';
             CREATE TABLE public.docs (id int PRIMARY KEY, js jsonb);
             GRANT ALL ON public.docs TO remote_user;
             INSERT INTO public.docs VALUES (1, '{\"n\": 12345678901234567890123}');",
        )
        .unwrap();
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    db.execute(
        "SELECT integration.add_data_source('pg', $1)",
        &[&format!(
            "postgresql://remote_user:pw@127.0.0.1:{}/postgres",
            remote.port()
        )],
    )
    .unwrap();
    let read: String = db
        .query_one("SELECT js::text FROM pg.docs WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(read, "{\"n\": 12345678901234567890123}");
    db.execute(
        "INSERT INTO pg.docs VALUES (2, '{\"n\": 98765432109876543210987}')",
        &[],
    )
    .unwrap();
    let written: String = remote
        .connect("postgres")
        .query_one("SELECT js::text FROM public.docs WHERE id = 2", &[])
        .unwrap()
        .get(0);
    assert_eq!(written, "{\"n\": 98765432109876543210987}");
}

/// A local column's type modifier applies to what the remote sends, as an
/// assignment would apply it: numeric(5,2) rounds to 2 places and refuses
/// too many digits, timestamp(0) rounds to seconds, varchar(3) refuses a
/// longer value.
#[test]
fn local_type_modifiers_apply_to_remote_values() {
    let remote = PgCluster::start();
    remote
        .connect("postgres")
        .batch_execute(
            "CREATE ROLE remote_user LOGIN PASSWORD 'pw';
             CREATE TABLE public.m (id int PRIMARY KEY, n numeric, t timestamp, s text);
             GRANT ALL ON public.m TO remote_user;
             INSERT INTO public.m VALUES (1, 123.456, '2020-01-01 10:00:00.7', 'toolong');",
        )
        .unwrap();
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    db.batch_execute(&format!(
        "CREATE SERVER pg FOREIGN DATA WRAPPER postgres_wrapper
             OPTIONS (host '127.0.0.1', port '{}', dbname 'postgres');
         CREATE USER MAPPING FOR CURRENT_USER SERVER pg OPTIONS (user 'remote_user', password 'pw');
         CREATE FOREIGN TABLE public.m (id int, n numeric(5,2), t timestamp(0), s varchar(3))
             SERVER pg OPTIONS (table_name 'm');
         CREATE FOREIGN TABLE public.narrow (id int, n numeric(4,2)) SERVER pg OPTIONS (table_name 'm');",
        remote.port()
    ))
    .unwrap();
    let row = db
        .query_one("SELECT n::text, t::text FROM public.m", &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "123.46");
    assert_eq!(row.get::<_, String>(1), "2020-01-01 10:00:01");
    for (sql, code) in [
        (
            "SELECT s FROM public.m",
            SqlState::STRING_DATA_RIGHT_TRUNCATION,
        ),
        (
            "SELECT n FROM public.narrow",
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
        ),
    ] {
        let error = db.query_one(sql, &[]).unwrap_err();
        assert_eq!(error.code(), Some(&code), "{sql}: {error:?}");
    }
}

/// Every type `postgres_wrapper` maps, at its edges: read through the
/// imported foreign table (compared with the remote's own text form), then
/// written back as a new row and compared with the original on the remote.
#[test]
fn postgres_every_mapped_type_round_trips() {
    let remote = PgCluster::start();
    let columns: &[(&str, &str, &str)] = &[
        ("b", "boolean", "true"),
        ("i2", "smallint", "-32768"),
        ("i4", "integer", "2147483647"),
        ("i8", "bigint", "-9223372036854775808"),
        ("f4", "real", "3.4028235e38"),
        ("f8", "double precision", "'-Infinity'"),
        ("f8b", "double precision", "2.2250738585072014e-308"),
        (
            "n",
            "numeric",
            "-12345678901234567890.000000000000000000001",
        ),
        ("nn", "numeric", "'NaN'"),
        ("n52", "numeric(5,2)", "-999.99"),
        ("t", "text", "E'two\\nlines ''quoted'' \\\\ é ✓'"),
        ("vc", "varchar(5)", "'abcde'"),
        ("ch", "char(3)", "'ab'"),
        ("d", "date", "'4713-01-01 BC'"),
        ("dinf", "date", "'infinity'"),
        ("tm", "time", "'24:00:00'"),
        ("tm3", "time(3)", "'23:59:59.999'"),
        ("ts", "timestamp", "'294276-12-31 23:59:59.999999'"),
        ("tz", "timestamptz", "'2024-02-29 12:34:56.789012+05:30'"),
        ("tzinf", "timestamptz", "'-infinity'"),
        ("iv", "interval", "'1 mon -1 day +00:00:01.5'"),
        ("ivn", "interval", "'-178000000 years'"),
        ("js", "json", "'{\"a\": 1.0e400, \"b\": [1, null]}'"),
        (
            "jb",
            "jsonb",
            "'{\"n\": 12345678901234567890123, \"s\": \"é\"}'",
        ),
        ("by", "bytea", "'\\x00ff10'"),
        ("u", "uuid", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'"),
        ("ip", "inet", "'::1/128'"),
        ("arr", "integer[]", "'{1,NULL,3}'"),
    ];
    let definition: Vec<String> = columns
        .iter()
        .map(|(name, ty, _)| format!("{name} {ty}"))
        .collect();
    let values: Vec<&str> = columns.iter().map(|(_, _, v)| *v).collect();
    let mut admin = remote.connect("postgres");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE postgres SET TimeZone = 'UTC';
             CREATE ROLE remote_user LOGIN PASSWORD 'pw';
             CREATE TABLE public.every (id int PRIMARY KEY, {});
             GRANT ALL ON public.every TO remote_user;
             INSERT INTO public.every VALUES (1, {});",
            definition.join(", "),
            values.join(", ")
        ))
        .unwrap();
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    db.batch_execute("ALTER DATABASE app SET TimeZone = 'UTC'")
        .unwrap();
    let mut db = local.connect("app");
    db.execute(
        "SELECT integration.add_data_source('pg', $1)",
        &[&format!(
            "postgresql://remote_user:pw@127.0.0.1:{}/postgres",
            remote.port()
        )],
    )
    .unwrap();
    let mut remote_db = remote.connect("postgres");
    // json arrives as jsonb locally: compared in jsonb's text form.
    let text = |name: &str, ty: &str| {
        if ty == "json" {
            format!("{name}::jsonb::text")
        } else {
            format!("{name}::text")
        }
    };
    let remote_row = |db: &mut postgres::Client, id: i32| -> Vec<Option<String>> {
        let list: Vec<String> = columns.iter().map(|(n, ty, _)| text(n, ty)).collect();
        let row = db
            .query_one(
                &format!("SELECT {} FROM public.every WHERE id = $1", list.join(", ")),
                &[&id],
            )
            .unwrap();
        (0..columns.len()).map(|i| row.get(i)).collect()
    };
    let original = remote_row(&mut remote_db, 1);
    for (i, (name, ty, _)) in columns.iter().enumerate() {
        let read: Option<String> = db
            .query_one(
                &format!("SELECT {} FROM pg.every WHERE id = 1", text(name, "")),
                &[],
            )
            .unwrap_or_else(|e| panic!("reading {name} ({ty}): {e}"))
            .get(0);
        assert_eq!(read, original[i], "{name} ({ty}) read");
    }
    let names: Vec<&str> = columns.iter().map(|(n, _, _)| *n).collect();
    db.execute(
        &format!(
            "INSERT INTO pg.every (id, {0}) SELECT 2, {0} FROM pg.every WHERE id = 1",
            names.join(", ")
        ),
        &[],
    )
    .unwrap();
    let written = remote_row(&mut remote_db, 2);
    for (i, (name, ty, _)) in columns.iter().enumerate() {
        assert_eq!(written[i], original[i], "{name} ({ty}) written");
    }
    // And UPDATE writes the same values.
    db.execute(
        &format!(
            "UPDATE pg.every AS e SET ({0}) = (SELECT {0} FROM pg.every WHERE id = 1) WHERE e.id = 2",
            names.join(", ")
        ),
        &[],
    )
    .unwrap();
    assert_eq!(remote_row(&mut remote_db, 2), original, "updated");
}

/// Every type `mysql_wrapper` maps, at its edges: read through the imported
/// foreign table (compared with what PostgreSQL prints for the same value),
/// then written back as a new row and compared, column by column, with the
/// original in MariaDB's own text form.
#[test]
fn mariadb_every_mapped_type_round_trips() {
    // (column, MariaDB type, MariaDB literal, the local value as text)
    let columns: &[(&str, &str, &str, &str)] = &[
        ("ti", "TINYINT", "-128", "-128"),
        ("tiu", "TINYINT UNSIGNED", "255", "255"),
        ("si", "SMALLINT", "-32768", "-32768"),
        ("siu", "SMALLINT UNSIGNED", "65535", "65535"),
        ("mi", "MEDIUMINT", "-8388608", "-8388608"),
        ("i", "INT", "-2147483648", "-2147483648"),
        ("iu", "INT UNSIGNED", "4294967295", "4294967295"),
        (
            "bi",
            "BIGINT",
            "-9223372036854775808",
            "-9223372036854775808",
        ),
        (
            "biu",
            "BIGINT UNSIGNED",
            "18446744073709551615",
            "18446744073709551615",
        ),
        (
            "de",
            "DECIMAL(65,30)",
            "-99999999999999999999999999999999999.999999999999999999999999999999",
            "-99999999999999999999999999999999999.999999999999999999999999999999",
        ),
        ("fl", "FLOAT", "16777216", "1.6777216e+07"),
        (
            "db",
            "DOUBLE",
            "2.2250738585072014e-308",
            "2.2250738585072014e-308",
        ),
        ("b1", "BIT(1)", "b'1'", "true"),
        ("b10", "BIT(10)", "b'1111111111'", "1023"),
        ("yr", "YEAR", "2155", "2155"),
        ("ch", "CHAR(5)", "'ab'", "ab"),
        ("vc", "VARCHAR(10)", "'é ✓ \\\\ '''", "é ✓ \\ '"),
        ("tx", "TEXT", "'two\\nlines'", "two\nlines"),
        ("en", "ENUM('a','b c')", "'b c'", "b c"),
        ("st", "SET('x','y','z')", "'x,z'", "x,z"),
        (
            "js",
            "JSON",
            "'{\"n\": 12345678901234567890123}'",
            "{\"n\": 12345678901234567890123}",
        ),
        ("bn", "BINARY(4)", "x'00ff0010'", "\\x00ff0010"),
        ("vb", "VARBINARY(8)", "x'00'", "\\x00"),
        ("bl", "BLOB", "x'deadbeef00'", "\\xdeadbeef00"),
        ("d", "DATE", "'1000-01-01'", "1000-01-01"),
        (
            "dt",
            "DATETIME(6)",
            "'9999-12-31 23:59:59.999999'",
            "9999-12-31 23:59:59.999999",
        ),
        ("tm", "TIME(6)", "'-838:59:59.000000'", "-838:59:59"),
        ("tm2", "TIME", "'24:00:00'", "24:00:00"),
        (
            "u",
            "UUID",
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ),
    ];
    let definition: Vec<String> = columns
        .iter()
        .map(|(name, ty, _, _)| format!("{name} {ty}"))
        .collect();
    let values: Vec<&str> = columns.iter().map(|(_, _, v, _)| *v).collect();
    let maria = MariaDb::start();
    maria.sql(&format!(
        "CREATE DATABASE shop; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'pw';
         GRANT ALL ON shop.* TO 'app'@'127.0.0.1';
         CREATE TABLE shop.every (id INT PRIMARY KEY, {});
         INSERT INTO shop.every VALUES (1, {});",
        definition.join(", "),
        values.join(", ")
    ));
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    db.execute(
        "SELECT integration.add_data_source('my', $1)",
        &[&format!("mysql://app:pw@127.0.0.1:{}/shop", maria.port())],
    )
    .unwrap();
    for (name, ty, _, want) in columns {
        let read: Option<String> = db
            .query_one(
                &format!("SELECT {name}::text FROM my.every WHERE id = 1"),
                &[],
            )
            .unwrap_or_else(|e| panic!("reading {name} ({ty}): {e}"))
            .get(0);
        assert_eq!(read.as_deref(), Some(*want), "{name} ({ty}) read");
    }
    let names: Vec<&str> = columns.iter().map(|(n, _, _, _)| *n).collect();
    db.execute(
        &format!(
            "INSERT INTO my.every (id, {0}) SELECT 2, {0} FROM my.every WHERE id = 1",
            names.join(", ")
        ),
        &[],
    )
    .unwrap();
    // MariaDB's own text of each column, hex for the binary ones.
    let remote_text = |id: i32| -> Vec<String> {
        columns
            .iter()
            .map(|(name, ty, _, _)| {
                let expr = if ty.starts_with("BIT") || ty.contains("BINARY") || *ty == "BLOB" {
                    format!("HEX({name})")
                } else if *ty == "JSON" {
                    // MariaDB keeps a JSON document's text as written.
                    format!("JSON_COMPACT({name})")
                } else {
                    format!("CAST({name} AS CHAR)")
                };
                maria.sql(&format!("SELECT {expr} FROM shop.every WHERE id = {id}"))
            })
            .collect()
    };
    let original = remote_text(1);
    let written = remote_text(2);
    for (i, (name, ty, _, _)) in columns.iter().enumerate() {
        assert_eq!(written[i], original[i], "{name} ({ty}) written");
    }
}
