//! `integration.test_data_source` and `integration.query` for MySQL and
//! MariaDB sources: the server's version, and a statement run remotely as a
//! prepared statement (`?` placeholders) whose rows stream back as JSON
//! objects; decimals and other exact values keep their text.

use super::connection::{self, ConnKey, ConnectOptions};
use super::lent::{Lent, Sent};
use super::{MysqlWrapperError, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};
use supabase_wrappers::prelude::ForeignServer;
use tokio::sync::mpsc;

/// The remote `VERSION()`.
pub fn version(server: &ForeignServer) -> Result<String> {
    let opts = ConnectOptions::for_server(server)?;
    let version: Option<String> =
        connection::with_conn(ConnKey::current(server.server_oid), &opts, async |conn| {
            conn.query_first("SELECT VERSION()").await
        })?;
    Ok(version.unwrap_or_default())
}

fn json(value: Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::NULL => J::Null,
        Value::Int(i) => J::from(i),
        Value::UInt(u) => J::from(u),
        Value::Float(f) => J::from(f),
        Value::Double(d) => J::from(d),
        Value::Bytes(b) => match String::from_utf8(b) {
            Ok(s) => J::String(s),
            Err(e) => {
                let hex: String = e.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                J::String(format!("\\x{hex}"))
            }
        },
        Value::Date(y, mo, d, h, mi, s, us) => J::String(if (h, mi, s, us) == (0, 0, 0, 0) {
            format!("{y:04}-{mo:02}-{d:02}")
        } else {
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }),
        Value::Time(negative, days, h, mi, s, us) => J::String(format!(
            "{}{:02}:{mi:02}:{s:02}.{us:06}",
            if negative { "-" } else { "" },
            days * 24 + h as u32
        )),
    }
}

/// Rows waiting in the channel of a pass-through result.
const CHANNEL_ROWS: usize = 1000;

/// The rows of a pass-through statement as they come, each an object keyed
/// by column name (see [`Lent`]); dropped early, the rest is not read.
pub struct Rows {
    server: String,
    lent: Option<Lent<serde_json::Value>>,
}

impl Rows {
    pub fn next(&mut self) -> Result<Option<serde_json::Value>> {
        let Some(lent) = self.lent.as_mut() else {
            return Ok(None);
        };
        match lent.next()? {
            Some(Ok(row)) => Ok(Some(row)),
            Some(Err(e)) => Err(MysqlWrapperError::remote(&self.server, e)),
            None => {
                if let Some(lent) = self.lent.take() {
                    lent.close()?;
                }
                Ok(None)
            }
        }
    }
}

impl Drop for Rows {
    fn drop(&mut self) {
        if let Some(lent) = self.lent.take() {
            let _ = lent.close();
        }
    }
}

/// Reads the result of `sql` into `tx`.
async fn read(
    conn: &mut Conn,
    sql: String,
    params: Params,
    tx: &mpsc::Sender<Sent<serde_json::Value>>,
) -> std::result::Result<(), mysql_async::Error> {
    let mut result = conn.exec_iter(sql, params).await?;
    let names: Vec<String> = result
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    while let Some(row) = result.next().await? {
        let object: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .cloned()
            .zip(row.unwrap().into_iter().map(json))
            .collect();
        if tx
            .send(Ok(serde_json::Value::Object(object)))
            .await
            .is_err()
        {
            break;
        }
    }
    // The protocol needs the whole result read before the next statement.
    result.drop_result().await
}

/// Runs `sql` with `params` bound to its `?` placeholders inside the remote
/// transaction; its rows stream as they come.
pub fn query(server: &ForeignServer, sql: &str, params: &[Option<String>]) -> Result<Rows> {
    let opts = ConnectOptions::for_server(server)?;
    let values: Vec<Value> = params
        .iter()
        .map(|p| match p {
            Some(text) => Value::Bytes(text.clone().into_bytes()),
            None => Value::NULL,
        })
        .collect();
    let params = if values.is_empty() {
        Params::Empty
    } else {
        Params::Positional(values)
    };
    let sql = sql.to_string();
    let lent = Lent::open(
        ConnKey::current(server.server_oid),
        &opts,
        CHANNEL_ROWS,
        move |mut conn, tx| async move {
            let read = read(&mut conn, sql, params, &tx).await;
            // The statement may have changed the session (`SET sql_mode`,
            // `SET NAMES`, `time_zone`), and the wrapper's statements rely
            // on it: it is set up again however the result ended.
            let init = conn.query_drop(connection::SESSION_INIT).await;
            if let Err(e) = read.and(init) {
                let _ = tx.send(Err(e)).await;
            }
            conn
        },
    )?;
    Ok(Rows {
        server: server.server_name.clone(),
        lent: Some(lent),
    })
}
