//! Aggregate pushdown: count, sum, avg, min and max with GROUP BY computed
//! by the remote engine, only where it computes what PostgreSQL would.
//!
//! supabase-wrappers 0.1.28 offers an upper path for any aggregate it can
//! name: it ignores WHERE conditions that stayed local (the aggregate would
//! count rows the local server should have removed), pushes count(DISTINCT)
//! and text min/max whose result depends on the remote collation, and fills
//! its result rows as GROUP BY columns then aggregates while the tuple it
//! fills follows the query's target order. So its GetForeignUpperPaths runs
//! only after [`upper_paths`] accepted the query, and [`plan`] puts the
//! scan's target list in the order of its rows and makes the scan's plan.

use crate::fdw::scan::{self, PlanColumn, ScanPlan};
use crate::fdw::statements::{self, RemoteSql, ScanRequest, COMPOSITE_ROWID};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use supabase_wrappers::prelude::{Aggregate, AggregateKind, Column};

/// The aggregates a wrapper pushes (the types decide the rest).
pub const SUPPORTED: [AggregateKind; 6] = [
    AggregateKind::Count,
    AggregateKind::CountColumn,
    AggregateKind::Sum,
    AggregateKind::Avg,
    AggregateKind::Min,
    AggregateKind::Max,
];

/// A foreign table whose every WHERE condition goes remote: what the
/// aggregate's remote SQL reads from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The quoted remote table.
    pub table: String,
    /// The remote form of every condition on it.
    pub conditions: Vec<String>,
    /// Its NOT NULL columns.
    pub not_null: Vec<String>,
}

thread_local! {
    /// The planning (PlannerGlobal) the maps below belong to.
    static GLOB: Cell<usize> = const { Cell::new(0) };
    /// Offered by the wrapper's get_rel_size for the rel being sized.
    static OFFERED: RefCell<Option<Source>> = const { RefCell::new(None) };
    /// Base rels whose conditions all go remote, by RelOptInfo address.
    static BASE: RefCell<HashMap<usize, Source>> = RefCell::new(HashMap::new());
    /// Grouped rels given an aggregate path, by RelOptInfo address.
    static GROUPED: RefCell<HashMap<usize, Source>> = RefCell::new(HashMap::new());
}

/// Called by a wrapper's get_rel_size: when every condition of the scan
/// goes remote, offers aggregate pushdown over what the scan reads from.
pub fn offer<D: RemoteSql>(req: &ScanRequest<'_>) {
    let source = statements::all_conditions::<D>(req).map(|conditions| Source {
        table: req.table.to_string(),
        conditions,
        not_null: req.not_null.to_vec(),
    });
    OFFERED.with(|o| *o.borrow_mut() = source);
}

/// Runs the GetForeignRelSize `inner` and remembers whether the rel's
/// conditions all went remote. A new planning forgets the previous one.
///
/// # Safety
/// The planner's arguments of GetForeignRelSize.
pub unsafe fn sizing(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    inner: impl FnOnce(),
) {
    let glob = unsafe { (*root).glob } as usize;
    if GLOB.get() != glob {
        GLOB.set(glob);
        BASE.with(|m| m.borrow_mut().clear());
        GROUPED.with(|m| m.borrow_mut().clear());
    }
    OFFERED.with(|o| o.borrow_mut().take());
    inner();
    let offered = OFFERED.with(|o| o.borrow_mut().take());
    BASE.with(|m| {
        let mut m = m.borrow_mut();
        match offered {
            Some(source) => m.insert(baserel as usize, source),
            None => m.remove(&(baserel as usize)),
        }
    });
}

/// What a grouped rel computes: its GROUP BY columns and its aggregates,
/// each with the expression of the query it answers.
struct Grouping {
    group: Vec<(*mut pg_sys::Expr, Column)>,
    aggregates: Vec<(*mut pg_sys::Expr, Aggregate)>,
}

fn list<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: a non-null List of pointers from the planner.
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).ptr_value as *mut T)
            .collect()
    }
}

unsafe fn is(node: *mut pg_sys::Node, tag: pg_sys::NodeTag) -> bool {
    !node.is_null() && unsafe { (*node).type_ } == tag
}

