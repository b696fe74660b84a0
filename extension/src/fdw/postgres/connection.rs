//! Connections of `postgres_wrapper`: one per backend, foreign server and
//! user, kept for the life of the backend and re-established when the remote
//! side dropped it. The first use inside a local transaction opens a remote
//! REPEATABLE READ transaction that commits in the local PRE_COMMIT and rolls
//! back on local abort, so a local ROLLBACK leaves the remote untouched.
//! TLS (`sslmode`, `sslrootcert`) always verifies the server's certificate.

use super::tls::RustlsConnect;
use super::{PostgresWrapperError, Result};
use crate::fdw::options::{self, Endpoint};
use crate::fdw::tls::{self, TlsMode, TlsOptionNames, TlsSettings};
use crate::fdw::xact;
pub use crate::fdw::ConnKey;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use supabase_wrappers::prelude::ForeignServer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{CancelToken, Client, Config, NoTls, Socket};
use tokio_rustls::rustls::ClientConfig;

/// Where and how to connect; the password never leaves this struct.
#[derive(Clone)]
pub struct ConnectOptions {
    pub server_name: String,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    pub tls: TlsSettings,
    /// The server may ask for the password in clear text on a connection
    /// without TLS.
    pub cleartext_allowed: bool,
}

/// libpq's names. `require` verifies like `verify-full` (libpq's `require`
/// does not verify at all); `allow` and `prefer`, which may fall back to
/// plain text, are not offered.
pub const TLS_OPTIONS: TlsOptionNames = TlsOptionNames {
    mode: "sslmode",
    root_cert: "sslrootcert",
    client_cert: "sslcert",
    client_key: "sslkey",
    values: &[
        ("disable", TlsMode::Disable),
        ("require", TlsMode::VerifyFull),
        ("verify-ca", TlsMode::VerifyCa),
        ("verify-full", TlsMode::VerifyFull),
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
        } = options::endpoint(server_def, 5432)?;
        let tls = TLS_OPTIONS.settings(server, &mapping, &host)?;
        let cleartext_allowed =
            TLS_OPTIONS.password_without_tls(server, &host, &tls, password.is_some())?;
        Ok(ConnectOptions {
            server_name: server_def.server_name.clone(),
            host,
            port,
            dbname: server
                .get("dbname")
                .cloned()
                .unwrap_or_else(|| "postgres".into()),
            user,
            password,
            connect_timeout: Duration::from_secs(options::positive(
                server,
                server,
                "connect_timeout",
                10,
            )? as u64),
            tls,
            cleartext_allowed,
        })
    }
}

/// What cancels a statement running on a connection: its cancel key, sent
/// over a connection of its own with the same TLS settings.
#[derive(Clone)]
struct Canceller {
    token: CancelToken,
    /// TLS, or where to connect without it (the connection was opened on
    /// a socket of ours, which the token does not know).
    tls: std::result::Result<Arc<ClientConfig>, (String, u16)>,
}

impl Canceller {
    async fn cancel(self) {
        let _ = match self.tls {
            Err((host, port)) => match TcpStream::connect((host.as_str(), port)).await {
                Ok(stream) => self.token.cancel_query_raw(stream, NoTls).await,
                Err(_) => return,
            },
            Ok(config) => self.token.cancel_query(RustlsConnect(config)).await,
        };
    }
}

/// What the server said first, read to end its authentication:
/// `AuthenticationCleartextPassword` ('R', code 3) on a connection
/// without TLS is refused before the password is sent.
struct NoCleartext<S> {
    inner: S,
    /// The message header being read (type and length).
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to pass; the first four of
    /// an 'R' are its code.
    left: usize,
    code: [u8; 4],
    code_have: usize,
    /// Authentication ended (ok or error): nothing more is looked at.
    done: bool,
}

impl<S> NoCleartext<S> {
    fn new(inner: S) -> NoCleartext<S> {
        NoCleartext {
            inner,
            header: [0; 5],
            have: 0,
            left: 0,
            code: [0; 4],
            code_have: 0,
            done: false,
        }
    }

