//! The `ForeignDataWrapper` implementation of `mysql_wrapper`: options,
//! scans streamed through a bounded channel, writes by primary key.

use super::connection::{self, ConnKey, ConnectOptions};
use super::deparse::{self, ColumnInfo};
use super::{decode, import};
use super::{MysqlWrapperError, Result};
use crate::fdw::options::{user_mapping, validator_names};
use crate::fdw::planner::{self, PlanFacts};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;
use supabase_wrappers::prelude::*;
use tokio::sync::{mpsc, oneshot};

const SERVER_OPTIONS: &[&str] = &["host", "port", "dbname", "fetch_size", "batch_size"];
const TABLE_OPTIONS: &[&str] = &[
    "dbname",
    "table_name",
    "rowid_column",
    "primary_key",
    "fetch_size",
    "batch_size",
];
const MAPPING_OPTIONS: &[&str] = &["user", "password"];

/// The column a composite primary key is read into (a JSON array of the
/// key's values as text), used as supabase-wrappers' single rowid.
pub const COMPOSITE_ROWID: &str = "__rowid";

type RemoteRow = Vec<Option<Value>>;

#[wrappers_fdw(
    version = "0.1.0",
    author = "pg_integration",
    website = "https://github.com/pg-integration",
    error_type = "MysqlWrapperError"
)]
pub struct MysqlWrapper {
    server: ForeignServer,
    facts: PlanFacts,
    scan: Option<Scan>,
    modify: Option<Modify>,
}

/// Where a scan's rows come from.
enum Source {
    /// A task streams the result through a channel of `fetch_size` rows; it
    /// hands the connection back when the result is read to its end.
    Stream {
        rows: mpsc::Receiver<std::result::Result<RemoteRow, mysql_async::Error>>,
        conn: Option<oneshot::Receiver<Conn>>,
        cached: bool,
    },
    /// The whole result, for scans under UPDATE/DELETE, which need the
    /// connection while the scan is open.
    Buffered(VecDeque<RemoteRow>),
}

struct Scan {
    source: Source,
    columns: Vec<Column>,
}

struct Modify {
    table: String,
    key: Vec<String>,
    rowid: String,
    batch_size: usize,
    insert_columns: Option<String>,
    pending: Vec<String>,
}

static INNER_REL_SIZE: OnceLock<pg_sys::GetForeignRelSize_function> = OnceLock::new();

#[pg_guard]
unsafe extern "C-unwind" fn rel_size(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    table: pg_sys::Oid,
) {
    if let Some(Some(inner)) = INNER_REL_SIZE.get() {
        // SAFETY: the planner's arguments, passed through unchanged.
        unsafe { planner::with_facts(root, baserel, || inner(root, baserel, table)) };
    }
}

fn parse_positive(options: &HashMap<String, String>, name: &str, default: usize) -> Result<usize> {
    match options.get(name) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(MysqlWrapperError::option(
                name,
                "must be a positive integer",
            )),
        },
    }
}

async fn stream(
    conn: &mut Conn,
    sql: String,
    tx: &mpsc::Sender<std::result::Result<RemoteRow, mysql_async::Error>>,
) -> std::result::Result<(), mysql_async::Error> {
    let mut result = conn.query_iter(sql).await?;
    while let Some(row) = result.next().await? {
        if tx.send(Ok(row.unwrap_raw())).await.is_err() {
            break;
        }
    }
    // Reads what the scan did not want: the protocol needs the whole result.
    result.drop_result().await
}

fn column_info<'a>(c: &'a Column, not_null: &[String]) -> ColumnInfo<'a> {
    ColumnInfo {
        name: &c.name,
        local: c.type_oid,
        not_null: not_null.contains(&c.name),
    }
}

impl MysqlWrapper {
    fn key(&self) -> ConnKey {
        ConnKey {
            server: self.server.server_oid,
            // SAFETY: plain catalog state of this backend.
            user: unsafe { pg_sys::GetUserId() },
        }
    }

