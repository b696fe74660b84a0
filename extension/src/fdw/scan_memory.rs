//! Bounded scan memory. supabase-wrappers 0.1.28 turns each row's cells into
//! Datums inside its per-scan memory context, which lives until the scan
//! ends: every value ever returned stays allocated, with the garbage of
//! its conversion (numeric_in, jsonb_in …): 60 MB to gigabytes per million
//! rows. Wrapping IterateForeignScan, we reset that context when the
//! executor asks for the next row, which is when it is done with the
//! previous one (ForeignNext's contract, as for postgres_fdw's batch
//! context). After `BeginForeignScan` the context holds nothing else the
//! scan needs: the wrapper's state is Rust memory.

use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

thread_local! {
    /// Per scan node: the supabase-wrappers context its rows' values are
    /// allocated in, once a row showed it.
    static SCAN_CONTEXTS: RefCell<HashMap<usize, Option<pg_sys::MemoryContext>>> =
        RefCell::new(HashMap::new());
}

/// The name supabase-wrappers gives the parent of its scan contexts.
const WRAPPERS_ROOT: &CStr = c"WrappersRootMemCtx";

/// Runs supabase-wrappers' IterateForeignScan `inner` after freeing what
/// the previous row of the same scan allocated.
///
/// # Safety
/// `node` is the executor's scan node and `inner` the routine's own
/// IterateForeignScan for it.
pub unsafe fn iterate(
    node: *mut pg_sys::ForeignScanState,
    inner: pg_sys::IterateForeignScan_function,
) -> *mut pg_sys::TupleTableSlot {
    let Some(inner) = inner else {
        return std::ptr::null_mut();
    };
    let key = node as usize;
    match SCAN_CONTEXTS.with(|c| c.borrow().get(&key).copied()) {
        // SAFETY: the scan's own context, alive while the scan is.
        Some(Some(context)) => unsafe { pg_sys::MemoryContextReset(context) },
        Some(None) => {}
        None => {
            // SAFETY: the node's EState outlives the scan.
            unsafe { forget_with_query(node) };
            SCAN_CONTEXTS.with(|c| c.borrow_mut().insert(key, None));
        }
    }
    // SAFETY: the executor's arguments, passed through.
    let slot = unsafe { inner(node) };
    // SAFETY: the slot the routine just filled.
    if let Some(context) = unsafe { scan_context_of(slot) } {
        SCAN_CONTEXTS.with(|c| c.borrow_mut().insert(key, Some(context)));
    }
    slot
}

/// Drops the node's entry when its query's memory goes: after the scan
/// ended, or when an error aborted it (a later node may reuse the address).
unsafe fn forget_with_query(node: *mut pg_sys::ForeignScanState) {
    unsafe extern "C-unwind" fn forget(arg: *mut std::ffi::c_void) {
        SCAN_CONTEXTS.with(|c| c.borrow_mut().remove(&(arg as usize)));
    }
    unsafe {
        let query_cxt = (*(*node).ss.ps.state).es_query_cxt;
        let callback = pg_sys::MemoryContextAlloc(
            query_cxt,
            std::mem::size_of::<pg_sys::MemoryContextCallback>(),
        ) as *mut pg_sys::MemoryContextCallback;
        (*callback).func = Some(forget);
        (*callback).arg = node as *mut std::ffi::c_void;
        pg_sys::MemoryContextRegisterResetCallback(query_cxt, callback);
    }
}

/// The supabase-wrappers scan context that a pass-by-reference value of
/// the slot's row was allocated in, if any (values may also live in the
/// per-tuple context, which the executor resets itself).
unsafe fn scan_context_of(slot: *mut pg_sys::TupleTableSlot) -> Option<pg_sys::MemoryContext> {
    unsafe {
        // A stored virtual row has all its values valid (tts_nvalid); a
        // foreign scan's slot is a heap-tuple slot used that way.
        if slot.is_null() || (*slot).tts_flags & pg_sys::TTS_FLAG_EMPTY as u16 != 0 {
            return None;
        }
        let desc = (*slot).tts_tupleDescriptor;
        let valid = ((*slot).tts_nvalid as usize).min((*desc).natts as usize);
        let attrs = (*desc).attrs.as_slice(valid);
        attrs.iter().enumerate().find_map(|(i, attr)| {
            if attr.attbyval || *(*slot).tts_isnull.add(i) {
                return None;
            }
            let ptr = (*(*slot).tts_values.add(i)).cast_mut_ptr::<std::ffi::c_void>();
            if ptr.is_null() {
                return None;
            }
            scan_context(ptr)
        })
    }
}

/// The context of the palloc'd chunk `ptr` when it is a child of
/// supabase-wrappers' root context. PostgreSQL 15 keeps a chunk's context
/// in the word before it (`GetMemoryChunkContext`, an inline function
/// pg_sys does not bind).
unsafe fn scan_context(ptr: *mut std::ffi::c_void) -> Option<pg_sys::MemoryContext> {
    unsafe {
        let context = *(ptr as *const pg_sys::MemoryContext).sub(1);
        if context.is_null() || (*context).parent.is_null() {
            return None;
        }
        let parent_name = (*(*context).parent).name;
        (!parent_name.is_null() && CStr::from_ptr(parent_name) == WRAPPERS_ROOT).then_some(context)
    }
}
