//! Conditions written constant first (`5 < x`). supabase-wrappers 0.1.28
//! turns an operator expression into a qual by putting the column on the
//! left, swapping the operands but keeping the operator: `5 < x` would
//! reach the remote side as `x < 5`. Before it looks at a table's
//! conditions, each of those is replaced by its commuted form (`x > 5`),
//! which Postgres plans and checks as the same condition.

use pgrx::pg_sys;

fn is(node: *mut pg_sys::Node, tag: pg_sys::NodeTag) -> bool {
    // SAFETY: callers pass nodes of the planner's trees (or null).
    !node.is_null() && unsafe { (*node).type_ } == tag
}

/// The node under a binary-compatible relabelling or array coercion, as
/// supabase-wrappers looks through them.
fn unwrapped(node: *mut pg_sys::Node) -> *mut pg_sys::Node {
    // SAFETY: the tags were checked before the casts.
    unsafe {
        if is(node, pg_sys::NodeTag::T_RelabelType) {
            (*node.cast::<pg_sys::RelabelType>()).arg.cast()
        } else if is(node, pg_sys::NodeTag::T_ArrayCoerceExpr) {
            (*node.cast::<pg_sys::ArrayCoerceExpr>()).arg.cast()
        } else {
            node
        }
    }
}

/// Rewrites `baserel`'s constant-first conditions whose operator is not
/// its own commutator into their commuted form.
///
/// # Safety
/// `baserel` comes from the planner's GetForeignRelSize call.
pub unsafe fn commute_constant_first(baserel: *mut pg_sys::RelOptInfo) {
    // SAFETY: the planner's lists and nodes, read as Postgres lays them out;
    // commute_restrictinfo builds a new RestrictInfo in the planner's context.
    unsafe {
        let list = (*baserel).baserestrictinfo;
        if list.is_null() {
            return;
        }
        for i in 0..(*list).length {
            let cell = (*list).elements.add(usize::try_from(i).unwrap_or(0));
            let rinfo = (*cell).ptr_value.cast::<pg_sys::RestrictInfo>();
            let clause = (*rinfo).clause.cast::<pg_sys::Node>();
            if !is(clause, pg_sys::NodeTag::T_OpExpr) {
                continue;
            }
            let op = clause.cast::<pg_sys::OpExpr>();
            let args = (*op).args;
            if args.is_null() || (*args).length != 2 {
                continue;
            }
            let left = unwrapped((*(*args).elements).ptr_value.cast());
            let right = unwrapped((*(*args).elements.add(1)).ptr_value.cast());
            if !is(right, pg_sys::NodeTag::T_Var) || is(left, pg_sys::NodeTag::T_Var) {
                continue;
            }
            let commutator = pg_sys::get_commutator((*op).opno);
            if commutator == pg_sys::InvalidOid || commutator == (*op).opno {
                continue;
            }
            (*cell).ptr_value = pg_sys::commute_restrictinfo(rinfo, commutator).cast();
        }
    }
}
