//! Running a piece of work with the extension owner's rights, the way a
//! SECURITY DEFINER function does, but only around the statements that need
//! it, so that the caller's identity stays known and the warm path of
//! `verify_api_key` switches nothing.

use crate::errors::raise;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::PgOid;
use std::cell::{Cell, OnceCell};
use std::ffi::CStr;
use std::thread::LocalKey;

/// Runs `work` as the owner of the pg_integration extension with
/// `search_path = pg_catalog, pg_temp`. On error, transaction abort
/// restores the user and the settings, as it does for SECURITY DEFINER.
pub fn as_owner<R>(work: impl FnOnce() -> R) -> R {
    switch_to_owner(true, work)
}

/// Like [`as_owner`] but keeps the caller's `search_path`: only for running
/// plans saved inside [`as_owner`], which Postgres re-plans with the
/// `search_path` they were made with.
pub fn as_owner_saved_plan<R>(work: impl FnOnce() -> R) -> R {
    switch_to_owner(false, work)
}

fn switch_to_owner<R>(safe_search_path: bool, work: impl FnOnce() -> R) -> R {
    let owner = extension_owner();
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context = 0;
    // SAFETY: the same sequence fmgr_security_definer() uses.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        let nest = safe_search_path.then(|| pg_sys::NewGUCNestLevel());
        pg_sys::SetUserIdAndSecContext(
            owner,
            saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        if nest.is_some() {
            pg_sys::set_config_option(
                c"search_path".as_ptr(),
                c"pg_catalog, pg_temp".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        let result = work();
        if let Some(nest) = nest {
            pg_sys::AtEOXact_GUC(true, nest);
        }
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        result
    }
}

/// A statement kept planned for the life of the backend.
pub type SavedPlan = OnceCell<&'static OwnedPreparedStatement>;

/// `sql` planned once per backend into `cell`, with parameters of the types
/// of `args` (`mutating` for statements that write), as the extension owner
/// under a safe `search_path`; Postgres re-plans it when the tables change.
/// Run it with arguments of the same types, inside [`as_owner_saved_plan`]
/// where it needs the owner's rights.
pub fn saved_plan(
    cell: &'static LocalKey<SavedPlan>,
    sql: &'static str,
    args: &[DatumWithOid<'_>],
    mutating: bool,
) -> &'static OwnedPreparedStatement {
    cell.with(|cell| {
        *cell.get_or_init(|| {
            let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
            as_owner(|| {
                Spi::connect(|client| {
                    let plan = if mutating {
                        client.prepare_mut(sql, &types)
                    } else {
                        client.prepare(sql, &types)
                    };
                    let plan = plan.unwrap_or_else(|e| error!("prepare {sql}: {e}"));
                    Box::leak(Box::new(plan.keep()))
                })
            })
        })
    })
}

thread_local! {
    /// Only superusers create this extension and its owner cannot change,
    /// so the owner is looked up once per backend.
    static OWNER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
}

fn extension_owner() -> pg_sys::Oid {
    if let Some(owner) = OWNER.get() {
        return owner;
    }
    let owner = lookup_owner();
    OWNER.set(Some(owner));
    owner
}

fn lookup_owner() -> pg_sys::Oid {
    Spi::get_one::<pg_sys::Oid>(
        "SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'pg_integration'",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_integration is not installed in this database",
            Some("Run CREATE EXTENSION pg_integration first."),
        )
    })
}

/// The name of the current user (the caller, outside `as_owner`).
pub fn current_user_name() -> String {
    // SAFETY: GetUserNameFromId returns a palloc'd C string or raises.
    unsafe {
        let name = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false);
        CStr::from_ptr(name).to_string_lossy().into_owned()
    }
}
