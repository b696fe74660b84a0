//! API keys in SQL: create, verify, authenticate, revoke and rotate.
//! Token format and hashing live in `integration_core::api_keys`; this
//! module keeps a per-backend cache of key rows, invalidated through a
//! generation counter in shared memory that every committed change bumps.

use crate::audit::{self, Action, Kind, Reason};
use crate::errors::{self, raise};
use crate::owner::{as_owner, as_owner_saved_plan, current_user_name};
use crate::raw_datum::{Jsonb, Raw, TextArray};
use crate::settings;
use integration_core::api_keys::{self as keys, KeyHasher};
use pgrx::fcinfo::{
    pg_getarg, pg_return_null, srf_is_first_call, srf_return_done, srf_return_next,
};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use pgrx::{pg_shmem_init, JsonB, PgAtomic};
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped after every committed change to `api_key_store`.
static GENERATION: PgAtomic<AtomicU64> = unsafe { PgAtomic::new(c"pg_integration_api_keys_gen") };

/// A backend reports a key's use at most this often (microseconds).
const USE_REPORT_INTERVAL: i64 = 60_000_000;
/// Entries kept per backend before the cache starts over.
const CACHE_LIMIT: usize = 10_000;

struct KeyRow {
    name: String,
    role: String,
    scopes: Vec<String>,
    scopes_raw: Raw<TextArray>,
    metadata: Raw<Jsonb>,
    hash: Vec<u8>,
    expires_at: Option<i64>,
    revoked: bool,
    last_reported_use: i64,
}

