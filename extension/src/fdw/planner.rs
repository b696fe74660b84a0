//! What supabase-wrappers does not tell a wrapper at plan time.
//!
//! supabase-wrappers 0.1.28 hands a wrapper the query's LIMIT even when the
//! query joins other tables, or when some WHERE condition could not be
//! extracted and stays local; pushing it then would drop rows. The wrapper's
//! GetForeignRelSize is wrapped to record [`PlanFacts`], from which the
//! wrapper decides whether LIMIT (and ORDER BY with it) may go remote.

use pgrx::pg_sys;
use std::cell::Cell;

/// Facts of the query being planned for one foreign table.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanFacts {
    /// The query reads only this table, with nothing between the scan and
    /// its LIMIT (no grouping, DISTINCT, window, set operation, locking).
    pub single_table: bool,
    /// How many WHERE conditions restrict this table.
    pub restrictions: usize,
    /// How many ORDER BY keys the query has.
    pub sort_keys: usize,
    /// The scan feeds an UPDATE or DELETE of the same table.
    pub modifying: bool,
}

impl PlanFacts {
    /// LIMIT may go to the remote side when every condition and every sort
    /// key went there too.
    pub fn limit_pushable(&self, pushed_quals: usize, pushed_sorts: usize) -> bool {
        self.single_table && pushed_quals == self.restrictions && pushed_sorts == self.sort_keys
    }
}

thread_local! {
    static FACTS: Cell<Option<PlanFacts>> = const { Cell::new(None) };
}

fn list_len(list: *mut pg_sys::List) -> usize {
    if list.is_null() {
        0
    } else {
        // SAFETY: a non-null List pointer from the planner.
        unsafe { (*list).length as usize }
    }
}

/// Records the facts of `root`/`baserel`, runs `inner` (supabase-wrappers'
/// GetForeignRelSize), then forgets them.
///
/// # Safety
/// `root` and `baserel` come from the planner's GetForeignRelSize call.
pub unsafe fn with_facts(
    root: *mut pg_sys::PlannerInfo,
    baserel: *mut pg_sys::RelOptInfo,
    inner: impl FnOnce(),
) {
    let facts = unsafe {
        let parse = (*root).parse;
        PlanFacts {
            single_table: list_len((*parse).rtable) == 1
                && (*parse).commandType == pg_sys::CmdType::CMD_SELECT
                && (*parse).setOperations.is_null()
                && !(*parse).hasWindowFuncs
                && !(*parse).hasTargetSRFs
                && !(*parse).hasAggs
                && !(*parse).hasSubLinks
                && (*parse).groupClause.is_null()
                && (*parse).groupingSets.is_null()
                && (*parse).havingQual.is_null()
                && (*parse).distinctClause.is_null()
                && (*parse).rowMarks.is_null(),
            restrictions: list_len((*baserel).baserestrictinfo),
            sort_keys: list_len((*parse).sortClause),
            modifying: (*parse).commandType != pg_sys::CmdType::CMD_SELECT,
        }
    };
    FACTS.set(Some(facts));
    // SAFETY: the planner's arguments; the rel's own conditions come back
    // before the planner reads them again.
    unsafe {
        let conditions = (*baserel).baserestrictinfo;
        (*baserel).baserestrictinfo = column_first(conditions);
        crate::fdw::aggregate::sizing(root, baserel, inner);
        (*baserel).baserestrictinfo = conditions;
        // The wrapper's row count ignores the conditions: scale it by their
        // selectivity, as the planner does for a table of its own, so that
        // a selective WHERE is not costed like a full scan (which switched
        // JIT compilation on for a thousand rows).
        let selectivity = pg_sys::clauselist_selectivity(
            root,
            conditions,
            0,
            pg_sys::JoinType::JOIN_INNER,
            std::ptr::null_mut(),
        );
        (*baserel).rows = pg_sys::clamp_row_est((*baserel).rows * selectivity);
    }
    FACTS.set(None);
}

