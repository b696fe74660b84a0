//! One transaction callback for every wrapper: remote transactions commit
//! in the local PRE_COMMIT (a failure aborts the local transaction) and roll
//! back when the local transaction aborts.

use crate::fdw::{mysql, postgres};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Registers the callback once per backend.
pub fn register() {
    if REGISTERED.get() {
        return;
    }
    // SAFETY: the callback lives as long as the library.
    unsafe { pg_sys::RegisterXactCallback(Some(callback), std::ptr::null_mut()) };
    REGISTERED.set(true);
}

#[pg_guard]
unsafe extern "C-unwind" fn callback(event: pg_sys::XactEvent::Type, _arg: *mut libc::c_void) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => {
            postgres::finish_remote_transactions(true);
            mysql::finish_remote_transactions(true);
        }
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE
            if postgres::in_remote_transaction() || mysql::in_remote_transaction() =>
        {
            crate::errors::raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "cannot PREPARE a transaction that has used a foreign server of pg_integration",
                None,
            );
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            postgres::finish_remote_transactions(false);
            mysql::finish_remote_transactions(false);
        }
        _ => {}
    }
}
