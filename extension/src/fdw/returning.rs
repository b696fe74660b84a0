//! RETURNING for a wrapper whose remote can send back the rows it wrote.
//! supabase-wrappers 0.1.28 refuses RETURNING when planning and its
//! insert/update/delete callbacks return nothing. So we hide the RETURNING
//! lists from its PlanForeignModify, and while one of its Exec callbacks
//! runs for a statement with RETURNING, the wrapper hands over the remote
//! row ([`wanted`], [`deliver`]), which we store in the slot PostgreSQL
//! computes RETURNING from. Values come from the remote (defaults,
//! triggers, serials), never from what was sent.

use pgrx::memcxt::PgMemoryContexts;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use supabase_wrappers::prelude::{Cell, Column};

/// One Exec callback's request: the table's columns, and the row once the
/// wrapper delivered it.
struct Request {
    columns: Vec<Column>,
    row: Option<Vec<Option<Cell>>>,
}

thread_local! {
    static REQUEST: RefCell<Option<Request>> = const { RefCell::new(None) };
    /// The columns of the row being written that hold `time '24:00:00'`.
    static END_OF_DAY: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Microseconds in a day: `time '24:00:00'`.
const END_OF_DAY_MICROS: i64 = 86_400_000_000;

/// The value to send for column `name` of the row being written:
/// supabase-wrappers reads `time '24:00:00'` as midnight of the same day
/// (pgrx's modular conversion), so the value is taken again from the row.
pub fn exact_time(name: &str, cell: &Option<Cell>) -> Option<Cell> {
    match cell {
        Some(Cell::Time(t))
            if i64::from(*t) == 0 && END_OF_DAY.with_borrow(|c| c.iter().any(|n| n == name)) =>
        {
            pgrx::datum::Time::try_from(END_OF_DAY_MICROS)
                .ok()
                .map(Cell::Time)
        }
        _ => None,
    }
}

/// Notes the `time` columns of the row to write in `slot` that hold
/// 24:00:00.
unsafe fn note_end_of_day(slot: *mut pg_sys::TupleTableSlot) {
    let mut found = Vec::new();
    unsafe {
        if !slot.is_null() && u32::from((*slot).tts_flags) & pg_sys::TTS_FLAG_EMPTY == 0 {
            let desc = (*slot).tts_tupleDescriptor;
            let natts = (*desc).natts;
            pg_sys::slot_getsomeattrs_int(slot, natts);
            let attrs = (*desc).attrs.as_slice(natts as usize);
            for (i, a) in attrs.iter().enumerate() {
                if a.atttypid == pg_sys::TIMEOID
                    && !a.attisdropped
                    && !*(*slot).tts_isnull.add(i)
                    && (*(*slot).tts_values.add(i)).value() as i64 == END_OF_DAY_MICROS
                {
                    found.push(pgrx::name_data_to_str(&a.attname).to_string());
                }
            }
        }
    }
    END_OF_DAY.set(found);
}

/// The columns to send back when the running insert, update or delete has
/// RETURNING; None otherwise (the wrapper may batch).
pub fn wanted() -> Option<Vec<Column>> {
    REQUEST.with(|r| r.borrow().as_ref().map(|req| req.columns.clone()))
}

/// The remote row the running statement wrote, one cell per [`wanted`]
/// column.
pub fn deliver(row: Vec<Option<Cell>>) {
    REQUEST.with(|r| {
        if let Some(req) = r.borrow_mut().as_mut() {
            req.row = Some(row);
        }
    });
}

/// supabase-wrappers' PlanForeignModify with the RETURNING lists hidden.
///
/// # Safety
/// The planner's arguments and the routine's own function.
pub unsafe fn plan_modify(
    root: *mut pg_sys::PlannerInfo,
    plan: *mut pg_sys::ModifyTable,
    result_relation: pg_sys::Index,
    subplan_index: std::ffi::c_int,
    inner: pg_sys::PlanForeignModify_function,
) -> *mut pg_sys::List {
    let Some(inner) = inner else {
        return std::ptr::null_mut();
    };
    unsafe {
        let returning = (*plan).returningLists;
        (*plan).returningLists = std::ptr::null_mut();
        let private = inner(root, plan, result_relation, subplan_index);
        (*plan).returningLists = returning;
        private
    }
}

/// Runs supabase-wrappers' ExecForeignInsert/Update/Delete `inner`; with
/// RETURNING, stores the row the wrapper delivered in `slot`, or answers
/// NULL (nothing written) when the remote wrote no row. `writes_row`: an
/// insert or update, whose `slot` holds the row to write (a delete's only
/// receives RETURNING).
///
/// # Safety
/// The executor's arguments and the routine's own function.
pub unsafe fn exec(
    estate: *mut pg_sys::EState,
    rinfo: *mut pg_sys::ResultRelInfo,
    slot: *mut pg_sys::TupleTableSlot,
    plan_slot: *mut pg_sys::TupleTableSlot,
    inner: pg_sys::ExecForeignInsert_function,
    writes_row: bool,
) -> *mut pg_sys::TupleTableSlot {
    let Some(inner) = inner else {
        return std::ptr::null_mut();
    };
    unsafe {
        // Left over if an error cut the last call short.
        REQUEST.with(|r| r.borrow_mut().take());
        if writes_row {
            note_end_of_day(slot);
        } else {
            END_OF_DAY.with_borrow_mut(Vec::clear);
        }
        if (*rinfo).ri_projectReturning.is_null() {
            return inner(estate, rinfo, slot, plan_slot);
        }
        let desc = (*(*rinfo).ri_RelationDesc).rd_att;
        let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
        let columns = attrs
            .iter()
            .filter(|a| !a.attisdropped)
            .map(|a| Column {
                name: pgrx::name_data_to_str(&a.attname).to_string(),
                num: a.attnum as usize,
                type_oid: a.atttypid,
            })
            .collect();
        REQUEST.with(|r| *r.borrow_mut() = Some(Request { columns, row: None }));
        let out = inner(estate, rinfo, slot, plan_slot);
        let Some(Request { columns, row }) = REQUEST.with(|r| r.borrow_mut().take()) else {
            return out;
        };
        let Some(row) = row else {
            return std::ptr::null_mut();
        };
        store(estate, slot, &columns, row);
        slot
    }
}

/// Puts `row` into `slot` as a virtual tuple, its values in the per-tuple
/// memory that the executor resets before the next row.
unsafe fn store(
    estate: *mut pg_sys::EState,
    slot: *mut pg_sys::TupleTableSlot,
    columns: &[Column],
    row: Vec<Option<Cell>>,
) {
    unsafe {
        pg_sys::ExecClearTuple(slot);
        let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
        for i in 0..natts {
            *(*slot).tts_isnull.add(i) = true;
        }
        let per_tuple = (*estate).es_per_tuple_exprcontext;
        let memory = if per_tuple.is_null() {
            (*estate).es_query_cxt
        } else {
            (*per_tuple).ecxt_per_tuple_memory
        };
        PgMemoryContexts::For(memory).switch_to(|_| {
            for (col, cell) in columns.iter().zip(row) {
                let i = col.num - 1;
                if let Some(datum) = cell.and_then(|c| c.into_datum()) {
                    *(*slot).tts_values.add(i) = datum;
                    *(*slot).tts_isnull.add(i) = false;
                }
            }
        });
        pg_sys::ExecStoreVirtualTuple(slot);
    }
}

/// Installs RETURNING around a routine (`&mut FdwRoutine`); the statics of
/// each use keep that wrapper's original functions.
macro_rules! hook_returning {
    ($routine:expr) => {{
        use std::sync::OnceLock;
        static PLAN: OnceLock<pg_sys::PlanForeignModify_function> = OnceLock::new();
        static INSERT: OnceLock<pg_sys::ExecForeignInsert_function> = OnceLock::new();
        static UPDATE: OnceLock<pg_sys::ExecForeignUpdate_function> = OnceLock::new();
        static DELETE: OnceLock<pg_sys::ExecForeignDelete_function> = OnceLock::new();

        #[pg_guard]
        unsafe extern "C-unwind" fn plan(
            root: *mut pg_sys::PlannerInfo,
            plan: *mut pg_sys::ModifyTable,
            result_relation: pg_sys::Index,
            subplan_index: std::ffi::c_int,
        ) -> *mut pg_sys::List {
            let inner = PLAN.get().copied().flatten();
            // SAFETY: the planner's arguments and the routine's function.
            unsafe {
                $crate::fdw::returning::plan_modify(
                    root,
                    plan,
                    result_relation,
                    subplan_index,
                    inner,
                )
            }
        }

        macro_rules! exec_fn {
            ($name:ident, $inner:ident, $writes_row:expr) => {
                #[pg_guard]
                unsafe extern "C-unwind" fn $name(
                    estate: *mut pg_sys::EState,
                    rinfo: *mut pg_sys::ResultRelInfo,
                    slot: *mut pg_sys::TupleTableSlot,
                    plan_slot: *mut pg_sys::TupleTableSlot,
                ) -> *mut pg_sys::TupleTableSlot {
                    let inner = $inner.get().copied().flatten();
                    // SAFETY: the executor's arguments and the routine's function.
                    unsafe {
                        $crate::fdw::returning::exec(
                            estate,
                            rinfo,
                            slot,
                            plan_slot,
                            inner,
                            $writes_row,
                        )
                    }
                }
            };
        }
        exec_fn!(insert, INSERT, true);
        exec_fn!(update, UPDATE, true);
        exec_fn!(delete, DELETE, false);

        let routine = &mut *$routine;
        let _ = PLAN.set(routine.PlanForeignModify);
        let _ = INSERT.set(routine.ExecForeignInsert);
        let _ = UPDATE.set(routine.ExecForeignUpdate);
        let _ = DELETE.set(routine.ExecForeignDelete);
        routine.PlanForeignModify = Some(plan);
        routine.ExecForeignInsert = Some(insert);
        routine.ExecForeignUpdate = Some(update);
        routine.ExecForeignDelete = Some(delete);
    }};
}
pub(crate) use hook_returning;