    fn connect_options(&self) -> Result<ConnectOptions> {
        let server = &self.server.options;
        let mapping = user_mapping(self.server.server_oid);
        Ok(ConnectOptions {
            server_name: self.server.server_name.clone(),
            host: server
                .get("host")
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into()),
            port: match server.get("port") {
                None => 3306,
                Some(p) => p
                    .parse()
                    .map_err(|_| MysqlWrapperError::option("port", "must be a TCP port"))?,
            },
            dbname: server.get("dbname").cloned(),
            user: mapping.get("user").cloned().ok_or_else(|| {
                MysqlWrapperError::option("user", "the user mapping needs a user")
            })?,
            password: mapping.get("password").cloned(),
        })
    }

    fn remote_table(&self, options: &HashMap<String, String>) -> Result<String> {
        let table = options
            .get("table_name")
            .ok_or_else(|| MysqlWrapperError::option("table_name", "is required"))?;
        match options.get("dbname").or(self.server.options.get("dbname")) {
            Some(db) => Ok(format!(
                "{}.{}",
                deparse::ident(db)?,
                deparse::ident(table)?
            )),
            None => deparse::ident(table),
        }
    }

    fn primary_key(options: &HashMap<String, String>) -> Result<Vec<String>> {
        match options.get("primary_key") {
            Some(json) => serde_json::from_str(json).map_err(|_| {
                MysqlWrapperError::option("primary_key", "must be a JSON array of column names")
            }),
            None => Ok(options.get("rowid_column").into_iter().cloned().collect()),
        }
    }

    fn option_size(
        &self,
        options: &HashMap<String, String>,
        name: &str,
        default: usize,
    ) -> Result<usize> {
        match options.get(name) {
            Some(_) => parse_positive(options, name, default),
            None => parse_positive(&self.server.options, name, default),
        }
    }

    fn build_select(
        &self,
        quals: &[Qual],
        columns: &[Column],
        sorts: &[Sort],
        limit: &Option<Limit>,
        options: &HashMap<String, String>,
    ) -> Result<String> {
        let key = Self::primary_key(options)?;
        let not_null = options
            .get("wrappers.ftable_oid")
            .and_then(|o| o.parse().ok())
            .map(planner::not_null_columns)
            .unwrap_or_default();
        let mut select = Vec::with_capacity(columns.len());
        for c in columns {
            if c.name == COMPOSITE_ROWID && key.len() > 1 {
                let parts = key
                    .iter()
                    .map(|k| deparse::ident(k).map(|k| format!("CAST({k} AS CHAR)")))
                    .collect::<Result<Vec<_>>>()?;
                select.push(format!("JSON_ARRAY({})", parts.join(", ")));
            } else {
                select.push(deparse::select_expr(&column_info(c, &not_null))?);
            }
        }
        if select.is_empty() {
            select.push("NULL".into());
        }
        let mut sql = format!(
            "SELECT {} FROM {}",
            select.join(", "),
            self.remote_table(options)?
        );
        let by_name: HashMap<&str, &Column> =
            columns.iter().map(|c| (c.name.as_str(), c)).collect();
        let conds: Vec<String> = quals
            .iter()
            .filter(|q| q.field != COMPOSITE_ROWID)
            .filter_map(|q| {
                by_name
                    .get(q.field.as_str())
                    .and_then(|c| deparse::qual(q, &column_info(c, &not_null)))
            })
            .collect();
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        if let Some(limit) = limit {
            let keys: Vec<String> = sorts
                .iter()
                .filter_map(|s| {
                    by_name
                        .get(s.field.as_str())
                        .and_then(|c| deparse::sort_key(s, &column_info(c, &not_null)))
                })
                .collect();
            if self.facts.limit_pushable(conds.len(), keys.len()) && keys.len() == sorts.len() {
                if !keys.is_empty() {
                    sql.push_str(" ORDER BY ");
                    sql.push_str(&keys.join(", "));
                }
                // The local Limit node applies OFFSET again: fetch both.
                sql.push_str(&format!(
                    " LIMIT {}",
                    limit.count.saturating_add(limit.offset)
                ));
            }
        }
        Ok(sql)
    }

    fn execute(&self, sql: String) -> Result<()> {
        connection::with_conn(self.key(), &self.connect_options()?, async move |conn| {
            conn.query_drop(sql).await
        })
    }

    fn flush_inserts(&mut self) -> Result<()> {
        let Some(modify) = self.modify.as_mut() else {
            return Ok(());
        };
        if modify.pending.is_empty() {
            return Ok(());
        }
        let Some(columns) = &modify.insert_columns else {
            return Ok(());
        };
        let sql = format!(
            "INSERT INTO {} {} VALUES {}",
            modify.table,
            columns,
            modify.pending.join(", ")
        );
        modify.pending.clear();
        self.execute(sql)
    }

    fn key_condition(modify: &Modify, rowid: &Cell) -> Result<String> {
        if modify.key.len() > 1 {
            let Cell::String(json) = rowid else {
                return Err(MysqlWrapperError::Value("composite key is not text".into()));
            };
            let values: Vec<Option<String>> = serde_json::from_str(json).map_err(|_| {
                MysqlWrapperError::Value("composite key is not a JSON array".into())
            })?;
            if values.len() != modify.key.len() {
                return Err(MysqlWrapperError::Value(
                    "composite key has the wrong arity".into(),
                ));
            }
            let parts = modify
                .key
                .iter()
                .zip(values)
                .map(|(k, v)| match v {
                    Some(v) => Ok(format!(
                        "{} = {}",
                        deparse::ident(k)?,
                        deparse::literal(&v)?
                    )),
                    None => Ok(format!("{} IS NULL", deparse::ident(k)?)),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(parts.join(" AND "))
        } else {
            Ok(format!(
                "{} = {}",
                deparse::ident(&modify.rowid)?,
                deparse::cell_literal(rowid)?
            ))
        }
    }
}

impl ForeignDataWrapper<MysqlWrapperError> for MysqlWrapper {
    fn new(server: ForeignServer) -> Result<Self> {
        Ok(MysqlWrapper {
            server,
            facts: PlanFacts::default(),
            scan: None,
            modify: None,
        })
    }

    fn get_rel_size(
        &mut self,
        quals: &[Qual],
        columns: &[Column],
        sorts: &[Sort],
        limit: &Option<Limit>,
        options: &HashMap<String, String>,
    ) -> Result<(i64, i32)> {
        self.facts = planner::current_facts();
        if let Some(table) = options
            .get("wrappers.ftable_oid")
            .and_then(|o| o.parse().ok())
        {
            let sql = self.build_select(quals, columns, sorts, limit, options)?;
            planner::remember_remote_sql(table, sql);
        }
        Ok((
            if limit.is_some() { 100 } else { 100_000 },
            8 * columns.len().max(1) as i32,
        ))
    }

    fn begin_scan(
        &mut self,
        quals: &[Qual],
        columns: &[Column],
        sorts: &[Sort],
        limit: &Option<Limit>,
        options: &HashMap<String, String>,
    ) -> Result<()> {
        let sql = self.build_select(quals, columns, sorts, limit, options)?;
        let opts = self.connect_options()?;
        let source = if self.facts.modifying {
            let rows = connection::with_conn(self.key(), &opts, async move |conn| {
                let mut result = conn.query_iter(sql).await?;
                let mut rows = VecDeque::new();
                while let Some(row) = result.next().await? {
                    rows.push_back(row.unwrap_raw());
                }
                Ok(rows)
            })?;
            Source::Buffered(rows)
        } else {
            let fetch_size = self.option_size(options, "fetch_size", 1000)?;
            let (mut conn, cached) = connection::lend(self.key(), &opts)?;
            let (tx, rx) = mpsc::channel(fetch_size);
            let (conn_tx, conn_rx) = oneshot::channel();
            let rt = connection::runtime()?;
            rt.spawn(async move {
                if let Err(e) = stream(&mut conn, sql, &tx).await {
                    let _ = tx.send(Err(e)).await;
                }
                let _ = conn_tx.send(conn);
            });
            Source::Stream {
                rows: rx,
                conn: Some(conn_rx),
                cached,
            }
        };
        self.scan = Some(Scan {
            source,
            columns: columns.to_vec(),
        });
        Ok(())
    }

    fn iter_scan(&mut self, row: &mut Row) -> Result<Option<()>> {
        let server = self.server.server_name.clone();
        let Some(scan) = self.scan.as_mut() else {
            return Ok(None);
        };
        let remote = match &mut scan.source {
            Source::Buffered(rows) => rows.pop_front(),
            Source::Stream { rows, .. } => {
                let rt = connection::runtime()?;
                match rt.block_on(rows.recv()) {
                    Some(Ok(values)) => Some(values),
                    Some(Err(e)) => return Err(MysqlWrapperError::remote(&server, e)),
                    None => None,
                }
            }
        };
        let Some(mut remote) = remote else {
            return Ok(None);
        };
        for (i, col) in scan.columns.iter().enumerate() {
            let value = remote.get_mut(i).and_then(Option::take);
            row.push(&col.name, decode::cell(value, &col.name, col.type_oid)?);
        }
        Ok(Some(()))
    }

    fn end_scan(&mut self) -> Result<()> {
        let key = self.key();
        if let Some(Scan {
            source:
                Source::Stream {
                    rows,
                    conn: Some(conn),
                    cached,
                },
            ..
        }) = self.scan.take()
        {
            drop(rows);
            let rt = connection::runtime()?;
            if let Ok(conn) = rt.block_on(conn) {
                connection::give_back(key, conn, cached);
            }
        }
        Ok(())
    }

    fn begin_modify(&mut self, options: &HashMap<String, String>) -> Result<()> {
        self.modify = Some(Modify {
            table: self.remote_table(options)?,
            key: Self::primary_key(options)?,
            rowid: options.get("rowid_column").cloned().unwrap_or_default(),
            batch_size: self.option_size(options, "batch_size", 100)?,
            insert_columns: None,
            pending: Vec::new(),
        });
        Ok(())
    }

    fn insert(&mut self, row: &Row) -> Result<()> {
        let (columns, values) = {
            let Some(modify) = self.modify.as_ref() else {
                return Ok(());
            };
            let mut names = Vec::new();
            let mut values = Vec::new();
            for (name, cell) in row.iter() {
                if name == COMPOSITE_ROWID && modify.key.len() > 1 {
                    continue;
                }
                names.push(deparse::ident(name)?);
                values.push(match cell {
                    Some(cell) => deparse::cell_literal(cell)?,
                    None => "NULL".into(),
                });
            }
            (format!("({})", names.join(", ")), values)
        };
        let same_columns = self
            .modify
            .as_ref()
            .is_some_and(|m| m.insert_columns.as_deref() == Some(columns.as_str()));
        if !same_columns {
            self.flush_inserts()?;
        }
        let full = {
            let Some(modify) = self.modify.as_mut() else {
                return Ok(());
            };
            modify.insert_columns = Some(columns);
            modify.pending.push(format!("({})", values.join(", ")));
            modify.pending.len() >= modify.batch_size
        };
        if full {
            self.flush_inserts()?;
        }
        Ok(())
    }

    fn update(&mut self, rowid: &Cell, new_row: &Row) -> Result<()> {
        let Some(modify) = self.modify.as_ref() else {
            return Ok(());
        };
        let mut sets = Vec::new();
        for (name, cell) in new_row.iter() {
            if name == COMPOSITE_ROWID {
                continue;
            }
            let value = match cell {
                Some(cell) => deparse::cell_literal(cell)?,
                None => "NULL".into(),
            };
            sets.push(format!("{} = {value}", deparse::ident(name)?));
        }
        if sets.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE {} SET {} WHERE {}",
            modify.table,
            sets.join(", "),
            Self::key_condition(modify, rowid)?
        );
        self.execute(sql)
    }

    fn delete(&mut self, rowid: &Cell) -> Result<()> {
        let Some(modify) = self.modify.as_ref() else {
            return Ok(());
        };
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            modify.table,
            Self::key_condition(modify, rowid)?
        );
        self.execute(sql)
    }

    fn end_modify(&mut self) -> Result<()> {
        self.flush_inserts()?;
        self.modify = None;
        Ok(())
    }

    fn import_foreign_schema(&mut self, stmt: ImportForeignSchemaStmt) -> Result<Vec<String>> {
        let schema = import::schema_literal(&stmt.remote_schema)?;
        let catalog =
            connection::with_conn(self.key(), &self.connect_options()?, async move |conn| {
                import::read_catalog(conn, &schema).await
            })?;
        import::statements(&stmt, catalog)
    }

    fn fdw_routine_hook(routine: &mut PgBox<pg_sys::FdwRoutine, pgrx::AllocatedByRust>) {
        let _ = INNER_REL_SIZE.set(routine.GetForeignRelSize);
        routine.GetForeignRelSize = Some(rel_size);
        routine.ExplainForeignScan = Some(planner::explain_remote_sql);
    }

    fn validator(options: Vec<Option<String>>, catalog: Option<pg_sys::Oid>) -> Result<()> {
        let allowed: &[&str] = match catalog {
            Some(FOREIGN_SERVER_RELATION_ID) => SERVER_OPTIONS,
            Some(FOREIGN_TABLE_RELATION_ID) => TABLE_OPTIONS,
            Some(oid) if oid == pg_sys::UserMappingRelationId => MAPPING_OPTIONS,
            _ => return Ok(()),
        };
        for name in validator_names(&options) {
            if !allowed.contains(&name.as_str()) {
                return Err(MysqlWrapperError::option(
                    &name,
                    format!("is not valid here; valid options: {}", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }
}
