//! The `ForeignDataWrapper` implementation of `postgres_wrapper`: option
//! handling, streamed scans with pushdown, and writes by primary key with
//! RETURNING of the rows the remote wrote.

use super::connection::{self, ConnKey, ConnectOptions};
use super::decode;
use super::deparse::{self, Postgres};
use super::import;
use super::{PostgresWrapperError, Result};
use crate::fdw::aggregate;
use crate::fdw::hooks;
use crate::fdw::options::{self, Allowed};
use crate::fdw::planner;
use crate::fdw::returning;
use crate::fdw::scan::{self, RemoteRows, ScanPlan};
use crate::fdw::statements::{self, InsertBatch, ScanRequest};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use supabase_wrappers::prelude::*;
use tokio_postgres::{Client, Statement};

const SERVER_OPTIONS: &[&str] = &[
    "host",
    "port",
    "dbname",
    "fetch_size",
    "batch_size",
    "connect_timeout",
    "sslmode",
    "sslrootcert",
    integration_core::data_sources::PLAIN_PASSWORD_OPTION,
];
const MAPPING_OPTIONS: &[&str] = &["user", "password", "sslcert", "sslkey"];
const TABLE_OPTIONS: &[&str] = &[
    "schema_name",
    "table_name",
    "rowid_column",
    "primary_key",
    "fetch_size",
    "batch_size",
];

#[wrappers_fdw(
    version = "0.1.0",
    author = "pg_integration",
    website = "https://github.com/pg-integration",
    error_type = "PostgresWrapperError"
)]
pub struct PostgresWrapper {
    server: ForeignServer,
    modify: Option<Modify>,
}

/// A scan's open remote cursor and the rows fetched but not yet returned.
pub struct Cursor {
    server: String,
    key: ConnKey,
    client: Rc<Client>,
    name: String,
    fetch: Statement,
    fetch_size: usize,
    buffered: VecDeque<tokio_postgres::Row>,
    exhausted: bool,
}

impl RemoteRows for Cursor {
    type Dialect = Postgres;
    type Error = PostgresWrapperError;

    fn open(plan: &ScanPlan, sql: String) -> Result<Cursor> {
        let server = options::foreign_server(plan.server.into());
        let key = ConnKey::current(server.server_oid);
        let client = connection::in_transaction(key, &ConnectOptions::for_server(&server)?)?;
        let seq = CURSOR_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("pg_integration_c{seq}");
        let remote = |e| PostgresWrapperError::remote(&server.server_name, e);
        // DECLARE plans the query remotely, which can take long: a local
        // cancel reaches it, as it reaches each FETCH.
        connection::wait(
            key,
            client.batch_execute(&format!("DECLARE {name} NO SCROLL CURSOR FOR {sql}")),
        )?
        .map_err(remote)?;
        let fetch = connection::wait(
            key,
            client.prepare(&format!("FETCH {} FROM {name}", plan.fetch_size)),
        )?
        .map_err(remote)?;
        Ok(Cursor {
            server: server.server_name,
            key,
            client,
            name,
            fetch,
            fetch_size: plan.fetch_size,
            buffered: VecDeque::new(),
            exhausted: false,
        })
    }

    fn next(&mut self, plan: &ScanPlan, cells: &mut Vec<Option<Cell>>) -> Result<bool> {
        if self.buffered.is_empty() && !self.exhausted {
            let rows = connection::wait(self.key, self.client.query(&self.fetch, &[]))?
                .map_err(|e| PostgresWrapperError::remote(&self.server, e))?;
            self.exhausted = rows.len() < self.fetch_size;
            self.buffered = rows.into();
        }
        let Some(remote) = self.buffered.pop_front() else {
            return Ok(false);
        };
        for (i, col) in plan.columns.iter().enumerate() {
            cells.push(decode::cell(&remote, i, &col.name, col.type_oid.into())?);
        }
        Ok(true)
    }

    fn close(self) -> Result<()> {
        // The remote transaction ends the cursor anyway; closing it early
        // frees the remote memory of long transactions.
        let _ = connection::wait(
            self.key,
            self.client.batch_execute(&format!("CLOSE {}", self.name)),
        )?;
        Ok(())
    }
}

struct Modify {
    client: Rc<Client>,
    table: String,
    key: Vec<String>,
    rowid: String,
    inserts: InsertBatch,
}

