//! Remote SQL for `mysql_wrapper`. Literals are quoted by
//! `integration_core::sql_dialect`, whose literals read the same under any sql_mode.
//! Only conditions MySQL evaluates exactly as PostgreSQL are pushed: numbers,
//! dates and times. Text comparisons stay local (MySQL's usual collations
//! ignore case and trailing spaces), and an ORDER BY key is pushed only
//! when MySQL puts NULLs where PostgreSQL does, or the column is NOT NULL.

use super::{MysqlWrapperError, Result};
use crate::fdw::statements::RemoteSql;
use integration_core::sql_dialect::{bytes_literal, quote_ident, quote_literal, Dialect};
use pgrx::datum::ToIsoString;
use pgrx::pg_sys;
use supabase_wrappers::prelude::{Aggregate, AggregateKind, Cell, Column, Qual, Sort, Value};

pub const D: Dialect = Dialect::MySql;

pub fn ident(name: &str) -> Result<String> {
    quote_ident(D, name).map_err(|e| MysqlWrapperError::Value(format!("{e}: {name:?}")))
}

pub fn literal(text: &str) -> Result<String> {
    quote_literal(D, text).map_err(|e| MysqlWrapperError::Value(e.to_string()))
}

fn unsupported(what: &str) -> MysqlWrapperError {
    MysqlWrapperError::Unsupported(format!("{what} cannot be stored in MySQL"))
}

/// A value as a MySQL literal.
pub fn cell_literal(cell: &Cell) -> Result<String> {
    Ok(match cell {
        Cell::Bool(v) => if *v { "TRUE" } else { "FALSE" }.into(),
        Cell::I8(v) => v.to_string(),
        Cell::I16(v) => v.to_string(),
        Cell::I32(v) => v.to_string(),
        Cell::I64(v) => v.to_string(),
        Cell::F32(v) if v.is_finite() => format!("{v:?}"),
        Cell::F64(v) if v.is_finite() => format!("{v:?}"),
        Cell::F32(_) | Cell::F64(_) => return Err(unsupported("NaN or infinity")),
        Cell::Numeric(v) => {
            let text = v.to_string();
            if !text
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
            {
                return Err(unsupported("a non-finite numeric"));
            }
            // An unquoted decimal literal is an exact DECIMAL in MySQL.
            text
        }
        Cell::String(v) => literal(v)?,
        Cell::Date(v) => literal(&v.to_iso_string())?,
        Cell::Timestamp(v) => literal(&v.to_iso_string().replace('T', " "))?,
        // The session time zone is UTC.
        Cell::Timestamptz(v) => literal(&v.to_utc().to_iso_string().replace('T', " "))?,
        Cell::Interval(v) => {
            if v.months() != 0 {
                return Err(unsupported("an interval with months"));
            }
            let micros = v.days() as i64 * 86_400_000_000 + v.micros();
            let sign = if micros < 0 { "-" } else { "" };
            let m = micros.unsigned_abs();
            literal(&format!(
                "{sign}{}:{:02}:{:02}.{:06}",
                m / 3_600_000_000,
                m / 60_000_000 % 60,
                m / 1_000_000 % 60,
                m % 1_000_000
            ))?
        }
        Cell::Json(v) => literal(
            &serde_json::to_string(&v.0).map_err(|e| MysqlWrapperError::Value(e.to_string()))?,
        )?,
        Cell::Bytea(v) => {
            // SAFETY: the framework hands a detoasted bytea of the current row.
            let bytes = unsafe { pgrx::varlena::varlena_to_byte_slice(*v) };
            bytes_literal(D, bytes)
        }
        Cell::Uuid(v) => literal(&v.to_string())?,
        other => {
            return Err(MysqlWrapperError::Unsupported(format!(
                "value {other:?} cannot be sent to MySQL"
            )))
        }
    })
}

/// The MySQL dialect of the shared statements.
pub struct Mysql;

fn info(c: &Column, not_null: bool) -> ColumnInfo<'_> {
    ColumnInfo {
        name: &c.name,
        local: c.type_oid,
        not_null,
    }
}

