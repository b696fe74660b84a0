//! MySQL text-protocol values to supabase-wrappers cells, by the local
//! column type the import chose: decimals parsed digit by digit into
//! numeric, DATETIME as a timestamp, TIMESTAMP (read in UTC) as a
//! timestamptz, TIME as an interval; zero dates and NUL in text are errors.

use super::{MysqlWrapperError, Result};
use mysql_async::Value;
use pgrx::datum::{Date, Interval, JsonB, Timestamp, TimestampWithTimeZone, Uuid};
use pgrx::pg_sys;
use pgrx::prelude::*;
use supabase_wrappers::prelude::Cell;

fn bad(column: &str, what: impl std::fmt::Display) -> MysqlWrapperError {
    MysqlWrapperError::Value(format!("column \"{column}\": {what}"))
}

/// A remote string as text: UTF-8 without NUL (PostgreSQL text cannot hold
/// one; stored, it cut the value short for some operations and not others).
fn text<'a>(column: &str, bytes: &'a [u8]) -> Result<&'a str> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| bad(column, "the remote value is not UTF-8"))?;
    if text.contains('\0') {
        return Err(MysqlWrapperError::Nul(format!(
            "column \"{column}\": the remote value holds a NUL character, which text cannot; \
             declare the column bytea to read it"
        )));
    }
    Ok(text)
}

fn parse<T: std::str::FromStr>(column: &str, s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.trim()
        .parse::<T>()
        .map_err(|e| bad(column, format!("{s:?}: {e}")))
}

/// `YYYY-MM-DD`. MySQL's zero dates (a zero month or day) have no
/// PostgreSQL value: an error, as MySQL's strict mode would raise, rather
/// than a NULL that reads as "no date".
fn date_parts(column: &str, s: &str) -> Result<Option<(i32, u8, u8)>> {
    let mut it = s.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (it.next(), it.next(), it.next()) else {
        return Err(bad(column, format!("{s:?} is not a date")));
    };
    let (y, m, d): (i32, u8, u8) = (parse(column, y)?, parse(column, m)?, parse(column, d)?);
    if m == 0 || d == 0 {
        return Err(MysqlWrapperError::ZeroDate(format!(
            "column \"{column}\": {s:?} is a MySQL zero date, which no PostgreSQL date can hold; \
             declare the column text to read it as written"
        )));
    }
    Ok(Some((y, m, d)))
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]` as a timestamp, None for the zero date.
fn timestamp(column: &str, s: &str) -> Result<Option<Timestamp>> {
    let (date, time) = s.split_once(' ').unwrap_or((s, "00:00:00"));
    let Some((y, mo, d)) = date_parts(column, date)? else {
        return Ok(None);
    };
    let mut it = time.splitn(3, ':');
    let (Some(h), Some(mi), Some(sec)) = (it.next(), it.next(), it.next()) else {
        return Err(bad(column, format!("{s:?} is not a datetime")));
    };
    Timestamp::new(
        y,
        mo,
        d,
        parse(column, h)?,
        parse(column, mi)?,
        parse(column, sec)?,
    )
    .map(Some)
    .map_err(|e| bad(column, e))
}

/// `[-]HHH:MM:SS[.ffffff]` as microseconds.
fn time_micros(column: &str, s: &str) -> Result<i64> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut it = rest.splitn(3, ':');
    let (Some(h), Some(m), Some(sec)) = (it.next(), it.next(), it.next()) else {
        return Err(bad(column, format!("{s:?} is not a time")));
    };
    let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
    let mut micros_frac = format!("{frac:0<6}");
    micros_frac.truncate(6);
    let micros = parse::<i64>(column, h)? * 3_600_000_000
        + parse::<i64>(column, m)? * 60_000_000
        + parse::<i64>(column, whole)? * 1_000_000
        + parse::<i64>(column, &micros_frac)?;
    Ok(if negative { -micros } else { micros })
}

fn uuid(column: &str, s: &str) -> Result<Uuid> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return Err(bad(column, format!("{s:?} is not a UUID")));
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| bad(column, format!("{s:?} is not a UUID")))?;
    }
    Ok(Uuid::from_bytes(bytes))
}

/// The cell of one remote value for a local column of type `local`.
pub fn cell(value: Option<Value>, column: &str, local: pg_sys::Oid) -> Result<Option<Cell>> {
    let bytes = match value {
        None | Some(Value::NULL) => return Ok(None),
        Some(Value::Bytes(b)) => b,
        Some(other) => other.as_sql(true).into_bytes(),
    };
    if local == pg_sys::BYTEAOID {
        return Ok(Some(Cell::Bytea(
            pgrx::rust_byte_slice_to_bytea(&bytes).into_pg(),
        )));
    }
    let s = text(column, &bytes)?;
    Ok(match local {
        // Selected as `(col <> 0)`: 0 or 1.
        pg_sys::BOOLOID => Some(Cell::Bool(s.trim() != "0")),
        pg_sys::INT2OID => Some(Cell::I16(parse(column, s)?)),
        pg_sys::INT4OID => Some(Cell::I32(parse(column, s)?)),
        pg_sys::INT8OID => Some(Cell::I64(parse(column, s)?)),
        pg_sys::FLOAT4OID => Some(Cell::F32(parse(column, s)?)),
        pg_sys::FLOAT8OID => Some(Cell::F64(parse(column, s)?)),
        pg_sys::NUMERICOID => Some(Cell::Numeric(
            AnyNumeric::try_from(s.trim()).map_err(|e| bad(column, e))?,
        )),
        pg_sys::DATEOID => match date_parts(column, s)? {
            Some((y, m, d)) => Some(Cell::Date(Date::new(y, m, d).map_err(|e| bad(column, e))?)),
            None => None,
        },
        pg_sys::TIMESTAMPOID => timestamp(column, s)?.map(Cell::Timestamp),
        pg_sys::TIMESTAMPTZOID => match timestamp(column, s)? {
            // The session time zone is UTC: the wall time is UTC.
            Some(ts) => Some(Cell::Timestamptz(
                TimestampWithTimeZone::try_from(pg_sys::Timestamp::from(ts))
                    .map_err(|e| bad(column, e))?,
            )),
            None => None,
        },
        pg_sys::INTERVALOID => Some(Cell::Interval(
            Interval::new(0, 0, time_micros(column, s)?).map_err(|e| bad(column, e))?,
        )),
        pg_sys::JSONBOID | pg_sys::JSONOID => Some(Cell::Json(JsonB(
            serde_json::from_str(s).map_err(|e| bad(column, e))?,
        ))),
        pg_sys::UUIDOID => Some(Cell::Uuid(uuid(column, s)?)),
        _ => Some(Cell::String(s.to_string())),
    })
}
