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
use crate::fdw::xact;
pub use crate::fdw::ConnKey;
use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, OptsBuilder, SslOpts};
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
    client_cert: "ssl_cert",
    client_key: "ssl_key",
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
            mapping,
        } = options::endpoint(server_def, 3306)?;
        let tls = TLS_OPTIONS.settings(server, &mapping, &host)?;
        TLS_OPTIONS.password_without_tls(server, &host, &tls, password.is_some())?;
        Ok(ConnectOptions {
            server_name: server_def.server_name.clone(),
            host,
            port,
            dbname: server.get("dbname").cloned(),
            user,
            password,
            tls,
        })
    }
}

struct Entry {
    /// None while a streaming scan holds it.
    conn: Option<Conn>,
    /// 0: no remote transaction; n ≥ 1: one, with savepoints for the local
    /// nesting levels 2..=n (see `fdw::xact`).
    depth: i32,
    /// A subtransaction's rollback failed (or its connection was out with
    /// a scan): the remote transaction must not commit.
    broken: bool,
}

thread_local! {
    static CONNS: RefCell<HashMap<ConnKey, Entry>> = RefCell::new(HashMap::new());
}

pub fn runtime() -> Result<Rc<Runtime>> {
    crate::fdw::runtime().map_err(MysqlWrapperError::Runtime)
}

/// Session settings every statement relies on: UTF-8, UTC for TIMESTAMP
/// columns, strict mode (a value that does not fit is an error, not cut
/// or clamped, in every storage engine), and backslashes as ordinary characters (literals from
/// `integration_core::sql_dialect` read the same either way; LIKE patterns
/// do not). Set at connect and again after every pass-through statement.
pub const SESSION_INIT: &str = "SET NAMES utf8mb4, time_zone = '+00:00', \
     sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES')";

/// mysql_async's TLS options for `settings`: only our roots, never its
/// built-in ones, and the host name checked.
fn ssl_opts(settings: &TlsSettings) -> Result<Option<SslOpts>> {
    if settings.mode == TlsMode::Disable {
        return Ok(None);
    }
    let roots = tls::roots(settings, TLS_OPTIONS.root_cert)?;
    let identity = TLS_OPTIONS.client_identity(settings)?.map(|id| {
        // The PEM text as read: mysql_async parses it again.
        ClientIdentity::new(id.cert_pem.into(), id.key_pem.into())
    });
    Ok(Some(
        SslOpts::default()
            .with_disable_built_in_roots(true)
            .with_root_certs(roots.into_iter().map(|c| c.to_vec().into()).collect())
            .with_client_identity(identity),
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

/// Runs `statements` one after the other.
async fn run_all(
    conn: &mut Conn,
    statements: &[String],
) -> std::result::Result<(), mysql_async::Error> {
    for sql in statements {
        conn.query_drop(sql).await?;
    }
    Ok(())
}

/// Makes sure the cached connection exists, is alive and is inside a
/// remote transaction with a savepoint for each local subtransaction;
/// reconnects once when the server went away.
fn ensure(key: ConnKey, opts: &ConnectOptions, rt: &Runtime) -> Result<()> {
    xact::register();
    let level = xact::local_level();
    let remote = |e| MysqlWrapperError::remote(&opts.server_name, e);
    let state = CONNS.with(|c| {
        c.borrow()
            .get(&key)
            .map(|e| (e.conn.is_some(), e.depth, e.broken))
    });
    let mut begin = vec!["START TRANSACTION".to_string()];
    begin.extend(xact::savepoints(1, level));
    match state {
        Some((_, _, true)) => {
            return Err(MysqlWrapperError::Unsupported(xact::broken_message(
                key.server,
            )));
        }
        // Lent to a scan: a statement on it will find it busy.
        Some((false, depth, _)) if depth > 0 => return Ok(()),
        Some((true, depth, _)) if depth >= level => return Ok(()),
        Some((true, depth, _)) if depth > 0 => {
            let mut conn = take_raw(key).expect("present");
            let result = rt.block_on(run_all(&mut conn, &xact::savepoints(depth, level)));
            let reached = if result.is_ok() { level } else { depth };
            put(key, conn, reached);
            return result.map_err(remote);
        }
        Some((true, _, _)) => {
            let mut conn = take_raw(key).expect("present");
            match rt.block_on(run_all(&mut conn, &begin)) {
                Ok(()) => {
                    put(key, conn, level);
                    return Ok(());
                }
                Err(e) if !MysqlWrapperError::is_connection_loss(&e) => {
                    put(key, conn, 0);
                    return Err(remote(e));
                }
                Err(_) => {}
            }
        }
        _ => {}
    }
    let mut conn = crate::fdw::wait_cancellable(rt, connect(opts), async {})?;
    rt.block_on(run_all(&mut conn, &begin)).map_err(remote)?;
    put(key, conn, level);
    Ok(())
}

fn take_raw(key: ConnKey) -> Option<Conn> {
    CONNS.with(|c| c.borrow_mut().get_mut(&key).and_then(|e| e.conn.take()))
}

fn put(key: ConnKey, conn: Conn, depth: i32) {
    CONNS.with(|c| {
        c.borrow_mut().insert(
            key,
            Entry {
                conn: Some(conn),
                depth,
                broken: false,
            },
        );
    });
}

/// Asks the server to stop the statement running on connection `id`, over
/// a connection of its own (what a local cancel does to a remote statement).
pub async fn kill_query(opts: ConnectOptions, id: u32) {
    if let Ok(mut conn) = connect(&opts).await {
        let _ = conn.query_drop(format!("KILL QUERY {id}")).await;
        let _ = conn.disconnect().await;
    }
}

/// Runs `work` on the transaction's connection; a local cancel stops it
/// remotely too.
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
    let id = conn.id();
    let result = crate::fdw::wait_cancellable(&rt, work(&mut conn), kill_query(opts.clone(), id));
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
        None => Ok((
            crate::fdw::wait_cancellable(&rt, connect(opts), async {})?,
            false,
        )),
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

/// The transaction's connection, lent to a scan, did not come back (its
/// remote statement would not stop): a remote transaction on it is lost,
/// so the local one must not commit.
pub fn lost(key: ConnKey) {
    CONNS.with(|c| {
        let mut conns = c.borrow_mut();
        match conns.get_mut(&key) {
            Some(e) if e.depth > 0 => e.broken = true,
            _ => {
                conns.remove(&key);
            }
        }
    });
}

/// True while a remote transaction of this backend is open.
pub fn in_remote_transaction() -> bool {
    CONNS.with(|c| c.borrow().values().any(|e| e.depth > 0))
}

/// Ends the savepoint of the local subtransaction at `level` on every
/// connection that holds one. A failed release raises (the subtransaction
/// aborts, and its savepoint is rolled back to); a failed rollback, or one
/// impossible because a scan still holds the connection, marks the remote
/// transaction broken, and the local commit then fails. (A savepoint left
/// unreleased on a held connection is harmless: its writes stay.)
pub fn end_savepoints(level: i32, commit: bool) {
    let Ok(rt) = runtime() else { return };
    let holding: Vec<ConnKey> = CONNS.with(|c| {
        c.borrow()
            .iter()
            .filter(|(_, e)| e.depth >= level && !e.broken)
            .map(|(key, _)| *key)
            .collect()
    });
    for key in holding {
        let outcome = match take_raw(key) {
            Some(mut conn) => {
                let statements = xact::end_savepoint(level, commit);
                let outcome = rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(30), run_all(&mut conn, &statements))
                        .await
                });
                put(key, conn, level - 1);
                Some(outcome)
            }
            None => None,
        };
        // A held connection keeps its savepoint unreleased (harmless: its
        // writes stay), but cannot roll back to it.
        let ok = match &outcome {
            Some(result) => matches!(result, Ok(Ok(()))),
            None => commit,
        };
        // A failed release keeps the savepoint: the subtransaction aborts
        // and rolls back to it.
        if ok || !commit {
            CONNS.with(|c| {
                if let Some(e) = c.borrow_mut().get_mut(&key) {
                    e.depth = level - 1;
                    e.broken = !ok;
                }
            });
        }
        if commit && !ok {
            let server = crate::fdw::options::foreign_server(key.server).server_name;
            let error = match outcome {
                Some(Ok(Err(e))) => MysqlWrapperError::remote(&server, e),
                _ => MysqlWrapperError::Remote {
                    server: format!("remote server \"{server}\""),
                    code: None,
                    message: "RELEASE SAVEPOINT timed out".into(),
                },
            };
            let report: pgrx::pg_sys::panic::ErrorReport = error.into();
            report.report(PgLogLevel::ERROR);
        }
    }
}