#[derive(Default)]
struct Cache {
    generation: u64,
    hasher: Option<KeyHasher>,
    rows: HashMap<i64, Option<KeyRow>>,
    /// This transaction changed keys: bypass the cache until it ends.
    dirty: bool,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

pub fn init() {
    if settings::preloaded() {
        pg_shmem_init!(GENERATION);
    }
    // SAFETY: registering a plain callback once per backend at load time.
    unsafe { pg_sys::RegisterXactCallback(Some(on_xact_end), std::ptr::null_mut()) };
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    let commit = event == pg_sys::XactEvent::XACT_EVENT_COMMIT
        || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT;
    let abort = event == pg_sys::XactEvent::XACT_EVENT_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT;
    if !commit && !abort {
        return;
    }
    CACHE.with_borrow_mut(|cache| {
        if cache.dirty {
            cache.dirty = false;
            cache.rows.clear();
            cache.hasher = None;
            if commit && settings::preloaded() {
                GENERATION.get().fetch_add(1, Ordering::AcqRel);
            }
        }
    });
}

/// Statement trigger on `api_key_store`: every backend drops its cached
/// rows once this transaction commits.
#[pg_trigger]
fn _api_keys_changed<'a>(
    _trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, std::convert::Infallible> {
    CACHE.with_borrow_mut(|cache| {
        cache.dirty = true;
        cache.rows.clear();
        cache.hasher = None;
    });
    Ok(None)
}

/// What a successful verification returns.
struct Verified {
    id: i64,
    name: String,
    role: String,
    scopes: Raw<TextArray>,
    metadata: Raw<Jsonb>,
}

fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

fn verify(token: &str, required_scope: Option<&str>, action: Action) -> Option<Verified> {
    let refuse = |reason, id| {
        audit::record(Kind::Refused, action, Some(reason), id);
        None
    };
    let parsed = match keys::parse(token) {
        Ok(parsed) => parsed,
        Err(keys::TokenError::Malformed) => return refuse(Reason::Malformed, None),
        Err(keys::TokenError::BadChecksum) => return refuse(Reason::BadChecksum, None),
    };
    let id = parsed.id;
    let now = now();
    let outcome = with_key(id, |hasher, row| {
        let Some(row) = row else {
            return Err(Reason::UnknownKey);
        };
        if !hasher.is_some_and(|h| h.matches(id, parsed.secret, &row.hash)) {
            return Err(Reason::WrongSecret);
        }
        still_allows(row, now, required_scope)?;
        let report_use = now - row.last_reported_use >= USE_REPORT_INTERVAL;
        if report_use {
            row.last_reported_use = now;
        }
        Ok((
            Verified {
                id,
                name: row.name.clone(),
                role: row.role.clone(),
                scopes: row.scopes_raw.clone(),
                metadata: row.metadata.clone(),
            },
            report_use,
        ))
    });
    match outcome {
        Ok((verified, report_use)) => {
            if report_use {
                audit::record(Kind::Used, action, None, Some(id));
            }
            Some(verified)
        }
        Err(reason) => refuse(reason, Some(id)),
    }
}

/// Whether a key whose secret matched may still be used: not revoked, not
/// expired at `now`, and holding `required_scope` when one is asked for.
fn still_allows(row: &KeyRow, now: i64, required_scope: Option<&str>) -> Result<(), Reason> {
    if row.revoked {
        return Err(Reason::Revoked);
    }
    if row.expires_at.is_some_and(|at| at <= now) {
        return Err(Reason::Expired);
    }
    if let Some(scope) = required_scope {
        if !keys::scope_allows(&row.scopes, scope) {
            return Err(Reason::MissingScope);
        }
    }
    Ok(())
}

/// `integration.api_key_allows(id, required_scope)`: whether key `id` is
/// still valid (not revoked, not expired) and holds `required_scope`. For
/// the sidecar only: its sign-in cookies name a key verified earlier by
/// `verify_api_key` by id, so the browser never keeps the token. A refusal
/// is audited as a refused verification.
#[pg_extern(volatile, parallel_unsafe)]
fn api_key_allows(id: i64, required_scope: &str) -> bool {
    let now = now();
    let outcome = with_key(id, |_, row| match row {
        Some(row) => still_allows(row, now, Some(required_scope)),
        None => Err(Reason::UnknownKey),
    });
    match outcome {
        Ok(()) => true,
        Err(reason) => {
            audit::record(Kind::Refused, Action::Verify, Some(reason), Some(id));
            false
        }
    }
}

/// Runs `check` on key `id`'s row, from the cache when it is current.
fn with_key<R>(id: i64, check: impl FnOnce(Option<&KeyHasher>, Option<&mut KeyRow>) -> R) -> R {
    let generation = settings::preloaded().then(|| GENERATION.get().load(Ordering::Acquire));
    let cacheable = CACHE.with_borrow_mut(|cache| {
        if generation != Some(cache.generation) || cache.rows.len() >= CACHE_LIMIT {
            cache.rows.clear();
            cache.hasher = None;
            cache.generation = generation.unwrap_or(0);
        }
        generation.is_some() && !cache.dirty
    });
    let cached = cacheable && CACHE.with_borrow(|cache| cache.rows.contains_key(&id));
    if !cached {
        let (hasher, row) = load(id);
        if !cacheable {
            let mut row = row;
            return check(hasher.as_ref(), row.as_mut());
        }
        CACHE.with_borrow_mut(|cache| {
            if cache.hasher.is_none() {
                cache.hasher = hasher;
            }
            cache.rows.insert(id, row);
        });
    }
    CACHE.with_borrow_mut(|cache| {
        let Cache { hasher, rows, .. } = cache;
        let row = rows.get_mut(&id).and_then(Option::as_mut);
        check(hasher.as_ref(), row)
    })
}

thread_local! {
    /// The lookup, planned once per backend and kept.
    static LOAD_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
}

const LOAD_SQL: &CStr = c"
    SELECT (SELECT key FROM integration.hash_keys WHERE purpose = 'api_keys'),
           s.id IS NOT NULL, s.name, s.role::text, s.scopes, s.metadata,
           s.secret_hash, s.expires_at, s.revoked_at IS NOT NULL
    FROM (SELECT) AS one
    LEFT JOIN integration.api_key_store s ON s.id = $1";

/// The lookup's plan, prepared as the extension owner under a safe
/// `search_path`; Postgres re-plans it with that path when tables change.
fn load_plan() -> pg_sys::SPIPlanPtr {
    let kept = LOAD_PLAN.get();
    if !kept.is_null() {
        return kept;
    }
    let plan = as_owner(|| {
        Spi::connect(|_| {
            let mut types = [pg_sys::INT8OID];
            // SAFETY: inside SPI_connect; the plan is kept for the backend's life.
            unsafe {
                let plan = pg_sys::SPI_prepare(LOAD_SQL.as_ptr(), 1, types.as_mut_ptr());
                if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                    let code = pg_sys::SPI_result;
                    error!("prepare the API key lookup: SPI error {code}");
                }
                plan
            }
        })
    });
    LOAD_PLAN.set(plan);
    plan
}

