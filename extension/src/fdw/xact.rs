//! One transaction callback for every wrapper: remote transactions commit
//! in the local PRE_COMMIT (a failure aborts the local transaction) and roll
//! back when the local transaction aborts. Subtransactions (SAVEPOINT,
//! PL/pgSQL EXCEPTION blocks) get remote savepoints, as postgres_fdw does:
//! a connection used at local nesting level n holds savepoints up to n,
//! released when the subtransaction commits and rolled back to when it
//! aborts, so a rolled-back subtransaction leaves the remote as it found it.

use crate::fdw::{mysql, postgres};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;

thread_local! {
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Registers the callbacks once per backend.
pub fn register() {
    if REGISTERED.get() {
        return;
    }
    // SAFETY: the callbacks live as long as the library.
    unsafe {
        pg_sys::RegisterXactCallback(Some(callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
    REGISTERED.set(true);
}

/// The local transaction's nesting level: 1 at top level, n + 1 inside n
/// subtransactions.
pub fn local_level() -> i32 {
    // SAFETY: plain transaction state of this backend.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() }
}

/// The statements that take a remote transaction holding savepoints up to
/// `depth` (1: none) to `level`; none when it is there.
pub fn savepoints(depth: i32, level: i32) -> Vec<String> {
    (depth + 1..=level)
        .map(|n| format!("SAVEPOINT pg_integration_s{n}"))
        .collect()
}

/// What ends the savepoint of `level`: released when its subtransaction
/// commits, rolled back to (then released) when it aborts.
pub fn end_savepoint(level: i32, commit: bool) -> Vec<String> {
    let release = format!("RELEASE SAVEPOINT pg_integration_s{level}");
    if commit {
        vec![release]
    } else {
        vec![
            format!("ROLLBACK TO SAVEPOINT pg_integration_s{level}"),
            release,
        ]
    }
}

/// The error of a remote transaction whose subtransaction could not be
/// rolled back: it must not commit.
pub fn broken_message(server: pg_sys::Oid) -> String {
    let server = crate::fdw::options::foreign_server(server).server_name;
    format!(
        "the remote transaction on server \"{server}\" could not be rolled back to a \
         savepoint, so the transaction cannot commit"
    )
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

#[pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    _mine: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut libc::c_void,
) {
    let commit = match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_PRE_COMMIT_SUB => true,
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => false,
        _ => return,
    };
    let level = local_level();
    postgres::end_savepoints(level, commit);
    mysql::end_savepoints(level, commit);
}
