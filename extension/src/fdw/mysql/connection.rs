//! Connections of `mysql_wrapper`: one per backend, foreign server and user,
//! re-established when the server went away. The first use inside a local
//! transaction opens a remote transaction that commits in the local
//! PRE_COMMIT and rolls back on abort. A streaming scan borrows the
//! connection (MySQL cannot interleave statements with an open result) and
//! gives it back when it ends. TLS (`ssl_mode`, `ssl_ca`) always verifies
//! the server's certificate and host name.

use super::{MysqlWrapperError, Result};
use crate::fdw::options::{self, Endpoint};
use crate::fdw::tls::{self, TlsMode, TlsOptionNames, TlsSettings};
pub use crate::fdw::ConnKey;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use supabase_wrappers::prelude::ForeignServer;
use tokio::runtime::Runtime;

/// Where and how to connect; the password never leaves this struct.
#[derive(Clone)]
pub struct ConnectOptions {
    pub server_name: String,
    pub host: String,
    pub port: u16,
    pub dbname: Option<String>,
    pub user: String,
    pub password: Option<String>,
    pub tls: TlsSettings,
}

/// MySQL's `--ssl-mode` names and mysql_fdw's `ssl_ca`. `required`
/// verifies like `verify_identity` (MySQL's `REQUIRED` does not verify);
/// `preferred`, which may fall back to plain text, is not offered, nor is
/// `verify_ca`: mysql_async cannot skip only the host-name check.
pub const TLS_OPTIONS: TlsOptionNames = TlsOptionNames {
    mode: "ssl_mode",
    root_cert: "ssl_ca",
    values: &[
        ("disabled", TlsMode::Disable),
        ("required", TlsMode::VerifyFull),
        ("verify_identity", TlsMode::VerifyFull),
    ],
};

impl ConnectOptions {
    /// The server's options and the current user's mapping.
    pub fn for_server(server_def: &ForeignServer) -> Result<ConnectOptions> {
        let server = &server_def.options;
        let Endpoint {
            host,
            port,
            user,
            password,
        } = options::endpoint(server_def, 3306)?;
        Ok(ConnectOptions {
            server_name: server_def.server_name.clone(),
            host,
            port,
            dbname: server.get("dbname").cloned(),
            user,
            password,
            tls: TLS_OPTIONS.settings(server)?,
        })
    }
}

struct Entry {
    /// None while a streaming scan holds it.
    conn: Option<Conn>,
    in_xact: bool,
}

thread_local! {
    static CONNS: RefCell<HashMap<ConnKey, Entry>> = RefCell::new(HashMap::new());
}

pub fn runtime() -> Result<Rc<Runtime>> {
    crate::fdw::runtime().map_err(MysqlWrapperError::Runtime)
}

/// Session settings every statement relies on: UTF-8, UTC for TIMESTAMP
/// columns, and backslashes as ordinary characters (the quoting in
/// `integration_core::sql_dialect` assumes NO_BACKSLASH_ESCAPES).
const SESSION_INIT: &str = "SET NAMES utf8mb4, time_zone = '+00:00', \
     sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')";

/// mysql_async's TLS options for `settings`: only our roots, never its
/// built-in ones, and the host name checked.
fn ssl_opts(settings: &TlsSettings) -> Result<Option<SslOpts>> {
    if settings.mode == TlsMode::Disable {
        return Ok(None);
    }
    let roots = tls::roots(settings, TLS_OPTIONS.root_cert)?;
    Ok(Some(
        SslOpts::default()
            .with_disable_built_in_roots(true)
            .with_root_certs(roots.into_iter().map(|c| c.to_vec().into()).collect()),
    ))
}

pub async fn connect(opts: &ConnectOptions) -> Result<Conn> {
    let builder = OptsBuilder::default()
        .ssl_opts(ssl_opts(&opts.tls)?)
        .ip_or_hostname(opts.host.clone())
        .tcp_port(opts.port)
        .user(Some(opts.user.clone()))
        .pass(opts.password.clone())
        .db_name(opts.dbname.clone())
        .prefer_socket(false)
        .init(vec![SESSION_INIT]);
    let connect = Conn::new(builder);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e @ mysql_async::Error::Server(_))) => {
            Err(MysqlWrapperError::remote(&opts.server_name, e))
        }
        // Not the server's answer: name where we tried to go, and why.
        Ok(Err(e)) => {
            let message = crate::fdw::error_chain(&e);
            Err(MysqlWrapperError::Remote {
                server: crate::fdw::remote_at(&opts.server_name, &opts.host, opts.port),
                code: None,
                message,
            })
        }
        Err(_) => Err(MysqlWrapperError::Remote {
            server: crate::fdw::remote_at(&opts.server_name, &opts.host, opts.port),
            code: None,
            message: "connection timed out".into(),
        }),
    }
}