/// Reads key `id` as committed now, not as the transaction's snapshot saw
/// it: a key revoked after a REPEATABLE READ transaction began is refused
/// in that transaction too. [`with_key`] reads the generation before this,
/// so a row is never filed under a generation newer than what it saw.
fn load(id: i64) -> (Option<KeyHasher>, Option<KeyRow>) {
    let plan = load_plan();
    as_owner_saved_plan(|| {
        Spi::connect(|_| {
            // SAFETY: inside SPI_connect; every value is copied out of the
            // SPI result before Spi::connect finishes it.
            unsafe {
                // A parallel query's leader may not take new snapshots.
                let snapshot = if pg_sys::IsInParallelMode() {
                    pg_sys::GetActiveSnapshot()
                } else {
                    pg_sys::GetLatestSnapshot()
                };
                let mut values = [pg_sys::Datum::from(id)];
                let nulls = [b' ' as std::ffi::c_char];
                let status = pg_sys::SPI_execute_snapshot(
                    plan,
                    values.as_mut_ptr(),
                    nulls.as_ptr(),
                    snapshot,
                    std::ptr::null_mut(),
                    true,
                    false,
                    1,
                );
                if status != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed != 1 {
                    error!("read API key {id}: SPI status {status}");
                }
                let table = &*pg_sys::SPI_tuptable;
                let (tuple, desc) = (*table.vals, table.tupdesc);
                let column = |n: i32| {
                    let mut null = false;
                    let datum = pg_sys::SPI_getbinval(tuple, desc, n, &mut null);
                    (datum, null)
                };
                let value = |n: i32| {
                    let (datum, null) = column(n);
                    (!null).then_some(datum)
                };
                let hasher = value(1)
                    .and_then(|d| Vec::<u8>::from_datum(d, false))
                    .map(|key| KeyHasher::new(&key));
                let exists = value(2).and_then(|d| bool::from_datum(d, false)) == Some(true);
                let required =
                    |n: i32| value(n).unwrap_or_else(|| error!("API key {id}: column {n} is null"));
                let row = exists.then(|| KeyRow {
                    name: value(3)
                        .and_then(|d| String::from_datum(d, false))
                        .unwrap_or_default(),
                    role: value(4)
                        .and_then(|d| String::from_datum(d, false))
                        .unwrap_or_default(),
                    scopes: value(5)
                        .and_then(|d| Vec::<String>::from_datum(d, false))
                        .unwrap_or_default(),
                    // NOT NULL columns of exactly these types.
                    scopes_raw: Raw::copy_of(required(5)),
                    metadata: Raw::copy_of(required(6)),
                    hash: value(7)
                        .and_then(|d| Vec::<u8>::from_datum(d, false))
                        .unwrap_or_default(),
                    expires_at: value(8)
                        .and_then(|d| TimestampWithTimeZone::from_datum(d, false))
                        .map(pg_sys::TimestampTz::from),
                    revoked: value(9)
                        .and_then(|d| bool::from_datum(d, false))
                        .unwrap_or(true),
                    last_reported_use: 0,
                });
                (hasher, row)
            }
        })
    })
}

extension_sql!(
    r#"
CREATE FUNCTION integration.verify_api_key(token text, required_scope text DEFAULT NULL)
RETURNS TABLE (id bigint, name text, role text, scopes text[], metadata jsonb)
LANGUAGE c STABLE PARALLEL RESTRICTED ROWS 1
AS 'MODULE_PATHNAME', 'verify_api_key_srf';
COMMENT ON FUNCTION integration.verify_api_key(text, text) IS
    'Returns the key''s id, name, role, scopes and metadata, or no row when the token is invalid';
"#,
    name = "verify_api_key",
    requires = ["roles"],
);

thread_local! {
    /// `verify_api_key`'s blessed row descriptor, built once per backend:
    /// pgrx's table functions rebuild it on every call, which costs more
    /// than the whole warm verification.
    static ROW_DESC: Cell<pg_sys::TupleDesc> = const { Cell::new(std::ptr::null_mut()) };
}

