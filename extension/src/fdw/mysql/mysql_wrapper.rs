//! The `ForeignDataWrapper` implementation of `mysql_wrapper`: options,
//! scans streamed through a bounded channel, writes by primary key.

use super::connection::{self, ConnKey, ConnectOptions};
use super::deparse::{self, Mysql};
use super::lent::Lent;
use super::{decode, import};
use super::{MysqlWrapperError, Result};
use crate::fdw::aggregate;
use crate::fdw::hooks;
use crate::fdw::options::{self, Allowed};
use crate::fdw::planner;
use crate::fdw::scan::{self, RemoteRows, ScanPlan};
use crate::fdw::statements::{self, InsertBatch, ScanRequest};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::{HashMap, VecDeque};
use supabase_wrappers::prelude::*;
use tokio::sync::mpsc;

const SERVER_OPTIONS: &[&str] = &[
    "host",
    "port",
    "dbname",
    "fetch_size",
    "batch_size",
    "ssl_mode",
    "ssl_ca",
    integration_core::data_sources::PLAIN_PASSWORD_OPTION,
];
const MAPPING_OPTIONS: &[&str] = &["user", "password", "ssl_cert", "ssl_key"];
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
    modify: Option<Modify>,
}

/// Where a scan's rows come from.
enum Rows {
    /// A task streams the result through a channel of `fetch_size` rows.
    Stream(Box<Lent<RemoteRow>>),
    /// The whole result, for scans under UPDATE/DELETE, which need the
    /// connection while the scan is open.
    Buffered(VecDeque<RemoteRow>),
}

/// A scan's remote result being read.
pub struct Reading {
    server: String,
    source: Rows,
}

impl RemoteRows for Reading {
    type Dialect = Mysql;
    type Error = MysqlWrapperError;

    /// Streams the result, or reads it whole under UPDATE/DELETE, which
    /// need the connection while the scan is open.
    fn open(plan: &ScanPlan, sql: String) -> Result<Reading> {
        let server = options::foreign_server(plan.server.into());
        let opts = ConnectOptions::for_server(&server)?;
        let key = ConnKey::current(server.server_oid);
        let source = if plan.modifying {
            let rows = connection::with_conn(key, &opts, async move |conn| {
                let mut result = conn.query_iter(sql).await?;
                let mut rows = VecDeque::new();
                while let Some(row) = result.next().await? {
                    rows.push_back(row.unwrap_raw());
                }
                Ok(rows)
            })?;
            Rows::Buffered(rows)
        } else {
            Rows::Stream(Box::new(Lent::open(
                key,
                &opts,
                plan.fetch_size,
                move |mut conn, tx| async move {
                    if let Err(e) = stream(&mut conn, sql, &tx).await {
                        let _ = tx.send(Err(e)).await;
                    }
                    conn
                },
            )?))
        };
        Ok(Reading {
            server: server.server_name,
            source,
        })
    }

    fn next(&mut self, plan: &ScanPlan, cells: &mut Vec<Option<Cell>>) -> Result<bool> {
        let remote = match &mut self.source {
            Rows::Buffered(rows) => rows.pop_front(),
            Rows::Stream(lent) => match lent.next()? {
                Some(Ok(values)) => Some(values),
                Some(Err(e)) => return Err(MysqlWrapperError::remote(&self.server, e)),
                None => None,
            },
        };
        let Some(mut remote) = remote else {
            return Ok(false);
        };
        let announced = plan.columns.len() + plan.columns.iter().filter(|c| c.average).count();
        // A row shorter than its result's columns would read as NULLs.
        if remote.len() < announced {
            return Err(MysqlWrapperError::Value(format!(
                "the remote row has {} values where {announced} were selected",
                remote.len()
            )));
        }
        let mut values = remote.iter_mut().map(Option::take);
        for col in &plan.columns {
            let value = values.next().flatten();
            cells.push(if col.average {
                let count = values.next().flatten();
                deparse::average(
                    decode::cell(value, &col.name, pg_sys::NUMERICOID)?,
                    decode::cell(count, &col.name, pg_sys::NUMERICOID)?,
                )
            } else {
                decode::cell(value, &col.name, col.type_oid.into())?
            });
        }
        Ok(true)
    }

