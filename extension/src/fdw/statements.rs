//! The remote statements every wrapper builds, written once over a
//! [`RemoteSql`] dialect: the SELECT of a scan with the conditions, order and
//! limit that may go remote; INSERT batches; UPDATE and DELETE by the real
//! primary key (a composite key travels as a JSON array in `__rowid`).

use crate::fdw::planner::PlanFacts;
use crate::fdw::returning;
use crate::fdw::scan::{ParamCondition, PlanColumn, ScanPlan};
use std::borrow::Cow;
use std::collections::HashMap;
use supabase_wrappers::prelude::{Aggregate, Cell, Column, Limit, Qual, Row, Sort};

/// The column a composite primary key is read into (a JSON array of the
/// key's values as remote text), used as supabase-wrappers' single rowid.
pub const COMPOSITE_ROWID: &str = "__rowid";

/// A problem the shared code finds; each wrapper turns it into its error.
#[derive(Debug)]
pub enum Problem {
    Option { option: String, reason: String },
    Value(String),
}

/// What a wrapper's dialect renders.
pub trait RemoteSql: Sized {
    type Error: From<Problem>;
    fn ident(name: &str) -> Result<String, Self::Error>;
    fn literal(text: &str) -> Result<String, Self::Error>;
    fn cell_literal(cell: &Cell) -> Result<String, Self::Error>;
    /// The SELECT-list expression of a local column.
    fn select_expr(col: &Column, not_null: bool) -> Result<String, Self::Error>;
    /// The expression of `__rowid` from the quoted key columns.
    fn composite_key_expr(quoted_key: &[String]) -> String;
    /// A condition the remote computes exactly as PostgreSQL, or None.
    fn qual(q: &Qual, col: &Column, not_null: bool) -> Option<String>;
    /// An ORDER BY key the remote orders exactly as PostgreSQL, or None.
    fn sort_key(s: &Sort, col: &Column, not_null: bool) -> Option<String>;
    /// The remote expressions a pushed aggregate reads, its argument (a
    /// column's SELECT-list expression) already rendered; a wrapper that
    /// finishes an aggregate locally asks for more than one.
    fn aggregate(agg: &Aggregate, arg: Option<&str>) -> Vec<String>;
    /// One row of a batched INSERT: the `cells` of the columns `names`;
    /// by default `(literal, literal, …)`.
    fn insert_row(_names: &[&str], cells: &[&Option<Cell>]) -> Result<String, Self::Error> {
        let values = cells
            .iter()
            .map(|cell| value::<Self>(cell))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(format!("({})", values.join(", ")))
    }
    /// The INSERT of `rows` (each from [`RemoteSql::insert_row`]) into
    /// `table`'s columns `quoted`; by default `INSERT … VALUES (…), (…)`.
    fn insert_rows(table: &str, quoted: &[String], rows: &[String]) -> Result<String, Self::Error> {
        Ok(format!(
            "INSERT INTO {table} ({}) VALUES {}",
            quoted.join(", "),
            rows.join(", ")
        ))
    }
}

/// The primary key recorded by IMPORT FOREIGN SCHEMA.
pub fn primary_key(options: &HashMap<String, String>) -> Result<Vec<String>, Problem> {
    match options.get("primary_key") {
        Some(json) => serde_json::from_str(json).map_err(|_| Problem::Option {
            option: "primary_key".into(),
            reason: "must be a JSON array of column names".into(),
        }),
        None => Ok(options.get("rowid_column").into_iter().cloned().collect()),
    }
}

/// What a scan asks of the remote table.
pub struct ScanRequest<'a> {
    pub table: &'a str,
    pub key: &'a [String],
    pub quals: &'a [Qual],
    pub columns: &'a [Column],
    pub sorts: &'a [Sort],
    pub limit: &'a Option<Limit>,
    pub facts: PlanFacts,
    pub not_null: &'a [String],
}

/// The remote expressions that read `columns` (`__rowid` from the key).
pub fn select_list<D: RemoteSql>(
    key: &[String],
    columns: &[Column],
    not_null: &[String],
) -> Result<String, D::Error> {
    let mut list = Vec::with_capacity(columns.len());
    for c in columns {
        if c.name == COMPOSITE_ROWID && key.len() > 1 {
            let quoted = key
                .iter()
                .map(|k| D::ident(k))
                .collect::<Result<Vec<_>, _>>()?;
            list.push(D::composite_key_expr(&quoted));
        } else {
            list.push(D::select_expr(c, not_null.contains(&c.name))?);
        }
    }
    if list.is_empty() {
        list.push("NULL".into());
    }
    Ok(list.join(", "))
}