unsafe fn row_desc(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::TupleDesc {
    let cached = ROW_DESC.get();
    if !cached.is_null() {
        return cached;
    }
    // SAFETY: a descriptor for this function's OUT columns, kept in
    // TopMemoryContext for the life of the backend.
    let desc = unsafe {
        PgMemoryContexts::TopMemoryContext.switch_to(|_| {
            let mut desc = std::ptr::null_mut();
            let class = pg_sys::get_call_result_type(fcinfo, std::ptr::null_mut(), &mut desc);
            if class != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE || desc.is_null() {
                error!("verify_api_key must be declared RETURNS TABLE");
            }
            pg_sys::BlessTupleDesc(desc)
        })
    };
    ROW_DESC.set(desc);
    desc
}

/// Tells Postgres that [`verify_api_key_srf`] uses the version-1 calling
/// convention (PG_FUNCTION_INFO_V1).
#[unsafe(no_mangle)]
pub extern "C" fn pg_finfo_verify_api_key_srf() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `integration.verify_api_key(token, required_scope)`: the key's id, name,
/// role, scopes and metadata, or no row when the token is malformed,
/// unknown, wrong, revoked, expired or lacks `required_scope`; the reason
/// goes to the audit log only. A hand-written set-returning function (see
/// [`ROW_DESC`]).
#[pg_guard]
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn verify_api_key_srf(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: the ValuePerCall protocol of funcapi.h: the first call
    // returns the row (if any), the next one ends the set.
    unsafe {
        if !srf_is_first_call(fcinfo) {
            let funcctx = pg_sys::per_MultiFuncCall(fcinfo);
            srf_return_done(fcinfo, funcctx);
            return pg_return_null(fcinfo);
        }
        let funcctx = pg_sys::init_MultiFuncCall(fcinfo);
        errors::statement_carries_secret();
        let token = pg_getarg::<&str>(fcinfo, 0);
        let scope = pg_getarg::<&str>(fcinfo, 1);
        let Some(key) = token.and_then(|t| verify(t, scope, Action::Verify)) else {
            srf_return_done(fcinfo, funcctx);
            return pg_return_null(fcinfo);
        };
        let desc = row_desc(fcinfo);
        let mut values = [
            key.id.into_datum(),
            key.name.into_datum(),
            key.role.into_datum(),
            key.scopes.into_datum(),
            key.metadata.into_datum(),
        ]
        .map(|d| d.unwrap_or(pg_sys::Datum::from(0)));
        let mut nulls = [false; 5];
        let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        srf_return_next(fcinfo, funcctx);
        pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
    }
}

/// Verifies `token` and switches to its role for the rest of the
/// transaction (`SET LOCAL ROLE`), exposing the key id as
/// `current_setting('integration.api_key_id')` while that role is current
/// (`RESET ROLE` or `SET ROLE` empties it). Meant for PostgREST's
/// `db-pre-request`. Raises `28000` for any invalid key, and for NULL.
#[pg_extern(volatile, parallel_unsafe)]
fn authenticate(token: Option<&str>) -> i64 {
    errors::statement_carries_secret();
    let Some(key) = token.and_then(|token| verify(token, None, Action::Authenticate)) else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            "invalid API key",
            None,
        );
    };
    // SET ROLE would refuse a role the session may not take: say so in the
    // audit log before it raises.
    let role = CString::new(key.role.as_str()).unwrap_or_default();
    // SAFETY: catalog lookups; get_role_oid returns InvalidOid when missing.
    let allowed = unsafe {
        let oid = pg_sys::get_role_oid(role.as_ptr(), true);
        oid != pg_sys::InvalidOid && pg_sys::is_member_of_role(pg_sys::GetSessionUserId(), oid)
    };
    if !allowed {
        let message = format!(
            "the session may not SET ROLE to \"{}\", the role of API key {}",
            key.role, key.id
        );
        audit::refuse(
            "api_key.authenticate",
            &format!("api_key:{}", key.id),
            &message,
        );
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            message,
            None,
        );
    }
    settings::set_local("role", &key.role, pg_sys::GucContext::PGC_USERSET);
    settings::set_api_key_id(key.id);
    key.id
}

struct RoleInfo {
    superuser: bool,
}

