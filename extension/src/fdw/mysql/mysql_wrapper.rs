//! The `ForeignDataWrapper` implementation of `mysql_wrapper`: options,
//! scans streamed through a bounded channel, writes by primary key.

use super::connection::{self, ConnKey, ConnectOptions};
use super::deparse::{self, Mysql};
use super::{decode, import};
use super::{MysqlWrapperError, Result};
use crate::fdw::aggregate::{self, Source};
use crate::fdw::hooks;
use crate::fdw::options::{self, Allowed};
use crate::fdw::planner::{self, PlanFacts};
use crate::fdw::statements::{self, InsertBatch, ScanRequest};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::{HashMap, VecDeque};
use supabase_wrappers::prelude::Aggregate;
use supabase_wrappers::prelude::*;
use tokio::sync::{mpsc, oneshot};

const SERVER_OPTIONS: &[&str] = &[
    "host",
    "port",
    "dbname",
    "fetch_size",
    "batch_size",
    "ssl_mode",
    "ssl_ca",
];
const TABLE_OPTIONS: &[&str] = &[
    "dbname",
    "table_name",
    "rowid_column",
    "primary_key",
    "fetch_size",
    "batch_size",
];

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
    /// Set at planning when every condition goes remote.
    aggregate_source: Option<Source>,
    scan: Option<Scan>,
    modify: Option<Modify>,
}

/// Where a scan's rows come from.
enum Rows {
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
    source: Rows,
    columns: Vec<Column>,
    /// Per column: an average, read as the remote SUM and COUNT.
    averages: Vec<bool>,
    /// What a rescan runs again.
    sql: String,
    options: HashMap<String, String>,
}

struct Modify {
    table: String,
    key: Vec<String>,
    rowid: String,
    inserts: InsertBatch,
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

impl MysqlWrapper {
    fn key(&self) -> ConnKey {
        ConnKey::current(self.server.server_oid)
    }

