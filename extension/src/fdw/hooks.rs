//! The callbacks every wrapper puts over supabase-wrappers' own: planner
//! facts and the scan plan around GetForeignRelSize, aggregate pushdown
//! where the remote computes the same (GetForeignUpperPaths), the plan
//! attached in GetForeignPlan (a scan's or an aggregate's), and the scan
//! itself (see `fdw::scan`). A macro, because each wrapper keeps the
//! originals of its own routine in statics of its own.

/// Installs the shared callbacks on a routine (`&mut FdwRoutine`) for the
/// wrapper's `RemoteRows` type and SQL dialect.
macro_rules! install_shared_hooks {
    ($routine:expr, $rows:ty, $dialect:ty) => {{
        use std::sync::OnceLock;
        static REL_SIZE: OnceLock<pg_sys::GetForeignRelSize_function> = OnceLock::new();
        static PLAN: OnceLock<pg_sys::GetForeignPlan_function> = OnceLock::new();
        static END: OnceLock<pg_sys::EndForeignScan_function> = OnceLock::new();
        static UPPER: OnceLock<pg_sys::GetForeignUpperPaths_function> = OnceLock::new();

        #[pg_guard]
        unsafe extern "C-unwind" fn rel_size(
            root: *mut pg_sys::PlannerInfo,
            baserel: *mut pg_sys::RelOptInfo,
            table: pg_sys::Oid,
        ) {
            if let Some(Some(inner)) = REL_SIZE.get() {
                let end = END.get().copied().flatten();
                // SAFETY: the planner's arguments, passed through unchanged.
                unsafe {
                    $crate::fdw::scan::sizing(baserel, end, || {
                        $crate::fdw::planner::with_facts(root, baserel, || {
                            inner(root, baserel, table)
                        })
                    })
                };
            }
        }

        #[pg_guard]
        unsafe extern "C-unwind" fn plan(
            root: *mut pg_sys::PlannerInfo,
            rel: *mut pg_sys::RelOptInfo,
            table: pg_sys::Oid,
            best_path: *mut pg_sys::ForeignPath,
            tlist: *mut pg_sys::List,
            clauses: *mut pg_sys::List,
            outer: *mut pg_sys::Plan,
        ) -> *mut pg_sys::ForeignScan {
            let Some(Some(inner)) = PLAN.get() else {
                return std::ptr::null_mut();
            };
            // SAFETY: the planner's arguments and the routine's function.
            unsafe {
                let scan = inner(root, rel, table, best_path, tlist, clauses, outer);
                let planned = if (*rel).reloptkind == pg_sys::RelOptKind::RELOPT_UPPER_REL {
                    $crate::fdw::aggregate::plan::<$dialect>(root, rel, scan)
                } else {
                    $crate::fdw::scan::planned(rel)
                };
                match planned {
                    Some(planned) => $crate::fdw::scan::attach(scan, &planned),
                    None => error!("foreign scan without a plan of pg_integration"),
                }
                scan
            }
        }

        #[pg_guard]
        unsafe extern "C-unwind" fn upper(
            root: *mut pg_sys::PlannerInfo,
            stage: pg_sys::UpperRelationKind::Type,
            input_rel: *mut pg_sys::RelOptInfo,
            output_rel: *mut pg_sys::RelOptInfo,
            extra: *mut std::ffi::c_void,
        ) {
            let inner = UPPER.get().copied().flatten();
            // SAFETY: the planner's arguments and the routine's function.
            unsafe {
                $crate::fdw::aggregate::upper_paths(
                    root, stage, input_rel, output_rel, extra, inner,
                )
            }
        }

        let routine = &mut *$routine;
        let _ = REL_SIZE.set(routine.GetForeignRelSize);
        let _ = PLAN.set(routine.GetForeignPlan);
        let _ = END.set(routine.EndForeignScan);
        let _ = UPPER.set(routine.GetForeignUpperPaths);
        routine.GetForeignRelSize = Some(rel_size);
        routine.GetForeignUpperPaths = Some(upper);
        routine.GetForeignPlan = Some(plan);
        $crate::fdw::scan::hook_scans!(routine, $rows);
    }};
}
pub(crate) use install_shared_hooks;
