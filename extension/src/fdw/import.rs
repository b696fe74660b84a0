//! The local side of IMPORT FOREIGN SCHEMA, shared by the wrappers: which
//! tables the statement wants, and the CREATE FOREIGN TABLE for each, with
//! the real primary key as rowid (a composite key through `__rowid`) and a
//! NOTICE for a table without one, which stays read-only.

use crate::fdw::statements::{Problem, COMPOSITE_ROWID};
use integration_core::sql_dialect::{quote_ident, quote_literal, Dialect};
use supabase_wrappers::prelude::{ImportForeignSchemaStmt, ImportSchemaType};

pub struct ImportedColumn {
    pub name: String,
    pub local_type: String,
    pub not_null: bool,
}

fn q(name: &str) -> Result<String, Problem> {
    quote_ident(Dialect::Postgres, name).map_err(|e| Problem::Value(format!("{e}: {name:?}")))
}

fn lit(value: &str) -> Result<String, Problem> {
    quote_literal(Dialect::Postgres, value).map_err(|e| Problem::Value(e.to_string()))
}

/// True when LIMIT TO / EXCEPT lets `table` in.
pub fn wanted(stmt: &ImportForeignSchemaStmt, table: &str) -> bool {
    let listed = stmt.table_list.iter().any(|t| t == table);
    match stmt.list_type {
        ImportSchemaType::FdwImportSchemaAll => true,
        ImportSchemaType::FdwImportSchemaLimitTo => listed,
        ImportSchemaType::FdwImportSchemaExcept => !listed,
    }
}

/// The CREATE FOREIGN TABLE of one remote table. `location` holds the
/// options that find it remotely (schema or database, table name).
pub fn create_foreign_table(
    wrapper: &str,
    stmt: &ImportForeignSchemaStmt,
    table: &str,
    columns: &[ImportedColumn],
    key: &[String],
    location: &[(&str, &str)],
) -> Result<String, Problem> {
    let mut defs = columns
        .iter()
        .map(|c| {
            let not_null = if c.not_null { " NOT NULL" } else { "" };
            Ok(format!("{} {}{not_null}", q(&c.name)?, c.local_type))
        })
        .collect::<Result<Vec<_>, Problem>>()?;
    let mut options = location
        .iter()
        .map(|(name, value)| Ok(format!("{name} {}", lit(value)?)))
        .collect::<Result<Vec<_>, Problem>>()?;
    match key {
        [] => pgrx::notice!(
            "{wrapper}: remote table {}.{} has no primary key; it is imported read-only",
            q(&stmt.remote_schema)?,
            q(table)?
        ),
        [single] => options.push(format!("rowid_column {}", lit(single)?)),
        _ => {
            if columns.iter().any(|c| c.name == COMPOSITE_ROWID) {
                return Err(Problem::Value(format!(
                    "remote table {table:?} has a column named {COMPOSITE_ROWID}, which its composite key needs"
                )));
            }
            defs.push(format!("{} text", q(COMPOSITE_ROWID)?));
            let json = serde_json::to_string(key).map_err(|e| Problem::Value(e.to_string()))?;
            options.push(format!("rowid_column {}", lit(COMPOSITE_ROWID)?));
            options.push(format!("primary_key {}", lit(&json)?));
        }
    }
    Ok(format!(
        "CREATE FOREIGN TABLE {} ({}) SERVER {} OPTIONS ({})",
        q(table)?,
        defs.join(", "),
        q(&stmt.server_name)?,
        options.join(", ")
    ))
}
