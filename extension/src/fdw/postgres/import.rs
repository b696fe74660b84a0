//! IMPORT FOREIGN SCHEMA for `postgres_wrapper`: reads the remote catalog
//! (columns, `format_type`, NOT NULL, primary-key positions) and hands each
//! table, with the local types of `sql_dialect::postgres_local_type`, to
//! `crate::fdw::import`.

use super::connection;
use super::{PostgresWrapperError, Result};
use crate::fdw::import::{create_foreign_table, wanted, ImportedColumn};
use integration_core::sql_dialect::postgres_local_type;
use std::collections::BTreeMap;
use supabase_wrappers::prelude::ImportForeignSchemaStmt;
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

/// A remote table's columns and its key columns with their positions.
type Table = (Vec<ImportedColumn>, Vec<(i32, String)>);

pub fn import(
    client: &Client,
    server: &str,
    stmt: &ImportForeignSchemaStmt,
) -> Result<Vec<String>> {
    let rt = connection::runtime()?;
    let rows = rt
        .block_on(client.query(CATALOG, &[&stmt.remote_schema]))
        .map_err(|e| PostgresWrapperError::remote(server, e))?;
    let mut tables: BTreeMap<String, Table> = BTreeMap::new();
    for row in rows {
        let table: String = row.get(0);
        let name: String = row.get(1);
        let typtype: String = row.get(4);
        let local = postgres_local_type(
            row.get::<_, String>(2).as_str(),
            row.get(3),
            typtype.chars().next().unwrap_or('b'),
        );
        let key_position: i32 = row.get(6);
        let entry = tables.entry(table).or_default();
        if key_position > 0 {
            entry.1.push((key_position, name.clone()));
        }
        entry.0.push(ImportedColumn {
            name,
            local_type: local.sql,
            not_null: row.get(5),
        });
    }
    let mut out = Vec::new();
    for (table, (columns, mut key)) in tables.into_iter().filter(|(t, _)| wanted(stmt, t)) {
        key.sort();
        let key: Vec<String> = key.into_iter().map(|(_, name)| name).collect();
        let location = [
            ("schema_name", stmt.remote_schema.as_str()),
            ("table_name", table.as_str()),
        ];
        out.push(create_foreign_table(
            "postgres_wrapper",
            stmt,
            &table,
            &columns,
            &key,
            &location,
        )?);
    }
    Ok(out)
}
