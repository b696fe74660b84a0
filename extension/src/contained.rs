//! Runs code that a user supplied (a queue callback, the insert into a
//! webhook's target table and the triggers it fires, a webhook handler) with
//! that user's rights and no more: as that role, in a security-restricted
//! operation (no `SET ROLE`/`RESET ROLE`, no temporary objects or held
//! cursors), inside a GUC nest level that is rolled back afterwards, so no
//! setting it makes (`search_path`, `default_transaction_read_only`, …)
//! outlives the call. PostgreSQL does the same around index expressions and
//! `REFRESH MATERIALIZED VIEW`.

use crate::errors::raise;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::AnyElement;
use std::ffi::CString;

/// The `search_path` user code starts with: what a new session of its role
/// has by default (its own schema, then `public`; `pg_catalog` first).
const USER_SEARCH_PATH: &std::ffi::CStr = c"\"$user\", public";

/// Runs `work` as `role`, restricted, inside a GUC nest level. Call it
/// inside a (sub)transaction: on error its abort restores the user, the
/// security context and the settings, as for `SECURITY DEFINER`.
pub fn run_as<R>(role: pg_sys::Oid, work: impl FnOnce() -> R) -> R {
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: the sequence ExecRefreshMatView and index builds use.
    let nest = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            role,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
        let nest = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            USER_SEARCH_PATH.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        nest
    };
    let result = work();
    // SAFETY: rolls back every setting made since NewGUCNestLevel, session
    // ones included (isCommit = false), then restores the saved user.
    unsafe {
        pg_sys::AtEOXact_GUC(false, nest);
        pg_sys::SetUserIdAndSecContext(user, context);
    }
    result
}

/// The role named `name`; raises 42704 naming `whose` when it is gone.
pub fn role(name: &str, whose: &str) -> pg_sys::Oid {
    let oid = CString::new(name)
        .ok()
        // SAFETY: a catalog lookup that returns InvalidOid when missing.
        .map(|c| unsafe { pg_sys::get_role_oid(c.as_ptr(), true) })
        .unwrap_or(pg_sys::InvalidOid);
    if oid == pg_sys::InvalidOid {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("role {name:?}, {whose}, no longer exists"),
            None,
        );
    }
    oid
}

/// Runs `statement` with `$1 = arg` as `role`, contained, and returns the
/// first column of each row as text. For the extension's own SECURITY
/// DEFINER functions (webhook targets and handlers): not executable by
/// anyone else (finalize.sql revokes it from PUBLIC).
#[pg_extern(volatile, parallel_unsafe, name = "_run_as")]
fn run_as_sql(role: &str, statement: &str, arg: AnyElement) -> SetOfIterator<'static, String> {
    let oid = self::role(role, "the role to run as");
    let type_oid = arg.oid();
    // SAFETY: the datum is the caller's argument, of type `type_oid`, alive
    // for the whole call.
    let args = [unsafe { DatumWithOid::new(arg, type_oid) }];
    let rows = run_as(oid, || {
        Spi::connect_mut(|client| {
            let table = client.update(statement, None, &args)?;
            table
                .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
                .collect::<Result<Vec<String>, _>>()
        })
    })
    .unwrap_or_else(|e| error!("{e}"));
    SetOfIterator::new(rows)
}
