//! Group commit: verified events wait in a queue; each of a few workers takes
//! what is queued (waiting at most [`BATCH_WAIT`] for more once it has one),
//! stores the batch with one call of `integration.ingest_webhook_events` (a
//! prepared statement in its own transaction: one round trip), and only
//! once that committed answers each request. A batch the server refused
//! (an error answer: nothing of it was kept) is stored again one event per
//! transaction, so a bad event fails alone; a batch whose commit cannot be
//! confirmed (the connection broke) answers 503 to all its requests.

use crate::db::{describe, Database};
use crate::metrics::Metrics;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;

/// Longest a worker holding one event waits for others to join its batch.
const BATCH_WAIT: Duration = Duration::from_millis(1);
/// Most events stored by one transaction. Small batches keep several
/// transactions in flight, so both the sidecar and Postgres stay busy: on
/// 2 cores 16 stored 10–12 k events/s where 256 (batches of ~45) stored 9 k.
const MAX_BATCH: usize = 16;
/// Events waiting for a worker; a full queue answers 503 (back-pressure).
const QUEUE: usize = 8192;

const INGEST: &str = "SELECT ord, event_id, duplicate, response, error
    FROM integration.ingest_webhook_events($1, $2, $3, $4, $5, $6, $7)";

/// A verified delivery to store.
pub struct Event {
    pub webhook: i64,
    pub delivery_id: Option<String>,
    pub headers: serde_json::Value,
    pub payload: Option<serde_json::Value>,
    pub raw_body: Vec<u8>,
    pub content_type: Option<String>,
    pub source: Option<IpAddr>,
}

/// What became of one event.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Committed (or already there, when `duplicate`).
    Stored {
        event_id: i64,
        duplicate: bool,
        response: Option<serde_json::Value>,
    },
    /// The webhook's handler (or the insert) failed; nothing was kept.
    Failed(String),
    /// The webhook was dropped or disabled since the lookup.
    Gone,
    /// The database refused the event's data (SQLSTATE class 22); a retry
    /// of the same body would fail again.
    Refused(String),
    /// The database could not be reached or the commit not confirmed.
    Unavailable(String),
}

/// Connection, resources, operator intervention, serialization, internal
/// errors: the server is the problem, not an event; the sender retries.
fn server_trouble(sqlstate: &str) -> bool {
    ["08", "40", "53", "55", "57", "58", "XX"]
        .iter()
        .any(|class| sqlstate.starts_with(class))
}

/// Why a batch was not stored.
enum BatchError {
    /// The server answered with an error: the transaction rolled back, so
    /// nothing of the batch is stored and each event may be tried alone.
    Refused { sqlstate: String, message: String },
    /// No connection, or the answer never came: the outcome is unknown.
    Unavailable(String),
}

impl BatchError {
    fn from_query(e: &tokio_postgres::Error) -> BatchError {
        match e.as_db_error() {
            Some(db) => BatchError::Refused {
                sqlstate: db.code().code().to_owned(),
                message: describe(e),
            },
            None => BatchError::Unavailable(format!(
                "the batch was not confirmed committed: {}",
                describe(e)
            )),
        }
    }

    /// The outcome of one event that failed alone with this error.
    fn outcome(self) -> Outcome {
        match self {
            BatchError::Refused { sqlstate, message } if sqlstate.starts_with("22") => {
                Outcome::Refused(message)
            }
            // Connection, resources, operator intervention, serialization:
            // the server is the problem, not the event; the sender retries.
            BatchError::Refused { sqlstate, message } if server_trouble(&sqlstate) => {
                Outcome::Unavailable(message)
            }
            BatchError::Refused { message, .. } => Outcome::Failed(message),
            BatchError::Unavailable(reason) => Outcome::Unavailable(reason),
        }
    }
}

struct Job {
    event: Event,
    reply: oneshot::Sender<Outcome>,
}

/// The sending side of the queue.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts `workers` workers storing through `db`.
    pub fn start(db: Database, metrics: Arc<Metrics>, workers: usize) -> Committer {
        let (queue, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..workers.max(1) {
            let (rx, db, metrics) = (rx.clone(), db.clone(), metrics.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx).await {
                    metrics.observe_webhook_batch(batch.len());
                    store(&db, batch).await;
                }
            });
        }
        Committer { queue }
    }

    /// Queues `event` and waits until its transaction ended.
    pub async fn submit(&self, event: Event) -> Outcome {
        let (reply, answer) = oneshot::channel();
        if let Err(e) = self.queue.try_send(Job { event, reply }) {
            return Outcome::Unavailable(
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        "too many events waiting for the database"
                    }
                    mpsc::error::TrySendError::Closed(_) => "the sidecar is stopping",
                }
                .to_owned(),
            );
        }
        answer.await.unwrap_or_else(|_| {
            Outcome::Unavailable("the event was dropped before its commit".to_owned())
        })
    }
}

