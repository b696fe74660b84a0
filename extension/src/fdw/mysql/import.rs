//! IMPORT FOREIGN SCHEMA for `mysql_wrapper`: reads information_schema
//! (columns, primary-key columns, and MariaDB's `json_valid` checks, which
//! mark its JSON columns) and hands each table, with the local types of
//! `sql_dialect::mysql_local_type`, to `crate::fdw::import`.

use super::deparse::literal as my_literal;
use super::Result;
use crate::fdw::import::{create_foreign_table, wanted, ImportedColumn};
use integration_core::sql_dialect::{mysql_local_type, MySqlColumn};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::collections::{BTreeMap, HashSet};
use supabase_wrappers::prelude::ImportForeignSchemaStmt;

type Rows = Vec<(String, String, String, String, String)>;
type Pairs = Vec<(String, String)>;

/// What information_schema says: columns, primary-key columns, checks.
pub struct Catalog {
    columns: Rows,
    keys: Pairs,
    checks: Pairs,
}

pub async fn read_catalog(
    conn: &mut Conn,
    schema_literal: &str,
) -> std::result::Result<Catalog, mysql_async::Error> {
    let columns: Rows = conn
        .query(format!(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {schema_literal}
             ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ))
        .await?;
    let keys: Pairs = conn
        .query(format!(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
             WHERE TABLE_SCHEMA = {schema_literal} AND CONSTRAINT_NAME = 'PRIMARY'
             ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ))
        .await?;
    // MariaDB stores JSON as longtext with CHECK (json_valid(`col`)).
    // MySQL has no such view before 8.0.16; its JSON is a real type.
    let checks: Pairs = conn
        .query(format!(
            "SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
             WHERE CONSTRAINT_SCHEMA = {schema_literal}"
        ))
        .await
        .unwrap_or_default();
    Ok(Catalog {
        columns,
        keys,
        checks,
    })
}

pub fn statements(stmt: &ImportForeignSchemaStmt, catalog: Catalog) -> Result<Vec<String>> {
    let Catalog {
        columns,
        keys,
        checks,
    } = catalog;
    let json_columns: HashSet<(String, String)> = checks
        .into_iter()
        .filter_map(|(table, clause)| {
            let inner = clause
                .trim()
                .strip_prefix("json_valid(`")?
                .strip_suffix("`)")?;
            Some((table, inner.replace("``", "`")))
        })
        .collect();
    let mut tables: BTreeMap<String, Vec<ImportedColumn>> = BTreeMap::new();
    for (table, name, data_type, column_type, nullable) in columns {
        let is_json = json_columns.contains(&(table.clone(), name.clone()));
        let local = mysql_local_type(&MySqlColumn {
            data_type: &data_type,
            column_type: &column_type,
            is_json,
        });
        tables.entry(table).or_default().push(ImportedColumn {
            name,
            local_type: local.sql,
            not_null: nullable == "NO",
        });
    }
    let mut key_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, column) in keys {
        key_of.entry(table).or_default().push(column);
    }
    let mut out = Vec::new();
    for (table, columns) in tables.into_iter().filter(|(t, _)| wanted(stmt, t)) {
        let key = key_of.remove(&table).unwrap_or_default();
        let location = [
            ("dbname", stmt.remote_schema.as_str()),
            ("table_name", table.as_str()),
        ];
        out.push(create_foreign_table(
            "mysql_wrapper",
            stmt,
            &table,
            &columns,
            &key,
            &location,
        )?);
    }
    Ok(out)
}

/// The schema name as a MySQL literal.
pub fn schema_literal(schema: &str) -> Result<String> {
    my_literal(schema)
}
