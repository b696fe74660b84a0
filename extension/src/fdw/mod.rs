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
