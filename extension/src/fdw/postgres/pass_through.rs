//! `integration.test_data_source` and `integration.query` for PostgreSQL
//! sources: the server's version, and a statement run remotely with bound
//! parameters (sent as text, so the remote types them like literals) whose
//! rows come back as jsonb built by the remote server.

use super::connection::{self, ConnKey, ConnectOptions};
use super::{PostgresWrapperError, Result};
use bytes::BytesMut;
use std::cell::Cell;
use std::collections::VecDeque;
use std::error::Error;
use std::rc::Rc;
use supabase_wrappers::prelude::ForeignServer;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};
use tokio_postgres::Client;

/// A parameter in text format: the remote parses it as the type it infers.
#[derive(Debug)]
struct TextParam(Option<String>);

impl ToSql for TextParam {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn Error + Sync + Send>> {
        match &self.0 {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The remote `version()`, over a connection of its own.
pub fn version(server: &ForeignServer) -> Result<String> {
    let opts = ConnectOptions::for_server(server)?;
    let client = connection::in_transaction(ConnKey::current(server.server_oid), &opts)?;
    let rt = connection::runtime()?;
    let row = rt
        .block_on(client.query_one("SELECT pg_catalog.version()", &[]))
        .map_err(|e| PostgresWrapperError::remote(&server.server_name, e))?;
    Ok(row.get(0))
}

/// Rows a pass-through cursor fetches at a time.
const FETCH: usize = 1000;

/// The rows of a pass-through statement as they come: a remote cursor read
/// [`FETCH`] rows at a time, so a result of any size takes bounded memory
/// here and a caller that stops early never reads the rest.
pub struct Rows {
    server: String,
    key: ConnKey,
    client: Rc<Client>,
    fetch: String,
    close: String,
    batch: VecDeque<serde_json::Value>,
    done: bool,
}

thread_local! {
    static CURSORS: Cell<u64> = const { Cell::new(0) };
}

impl Rows {
    /// The next row, fetching the next batch when needed.
    pub fn next(&mut self) -> Result<Option<serde_json::Value>> {
        if self.batch.is_empty() && !self.done {
            let rows = connection::wait(self.key, self.client.query(&self.fetch, &[]))?
                .map_err(|e| PostgresWrapperError::remote(&self.server, e))?;
            self.done = rows.len() < FETCH;
            self.batch
                .extend(rows.iter().map(|r| r.get::<_, serde_json::Value>(0)));
            if self.done {
                // Read to its end: the cursor goes now, not at the end of
                // the remote transaction (a loop of calls would pile them up).
                connection::wait(self.key, self.client.batch_execute(&self.close))?
                    .map_err(|e| PostgresWrapperError::remote(&self.server, e))?;
            }
        }
        Ok(self.batch.pop_front())
    }
}

/// Runs `sql` (a statement that returns rows; `$1`, `$2`, … bound to
/// `params`) inside the remote transaction; its rows come back as jsonb
/// built by the remote server, through a cursor for a query, whole for a
/// data-modifying statement (a cursor refuses those).
pub fn query(server: &ForeignServer, sql: &str, params: &[Option<String>]) -> Result<Rows> {
    let opts = ConnectOptions::for_server(server)?;
    let key = ConnKey::current(server.server_oid);
    let client = connection::in_transaction(key, &opts)?;
    let statement = sql.trim().trim_end_matches(';');
    let params: Vec<TextParam> = params.iter().cloned().map(TextParam).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let wrapped = format!("WITH q AS ({statement}) SELECT pg_catalog.to_jsonb(q) FROM q");
    if !integration_core::sql_dialect::postgres_query_fits_a_cursor(statement) {
        let rows = connection::wait(key, client.query(&wrapped, &refs))?
            .map_err(|e| PostgresWrapperError::remote(&server.server_name, e))?;
        return Ok(Rows {
            server: server.server_name.clone(),
            key,
            client,
            fetch: String::new(),
            close: String::new(),
            batch: rows.iter().map(|r| r.get(0)).collect(),
            done: true,
        });
    }
    let n = CURSORS.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let cursor = format!("pg_integration_query_{n}");
    let declare = format!("DECLARE {cursor} NO SCROLL CURSOR FOR {wrapped}");
    connection::wait(key, client.execute(&declare, &refs))?
        .map_err(|e| PostgresWrapperError::remote(&server.server_name, e))?;
    Ok(Rows {
        server: server.server_name.clone(),
        key,
        client,
        fetch: format!("FETCH {FETCH} FROM {cursor}"),
        close: format!("CLOSE {cursor}"),
        batch: VecDeque::new(),
        done: false,
    })
}
