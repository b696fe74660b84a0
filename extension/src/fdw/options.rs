//! Reading FDW option lists (servers, user mappings, validator input)
//! without supabase-wrappers' private helpers.

use pgrx::pg_sys;
use std::collections::HashMap;
use std::ffi::CStr;

/// The `name → value` pairs of a `DefElem` option list.
///
/// # Safety
/// `list` is a valid option list (or null) from the catalog.
pub unsafe fn def_list(list: *mut pg_sys::List) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if list.is_null() {
        return out;
    }
    unsafe {
        for i in 0..(*list).length {
            let def = pg_sys::list_nth(list, i) as *mut pg_sys::DefElem;
            let name = CStr::from_ptr((*def).defname)
                .to_string_lossy()
                .into_owned();
            let value = CStr::from_ptr(pg_sys::defGetString(def))
                .to_string_lossy()
                .into_owned();
            out.insert(name, value);
        }
    }
    out
}

/// The options of the current user's mapping for `server` (or PUBLIC's);
/// raises the usual error when there is none.
pub fn user_mapping(server: pg_sys::Oid) -> HashMap<String, String> {
    // SAFETY: GetUserMapping raises on a missing mapping; its list is valid.
    unsafe {
        let mapping = pg_sys::GetUserMapping(pg_sys::GetUserId(), server);
        def_list((*mapping).options)
    }
}

/// The option names of a validator call (`name=value` strings).
pub fn validator_names(options: &[Option<String>]) -> Vec<String> {
    options
        .iter()
        .flatten()
        .map(|o| o.split_once('=').map(|(n, _)| n).unwrap_or(o).to_string())
        .collect()
}
