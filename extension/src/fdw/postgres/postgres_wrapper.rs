//! The `ForeignDataWrapper` implementation of `postgres_wrapper`: option
//! handling, streamed scans with pushdown, and writes by primary key.

use super::connection::{self, ConnKey, ConnectOptions};
use super::decode;
use super::deparse::{self, ColumnInfo};
use super::import;
use super::{PostgresWrapperError, Result};
use crate::fdw::options::{user_mapping, validator_names};
use crate::fdw::planner::{self, PlanFacts};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Duration;
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
];
const TABLE_OPTIONS: &[&str] = &[
    "schema_name",
    "table_name",
    "rowid_column",
    "primary_key",
    "fetch_size",
    "batch_size",
];
const MAPPING_OPTIONS: &[&str] = &["user", "password"];

/// The column a composite primary key is read into (a JSON array of the
/// key's values as remote text), used as supabase-wrappers' single rowid.
pub const COMPOSITE_ROWID: &str = "__rowid";

#[wrappers_fdw(
    version = "0.1.0",
    author = "pg_integration",
    website = "https://github.com/pg-integration",
    error_type = "PostgresWrapperError"
)]
pub struct PostgresWrapper {
    server: ForeignServer,
    facts: PlanFacts,
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
    batch_size: usize,
    insert_columns: Option<String>,
    pending: Vec<String>,
}

static CURSOR_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// supabase-wrappers' own GetForeignRelSize, wrapped by [`rel_size`].
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
            _ => Err(PostgresWrapperError::option(
                name,
                "must be a positive integer",
            )),
        },
    }
}

fn info(c: &Column) -> ColumnInfo<'_> {
    ColumnInfo {
        name: &c.name,
        as_text: decode::reads_as_text(c.type_oid),
        collatable: matches!(
            c.type_oid,
            pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID
        ),
    }
}

impl PostgresWrapper {
    fn user_oid() -> pg_sys::Oid {
        // SAFETY: plain catalog state of this backend.
        unsafe { pg_sys::GetUserId() }
    }