/// The next batch: the first queued job, then whatever arrives within
/// [`BATCH_WAIT`], up to [`MAX_BATCH`]. `None` once the queue is closed.
async fn next_batch(rx: &Mutex<mpsc::Receiver<Job>>) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = vec![first];
    let deadline = Instant::now() + BATCH_WAIT;
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => batch.push(job),
                _ => break,
            },
        }
    }
    Some(batch)
}

async fn store(db: &Database, batch: Vec<Job>) {
    match commit(db, &batch).await {
        Ok(outcomes) => answer(batch, outcomes),
        Err(BatchError::Refused { sqlstate, message })
            if batch.len() > 1 && !server_trouble(&sqlstate) =>
        {
            tracing::warn!(
                events = batch.len(),
                %sqlstate,
                error = %message,
                "webhook batch refused; storing its events one by one"
            );
            for job in batch {
                let outcome = match commit(db, std::slice::from_ref(&job)).await {
                    Ok(mut outcomes) => outcomes.pop().unwrap_or_else(too_few_rows),
                    Err(e) => e.outcome(),
                };
                job.reply.send(outcome).ok();
            }
        }
        Err(e) => {
            let outcome = e.outcome();
            tracing::warn!(events = batch.len(), ?outcome, "webhook batch not stored");
            for job in batch {
                job.reply.send(outcome.clone()).ok();
            }
        }
    }
}

/// Answers each job with its outcome, in order.
fn answer(batch: Vec<Job>, outcomes: Vec<Outcome>) {
    let mut outcomes = outcomes.into_iter();
    for job in batch {
        let outcome = outcomes.next().unwrap_or_else(too_few_rows);
        // A receiver that went away (client hung up) needs no answer.
        job.reply.send(outcome).ok();
    }
}

fn too_few_rows() -> Outcome {
    Outcome::Unavailable("the database returned too few rows".to_owned())
}

async fn commit(db: &Database, batch: &[Job]) -> Result<Vec<Outcome>, BatchError> {
    let client = db
        .client()
        .await
        .map_err(|e| BatchError::Unavailable(e.to_string()))?;
    let events = batch.iter().map(|job| &job.event);
    let webhooks: Vec<i64> = events.clone().map(|e| e.webhook).collect();
    let delivery_ids: Vec<Option<&str>> =
        events.clone().map(|e| e.delivery_id.as_deref()).collect();
    let headers: Vec<&serde_json::Value> = events.clone().map(|e| &e.headers).collect();
    let payloads: Vec<Option<&serde_json::Value>> =
        events.clone().map(|e| e.payload.as_ref()).collect();
    let bodies: Vec<&[u8]> = events.clone().map(|e| e.raw_body.as_slice()).collect();
    let types: Vec<Option<&str>> = events.clone().map(|e| e.content_type.as_deref()).collect();
    let sources: Vec<Option<IpAddr>> = events.map(|e| e.source).collect();
    // One statement in its own implicit transaction: the rows arrive with
    // ReadyForQuery, which the server sends only after the commit, so one
    // round trip stores the batch (a failed commit is an error here).
    let statement = client
        .prepare_cached(INGEST)
        .await
        .map_err(|e| BatchError::Unavailable(describe(&e)))?;
    let rows = client
        .query(
            &statement,
            &[
                &webhooks,
                &delivery_ids,
                &headers,
                &payloads,
                &bodies,
                &types,
                &sources,
            ],
        )
        .await
        .map_err(|e| BatchError::from_query(&e))?;
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(rows.len());
    for row in rows {
        let outcome = (|| -> Result<Outcome, tokio_postgres::Error> {
            let error: Option<String> = row.try_get("error")?;
            Ok(match (error, row.try_get::<_, Option<i64>>("event_id")?) {
                (Some(e), _) if e == "webhook_gone" => Outcome::Gone,
                (Some(e), _) => Outcome::Failed(e),
                (None, Some(event_id)) => Outcome::Stored {
                    event_id,
                    duplicate: row.try_get("duplicate")?,
                    response: row.try_get("response")?,
                },
                (None, None) => Outcome::Failed("no event id returned".to_owned()),
            })
        })()
        .unwrap_or_else(|e| Outcome::Failed(describe(&e)));
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
