//! The durable outbound HTTP queue: `http_enqueue()` stores a request in
//! `integration.http_requests` (with the caller's policy), the database's
//! worker delivers it, retries what may pass, and moves the outcome to
//! `integration.http_responses`; `http_result()` waits for it; a callback,
//! when given, is called with the response row in its own transaction, as
//! the role that enqueued the request.

use super::client::{self, CallError, Request, Response};
use super::policy::{self, Rules, Snapshot};
use super::{header_list, headers_json, invalid, parse_url, timeout_of, BYTES, MAX_INTERVAL};
use crate::audit::{self, HttpCall};
use crate::errors::{self, raise};
use crate::owner::{as_owner, as_owner_saved_plan, current_user_name, saved_plan, SavedPlan};
use crate::{contained, settings, subxact, worker};
use integration_core::http_retry::{self, Attempt};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::callconv::{Arg, ArgAbi};
use pgrx::datum::DatumWithOid;
use pgrx::nullable::Nullable;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, Returns, ReturnsError, SqlMapping, SqlTranslatable,
};
use pgrx::prelude::*;
use pgrx::{
    register_xact_callback, GucContext, GucFlags, GucRegistry, GucSetting, JsonB,
    PgXactCallbackEvent,
};
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

extension_sql_file!(
    "../../../sql/http_queue.sql",
    name = "http_queue",
    requires = ["roles", "audit"]
);

static WORKERS: GucSetting<i32> = GucSetting::<i32>::new(1);
static CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(64);
static HOST_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(16);
static RESPONSE_TTL_S: GucSetting<i32> = GucSetting::<i32>::new(6 * 3600);
static ROLE_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(8);
static ROLE_MAX_REQUESTS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static ROLE_MAX_KB: GucSetting<i32> = GucSetting::<i32>::new(100 * 1024);

pub fn init() {
    GucRegistry::define_int_guc(
        c"integration.http_queue_workers",
        c"Workers that may deliver a database's HTTP queue at the same time.",
        c"Helpers start when more is due than one worker may have in flight, and leave once it is drained; the concurrency limits apply to each worker.",
        &WORKERS,
        1,
        8,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"integration.http_queue_concurrency",
        c"Queued HTTP requests a database's worker has in flight at most.",
        c"Read by the worker at every step; set it per database with ALTER DATABASE ... SET.",
        &CONCURRENCY,
        1,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"integration.http_queue_host_concurrency",
        c"Queued HTTP requests in flight at most to one host.",
        c"Keeps a burst to one API from overrunning it while other hosts are served.",
        &HOST_CONCURRENCY,
        1,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"integration.http_queue_role_concurrency",
        c"Queued HTTP requests of one role in flight at most.",
        c"Roles take turns for the worker's places, so one role's slow or many requests cannot hold all of them.",
        &ROLE_CONCURRENCY,
        1,
        10_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"integration.http_queue_role_max_requests",
        c"HTTP requests one role may have queued at once.",
        c"http_enqueue() refuses more (SQLSTATE 53400); set it per role with ALTER ROLE ... SET.",
        &ROLE_MAX_REQUESTS,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"integration.http_queue_role_max_bytes",
        c"Request body bytes one role may have queued at once.",
        c"http_enqueue() refuses more (SQLSTATE 53400); set it per role with ALTER ROLE ... SET.",
        &ROLE_MAX_KB,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"integration.http_response_ttl",
        c"How long rows stay in integration.http_responses; 0 keeps them.",
        c"The worker deletes older rows about once a minute.",
        &RESPONSE_TTL_S,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
}

/// A `regprocedure` argument: a function's OID.
pub struct Regprocedure(pg_sys::Oid);

impl FromDatum for Regprocedure {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _: pg_sys::Oid,
    ) -> Option<Self> {
        (!is_null).then(|| Regprocedure(pg_sys::Oid::from(datum.value() as u32)))
    }
}

// SAFETY: the same unboxing pgrx does for its own FromDatum types.
unsafe impl<'fcx> ArgAbi<'fcx> for Regprocedure {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

// SAFETY: regprocedure is an OID on the wire.
unsafe impl SqlTranslatable for Regprocedure {
    fn argument_sql() -> Result<SqlMapping, ArgumentError> {
        Ok(SqlMapping::literal("regprocedure"))
    }

