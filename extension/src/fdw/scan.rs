//! Foreign scans run by callbacks of our own. supabase-wrappers 0.1.28
//! keeps a scan's state in Rust memory, puts only its address in the plan
//! and frees it in EndForeignScan: a plan run a second time (a prepared
//! statement's generic plan, every PL/pgSQL statement after its first
//! call) read freed memory, and a correlated subquery's parameter pointed
//! into the planner's memory ("unrecognized node type").
//!
//! Here the plan carries what every run needs, as PostgreSQL's own
//! wrappers do: a [`ScanPlan`] (JSON in `fdw_private`) and the parameters
//! as expressions in `fdw_exprs`, which PostgreSQL copies and fixes up
//! with the plan. Each run keeps its state in its scan node, evaluates the
//! parameters when it (re)starts, and frees each row's values when the
//! executor asks for the next one (supabase-wrappers kept every value of
//! the scan until its end). supabase-wrappers still plans: its state is
//! freed with the planner's memory.

use crate::fdw::statements::RemoteSql;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{FromDatum, IntoDatum};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use supabase_wrappers::prelude::{Cell, Column, Qual, Value};

/// A column a scan's rows fill: the slot's attribute `num` (1-based).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanColumn {
    pub name: String,
    pub num: usize,
    pub type_oid: u32,
    /// An average the remote answers as its SUM and COUNT (MariaDB rounds
    /// AVG to 4 decimals): two remote columns, divided here.
    pub average: bool,
}

impl PlanColumn {
    pub fn column(&self) -> Column {
        Column {
            name: self.name.clone(),
            num: self.num,
            type_oid: self.type_oid.into(),
        }
    }
}

impl From<&Column> for PlanColumn {
    fn from(c: &Column) -> PlanColumn {
        PlanColumn {
            name: c.name.clone(),
            num: c.num,
            type_oid: c.type_oid.to_u32(),
            average: false,
        }
    }
}

/// `column operator parameter`: rendered when the scan starts, with the
/// parameter's value then.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParamCondition {
    pub column: PlanColumn,
    pub not_null: bool,
    pub operator: String,
    /// The parameter (`pg_sys::Param`): kind, number and type.
    pub kind: u32,
    pub id: i32,
    pub type_oid: u32,
    /// How EXPLAIN shows the condition: `"x" > $1`.
    pub shown: String,
}

/// What a foreign scan's plan carries to each of its runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanPlan {
    pub server: u32,
    /// `SELECT … FROM …`, or the whole statement of an aggregate.
    pub head: String,
    /// Conditions rendered when planning.
    pub conditions: Vec<String>,
    /// Conditions on parameters, the n-th valued by the n-th `fdw_exprs`.
    pub params: Vec<ParamCondition>,
    /// ` ORDER BY … LIMIT n`, sent when every condition went remote.
    pub order_limit: Option<String>,
    /// One per value of a remote row, in its order.
    pub columns: Vec<PlanColumn>,
    pub fetch_size: usize,
    /// The scan feeds an UPDATE or DELETE of its table.
    pub modifying: bool,
}

impl ScanPlan {
    /// A plan sending `sql` as it is (an aggregate's statement).
    pub fn fixed(server: u32, sql: String, columns: Vec<PlanColumn>, fetch_size: usize) -> Self {
        ScanPlan {
            server,
            head: sql,
            conditions: Vec::new(),
            params: Vec::new(),
            order_limit: None,
            columns,
            fetch_size,
            modifying: false,
        }
    }

    fn assemble(&self, conditions: &[String], complete: bool) -> String {
        let mut sql = self.head.clone();
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        if let Some(tail) = self.order_limit.as_deref().filter(|_| complete) {
            sql.push_str(tail);
        }
        sql
    }

    /// The remote statement for the parameters' `values`. A condition the
    /// dialect cannot render with its value (a NULL, say) stays local, and
    /// then ORDER BY … LIMIT too.
    pub fn sql<D: RemoteSql>(&self, values: Vec<Option<Cell>>) -> String {
        let mut conditions = self.conditions.clone();
        let mut complete = true;
        for (p, value) in self.params.iter().zip(values) {
            let rendered = value.and_then(|cell| {
                let qual = Qual {
                    field: p.column.name.clone(),
                    operator: p.operator.clone(),
                    value: Value::Cell(cell),
                    use_or: false,
                    param: None,
                };
                D::qual(&qual, &p.column.column(), p.not_null)
            });
            match rendered {
                Some(condition) => conditions.push(condition),
                None => complete = false,
            }
        }
        self.assemble(&conditions, complete)
    }

