//! `integration.test_data_source` and `integration.query` for MySQL and
//! MariaDB sources: the server's version, and a statement run remotely as a
//! prepared statement (`?` placeholders) whose rows come back as JSON
//! objects; decimals and other exact values keep their text.

use super::connection::{self, ConnKey, ConnectOptions};
use super::Result;
use mysql_async::prelude::Queryable;
use mysql_async::{Params, Value};
use supabase_wrappers::prelude::ForeignServer;

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

/// Runs `sql` with `params` bound to its `?` placeholders inside the remote
/// transaction; each row becomes an object keyed by column name.
pub fn query(
    server: &ForeignServer,
    sql: &str,
    params: &[Option<String>],
) -> Result<Vec<serde_json::Value>> {
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
    connection::with_conn(
        ConnKey::current(server.server_oid),
        &opts,
        async move |conn| {
            let mut result = conn.exec_iter(sql, params).await?;
            let names: Vec<String> = result
                .columns_ref()
                .iter()
                .map(|c| c.name_str().into_owned())
                .collect();
            let mut rows = Vec::new();
            while let Some(row) = result.next().await? {
                let object: serde_json::Map<String, serde_json::Value> = names
                    .iter()
                    .cloned()
                    .zip(row.unwrap().into_iter().map(json))
                    .collect();
                rows.push(serde_json::Value::Object(object));
            }
            drop(result);
            // The statement may have changed the session (`SET sql_mode`,
            // `SET NAMES`, `time_zone`): the wrapper's statements rely on
            // these, so they are set again.
            conn.query_drop(connection::SESSION_INIT).await?;
            Ok(rows)
        },
    )
}