    fn return_sql() -> Result<Returns, ReturnsError> {
        Ok(Returns::One(SqlMapping::literal("regprocedure")))
    }
}

thread_local! {
    /// Whether this transaction already arranged to wake the worker at commit.
    static WAKE_AT_COMMIT: Cell<bool> = const { Cell::new(false) };
}

fn wake_worker_at_commit() {
    if WAKE_AT_COMMIT.replace(true) {
        return;
    }
    // SAFETY: a global set for every backend.
    let database = unsafe { pg_sys::MyDatabaseId.to_u32() };
    register_xact_callback(PgXactCallbackEvent::Commit, move || {
        WAKE_AT_COMMIT.set(false);
        worker::wake(database);
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || WAKE_AT_COMMIT.set(false));
}

fn check_callback(callback: &Regprocedure) {
    let fits = Spi::get_one_with_args::<bool>(
        "SELECT p.pronargs = 1
                AND p.proargtypes[0] = 'integration.http_responses'::pg_catalog.regtype
                AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')
         FROM pg_catalog.pg_proc p WHERE p.oid = $1",
        &[callback.0.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !fits {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "callback must be a function taking one integration.http_responses argument that you may execute",
            Some("CREATE FUNCTION on_done(r integration.http_responses) RETURNS void ...; then callback => 'on_done(integration.http_responses)'"),
        )
    }
}

thread_local! {
    /// What the caller has queued, counted at its first `http_enqueue()`
    /// of the transaction and kept up to date by the following ones.
    static QUEUED: std::cell::RefCell<Option<Queued>> = const { std::cell::RefCell::new(None) };
}

/// A role's queued requests and their body bytes.
struct Queued {
    role: String,
    requests: i64,
    bytes: i64,
}

/// Counts `role`'s queued requests, at most `limit` of them.
fn count_queued(role: &str, limit: i64) -> Queued {
    let (requests, bytes) = as_owner(|| {
        Spi::connect(|client| {
            let row = client
                .select(
                    "SELECT pg_catalog.count(*),
                            coalesce(pg_catalog.sum(pg_catalog.octet_length(s.body)), 0)::bigint
                     FROM (SELECT q.body FROM integration.http_requests q
                           WHERE q.created_by = $1 LIMIT $2) s",
                    None,
                    &[role.into(), limit.into()],
                )?
                .first();
            Ok::<_, pgrx::spi::Error>((row.get::<i64>(1)?, row.get::<i64>(2)?))
        })
        .unwrap_or_else(|e| error!("count the queued HTTP requests of {role}: {e}"))
    });
    Queued {
        role: role.to_string(),
        requests: requests.unwrap_or(0),
        bytes: bytes.unwrap_or(0),
    }
}

/// Refuses a request that would take `role` past its queue limits, else
/// counts it as queued. Requests queued concurrently by the role's other
/// sessions are seen by their next transaction.
fn take_room(role: &str, host: &str, body: usize) {
    let max_requests = i64::from(ROLE_MAX_REQUESTS.get());
    let max_bytes = i64::from(ROLE_MAX_KB.get()).saturating_mul(1024);
    let body = i64::try_from(body).unwrap_or(i64::MAX);
    let fresh = QUEUED.with_borrow(|q| q.as_ref().is_none_or(|q| q.role != role));
    if fresh {
        let counted = count_queued(role, max_requests.saturating_add(1));
        if QUEUED.replace(Some(counted)).is_none() {
            register_xact_callback(PgXactCallbackEvent::Commit, || drop(QUEUED.take()));
            register_xact_callback(PgXactCallbackEvent::Abort, || drop(QUEUED.take()));
        }
    }
    let refusal = QUEUED.with_borrow_mut(|q| {
        let q = q.as_mut()?;
        if q.requests >= max_requests {
            return Some((
                format!("role {role} has {} HTTP requests queued, the most integration.http_queue_role_max_requests allows", q.requests),
                "integration.http_queue_role_max_requests",
                max_requests.saturating_mul(10).to_string(),
            ));
        }
        if q.bytes.saturating_add(body) > max_bytes {
            return Some((
                format!("role {role} has {} body bytes queued; {body} more would pass integration.http_queue_role_max_bytes ({max_bytes})", q.bytes),
                "integration.http_queue_role_max_bytes",
                format!("'{}MB'", (max_bytes >> 20).max(1).saturating_mul(10)),
            ));
        }
        q.requests += 1;
        q.bytes = q.bytes.saturating_add(body);
        None
    });
    if let Some((message, setting, example)) = refusal {
        audit::refuse("http.enqueue", host, &message);
        raise(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            message,
            Some(&format!(
                "Wait for the worker to deliver them, or cancel some (DELETE FROM integration.http_requests WHERE ...); \
                 an administrator may raise the limit for the role: ALTER ROLE \"{}\" SET {setting} = {example}",
                role.replace('"', "\"\"")
            )),
        )
    }
}

fn interval_micros(interval: &Interval) -> i64 {
    i64::try_from(interval.as_micros()).unwrap_or(i64::MAX)
}

thread_local! {
    static ENQUEUE_PLAN: SavedPlan = const { SavedPlan::new() };
}

const ENQUEUE_SQL: &str = "INSERT INTO integration.http_requests
        (method, url, host, headers, body, timeout, retries, backoff, callback,
         created_by, policy)
    VALUES ($1, $2, $3, $4, $5, $6 * interval '1 microsecond', $7,
            $8 * interval '1 microsecond', $9::regprocedure, $10, $11)
    RETURNING id";

/// Queues a request; the worker delivers it after this transaction commits.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe, requires = ["http_queue"])]
fn http_enqueue(
    method: &str,
    url: &str,
    headers: default!(JsonB, "'{}'"),
    body: default!(Option<Vec<u8>>, "NULL"),
    timeout: default!(Option<Interval>, "NULL"),
    params: default!(Option<JsonB>, "NULL"),
    retries: default!(i32, 3),
    backoff: default!(Interval, "'1 second'"),
    callback: default!(Option<Regprocedure>, "NULL"),
) -> i64 {
    errors::statement_carries_secret();
    if !settings::preloaded() {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "the HTTP queue needs pg_integration in shared_preload_libraries",
            Some("Add it to shared_preload_libraries and restart PostgreSQL."),
        )
    }
    let method = method.trim().to_ascii_uppercase();
    if reqwest::Method::from_bytes(method.as_bytes()).is_err() {
        invalid(format!("invalid HTTP method {method:?}"));
    }
    let url = parse_url(url, params.as_ref().map(|p| &p.0));
    let snapshot = Snapshot::current();
    let policy_json = serde_json::to_value(&snapshot).unwrap_or(Value::Null);
    let rules = policy::parsed(snapshot);
    rules.policy.check_url(&url).unwrap_or_else(|e| {
        audit::refuse(
            "http.enqueue",
            url.host_str().unwrap_or_default(),
            &e.to_string(),
        );
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            e.to_string(),
            None,
        )
    });
    let mut headers = headers.0;
    let parsed = header_list(&headers).unwrap_or_else(|e| invalid(e));
    if body.is_some()
        && !parsed
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        if let Value::Object(map) = &mut headers {
            map.insert("Content-Type".into(), BYTES.into());
        }
    }
    if !(0..=100).contains(&retries) {
        invalid("retries must be between 0 and 100".into());
    }
    if !(0..=MAX_INTERVAL.as_micros() as i128).contains(&backoff.as_micros()) {
        invalid("backoff must be between 0 and 1 day".into());
    }
    let timeout = timeout_of(timeout);
    if let Some(callback) = &callback {
        check_callback(callback);
    }
    let caller = current_user_name();
    let host = url.host_str().unwrap_or_default().to_string();
    take_room(&caller, &host, body.as_ref().map_or(0, Vec::len));
    let args = [
        DatumWithOid::from(method.as_str()),
        url.as_str().into(),
        host.as_str().into(),
        JsonB(headers).into(),
        body.into(),
        i64::try_from(timeout.as_micros())
            .unwrap_or(i64::MAX)
            .into(),
        retries.into(),
        interval_micros(&backoff).into(),
        callback.map(|c| c.0).into(),
        caller.as_str().into(),
        JsonB(policy_json).into(),
    ];
    let plan = saved_plan(&ENQUEUE_PLAN, ENQUEUE_SQL, &args, true);
    let id = as_owner_saved_plan(|| {
        Spi::connect_mut(|client| {
            client
                .update(plan, Some(1), &args)?
                .first()
                .get_one::<i64>()
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| error!("could not queue the HTTP request"))
    });
    wake_worker_at_commit();
    id
}

thread_local! {
    /// Queued requests deleted by the running statement (not by a worker
    /// storing their outcome), audited when the statement ends.
    static CANCELED: std::cell::RefCell<Vec<i64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `DELETE` on `http_requests` (a caller cancelling its requests): each
/// row is noted, and the statement writes one `http.cancel` audit row with
/// the ids, under the caller's name. A worker deleting the requests it
/// claimed (their outcome is stored) is not a cancel.
#[pg_trigger]
fn _http_requests_deleted<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, pgrx::PgTriggerError> {
    if let Some(old) = trigger.old() {
        // SAFETY: a global set at process start.
        let me = unsafe { pg_sys::MyProcPid };
        let claimed_by = old.get_by_name::<i32>("claimed_by").ok().flatten();
        if claimed_by != Some(me) {
            if let Ok(Some(id)) = old.get_by_name::<i64>("id") {
                CANCELED.with_borrow_mut(|ids| ids.push(id));
            }
        }
        return Ok(None);
    }
    let ids = CANCELED.with_borrow_mut(std::mem::take);
    if !ids.is_empty() {
        let caller = current_user_name();
        let shown: Vec<i64> = ids.iter().copied().take(1000).collect();
        as_owner(|| {
            audit::write_now(
                &caller,
                "http.cancel",
                "http_requests",
                serde_json::json!({"requests": ids.len(), "ids": shown}),
            )
        });
    }
    Ok(None)
}

/// The response of queued request `id`, waiting up to `wait` for it; NULL
/// when it has not finished by then.
#[pg_extern(volatile, parallel_unsafe, requires = ["http_queue"])]
fn http_result(
    id: i64,
    wait: default!(Interval, "'0'"),
) -> Option<pgrx::composite_type!('static, "integration.http_responses")> {
    let deadline =
        Instant::now() + Duration::from_micros(u64::try_from(wait.as_micros()).unwrap_or(0));
    let mut pause = Duration::from_millis(2);
    loop {
        // The request first: the worker deletes it and stores its response
        // in one transaction, so a request gone here has its response below.
        let pending = Spi::get_one_with_args::<i64>(
            "SELECT (SELECT xmin::text::bigint FROM integration.http_requests WHERE id = $1)",
            &[id.into()],
        )
        .unwrap_or_else(|e| error!("read integration.http_requests: {e}"));
        if let Some(xmin) = pending {
            // SAFETY: a plain lookup in this backend's transaction state.
            if unsafe {
                pg_sys::TransactionIdIsCurrentTransactionId(pg_sys::TransactionId::from(
                    xmin as u32,
                ))
            } {
                raise(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!(
                        "HTTP request {id} was queued in this transaction: it is sent after COMMIT"
                    ),
                    Some("Commit, then call http_result in a new transaction."),
                )
            }
        }
        let response =
            Spi::get_one_with_args::<pgrx::composite_type!('static, "integration.http_responses")>(
                "SELECT (SELECT r FROM integration.http_responses r WHERE r.id = $1)",
                &[id.into()],
            )
            .unwrap_or_else(|e| error!("read integration.http_responses: {e}"));
        if response.is_some() {
            return response;
        }
        if pending.is_none() {
            raise(
                PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
                format!("HTTP request {id} not found"),
                Some("It is unknown, not yours, or its response is older than integration.http_response_ttl."),
            )
        }
        if Instant::now() >= deadline {
            return None;
        }
        // SAFETY: reading the transaction's isolation level.
        if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
            raise(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "http_result can wait only in READ COMMITTED: a REPEATABLE READ snapshot never shows the response",
                None,
            )
        }
        let nap = pause.min(deadline.saturating_duration_since(Instant::now()));
        // SAFETY: waiting on this backend's own latch, as pg_sleep does.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                i64::try_from(nap.as_millis().max(1)).unwrap_or(50),
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// What one step of the worker did, and when it wants the next.
#[derive(Debug, Clone, Copy)]
pub struct Activity {
    /// Results were stored or requests sent.
    pub worked: bool,
    pub in_flight: usize,
    /// Requests exist (due now, later, or being delivered).
    pub pending: bool,
    /// When the next request becomes due.
    pub wait: Duration,
    /// User code (callbacks) ran in the worker's session.
    pub ran_callbacks: bool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            worked: false,
            in_flight: 0,
            ran_callbacks: false,
            pending: false,
            wait: Duration::from_secs(3600),
        }
    }
}

/// A request as the worker took it from the queue.
struct Claimed {
    id: i64,
    method: String,
    url: String,
    host: String,
    headers: Value,
    body: Option<Vec<u8>>,
    timeout: Duration,
    policy: Value,
    attempts: i32,
    retries: i32,
    backoff: Duration,
    created_by: String,
}

/// A delivery attempt that ended.
struct Finished {
    id: i64,
    host: String,
    method: String,
    actor: String,
    attempts: i32,
    retries: i32,
    backoff: Duration,
    elapsed: Duration,
    outcome: Result<Response, CallError>,
}

/// How an attempt ended, for the tables.
enum Verdict {
    Final {
        status: Option<i32>,
        headers: Option<Value>,
        body: Option<Vec<u8>>,
        content_type: Option<String>,
        error: Option<String>,
    },
    Retry {
        after: Duration,
        error: String,
    },
}

fn verdict(finished: &mut Finished) -> Verdict {
    let (attempt, retry_after) = match &finished.outcome {
        Ok(response) => (
            Attempt::Status(response.status),
            response
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, v)| http_retry::parse_retry_after(v, SystemTime::now())),
        ),
        Err(error) if error.is_transient() => (Attempt::Transient, None),
        Err(_) => (Attempt::Permanent, None),
    };
    if attempt.is_retryable() && finished.attempts <= finished.retries {
        let after = http_retry::delay(
            finished.backoff,
            u32::try_from(finished.attempts).unwrap_or(1),
            retry_after,
            rand::thread_rng().gen::<f64>(),
        );
        let error = match &finished.outcome {
            Ok(response) => format!("HTTP {}", response.status),
            Err(error) => error.to_string(),
        };
        return Verdict::Retry { after, error };
    }
    match std::mem::replace(&mut finished.outcome, Err(CallError::Interrupted)) {
        Ok(response) => Verdict::Final {
            status: Some(i32::from(response.status)),
            headers: Some(headers_json(response.headers)),
            body: Some(response.body),
            content_type: response.content_type,
            error: None,
        },
        Err(error) => Verdict::Final {
            status: None,
            headers: None,
            body: None,
            content_type: None,
            error: Some(error.to_string()),
        },
    }
}