/// Types the remote groups and orders as PostgreSQL does (no collation).
fn ordered_type(t: pg_sys::Oid) -> bool {
    matches!(
        t,
        pg_sys::INT2OID
            | pg_sys::INT4OID
            | pg_sys::INT8OID
            | pg_sys::NUMERICOID
            | pg_sys::DATEOID
            | pg_sys::TIMESTAMPOID
    )
}

/// Types the remote sums exactly (no float: its sum depends on the order).
fn exact_number(t: pg_sys::Oid) -> bool {
    matches!(
        t,
        pg_sys::INT2OID | pg_sys::INT4OID | pg_sys::INT8OID | pg_sys::NUMERICOID
    )
}

/// A column of the scanned rel (`relid`), or None for anything else.
unsafe fn column(
    root: *mut pg_sys::PlannerInfo,
    node: *mut pg_sys::Node,
    relid: pg_sys::Index,
) -> Option<Column> {
    unsafe {
        if !is(node, pg_sys::NodeTag::T_Var) {
            return None;
        }
        let var = node as *mut pg_sys::Var;
        if (*var).varlevelsup != 0 || (*var).varno as pg_sys::Index != relid || (*var).varattno < 1
        {
            return None;
        }
        let rte = pgrx::pg_sys::planner_rt_fetch(relid, root);
        if rte.is_null() {
            return None;
        }
        let name = pg_sys::get_attname((*rte).relid, (*var).varattno, true);
        if name.is_null() {
            return None;
        }
        let name = CStr::from_ptr(name).to_str().ok()?.to_string();
        (name != COMPOSITE_ROWID).then_some(Column {
            name,
            num: (*var).varattno as usize,
            type_oid: (*var).vartype,
        })
    }
}

/// A plain count, sum, avg, min or max of pg_catalog over one column of
/// a type the remote computes the same way; None for anything else.
unsafe fn aggregate(
    root: *mut pg_sys::PlannerInfo,
    aggref: *mut pg_sys::Aggref,
    relid: pg_sys::Index,
    position: usize,
) -> Option<Aggregate> {
    unsafe {
        let a = &*aggref;
        if !a.aggfilter.is_null()
            || !a.aggdistinct.is_null()
            || !a.aggorder.is_null()
            || !a.aggdirectargs.is_null()
            || a.aggvariadic
            || a.agglevelsup != 0
            || a.aggkind as u8 != b'n'
            || a.aggsplit != pg_sys::AggSplit::AGGSPLIT_SIMPLE
            || pg_sys::get_func_namespace(a.aggfnoid)
                != pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE)
        {
            return None;
        }
        let name = pg_sys::get_func_name(a.aggfnoid);
        if name.is_null() {
            return None;
        }
        let args = list::<pg_sys::TargetEntry>(a.args);
        let column = match args.as_slice() {
            [] => None,
            [arg] => Some(column(root, (**arg).expr as *mut pg_sys::Node, relid)?),
            _ => return None,
        };
        let arg_type = column.as_ref().map(|c| c.type_oid);
        let kind = match (CStr::from_ptr(name).to_bytes(), arg_type) {
            (b"count", None) if a.aggstar => AggregateKind::Count,
            (b"count", Some(_)) => AggregateKind::CountColumn,
            (b"sum", Some(t)) if exact_number(t) => AggregateKind::Sum,
            (b"avg", Some(t)) if exact_number(t) => AggregateKind::Avg,
            (b"min", Some(t)) if ordered_type(t) => AggregateKind::Min,
            (b"max", Some(t)) if ordered_type(t) => AggregateKind::Max,
            _ => return None,
        };
        Some(Aggregate {
            kind,
            column,
            distinct: false,
            alias: format!("agg_{position}"),
            type_oid: a.aggtype,
        })
    }
}