/// Checks that the caller may issue (or rotate, or revoke) a key acting as
/// `role`: the role exists, the caller is a member of it (a key delegates
/// the caller's own rights), and only superusers manage keys of superuser
/// roles. A refusal is audited as `action` on `target`.
fn check_grantable(role: &str, action: &str, target: &str) -> RoleInfo {
    let refuse = |code, message: String, hint: Option<&str>| -> ! {
        audit::refuse(action, target, &message);
        raise(code, message, hint)
    };
    let info = Spi::get_two_with_args::<bool, bool>(
        "SELECT r.rolsuper, pg_catalog.pg_has_role(CURRENT_USER, r.oid, 'MEMBER')
         FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
        &[role.into()],
    );
    let (superuser, member) = match info {
        Ok((Some(superuser), Some(member))) => (superuser, member),
        _ => refuse(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("role \"{role}\" does not exist"),
            Some("Create the role first, or name an existing one."),
        ),
    };
    // SAFETY: reads the current user's superuser flag.
    let caller_is_superuser = unsafe { pg_sys::superuser() };
    if superuser && !caller_is_superuser {
        refuse(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("only a superuser may manage API keys for superuser role \"{role}\""),
            None,
        );
    }
    if !member && !caller_is_superuser {
        refuse(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied to manage API keys for role \"{role}\""),
            Some(&format!(
                "Only members of role \"{role}\" may manage keys that act as it."
            )),
        );
    }
    RoleInfo { superuser }
}

fn invalid(message: String) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        None,
    )
}

/// The hasher for this database, creating its key on first use.
fn hasher_for_write() -> KeyHasher {
    let fresh = keys::new_hash_key();
    Spi::run_with_args(
        "INSERT INTO integration.hash_keys (purpose, key) VALUES ('api_keys', $1) ON CONFLICT DO NOTHING",
        &[fresh.to_vec().into()],
    )
    .unwrap_or_else(|e| error!("store the API key hash key: {e}"));
    let key =
        Spi::get_one::<Vec<u8>>("SELECT key FROM integration.hash_keys WHERE purpose = 'api_keys'")
            .ok()
            .flatten()
            .unwrap_or_else(|| error!("the API key hash key is missing"));
    KeyHasher::new(&key)
}

/// Inserts a key row and returns its token. Call inside `as_owner`.
fn insert_key(
    name: &str,
    role: &str,
    scopes: &[String],
    expires_at: Option<TimestampWithTimeZone>,
    metadata: &serde_json::Value,
    created_by: &str,
    rotated_from: Option<i64>,
) -> (i64, String) {
    let hasher = hasher_for_write();
    let id = Spi::get_one::<i64>("SELECT nextval('integration.api_key_store_id_seq')")
        .ok()
        .flatten()
        .unwrap_or_else(|| error!("allocate an API key id"));
    let token = keys::generate(id);
    let secret = keys::parse(&token)
        .unwrap_or_else(|e| error!("a freshly generated token did not parse: {e}"))
        .secret;
    let hash = hasher.hash(id, secret);
    Spi::run_with_args(
        "INSERT INTO integration.api_key_store
             (id, name, role, scopes, metadata, secret_hash, created_by, expires_at, rotated_from)
         OVERRIDING SYSTEM VALUE
         VALUES ($1, $2, $3::name, $4, $5, $6, $7::name, $8, $9)",
        &[
            id.into(),
            name.into(),
            role.into(),
            scopes.to_vec().into(),
            JsonB(metadata.clone()).into(),
            hash.to_vec().into(),
            created_by.into(),
            expires_at.into(),
            rotated_from.into(),
        ],
    )
    .unwrap_or_else(|e| error!("insert API key {id}: {e}"));
    (id, token)
}

/// Creates an API key acting as `role` and returns its token. The token is
/// shown only here; only a keyed hash of its secret is stored.
#[pg_extern(volatile, parallel_unsafe)]
fn create_api_key(
    name: &str,
    role: &str,
    scopes: default!(Vec<String>, "'{}'"),
    expires_in: default!(Option<Interval>, "NULL"),
    metadata: default!(JsonB, "'{}'"),
) -> String {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        invalid("API key name must have 1 to 200 characters".into());
    }
    for scope in &scopes {
        if let Err(e) = keys::validate_scope(scope) {
            invalid(e.to_string());
        }
    }
    if !metadata.0.is_object() {
        invalid("API key metadata must be a JSON object".into());
    }
    if expires_in.is_some_and(|i| !i.is_positive()) {
        invalid("expires_in must be a positive interval".into());
    }
    let role_info = check_grantable(role, "api_key.create", &format!("role:{role}"));
    let caller = current_user_name();
    let expires_at = expires_in.map(expiry_from_now);
    as_owner(|| {
        let (id, token) = insert_key(name, role, &scopes, expires_at, &metadata.0, &caller, None);
        audit::write_now(
            &caller,
            "api_key.create",
            &format!("api_key:{id}"),
            json!({"name": name, "role": role, "scopes": scopes,
                   "superuser_role": role_info.superuser,
                   "expires_at": expires_at.map(|t| t.to_string())}),
        );
        token
    })
}