/// The audit log's record of one attempt (never headers or bodies).
fn audit_entry(finished: &Finished, at: i64) -> HttpCall {
    HttpCall {
        at,
        actor: finished.actor.clone(),
        method: finished.method.clone(),
        host: finished.host.clone(),
        status: finished.outcome.as_ref().ok().map(|r| r.status),
        duration_us: i64::try_from(finished.elapsed.as_micros()).unwrap_or(i64::MAX),
        error: finished
            .outcome
            .as_ref()
            .err()
            .map(|e| e.kind().to_string()),
    }
}

/// A callback to run once its response row is committed.
struct Callback {
    id: i64,
    function: String,
    role: String,
}

/// A claimed request ready to go, with what it needs.
struct Job {
    finished: Finished,
    client: reqwest::Client,
    request: Request,
    limit: u64,
    max_redirects: u32,
}

impl Job {
    async fn run(mut self) -> Finished {
        let started = Instant::now();
        self.finished.outcome =
            client::fetch(self.client, self.request, self.limit, self.max_redirects).await;
        self.finished.elapsed = started.elapsed();
        self.finished
    }
}

/// Jobs for the dispatcher, with the caps in force.
struct Batch {
    jobs: Vec<Job>,
    total: usize,
    per_host: usize,
    per_role: usize,
}

