//! Refused deliveries go to `integration.audit_log` without slowing the
//! answer: they are queued and written in batches every [`FLUSH_EVERY`]
//! through `integration.record_webhook_refusals`. Only the webhook, status,
//! reason, a short message, the source and the delivery id are sent, never a
//! body, a header or a secret. When the queue is full or the database is
//! down, refusals are dropped and counted in the metrics.

use crate::db::{describe, Database};
use crate::metrics::Metrics;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

const FLUSH_EVERY: Duration = Duration::from_millis(250);
const QUEUE: usize = 4096;
const MAX_BATCH: usize = 1000;

/// The sending side of the refusal queue.
#[derive(Clone)]
pub struct Refusals {
    queue: mpsc::Sender<Value>,
    metrics: Arc<Metrics>,
}

impl Refusals {
    pub fn start(db: Database, metrics: Arc<Metrics>) -> Refusals {
        let (queue, mut rx) = mpsc::channel::<Value>(QUEUE);
        let writer_metrics = metrics.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let n = batch.len();
                if let Err(e) = write(&db, std::mem::take(&mut batch)).await {
                    tracing::warn!(refusals = n, error = %e, "refused webhook deliveries not audited");
                    writer_metrics.count_audit_dropped(n);
                }
                tokio::time::sleep(FLUSH_EVERY).await;
            }
        });
        Refusals { queue, metrics }
    }

    /// Queues one refusal; never waits.
    pub fn record(
        &self,
        webhook: &str,
        status: u16,
        reason: &str,
        message: &str,
        source: Option<IpAddr>,
        delivery_id: Option<&str>,
    ) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let refusal = json!({
            "at_epoch": at, "webhook": webhook, "status": status, "reason": reason,
            "message": message, "source": source.map(|ip| ip.to_string()),
            "delivery_id": delivery_id,
        });
        if self.queue.try_send(refusal).is_err() {
            self.metrics.count_audit_dropped(1);
        }
    }
}

async fn write(db: &Database, batch: Vec<Value>) -> Result<(), String> {
    let client = db.client().await.map_err(|e| e.to_string())?;
    client
        .execute(
            "SELECT integration.record_webhook_refusals($1)",
            &[&Value::Array(batch)],
        )
        .await
        .map_err(|e| describe(&e))?;
    Ok(())
}
