//! Raising SQL errors with an SQLSTATE from any expression position.

use pgrx::prelude::*;

/// Raises an ERROR with `code`, `message` and an optional hint.
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: Option<&str>) -> ! {
    let message = message.into();
    match hint {
        Some(hint) => {
            ereport!(ERROR, code, message, hint);
        }
        None => {
            ereport!(ERROR, code, message);
        }
    }
}
