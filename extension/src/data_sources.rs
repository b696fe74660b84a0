//! The data-source functions around the wrappers: `add_data_source` (server,
//! user mapping, local schema and import in one call), `test_data_source`
//! (reachability and version) and `query` (a pass-through statement with
//! bound parameters). Admin-only: EXECUTE goes to integration_admin, and the
//! current user (the invoker, not the session user) must be a member. Every
//! statement runs with the invoker's rights; the password is written only
//! into the user mapping and never into errors or the audit log.

use crate::errors::{self, raise};
use crate::fdw::{mysql, postgres};
use crate::owner::{as_owner, current_user_name};
use integration_core::data_sources::{parse_source_url, Engine};
use integration_core::sql_dialect::{quote_ident, quote_literal, Dialect};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;
use std::ffi::{CStr, CString};
use std::time::Instant;
use supabase_wrappers::prelude::ForeignServer;

fn ident(name: &str) -> String {
    quote_ident(Dialect::Postgres, name).unwrap_or_else(|e| invalid(&format!("{e}: {name:?}")))
}

fn literal(value: &str) -> String {
    quote_literal(Dialect::Postgres, value).unwrap_or_else(|e| invalid(&e.to_string()))
}

fn invalid(message: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        None,
    )
}

fn fail(e: impl Into<ErrorReport>) -> ! {
    e.into().report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// The current user must be a member of integration_admin (or superuser).
fn require_admin() {
    let member = Spi::get_one::<bool>(
        "SELECT pg_catalog.pg_has_role(CURRENT_USER, 'integration_admin', 'MEMBER')",
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    // SAFETY: reads the current user's superuser flag.
    if !member && !unsafe { pg_sys::superuser() } {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "permission denied: data sources are managed by integration_admin",
            None,
        );
    }
}

/// The foreign server `name` and the wrapper it uses. The caller needs
/// USAGE on it, as dblink and postgres_fdw require (a PUBLIC user mapping
/// is no permission to use the server).
fn server(name: &str) -> (ForeignServer, String) {
    let cname = CString::new(name).unwrap_or_else(|_| invalid("the name contains a NUL byte"));
    // SAFETY: raises when the server does not exist; the structs are palloc'd.
    unsafe {
        let server = pg_sys::GetForeignServerByName(cname.as_ptr(), false);
        let usage = pg_sys::pg_foreign_server_aclcheck(
            (*server).serverid,
            pg_sys::GetUserId(),
            pg_sys::ACL_USAGE as pg_sys::AclMode,
        );
        if usage != pg_sys::AclResult::ACLCHECK_OK {
            let message = format!("permission denied for foreign server {name}");
            crate::audit::refuse("data_source.use", name, &message);
            raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                message,
                Some("GRANT USAGE ON FOREIGN SERVER to the role that queries it."),
            );
        }
        let fdw = pg_sys::GetForeignDataWrapper((*server).fdwid);
        let wrapper = CStr::from_ptr((*fdw).fdwname)
            .to_string_lossy()
            .into_owned();
        (
            crate::fdw::options::foreign_server((*server).serverid),
            wrapper,
        )
    }
}