    /// The remote statement as EXPLAIN shows it, parameters as `$n`.
    pub fn shown(&self) -> String {
        let mut conditions = self.conditions.clone();
        conditions.extend(self.params.iter().map(|p| p.shown.clone()));
        self.assemble(&conditions, true)
    }
}

/// A wrapper's remote result: opened for a statement, read row by row.
pub trait RemoteRows: Sized {
    type Dialect: RemoteSql;
    type Error: Into<ErrorReport>;
    /// Sends `sql` to the plan's server.
    fn open(plan: &ScanPlan, sql: String) -> Result<Self, Self::Error>;
    /// Reads the next row into `cells`, one per plan column; false at the
    /// end. Values PostgreSQL allocates go to the current memory context.
    fn next(&mut self, plan: &ScanPlan, cells: &mut Vec<Option<Cell>>)
        -> Result<bool, Self::Error>;
    /// Ends the result early or at its end, leaving the connection usable.
    fn close(self) -> Result<(), Self::Error>;
}

fn raise<T>(result: Result<T, impl Into<ErrorReport>>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => {
            let report: ErrorReport = e.into();
            report.report(PgLogLevel::ERROR);
            unreachable!("ERROR does not return")
        }
    }
}

// ---------------------------------------------------------------- planning

thread_local! {
    /// Offered by the wrapper's get_rel_size for the rel being sized.
    static OFFERED: RefCell<Option<ScanPlan>> = const { RefCell::new(None) };
    /// The plan of each base rel sized, by RelOptInfo address.
    static PLANNED: RefCell<HashMap<usize, ScanPlan>> = RefCell::new(HashMap::new());
}

/// Called by a wrapper's get_rel_size: the plan of the rel being sized.
pub fn offer(plan: ScanPlan) {
    OFFERED.with(|o| *o.borrow_mut() = Some(plan));
}

/// What frees supabase-wrappers' planning state with the planner's memory.
#[repr(C)]
struct PlanningState {
    callback: pg_sys::MemoryContextCallback,
    baserel: usize,
    state: *mut std::ffi::c_void,
    end: pg_sys::EndForeignScan_function,
}

/// Runs GetForeignRelSize (`inner`, supabase-wrappers' through our
/// planner hooks), keeps the plan the wrapper offered for `baserel`, and
/// has supabase-wrappers' state freed (by its own EndForeignScan, `end`)
/// when the planner's memory goes.
///
/// # Safety
/// The planner's `baserel`, and the routine's own EndForeignScan.
pub unsafe fn sizing(
    baserel: *mut pg_sys::RelOptInfo,
    end: pg_sys::EndForeignScan_function,
    inner: impl FnOnce(),
) {
    OFFERED.with(|o| o.borrow_mut().take());
    inner();
    let key = baserel as usize;
    match OFFERED.with(|o| o.borrow_mut().take()) {
        Some(plan) => PLANNED.with(|p| p.borrow_mut().insert(key, plan)),
        None => PLANNED.with(|p| p.borrow_mut().remove(&key)),
    };
    unsafe extern "C-unwind" fn free(arg: *mut std::ffi::c_void) {
        // SAFETY: the PlanningState registered below, alive with its context.
        unsafe {
            let planning = &*(arg as *const PlanningState);
            PLANNED.with(|p| p.borrow_mut().remove(&planning.baserel));
            if let Some(end) = planning.end {
                let mut node: pg_sys::ForeignScanState = std::mem::zeroed();
                node.fdw_state = planning.state;
                end(&mut node);
            }
        }
    }
    // SAFETY: the planner's memory outlives the planning that uses the state.
    unsafe {
        let state = (*baserel).fdw_private;
        if state.is_null() {
            return;
        }
        let planning = pg_sys::palloc0(std::mem::size_of::<PlanningState>()) as *mut PlanningState;
        (*planning).baserel = key;
        (*planning).state = state;
        (*planning).end = end;
        (*planning).callback.func = Some(free);
        (*planning).callback.arg = planning.cast();
        pg_sys::MemoryContextRegisterResetCallback(
            pg_sys::CurrentMemoryContext,
            &mut (*planning).callback,
        );
    }
}

/// The plan kept for `baserel` when it was sized (until the planner's
/// memory goes).
pub fn planned(baserel: *mut pg_sys::RelOptInfo) -> Option<ScanPlan> {
    PLANNED.with(|p| p.borrow().get(&(baserel as usize)).cloned())
}