/// The grouping of `rel` (the grouped rel over base rel `relid`) when the
/// remote computes all of it: GROUP BY plain columns of ordered types, and
/// a target of those columns and top-level pushable aggregates only.
unsafe fn grouping(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    relid: pg_sys::Index,
) -> Option<Grouping> {
    unsafe {
        let parse = (*root).parse;
        if !(*parse).groupingSets.is_null() || !(*parse).havingQual.is_null() {
            return None;
        }
        let targets = list::<pg_sys::TargetEntry>((*parse).targetList);
        let mut group = Vec::new();
        for clause in list::<pg_sys::SortGroupClause>((*parse).groupClause) {
            let tle = targets
                .iter()
                .find(|t| (***t).ressortgroupref == (*clause).tleSortGroupRef)?;
            let expr = (**tle).expr;
            let col = column(root, expr as *mut pg_sys::Node, relid)?;
            if !ordered_type(col.type_oid) {
                return None;
            }
            group.push((expr, col));
        }
        let mut aggregates = Vec::new();
        let target = (*rel).reltarget;
        if target.is_null() {
            return None;
        }
        for (i, expr) in list::<pg_sys::Node>((*target).exprs)
            .into_iter()
            .enumerate()
        {
            if is(expr, pg_sys::NodeTag::T_Aggref) {
                let agg = aggregate(root, expr as *mut pg_sys::Aggref, relid, i + 1)?;
                aggregates.push((expr as *mut pg_sys::Expr, agg));
            } else {
                let col = column(root, expr, relid)?;
                if !group.iter().any(|(_, g)| g.num == col.num) {
                    return None;
                }
            }
        }
        (!aggregates.is_empty()).then_some(Grouping { group, aggregates })
    }
}

/// A column of `relid`, possibly relabelled (varchar as text).
unsafe fn plain(node: *mut pg_sys::Node, relid: pg_sys::Index) -> bool {
    unsafe {
        let node = if is(node, pg_sys::NodeTag::T_RelabelType) {
            (*(node as *mut pg_sys::RelabelType)).arg as *mut pg_sys::Node
        } else {
            node
        };
        is(node, pg_sys::NodeTag::T_Var) && {
            let var = node as *mut pg_sys::Var;
            (*var).varlevelsup == 0
                && (*var).varno as pg_sys::Index == relid
                && (*var).varattno >= 1
        }
    }
}

/// A restriction clause in a form supabase-wrappers reads exactly: an
/// operator, IN list, null or boolean test of a column with constants.
/// (Whether our dialect renders it is the wrapper's count, see
/// [`statements::all_conditions`].) `constant op column` is not: 0.1.28
/// swaps the operands but keeps the operator, `3 < x` becoming `x < 3`.
unsafe fn readable_clause(clause: *mut pg_sys::Node, relid: pg_sys::Index) -> bool {
    unsafe {
        let tag = (*clause).type_;
        if tag == pg_sys::NodeTag::T_OpExpr {
            let args = list::<pg_sys::Node>((*(clause as *mut pg_sys::OpExpr)).args);
            args.len() == 2 && plain(args[0], relid) && is(args[1], pg_sys::NodeTag::T_Const)
        } else if tag == pg_sys::NodeTag::T_ScalarArrayOpExpr {
            let args = list::<pg_sys::Node>((*(clause as *mut pg_sys::ScalarArrayOpExpr)).args);
            args.len() == 2 && plain(args[0], relid) && is(args[1], pg_sys::NodeTag::T_Const)
        } else if tag == pg_sys::NodeTag::T_NullTest {
            plain(
                (*(clause as *mut pg_sys::NullTest)).arg as *mut pg_sys::Node,
                relid,
            )
        } else if tag == pg_sys::NodeTag::T_BooleanTest {
            plain(
                (*(clause as *mut pg_sys::BooleanTest)).arg as *mut pg_sys::Node,
                relid,
            )
        } else if tag == pg_sys::NodeTag::T_Var {
            plain(clause, relid)
        } else if tag == pg_sys::NodeTag::T_BoolExpr {
            let b = clause as *mut pg_sys::BoolExpr;
            let args = list::<pg_sys::Node>((*b).args);
            (*b).boolop == pg_sys::BoolExprType::NOT_EXPR
                && args.len() == 1
                && is(args[0], pg_sys::NodeTag::T_Var)
                && plain(args[0], relid)
        } else {
            false
        }
    }
}