/// Runs on the worker's runtime thread: keeps up to `total` requests in
/// flight (at most `per_host` to one host and `per_role` of one role) from
/// a backlog of claimed jobs,
/// starting the next as soon as one ends, while the worker's main thread
/// writes to Postgres.
async fn dispatch(
    mut incoming: mpsc::UnboundedReceiver<Batch>,
    done: mpsc::UnboundedSender<Finished>,
) {
    let mut backlog: VecDeque<Job> = VecDeque::new();
    let mut running: JoinSet<Finished> = JoinSet::new();
    let mut hosts: HashMap<String, usize> = HashMap::new();
    let mut roles: HashMap<String, usize> = HashMap::new();
    let (mut total, mut per_host, mut per_role) = (1, 1, 1);
    loop {
        let mut i = 0;
        while running.len() < total && i < backlog.len() {
            let job = &backlog[i].finished;
            if hosts.get(&job.host).copied().unwrap_or(0) < per_host
                && roles.get(&job.actor).copied().unwrap_or(0) < per_role
            {
                if let Some(job) = backlog.remove(i) {
                    *hosts.entry(job.finished.host.clone()).or_default() += 1;
                    *roles.entry(job.finished.actor.clone()).or_default() += 1;
                    running.spawn(job.run());
                }
            } else {
                i += 1;
            }
        }
        tokio::select! {
            batch = incoming.recv() => match batch {
                Some(batch) => {
                    total = batch.total;
                    per_host = batch.per_host;
                    per_role = batch.per_role;
                    backlog.extend(batch.jobs);
                }
                None => return,
            },
            Some(ended) = running.join_next(), if !running.is_empty() => {
                let Ok(finished) = ended else { continue };
                release(&mut hosts, &finished.host);
                release(&mut roles, &finished.actor);
                if done.send(finished).is_err() {
                    return;
                }
            }
        }
    }
}

