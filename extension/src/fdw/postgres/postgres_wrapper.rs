//! The `ForeignDataWrapper` implementation of `postgres_wrapper`: option
//! handling, streamed scans with pushdown, and writes by primary key with
//! RETURNING of the rows the remote wrote.

use super::connection::{self, ConnKey, ConnectOptions};
use super::decode;
use super::deparse::{self, Postgres};
use super::import;
use super::{PostgresWrapperError, Result};
use crate::fdw::aggregate::{self, Source};
use crate::fdw::hooks;
use crate::fdw::options::{self, Allowed};
use crate::fdw::planner::{self, PlanFacts};
use crate::fdw::returning;
use crate::fdw::statements::{self, InsertBatch, ScanRequest};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use supabase_wrappers::prelude::Aggregate;
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
];
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
    facts: PlanFacts,
    /// Set at planning when every condition goes remote.
    aggregate_source: Option<Source>,
    scan: Option<Scan>,
    modify: Option<Modify>,
}

/// An open remote cursor and the rows fetched but not yet returned.
struct Scan {
    client: Rc<Client>,
    cursor: String,
    sql: String,
    fetch: Statement,
    fetch_size: usize,
    buffered: VecDeque<tokio_postgres::Row>,
    exhausted: bool,
    columns: Vec<Column>,
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

    fn client(&self) -> Result<Rc<Client>> {
        connection::in_transaction(
            ConnKey::current(self.server.server_oid),
            &self.connect_options()?,
        )
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

    fn build_select(
        &self,
        quals: &[Qual],
        columns: &[Column],
        sorts: &[Sort],
        limit: &Option<Limit>,
        options: &HashMap<String, String>,
    ) -> Result<String> {
        statements::select::<Postgres>(&ScanRequest {
            table: &Self::remote_table(options)?,
            key: &statements::primary_key(options)?,
            quals,
            columns,
            sorts,
            limit,
            facts: self.facts,
            not_null: &[],
        })
    }

    /// Offers aggregate pushdown when every condition goes remote.
    fn offer_aggregates(
        &mut self,
        quals: &[Qual],
        columns: &[Column],
        options: &HashMap<String, String>,
    ) -> Result<()> {
        self.aggregate_source = aggregate::offer::<Postgres>(&ScanRequest {
            table: &Self::remote_table(options)?,
            key: &statements::primary_key(options)?,
            quals,
            columns,
            sorts: &[],
            limit: &None,
            facts: self.facts,
            not_null: &[],
        });
        Ok(())
    }

    /// Opens a remote cursor for `sql`, whose rows read as `columns`.
    fn open(
        &mut self,
        sql: String,
        columns: Vec<Column>,
        options: &HashMap<String, String>,
    ) -> Result<()> {
        let fetch_size = self.size(options, "fetch_size", 1000)?;
        let client = self.client()?;
        let seq = CURSOR_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cursor = format!("pg_integration_c{seq}");
        let server = self.server.server_name.clone();
        let rt = connection::runtime()?;
        rt.block_on(client.batch_execute(&format!("DECLARE {cursor} NO SCROLL CURSOR FOR {sql}")))
            .map_err(|e| PostgresWrapperError::remote(&server, e))?;
        let fetch = rt
            .block_on(client.prepare(&format!("FETCH {fetch_size} FROM {cursor}")))
            .map_err(|e| PostgresWrapperError::remote(&server, e))?;
        self.scan = Some(Scan {
            client,
            cursor,
            sql,
            fetch,
            fetch_size,
            buffered: VecDeque::new(),
            exhausted: false,
            columns,
        });
        Ok(())
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
        let rt = connection::runtime()?;
        let rows = rt
            .block_on(modify.client.query(sql, &[]))
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
        let rt = connection::runtime()?;
        rt.block_on(modify.client.batch_execute(sql))
            .map_err(|e| PostgresWrapperError::remote(&self.server.server_name, e))
    }
}

impl ForeignDataWrapper<PostgresWrapperError> for PostgresWrapper {
    fn new(server: ForeignServer) -> Result<Self> {
        Ok(PostgresWrapper {
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
        self.open(sql, columns.to_vec(), options)
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
            return Err(PostgresWrapperError::Unsupported(
                "aggregate pushed down over a condition that stays local".into(),
            ));
        };
        let sql = statements::aggregate_select::<Postgres>(
            &source.table,
            &source.conditions,
            group_by,
            aggregates,
            &source.not_null,
        )?;
        let columns = aggregate::result_columns(aggregates, group_by);
        self.open(sql, columns, options)
    }

    fn iter_scan(&mut self, row: &mut Row) -> Result<Option<()>> {
        let server = &self.server.server_name;
        let Some(scan) = self.scan.as_mut() else {
            return Ok(None);
        };
        if scan.buffered.is_empty() && !scan.exhausted {
            let rt = connection::runtime()?;
            let rows = rt
                .block_on(scan.client.query(&scan.fetch, &[]))
                .map_err(|e| PostgresWrapperError::remote(server, e))?;
            scan.exhausted = rows.len() < scan.fetch_size;
            scan.buffered = rows.into();
        }
        let Some(remote) = scan.buffered.pop_front() else {
            return Ok(None);
        };
        for (i, col) in scan.columns.iter().enumerate() {
            let cell = decode::cell(&remote, i, &col.name, col.type_oid)?;
            row.push(&col.name, cell);
        }
        Ok(Some(()))
    }

    fn re_scan(&mut self) -> Result<()> {
        let Some(scan) = self.scan.as_mut() else {
            return Ok(());
        };
        let rt = connection::runtime()?;
        let server = &self.server.server_name;
        let seq = CURSOR_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cursor = format!("pg_integration_c{seq}");
        rt.block_on(scan.client.batch_execute(&format!(
            "CLOSE {}; DECLARE {cursor} NO SCROLL CURSOR FOR {}",
            scan.cursor, scan.sql
        )))
        .map_err(|e| PostgresWrapperError::remote(server, e))?;
        scan.fetch = rt
            .block_on(
                scan.client
                    .prepare(&format!("FETCH {} FROM {cursor}", scan.fetch_size)),
            )
            .map_err(|e| PostgresWrapperError::remote(server, e))?;
        scan.cursor = cursor;
        scan.buffered.clear();
        scan.exhausted = false;
        Ok(())
    }

    fn end_scan(&mut self) -> Result<()> {
        if let Some(scan) = self.scan.take() {
            if let Ok(rt) = connection::runtime() {
                // The remote transaction ends the cursor anyway; closing it
                // early frees the remote memory of long transactions.
                let _ = rt.block_on(scan.client.batch_execute(&format!("CLOSE {}", scan.cursor)));
            }
        }
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
                    modify.inserts.flush(),
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
        let last = self.modify.as_mut().and_then(|m| m.inserts.flush());
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
        hooks::install_shared_hooks!(routine);
        aggregate::hook_aggregates!(routine, Postgres);
        returning::hook_returning!(routine);
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
