//! `ALTER EXTENSION pg_integration UPDATE` from every release in
//! sql/releases: the release's install script (built from its commit by
//! scripts/release-sql.sh, `make test-deps`) is installed, filled with keys,
//! webhooks, events, SSO providers, a data source and queued requests, and
//! updated; its schema must then equal a fresh install's byte for byte
//! (`pg_dump --schema-only --binary-upgrade`, which also dumps the
//! extension's own objects, OIDs left out), and its data must still work.

use integration_tests::{workspace_root, PgCluster};
use std::fs;

/// The releases listed in sql/releases.
fn releases() -> Vec<String> {
    let list = fs::read_to_string(workspace_root().join("sql/releases")).expect("sql/releases");
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().expect("a version").to_owned())
        .collect()
}

/// The same users, keys, webhooks, events, providers, data source and
/// queued request in any version; returns the API key.
fn fill(cluster: &PgCluster, client: &mut postgres::Client) -> String {
    client
        .batch_execute(&format!(
            "DO $$ BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_user') THEN
                     CREATE ROLE app_user;
                 END IF;
             END $$;
             SELECT integration.create_webhook('orders', 'github', 'github-secret-value-1');
             SELECT integration.create_webhook('plain', 'none');
             INSERT INTO integration.webhook_events (webhook, delivery_id, payload, raw_body)
                 VALUES ('orders', 'd-1', '{{\"id\": 1}}', '{{\"id\": 1}}'),
                        ('plain', NULL, '[]', '[]');
             SELECT integration.create_sso_provider('dir', 'ldap',
                 jsonb_build_object('url', 'ldap://127.0.0.1:9', 'bind_dn', 'cn=reader,dc=x',
                     'bind_password', 'ldap-bind-password', 'search_base', 'dc=x',
                     'search_filter', '(uid={{username}})'),
                 default_role => 'app_user');
             SELECT integration.add_data_source('shop',
                 'postgresql://postgres@127.0.0.1:{}/postgres',
                 '{{\"remote_schema\": \"remote_side\"}}');
             SET integration.http_allowed_networks = '127.0.0.1/32';
             SELECT integration.http_enqueue('GET', 'http://127.0.0.1:9/never');",
            cluster.port()
        ))
        .unwrap_or_else(|e| panic!("fill: {e}\n{}", cluster.log_tail()));
    client
        .query_one(
            "SELECT integration.create_api_key('svc', 'app_user', ARRAY['webhooks:orders'])",
            &[],
        )
        .expect("create_api_key")
        .get(0)
}

/// A dump line that names an OID, a transaction id or `\restrict`'s random key.
fn carries_an_id(line: &str) -> bool {
    let oid_literal = line
        .strip_prefix("WHERE oid = '")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    oid_literal
        || line.contains("binary_upgrade_set_next_")
        || line.starts_with("SET relfrozenxid")
        || line.starts_with("\\restrict")
        || line.starts_with("\\unrestrict")
}

/// The schema of `db` as `pg_dump --binary-upgrade` shows it (the
/// extension's members included), without the lines that carry OIDs,
/// transaction ids and the random key of `\restrict`; the extension's configuration tables,
/// which that dump names by OID, follow by name.
fn schema(cluster: &PgCluster, db: &str) -> String {
    let dump = cluster.pg_dump(db, &["--schema-only", "--binary-upgrade"]);
    let mut lines: Vec<String> = dump
        .lines()
        .filter(|l| !carries_an_id(l))
        .map(|l| match l.find("binary_upgrade_create_empty_extension(") {
            Some(_) => "-- (binary_upgrade_create_empty_extension: OIDs)".to_owned(),
            None => l.to_owned(),
        })
        .collect();
    let config: String = cluster
        .connect(db)
        .query_one(
            "SELECT extversion || ' ' || coalesce(array_to_string(ARRAY(
                 SELECT t::regclass::text || ' ' || coalesce(c, '')
                 FROM unnest(extconfig, extcondition) AS x(t, c) ORDER BY 1), ', '), '')
             FROM pg_extension WHERE extname = 'pg_integration'",
            &[],
        )
        .expect("the configuration tables")
        .get(0);
    lines.push(format!("-- extension {config}"));
    lines.join("\n")
}

