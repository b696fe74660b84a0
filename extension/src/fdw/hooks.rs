//! The callbacks every wrapper puts over supabase-wrappers' own: planner
//! facts around GetForeignRelSize, the `Remote SQL` line of EXPLAIN, and
//! bounded scan memory around IterateForeignScan. A macro, because each
//! wrapper keeps the originals of its own routine in statics of its own.

/// Installs the shared callbacks on a routine (`&mut FdwRoutine`).
macro_rules! install_shared_hooks {
    ($routine:expr) => {{
        use std::sync::OnceLock;
        static REL_SIZE: OnceLock<pg_sys::GetForeignRelSize_function> = OnceLock::new();
        static ITERATE: OnceLock<pg_sys::IterateForeignScan_function> = OnceLock::new();

        #[pg_guard]
        unsafe extern "C-unwind" fn rel_size(
            root: *mut pg_sys::PlannerInfo,
            baserel: *mut pg_sys::RelOptInfo,
            table: pg_sys::Oid,
        ) {
            if let Some(Some(inner)) = REL_SIZE.get() {
                // SAFETY: the planner's arguments, passed through unchanged.
                unsafe {
                    $crate::fdw::planner::with_facts(root, baserel, || inner(root, baserel, table))
                };
            }
        }

        #[pg_guard]
        unsafe extern "C-unwind" fn iterate(
            node: *mut pg_sys::ForeignScanState,
        ) -> *mut pg_sys::TupleTableSlot {
            let inner = ITERATE.get().copied().flatten();
            // SAFETY: the executor's argument and the routine's own function.
            unsafe { $crate::fdw::scan_memory::iterate(node, inner) }
        }

        let routine = &mut *$routine;
        let _ = REL_SIZE.set(routine.GetForeignRelSize);
        let _ = ITERATE.set(routine.IterateForeignScan);
        routine.GetForeignRelSize = Some(rel_size);
        routine.IterateForeignScan = Some(iterate);
        routine.ExplainForeignScan = Some($crate::fdw::planner::explain_remote_sql);
    }};
}
pub(crate) use install_shared_hooks;