/// Commits or rolls back every remote transaction of this backend. A failed
/// COMMIT raises (aborting the local transaction); so does committing a
/// broken remote transaction or one whose connection a scan still holds,
/// after rolling back everything. A failed ROLLBACK drops the connection,
/// and MySQL rolls back a transaction whose session ended.
pub fn finish_remote_transactions(commit: bool) {
    let Ok(rt) = runtime() else { return };
    let open: Vec<(ConnKey, Option<Conn>, bool)> = CONNS.with(|c| {
        c.borrow_mut()
            .iter_mut()
            .filter(|(_, e)| e.depth > 0)
            .map(|(key, e)| {
                e.depth = 0;
                (*key, e.conn.take(), std::mem::take(&mut e.broken))
            })
            .collect()
    });
    let mut failure = if commit {
        open.iter().find_map(|(key, conn, broken)| match (conn, broken) {
            (_, true) => Some(xact::broken_message(key.server)),
            (None, false) => Some(format!(
                "a scan of server \"{}\" still holds the remote connection at commit (close \
                 cursors over foreign tables before COMMIT); the remote transaction was rolled back",
                crate::fdw::options::foreign_server(key.server).server_name
            )),
            _ => None,
        })
    } else {
        None
    }
    .map(MysqlWrapperError::Unsupported);
    let commit = commit && failure.is_none();
    for (key, conn, _) in open {
        let Some(mut conn) = conn else {
            CONNS.with(|c| c.borrow_mut().remove(&key));
            continue;
        };
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        let outcome = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), conn.query_drop(sql)).await
        });
        match outcome {
            Ok(Ok(())) => put(key, conn, 0),
            Ok(Err(e)) => {
                CONNS.with(|c| c.borrow_mut().remove(&key));
                if commit && failure.is_none() {
                    failure = Some(MysqlWrapperError::remote("remote server", e));
                }
            }
            Err(_) => {
                CONNS.with(|c| c.borrow_mut().remove(&key));
            }
        }
    }
    if let Some(e) = failure {
        let report: pgrx::pg_sys::panic::ErrorReport = e.into();
        report.report(PgLogLevel::ERROR);
    }
}
