//! Runs a piece of work in an internal subtransaction, the way PL/pgSQL's
//! `EXCEPTION` blocks do: an error rolls back that piece alone and comes
//! back as its message, and the surrounding transaction goes on.

use pgrx::pg_sys;
use pgrx::prelude::*;

/// Runs `work`; on an error (from Postgres or a Rust panic) its effects are
/// rolled back and the error's message is returned.
pub fn attempt<R>(work: impl FnOnce() -> R + std::panic::UnwindSafe) -> Result<R, String> {
    // SAFETY: called inside a transaction; the memory context and resource
    // owner are restored on both paths, as PL/pgSQL does around a block.
    let (context, owner) = unsafe {
        let saved = (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner);
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(saved.0);
        saved
    };
    let restore = || unsafe {
        pg_sys::MemoryContextSwitchTo(context);
        pg_sys::CurrentResourceOwner = owner;
    };
    PgTryBuilder::new(|| {
        let value = work();
        // SAFETY: the subtransaction begun above is the current one.
        unsafe { pg_sys::ReleaseCurrentSubTransaction() };
        restore();
        Ok(value)
    })
    .catch_others(|error| {
        // SAFETY: the failed subtransaction is still the current one.
        unsafe { pg_sys::RollbackAndReleaseCurrentSubTransaction() };
        restore();
        Err(message(&error))
    })
    .execute()
}

fn message(error: &pg_sys::panic::CaughtError) -> String {
    match error {
        pg_sys::panic::CaughtError::PostgresError(report)
        | pg_sys::panic::CaughtError::ErrorReport(report)
        | pg_sys::panic::CaughtError::RustPanic {
            ereport: report, ..
        } => report.message().to_string(),
    }
}