    fn connect_options(&self) -> Result<ConnectOptions> {
        ConnectOptions::for_server(&self.server)
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

    fn size(&self, options: &HashMap<String, String>, name: &str, default: usize) -> Result<usize> {
        Ok(options::positive(
            options,
            &self.server.options,
            name,
            default,
        )?)
    }

    fn not_null(options: &HashMap<String, String>) -> Vec<String> {
        options
            .get("wrappers.ftable_oid")
            .and_then(|o| o.parse().ok())
            .map(planner::not_null_columns)
            .unwrap_or_default()
    }

    /// Offers aggregate pushdown when every condition goes remote.
    fn offer_aggregates(
        &mut self,
        quals: &[Qual],
        columns: &[Column],
        options: &HashMap<String, String>,
    ) -> Result<()> {
        self.aggregate_source = aggregate::offer::<Mysql>(&ScanRequest {
            table: &self.remote_table(options)?,
            key: &statements::primary_key(options)?,
            quals,
            columns,
            sorts: &[],
            limit: &None,
            facts: self.facts,
            not_null: &Self::not_null(options),
        });
        Ok(())
    }

    fn build_select(
        &self,
        quals: &[Qual],
        columns: &[Column],
        sorts: &[Sort],
        limit: &Option<Limit>,
        options: &HashMap<String, String>,
    ) -> Result<String> {
        let not_null = Self::not_null(options);
        statements::select::<Mysql>(&ScanRequest {
            table: &self.remote_table(options)?,
            key: &statements::primary_key(options)?,
            quals,
            columns,
            sorts,
            limit,
            facts: self.facts,
            not_null: &not_null,
        })
    }

    /// Runs `sql`, whose rows read as `columns` (`averages`: see [`Scan`]).
    fn open(
        &mut self,
        sql: String,
        columns: Vec<Column>,
        averages: Vec<bool>,
        options: &HashMap<String, String>,
    ) -> Result<()> {
        let opts = self.connect_options()?;
        let statement = sql.clone();
        let source = if self.facts.modifying {
            let rows = connection::with_conn(self.key(), &opts, async move |conn| {
                let mut result = conn.query_iter(sql).await?;
                let mut rows = VecDeque::new();
                while let Some(row) = result.next().await? {
                    rows.push_back(row.unwrap_raw());
                }
                Ok(rows)
            })?;
            Rows::Buffered(rows)
        } else {
            let fetch_size = self.size(options, "fetch_size", 1000)?;
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
            Rows::Stream {
                rows: rx,
                conn: Some(conn_rx),
                cached,
            }
        };
        self.scan = Some(Scan {
            source,
            columns,
            averages,
            sql: statement,
            options: options.clone(),
        });
        Ok(())
    }

    fn execute(&self, sql: String) -> Result<()> {
        connection::with_conn(self.key(), &self.connect_options()?, async move |conn| {
            conn.query_drop(sql).await
        })
    }
}

impl ForeignDataWrapper<MysqlWrapperError> for MysqlWrapper {
    fn new(server: ForeignServer) -> Result<Self> {
        Ok(MysqlWrapper {
            server,
            facts: PlanFacts::default(),
            aggregate_source: None,
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
        self.offer_aggregates(quals, columns, options)?;
        planner::rel_size(options, columns, limit, || {
            self.build_select(quals, columns, sorts, limit, options)
        })
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
        self.open(sql, columns.to_vec(), Vec::new(), options)
    }

    fn supported_aggregates(&self) -> Vec<AggregateKind> {
        aggregate::SUPPORTED.to_vec()
    }

    fn supports_group_by(&self) -> bool {
        true
    }

    fn begin_aggregate_scan(
        &mut self,
        aggregates: &[Aggregate],
        group_by: &[Column],
        _quals: &[Qual],
        options: &HashMap<String, String>,
    ) -> Result<()> {
        let Some(source) = &self.aggregate_source else {
            return Err(MysqlWrapperError::Unsupported(
                "aggregate pushed down over a condition that stays local".into(),
            ));
        };
        let sql = statements::aggregate_select::<Mysql>(
            &source.table,
            &source.conditions,
            group_by,
            aggregates,
            &source.not_null,
        )?;
        let averages = group_by
            .iter()
            .map(|_| false)
            .chain(aggregates.iter().map(|a| a.kind == AggregateKind::Avg))
            .collect();
        let columns = aggregate::result_columns(aggregates, group_by);
        self.open(sql, columns, averages, options)
    }

    fn iter_scan(&mut self, row: &mut Row) -> Result<Option<()>> {
        let server = self.server.server_name.clone();
        let Some(scan) = self.scan.as_mut() else {
            return Ok(None);
        };
        let remote = match &mut scan.source {
            Rows::Buffered(rows) => rows.pop_front(),
            Rows::Stream { rows, .. } => {
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
        let mut values = remote.iter_mut().map(Option::take);
        for (i, col) in scan.columns.iter().enumerate() {
            let value = values.next().flatten();
            let cell = if scan.averages.get(i).copied().unwrap_or(false) {
                let count = values.next().flatten();
                deparse::average(
                    decode::cell(value, &col.name, pg_sys::NUMERICOID)?,
                    decode::cell(count, &col.name, pg_sys::NUMERICOID)?,
                )
            } else {
                decode::cell(value, &col.name, col.type_oid)?
            };
            row.push(&col.name, cell);
        }
        Ok(Some(()))
    }

    /// The inner side of a nested loop reads its rows again: the statement
    /// runs again.
    fn re_scan(&mut self) -> Result<()> {
        let Some(scan) = self.scan.as_ref() else {
            return Ok(());
        };
        let (sql, columns, averages, options) = (
            scan.sql.clone(),
            scan.columns.clone(),
            scan.averages.clone(),
            scan.options.clone(),
        );
        self.end_scan()?;
        self.open(sql, columns, averages, &options)
    }

    fn end_scan(&mut self) -> Result<()> {
        let key = self.key();
        if let Some(Scan {
            source:
                Rows::Stream {
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
        let key = statements::primary_key(options)?;
        let table = self.remote_table(options)?;
        self.modify = Some(Modify {
            inserts: InsertBatch::new(
                table.clone(),
                key.len() > 1,
                self.size(options, "batch_size", 100)?,
            ),
            table,
            key,
            rowid: options.get("rowid_column").cloned().unwrap_or_default(),
        });
        Ok(())
    }

    fn insert(&mut self, row: &Row) -> Result<()> {
        let ready = match self.modify.as_mut() {
            Some(modify) => modify.inserts.push::<Mysql>(row)?,
            None => return Ok(()),
        };
        for sql in ready {
            self.execute(sql)?;
        }
        Ok(())
    }

    fn update(&mut self, rowid: &Cell, new_row: &Row) -> Result<()> {
        let Some(modify) = self.modify.as_ref() else {
            return Ok(());
        };
        let condition = statements::key_condition::<Mysql>(&modify.key, &modify.rowid, rowid)?;
        match statements::update::<Mysql>(&modify.table, modify.key.len() > 1, new_row, &condition)?
        {
            Some(sql) => self.execute(sql),
            None => Ok(()),
        }
    }

    fn delete(&mut self, rowid: &Cell) -> Result<()> {
        let Some(modify) = self.modify.as_ref() else {
            return Ok(());
        };
        let condition = statements::key_condition::<Mysql>(&modify.key, &modify.rowid, rowid)?;
        self.execute(format!("DELETE FROM {} WHERE {condition}", modify.table))
    }

    fn end_modify(&mut self) -> Result<()> {
        let last = self.modify.as_mut().and_then(|m| m.inserts.flush());
        if let Some(sql) = last {
            self.execute(sql)?;
        }
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
        hooks::install_shared_hooks!(routine);
        aggregate::hook_aggregates!(routine, Mysql);
    }

    fn validator(options: Vec<Option<String>>, catalog: Option<pg_sys::Oid>) -> Result<()> {
        let allowed = Allowed {
            server: SERVER_OPTIONS,
            table: TABLE_OPTIONS,
        };
        options::validate(&options, catalog, &allowed)?;
        Ok(connection::TLS_OPTIONS.check(&options)?)
    }
}