/// Puts `plan` into the ForeignScan `scan`: the plan as JSON, and one
/// `Param` expression per parameter condition.
///
/// # Safety
/// `scan` is the ForeignScan being planned.
pub unsafe fn attach(scan: *mut pg_sys::ForeignScan, plan: &ScanPlan) {
    let json = serde_json::to_string(plan).expect("a plan serialises");
    let json = CString::new(json).expect("JSON escapes NUL");
    unsafe {
        let text = pg_sys::makeString(pg_sys::pstrdup(json.as_ptr()));
        (*scan).fdw_private = pg_sys::lappend(std::ptr::null_mut(), text.cast());
        let mut exprs: *mut pg_sys::List = std::ptr::null_mut();
        for p in &plan.params {
            let param = pg_sys::palloc0(std::mem::size_of::<pg_sys::Param>()) as *mut pg_sys::Param;
            (*param).xpr.type_ = pg_sys::NodeTag::T_Param;
            (*param).paramkind = p.kind;
            (*param).paramid = p.id;
            (*param).paramtype = p.type_oid.into();
            (*param).paramtypmod = -1;
            (*param).paramcollid = pg_sys::get_typcollation(p.type_oid.into());
            (*param).location = -1;
            exprs = pg_sys::lappend(exprs, param.cast());
        }
        (*scan).fdw_exprs = exprs;
    }
}

/// The plan [`attach`] put into the node's ForeignScan.
unsafe fn plan_of(node: *mut pg_sys::ForeignScanState) -> ScanPlan {
    unsafe {
        let scan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let private = (*scan).fdw_private;
        let text = if private.is_null() || (*private).length < 1 {
            std::ptr::null_mut()
        } else {
            (*(*private).elements).ptr_value as *mut pg_sys::Node
        };
        if text.is_null() || (*text).type_ != pg_sys::NodeTag::T_String {
            error!("foreign scan planned without pg_integration's scan plan");
        }
        let json = CStr::from_ptr((*(text as *mut pg_sys::String)).sval).to_string_lossy();
        serde_json::from_str(&json).unwrap_or_else(|e| error!("foreign scan plan unreadable: {e}"))
    }
}

// --------------------------------------------------------------- execution

/// One run of a scan node.
struct Run<R> {
    plan: ScanPlan,
    /// The parameters' ExprStates.
    params: *mut pg_sys::List,
    rows: Option<R>,
    /// Rescanned since the rows were opened: open again before reading.
    restart: bool,
    /// Where each row's values live until the next row is asked for.
    row_memory: pg_sys::MemoryContext,
    cells: Vec<Option<Cell>>,
    /// For each plan column with a type modifier (`numeric(5,2)`,
    /// `timestamp(0)`): the function that applies it, and the modifier.
    modifiers: Vec<Option<(pg_sys::Oid, i32)>>,
}

impl<R: RemoteRows> Run<R> {
    /// The remote statement for the parameters' current values.
    unsafe fn sql(&self, node: *mut pg_sys::ForeignScanState) -> String {
        let mut values = Vec::with_capacity(self.plan.params.len());
        // SAFETY: the node's expression context and the ExprStates
        // initialised for it; the values are rendered before the executor
        // resets that memory for its next row.
        unsafe {
            let econtext = (*node).ss.ps.ps_ExprContext;
            let previous = pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
            for (i, p) in self.plan.params.iter().enumerate() {
                let state = pg_sys::list_nth(self.params, i as i32) as *mut pg_sys::ExprState;
                let mut isnull = false;
                let evaluate = (*state).evalfunc.expect("an initialised expression");
                let datum = evaluate(state, econtext, &mut isnull);
                values.push(Cell::from_polymorphic_datum(
                    datum,
                    isnull,
                    p.type_oid.into(),
                ));
            }
            pg_sys::MemoryContextSwitchTo(previous);
        }
        self.plan.sql::<R::Dialect>(values)
    }
}

/// Drops a run whose scan did not end (an error), with its query's memory.
unsafe extern "C-unwind" fn forget<R>(arg: *mut std::ffi::c_void) {
    // SAFETY: the scan node, alive until its query's memory is freed.
    unsafe {
        let node = arg as *mut pg_sys::ForeignScanState;
        let run = (*node).fdw_state as *mut Run<R>;
        if !run.is_null() {
            (*node).fdw_state = std::ptr::null_mut();
            drop(Box::from_raw(run));
        }
    }
}