/// The node under a relabelling or array coercion: supabase-wrappers looks
/// through them when it tells a column from a constant.
unsafe fn unwrapped(node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    unsafe {
        match (*node).type_ {
            pg_sys::NodeTag::T_RelabelType => (*node.cast::<pg_sys::RelabelType>()).arg.cast(),
            pg_sys::NodeTag::T_ArrayCoerceExpr => {
                (*node.cast::<pg_sys::ArrayCoerceExpr>()).arg.cast()
            }
            _ => node,
        }
    }
}

/// The conditions with `constant op column` written `column op' constant`
/// (op' the commutator): supabase-wrappers 0.1.28 swaps the operands of the
/// first form but keeps the operator, reading `100 < id` as `id < 100`.
unsafe fn column_first(conditions: *mut pg_sys::List) -> *mut pg_sys::List {
    unsafe {
        let mut out: *mut pg_sys::List = std::ptr::null_mut();
        for i in 0..list_len(conditions) {
            let rinfo = (*(*conditions).elements.add(i)).ptr_value as *mut pg_sys::RestrictInfo;
            let clause = (*rinfo).clause as *mut pg_sys::Node;
            let mut kept = rinfo;
            if (*clause).type_ == pg_sys::NodeTag::T_OpExpr {
                let op = clause as *mut pg_sys::OpExpr;
                let args = (*op).args;
                if list_len(args) == 2 {
                    let left = (*(*args).elements.add(0)).ptr_value as *mut pg_sys::Node;
                    let right = (*(*args).elements.add(1)).ptr_value as *mut pg_sys::Node;
                    let commutator = pg_sys::get_commutator((*op).opno);
                    if (*unwrapped(left)).type_ != pg_sys::NodeTag::T_Var
                        && (*unwrapped(right)).type_ == pg_sys::NodeTag::T_Var
                        && commutator != pg_sys::InvalidOid
                    {
                        let flipped = pg_sys::palloc(std::mem::size_of::<pg_sys::OpExpr>())
                            as *mut pg_sys::OpExpr;
                        *flipped = *op;
                        (*flipped).opno = commutator;
                        (*flipped).opfuncid = pg_sys::get_opcode(commutator);
                        (*flipped).args = pg_sys::lappend(
                            pg_sys::lappend(std::ptr::null_mut(), right.cast()),
                            left.cast(),
                        );
                        let copy = pg_sys::palloc(std::mem::size_of::<pg_sys::RestrictInfo>())
                            as *mut pg_sys::RestrictInfo;
                        *copy = *rinfo;
                        (*copy).clause = flipped.cast();
                        kept = copy;
                    }
                }
            }
            out = pg_sys::lappend(out, kept.cast());
        }
        out
    }
}

/// The facts recorded for the table being planned (none outside planning:
/// then nothing is pushable beyond conditions).
pub fn current_facts() -> PlanFacts {
    FACTS.get().unwrap_or_default()
}

/// The columns of a foreign table declared NOT NULL (a remote engine that
/// orders NULLs differently needs no NULLS clause for them).
pub fn not_null_columns(table: u32) -> Vec<String> {
    // SAFETY: the table is being planned or scanned, so it is locked.
    unsafe {
        let rel = pg_sys::RelationIdGetRelation(pg_sys::Oid::from(table));
        if rel.is_null() {
            return Vec::new();
        }
        let desc = pgrx::PgTupleDesc::from_pg_unchecked((*rel).rd_att);
        let names = desc
            .iter()
            .filter(|a| a.attnotnull && !a.attisdropped)
            .map(|a| a.name().to_string())
            .collect();
        drop(desc);
        pg_sys::RelationClose(rel);
        names
    }
}

/// What a wrapper's `get_rel_size` answers: few rows when a LIMIT went
/// remote (scaled by the conditions' selectivity in [`with_facts`]).
pub fn rel_size(columns: &[supabase_wrappers::prelude::Column], limit_pushed: bool) -> (i64, i32) {
    (
        if limit_pushed { 100 } else { 100_000 },
        8 * columns.len().max(1) as i32,
    )
}
