//! `integration.api_reference`: every function, view, table and setting a
//! user of integration_user or integration_admin may call or read has a
//! description and a capability, and every SQLSTATE it lists is raised here
//! by a call that really raises it (a listed code without a recipe fails, so
//! the list cannot grow unchecked).

use integration_tests::PgCluster;
use std::collections::BTreeMap;

const DB: &str = "reference_e2e";
/// Where a recipe runs: as a member of integration_user only, of
/// integration_admin, or as the superuser.
#[derive(Clone, Copy, Debug)]
enum As {
    User,
    Admin,
    Superuser,
}

/// The call raising `code` from `function`, beyond the generic one (a role
/// without EXECUTE calling it gets 42501).
fn recipe(function: &str, code: &str) -> Option<(As, String)> {
    let http_args = |url: &str| {
        match function {
        "http" => format!("'GET', '{url}'"),
        "http_post" | "http_put" | "http_patch" => format!("'{url}', 'x'::text"),
        "http_post_form" | "http_post_multipart" => format!("'{url}', '{{}}'"),
        "http_post_multipart_arrays" => format!(
            "'{url}', '{{}}'::jsonb, '{{}}'::text[], '{{}}'::text[], '{{}}'::text[], '{{}}'::bytea[], '{{}}'::jsonb, '30 s'::interval"
        ),
        _ => format!("'{url}'"),
    }
    };
    let sql = match (function, code) {
        ("create_api_key", "22023") => "SELECT integration.create_api_key('', 'app_user')".into(),
        ("authenticate", "28000") => "SELECT integration.authenticate('pgik_1_nope')".into(),
        ("sign_jwt", "22023") => "SELECT integration.sign_jwt('{}', 'k', 'XX256')".into(),
        ("verify_jwt", "22023") => {
            "SELECT integration.verify_jwt('a.b.c', 'k', NULL, NULL, -1, true)".into()
        }
        ("verify_jwt", "28000") => "SELECT integration.verify_jwt('a.b.c', 'k')".into(),
        (f, "22023") if f.starts_with("http_") && f != "http_enqueue" || f == "http" => {
            format!("SELECT integration.{f}({})", http_args("not a url"))
        }
        (f, "42501") if f.starts_with("http_") && f != "http_enqueue" || f == "http" => {
            format!("SELECT integration.{f}({})", http_args("http://127.0.0.1:9/"))
        }
        ("http_enqueue", "22023") => "SELECT integration.http_enqueue('GET', 'not a url')".into(),
        ("http_enqueue", "42501") => {
            "SELECT integration.http_enqueue('GET', 'http://127.0.0.1:9/')".into()
        }
        ("http_enqueue", "53400") => {
            return Some((
                As::Superuser,
                "SET LOCAL integration.http_allowed_networks = '127.0.0.1/32';
                 SET LOCAL integration.http_queue_role_max_requests = 1;
                 SELECT integration.http_enqueue('GET', 'http://127.0.0.1:9/');
                 SELECT integration.http_enqueue('GET', 'http://127.0.0.1:9/')"
                    .into(),
            ))
        }
        ("http_result", "P0002") => "SELECT integration.http_result(-1)".into(),
        ("create_webhook", "23514") => "SELECT integration.create_webhook('w', 'bogus')".into(),
        ("create_webhook", "42710") => "SELECT integration.create_webhook('existing', 'none')".into(),
        ("alter_webhook", "23514") => {
            "SELECT integration.alter_webhook('existing', max_body_bytes => -1)".into()
        }
        ("alter_webhook" | "rotate_webhook_secret" | "drop_old_webhook_secrets", "42704") => {
            format!("SELECT integration.{function}('nope')")
        }
        ("create_sso_provider", "22023") => {
            "SELECT integration.create_sso_provider('p', 'saml', '{}', default_role => 'app_user')"
                .into()
        }
        ("create_sso_provider", "42710") => format!(
            "SELECT integration.create_sso_provider('dir', 'ldap', {LDAP}, default_role => 'app_user')"
        ),
        ("alter_sso_provider", "22023") => {
            "SELECT integration.alter_sso_provider('dir', role_mapping => '5')".into()
        }
        ("alter_sso_provider", "42704") => {
            format!("SELECT integration.{function}('nope')")
        }
        ("add_data_source", "22023") => {
            "SELECT integration.add_data_source('x', 'bogus://host/db')".into()
        }
        _ => return None,
    };
    Some((As::Admin, sql))
}

/// An LDAP provider's configuration (never contacted here).
const LDAP: &str = "jsonb_build_object('url', 'ldap://127.0.0.1:9', 'bind_dn', 'cn=r,dc=x',
     'bind_password', 'ldap-password', 'search_base', 'dc=x', 'search_filter', '(uid={username})')";

