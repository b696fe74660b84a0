//! IMPORT FOREIGN SCHEMA for `mysql_wrapper`: reads information_schema and
//! writes one CREATE FOREIGN TABLE per table, with the local types of
//! `integration_core::sql_dialect::mysql_local_type` (MariaDB's JSON, a
//! longtext with a `json_valid` check, becomes jsonb) and the real primary
//! key as rowid (a composite key through the `__rowid` column). A table
//! without a primary key is imported read-only, with a NOTICE.

use super::deparse::literal as my_literal;
use super::mysql_wrapper::COMPOSITE_ROWID;
use super::{MysqlWrapperError, Result};
use integration_core::sql_dialect::{
    mysql_local_type, quote_ident, quote_literal, Dialect, MySqlColumn,
};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use std::collections::{BTreeMap, HashSet};
use supabase_wrappers::prelude::{ImportForeignSchemaStmt, ImportSchemaType};

struct RemoteColumn {
    name: String,
    local_type: String,
    not_null: bool,
}

fn q(name: &str) -> Result<String> {
    quote_ident(Dialect::Postgres, name)
        .map_err(|e| MysqlWrapperError::Value(format!("{e}: {name:?}")))
}

fn lit(value: &str) -> Result<String> {
    quote_literal(Dialect::Postgres, value).map_err(|e| MysqlWrapperError::Value(e.to_string()))
}

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
    let mut tables: BTreeMap<String, Vec<RemoteColumn>> = BTreeMap::new();
    for (table, name, data_type, column_type, nullable) in columns {
        let is_json = json_columns.contains(&(table.clone(), name.clone()));
        let local = mysql_local_type(&MySqlColumn {
            data_type: &data_type,
            column_type: &column_type,
            is_json,
        });
        tables.entry(table).or_default().push(RemoteColumn {
            name,
            local_type: local.sql,
            not_null: nullable == "NO",
        });
    }
    let mut key_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (table, column) in keys {
        key_of.entry(table).or_default().push(column);
    }
    let wanted = |name: &str| match stmt.list_type {
        ImportSchemaType::FdwImportSchemaAll => true,
        ImportSchemaType::FdwImportSchemaLimitTo => stmt.table_list.iter().any(|t| t == name),
        ImportSchemaType::FdwImportSchemaExcept => !stmt.table_list.iter().any(|t| t == name),
    };
    let mut out = Vec::new();
    for (table, columns) in tables.into_iter().filter(|(t, _)| wanted(t)) {
        let key = key_of.remove(&table).unwrap_or_default();
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
            format!("dbname {}", lit(&stmt.remote_schema)?),
            format!("table_name {}", lit(&table)?),
        ];
        match key.len() {
            0 => pgrx::notice!(
                "mysql_wrapper: remote table {}.{} has no primary key; it is imported read-only",
                q(&stmt.remote_schema)?,
                q(&table)?
            ),
            1 => options.push(format!("rowid_column {}", lit(&key[0])?)),
            _ => {
                if columns.iter().any(|c| c.name == COMPOSITE_ROWID) {
                    return Err(MysqlWrapperError::Unsupported(format!(
                        "remote table {table:?} has a column named {COMPOSITE_ROWID}, which the composite key needs"
                    )));
                }
                defs.push(format!("{} text", q(COMPOSITE_ROWID)?));
                let json = serde_json::to_string(&key)
                    .map_err(|e| MysqlWrapperError::Value(e.to_string()))?;
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

/// The schema name as a MySQL literal.
pub fn schema_literal(schema: &str) -> Result<String> {
    my_literal(schema)
}