    fn connect_options(&self) -> Result<ConnectOptions> {
        let server = &self.server.options;
        let mapping = user_mapping(self.server.server_oid);
        let port = match server.get("port") {
            None => 5432,
            Some(p) => p
                .parse()
                .map_err(|_| PostgresWrapperError::option("port", "must be a TCP port"))?,
        };
        Ok(ConnectOptions {
            server_name: self.server.server_name.clone(),
            host: server
                .get("host")
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into()),
            port,
            dbname: server
                .get("dbname")
                .cloned()
                .unwrap_or_else(|| "postgres".into()),
            user: mapping.get("user").cloned().ok_or_else(|| {
                PostgresWrapperError::option("user", "the user mapping needs a user")
            })?,
            password: mapping.get("password").cloned(),
            connect_timeout: Duration::from_secs(
                parse_positive(server, "connect_timeout", 10)? as u64
            ),
        })
    }

    fn client(&self) -> Result<Rc<Client>> {
        let key = ConnKey {
            server: self.server.server_oid,
            user: Self::user_oid(),
        };
        connection::in_transaction(key, &self.connect_options()?)
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

    fn primary_key(options: &HashMap<String, String>) -> Result<Vec<String>> {
        match options.get("primary_key") {
            Some(json) => serde_json::from_str(json).map_err(|_| {
                PostgresWrapperError::option("primary_key", "must be a JSON array of column names")
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

    /// The remote SELECT for a scan and the number of conditions it carries.
    fn build_select(
        &self,
        quals: &[Qual],
        columns: &[Column],
        sorts: &[Sort],
        limit: &Option<Limit>,
        options: &HashMap<String, String>,
    ) -> Result<String> {
        let key = Self::primary_key(options)?;
        let mut select = Vec::with_capacity(columns.len());
        for c in columns {
            if c.name == COMPOSITE_ROWID && key.len() > 1 {
                let parts = key
                    .iter()
                    .map(|k| deparse::ident(k).map(|k| format!("{k}::text")))
                    .collect::<Result<Vec<_>>>()?;
                select.push(format!("json_build_array({})::text", parts.join(", ")));
            } else {
                select.push(deparse::column_expr(&info(c))?);
            }
        }
        if select.is_empty() {
            select.push("NULL".into());
        }
        let mut sql = format!(
            "SELECT {} FROM {}",
            select.join(", "),
            Self::remote_table(options)?
        );
        let by_name: HashMap<&str, &Column> =
            columns.iter().map(|c| (c.name.as_str(), c)).collect();
        let conds: Vec<String> = quals
            .iter()
            .filter(|q| q.field != COMPOSITE_ROWID)
            .filter_map(|q| {
                by_name
                    .get(q.field.as_str())
                    .and_then(|c| deparse::qual(q, &info(c)))
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
                        .and_then(|c| deparse::sort_key(s, &info(c)))
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

    fn flush_inserts(modify: &mut Modify, server: &str) -> Result<()> {
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
        let rt = connection::runtime()?;
        rt.block_on(modify.client.batch_execute(&sql))
            .map_err(|e| PostgresWrapperError::remote(server, e))
    }

    fn key_condition(modify: &Modify, rowid: &Cell) -> Result<String> {
        if modify.key.len() > 1 {
            let Cell::String(json) = rowid else {
                return Err(PostgresWrapperError::Value(
                    "composite key is not text".into(),
                ));
            };
            let values: Vec<Option<String>> = serde_json::from_str(json).map_err(|_| {
                PostgresWrapperError::Value("composite key is not a JSON array".into())
            })?;
            if values.len() != modify.key.len() {
                return Err(PostgresWrapperError::Value(
                    "composite key has the wrong arity".into(),
                ));
            }
            let parts = modify
                .key
                .iter()
                .zip(values)
                .map(|(k, v)| match v {
                    // The remote text output read back as the column type keeps
                    // the remote index usable.
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
        let fetch_size = self.option_size(options, "fetch_size", 1000)?;
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
            columns: columns.to_vec(),
        });
        Ok(())
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
        let key = Self::primary_key(options)?;
        let rowid = options.get("rowid_column").cloned().unwrap_or_default();
        self.modify = Some(Modify {
            client: self.client()?,
            table: Self::remote_table(options)?,
            key,
            rowid,
            batch_size: self.option_size(options, "batch_size", 100)?,
            insert_columns: None,
            pending: Vec::new(),
        });
        Ok(())
    }

    fn insert(&mut self, row: &Row) -> Result<()> {
        let server = self.server.server_name.clone();
        let Some(modify) = self.modify.as_mut() else {
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
        let columns = format!("({})", names.join(", "));
        if modify.insert_columns.as_deref() != Some(columns.as_str()) {
            Self::flush_inserts(modify, &server)?;
            modify.insert_columns = Some(columns);
        }
        modify.pending.push(format!("({})", values.join(", ")));
        if modify.pending.len() >= modify.batch_size {
            Self::flush_inserts(modify, &server)?;
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
        self.run_modify(&sql)
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
        self.run_modify(&sql)
    }

    fn end_modify(&mut self) -> Result<()> {
        let server = self.server.server_name.clone();
        if let Some(mut modify) = self.modify.take() {
            Self::flush_inserts(&mut modify, &server)?;
        }
        Ok(())
    }

    fn import_foreign_schema(&mut self, stmt: ImportForeignSchemaStmt) -> Result<Vec<String>> {
        let client = self.client()?;
        import::import(&client, &self.server.server_name, &stmt)
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
                return Err(PostgresWrapperError::option(
                    &name,
                    format!("is not valid here; valid options: {}", allowed.join(", ")),
                ));
            }
        }
        for opt in options.iter().flatten() {
            if let Some(("sslmode", mode)) = opt.split_once('=') {
                if mode != "disable" {
                    return Err(PostgresWrapperError::option(
                        "sslmode",
                        "only 'disable' is supported by this build",
                    ));
                }
            }
        }
        Ok(())
    }
}