impl RemoteSql for Mysql {
    type Error = MysqlWrapperError;
    fn ident(name: &str) -> Result<String> {
        ident(name)
    }
    fn literal(text: &str) -> Result<String> {
        literal(text)
    }
    fn cell_literal(cell: &Cell) -> Result<String> {
        cell_literal(cell)
    }
    fn select_expr(col: &Column, not_null: bool) -> Result<String> {
        select_expr(&info(col, not_null))
    }
    fn composite_key_expr(quoted_key: &[String]) -> String {
        let parts: Vec<String> = quoted_key
            .iter()
            .map(|k| format!("CAST({k} AS CHAR)"))
            .collect();
        format!("JSON_ARRAY({})", parts.join(", "))
    }
    fn qual(q: &Qual, col: &Column, not_null: bool) -> Option<String> {
        qual(q, &info(col, not_null))
    }
    fn sort_key(s: &Sort, col: &Column, not_null: bool) -> Option<String> {
        sort_key(s, &info(col, not_null))
    }
    /// MySQL's AVG rounds to `div_precision_increment` digits; PostgreSQL's
    /// avg is sum / count in numeric. So an average travels as SUM and
    /// COUNT and is divided locally ([`average`]).
    fn aggregate(agg: &Aggregate, arg: Option<&str>) -> Vec<String> {
        let arg = arg.unwrap_or("*");
        match agg.kind {
            AggregateKind::Count | AggregateKind::CountColumn => vec![format!("COUNT({arg})")],
            AggregateKind::Sum => vec![format!("SUM({arg})")],
            AggregateKind::Avg => vec![format!("SUM({arg})"), format!("COUNT({arg})")],
            AggregateKind::Min => vec![format!("MIN({arg})")],
            AggregateKind::Max => vec![format!("MAX({arg})")],
        }
    }
}

/// PostgreSQL's avg from the remote SUM and COUNT: numeric_div, as avg's
/// final function computes it; NULL over no rows.
pub fn average(sum: Option<Cell>, count: Option<Cell>) -> Option<Cell> {
    match (sum, count) {
        (Some(Cell::Numeric(sum)), Some(Cell::Numeric(count)))
            if count != pgrx::AnyNumeric::from(0) =>
        {
            Some(Cell::Numeric(sum / count))
        }
        _ => None,
    }
}

/// What the wrapper knows of a local column when it renders SQL.
pub struct ColumnInfo<'a> {
    pub name: &'a str,
    pub local: pg_sys::Oid,
    pub not_null: bool,
}

/// The SELECT-list expression for a local column: booleans (BIT(1)) and
/// bigints (also BIT(n)) are read as numbers, since the text protocol sends
/// BIT values as raw bytes; a real (MySQL FLOAT) as a DOUBLE, since the
/// text protocol writes a FLOAT with 6 significant digits (16777216 came
/// back as 16777200) and a DOUBLE with all it takes to read the float back.
pub fn select_expr(col: &ColumnInfo<'_>) -> Result<String> {
    let q = ident(col.name)?;
    Ok(match col.local {
        pg_sys::BOOLOID => format!("({q} <> 0)"),
        pg_sys::INT8OID => format!("({q} + 0)"),
        pg_sys::FLOAT4OID => format!("({q} + 0e0)"),
        _ => q,
    })
}

/// True for local types whose comparison MySQL computes identically.
fn comparable(local: pg_sys::Oid) -> bool {
    matches!(
        local,
        pg_sys::INT2OID
            | pg_sys::INT4OID
            | pg_sys::INT8OID
            | pg_sys::NUMERICOID
            | pg_sys::DATEOID
            | pg_sys::TIMESTAMPOID
            | pg_sys::TIMESTAMPTZOID
    )
}

/// One condition as MySQL SQL, or None when it must stay local.
pub fn qual(q: &Qual, col: &ColumnInfo<'_>) -> Option<String> {
    let name = ident(col.name).ok()?;
    if q.operator == "is" || q.operator == "is not" {
        return match &q.value {
            Value::Cell(Cell::String(s)) if s == "null" => Some(format!(
                "{name} {} NULL",
                if q.operator == "is" { "IS" } else { "IS NOT" }
            )),
            _ => None,
        };
    }
    if !comparable(col.local) {
        return None;
    }
    let op = match q.operator.as_str() {
        op @ ("=" | "<>" | "<" | "<=" | ">" | ">=") => op,
        _ => return None,
    };
    match &q.value {
        Value::Cell(cell) if !q.use_or => Some(format!("{name} {op} {}", cell_literal(cell).ok()?)),
        Value::Array(cells) if q.use_or && op == "=" && !cells.is_empty() => {
            let items = cells
                .iter()
                .map(cell_literal)
                .collect::<Result<Vec<_>>>()
                .ok()?;
            Some(format!("{name} IN ({})", items.join(", ")))
        }
        _ => None,
    }
}

/// One ORDER BY key, or None when MySQL's order could differ. MySQL puts
/// NULLs first ascending and last descending; PostgreSQL's default is the
/// opposite, which only matters for a nullable column.
pub fn sort_key(s: &Sort, col: &ColumnInfo<'_>) -> Option<String> {
    if !comparable(col.local) || s.collate.is_some() {
        return None;
    }
    let mysql_nulls_first = !s.reversed;
    if !col.not_null && s.nulls_first != mysql_nulls_first {
        return None;
    }
    Some(format!(
        "{} {}",
        ident(col.name).ok()?,
        if s.reversed { "DESC" } else { "ASC" }
    ))
}
