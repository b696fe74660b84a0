//! Remote SQL for `postgres_wrapper`: values as literals quoted by
//! `integration_core::sql_dialect`, WHERE conditions the remote evaluates
//! exactly as the local server would, ORDER BY keys. A condition that is not
//! rendered here stays with the local server, which rechecks every condition
//! anyway, so results never depend on what was pushed.

use super::decode;
use super::{PostgresWrapperError, Result};
use crate::fdw::statements::RemoteSql;
use integration_core::sql_dialect::{bytes_literal, quote_ident, quote_literal, Dialect};
use pgrx::datum::ToIsoString;
use pgrx::pg_sys;
use supabase_wrappers::prelude::{Aggregate, AggregateKind, Cell, Column, Qual, Sort, Value};

const D: Dialect = Dialect::Postgres;

pub fn ident(name: &str) -> Result<String> {
    quote_ident(D, name).map_err(|e| PostgresWrapperError::Value(format!("{e}: {name:?}")))
}

pub fn literal(text: &str) -> Result<String> {
    quote_literal(D, text).map_err(|e| PostgresWrapperError::Value(e.to_string()))
}

fn float_literal(v: f64) -> String {
    if v.is_finite() {
        // Rust prints the shortest text that reads back as the same float.
        format!("{v:?}")
    } else if v.is_nan() {
        "'NaN'".into()
    } else if v > 0.0 {
        "'Infinity'".into()
    } else {
        "'-Infinity'".into()
    }
}

/// A value as a remote literal. Untyped quoted literals take the type of
/// the column they meet (INSERT, SET, comparison), as they would locally.
pub fn cell_literal(cell: &Cell) -> Result<String> {
    Ok(match cell {
        Cell::Bool(v) => v.to_string(),
        Cell::I8(v) => v.to_string(),
        Cell::I16(v) => v.to_string(),
        Cell::I32(v) => v.to_string(),
        Cell::I64(v) => v.to_string(),
        Cell::F32(v) => float_literal(*v as f64),
        Cell::F64(v) => float_literal(*v),
        Cell::Numeric(v) => literal(&v.to_string())?,
        Cell::String(v) => literal(v)?,
        Cell::Date(v) => literal(&v.to_iso_string())?,
        Cell::Time(v) => literal(&v.to_iso_string())?,
        Cell::Timestamp(v) => literal(&v.to_iso_string())?,
        Cell::Timestamptz(v) => literal(&v.to_iso_string())?,
        Cell::Interval(v) => format!(
            "'{} months {} days {} microseconds'::interval",
            v.months(),
            v.days(),
            v.micros()
        ),
        Cell::Json(v) => format!(
            "{}::jsonb",
            literal(
                &serde_json::to_string(&v.0)
                    .map_err(|e| PostgresWrapperError::Value(e.to_string()))?
            )?
        ),
        Cell::Bytea(v) => {
            // SAFETY: the framework hands a detoasted bytea of the current row.
            let bytes = unsafe { pgrx::varlena::varlena_to_byte_slice(*v) };
            bytes_literal(D, bytes)
        }
        Cell::Uuid(v) => format!("{}::uuid", literal(&v.to_string())?),
        other => {
            return Err(PostgresWrapperError::Unsupported(format!(
                "value {other:?} cannot be sent to the remote server"
            )))
        }
    })
}

/// A value as the JSON that `json_populate_recordset` reads back as the
/// remote column's type: text forms, JSON numbers only where exact.
fn json_value(cell: &Cell) -> Result<serde_json::Value> {
    use serde_json::Value as Json;
    let float = |v: f64| match serde_json::Number::from_f64(v) {
        Some(n) => Json::Number(n),
        None if v.is_nan() => Json::String("NaN".into()),
        None if v > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    };
    Ok(match cell {
        Cell::Bool(v) => Json::Bool(*v),
        Cell::I8(v) => Json::from(*v),
        Cell::I16(v) => Json::from(*v),
        Cell::I32(v) => Json::from(*v),
        Cell::I64(v) => Json::from(*v),
        Cell::F32(v) => float(*v as f64),
        Cell::F64(v) => float(*v),
        Cell::Numeric(v) => Json::String(v.to_string()),
        Cell::String(v) => Json::String(v.clone()),
        Cell::Date(v) => Json::String(v.to_iso_string()),
        Cell::Time(v) => Json::String(v.to_iso_string()),
        Cell::Timestamp(v) => Json::String(v.to_iso_string()),
        Cell::Timestamptz(v) => Json::String(v.to_iso_string()),
        Cell::Interval(v) => Json::String(format!(
            "{} months {} days {} microseconds",
            v.months(),
            v.days(),
            v.micros()
        )),
        Cell::Json(v) => v.0.clone(),
        Cell::Bytea(v) => {
            // SAFETY: the framework hands a detoasted bytea of the current row.
            let bytes = unsafe { pgrx::varlena::varlena_to_byte_slice(*v) };
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            Json::String(format!("\\x{hex}"))
        }
        Cell::Uuid(v) => Json::String(v.to_string()),
        other => {
            return Err(PostgresWrapperError::Unsupported(format!(
                "value {other:?} cannot be sent to the remote server"
            )))
        }
    })
}

/// The PostgreSQL dialect of the shared statements.
pub struct Postgres;

fn info(c: &Column) -> ColumnInfo<'_> {
    ColumnInfo {
        name: &c.name,
        as_text: decode::reads_as_text(c.type_oid),
        collatable: matches!(
            c.type_oid,
            pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID
        ),
    }
}