/// The WHERE conditions of a scan that the dialect renders.
fn conditions<D: RemoteSql>(req: &ScanRequest<'_>) -> Vec<String> {
    let by_name: HashMap<&str, &Column> =
        req.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    req.quals
        .iter()
        .filter(|q| q.field != COMPOSITE_ROWID)
        .filter_map(|q| {
            by_name
                .get(q.field.as_str())
                .and_then(|c| D::qual(q, c, req.not_null.contains(&c.name)))
        })
        .collect()
}

/// The remote WHERE conditions when every condition restricting the table
/// goes remote, None when one stays local. supabase-wrappers extracts at
/// most one condition per restriction clause and drops those it cannot
/// read, so the counts tell; a condition with a parameter is refused, its
/// value being known only when the scan starts.
pub fn all_conditions<D: RemoteSql>(req: &ScanRequest<'_>) -> Option<Vec<String>> {
    let conds = conditions::<D>(req);
    (req.quals.len() == req.facts.restrictions
        && conds.len() == req.quals.len()
        && req.quals.iter().all(|q| q.param.is_none()))
    .then_some(conds)
}

/// The remote SELECT of an aggregate pushed down: the GROUP BY columns,
/// then the expressions of each aggregate, over the rows of `conditions`.
pub fn aggregate_select<D: RemoteSql>(
    table: &str,
    conditions: &[String],
    group_by: &[Column],
    aggregates: &[Aggregate],
    not_null: &[String],
) -> Result<String, D::Error> {
    let mut list = Vec::with_capacity(group_by.len() + aggregates.len());
    for col in group_by {
        list.push(D::select_expr(col, not_null.contains(&col.name))?);
    }
    for agg in aggregates {
        let arg = match &agg.column {
            Some(col) => Some(D::select_expr(col, not_null.contains(&col.name))?),
            None => None,
        };
        list.extend(D::aggregate(agg, arg.as_deref()));
    }
    let mut sql = format!("SELECT {} FROM {table}", list.join(", "));
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    if !group_by.is_empty() {
        let keys = group_by
            .iter()
            .map(|c| D::ident(&c.name))
            .collect::<Result<Vec<_>, _>>()?;
        sql.push_str(" GROUP BY ");
        sql.push_str(&keys.join(", "));
    }
    Ok(sql)
}

/// The plan of a scan: every condition the dialect renders (the local
/// server rechecks them all; those on a parameter are rendered when the
/// scan starts), and ORDER BY … LIMIT only when nothing stays local.
pub fn scan_plan<D: RemoteSql>(
    req: &ScanRequest<'_>,
    server: u32,
    fetch_size: usize,
) -> Result<ScanPlan, D::Error> {
    let not_null = |c: &Column| req.not_null.contains(&c.name);
    let list = select_list::<D>(req.key, req.columns, req.not_null)?;
    let by_name: HashMap<&str, &Column> =
        req.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    for q in req.quals.iter().filter(|q| q.field != COMPOSITE_ROWID) {
        let Some(&col) = by_name.get(q.field.as_str()) else {
            continue;
        };
        match &q.param {
            None => conditions.extend(D::qual(q, col, not_null(col))),
            Some(p) => params.push(ParamCondition {
                column: PlanColumn::from(col),
                not_null: not_null(col),
                operator: q.operator.clone(),
                kind: p.kind,
                id: p.id as i32,
                type_oid: p.type_oid.to_u32(),
                shown: format!("{} {} ${}", D::ident(&col.name)?, q.operator, p.id),
            }),
        }
    }
    let mut order_limit = None;
    if let Some(limit) = req.limit {
        let keys: Vec<String> = req
            .sorts
            .iter()
            .filter_map(|s| {
                by_name
                    .get(s.field.as_str())
                    .and_then(|c| D::sort_key(s, c, not_null(c)))
            })
            .collect();
        let pushed = conditions.len() + params.len();
        if req.facts.limit_pushable(pushed, keys.len()) && keys.len() == req.sorts.len() {
            let mut tail = String::new();
            if !keys.is_empty() {
                tail.push_str(" ORDER BY ");
                tail.push_str(&keys.join(", "));
            }
            // The local Limit node applies OFFSET again: fetch both.
            tail.push_str(&format!(
                " LIMIT {}",
                limit.count.saturating_add(limit.offset)
            ));
            order_limit = Some(tail);
        }
    }
    Ok(ScanPlan {
        server,
        head: format!("SELECT {list} FROM {}", req.table),
        conditions,
        params,
        order_limit,
        columns: req.columns.iter().map(PlanColumn::from).collect(),
        fetch_size,
        modifying: req.facts.modifying,
    })
}

