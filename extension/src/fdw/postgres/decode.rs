//! Remote values (binary protocol) to supabase-wrappers cells, exactly:
//! numeric digit by digit (never through f64), date/time values as the same
//! microsecond and day counts PostgreSQL uses locally. Columns whose local
//! type is text are selected as `::text` remotely, so any remote type reads.

use super::{PostgresWrapperError, Result};
use pgrx::datum::{Date, Interval, JsonB, Time, Timestamp, TimestampWithTimeZone, Uuid};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::error::Error;
use supabase_wrappers::prelude::Cell;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Row;

type BoxError = Box<dyn Error + Sync + Send>;

/// A numeric in its exact decimal text.
struct NumericText(String);

impl<'a> FromSql<'a> for NumericText {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        integration_core::pg_numeric::binary_to_text(raw)
            .map(NumericText)
            .map_err(Into::into)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// An 8-byte big-endian integer: timestamp, timestamptz and time share the
/// local representation (microseconds).
struct Micros(i64);

impl<'a> FromSql<'a> for Micros {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        let bytes: [u8; 8] = raw.try_into().map_err(|_| "expected 8 bytes")?;
        Ok(Micros(i64::from_be_bytes(bytes)))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ || *ty == Type::TIME
    }
}

/// A date: days since 2000-01-01, as locally.
struct Days(i32);

impl<'a> FromSql<'a> for Days {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        let bytes: [u8; 4] = raw.try_into().map_err(|_| "expected 4 bytes")?;
        Ok(Days(i32::from_be_bytes(bytes)))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::DATE
    }
}

/// An interval: microseconds, days, months.
struct RawInterval(i64, i32, i32);

impl<'a> FromSql<'a> for RawInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        if raw.len() != 16 {
            return Err("expected 16 bytes".into());
        }
        let micros = i64::from_be_bytes(raw[0..8].try_into()?);
        let days = i32::from_be_bytes(raw[8..12].try_into()?);
        let months = i32::from_be_bytes(raw[12..16].try_into()?);
        Ok(RawInterval(micros, days, months))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// The interval PostgreSQL stores as these fields, whatever their signs:
/// `'1 mon -1 day'` is valid, though `Interval::new` refuses it.
fn interval(time: i64, day: i32, month: i32) -> Interval {
    let raw = pg_sys::Interval { time, day, month };
    // SAFETY: a by-reference datum pointing at an interval, which
    // `from_polymorphic_datum` copies before `raw` goes away.
    unsafe {
        Interval::from_polymorphic_datum(
            pg_sys::Datum::from(std::ptr::addr_of!(raw).cast_mut()),
            false,
            pg_sys::INTERVALOID,
        )
    }
    .expect("a non-null datum")
}

struct RawUuid([u8; 16]);

impl<'a> FromSql<'a> for RawUuid {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(RawUuid(raw.try_into().map_err(|_| "expected 16 bytes")?))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::UUID
    }
}

fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize, column: &str) -> Result<Option<T>> {
    row.try_get::<_, Option<T>>(i).map_err(|e| {
        PostgresWrapperError::Value(format!("column \"{column}\": {}", e.source().unwrap_or(&e)))
    })
}

fn bad(column: &str, what: impl std::fmt::Display) -> PostgresWrapperError {
    PostgresWrapperError::Value(format!("column \"{column}\": {what}"))
}

/// The cell for column `i` of `row`, for a local column of type `local`.
pub fn cell(row: &Row, i: usize, column: &str, local: pg_sys::Oid) -> Result<Option<Cell>> {
    Ok(match local {
        pg_sys::BOOLOID => get::<bool>(row, i, column)?.map(Cell::Bool),
        pg_sys::INT2OID => get::<i16>(row, i, column)?.map(Cell::I16),
        pg_sys::INT4OID => get::<i32>(row, i, column)?.map(Cell::I32),
        pg_sys::INT8OID => get::<i64>(row, i, column)?.map(Cell::I64),
        pg_sys::FLOAT4OID => get::<f32>(row, i, column)?.map(Cell::F32),
        pg_sys::FLOAT8OID => get::<f64>(row, i, column)?.map(Cell::F64),
        pg_sys::NUMERICOID => match get::<NumericText>(row, i, column)? {
            Some(NumericText(text)) => Some(Cell::Numeric(
                AnyNumeric::try_from(text.as_str()).map_err(|e| bad(column, e))?,
            )),
            None => None,
        },
        pg_sys::DATEOID => {
            get::<Days>(row, i, column)?.map(|Days(d)| Cell::Date(Date::saturating_from_raw(d)))
        }
        pg_sys::TIMEOID => match get::<Micros>(row, i, column)? {
            Some(Micros(us)) => Some(Cell::Time(Time::try_from(us).map_err(|e| bad(column, e))?)),
            None => None,
        },
        pg_sys::TIMESTAMPOID => match get::<Micros>(row, i, column)? {
            Some(Micros(us)) => Some(Cell::Timestamp(
                Timestamp::try_from(us).map_err(|e| bad(column, e))?,
            )),
            None => None,
        },
        pg_sys::TIMESTAMPTZOID => match get::<Micros>(row, i, column)? {
            Some(Micros(us)) => Some(Cell::Timestamptz(
                TimestampWithTimeZone::try_from(us).map_err(|e| bad(column, e))?,
            )),
            None => None,
        },
        pg_sys::INTERVALOID => get::<RawInterval>(row, i, column)?
            .map(|RawInterval(us, days, months)| Cell::Interval(interval(us, days, months))),
        pg_sys::JSONBOID | pg_sys::JSONOID => {
            get::<serde_json::Value>(row, i, column)?.map(|v| Cell::Json(JsonB(v)))
        }
        pg_sys::BYTEAOID => get::<&[u8]>(row, i, column)?
            .map(|b| Cell::Bytea(pgrx::rust_byte_slice_to_bytea(b).into_pg())),
        pg_sys::UUIDOID => {
            get::<RawUuid>(row, i, column)?.map(|RawUuid(b)| Cell::Uuid(Uuid::from_bytes(b)))
        }
        _ => get::<String>(row, i, column)?.map(Cell::String),
    })
}

/// True when the local type is read through the remote `::text` output.
pub fn reads_as_text(local: pg_sys::Oid) -> bool {
    !matches!(
        local,
        pg_sys::BOOLOID
            | pg_sys::INT2OID
            | pg_sys::INT4OID
            | pg_sys::INT8OID
            | pg_sys::FLOAT4OID
            | pg_sys::FLOAT8OID
            | pg_sys::NUMERICOID
            | pg_sys::DATEOID
            | pg_sys::TIMEOID
            | pg_sys::TIMESTAMPOID
            | pg_sys::TIMESTAMPTZOID
            | pg_sys::INTERVALOID
            | pg_sys::JSONBOID
            | pg_sys::JSONOID
            | pg_sys::BYTEAOID
            | pg_sys::UUIDOID
    )
}