    /// Follows the messages in `bytes`; an error for a cleartext request.
    fn scan(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !self.done && !bytes.is_empty() {
            if self.have < 5 {
                let take = (5 - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have == 5 {
                    let length = u32::from_be_bytes([
                        self.header[1],
                        self.header[2],
                        self.header[3],
                        self.header[4],
                    ]);
                    self.left = (length as usize).saturating_sub(4);
                    self.code_have = 0;
                    if self.header[0] == b'E' {
                        self.done = true;
                    }
                    if self.left == 0 {
                        self.have = 0;
                    }
                }
                continue;
            }
            let take = self.left.min(bytes.len());
            if self.header[0] == b'R' && self.code_have < 4 {
                let n = (4 - self.code_have).min(take);
                self.code[self.code_have..self.code_have + n].copy_from_slice(&bytes[..n]);
                self.code_have += n;
                if self.code_have == 4 {
                    match u32::from_be_bytes(self.code) {
                        0 => self.done = true,
                        3 => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::PermissionDenied,
                                format!(
                                    "the server asked for the password in clear text on a connection \
                                     without TLS; refused (use TLS, or set {} 'true' on the server)",
                                    integration_core::data_sources::PLAIN_PASSWORD_OPTION
                                ),
                            ))
                        }
                        _ => {}
                    }
                }
            }
            self.left -= take;
            bytes = &bytes[take..];
            if self.left == 0 {
                self.have = 0;
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoCleartext<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if !this.done => Poll::Ready(this.scan(&buf.filled()[before..])),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoCleartext<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects without TLS on a socket of ours, which refuses a cleartext
/// password request unless allowed.
async fn open_plain(
    config: &Config,
    opts: &ConnectOptions,
    rt: &Runtime,
) -> std::result::Result<Client, PostgresWrapperError> {
    let stream = TcpStream::connect((opts.host.as_str(), opts.port))
        .await
        .map_err(|e| PostgresWrapperError::Remote {
            server: crate::fdw::remote_at(&opts.server_name, &opts.host, opts.port),
            code: None,
            message: format!("cannot connect: {e}"),
        })?;
    let _ = stream.set_nodelay(true);
    let mut guarded = NoCleartext::new(stream);
    guarded.done = opts.cleartext_allowed;
    let (client, connection) = config
        .connect_raw(guarded, NoTls)
        .await
        .map_err(|e| connect_failed(opts, e))?;
    rt.spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

struct Conn {
    client: Rc<Client>,
    canceller: Canceller,
    /// 0: no remote transaction; n ≥ 1: one, with savepoints for the local
    /// nesting levels 2..=n (see `fdw::xact`).
    depth: i32,
    /// A subtransaction's rollback failed: the remote transaction must
    /// not commit.
    broken: bool,
}

thread_local! {
    static CONNS: RefCell<HashMap<ConnKey, Conn>> = RefCell::new(HashMap::new());
}

/// The backend's runtime (shared by the wrappers).
pub fn runtime() -> Result<Rc<Runtime>> {
    crate::fdw::runtime().map_err(PostgresWrapperError::Runtime)
}

/// A connection failure, naming the host and the cause (TLS errors keep
/// rustls' reason: unknown issuer, name mismatch, no TLS on the server).
fn connect_failed(opts: &ConnectOptions, e: tokio_postgres::Error) -> PostgresWrapperError {
    if e.as_db_error().is_some() {
        return PostgresWrapperError::remote(&opts.server_name, e);
    }
    let message = crate::fdw::error_chain(&e);
    PostgresWrapperError::Remote {
        server: crate::fdw::remote_at(&opts.server_name, &opts.host, opts.port),
        code: None,
        message,
    }
}

/// Connects with `tls` and runs the connection on the backend's runtime.
async fn open<T>(
    config: &Config,
    tls: T,
    rt: &Runtime,
) -> std::result::Result<Client, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    rt.spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn connect(opts: &ConnectOptions, rt: &Runtime) -> Result<(Client, Canceller)> {
    let mut config = Config::new();
    config
        .host(&opts.host)
        .port(opts.port)
        .dbname(&opts.dbname)
        .user(&opts.user)
        .application_name("pg_integration postgres_wrapper")
        .connect_timeout(opts.connect_timeout);
    if let Some(password) = &opts.password {
        config.password(password);
    }
    let tls = match opts.tls.mode {
        TlsMode::Disable => None,
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            Some(tls::client_config(&opts.tls, &TLS_OPTIONS)?)
        }
    };
    let handshake = async {
        match &tls {
            None => {
                config.ssl_mode(SslMode::Disable);
                open_plain(&config, opts, rt).await
            }
            Some(tls_config) => {
                config.ssl_mode(SslMode::Require);
                open(&config, RustlsConnect(tls_config.clone()), rt)
                    .await
                    .map_err(|e| connect_failed(opts, e))
            }
        }
    };
    // connect_timeout bounds the TCP connect only: a server that accepts
    // and then says nothing would hold the backend for ever.
    let client = tokio::time::timeout(opts.connect_timeout, handshake)
        .await
        .map_err(|_| PostgresWrapperError::Remote {
            server: crate::fdw::remote_at(&opts.server_name, &opts.host, opts.port),
            code: None,
            message: format!(
                "no answer to the connection handshake within {} s (connect_timeout)",
                opts.connect_timeout.as_secs()
            ),
        })??;
    let canceller = Canceller {
        token: client.cancel_token(),
        tls: tls.ok_or_else(|| (opts.host.clone(), opts.port)),
    };
    // Text that goes back to the same server (composite keys, literals)
    // must read the same way it was written.
    client
        .batch_execute(
            "SET datestyle = ISO; SET intervalstyle = postgres; SET extra_float_digits = 3; \
             SET timezone = 'UTC'",
        )
        .await
        .map_err(|e| PostgresWrapperError::remote(&opts.server_name, e))?;
    Ok((client, canceller))
}

/// A connection ready for use inside the current local transaction: reused
/// when cached and alive, re-established when the remote dropped it, with a
/// remote transaction open and a savepoint for each local subtransaction.
pub fn in_transaction(key: ConnKey, opts: &ConnectOptions) -> Result<Rc<Client>> {
    let rt = runtime()?;
    xact::register();
    let level = xact::local_level();
    let remote = |e| PostgresWrapperError::remote(&opts.server_name, e);
    let cached = CONNS.with(|c| {
        c.borrow()
            .get(&key)
            .map(|conn| (conn.client.clone(), conn.depth, conn.broken))
    });
    let canceller = CONNS.with(|c| c.borrow().get(&key).map(|conn| conn.canceller.clone()));
    if let Some((client, depth, broken)) = &cached {
        if *broken {
            return Err(PostgresWrapperError::Unsupported(xact::broken_message(
                key.server,
            )));
        }
        if *depth > 0 {
            if *depth < level {
                rt.block_on(client.batch_execute(&xact::savepoints(*depth, level).join("; ")))
                    .map_err(remote)?;
                set_depth(key, level);
            }
            return Ok(client.clone());
        }
    }
    let mut begin = vec!["START TRANSACTION ISOLATION LEVEL REPEATABLE READ".to_string()];
    begin.extend(xact::savepoints(1, level));
    let begin = begin.join("; ");
    if let (Some((client, _, _)), Some(canceller)) = (cached, canceller) {
        if !client.is_closed() {
            match rt.block_on(client.batch_execute(&begin)) {
                Ok(()) => {
                    mark(key, client.clone(), canceller, level);
                    return Ok(client);
                }
                // A server error on BEGIN is real; a dropped socket or a
                // terminated session (57P*, 08*) means: connect again.
                Err(e)
                    if e.as_db_error().is_some_and(|db| {
                        let code = db.code().code();
                        !code.starts_with("57P") && !code.starts_with("08")
                    }) =>
                {
                    return Err(remote(e));
                }
                Err(_) => {}
            }
        }
        CONNS.with(|c| c.borrow_mut().remove(&key));
    }
    let (client, canceller) = crate::fdw::wait_cancellable(&rt, connect(opts, &rt), async {})?;
    let client = Rc::new(client);
    rt.block_on(client.batch_execute(&begin)).map_err(remote)?;
    mark(key, client.clone(), canceller, level);
    Ok(client)
}

fn mark(key: ConnKey, client: Rc<Client>, canceller: Canceller, depth: i32) {
    CONNS.with(|c| {
        c.borrow_mut().insert(
            key,
            Conn {
                client,
                canceller,
                depth,
                broken: false,
            },
        );
    });
}

fn set_depth(key: ConnKey, depth: i32) {
    CONNS.with(|c| {
        if let Some(conn) = c.borrow_mut().get_mut(&key) {
            conn.depth = depth;
        }
    });
}

/// Waits for `work`, a statement on `key`'s connection; a local cancel
/// (statement_timeout, pg_cancel_backend) cancels it remotely too.
pub fn wait<T>(key: ConnKey, work: impl std::future::Future<Output = T>) -> Result<T> {
    let rt = runtime()?;
    let canceller = CONNS.with(|c| c.borrow().get(&key).map(|conn| conn.canceller.clone()));
    Ok(crate::fdw::wait_cancellable(&rt, work, async move {
        if let Some(canceller) = canceller {
            canceller.cancel().await;
        }
    }))
}

/// True while a remote transaction of this backend is open.
pub fn in_remote_transaction() -> bool {
    CONNS.with(|c| c.borrow().values().any(|conn| conn.depth > 0))
}

/// Ends the savepoint of the local subtransaction at `level` on every
/// connection that holds one. A failed release raises (the subtransaction
/// aborts, and its savepoint is rolled back to); a failed rollback marks
/// the remote transaction broken, and the local commit then fails.
pub fn end_savepoints(level: i32, commit: bool) {
    let Ok(rt) = runtime() else { return };
    let holding: Vec<(ConnKey, Rc<Client>)> = CONNS.with(|c| {
        c.borrow()
            .iter()
            .filter(|(_, conn)| conn.depth >= level && !conn.broken)
            .map(|(key, conn)| (*key, conn.client.clone()))
            .collect()
    });
    for (key, client) in holding {
        let sql = xact::end_savepoint(level, commit).join("; ");
        let outcome = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), client.batch_execute(&sql)).await
        });
        let ok = matches!(outcome, Ok(Ok(())));
        // A failed release keeps the savepoint: the subtransaction aborts
        // and rolls back to it.
        if ok || !commit {
            CONNS.with(|c| {
                if let Some(conn) = c.borrow_mut().get_mut(&key) {
                    conn.depth = level - 1;
                    conn.broken = !ok;
                }
            });
        }
        if commit && !ok {
            let server = crate::fdw::options::foreign_server(key.server).server_name;
            let error = match outcome {
                Ok(Err(e)) => PostgresWrapperError::remote(&server, e),
                _ => PostgresWrapperError::Remote {
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

/// Commits (before the local commit) or rolls back every remote transaction
/// this backend opened. A failed COMMIT raises, which aborts the local
/// transaction; so does committing a broken remote transaction, after
/// rolling back everything. A failed ROLLBACK drops the connection, which
/// makes the remote server roll back.
pub fn finish_remote_transactions(commit: bool) {
    let Ok(rt) = runtime() else { return };
    let open: Vec<(ConnKey, Rc<Client>, bool)> = CONNS.with(|c| {
        c.borrow_mut()
            .iter_mut()
            .filter(|(_, conn)| conn.depth > 0)
            .map(|(key, conn)| {
                conn.depth = 0;
                (*key, conn.client.clone(), std::mem::take(&mut conn.broken))
            })
            .collect()
    });
    let mut failure = open
        .iter()
        .find(|(_, _, broken)| commit && *broken)
        .map(|(key, _, _)| PostgresWrapperError::Unsupported(xact::broken_message(key.server)));
    let commit = commit && failure.is_none();
    for (key, client, _) in open {
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        let outcome = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), client.batch_execute(sql)).await
        });
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                CONNS.with(|c| c.borrow_mut().remove(&key));
                if commit && failure.is_none() {
                    failure = Some(PostgresWrapperError::remote("remote server", e));
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