/// BeginForeignScan.
///
/// # Safety
/// The executor's arguments.
pub unsafe fn begin<R: RemoteRows>(node: *mut pg_sys::ForeignScanState, eflags: i32) {
    if eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0 {
        return;
    }
    unsafe {
        let plan = plan_of(node);
        let scan = (*node).ss.ps.plan as *mut pg_sys::ForeignScan;
        let params = pg_sys::ExecInitExprList((*scan).fdw_exprs, node.cast());
        let query_memory = (*(*node).ss.ps.state).es_query_cxt;
        let row_memory = pg_sys::AllocSetContextCreateInternal(
            query_memory,
            c"pg_integration foreign scan row".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        // A value read remotely must fit the local column as an assignment
        // would make it fit: numeric(5,2) rounds to 2 places (or refuses
        // what has too many digits), timestamp(0) to whole seconds.
        let desc = (*(*node).ss.ss_ScanTupleSlot).tts_tupleDescriptor;
        let natts = (*desc).natts as usize;
        let modifiers = plan
            .columns
            .iter()
            .map(|col| {
                let attribute = &(*desc).attrs.as_slice(natts)[col.num - 1];
                if attribute.atttypmod < 0 {
                    return None;
                }
                let mut function = pg_sys::InvalidOid;
                let path = pg_sys::find_typmod_coercion_function(attribute.atttypid, &mut function);
                (path == pg_sys::CoercionPathType::COERCION_PATH_FUNC
                    && function != pg_sys::InvalidOid)
                    .then_some((function, attribute.atttypmod))
            })
            .collect();
        let run = Box::new(Run::<R> {
            cells: Vec::with_capacity(plan.columns.len()),
            modifiers,
            plan,
            params,
            rows: None,
            restart: false,
            row_memory,
        });
        (*node).fdw_state = Box::into_raw(run).cast();
        let callback = pg_sys::MemoryContextAlloc(
            query_memory,
            std::mem::size_of::<pg_sys::MemoryContextCallback>(),
        ) as *mut pg_sys::MemoryContextCallback;
        (*callback).func = Some(forget::<R>);
        (*callback).arg = node.cast();
        pg_sys::MemoryContextRegisterResetCallback(query_memory, callback);
    }
}

/// IterateForeignScan: the next row in the scan slot, or an empty slot.
///
/// # Safety
/// The executor's argument, after [`begin`].
pub unsafe fn iterate<R: RemoteRows>(
    node: *mut pg_sys::ForeignScanState,
) -> *mut pg_sys::TupleTableSlot {
    unsafe {
        let run = &mut *((*node).fdw_state as *mut Run<R>);
        let slot = (*node).ss.ss_ScanTupleSlot;
        pg_sys::ExecClearTuple(slot);
        pg_sys::MemoryContextReset(run.row_memory);
        if run.restart {
            run.restart = false;
            if let Some(rows) = run.rows.take() {
                raise(rows.close());
            }
        }
        if run.rows.is_none() {
            let sql = run.sql(node);
            run.rows = Some(raise(R::open(&run.plan, sql)));
        }
        let rows = run.rows.as_mut().expect("opened above");
        let previous = pg_sys::MemoryContextSwitchTo(run.row_memory);
        run.cells.clear();
        let found = rows.next(&run.plan, &mut run.cells);
        if matches!(found, Ok(true)) {
            let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
            std::slice::from_raw_parts_mut((*slot).tts_isnull, natts).fill(true);
            let desc = (*slot).tts_tupleDescriptor;
            for ((col, cell), modifier) in run
                .plan
                .columns
                .iter()
                .zip(run.cells.drain(..))
                .zip(&run.modifiers)
            {
                let attribute = &(*desc).attrs.as_slice(natts)[col.num - 1];
                let datum = match cell {
                    // The input function applies the modifier itself.
                    Some(Cell::String(text)) if attribute.atttypid != pg_sys::TEXTOID => {
                        Some(text_into(attribute, &text))
                    }
                    cell => cell
                        .and_then(|c| c.into_datum())
                        .map(|datum| match modifier {
                            Some((function, typmod)) => pg_sys::OidFunctionCall3Coll(
                                *function,
                                pg_sys::InvalidOid,
                                datum,
                                pg_sys::Datum::from(*typmod),
                                pg_sys::Datum::from(false),
                            ),
                            None => datum,
                        }),
                };
                if let Some(datum) = datum {
                    *(*slot).tts_values.add(col.num - 1) = datum;
                    *(*slot).tts_isnull.add(col.num - 1) = false;
                }
            }
            pg_sys::ExecStoreVirtualTuple(slot);
        }
        pg_sys::MemoryContextSwitchTo(previous);
        raise(found);
        slot
    }
}

/// A remote value read as text, for a local column of another type: it
/// goes through that type's input function with the column's modifier, a
/// checked conversion. Stored as it is, a text value in a column declared
/// `int8[]`, `money` or `time` would be read as that type's bytes.
unsafe fn text_into(attribute: &pg_sys::FormData_pg_attribute, text: &str) -> pg_sys::Datum {
    let column = CStr::from_ptr(attribute.attname.data.as_ptr()).to_string_lossy();
    let text = raise(CString::new(text).map_err(|_| {
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_UNTRANSLATABLE_CHARACTER,
            format!("column \"{column}\": the remote value holds a NUL byte"),
            "",
        )
    }));
    let (mut input, mut ioparam) = (pg_sys::InvalidOid, pg_sys::InvalidOid);
    pg_sys::getTypeInputInfo(attribute.atttypid, &mut input, &mut ioparam);
    pg_sys::OidInputFunctionCall(
        input,
        text.as_ptr().cast_mut(),
        ioparam,
        attribute.atttypmod,
    )
}

