//! Raising SQL errors with an SQLSTATE from any expression position, and
//! keeping statements that carry secrets out of the server log.

use pgrx::prelude::*;
use std::cell::Cell;

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

thread_local! {
    /// The running transaction passed a secret (a token, a key, a password
    /// in a URL) to one of our functions.
    static SECRET_IN_STATEMENT: Cell<bool> = const { Cell::new(false) };
}

static mut PREVIOUS_EMIT_LOG_HOOK: pg_sys::emit_log_hook_type = None;

/// Marks the running transaction as carrying a secret in its statements:
/// an error it raises from now on reaches the server log without the
/// `STATEMENT:` and `CONTEXT:` lines, which would quote the secret (the
/// client still gets the whole error). Cleared when the transaction ends.
pub fn statement_carries_secret() {
    SECRET_IN_STATEMENT.set(true);
}

/// [`statement_carries_secret`] for the SQL functions that take secrets
/// (`create_webhook`, `create_sso_provider`, …).
#[pg_extern(volatile, parallel_safe, name = "_statement_carries_secret")]
fn statement_carries_secret_sql() {
    statement_carries_secret();
}

pub fn init() {
    // SAFETY: hooks are installed once, at load, and chain to the previous one.
    unsafe {
        PREVIOUS_EMIT_LOG_HOOK = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(hide_secret_statements);
        pg_sys::RegisterXactCallback(Some(forget_secret), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn hide_secret_statements(data: *mut pg_sys::ErrorData) {
    // SAFETY: Postgres passes the error being reported.
    unsafe {
        if SECRET_IN_STATEMENT.get() && (*data).elevel >= pgrx::PgLogLevel::ERROR as i32 {
            (*data).hide_stmt = true;
            (*data).hide_ctx = true;
        }
        if let Some(previous) = PREVIOUS_EMIT_LOG_HOOK {
            previous(data);
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_secret(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    if matches!(
        event,
        pg_sys::XactEvent::XACT_EVENT_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_ABORT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
    ) {
        SECRET_IN_STATEMENT.set(false);
    }
}
