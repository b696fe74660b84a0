//! Binding the listener and serving HTTP, or HTTPS when a certificate and key
//! are configured. On SIGTERM or SIGINT the listener closes, in-flight
//! requests get [`GRACE`] to finish, then open connections are dropped and
//! `serve` returns, so the process exits 0.

use crate::config::Config;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Time in-flight requests get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(10);

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

/// A bound listener, its TLS settings and the shutdown watch: everything that
/// can fail on bad configuration, checked before the sidecar starts serving.
pub struct Server {
    listener: std::net::TcpListener,
    tls: Option<RustlsConfig>,
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
            Some((cert, key)) => Some(RustlsConfig::from_pem_file(cert, key).await.map_err(
                |source| ServeError::Tls {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                    source,
                },
            )?),
        };
        let local = listener.local_addr().map_err(ServeError::Io)?;
        tracing::info!(
            listen_addr = %local,
            public_url = %config.public_url(),
            tls = tls.is_some(),
            "listening"
        );
        Ok(Server {
            listener,
            tls,
            stop,
        })
    }

    /// Serves `app` until a shutdown signal and the grace period after it.
    pub async fn serve(self, app: Router) -> Result<(), ServeError> {
        match self.tls {
            None => serve_http(self.listener, app, self.stop).await,
            Some(tls) => serve_https(self.listener, tls, app, self.stop).await,
        }
    }
}

async fn serve_http(
    listener: std::net::TcpListener,
    app: Router,
    stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    listener.set_nonblocking(true).map_err(ServeError::Io)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(ServeError::Io)?;
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop.clone()));
    tokio::select! {
        result = server => result.map_err(ServeError::Io),
        () = async { stopped(stop).await; tokio::time::sleep(GRACE).await } => {
            tracing::warn!(grace_s = GRACE.as_secs(), "requests still running after the grace period; dropping them");
            Ok(())
        }
    }
}

async fn serve_https(
    listener: std::net::TcpListener,
    tls: RustlsConfig,
    app: Router,
    stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let handle = axum_server::Handle::new();
    let on_stop = handle.clone();
    tokio::spawn(async move {
        stopped(stop).await;
        on_stop.graceful_shutdown(Some(GRACE));
    });
    axum_server::from_tcp_rustls(listener, tls)
        .map_err(ServeError::Io)?
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .map_err(ServeError::Io)
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