static CURSOR_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl PostgresWrapper {
    fn connect_options(&self) -> Result<ConnectOptions> {
        ConnectOptions::for_server(&self.server)
    }

    fn key(&self) -> ConnKey {
        ConnKey::current(self.server.server_oid)
    }

    fn client(&self) -> Result<Rc<Client>> {
        connection::in_transaction(self.key(), &self.connect_options()?)
    }

    fn remote_table(options: &HashMap<String, String>) -> Result<String> {
        let table = options
            .get("table_name")
            .ok_or_else(|| PostgresWrapperError::option("table_name", "is required"))?;
        let schema = options
            .get("schema_name")
            .map(String::as_str)
            .unwrap_or("public");
        Ok(format!(
            "{}.{}",
            deparse::ident(schema)?,
            deparse::ident(table)?
        ))
    }

    fn size(&self, options: &HashMap<String, String>, name: &str, default: usize) -> Result<usize> {
        Ok(options::positive(
            options,
            &self.server.options,
            name,
            default,
        )?)
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
        let table = Self::remote_table(options)?;
        let key = statements::primary_key(options)?;
        let mut req = ScanRequest {
            table: &table,
            key: &key,
            quals,
            columns,
            sorts: &[],
            limit: &None,
            facts: planner::current_facts(),
            not_null: &[],
        };
        aggregate::offer::<Postgres>(&req);
        req.sorts = sorts;
        req.limit = limit;
        statements::scan_plan::<Postgres>(
            &req,
            self.server.server_oid.to_u32(),
            self.size(options, "fetch_size", 1000)?,
        )
    }

    /// Runs `sql` (which writes at most one row) with RETURNING the
    /// `columns` and hands the remote row, if any, to PostgreSQL.
    fn run_returning(&self, sql: &str, columns: &[Column]) -> Result<()> {
        let Some(modify) = &self.modify else {
            return Ok(());
        };
        let list = statements::select_list::<Postgres>(&modify.key, columns, &[])?;
        self.deliver_row(&format!("{sql} RETURNING {list}"), columns)
    }

    /// Runs `sql`, which answers at most one row of `columns`, and hands
    /// that row to PostgreSQL's RETURNING.
    fn deliver_row(&self, sql: &str, columns: &[Column]) -> Result<()> {
        let Some(modify) = &self.modify else {
            return Ok(());
        };
        let rows = connection::wait(self.key(), modify.client.query(sql, &[]))?
            .map_err(|e| PostgresWrapperError::remote(&self.server.server_name, e))?;
        if let Some(row) = rows.first() {
            let cells = columns
                .iter()
                .enumerate()
                .map(|(i, col)| decode::cell(row, i, &col.name, col.type_oid))
                .collect::<Result<Vec<_>>>()?;
            returning::deliver(cells);
        }
        Ok(())
    }

    fn run_modify(&self, sql: &str) -> Result<()> {
        let Some(modify) = &self.modify else {
            return Ok(());
        };
        connection::wait(self.key(), modify.client.batch_execute(sql))?
            .map_err(|e| PostgresWrapperError::remote(&self.server.server_name, e))
    }
}

impl ForeignDataWrapper<PostgresWrapperError> for PostgresWrapper {
    fn new(server: ForeignServer) -> Result<Self> {
        Ok(PostgresWrapper {
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
        Err(PostgresWrapperError::Unsupported(
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
        Err(PostgresWrapperError::Unsupported(
            scan::NOT_THROUGH_SUPABASE.into(),
        ))
    }

    fn end_scan(&mut self) -> Result<()> {
        Ok(())
    }

    fn begin_modify(&mut self, options: &HashMap<String, String>) -> Result<()> {
        let key = statements::primary_key(options)?;
        let table = Self::remote_table(options)?;
        self.modify = Some(Modify {
            client: self.client()?,
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
        if let Some(columns) = returning::wanted() {
            // One row at a time, after those batched so far, each with the
            // values the remote stored.
            let (batched, single) = match self.modify.as_mut() {
                Some(modify) => (
                    modify.inserts.flush::<Postgres>()?,
                    InsertBatch::new(modify.table.clone(), modify.key.len() > 1, 1)
                        .push::<Postgres>(row)?,
                ),
                None => return Ok(()),
            };
            if let Some(sql) = batched {
                self.run_modify(&sql)?;
            }
            for sql in single {
                self.run_returning(&sql, &columns)?;
            }
            return Ok(());
        }
        let ready = match self.modify.as_mut() {
            Some(modify) => modify.inserts.push::<Postgres>(row)?,
            None => return Ok(()),
        };
        for sql in ready {
            self.run_modify(&sql)?;
        }
        Ok(())
    }

    fn update(&mut self, rowid: &Cell, new_row: &Row) -> Result<()> {
        let Some(modify) = self.modify.as_ref() else {
            return Ok(());
        };
        let condition = statements::key_condition::<Postgres>(&modify.key, &modify.rowid, rowid)?;
        let sql = statements::update::<Postgres>(
            &modify.table,
            modify.key.len() > 1,
            new_row,
            &condition,
        )?;
        match (sql, returning::wanted()) {
            (Some(sql), None) => self.run_modify(&sql),
            (Some(sql), Some(columns)) => self.run_returning(&sql, &columns),
            // Nothing to change: RETURNING shows the row as it is.
            (None, Some(columns)) => {
                let list = statements::select_list::<Postgres>(&modify.key, &columns, &[])?;
                let select = format!("SELECT {list} FROM {} WHERE {condition}", modify.table);
                self.deliver_row(&select, &columns)
            }
            (None, None) => Ok(()),
        }
    }

    fn delete(&mut self, rowid: &Cell) -> Result<()> {
        let Some(modify) = self.modify.as_ref() else {
            return Ok(());
        };
        let condition = statements::key_condition::<Postgres>(&modify.key, &modify.rowid, rowid)?;
        let sql = format!("DELETE FROM {} WHERE {condition}", modify.table);
        match returning::wanted() {
            Some(columns) => self.run_returning(&sql, &columns),
            None => self.run_modify(&sql),
        }
    }

    fn end_modify(&mut self) -> Result<()> {
        let last = match self.modify.as_mut() {
            Some(modify) => modify.inserts.flush::<Postgres>()?,
            None => None,
        };
        if let Some(sql) = last {
            self.run_modify(&sql)?;
        }
        self.modify = None;
        Ok(())
    }

    fn import_foreign_schema(&mut self, stmt: ImportForeignSchemaStmt) -> Result<Vec<String>> {
        let client = self.client()?;
        import::import(&client, &self.server.server_name, &stmt)
    }

    fn fdw_routine_hook(routine: &mut PgBox<pg_sys::FdwRoutine, pgrx::AllocatedByRust>) {
        hooks::install_shared_hooks!(routine, Cursor, Postgres);
        returning::hook_returning!(routine);
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