/// ReScanForeignScan: the rows are read again, with the parameters' values
/// then.
///
/// # Safety
/// The executor's argument, after [`begin`].
pub unsafe fn rescan<R: RemoteRows>(node: *mut pg_sys::ForeignScanState) {
    unsafe {
        let run = &mut *((*node).fdw_state as *mut Run<R>);
        run.restart = run.rows.is_some();
    }
}

/// EndForeignScan.
///
/// # Safety
/// The executor's argument.
pub unsafe fn end<R: RemoteRows>(node: *mut pg_sys::ForeignScanState) {
    unsafe {
        let run = (*node).fdw_state as *mut Run<R>;
        if run.is_null() {
            return;
        }
        (*node).fdw_state = std::ptr::null_mut();
        let run = Box::from_raw(run);
        if let Some(rows) = run.rows {
            raise(rows.close());
        }
    }
}

/// ExplainForeignScan: the `Remote SQL` line (no option values:
/// credentials never appear).
///
/// # Safety
/// The executor's arguments.
pub unsafe fn explain(node: *mut pg_sys::ForeignScanState, es: *mut pg_sys::ExplainState) {
    unsafe {
        let sql = plan_of(node).shown().replace('\0', "");
        let value = CString::new(sql).expect("NUL removed");
        pg_sys::ExplainPropertyText(c"Remote SQL".as_ptr(), value.as_ptr(), es);
    }
}

/// What a wrapper's begin_scan, iter_scan and end_scan answer: the trait
/// requires them, but the routine's scan callbacks are [`hook_scans`]'s.
pub const NOT_THROUGH_SUPABASE: &str =
    "scans run through pg_integration's own executor callbacks (fdw::scan)";

/// Installs the scan callbacks on a routine (`&mut FdwRoutine`) for the
/// wrapper's [`RemoteRows`].
macro_rules! hook_scans {
    ($routine:expr, $rows:ty) => {{
        #[pg_guard]
        unsafe extern "C-unwind" fn begin(node: *mut pg_sys::ForeignScanState, eflags: i32) {
            // SAFETY: the executor's arguments.
            unsafe { $crate::fdw::scan::begin::<$rows>(node, eflags) }
        }
        #[pg_guard]
        unsafe extern "C-unwind" fn iterate(
            node: *mut pg_sys::ForeignScanState,
        ) -> *mut pg_sys::TupleTableSlot {
            // SAFETY: the executor's argument.
            unsafe { $crate::fdw::scan::iterate::<$rows>(node) }
        }
        #[pg_guard]
        unsafe extern "C-unwind" fn rescan(node: *mut pg_sys::ForeignScanState) {
            // SAFETY: the executor's argument.
            unsafe { $crate::fdw::scan::rescan::<$rows>(node) }
        }
        #[pg_guard]
        unsafe extern "C-unwind" fn end(node: *mut pg_sys::ForeignScanState) {
            // SAFETY: the executor's argument.
            unsafe { $crate::fdw::scan::end::<$rows>(node) }
        }
        #[pg_guard]
        unsafe extern "C-unwind" fn explain(
            node: *mut pg_sys::ForeignScanState,
            es: *mut pg_sys::ExplainState,
        ) {
            // SAFETY: the executor's arguments.
            unsafe { $crate::fdw::scan::explain(node, es) }
        }
        let routine = &mut *$routine;
        routine.BeginForeignScan = Some(begin);
        routine.IterateForeignScan = Some(iterate);
        routine.ReScanForeignScan = Some(rescan);
        routine.EndForeignScan = Some(end);
        routine.ExplainForeignScan = Some(explain);
    }};
}
pub(crate) use hook_scans;