/// Makes sure the cached connection exists, is alive and is inside a
/// remote transaction; reconnects once when the server went away.
fn ensure(key: ConnKey, opts: &ConnectOptions, rt: &Runtime) -> Result<()> {
    crate::fdw::xact::register();
    let state = CONNS.with(|c| c.borrow().get(&key).map(|e| (e.conn.is_some(), e.in_xact)));
    match state {
        Some((_, true)) => return Ok(()),
        Some((true, false)) => {
            let mut conn = take_raw(key).expect("present");
            match rt.block_on(conn.query_drop("START TRANSACTION")) {
                Ok(()) => {
                    put(key, conn, true);
                    return Ok(());
                }
                Err(e) if !MysqlWrapperError::is_connection_loss(&e) => {
                    put(key, conn, false);
                    return Err(MysqlWrapperError::remote(&opts.server_name, e));
                }
                Err(_) => {}
            }
        }
        _ => {}
    }
    let mut conn = rt.block_on(connect(opts))?;
    rt.block_on(conn.query_drop("START TRANSACTION"))
        .map_err(|e| MysqlWrapperError::remote(&opts.server_name, e))?;
    put(key, conn, true);
    Ok(())
}

fn take_raw(key: ConnKey) -> Option<Conn> {
    CONNS.with(|c| c.borrow_mut().get_mut(&key).and_then(|e| e.conn.take()))
}

fn put(key: ConnKey, conn: Conn, in_xact: bool) {
    CONNS.with(|c| {
        c.borrow_mut().insert(
            key,
            Entry {
                conn: Some(conn),
                in_xact,
            },
        );
    });
}

/// Runs `work` on the transaction's connection.
pub fn with_conn<T>(
    key: ConnKey,
    opts: &ConnectOptions,
    work: impl AsyncFnOnce(&mut Conn) -> std::result::Result<T, mysql_async::Error>,
) -> Result<T> {
    let rt = runtime()?;
    ensure(key, opts, &rt)?;
    let Some(mut conn) = take_raw(key) else {
        return Err(MysqlWrapperError::Unsupported(
            "the remote connection is busy with a scan of the same statement".into(),
        ));
    };
    let result = rt.block_on(work(&mut conn));
    CONNS.with(|c| {
        if let Some(e) = c.borrow_mut().get_mut(&key) {
            e.conn = Some(conn);
        }
    });
    result.map_err(|e| MysqlWrapperError::remote(&opts.server_name, e))
}

/// Lends the transaction's connection to a streaming scan, or a separate
/// connection when a scan of the same statement holds it already (a join
/// of two tables of one server). The second value says which: give it back
/// with [`give_back`].
pub fn lend(key: ConnKey, opts: &ConnectOptions) -> Result<(Conn, bool)> {
    let rt = runtime()?;
    ensure(key, opts, &rt)?;
    match take_raw(key) {
        Some(conn) => Ok((conn, true)),
        None => Ok((rt.block_on(connect(opts))?, false)),
    }
}

pub fn give_back(key: ConnKey, conn: Conn, cached: bool) {
    if cached {
        CONNS.with(|c| {
            if let Some(e) = c.borrow_mut().get_mut(&key) {
                e.conn = Some(conn);
            }
        });
    } else if let Ok(rt) = runtime() {
        let _ = rt.block_on(conn.disconnect());
    }
}

/// True while a remote transaction of this backend is open.
pub fn in_remote_transaction() -> bool {
    CONNS.with(|c| c.borrow().values().any(|e| e.in_xact))
}

/// Commits or rolls back every remote transaction of this backend. A failed
/// COMMIT raises (aborting the local transaction); a failed ROLLBACK drops
/// the connection, and MySQL rolls back a transaction whose session ended.
pub fn finish_remote_transactions(commit: bool) {
    let Ok(rt) = runtime() else { return };
    let open: Vec<(ConnKey, Option<Conn>)> = CONNS.with(|c| {
        c.borrow_mut()
            .iter_mut()
            .filter(|(_, e)| e.in_xact)
            .map(|(key, e)| {
                e.in_xact = false;
                (*key, e.conn.take())
            })
            .collect()
    });
    let mut failure = None;
    for (key, conn) in open {
        let Some(mut conn) = conn else {
            CONNS.with(|c| c.borrow_mut().remove(&key));
            continue;
        };
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        let outcome = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), conn.query_drop(sql)).await
        });
        match outcome {
            Ok(Ok(())) => put(key, conn, false),
            Ok(Err(e)) => {
                CONNS.with(|c| c.borrow_mut().remove(&key));
                if commit && failure.is_none() {
                    failure = Some(e);
                }
            }
            Err(_) => {
                CONNS.with(|c| c.borrow_mut().remove(&key));
            }
        }
    }
    if let Some(e) = failure {
        let report: pgrx::pg_sys::panic::ErrorReport =
            MysqlWrapperError::remote("remote server", e).into();
        report.report(PgLogLevel::ERROR);
    }
}