/// The WHERE condition that finds one row by its primary key.
pub fn key_condition<D: RemoteSql>(
    key: &[String],
    rowid_column: &str,
    rowid: &Cell,
) -> Result<String, D::Error> {
    if key.len() <= 1 {
        return Ok(format!(
            "{} = {}",
            D::ident(rowid_column)?,
            D::cell_literal(rowid)?
        ));
    }
    let bad = |what: &str| Problem::Value(format!("composite key {what}"));
    let Cell::String(json) = rowid else {
        return Err(bad("is not text").into());
    };
    let values: Vec<Option<String>> =
        serde_json::from_str(json).map_err(|_| bad("is not a JSON array"))?;
    if values.len() != key.len() {
        return Err(bad("has the wrong arity").into());
    }
    let parts = key
        .iter()
        .zip(values)
        .map(|(k, v)| match v {
            // The remote's own text of the value, read back as the column
            // type, keeps the remote index usable.
            Some(v) => Ok(format!("{} = {}", D::ident(k)?, D::literal(&v)?)),
            None => Ok(format!("{} IS NULL", D::ident(k)?)),
        })
        .collect::<Result<Vec<_>, D::Error>>()?;
    Ok(parts.join(" AND "))
}

fn value<D: RemoteSql>(cell: &Option<Cell>) -> Result<String, D::Error> {
    match cell {
        Some(cell) => D::cell_literal(cell),
        None => Ok("NULL".into()),
    }
}

/// The cells of a row to write, as the local row holds them (see
/// [`returning::exact_time`]).
fn exact_cells<'a>(
    row: impl Iterator<Item = (&'a String, &'a Option<Cell>)>,
) -> Vec<(&'a String, Cow<'a, Option<Cell>>)> {
    row.map(|(name, cell)| {
        let cell = match returning::exact_time(name, cell) {
            Some(exact) => Cow::Owned(Some(exact)),
            None => Cow::Borrowed(cell),
        };
        (name, cell)
    })
    .collect()
}

/// `UPDATE … SET … WHERE key`, or None when nothing changes. With a
/// composite key, `__rowid` is not a remote column.
pub fn update<D: RemoteSql>(
    table: &str,
    composite: bool,
    new_row: &Row,
    condition: &str,
) -> Result<Option<String>, D::Error> {
    let sets = exact_cells(new_row.iter())
        .into_iter()
        .filter(|(name, _)| !(composite && name.as_str() == COMPOSITE_ROWID))
        .map(|(name, cell)| Ok(format!("{} = {}", D::ident(name)?, value::<D>(&cell)?)))
        .collect::<Result<Vec<_>, D::Error>>()?;
    Ok((!sets.is_empty())
        .then(|| format!("UPDATE {table} SET {} WHERE {condition}", sets.join(", "))))
}

/// Rows of an INSERT gathered into multi-row statements of `batch_size`.
pub struct InsertBatch {
    table: String,
    composite: bool,
    batch_size: usize,
    /// The quoted columns of the rows pending.
    columns: Option<Vec<String>>,
    pending: Vec<String>,
}

impl InsertBatch {
    /// With a composite key, `__rowid` is not a remote column.
    pub fn new(table: String, composite: bool, batch_size: usize) -> InsertBatch {
        InsertBatch {
            table,
            composite,
            batch_size,
            columns: None,
            pending: Vec::new(),
        }
    }

    /// Adds a row; returns the statements to run now (a full batch, or the
    /// previous batch when this row names other columns).
    pub fn push<D: RemoteSql>(&mut self, row: &Row) -> Result<Vec<String>, D::Error> {
        let mut names = Vec::new();
        let mut exact = Vec::new();
        for (name, cell) in exact_cells(row.iter()) {
            if self.composite && name == COMPOSITE_ROWID {
                continue;
            }
            names.push(name.as_str());
            exact.push(cell);
        }
        let cells: Vec<&Option<Cell>> = exact.iter().map(|c| c.as_ref()).collect();
        let quoted = names
            .iter()
            .map(|n| D::ident(n))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ready = Vec::new();
        if self.columns.as_ref() != Some(&quoted) {
            ready.extend(self.flush::<D>()?);
            self.columns = Some(quoted);
        }
        self.pending.push(D::insert_row(&names, &cells)?);
        if self.pending.len() >= self.batch_size {
            ready.extend(self.flush::<D>()?);
        }
        Ok(ready)
    }

    /// The statement for the rows not sent yet.
    pub fn flush<D: RemoteSql>(&mut self) -> Result<Option<String>, D::Error> {
        let Some(columns) = self.columns.as_deref().filter(|_| !self.pending.is_empty()) else {
            return Ok(None);
        };
        let sql = D::insert_rows(&self.table, columns, &self.pending)?;
        self.pending.clear();
        Ok(Some(sql))
    }
}