/// GetForeignUpperPaths: supabase-wrappers' own (`inner`) runs only for a
/// GROUP BY/aggregate over one of our base rels whose every condition went
/// remote, with aggregates the remote computes as PostgreSQL does.
///
/// # Safety
/// The planner's arguments and the routine's own function.
pub unsafe fn upper_paths(
    root: *mut pg_sys::PlannerInfo,
    stage: pg_sys::UpperRelationKind::Type,
    input_rel: *mut pg_sys::RelOptInfo,
    output_rel: *mut pg_sys::RelOptInfo,
    extra: *mut std::ffi::c_void,
    inner: pg_sys::GetForeignUpperPaths_function,
) {
    let Some(inner) = inner else { return };
    unsafe {
        if stage != pg_sys::UpperRelationKind::UPPERREL_GROUP_AGG
            || extra.is_null()
            || (*input_rel).reloptkind != pg_sys::RelOptKind::RELOPT_BASEREL
            || (*input_rel).fdw_private.is_null()
        {
            return;
        }
        let grouping_extra = &*(extra as *mut pg_sys::GroupPathExtraData);
        if !grouping_extra.havingQual.is_null()
            || grouping_extra.patype
                != pg_sys::PartitionwiseAggregateType::PARTITIONWISE_AGGREGATE_NONE
        {
            return;
        }
        let relid = (*input_rel).relid;
        let Some(source) = BASE.with(|m| m.borrow().get(&(input_rel as usize)).cloned()) else {
            return;
        };
        let clauses = list::<pg_sys::RestrictInfo>((*input_rel).baserestrictinfo);
        if !clauses
            .iter()
            .all(|r| readable_clause((**r).clause as *mut pg_sys::Node, relid))
            || grouping(root, output_rel, relid).is_none()
        {
            return;
        }
        GROUPED.with(|m| m.borrow_mut().insert(output_rel as usize, source));
        inner(root, stage, input_rel, output_rel, extra);
    }
}

/// The plan of an aggregate pushed down, for the ForeignScan supabase-
/// wrappers made of the grouped rel `rel`: the scan's target list then
/// follows its rows (GROUP BY columns, then aggregates), and the remote
/// statement reads from the base rel's source.
///
/// # Safety
/// The planner's arguments and the ForeignScan made of `rel`.
pub unsafe fn plan<D: RemoteSql>(
    root: *mut pg_sys::PlannerInfo,
    rel: *mut pg_sys::RelOptInfo,
    scan: *mut pg_sys::ForeignScan,
) -> Option<ScanPlan> {
    unsafe {
        // A grouped rel has no relids of its own: the query's base rels.
        let relids = (*root).all_baserels;
        let relid = (pg_sys::bms_membership(relids) == pg_sys::BMS_Membership::BMS_SINGLETON)
            .then(|| pg_sys::bms_singleton_member(relids) as pg_sys::Index)?;
        let Some(found) = grouping(root, rel, relid) else {
            error!("aggregate pushdown: the grouping planned is no longer pushable");
        };
        let mut scan_tlist: *mut pg_sys::List = std::ptr::null_mut();
        let exprs = found
            .group
            .iter()
            .map(|(e, _)| *e)
            .chain(found.aggregates.iter().map(|(e, _)| *e));
        for (i, expr) in exprs.enumerate() {
            let tle = pg_sys::makeTargetEntry(
                expr,
                (i + 1) as pg_sys::AttrNumber,
                std::ptr::null_mut(),
                false,
            );
            scan_tlist = pg_sys::lappend(scan_tlist, tle.cast());
        }
        (*scan).fdw_scan_tlist = scan_tlist;
        let source = GROUPED.with(|m| m.borrow_mut().remove(&(rel as usize)))?;
        let base = scan::planned(*(*root).simple_rel_array.add(relid as usize))?;
        let group: Vec<Column> = found.group.into_iter().map(|(_, c)| c).collect();
        let aggregates: Vec<Aggregate> = found.aggregates.into_iter().map(|(_, a)| a).collect();
        let sql = statements::aggregate_select::<D>(
            &source.table,
            &source.conditions,
            &group,
            &aggregates,
            &source.not_null,
        )
        .unwrap_or_else(|_| error!("aggregate pushdown: the remote statement cannot be written"));
        // The scan's rows: GROUP BY columns, then aggregates, numbered as
        // the target list above.
        let group_columns = group.iter().map(|c| (c.name.clone(), c.type_oid, false));
        let aggregate_columns = aggregates.iter().map(|a| {
            // Two remote values: the dialect finishes the average here.
            let average = D::aggregate(a, Some("x")).len() == 2;
            (a.alias.clone(), a.type_oid, average)
        });
        let columns = group_columns
            .chain(aggregate_columns)
            .enumerate()
            .map(|(i, (name, type_oid, average))| PlanColumn {
                name,
                num: i + 1,
                type_oid: type_oid.to_u32(),
                average,
            })
            .collect();
        Some(ScanPlan::fixed(base.server, sql, columns, base.fetch_size))
    }
}
