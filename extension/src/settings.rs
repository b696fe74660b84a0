//! The extension's GUCs and whether the library was preloaded.
//! Shared memory and the background worker exist only when
//! `shared_preload_libraries` names pg_integration.

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

static PRELOADED: AtomicBool = AtomicBool::new(false);

/// The id of the API key that `authenticate()` accepted in this transaction.
/// Superuser-only, so that SQL cannot forge it; the extension sets it with
/// superuser context.
pub static API_KEY_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

pub fn init() {
    // SAFETY: reading a postmaster-set global during _PG_init.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    PRELOADED.store(preloading, Ordering::Relaxed);
    GucRegistry::define_string_guc(
        c"integration.api_key_id",
        c"Id of the API key accepted by integration.authenticate() in this transaction.",
        c"Set by integration.authenticate(); read it with current_setting('integration.api_key_id', true).",
        &API_KEY_ID,
        GucContext::Suset,
        GucFlags::default(),
    );
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