fn option_text(options: &serde_json::Value, name: &str) -> Option<String> {
    match options.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Creates server `name`, the current user's mapping, the local schema
/// (`options.schema`, default `name`) and imports the remote schema
/// (`options.remote_schema`; PostgreSQL: `public`, MySQL: the database),
/// limited to `options.tables` when given. Returns the local schema.
#[pg_extern(volatile, parallel_unsafe)]
fn add_data_source(name: &str, url: &str, options: default!(JsonB, "'{}'")) -> String {
    errors::statement_carries_secret();
    require_admin();
    let options = options.0;
    let source = parse_source_url(url).unwrap_or_else(|e| invalid(&e.to_string()));
    let schema = option_text(&options, "schema").unwrap_or_else(|| name.to_string());
    let remote_schema =
        option_text(&options, "remote_schema").unwrap_or_else(|| match source.engine {
            Engine::Postgres => "public".into(),
            Engine::Mysql => source.dbname.clone(),
        });
    let mut server_options = vec![
        format!("host {}", literal(&source.host)),
        format!("port {}", literal(&source.port.to_string())),
        format!("dbname {}", literal(&source.dbname)),
    ];
    for (option, value) in &source.options {
        server_options.push(format!("{option} {}", literal(value)));
    }
    for name in ["fetch_size", "batch_size"]
        .iter()
        .chain(source.engine.tls_options())
    {
        if let Some(v) = option_text(&options, name) {
            server_options.push(format!("{name} {}", literal(&v)));
        }
    }
    let limit_to = match options.get("tables") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::Array(tables)) => {
            let names: Vec<String> = tables
                .iter()
                .map(|t| match t {
                    serde_json::Value::String(s) => ident(s),
                    _ => invalid("options.tables must be an array of table names"),
                })
                .collect();
            format!(" LIMIT TO ({})", names.join(", "))
        }
        Some(_) => invalid("options.tables must be an array of table names"),
    };
    Spi::run(&format!(
        "CREATE SERVER {} FOREIGN DATA WRAPPER {} OPTIONS ({})",
        ident(name),
        source.engine.wrapper(),
        server_options.join(", ")
    ))
    .unwrap_or_else(|e| invalid(&format!("create server {name:?}: {e}")));
    let mut mapping = vec![format!("user {}", literal(&source.user))];
    if let Some(password) = &source.password {
        mapping.push(format!("password {}", literal(password)));
    }
    for (option, value) in &source.mapping_options {
        mapping.push(format!("{option} {}", literal(value)));
    }
    let create_mapping = format!(
        "CREATE USER MAPPING FOR CURRENT_USER SERVER {} OPTIONS ({})",
        ident(name),
        mapping.join(", ")
    );
    // The statement holds the password: an error raised by it (a repeated
    // option, say) would quote it in its CONTEXT. Caught here, only the
    // message goes on.
    let created = crate::subxact::attempt(|| Spi::run(&create_mapping));
    match created {
        Ok(Ok(())) => {}
        Ok(Err(e)) => invalid(&format!("create the user mapping: {e}")),
        Err(message) => invalid(&format!("create the user mapping: {message}")),
    }
    Spi::run(&format!(
        "CREATE SCHEMA IF NOT EXISTS {}; IMPORT FOREIGN SCHEMA {}{limit_to} FROM SERVER {} INTO {}",
        ident(&schema),
        ident(&remote_schema),
        ident(name),
        ident(&schema)
    ))
    .unwrap_or_else(|e| invalid(&format!("import {remote_schema:?} into {schema:?}: {e}")));
    let caller = current_user_name();
    as_owner(|| {
        crate::audit::write_now(
            &caller,
            "add_data_source",
            name,
            json!({
                "wrapper": source.engine.wrapper(),
                "host": source.host,
                "port": source.port,
                "dbname": source.dbname,
                "user": source.user,
                "schema": schema,
                "remote_schema": remote_schema,
            }),
        )
    });
    schema
}

/// Connects to data source `name` as the current user and reports
/// `{reachable, version, wrapper, elapsed_ms}` or `{reachable: false, error}`.
#[pg_extern(volatile, parallel_unsafe)]
fn test_data_source(name: &str) -> JsonB {
    require_admin();
    let (server, wrapper) = server(name);
    let started = Instant::now();
    let version = match wrapper.as_str() {
        "postgres_wrapper" => postgres::pass_through::version(&server).map_err(ErrorReport::from),
        "mysql_wrapper" => mysql::pass_through::version(&server).map_err(ErrorReport::from),
        other => invalid(&format!(
            "server {name:?} uses {other}, not a pg_integration wrapper"
        )),
    };
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    JsonB(match version {
        Ok(version) => json!({
            "reachable": true,
            "wrapper": wrapper,
            "version": version,
            "elapsed_ms": elapsed_ms,
        }),
        Err(report) => json!({
            "reachable": false,
            "wrapper": wrapper,
            "error": report.message(),
            "elapsed_ms": elapsed_ms,
        }),
    })
}

/// Runs `sql` on data source `name` with `params` (a JSON array) bound to
/// its placeholders (`$1`… for PostgreSQL, `?` for MySQL), inside the
/// remote transaction of the current one; each row comes back as jsonb.
#[pg_extern(volatile, parallel_unsafe)]
fn query(name: &str, sql: &str, params: default!(JsonB, "'[]'")) -> SetOfIterator<'static, JsonB> {
    require_admin();
    let (server, wrapper) = server(name);
    let params: Vec<Option<String>> = match params.0 {
        serde_json::Value::Array(values) => values
            .into_iter()
            .map(|v| match v {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s),
                other => Some(other.to_string()),
            })
            .collect(),
        _ => invalid("params must be a JSON array"),
    };
    // Rows stream: each call of the set-returning function takes the next.
    let mut next: Box<dyn FnMut() -> Option<serde_json::Value>> = match wrapper.as_str() {
        "postgres_wrapper" => {
            let mut rows =
                postgres::pass_through::query(&server, sql, &params).unwrap_or_else(|e| fail(e));
            Box::new(move || rows.next().unwrap_or_else(|e| fail(e)))
        }
        "mysql_wrapper" => {
            let mut rows =
                mysql::pass_through::query(&server, sql, &params).unwrap_or_else(|e| fail(e));
            Box::new(move || rows.next().unwrap_or_else(|e| fail(e)))
        }
        other => invalid(&format!(
            "server {name:?} uses {other}, not a pg_integration wrapper"
        )),
    };
    SetOfIterator::new(std::iter::from_fn(move || next().map(JsonB)))
}
