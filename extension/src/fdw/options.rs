//! Reading FDW option lists (servers, user mappings, validator input)
//! without supabase-wrappers' private helpers.

use crate::fdw::statements::Problem;
use pgrx::pg_sys;
use std::collections::HashMap;
use std::ffi::CStr;
use supabase_wrappers::prelude::{
    ForeignServer, FOREIGN_SERVER_RELATION_ID, FOREIGN_TABLE_RELATION_ID,
};

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

/// The foreign server `oid` with its options (raises when it is gone).
pub fn foreign_server(oid: pg_sys::Oid) -> ForeignServer {
    // SAFETY: GetForeignServer raises on a missing server; its fields are
    // valid C strings and an option list.
    unsafe {
        let server = pg_sys::GetForeignServer(oid);
        ForeignServer {
            server_oid: oid,
            server_name: CStr::from_ptr((*server).servername)
                .to_string_lossy()
                .into_owned(),
            server_type: None,
            server_version: None,
            options: def_list((*server).options),
        }
    }
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

/// Where a foreign server is and who logs in there: the server's `host`
/// (default 127.0.0.1) and `port`, the current user's mapping.
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// Every option of the user mapping (client certificates).
    pub mapping: HashMap<String, String>,
}

/// The [`Endpoint`] of `server` for the current user.
pub fn endpoint(server: &ForeignServer, default_port: u16) -> Result<Endpoint, Problem> {
    let options = &server.options;
    let mapping = user_mapping(server.server_oid);
    let problem = |option: &str, reason: &str| Problem::Option {
        option: option.into(),
        reason: reason.into(),
    };
    Ok(Endpoint {
        host: options
            .get("host")
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into()),
        port: match options.get("port") {
            None => default_port,
            Some(p) => p
                .parse()
                .map_err(|_| problem("port", "must be a TCP port"))?,
        },
        user: mapping
            .get("user")
            .cloned()
            .ok_or_else(|| problem("user", "the user mapping needs a user"))?,
        password: mapping.get("password").cloned(),
        mapping,
    })
}

/// A positive integer option of the table, else of the server, else `default`.
pub fn positive(
    table: &HashMap<String, String>,
    server: &HashMap<String, String>,
    name: &str,
    default: usize,
) -> Result<usize, Problem> {
    match table.get(name).or_else(|| server.get(name)) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Problem::Option {
                option: name.into(),
                reason: "must be a positive integer".into(),
            }),
        },
    }
}

/// The option names each catalog accepts. Credentials are accepted only
/// in user mappings, so they never show in server or table definitions.
pub struct Allowed<'a> {
    pub server: &'a [&'a str],
    pub table: &'a [&'a str],
    pub mapping: &'a [&'a str],
}

/// The validator shared by the wrappers.
pub fn validate(
    options: &[Option<String>],
    catalog: Option<pg_sys::Oid>,
    allowed: &Allowed<'_>,
) -> Result<(), Problem> {
    let names: &[&str] = match catalog {
        Some(FOREIGN_SERVER_RELATION_ID) => allowed.server,
        Some(FOREIGN_TABLE_RELATION_ID) => allowed.table,
        Some(oid) if oid == pg_sys::UserMappingRelationId => allowed.mapping,
        _ => return Ok(()),
    };
    for opt in options.iter().flatten() {
        let name = opt.split_once('=').map(|(n, _)| n).unwrap_or(opt);
        if !names.contains(&name) {
            return Err(Problem::Option {
                option: name.into(),
                reason: format!("is not valid here; valid options: {}", names.join(", ")),
            });
        }
    }
    Ok(())
}