/// The first lines where `a` and `b` differ, with a little context.
fn first_difference(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = at.saturating_sub(5);
    format!(
        "line {at}:\n--- upgraded\n{}\n--- fresh\n{}",
        a[from..(at + 10).min(a.len())].join("\n"),
        b[from..(at + 10).min(b.len())].join("\n")
    )
}

#[test]
fn every_release_updates_to_the_schema_of_a_fresh_install_and_keeps_its_data() {
    let releases = releases();
    assert!(!releases.is_empty(), "sql/releases lists no release");
    let cluster = PgCluster::start();
    let mut postgres = cluster.connect("postgres");
    // The data source's remote side: a table in database `postgres`.
    postgres
        .batch_execute(
            "CREATE SCHEMA remote_side;
             CREATE TABLE remote_side.items (id int PRIMARY KEY, name text)",
        )
        .expect("the remote table");
    let current: String = postgres
        .query_one(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_integration'",
            &[],
        )
        .expect("the installed version")
        .get(0);
    postgres
        .batch_execute("CREATE DATABASE fresh")
        .expect("create the fresh database");
    let mut fresh = cluster.connect("fresh");
    fresh
        .batch_execute("CREATE EXTENSION pg_integration")
        .expect("a fresh install");
    fill(&cluster, &mut fresh);
    let expected = schema(&cluster, "fresh");

    for release in releases {
        assert_ne!(release, current, "sql/releases lists the current version");
        let db = format!("from_{}", release.replace('.', "_"));
        postgres
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .expect("create the database");
        let mut old = cluster.connect(&db);
        old.batch_execute(&format!(
            "CREATE EXTENSION pg_integration VERSION '{release}'"
        ))
        .unwrap_or_else(|e| panic!("install {release} (run `make test-deps` to build it): {e}"));
        let key = fill(&cluster, &mut old);
        old.batch_execute("ALTER EXTENSION pg_integration UPDATE")
            .unwrap_or_else(|e| panic!("update from {release}: {e}\n{}", cluster.log_tail()));
        let version: String = old
            .query_one(
                "SELECT extversion FROM pg_extension WHERE extname = 'pg_integration'",
                &[],
            )
            .expect("the version")
            .get(0);
        assert_eq!(version, current, "from {release}");

        let upgraded = schema(&cluster, &db);
        assert!(
            upgraded == expected,
            "the schema updated from {release} differs from a fresh install at {}",
            first_difference(&upgraded, &expected)
        );

        // The data of the old release still works.
        let verified = old
            .query(
                "SELECT 1 FROM integration.verify_api_key($1, 'webhooks:orders')",
                &[&key],
            )
            .expect("verify_api_key");
        assert_eq!(verified.len(), 1, "the {release} key no longer verifies");
        let counts: (i64, i64, i64, i64, i64) = {
            let row = old
                .query_one(
                    "SELECT (SELECT count(*) FROM integration.webhook_list),
                            (SELECT count(*) FROM integration.webhook_secrets),
                            (SELECT count(*) FROM integration.webhook_events),
                            (SELECT count(*) FROM integration.sso_provider_list),
                            -- queued, or answered by the worker meanwhile
                            (SELECT count(*) FROM integration.http_requests)
                              + (SELECT count(*) FROM integration.http_responses)",
                    &[],
                )
                .expect("count the data");
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
        };
        assert_eq!(counts, (2, 1, 2, 1, 1), "from {release}");
        let remote: i64 = old
            .query_one("SELECT count(*) FROM shop.items", &[])
            .expect("the data source still reads")
            .get(0);
        assert_eq!(remote, 0);
    }
}