fn expiry_from_now(interval: Interval) -> TimestampWithTimeZone {
    Spi::get_one_with_args::<TimestampWithTimeZone>(
        "SELECT pg_catalog.now() + $1",
        &[interval.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| invalid("expires_in is out of range".into()))
}

struct StoredKey {
    name: String,
    role: String,
    scopes: Vec<String>,
    metadata: serde_json::Value,
    lifetime: Option<Interval>,
    status: String,
}

/// Reads key `id` (locking its row). Call inside `as_owner`.
fn stored_key(id: i64) -> StoredKey {
    Spi::connect_mut(|client| {
        let table = client
            .update(
                "SELECT name, role::text, scopes, metadata, expires_at - created_at,
                        CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
                             WHEN expires_at <= now() THEN 'expired' ELSE 'active' END
                 FROM integration.api_key_store WHERE id = $1 FOR UPDATE",
                Some(1),
                &[id.into()],
            )
            .unwrap_or_else(|e| error!("read API key {id}: {e}"));
        let Some(r) = table.into_iter().next() else {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("API key {id} does not exist"),
                None,
            );
        };
        StoredKey {
            name: r.get(1).ok().flatten().unwrap_or_default(),
            role: r.get(2).ok().flatten().unwrap_or_default(),
            scopes: r.get(3).ok().flatten().unwrap_or_default(),
            metadata: r.get::<JsonB>(4).ok().flatten().map_or(json!({}), |j| j.0),
            lifetime: r.get(5).ok().flatten(),
            status: r.get(6).ok().flatten().unwrap_or_default(),
        }
    })
}

/// Revokes key `id` at once. Returns false when it was already revoked.
#[pg_extern(volatile, parallel_unsafe)]
fn revoke_api_key(id: i64) -> bool {
    let caller = current_user_name();
    let key = as_owner(|| stored_key(id));
    // The rule of create and rotate: only members of the key's role.
    check_grantable(&key.role, "api_key.revoke", &format!("api_key:{id}"));
    as_owner(|| {
        if key.status == "revoked" {
            return false;
        }
        Spi::run_with_args(
            "UPDATE integration.api_key_store SET revoked_at = now() WHERE id = $1",
            &[id.into()],
        )
        .unwrap_or_else(|e| error!("revoke API key {id}: {e}"));
        audit::write_now(
            &caller,
            "api_key.revoke",
            &format!("api_key:{id}"),
            json!({"name": key.name, "role": key.role}),
        );
        true
    })
}

/// Issues a new token with the same name, role, scopes, metadata and
/// lifetime as key `id`; the old token keeps working for `grace`, then
/// stops. Returns the new token.
#[pg_extern(volatile, parallel_unsafe)]
fn rotate_api_key(id: i64, grace: default!(Interval, "'1 hour'")) -> String {
    if grace.is_negative() {
        invalid("grace must not be negative".into());
    }
    let caller = current_user_name();
    let key = as_owner(|| stored_key(id));
    if key.status != "active" {
        invalid(format!(
            "API key {id} is {}: create a new key instead of rotating it",
            key.status
        ));
    }
    check_grantable(&key.role, "api_key.rotate", &format!("api_key:{id}"));
    let expires_at = key.lifetime.map(expiry_from_now);
    as_owner(|| {
        let (new_id, token) = insert_key(
            &key.name,
            &key.role,
            &key.scopes,
            expires_at,
            &key.metadata,
            &caller,
            Some(id),
        );
        Spi::run_with_args(
            "UPDATE integration.api_key_store
             SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), now() + $2)
             WHERE id = $1",
            &[id.into(), grace.into()],
        )
        .unwrap_or_else(|e| error!("shorten API key {id}: {e}"));
        audit::write_now(
            &caller,
            "api_key.rotate",
            &format!("api_key:{id}"),
            json!({"new_key_id": new_id, "grace": grace.to_string()}),
        );
        token
    })
}
