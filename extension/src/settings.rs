//! The extension's GUCs and whether the library was preloaded.
//! Shared memory and the background worker exist only when
//! `shared_preload_libraries` names pg_integration.

use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

static PRELOADED: AtomicBool = AtomicBool::new(false);

/// `integration.api_key_id` as stored: `ID@ROLE_OID`, the key that
/// `authenticate()` accepted in this transaction and the role it switched
/// to. Superuser-only, so that SQL cannot forge it; the extension sets it
/// with superuser context. Read through [`show_api_key_id`].
static mut API_KEY_ID: *mut c_char = std::ptr::null_mut();

thread_local! {
    static SHOWN: RefCell<CString> = RefCell::new(CString::default());
}

pub fn init() {
    // SAFETY: reading a postmaster-set global during _PG_init.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    PRELOADED.store(preloading, Ordering::Relaxed);
    // SAFETY: defines a GUC backed by a static that only guc.c writes.
    unsafe {
        pg_sys::DefineCustomStringVariable(
            c"integration.api_key_id".as_ptr(),
            c"Id of the API key accepted by integration.authenticate() in this transaction.".as_ptr(),
            c"Set by integration.authenticate(); read it with current_setting('integration.api_key_id', true). \
              Empty once the role it switched to is no longer the current role (RESET ROLE, SET ROLE)."
                .as_ptr(),
            &raw mut API_KEY_ID,
            std::ptr::null(),
            pg_sys::GucContext::PGC_SUSET,
            0,
            None,
            None,
            Some(show_api_key_id),
        );
    }
}

/// Sets `integration.api_key_id` for the rest of the transaction, bound to
/// the role `authenticate()` just switched to.
pub fn set_api_key_id(id: i64) {
    // SAFETY: reads the role that SET ROLE made current.
    let role = unsafe { pg_sys::GetCurrentRoleId() };
    set_local(
        "integration.api_key_id",
        &format!("{id}@{}", role.to_u32()),
        pg_sys::GucContext::PGC_SUSET,
    );
}

/// What `current_setting('integration.api_key_id')` and `SHOW` answer: the
/// key id while the role `authenticate()` switched to is still current, else
/// empty, so that after `RESET ROLE` or `SET ROLE` no key claims the session.
#[pg_guard]
unsafe extern "C-unwind" fn show_api_key_id() -> *const c_char {
    // SAFETY: guc.c keeps the value a valid C string or NULL.
    let stored = unsafe { (!API_KEY_ID.is_null()).then(|| CStr::from_ptr(API_KEY_ID)) };
    let current = unsafe { pg_sys::GetCurrentRoleId() }.to_u32().to_string();
    let shown = stored
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('@'))
        .filter(|(_, role)| *role == current)
        .map(|(id, _)| id)
        .unwrap_or("");
    SHOWN.with(|cell| {
        *cell.borrow_mut() = CString::new(shown).unwrap_or_default();
        // guc.c copies the answer before the next call.
        cell.borrow().as_ptr()
    })
}

/// True when the library was loaded by `shared_preload_libraries`.
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// `SET LOCAL name = value` with the given privilege context. Permission
/// checks made by the setting itself (such as role membership for `role`)
/// still apply.
pub fn set_local(name: &str, value: &str, context: pg_sys::GucContext::Type) {
    let name = CString::new(name).expect("setting names have no NUL");
    let value = CString::new(value).expect("checked values have no NUL");
    // SAFETY: plain call into guc.c with valid C strings; errors raise.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            context,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
}