/// Counts one request to a host (or of a role) as finished.
fn release(counts: &mut HashMap<String, usize>, key: &str) {
    if let Some(count) = counts.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// The queue side of a database's worker. Its main thread takes due
/// requests (a backlog of up to twice the caps) and stores outcomes; a
/// dispatcher on a runtime thread of its own delivers them.
pub struct Deliverer {
    runtime: tokio::runtime::Runtime,
    clients: HashMap<(String, bool), reqwest::Client>,
    /// The policies of queued requests, parsed once each.
    rules: HashMap<Snapshot, Rc<Rules>>,
    /// The policy each role of the claimed requests has now (its role and
    /// database settings), read at every claim: a request is delivered only
    /// if both the policy stored with it and this one allow it.
    current: HashMap<String, Snapshot>,
    jobs: mpsc::UnboundedSender<Batch>,
    done_tx: mpsc::UnboundedSender<Finished>,
    done_rx: mpsc::UnboundedReceiver<Finished>,
    /// Claimed and not yet finished: in the backlog or in flight.
    outstanding: usize,
    per_host: HashMap<String, usize>,
    per_role: HashMap<String, usize>,
    last_reclaim: Option<Instant>,
    last_cleanup: Option<Instant>,
}

/// Distinct policies kept parsed before the worker starts over.
const RULES_KEPT: usize = 1024;

/// How many workers may deliver this database's queue.
pub fn workers() -> u8 {
    u8::try_from(WORKERS.get()).unwrap_or(1)
}

/// How often claims of vanished workers are given back.
const RECLAIM_EVERY: Duration = Duration::from_secs(10);

/// How often expired responses are removed: every minute, or every TTL
/// when that is shorter.
fn cleanup_every() -> Duration {
    Duration::from_secs(u64::try_from(RESPONSE_TTL_S.get().clamp(1, 60)).unwrap_or(60))
}

/// How long a step waits for a delivery to end before it looks at the queue again.
const COLLECT_WAIT: Duration = Duration::from_millis(20);

impl Deliverer {
    pub fn new() -> Result<Deliverer, String> {
        let runtime = client::new_runtime(1).map_err(|e| e.to_string())?;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (jobs, incoming) = mpsc::unbounded_channel();
        runtime.spawn(dispatch(incoming, done_tx.clone()));
        Ok(Deliverer {
            runtime,
            clients: HashMap::new(),
            rules: HashMap::new(),
            current: HashMap::new(),
            jobs,
            done_tx,
            done_rx,
            outstanding: 0,
            per_host: HashMap::new(),
            per_role: HashMap::new(),
            last_reclaim: None,
            last_cleanup: None,
        })
    }

    /// True when requests wait in the queue (due or not).
    pub fn has_requests(&mut self) -> bool {
        BackgroundWorker::transaction(|| {
            Spi::get_one::<bool>("SELECT EXISTS (SELECT FROM integration.http_requests)")
                .ok()
                .flatten()
                .unwrap_or(false)
        })
    }

    /// Stores what finished, takes what is due, sends it, runs callbacks.
    pub fn step(&mut self) -> Activity {
        let mut finished = self.collect();
        for done in &finished {
            self.outstanding -= 1;
            release(&mut self.per_host, &done.host);
            release(&mut self.per_role, &done.actor);
        }
        let total = usize::try_from(CONCURRENCY.get()).unwrap_or(1);
        let host_cap = usize::try_from(HOST_CONCURRENCY.get()).unwrap_or(1);
        let role_cap = usize::try_from(ROLE_CONCURRENCY.get()).unwrap_or(1);
        // A backlog as large again as the caps keeps the dispatcher busy
        // while this thread is in Postgres.
        let free = (2 * total).saturating_sub(self.outstanding);
        let host_room = i32::try_from(2 * host_cap).unwrap_or(i32::MAX);
        let role_room = i32::try_from(2 * role_cap).unwrap_or(i32::MAX);
        let now = Instant::now();
        let reclaim = self.last_reclaim.is_none_or(|t| now - t >= RECLAIM_EVERY);
        let cleanup = self.last_cleanup.is_none_or(|t| now - t >= cleanup_every());
        let places = |counts: &HashMap<String, usize>, room: i32| -> Vec<(String, i32)> {
            counts
                .iter()
                .map(|(k, n)| (k.clone(), room - i32::try_from(*n).unwrap_or(i32::MAX)))
                .collect()
        };
        let busy = Room {
            host_room,
            hosts: places(&self.per_host, host_room),
            role_room,
            roles: places(&self.per_role, role_room),
        };
        // SAFETY: reading the clock.
        let at = unsafe { pg_sys::GetCurrentTimestamp() };
        let calls: Vec<HttpCall> = finished.iter().map(|f| audit_entry(f, at)).collect();
        let verdicts: Vec<(Finished, Verdict)> = finished
            .drain(..)
            .map(|mut f| {
                let v = verdict(&mut f);
                (f, v)
            })
            .collect();
        let outcome = BackgroundWorker::transaction(|| {
            subxact::attempt(|| {
                if reclaim {
                    reclaim_vanished();
                }
                if cleanup {
                    remove_expired();
                }
                let callbacks = store(&verdicts, &calls);
                let claimed = if free > 0 {
                    claim(free, &busy)
                } else {
                    Vec::new()
                };
                let mut current = HashMap::new();
                for request in &claimed {
                    if !current.contains_key(&request.created_by) {
                        let policy = role_policy(&request.created_by);
                        current.insert(request.created_by.clone(), policy);
                    }
                }
                let next = if claimed.len() < free {
                    next_due()
                } else {
                    Some(Duration::ZERO)
                };
                (callbacks, claimed, next, current)
            })
        });
        if reclaim {
            self.last_reclaim = Some(now);
        }
        if cleanup {
            self.last_cleanup = Some(now);
        }
        let (callbacks, claimed, next, current) = match outcome {
            Ok(done) => done,
            Err(error) => {
                pgrx::warning!(
                    "pg_integration: the HTTP queue step failed, {} outcomes will be retried: {error}",
                    verdicts.len()
                );
                (
                    Vec::new(),
                    Vec::new(),
                    Some(Duration::from_secs(1)),
                    HashMap::new(),
                )
            }
        };
        self.current = current;
        for callback in &callbacks {
            run_callback(callback);
        }
        let worked = !verdicts.is_empty() || !claimed.is_empty();
        self.send(claimed, total, host_cap, role_cap);
        Activity {
            worked,
            in_flight: self.outstanding,
            pending: next.is_some() || self.outstanding > 0,
            wait: next.unwrap_or(Duration::from_secs(3600)),
            ran_callbacks: !callbacks.is_empty(),
        }
    }

    /// Gives this worker's claims back to the queue (it is stopping).
    pub fn stop(self) {
        let outcome = BackgroundWorker::transaction(|| {
            subxact::attempt(|| {
                Spi::run(
                    "UPDATE integration.http_requests
                     SET claimed_by = NULL, next_attempt_at = pg_catalog.now()
                     WHERE claimed_by = pg_catalog.pg_backend_pid()",
                )
                .unwrap_or_else(|e| error!("{e}"))
            })
        });
        if let Err(error) = outcome {
            pgrx::log!("pg_integration: could not give back queued HTTP requests: {error}");
        }
    }

    /// Waits up to [`COLLECT_WAIT`] for the first delivery to end, then
    /// takes every other that has ended too.
    fn collect(&mut self) -> Vec<Finished> {
        if self.outstanding == 0 {
            return Vec::new();
        }
        let rx = &mut self.done_rx;
        self.runtime.block_on(async {
            let mut out = Vec::new();
            if let Ok(Some(first)) = tokio::time::timeout(COLLECT_WAIT, rx.recv()).await {
                out.push(first);
                while let Ok(more) = rx.try_recv() {
                    out.push(more);
                }
            }
            out
        })
    }

    /// Hands claimed requests to the dispatcher; those that cannot be sent
    /// at all (policy, bad URL) finish at once.
    fn send(&mut self, claimed: Vec<Claimed>, total: usize, per_host: usize, per_role: usize) {
        let mut jobs = Vec::new();
        for claimed in claimed {
            self.outstanding += 1;
            *self.per_host.entry(claimed.host.clone()).or_default() += 1;
            *self.per_role.entry(claimed.created_by.clone()).or_default() += 1;
            let prepared = self.prepare(&claimed);
            let finished = Finished {
                id: claimed.id,
                host: claimed.host,
                method: claimed.method,
                actor: claimed.created_by,
                attempts: claimed.attempts,
                retries: claimed.retries,
                backoff: claimed.backoff,
                elapsed: Duration::ZERO,
                outcome: Err(CallError::Interrupted),
            };
            match prepared {
                Ok((client, request, limit, max_redirects)) => jobs.push(Job {
                    finished,
                    client,
                    request,
                    limit,
                    max_redirects,
                }),
                Err(error) => {
                    let _ = self.done_tx.send(Finished {
                        outcome: Err(error),
                        ..finished
                    });
                }
            }
        }
        let _ = self.jobs.send(Batch {
            jobs,
            total,
            per_host,
            per_role,
        });
    }

    /// The client and request for a claimed row, under the policy stored with it.
    /// The rules of `snapshot`, parsed once.
    fn parsed(&mut self, snapshot: Snapshot) -> Result<Rc<Rules>, String> {
        if let Some(rules) = self.rules.get(&snapshot) {
            return Ok(Rc::clone(rules));
        }
        let rules = Rc::new(snapshot.rules()?);
        if self.rules.len() >= RULES_KEPT {
            self.rules.clear();
        }
        self.rules.insert(snapshot, Rc::clone(&rules));
        Ok(rules)
    }

    fn prepare(
        &mut self,
        claimed: &Claimed,
    ) -> Result<(reqwest::Client, Request, u64, u32), CallError> {
        let invalid = |cause: String| CallError::Invalid {
            host: claimed.host.clone(),
            cause,
        };
        let snapshot = Snapshot::deserialize(&claimed.policy)
            .map_err(|e| invalid(format!("stored policy is unreadable: {e}")))?;
        let rules = self.parsed(snapshot).map_err(invalid)?;
        // The policy the role has now: an allowance removed since the
        // request was queued applies to its next attempt.
        let now = self
            .current
            .get(&claimed.created_by)
            .cloned()
            .ok_or_else(|| invalid("the role's current policy was not read".into()))?;
        let now = self.parsed(now).map_err(invalid)?;
        let url = url::Url::parse(&claimed.url).map_err(|e| invalid(e.to_string()))?;
        rules.policy.check_url(&url)?;
        now.policy.check_url(&url)?;
        let method = reqwest::Method::from_bytes(claimed.method.as_bytes())
            .map_err(|e| invalid(e.to_string()))?;
        let headers = header_list(&claimed.headers).map_err(invalid)?;
        let insecure = rules.insecure(&url) && now.insecure(&url);
        let key = (format!("{}\n{}", rules.key, now.key), insecure);
        let limit = rules
            .policy
            .max_response_bytes
            .min(now.policy.max_response_bytes);
        let max_redirects = rules.policy.max_redirects.min(now.policy.max_redirects);
        if !self.clients.contains_key(&key) {
            // Keep a connection for each request that may be in flight to
            // a host, or every request past the pool opens a new one.
            let idle = usize::try_from(HOST_CONCURRENCY.get())
                .unwrap_or(16)
                .min(1024);
            let policies = vec![rules.policy.clone(), now.policy.clone()];
            let client = client::build_client(policies, insecure, idle)?;
            self.clients.insert(key.clone(), client);
        }
        let request = Request {
            method,
            url,
            headers,
            body: claimed.body.clone(),
            timeout: claimed.timeout,
        };
        Ok((self.clients[&key].clone(), request, limit, max_redirects))
    }
}

/// The settings of the outbound HTTP policy in order: what [`role_policy`] reads.
const POLICY_SETTINGS: [&str; 5] = [
    "integration.http_allowed_hosts",
    "integration.http_allowed_networks",
    "integration.http_insecure_tls_hosts",
    "integration.http_max_redirects",
    "integration.http_max_response_bytes",
];

/// The policy `role` has now in this database: its `ALTER ROLE … IN
/// DATABASE … SET`, `ALTER ROLE … SET` and `ALTER DATABASE … SET` values,
/// in PostgreSQL's order of precedence, else the server's (its
/// configuration file or the default).
fn role_policy(role: &str) -> Snapshot {
    let values: Vec<String> = Spi::connect(|client| {
        let rows = client.select(
            "SELECT coalesce((
                 SELECT pg_catalog.substr(c, pg_catalog.strpos(c, '=') + 1)
                 FROM pg_catalog.pg_db_role_setting d, pg_catalog.unnest(d.setconfig) AS c
                 WHERE d.setdatabase IN (0, (SELECT b.oid FROM pg_catalog.pg_database b
                                             WHERE b.datname = pg_catalog.current_database()))
                   AND d.setrole IN (0, (SELECT r.oid FROM pg_catalog.pg_roles r
                                         WHERE r.rolname = $1))
                   AND pg_catalog.split_part(c, '=', 1) = o.name
                 ORDER BY d.setrole = 0, d.setdatabase = 0
                 LIMIT 1),
                 -- The server's value; the worker's own may be a database
                 -- setting read when it connected, since changed.
                 (SELECT CASE WHEN s.source IN ('default', 'configuration file', 'command line',
                                                'environment variable', 'override')
                              THEN s.setting ELSE s.boot_val END
                  FROM pg_catalog.pg_settings s WHERE s.name = o.name))
             FROM pg_catalog.unnest($2::text[]) WITH ORDINALITY AS o(name, n)
             ORDER BY o.n",
            None,
            &[role.into(), POLICY_SETTINGS.to_vec().into()],
        )?;
        rows.map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap_or_else(|e| error!("read the HTTP policy of role {role}: {e}"));
    let number = |i: usize| {
        values
            .get(i)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Snapshot {
        allowed_hosts: values.first().cloned().unwrap_or_default(),
        allowed_networks: values.get(1).cloned().unwrap_or_default(),
        insecure_tls_hosts: values.get(2).cloned().unwrap_or_default(),
        max_redirects: u32::try_from(number(3)).unwrap_or(0),
        max_response_bytes: number(4),
    }
}

/// Gives back requests claimed by workers that no longer run.
fn reclaim_vanished() {
    Spi::run(
        "UPDATE integration.http_requests SET claimed_by = NULL, next_attempt_at = pg_catalog.now()
         WHERE claimed_by IS NOT NULL
           AND claimed_by NOT IN (SELECT pid FROM pg_catalog.pg_stat_get_activity(NULL))",
    )
    .unwrap_or_else(|e| error!("give back abandoned HTTP requests: {e}"));
}

fn remove_expired() {
    let ttl = RESPONSE_TTL_S.get();
    if ttl == 0 {
        return;
    }
    Spi::run_with_args(
        "DELETE FROM integration.http_responses WHERE id IN (
             SELECT id FROM integration.http_responses
             WHERE completed_at < pg_catalog.now() - $1 * interval '1 second' LIMIT 10000)",
        &[ttl.into()],
    )
    .unwrap_or_else(|e| error!("remove expired HTTP responses: {e}"));
}

thread_local! {
    static STORE_PLAN: SavedPlan = const { SavedPlan::new() };
}

/// Planned for each claim, not saved: a generic plan cannot know the LIMIT
/// and scans the whole queue where the custom plan reads the index.
/// Roles take turns: each role's due requests come from its own index
/// range (found by skipping from role to role), ranked within the role,
/// and the first of every role go before the second of any. A role or host
/// without places left is passed over.
const CLAIM_SQL: &str = "WITH RECURSIVE roles(role) AS (
        (SELECT q.created_by FROM integration.http_requests q ORDER BY q.created_by LIMIT 1)
        UNION ALL
        SELECT (SELECT q.created_by FROM integration.http_requests q
                WHERE q.created_by > roles.role ORDER BY q.created_by LIMIT 1)
        FROM roles WHERE roles.role IS NOT NULL
    ), room AS (
        SELECT roles.role, coalesce(b.places, $6) AS places
        FROM roles
        LEFT JOIN ROWS FROM (pg_catalog.unnest($7::name[]),
                             pg_catalog.unnest($8::int[])) AS b(role, places) ON b.role = roles.role
        WHERE roles.role IS NOT NULL
    ), candidates AS (
        SELECT c.id, c.host, c.created_by, c.next_attempt_at
        FROM room, LATERAL (
            SELECT q.id, q.host, q.created_by, q.next_attempt_at FROM integration.http_requests q
            WHERE q.created_by = room.role AND q.next_attempt_at <= pg_catalog.now()
              AND q.host <> ALL ($5::text[])
            ORDER BY q.next_attempt_at, q.id
            LIMIT LEAST(room.places, $1 * 4)
        ) c
        WHERE room.places > 0
    ), chosen AS (
        SELECT id FROM (
            SELECT c.id, c.next_attempt_at,
                   pg_catalog.row_number() OVER (PARTITION BY c.host ORDER BY c.next_attempt_at, c.id) AS n,
                   pg_catalog.row_number() OVER (PARTITION BY c.created_by ORDER BY c.next_attempt_at, c.id) AS turn,
                   coalesce(b.places, $2) AS places
            FROM candidates c
            LEFT JOIN ROWS FROM (pg_catalog.unnest($3::text[]),
                                 pg_catalog.unnest($4::int[])) AS b(host, places) ON b.host = c.host
        ) ranked
        WHERE n <= places
        ORDER BY turn, next_attempt_at, id
        LIMIT $1
    ), locked AS (
        -- Only the chosen rows are locked; one that another
        -- worker holds or took meanwhile is skipped.
        SELECT q.id FROM integration.http_requests q
        WHERE q.id IN (SELECT id FROM chosen) AND q.next_attempt_at <= pg_catalog.now()
        FOR UPDATE SKIP LOCKED
    )
    UPDATE integration.http_requests r
    SET attempts = r.attempts + 1,
        claimed_by = pg_catalog.pg_backend_pid(),
        next_attempt_at = pg_catalog.now() + LEAST(r.timeout, interval '1 day') + interval '5 minutes'
    FROM locked WHERE r.id = locked.id
    RETURNING r.id, r.method, r.url, r.host, r.headers, r.body,
              (extract(epoch FROM r.timeout) * 1000000)::bigint AS timeout_us,
              r.policy, r.attempts, r.retries,
              (extract(epoch FROM r.backoff) * 1000000)::bigint AS backoff_us,
              r.created_by::text AS created_by";

