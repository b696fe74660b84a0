//! IMPORT FOREIGN SCHEMA for `postgres_wrapper`: reads the remote catalog
//! and writes one CREATE FOREIGN TABLE per table, with the local types of
//! `integration_core::sql_dialect::postgres_local_type` and the real primary
//! key as rowid (a composite key through the `__rowid` column). A table
//! without a primary key is imported read-only, with a NOTICE.

use super::connection;
use super::postgres_wrapper::COMPOSITE_ROWID;
use super::{PostgresWrapperError, Result};
use integration_core::sql_dialect::{postgres_local_type, quote_ident, quote_literal, Dialect};
use std::collections::BTreeMap;
use supabase_wrappers::prelude::{ImportForeignSchemaStmt, ImportSchemaType};
use tokio_postgres::Client;

const CATALOG: &str = "
    SELECT c.relname::text, a.attname::text,
           pg_catalog.format_type(a.atttypid, a.atttypmod),
           tn.nspname = 'pg_catalog', t.typtype::text, a.attnotnull,
           coalesce((SELECT k.ord
                     FROM pg_catalog.pg_index i,
                          unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                     WHERE i.indrelid = c.oid AND i.indisprimary AND k.attnum = a.attnum), 0)::int4
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
    JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
    WHERE n.nspname = $1 AND c.relkind IN ('r', 'v', 'f', 'm', 'p')
    ORDER BY c.relname, a.attnum";

struct RemoteColumn {
    name: String,
    local_type: String,
    not_null: bool,
    /// 1-based position in the primary key, 0 when not part of it.
    key_position: i32,
}

fn q(name: &str) -> Result<String> {
    quote_ident(Dialect::Postgres, name)
        .map_err(|e| PostgresWrapperError::Value(format!("{e}: {name:?}")))
}

fn lit(value: &str) -> Result<String> {
    quote_literal(Dialect::Postgres, value).map_err(|e| PostgresWrapperError::Value(e.to_string()))
}

pub fn import(
    client: &Client,
    server: &str,
    stmt: &ImportForeignSchemaStmt,
) -> Result<Vec<String>> {
    let rt = connection::runtime()?;
    let rows = rt
        .block_on(client.query(CATALOG, &[&stmt.remote_schema]))
        .map_err(|e| PostgresWrapperError::remote(server, e))?;
    let mut tables: BTreeMap<String, Vec<RemoteColumn>> = BTreeMap::new();
    for row in rows {
        let table: String = row.get(0);
        let in_pg_catalog: bool = row.get(3);
        let typtype: String = row.get(4);
        let local = postgres_local_type(
            row.get::<_, String>(2).as_str(),
            in_pg_catalog,
            typtype.chars().next().unwrap_or('b'),
        );
        tables.entry(table).or_default().push(RemoteColumn {
            name: row.get(1),
            local_type: local.sql,
            not_null: row.get(5),
            key_position: row.get(6),
        });
    }
    let wanted = |name: &str| match stmt.list_type {
        ImportSchemaType::FdwImportSchemaAll => true,
        ImportSchemaType::FdwImportSchemaLimitTo => stmt.table_list.iter().any(|t| t == name),
        ImportSchemaType::FdwImportSchemaExcept => !stmt.table_list.iter().any(|t| t == name),
    };
    let mut out = Vec::new();
    for (table, columns) in tables.into_iter().filter(|(t, _)| wanted(t)) {
        let mut key: Vec<&RemoteColumn> = columns.iter().filter(|c| c.key_position > 0).collect();
        key.sort_by_key(|c| c.key_position);
        let mut defs = columns
            .iter()
            .map(|c| {
                Ok(format!(
                    "{} {}{}",
                    q(&c.name)?,
                    c.local_type,
                    if c.not_null { " NOT NULL" } else { "" }
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut options = vec![
            format!("schema_name {}", lit(&stmt.remote_schema)?),
            format!("table_name {}", lit(&table)?),
        ];
        match key.len() {
            0 => {
                pgrx::notice!(
                    "postgres_wrapper: remote table {}.{} has no primary key; it is imported read-only",
                    q(&stmt.remote_schema)?,
                    q(&table)?
                );
            }
            1 => options.push(format!("rowid_column {}", lit(&key[0].name)?)),
            _ => {
                if columns.iter().any(|c| c.name == COMPOSITE_ROWID) {
                    return Err(PostgresWrapperError::Unsupported(format!(
                        "remote table {table:?} has a column named {COMPOSITE_ROWID}, which the composite key needs"
                    )));
                }
                defs.push(format!("{} text", q(COMPOSITE_ROWID)?));
                let names: Vec<&str> = key.iter().map(|c| c.name.as_str()).collect();
                let json = serde_json::to_string(&names)
                    .map_err(|e| PostgresWrapperError::Value(e.to_string()))?;
                options.push(format!("rowid_column {}", lit(COMPOSITE_ROWID)?));
                options.push(format!("primary_key {}", lit(&json)?));
            }
        }
        out.push(format!(
            "CREATE FOREIGN TABLE {} ({}) SERVER {} OPTIONS ({})",
            q(&table)?,
            defs.join(", "),
            q(&stmt.server_name)?,
            options.join(", ")
        ));
    }
    Ok(out)
}