    /// Hands a streamed result's connection back (see [`Lent::close`]).
    fn close(self) -> Result<()> {
        match self.source {
            Rows::Stream(lent) => lent.close(),
            Rows::Buffered(_) => Ok(()),
        }
    }
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

    /// The scan's plan, and aggregate pushdown offered when every
    /// condition goes remote.
    fn plan(
        &self,
        quals: &[Qual],
        columns: &[Column],
        sorts: &[Sort],
        limit: &Option<Limit>,
        options: &HashMap<String, String>,
    ) -> Result<ScanPlan> {
        let table = self.remote_table(options)?;
        let key = statements::primary_key(options)?;
        let not_null = Self::not_null(options);
        let mut req = ScanRequest {
            table: &table,
            key: &key,
            quals,
            columns,
            sorts: &[],
            limit: &None,
            facts: planner::current_facts(),
            not_null: &not_null,
        };
        aggregate::offer::<Mysql>(&req);
        req.sorts = sorts;
        req.limit = limit;
        statements::scan_plan::<Mysql>(
            &req,
            self.server.server_oid.to_u32(),
            self.size(options, "fetch_size", 1000)?,
        )
    }

    /// Runs a write; warnings (not notes) the remote gave for it refuse it,
    /// as strict mode would have refused the value: what was written is
    /// not what was asked for.
    fn execute(&self, sql: String) -> Result<()> {
        let warnings =
            connection::with_conn(self.key(), &self.connect_options()?, async move |conn| {
                conn.query_drop(sql).await?;
                if conn.get_warnings() == 0 {
                    return Ok(Vec::new());
                }
                let shown: Vec<(String, u32, String)> = conn.query("SHOW WARNINGS").await?;
                Ok(shown
                    .into_iter()
                    .filter(|(level, _, _)| !level.eq_ignore_ascii_case("note"))
                    .collect())
            })?;
        match warnings.first() {
            None => Ok(()),
            Some((level, code, message)) => Err(MysqlWrapperError::Remote {
                server: format!("remote server \"{}\"", self.server.server_name),
                code: Some("22000".into()),
                message: format!(
                    "the write was refused: the remote gave {} warning(s), first {level} {code}: {message}",
                    warnings.len()
                ),
            }),
        }
    }
}

impl ForeignDataWrapper<MysqlWrapperError> for MysqlWrapper {
    fn new(server: ForeignServer) -> Result<Self> {
        Ok(MysqlWrapper {
            server,
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
        let plan = self.plan(quals, columns, sorts, limit, options)?;
        let size = planner::rel_size(columns, plan.order_limit.is_some());
        scan::offer(plan);
        Ok(size)
    }

    fn begin_scan(
        &mut self,
        _quals: &[Qual],
        _columns: &[Column],
        _sorts: &[Sort],
        _limit: &Option<Limit>,
        _options: &HashMap<String, String>,
    ) -> Result<()> {
        Err(MysqlWrapperError::Unsupported(
            scan::NOT_THROUGH_SUPABASE.into(),
        ))
    }

    fn supported_aggregates(&self) -> Vec<AggregateKind> {
        aggregate::SUPPORTED.to_vec()
    }

    fn supports_group_by(&self) -> bool {
        true
    }

    fn iter_scan(&mut self, _row: &mut Row) -> Result<Option<()>> {
        Err(MysqlWrapperError::Unsupported(
            scan::NOT_THROUGH_SUPABASE.into(),
        ))
    }

    fn end_scan(&mut self) -> Result<()> {
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
        let last = match self.modify.as_mut() {
            Some(modify) => modify.inserts.flush::<Mysql>()?,
            None => None,
        };
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
        hooks::install_shared_hooks!(routine, Reading, Mysql);
    }

    fn validator(options: Vec<Option<String>>, catalog: Option<pg_sys::Oid>) -> Result<()> {
        let allowed = Allowed {
            server: SERVER_OPTIONS,
            table: TABLE_OPTIONS,
            mapping: MAPPING_OPTIONS,
        };
        options::validate(&options, catalog, &allowed)?;
        Ok(connection::TLS_OPTIONS.check(&options)?)
    }
}