impl RemoteSql for Postgres {
    type Error = PostgresWrapperError;
    fn ident(name: &str) -> Result<String> {
        ident(name)
    }
    fn literal(text: &str) -> Result<String> {
        literal(text)
    }
    fn cell_literal(cell: &Cell) -> Result<String> {
        cell_literal(cell)
    }
    fn select_expr(col: &Column, _not_null: bool) -> Result<String> {
        column_expr(&info(col))
    }
    fn composite_key_expr(quoted_key: &[String]) -> String {
        let parts: Vec<String> = quoted_key.iter().map(|k| format!("{k}::text")).collect();
        format!("json_build_array({})::text", parts.join(", "))
    }
    fn qual(q: &Qual, col: &Column, _not_null: bool) -> Option<String> {
        qual(q, &info(col))
    }
    fn sort_key(s: &Sort, col: &Column, _not_null: bool) -> Option<String> {
        sort_key(s, &info(col))
    }
    /// The same aggregate: the remote is PostgreSQL, its result types those
    /// of the local aggregate over the same column types.
    fn aggregate(agg: &Aggregate, arg: Option<&str>) -> Vec<String> {
        let name = match agg.kind {
            AggregateKind::Count | AggregateKind::CountColumn => "count",
            AggregateKind::Sum => "sum",
            AggregateKind::Avg => "avg",
            AggregateKind::Min => "min",
            AggregateKind::Max => "max",
        };
        vec![format!("{name}({})", arg.unwrap_or("*"))]
    }
    /// A JSON object of the row: see [`RemoteSql::insert_rows`].
    fn insert_row(names: &[&str], cells: &[&Option<Cell>]) -> Result<String> {
        let mut row = serde_json::Map::with_capacity(names.len());
        for (name, cell) in names.iter().zip(cells) {
            let value = match cell {
                Some(cell) => json_value(cell)?,
                None => serde_json::Value::Null,
            };
            row.insert(name.to_string(), value);
        }
        serde_json::to_string(&row).map_err(|e| PostgresWrapperError::Value(e.to_string()))
    }
    /// `INSERT … SELECT … FROM json_populate_recordset(NULL::table, rows)`:
    /// the remote reads each value with its own column type's input
    /// function (enums, domains, arrays read like literals would), and
    /// parses one constant instead of one per value (a 1 000-row VALUES
    /// list parses 2.8× slower).
    fn insert_rows(table: &str, quoted: &[String], rows: &[String]) -> Result<String> {
        let columns = quoted.join(", ");
        Ok(format!(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM \
             pg_catalog.json_populate_recordset(NULL::{table}, {}::pg_catalog.json)",
            literal(&format!("[{}]", rows.join(",")))?
        ))
    }
}

/// What the wrapper knows of a local column when it renders conditions.
pub struct ColumnInfo<'a> {
    pub name: &'a str,
    /// Read through the remote `::text` output (enums, inet, arrays, …):
    /// conditions compare the remote text, as the local side does.
    pub as_text: bool,
    /// A text column: its order depends on the collation, so range
    /// comparisons and ORDER BY … LIMIT are not pushed.
    pub collatable: bool,
}

/// The remote form of a column in a SELECT list or a condition.
pub fn column_expr(col: &ColumnInfo<'_>) -> Result<String> {
    let quoted = ident(col.name)?;
    Ok(if col.as_text {
        format!("{quoted}::text")
    } else {
        quoted
    })
}

/// One condition as remote SQL, or None when it must stay local.
pub fn qual(q: &Qual, col: &ColumnInfo<'_>) -> Option<String> {
    let expr = column_expr(col).ok()?;
    let op = match q.operator.as_str() {
        op @ ("=" | "<>") => op,
        op @ ("<" | "<=" | ">" | ">=") if !col.collatable => op,
        "~~" => "LIKE",
        "!~~" => "NOT LIKE",
        "~~*" => "ILIKE",
        "!~~*" => "NOT ILIKE",
        "is" | "is not" => {
            let op = if q.operator == "is" { "IS" } else { "IS NOT" };
            return match &q.value {
                Value::Cell(Cell::String(s)) if s == "null" => Some(format!("{expr} {op} NULL")),
                Value::Cell(Cell::Bool(b)) => Some(format!("{expr} {op} {b}")),
                _ => None,
            };
        }
        _ => return None,
    };
    match &q.value {
        Value::Cell(cell) if !q.use_or => Some(format!("{expr} {op} {}", cell_literal(cell).ok()?)),
        Value::Array(cells) if q.use_or && op == "=" => {
            if cells.is_empty() {
                return None;
            }
            let items = cells
                .iter()
                .map(cell_literal)
                .collect::<Result<Vec<_>>>()
                .ok()?;
            Some(format!("{expr} IN ({})", items.join(", ")))
        }
        Value::Array(cells) if q.use_or => {
            let items = cells
                .iter()
                .map(|c| cell_literal(c).map(|l| format!("{expr} {op} {l}")))
                .collect::<Result<Vec<_>>>()
                .ok()?;
            (!items.is_empty()).then(|| format!("({})", items.join(" OR ")))
        }
        _ => None,
    }
}

/// One ORDER BY key, or None when the remote order could differ.
pub fn sort_key(s: &Sort, col: &ColumnInfo<'_>) -> Option<String> {
    if col.collatable || col.as_text || s.collate.is_some() {
        return None;
    }
    Some(format!(
        "{} {} NULLS {}",
        ident(col.name).ok()?,
        if s.reversed { "DESC" } else { "ASC" },
        if s.nulls_first { "FIRST" } else { "LAST" }
    ))
}