/// The places the worker has left: how many claimed requests a host (or a
/// role) may have outstanding, and those it has used some of.
struct Room {
    host_room: i32,
    hosts: Vec<(String, i32)>,
    role_room: i32,
    roles: Vec<(String, i32)>,
}

/// Takes up to `free` due requests, at most the room's places per host and
/// per role, counting those outstanding.
fn claim(free: usize, room: &Room) -> Vec<Claimed> {
    let names = |places: &[(String, i32)]| -> Vec<String> {
        places.iter().map(|(k, _)| k.clone()).collect()
    };
    let counts =
        |places: &[(String, i32)]| -> Vec<i32> { places.iter().map(|(_, n)| *n).collect() };
    let full: Vec<String> = room
        .hosts
        .iter()
        .filter(|(_, n)| *n <= 0)
        .map(|(h, _)| h.clone())
        .collect();
    let free = i64::try_from(free).unwrap_or(i64::MAX);
    Spi::connect_mut(|client| {
        let rows = client.update(
            CLAIM_SQL,
            None,
            &[
                free.into(),
                room.host_room.into(),
                names(&room.hosts).into(),
                counts(&room.hosts).into(),
                full.into(),
                room.role_room.into(),
                names(&room.roles).into(),
                counts(&room.roles).into(),
            ],
        )?;
        let micros =
            |v: Option<i64>| Duration::from_micros(u64::try_from(v.unwrap_or(0)).unwrap_or(0));
        let mut claimed = Vec::new();
        for row in rows {
            claimed.push(Claimed {
                id: row.get_by_name::<i64, _>("id")?.unwrap_or_default(),
                method: row.get_by_name::<String, _>("method")?.unwrap_or_default(),
                url: row.get_by_name::<String, _>("url")?.unwrap_or_default(),
                host: row.get_by_name::<String, _>("host")?.unwrap_or_default(),
                headers: row
                    .get_by_name::<JsonB, _>("headers")?
                    .map_or(Value::Null, |j| j.0),
                body: row.get_by_name::<Vec<u8>, _>("body")?,
                timeout: micros(row.get_by_name::<i64, _>("timeout_us")?),
                policy: row
                    .get_by_name::<JsonB, _>("policy")?
                    .map_or(Value::Null, |j| j.0),
                attempts: row.get_by_name::<i32, _>("attempts")?.unwrap_or(1),
                retries: row.get_by_name::<i32, _>("retries")?.unwrap_or(0),
                backoff: micros(row.get_by_name::<i64, _>("backoff_us")?),
                created_by: row
                    .get_by_name::<String, _>("created_by")?
                    .unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::Error>(claimed)
    })
    .unwrap_or_else(|e| error!("take queued HTTP requests: {e}"))
}

/// Time until the next request is due (zero when one is overdue); None
/// when the queue is empty.
fn next_due() -> Option<Duration> {
    Spi::get_one::<i64>(
        "SELECT (extract(epoch FROM pg_catalog.min(next_attempt_at) - pg_catalog.now()) * 1000)::bigint
         FROM integration.http_requests",
    )
    .unwrap_or_else(|e| error!("look at the HTTP queue: {e}"))
    .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

const STORE_SQL: &str = "WITH f AS (
        SELECT * FROM ROWS FROM (pg_catalog.unnest($1::bigint[]),
                                 pg_catalog.unnest($2::int[]),
                                 pg_catalog.unnest($3::jsonb[]),
                                 pg_catalog.unnest($4::bytea[]),
                                 pg_catalog.unnest($5::text[]),
                                 pg_catalog.unnest($6::text[]),
                                 pg_catalog.unnest($7::bigint[]))
            AS f(id, status, headers, body, content_type, error, elapsed_us)
    ), done AS (
        DELETE FROM integration.http_requests r USING f
        WHERE r.id = f.id AND r.claimed_by = pg_catalog.pg_backend_pid()
        RETURNING r.*
    ), stored AS (
        INSERT INTO integration.http_responses
            (id, method, url, status, headers, body, content_type, error, attempts,
             elapsed, callback, created_by, created_at)
        SELECT d.id, d.method, d.url, f.status, f.headers, f.body, f.content_type,
               f.error, d.attempts, f.elapsed_us * interval '1 microsecond',
               d.callback, d.created_by, d.created_at
        FROM done d JOIN f ON f.id = d.id
        ON CONFLICT (id) DO NOTHING
        RETURNING id, callback, created_by
    )
    SELECT s.id, pg_catalog.format('%I.%I', n.nspname, p.proname) AS function,
           s.created_by::text AS role
    FROM stored s
    JOIN pg_catalog.pg_proc p ON p.oid = s.callback
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace";

/// Writes finished requests to `http_responses` (deleting them from the
/// queue), schedules retries, audits every attempt; returns the callbacks
/// to run once this commits.
fn store(verdicts: &[(Finished, Verdict)], calls: &[HttpCall]) -> Vec<Callback> {
    if verdicts.is_empty() {
        return Vec::new();
    }
    audit::insert_http_calls(calls);

    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    let mut headers = Vec::new();
    let mut bodies = Vec::new();
    let mut types = Vec::new();
    let mut errors = Vec::new();
    let mut elapsed = Vec::new();
    let mut retry_ids = Vec::new();
    let mut retry_after = Vec::new();
    let mut retry_errors = Vec::new();
    for (f, v) in verdicts {
        match v {
            Verdict::Final {
                status,
                headers: h,
                body,
                content_type,
                error,
            } => {
                ids.push(f.id);
                statuses.push(*status);
                headers.push(h.clone().map(JsonB));
                bodies.push(body.clone());
                types.push(content_type.clone());
                errors.push(error.clone());
                elapsed.push(i64::try_from(f.elapsed.as_micros()).unwrap_or(i64::MAX));
            }
            Verdict::Retry { after, error } => {
                retry_ids.push(f.id);
                retry_after.push(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
                retry_errors.push(error.clone());
            }
        }
    }
    if !retry_ids.is_empty() {
        Spi::run_with_args(
            "UPDATE integration.http_requests r
             SET claimed_by = NULL, last_error = f.error,
                 next_attempt_at = pg_catalog.now() + f.after_ms * interval '1 millisecond'
             FROM ROWS FROM (pg_catalog.unnest($1::bigint[]),
                             pg_catalog.unnest($2::bigint[]),
                             pg_catalog.unnest($3::text[])) AS f(id, after_ms, error)
             WHERE r.id = f.id AND r.claimed_by = pg_catalog.pg_backend_pid()",
            &[retry_ids.into(), retry_after.into(), retry_errors.into()],
        )
        .unwrap_or_else(|e| error!("schedule HTTP retries: {e}"));
    }
    if ids.is_empty() {
        return Vec::new();
    }
    let args = [
        DatumWithOid::from(ids),
        statuses.into(),
        headers.into(),
        bodies.into(),
        types.into(),
        errors.into(),
        elapsed.into(),
    ];
    let plan = saved_plan(&STORE_PLAN, STORE_SQL, &args, true);
    Spi::connect_mut(|client| {
        let rows = client.update(plan, None, &args)?;
        let mut callbacks = Vec::new();
        for row in rows {
            callbacks.push(Callback {
                id: row.get_by_name::<i64, _>("id")?.unwrap_or_default(),
                function: row
                    .get_by_name::<String, _>("function")?
                    .unwrap_or_default(),
                role: row.get_by_name::<String, _>("role")?.unwrap_or_default(),
            });
        }
        Ok::<_, pgrx::spi::Error>(callbacks)
    })
    .unwrap_or_else(|e| error!("store HTTP responses: {e}"))
}

/// Calls a callback with its response row, as the role that queued the
/// request, in a transaction of its own; its error is kept on the row. The
/// worker's session is a superuser's, so the callback is contained: it cannot
/// `SET ROLE` back to it, and no setting it makes outlives the call.
fn run_callback(callback: &Callback) {
    let outcome = BackgroundWorker::transaction(|| {
        subxact::attempt(|| {
            let role = contained::role(&callback.role, "who queued the request");
            contained::run_as(role, || {
                Spi::run_with_args(
                    &format!(
                        "SELECT {}(r) FROM integration.http_responses r WHERE r.id = $1",
                        callback.function
                    ),
                    &[callback.id.into()],
                )
            })
            .unwrap_or_else(|e| error!("{e}"))
        })
    });
    if let Err(error) = outcome {
        pgrx::log!(
            "pg_integration: callback {} for HTTP request {} failed: {error}",
            callback.function,
            callback.id
        );
        BackgroundWorker::transaction(|| {
            let _ = subxact::attempt(|| {
                Spi::run_with_args(
                    "WITH failed AS (
                         UPDATE integration.http_responses SET callback_error = $2 WHERE id = $1
                     )
                     INSERT INTO integration.audit_log (actor, action, target, ok, detail)
                     VALUES ($3, 'http.callback', 'http_request:' || $1, false,
                             pg_catalog.jsonb_build_object('function', $4, 'error', $2))",
                    &[
                        callback.id.into(),
                        error.as_str().into(),
                        callback.role.as_str().into(),
                        callback.function.as_str().into(),
                    ],
                )
            });
        });
    }
}
