//! Binding the listener and serving HTTP, or HTTPS when a certificate and key
//! are configured, with bounds on what a client can hold: at most
//! `--max-connections` connections (past it new ones wait in the listen
//! backlog, logged), a request head must arrive within
//! `--header-read-timeout`, and a connection on which no byte moves for
//! `--idle-timeout` is closed. On SIGTERM or SIGINT the listener closes,
//! in-flight requests get [`GRACE`] to finish, then open connections are
//! dropped and `serve` returns, so the process exits 0.

use crate::config::Config;
use axum::extract::ConnectInfo;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Time in-flight requests get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);
/// Shortest time between two "connection limit reached" log lines.
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);
/// Pause after a failed accept (such as EMFILE), so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot load the TLS certificate {} and key {}: {source}", cert.display(), key.display())]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        source: io::Error,
    },
    #[error("cannot watch for shutdown signals: {0}")]
    Signals(io::Error),
    #[error("the server stopped: {0}")]
    Io(io::Error),
}

/// What one client may hold.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
}

/// A bound listener, its TLS settings and the shutdown watch: everything that
/// can fail on bad configuration, checked before the sidecar starts serving.
pub struct Server {
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    stop: watch::Receiver<bool>,
}

impl Server {
    /// Watches signals, binds `--listen-addr` and loads the TLS files if any.
    pub async fn bind(config: &Config) -> Result<Server, ServeError> {
        let stop = watch_signals()?;
        let listener =
            std::net::TcpListener::bind(config.listen_addr).map_err(|source| ServeError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        let tls = match config.tls() {
            None => None,
            Some((cert, key)) => {
                let loaded = RustlsConfig::from_pem_file(cert, key)
                    .await
                    .map_err(|source| ServeError::Tls {
                        cert: cert.to_owned(),
                        key: key.to_owned(),
                        source,
                    })?;
                Some(TlsAcceptor::from(loaded.get_inner()))
            }
        };
        let limits = Limits {
            header_read_timeout: Duration::from_secs(config.header_read_timeout),
            idle_timeout: Duration::from_secs(config.idle_timeout),
            max_connections: config.max_connections as usize,
        };
        let local = listener.local_addr().map_err(ServeError::Io)?;
        tracing::info!(
            listen_addr = %local,
            public_url = %config.public_url(),
            tls = tls.is_some(),
            max_connections = limits.max_connections,
            header_read_timeout_s = config.header_read_timeout,
            idle_timeout_s = config.idle_timeout,
            "listening"
        );
        Ok(Server {
            listener,
            tls,
            limits,
            stop,
        })
    }

    /// Serves `app` until a shutdown signal and the grace period after it.
    pub async fn serve(self, app: Router) -> Result<(), ServeError> {
        let Server {
            listener,
            tls,
            limits,
            stop,
        } = self;
        listener.set_nonblocking(true).map_err(ServeError::Io)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(ServeError::Io)?;
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let mut last_limit_log: Option<Instant> = None;
        loop {
            // A slot first: at the cap, new connections wait in the backlog
            // (their clients are served as soon as one closes) rather than
            // each costing buffers and a task.
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    if last_limit_log.is_none_or(|at| at.elapsed() >= LIMIT_LOG_EVERY) {
                        last_limit_log = Some(Instant::now());
                        tracing::warn!(
                            max_connections = limits.max_connections,
                            "connection limit reached: new connections wait in the listen \
                             backlog until one closes (raise --max-connections if this is load)"
                        );
                    }
                    tokio::select! {
                        slot = slots.clone().acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_) => break,
                        },
                        () = stopped(stop.clone()) => break,
                    }
                }
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
                () = stopped(stop.clone()) => break,
            };
            stream.set_nodelay(true).ok();
            let (builder, app, tls, watcher) = (
                builder.clone(),
                app.clone(),
                tls.clone(),
                graceful.watcher(),
            );
            tokio::spawn(async move {
                let _slot = slot;
                let service =
                    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                        req.extensions_mut().insert(ConnectInfo(peer));
                        app.clone().oneshot(req)
                    });
                let result = match tls {
                    None => {
                        let io = TokioIo::new(Idle::new(stream, limits.idle_timeout));
                        watcher
                            .watch(builder.serve_connection_with_upgrades(io, service))
                            .await
                    }
                    Some(tls) => {
                        // The handshake is part of the request head's time.
                        let handshake = tokio::time::timeout(
                            limits.header_read_timeout,
                            tls.accept(Idle::new(stream, limits.idle_timeout)),
                        );
                        let stream = match handshake.await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        watcher
                            .watch(
                                builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service),
                            )
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection closed");
                }
            });
        }
        drop(listener);
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(GRACE) => {
                tracing::warn!(grace_s = GRACE.as_secs(), "requests still running after the grace period; dropping them");
            }
        }
        Ok(())
    }
}

/// A stream closed with `TimedOut` once no byte moved either way for its
/// timeout: an idle keep-alive connection, a stalled upload, a client that
/// stopped reading its answer.
struct Idle<S> {
    inner: S,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Idle<S> {
    fn new(inner: S, timeout: Duration) -> Idle<S> {
        Idle {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.timeout);
    }

    /// On `Pending`: whether the connection has been idle too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }

    /// A write's outcome: bytes written restart the idle clock; a write
    /// still pending past the deadline fails.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the connection was idle too long")
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.moved();
                }
                Poll::Ready(result)
            }
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Starts watching SIGTERM and SIGINT; the receiver turns `true` on the first.
fn watch_signals() -> Result<watch::Receiver<bool>, ServeError> {
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        // Nobody listening any more means the server already stopped.
        tx.send(true).ok();
    });
    Ok(rx)
}

/// Resolves once a shutdown signal arrived.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the watcher is gone, which only happens after it sent.
    stop.wait_for(|stop| *stop).await.ok();
}
