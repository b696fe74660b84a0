//! Configuration kept current from the database: a dedicated connection
//! LISTENs on a channel, loads once, then reloads after each committed change
//! (changes arriving together cause one reload). On a lost connection it
//! reconnects with backoff and reloads, so changes made meanwhile are seen.
//! Webhooks and SSO providers both use it.

use crate::db::{describe, Database};
use futures_util::future::{poll_fn, BoxFuture};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

/// Changes arriving this close together cause one reload.
const DEBOUNCE: Duration = Duration::from_millis(20);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Something that loads itself from the database.
pub trait Reload: Clone + Send + Sync + 'static {
    /// What is loaded, for log lines ("webhook configuration").
    const WHAT: &'static str;
    /// The notification channel that announces a change.
    const CHANNEL: &'static str;
    /// Loads everything again on `client`.
    fn reload<'a>(
        &'a self,
        client: &'a tokio_postgres::Client,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// Keeps `target` current for as long as the process runs.
pub fn spawn_reloader<R: Reload>(target: R, db: Database) {
    tokio::spawn(async move {
        let mut retry = RETRY_MIN;
        loop {
            let (loaded, reason) = listen_and_reload(&target, &db).await;
            if loaded {
                retry = RETRY_MIN;
            }
            tracing::warn!(error = %reason, retry_ms = retry.as_millis() as u64,
                "{} listener lost; keeping the last configuration", R::WHAT);
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    });
}

/// Connects, LISTENs, loads, then reloads on every notification until the
/// connection ends; says whether a load succeeded and why it ended.
async fn listen_and_reload<R: Reload>(target: &R, db: &Database) -> (bool, String) {
    let (client, mut connection) = match db.connect_dedicated().await {
        Ok(dedicated) => dedicated,
        Err(e) => return (false, e.to_string()),
    };
    let mut loaded = false;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => return describe(&e),
            }
        }
        "the connection closed".to_owned()
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {}", R::CHANNEL))
            .await
            .map_err(|e| describe(&e))?;
        target.reload(&client).await?;
        loaded = true;
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            target.reload(&client).await?;
        }
        Ok::<(), String>(())
    }
    .await;
    drop(client);
    let ended = driver.await.unwrap_or_else(|e| e.to_string());
    (loaded, result.err().unwrap_or(ended))
}
