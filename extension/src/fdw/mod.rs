//! External databases as foreign tables, one wrapper per engine on
//! supabase-wrappers (`postgres`: PostgreSQL and compatible engines, `mysql`:
//! MySQL and MariaDB). The
//! shared parts: option lists, TLS settings, the planner facts, aggregate
//! pushdown and the scans' plans and execution.

pub mod aggregate;
pub mod hooks;
pub mod import;
pub mod mysql;
pub mod options;
pub mod planner;
pub mod postgres;
pub mod returning;
pub mod scan;
pub mod statements;
pub mod tls;
pub mod xact;

use pgrx::{pg_sys, PgSqlErrorCode};
use std::cell::RefCell;
use std::rc::Rc;
use tokio::runtime::Runtime;

/// What identifies a cached remote connection: one per backend, foreign
/// server and user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub server: pg_sys::Oid,
    pub user: pg_sys::Oid,
}

impl ConnKey {
    /// The key of the current user's connection to `server`.
    pub fn current(server: pg_sys::Oid) -> ConnKey {
        ConnKey {
            server,
            // SAFETY: plain catalog state of this backend.
            user: unsafe { pg_sys::GetUserId() },
        }
    }
}

thread_local! {
    static RUNTIME: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
}

/// The backend's single-threaded runtime: connection tasks and scan
/// streams run on it while a wrapper awaits a result with `block_on`.
pub fn runtime() -> Result<Rc<Runtime>, String> {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        if let Some(rt) = rt.as_ref() {
            return Ok(rt.clone());
        }
        let created = Rc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?,
        );
        *rt = Some(created.clone());
        Ok(created)
    })
}

/// The local error code for a remote SQLSTATE, or the FDW class when the
/// code is unknown locally.
pub fn sqlstate_code(code: &str) -> PgSqlErrorCode {
    match integration_core::sql_dialect::packed_sqlstate(code).map(PgSqlErrorCode::from) {
        Some(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR) if code != "XX000" => {
            PgSqlErrorCode::ERRCODE_FDW_ERROR
        }
        Some(known) => known,
        None => PgSqlErrorCode::ERRCODE_FDW_ERROR,
    }
}

/// Who a connection failure is about: the server and where it was sought.
pub fn remote_at(server_name: &str, host: &str, port: u16) -> String {
    format!("remote server \"{server_name}\" at {host}:{port}")
}

/// An error and its causes in one line, each cause once: the client
/// libraries' own messages often stop at "error performing TLS handshake".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// True when the backend must stop the running query: a cancel
/// (statement_timeout, pg_cancel_backend, ^C) or a termination, and
/// interrupts are not held off (as they are while committing).
fn interrupted() -> bool {
    // SAFETY: flags that signal handlers set; read as volatile, as C does.
    unsafe {
        use std::ptr::read_volatile;
        read_volatile(&raw const pg_sys::InterruptPending) != 0
            && read_volatile(&raw const pg_sys::InterruptHoldoffCount) == 0
            && (read_volatile(&raw const pg_sys::ProcDiePending) != 0
                || (read_volatile(&raw const pg_sys::QueryCancelPending) != 0
                    && read_volatile(&raw const pg_sys::QueryCancelHoldoffCount) == 0))
    }
}

/// Waits on `rt` for `work`, a remote statement. When the local query is
/// cancelled meanwhile, awaits `cancel` (which asks the remote server to
/// stop the statement), gives `work` a few seconds to end, then raises the
/// cancel as PostgreSQL would: a remote statement no longer outlives
/// statement_timeout or pg_cancel_backend.
pub fn wait_cancellable<T>(
    rt: &Runtime,
    work: impl std::future::Future<Output = T>,
    cancel: impl std::future::Future<Output = ()>,
) -> T {
    let outcome = rt.block_on(async {
        tokio::pin!(work);
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                _ = tick.tick() => if interrupted() { break }
            }
        }
        cancel.await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), work).await;
        None
    });
    match outcome {
        Some(out) => out,
        None => {
            pgrx::check_for_interrupts!();
            crate::errors::raise(
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                "canceling statement: the remote statement was cancelled",
                None,
            );
        }
    }
}