/// The SQLSTATE `sql` fails with as `client`, in a transaction rolled back after.
fn raised(client: &mut postgres::Client, sql: &str) -> Result<String, String> {
    let mut tx = client.transaction().expect("begin");
    match tx.batch_execute(sql) {
        Ok(()) => Err("it succeeded".into()),
        Err(e) => e
            .as_db_error()
            .map(|d| d.code().code().to_owned())
            .ok_or_else(|| format!("not a server error: {e}")),
    }
}

#[test]
fn every_listed_object_is_described_and_every_listed_sqlstate_is_raised() {
    let cluster = PgCluster::start();
    let mut postgres = cluster.create_database(DB);
    postgres
        .batch_execute(&format!(
            "CREATE ROLE app_user;
             CREATE ROLE ref_user LOGIN IN ROLE integration_user;
             CREATE ROLE ref_admin LOGIN IN ROLE integration_admin, app_user;
             SELECT integration.create_webhook('existing', 'none');
             SELECT integration.create_sso_provider('dir', 'ldap', {LDAP}, default_role => 'app_user');"
        ))
        .expect("setup");
    let rows = postgres
        .query(
            "SELECT kind, name, coalesce(signature, ''), coalesce(description, ''),
                    coalesce(capability, ''), sqlstates
             FROM integration.api_reference",
            &[],
        )
        .expect("read the reference");
    assert!(rows.len() > 70, "only {} entries", rows.len());

    // What may be called or read, straight from the catalogs.
    let granted: Vec<String> = postgres
        .query(
            "SELECT DISTINCT 'integration.' || proname FROM pg_proc
             WHERE pronamespace = 'integration'::regnamespace
               AND (has_function_privilege('integration_user', oid, 'EXECUTE')
                    OR has_function_privilege('integration_admin', oid, 'EXECUTE'))
             UNION
             SELECT 'integration.' || relname FROM pg_class
             WHERE relnamespace = 'integration'::regnamespace AND relkind IN ('r', 'v')
               AND (has_table_privilege('integration_user', oid, 'SELECT')
                    OR has_table_privilege('integration_admin', oid, 'SELECT'))
             ORDER BY 1",
            &[],
        )
        .expect("the granted objects")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut listed: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, String>(0) != "setting")
        .map(|r| r.get(1))
        .collect();
    listed.dedup();
    assert_eq!(listed.len(), {
        let mut unique = listed.clone();
        unique.sort();
        unique.dedup();
        unique.len()
    });
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, granted);

    let mut codes: BTreeMap<(String, String), ()> = BTreeMap::new();
    for row in &rows {
        let (kind, name, signature, description, capability): (
            String,
            String,
            String,
            String,
            String,
        ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        assert!(
            description.trim().len() > 15,
            "{kind} {name} {signature} has no description"
        );
        assert!(!capability.is_empty(), "{kind} {name} has no capability");
        if kind == "function" {
            assert!(signature.contains('('), "{name}: {signature}");
        }
        for code in row.get::<_, Vec<String>>(5) {
            codes.insert(
                (name.trim_start_matches("integration.").to_owned(), code),
                (),
            );
        }
    }
    assert!(
        rows.iter().any(|r| r.get::<_, String>(0) == "setting"),
        "no setting listed"
    );

    let mut user = cluster.connect_as(DB, "ref_user");
    let mut admin = cluster.connect_as(DB, "ref_admin");
    let mut failures = Vec::new();
    for (function, code) in codes.keys() {
        let (who, sql) = match recipe(function, code) {
            Some(recipe) => recipe,
            None if code == "42501" => {
                // A role without EXECUTE: refused before any argument is
                // read. The arguments are subqueries, not constants: a
                // strict function of a NULL constant is folded to NULL
                // before the privilege check.
                let args: String = postgres
                    .query_one(
                        "SELECT coalesce(string_agg(
                                    '(SELECT NULL::' || format_type(t, NULL) || ')', ', '), '')
                         FROM (SELECT proargtypes FROM pg_proc
                               WHERE proname = $1 AND pronamespace = 'integration'::regnamespace
                               ORDER BY pronargs LIMIT 1) p, unnest(p.proargtypes) t",
                        &[function],
                    )
                    .expect("the function's arguments")
                    .get(0);
                (As::User, format!("SELECT integration.{function}({args})"))
            }
            None => {
                failures.push(format!("{function} lists {code} without a recipe here"));
                continue;
            }
        };
        let client = match who {
            As::User => &mut user,
            As::Admin => &mut admin,
            As::Superuser => &mut postgres,
        };
        match raised(client, &sql) {
            Ok(got) if got == *code => {}
            Ok(got) => failures.push(format!("{function} {code}: {sql} raised {got}")),
            Err(why) => failures.push(format!("{function} {code}: {sql}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{} SQLSTATEs of {} entries raised", codes.len(), rows.len());
}
