//! A result read by a task on a connection lent by the transaction: rows
//! come through a channel of bounded size, so a result of any size takes
//! bounded memory here; the connection comes back when the result ends, or
//! when the reader stops early (the remote statement is then killed).

use super::connection::{self, ConnKey, ConnectOptions};
use super::Result;
use mysql_async::Conn;
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// What the reading task sends: a row, or the error that ended the result.
pub type Sent<T> = std::result::Result<T, mysql_async::Error>;

pub struct Lent<T> {
    rows: mpsc::Receiver<Sent<T>>,
    conn: Option<oneshot::Receiver<Conn>>,
    /// The transaction's own connection (else one opened for this result).
    cached: bool,
    /// The task reading the result, aborted when it cannot be stopped.
    task: tokio::task::JoinHandle<()>,
    key: ConnKey,
    /// Who stops the remote statement when the local query is cancelled.
    opts: ConnectOptions,
    connection_id: u32,
}

impl<T: Send + 'static> Lent<T> {
    /// Lends the connection to `read`, which sends the rows (at most
    /// `capacity` wait in the channel) and returns the connection.
    pub fn open<F, Fut>(
        key: ConnKey,
        opts: &ConnectOptions,
        capacity: usize,
        read: F,
    ) -> Result<Lent<T>>
    where
        F: FnOnce(Conn, mpsc::Sender<Sent<T>>) -> Fut,
        Fut: Future<Output = Conn> + Send + 'static,
    {
        let (conn, cached) = connection::lend(key, opts)?;
        let connection_id = conn.id();
        let (tx, rows) = mpsc::channel(capacity.max(1));
        let (conn_tx, conn_rx) = oneshot::channel();
        let reading = read(conn, tx);
        let task = connection::runtime()?.spawn(async move {
            let _ = conn_tx.send(reading.await);
        });
        Ok(Lent {
            rows,
            conn: Some(conn_rx),
            cached,
            task,
            key,
            opts: opts.clone(),
            connection_id,
        })
    }

    /// The next row; None at the end. A local cancel kills the remote
    /// statement.
    pub fn next(&mut self) -> Result<Option<Sent<T>>> {
        // A row already there needs no wait (and no timer).
        Ok(match self.rows.try_recv() {
            Ok(row) => Some(row),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                let rt = connection::runtime()?;
                let kill = connection::kill_query(self.opts.clone(), self.connection_id);
                crate::fdw::wait_cancellable(&rt, self.rows.recv(), kill)
            }
        })
    }

    /// Hands the connection back. A result read to its end gives it back
    /// at once. The rest of one the reader stopped early (a LIMIT, a local
    /// filter that found enough) is not waited for, as it may never end:
    /// the remote statement is killed, and a connection that is not back
    /// within a few seconds is dropped (a remote transaction on it is lost:
    /// the local commit then fails).
    pub fn close(mut self) -> Result<()> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        self.rows.close();
        let back = match conn.try_recv() {
            Ok(conn) => Some(conn),
            Err(oneshot::error::TryRecvError::Closed) => None,
            Err(oneshot::error::TryRecvError::Empty) => {
                let rt = connection::runtime()?;
                let kill = connection::kill_query(self.opts.clone(), self.connection_id);
                let stopped = async {
                    kill.await;
                    tokio::time::timeout(Duration::from_secs(5), conn)
                        .await
                        .ok()?
                        .ok()
                };
                crate::fdw::wait_cancellable(&rt, stopped, async {})
            }
        };
        match back {
            Some(conn) => connection::give_back(self.key, conn, self.cached),
            None => {
                self.task.abort();
                if self.cached {
                    connection::lost(self.key);
                }
            }
        }
        Ok(())
    }
}
