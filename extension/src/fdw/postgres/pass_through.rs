//! `integration.test_data_source` and `integration.query` for PostgreSQL
//! sources: the server's version, and a statement run remotely with bound
//! parameters (sent as text, so the remote types them like literals) whose
//! rows come back as jsonb built by the remote server.

use super::connection::{self, ConnKey, ConnectOptions};
use super::{PostgresWrapperError, Result};
use bytes::BytesMut;
use std::error::Error;
use supabase_wrappers::prelude::ForeignServer;
use tokio_postgres::types::{Format, IsNull, ToSql, Type};

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

/// Runs `sql` (a statement that returns rows; `$1`, `$2`, … bound to
/// `params`) inside the remote transaction and returns each row as jsonb.
pub fn query(
    server: &ForeignServer,
    sql: &str,
    params: &[Option<String>],
) -> Result<Vec<serde_json::Value>> {
    let opts = ConnectOptions::for_server(server)?;
    let key = ConnKey::current(server.server_oid);
    let client = connection::in_transaction(key, &opts)?;
    let statement = sql.trim().trim_end_matches(';');
    let wrapped = format!("WITH q AS ({statement}) SELECT pg_catalog.to_jsonb(q) FROM q");
    let params: Vec<TextParam> = params.iter().cloned().map(TextParam).collect();
    let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
    let rows = connection::wait(key, client.query(&wrapped, &refs))?
        .map_err(|e| PostgresWrapperError::remote(&server.server_name, e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
