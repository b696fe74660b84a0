//! Audit events that must survive the caller's transaction: failed key
//! verifications (often inside READ ONLY transactions, or followed by an
//! error that rolls everything back) and "key used" marks. Backends append
//! them to a ring in shared memory; the database's background worker
//! (`worker.rs`) writes them to `integration.audit_log` and
//! `api_key_store.last_used_at`.
//! Identical refusals close together are counted in one event. A backend
//! that finds a ring full waits up to 5 s for the worker to make room; only
//! then is an event lost (counted per database and reported as an
//! `audit.dropped` row), or when the server stops before the next flush
//! (about 200 ms).

use crate::owner::{saved_plan, SavedPlan};
use crate::{settings, subxact, worker};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::time::Duration;

/// Events the ring holds; about 260 bytes each.
const CAPACITY: usize = 4096;
/// Events written per transaction.
const BATCH: usize = 512;

/// What an event records.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A verification failed; `reason` says why.
    Refused = 1,
    /// A key was used successfully at `at` (coalesced per backend).
    Used = 2,
    /// An outbound HTTP call: method, host, status or error, duration.
    Http = 3,
}

/// Why a verification failed. The caller never learns it; the audit log does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    Malformed = 1,
    BadChecksum = 2,
    UnknownKey = 3,
    WrongSecret = 4,
    Revoked = 5,
    Expired = 6,
    MissingScope = 7,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::BadChecksum => "bad_checksum",
            Reason::UnknownKey => "unknown_key",
            Reason::WrongSecret => "wrong_secret",
            Reason::Revoked => "revoked",
            Reason::Expired => "expired",
            Reason::MissingScope => "missing_scope",
        }
    }

    fn from_u8(value: u8) -> Option<Reason> {
        [
            Reason::Malformed,
            Reason::BadChecksum,
            Reason::UnknownKey,
            Reason::WrongSecret,
            Reason::Revoked,
            Reason::Expired,
            Reason::MissingScope,
        ]
        .into_iter()
        .find(|r| *r as u8 == value)
    }
}

/// The action an event belongs to, as written in `audit_log.action`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Action {
    Verify = 1,
    Authenticate = 2,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Verify => "api_key.verify",
            Action::Authenticate => "api_key.authenticate",
        }
    }
}

#[derive(Copy, Clone)]
struct Event {
    database: u32,
    at: i64,
    kind: u8,
    action: u8,
    reason: u8,
    key_id: i64,
    actor: [u8; 64],
    /// HTTP calls: the method, host (cut to 128 bytes), status (0 when no
    /// response), duration and the error kind when there was no response.
    method: [u8; 12],
    host: [u8; 128],
    status: u16,
    duration_us: u64,
    error: [u8; 12],
    /// How many identical refusals this event stands for (coalesced).
    count: u32,
}

impl Event {
    const EMPTY: Event = Event {
        database: 0,
        at: 0,
        kind: 0,
        action: 0,
        reason: 0,
        key_id: 0,
        actor: [0; 64],
        method: [0; 12],
        host: [0; 128],
        status: 0,
        duration_us: 0,
        error: [0; 12],
        count: 1,
    };
}

/// Copies `text` into a fixed buffer, cut at a character boundary.
fn fixed<const N: usize>(text: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let mut end = text.len().min(N - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&text.as_bytes()[..end]);
    out
}

fn unfixed(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[derive(Copy, Clone)]
struct Ring {
    events: [Event; CAPACITY],
    len: usize,
    dropped: Dropped,
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            events: [Event::EMPTY; CAPACITY],
            len: 0,
            dropped: Dropped::default(),
        }
    }
}

/// Events dropped per database, so that each database's audit log says
/// what it lost (database 0 counts those of databases past the slots).
#[derive(Copy, Clone, Default)]
struct Dropped {
    slots: [(u32, u64); 16],
}

impl Dropped {
    fn add(&mut self, database: u32) {
        let slot = match self
            .slots
            .iter()
            .position(|(d, n)| *d == database && *n > 0)
        {
            Some(i) => i,
            None => match self.slots.iter().position(|(_, n)| *n == 0) {
                Some(i) => {
                    self.slots[i].0 = database;
                    i
                }
                // Every slot holds another database's count: count this
                // one as unattributed (database 0) in the last slot.
                None => {
                    let last = self.slots.len() - 1;
                    self.slots[last].0 = 0;
                    last
                }
            },
        };
        self.slots[slot].1 += 1;
    }

    /// Takes the count of `database`, and the unattributed one with it.
    fn take(&mut self, database: u32) -> u64 {
        self.slots
            .iter_mut()
            .filter(|(d, _)| *d == database || *d == 0)
            .map(|(_, n)| std::mem::take(n))
            .sum()
    }
}

/// How far back a refusal looks for an identical one to count instead.
const COALESCE_WINDOW: usize = 64;
/// How long a backend waits for room before it drops an event.
const FULL_WAIT: Duration = Duration::from_secs(5);

/// Whether a backend that found a ring full may still wait for room: not
/// past [`FULL_WAIT`], and not the worker itself, which cannot wait for
/// itself. The flooding backend is the one slowed down.
fn may_wait(started: std::time::Instant) -> bool {
    // SAFETY: a global set at process start.
    let background = unsafe { pg_sys::MyBackendType == pg_sys::BackendType::B_BG_WORKER };
    !background && started.elapsed() < FULL_WAIT
}

/// Wakes `database`'s worker and sleeps a moment (interrupts still work).
fn nap(database: u32) {
    worker::wake(database);
    // SAFETY: the documented way to sleep in a backend.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            10,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

// SAFETY: plain old data without pointers.
unsafe impl PGRXSharedMemory for Ring {}

static RING: PgLwLock<Ring> = unsafe { PgLwLock::new(c"pg_integration_audit_ring") };

/// Refusals waiting to be written. A ring of their own: their text does not
/// fit the events above, and each ring is built on the stack at startup.
const REFUSAL_CAPACITY: usize = 512;

#[derive(Copy, Clone)]
struct Refusal {
    database: u32,
    at: i64,
    actor: [u8; 64],
    action: [u8; 32],
    target: [u8; 96],
    reason: [u8; 160],
}

#[derive(Copy, Clone)]
struct Refusals {
    items: [Refusal; REFUSAL_CAPACITY],
    len: usize,
    dropped: Dropped,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            items: [Refusal {
                database: 0,
                at: 0,
                actor: [0; 64],
                action: [0; 32],
                target: [0; 96],
                reason: [0; 160],
            }; REFUSAL_CAPACITY],
            len: 0,
            dropped: Dropped::default(),
        }
    }
}

// SAFETY: plain old data without pointers.
unsafe impl PGRXSharedMemory for Refusals {}

static REFUSALS: PgLwLock<Refusals> = unsafe { PgLwLock::new(c"pg_integration_audit_refusals") };

impl Refusals {
    /// Removes up to `max` refusals of `database`, keeping the others in order.
    fn take(&mut self, database: u32, max: usize) -> Vec<Refusal> {
        let mut taken = Vec::new();
        let mut kept = 0;
        for i in 0..self.len {
            let item = self.items[i];
            if item.database == database && taken.len() < max {
                taken.push(item);
            } else {
                self.items[kept] = item;
                kept += 1;
            }
        }
        self.len = kept;
        taken
    }
}

impl Ring {
    /// Removes up to `max` events of `database`, keeping the others in order.
    fn take(&mut self, database: u32, max: usize) -> Vec<Event> {
        let mut taken = Vec::new();
        let mut kept = 0;
        for i in 0..self.len {
            let event = self.events[i];
            if event.database == database && taken.len() < max {
                taken.push(event);
            } else {
                self.events[kept] = event;
                kept += 1;
            }
        }
        self.len = kept;
        taken
    }

    fn forget(&mut self, database: u32) -> usize {
        let before = self.len;
        while !self.take(database, CAPACITY).is_empty() {}
        before - self.len
    }
}

pub fn init() {
    if settings::preloaded() {
        pg_shmem_init!(RING);
        pg_shmem_init!(REFUSALS);
    }
}

/// An event of `kind` by the current user in the current database, now.
fn event(kind: Kind) -> Event {
    // SAFETY: globals set for every backend before any query runs.
    let (database, at, user) = unsafe {
        (
            pg_sys::MyDatabaseId.to_u32(),
            pg_sys::GetCurrentTimestamp(),
            pg_sys::GetUserId(),
        )
    };
    // SAFETY: GetUserNameFromId with noerr returns NULL or a C string.
    let name = unsafe { pg_sys::GetUserNameFromId(user, true) };
    let actor = if name.is_null() {
        [0u8; 64]
    } else {
        // SAFETY: non-null NUL-terminated string from the catalog.
        fixed(&unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy())
    };
    Event {
        database,
        at,
        kind: kind as u8,
        actor,
        ..Event::EMPTY
    }
}

/// Records an outbound HTTP call (never its headers or body).
pub fn record_http(
    method: &str,
    host: &str,
    status: Option<u16>,
    elapsed: Duration,
    error: Option<&str>,
) {
    let event = Event {
        method: fixed(method),
        host: fixed(host),
        status: status.unwrap_or(0),
        duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        error: fixed(error.unwrap_or("")),
        ..event(Kind::Http)
    };
    if !settings::preloaded() {
        pgrx::log!(
            "pg_integration: {method} {host} -> {} in {} ms{}",
            status.map_or("no response".to_string(), |s| s.to_string()),
            elapsed.as_millis(),
            error.map_or(String::new(), |e| format!(" ({e})"))
        );
        return;
    }
    push(event);
}

/// Records a refused request: `action` as `audit_log.action` (such as
/// `http.enqueue`), its target and why. Written by the worker, so the row
/// survives the error that the refusal raises next. Never pass a secret.
pub fn refuse(action: &str, target: &str, reason: &str) {
    if !settings::preloaded() {
        pgrx::log!("pg_integration: {action} on {target:?} refused: {reason}");
        return;
    }
    let Event {
        database,
        at,
        actor,
        ..
    } = event(Kind::Refused);
    let refusal = Refusal {
        database,
        at,
        actor,
        action: fixed(action),
        target: fixed(target),
        reason: fixed(reason),
    };
    let started = std::time::Instant::now();
    loop {
        {
            let mut ring = REFUSALS.exclusive();
            if ring.len < REFUSAL_CAPACITY {
                let len = ring.len;
                ring.items[len] = refusal;
                ring.len += 1;
                break;
            }
            if !may_wait(started) {
                ring.dropped.add(database);
                break;
            }
        }
        nap(database);
    }
    worker::ensure(database);
}

/// Records an event for the current database and makes sure a writer runs.
pub fn record(kind: Kind, action: Action, reason: Option<Reason>, key_id: Option<i64>) {
    let event = Event {
        action: action as u8,
        reason: reason.map_or(0, |r| r as u8),
        key_id: key_id.unwrap_or(0),
        ..event(kind)
    };
    if !settings::preloaded() {
        if kind == Kind::Refused {
            pgrx::log!(
                "pg_integration: {} refused (key {}, reason {}); not audited in a table because \
                 pg_integration is not in shared_preload_libraries",
                action.as_str(),
                key_id.unwrap_or(0),
                reason.map_or("unknown", Reason::as_str)
            );
        }
        return;
    }
    push(event);
}

/// Two refusals the audit log may count as one row.
fn same_refusal(a: &Event, b: &Event) -> bool {
    a.kind == Kind::Refused as u8
        && b.kind == a.kind
        && a.database == b.database
        && a.action == b.action
        && a.reason == b.reason
        && a.key_id == b.key_id
        && a.actor == b.actor
}

/// Adds `event` to the ring: a refusal identical to a recent one is counted
/// there; when the ring is full the backend waits briefly for the worker,
/// and drops the event (counted for its database) only after that.
fn push(event: Event) {
    let started = std::time::Instant::now();
    loop {
        {
            let mut ring = RING.exclusive();
            let len = ring.len;
            let recent = len.saturating_sub(COALESCE_WINDOW)..len;
            if let Some(same) = ring.events[recent]
                .iter_mut()
                .rev()
                .find(|e| same_refusal(e, &event))
            {
                same.count = same.count.saturating_add(1);
                break;
            }
            if len < CAPACITY {
                ring.events[len] = event;
                ring.len += 1;
                break;
            }
            if !may_wait(started) {
                ring.dropped.add(event.database);
                break;
            }
        }
        nap(event.database);
    }
    worker::ensure(event.database);
}

/// True when events of `database` wait in the rings.
pub fn has_events(database: u32) -> bool {
    let waiting = {
        let ring = RING.share();
        ring.events[..ring.len]
            .iter()
            .any(|e| e.database == database)
    };
    waiting || {
        let refusals = REFUSALS.share();
        refusals.items[..refusals.len]
            .iter()
            .any(|r| r.database == database)
    }
}

/// Drops the events of `database` (its worker cannot run); returns how many.
pub fn forget(database: u32) -> usize {
    let refusals = REFUSALS.exclusive().take(database, REFUSAL_CAPACITY).len();
    RING.exclusive().forget(database) + refusals
}

/// Writes a batch of `database`'s events (called by its worker, outside a
/// transaction); false when there was nothing to write. `installed` says
/// whether the extension exists in that database.
pub fn drain(database: u32, installed: bool) -> bool {
    let (batch, mut dropped) = {
        let mut ring = RING.exclusive();
        let batch = ring.take(database, BATCH);
        (batch, ring.dropped.take(database))
    };
    let refusals = {
        let mut ring = REFUSALS.exclusive();
        dropped += ring.dropped.take(database);
        ring.take(database, BATCH)
    };
    if batch.is_empty() && refusals.is_empty() && dropped == 0 {
        return false;
    }
    if !installed {
        pgrx::log!(
            "pg_integration: {} audit events for database {database} dropped: the extension is not installed there",
            batch.len() + refusals.len()
        );
        return true;
    }
    write(&batch, &refusals, dropped);
    true
}

/// Writes one batch in its own transaction; a failure is logged, not retried.
fn write(batch: &[Event], refusals: &[Refusal], dropped: u64) {
    let count = batch.len() + refusals.len();
    let outcome = BackgroundWorker::transaction(|| {
        subxact::attempt(|| {
            insert_refusals(refusals);
            insert(batch, dropped)
        })
    });
    if dropped > 0 {
        pgrx::log!("pg_integration: {dropped} audit events dropped: the ring was full");
    }
    if let Err(error) = outcome {
        pgrx::warning!(
            "pg_integration: writing {count} audit events failed, they are lost: {error}"
        );
    }
}

/// Writes refusals to the audit log (`ok` false, the reason in `detail`).
fn insert_refusals(refusals: &[Refusal]) {
    if refusals.is_empty() {
        return;
    }
    let ats: Vec<i64> = refusals.iter().map(|r| r.at).collect();
    let actors: Vec<String> = refusals.iter().map(|r| unfixed(&r.actor)).collect();
    let actions: Vec<String> = refusals.iter().map(|r| unfixed(&r.action)).collect();
    let targets: Vec<String> = refusals.iter().map(|r| unfixed(&r.target)).collect();
    let reasons: Vec<String> = refusals.iter().map(|r| unfixed(&r.reason)).collect();
    Spi::run_with_args(
        "INSERT INTO integration.audit_log (at, actor, action, target, ok, detail)
         SELECT timestamptz '2000-01-01 00:00:00+00' + e.us * interval '1 microsecond',
                e.actor, e.action, NULLIF(e.target, ''), false,
                pg_catalog.jsonb_build_object('reason', e.reason)
         FROM ROWS FROM (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::text[]),
                         pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::text[]),
                         pg_catalog.unnest($5::text[]))
              AS e(us, actor, action, target, reason)",
        &[
            ats.into(),
            actors.into(),
            actions.into(),
            targets.into(),
            reasons.into(),
        ],
    )
    .unwrap_or_else(|e| error!("insert audit rows of refusals: {e}"));
}

fn insert(batch: &[Event], dropped: u64) {
    let refused: Vec<&Event> = batch
        .iter()
        .filter(|e| e.kind == Kind::Refused as u8)
        .collect();
    let used: Vec<&Event> = batch
        .iter()
        .filter(|e| e.kind == Kind::Used as u8)
        .collect();
    if !refused.is_empty() {
        let ats: Vec<i64> = refused.iter().map(|e| e.at).collect();
        let actors: Vec<String> = refused.iter().map(|e| actor_name(e)).collect();
        let actions: Vec<String> = refused.iter().map(|e| action_name(e).to_string()).collect();
        let ids: Vec<Option<i64>> = refused
            .iter()
            .map(|e| (e.key_id != 0).then_some(e.key_id))
            .collect();
        let reasons: Vec<String> = refused
            .iter()
            .map(|e| {
                Reason::from_u8(e.reason)
                    .map_or("unknown", Reason::as_str)
                    .to_string()
            })
            .collect();
        // Identical refusals in a row are one row with their count.
        let counts: Vec<Option<i64>> = refused
            .iter()
            .map(|e| (e.count > 1).then_some(i64::from(e.count)))
            .collect();
        Spi::run_with_args(
            "INSERT INTO integration.audit_log (at, actor, action, target, ok, detail)
             SELECT timestamptz '2000-01-01 00:00:00+00' + e.us * interval '1 microsecond',
                    e.actor, e.action,
                    CASE WHEN e.id IS NULL THEN NULL ELSE 'api_key:' || e.id END,
                    false,
                    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                        'reason', e.reason, 'key_id', e.id, 'count', e.n))
             FROM ROWS FROM (pg_catalog.unnest($1::bigint[]),
                             pg_catalog.unnest($2::text[]),
                             pg_catalog.unnest($3::text[]),
                             pg_catalog.unnest($4::bigint[]),
                             pg_catalog.unnest($5::text[]),
                             pg_catalog.unnest($6::bigint[]))
                  AS e(us, actor, action, id, reason, n)",
            &[
                ats.into(),
                actors.into(),
                actions.into(),
                ids.into(),
                reasons.into(),
                counts.into(),
            ],
        )
        .unwrap_or_else(|e| error!("insert audit rows: {e}"));
    }
    if !used.is_empty() {
        let ids: Vec<i64> = used.iter().map(|e| e.key_id).collect();
        let ats: Vec<i64> = used.iter().map(|e| e.at).collect();
        Spi::run_with_args(
            "UPDATE integration.api_key_store s
             SET last_used_at = GREATEST(s.last_used_at, u.at)
             FROM (SELECT id, timestamptz '2000-01-01 00:00:00+00' + pg_catalog.max(us) * interval '1 microsecond' AS at
                   FROM ROWS FROM (pg_catalog.unnest($1::bigint[]),
                                   pg_catalog.unnest($2::bigint[])) AS x(id, us) GROUP BY id) u
             WHERE s.id = u.id",
            &[ids.into(), ats.into()],
        )
        .unwrap_or_else(|e| error!("update last_used_at: {e}"));
    }
    let calls: Vec<HttpCall> = batch
        .iter()
        .filter(|e| e.kind == Kind::Http as u8)
        .map(|e| HttpCall {
            at: e.at,
            actor: actor_name(e),
            method: unfixed(&e.method),
            host: unfixed(&e.host),
            status: (e.status != 0).then_some(e.status),
            duration_us: i64::try_from(e.duration_us).unwrap_or(i64::MAX),
            error: Some(unfixed(&e.error)).filter(|s| !s.is_empty()),
        })
        .collect();
    insert_http_calls(&calls);
    if dropped > 0 {
        Spi::run_with_args(
            "INSERT INTO integration.audit_log (actor, action, ok, detail)
             VALUES ('pg_integration', 'audit.dropped', false, pg_catalog.jsonb_build_object('events', $1::bigint))",
            &[(dropped as i64).into()],
        )
        .unwrap_or_else(|e| error!("insert audit.dropped row: {e}"));
    }
}

/// One outbound HTTP call as the audit log records it.
pub struct HttpCall {
    /// Postgres timestamp (microseconds since 2000-01-01 UTC).
    pub at: i64,
    pub actor: String,
    pub method: String,
    pub host: String,
    pub status: Option<u16>,
    pub duration_us: i64,
    /// The error kind when there was no response.
    pub error: Option<String>,
}

thread_local! {
    static HTTP_CALLS_PLAN: SavedPlan = const { SavedPlan::new() };
}

const HTTP_CALLS_SQL: &str =
    "INSERT INTO integration.audit_log (at, actor, action, target, ok, detail)
    SELECT timestamptz '2000-01-01 00:00:00+00' + e.us * interval '1 microsecond',
           e.actor, 'http.request', e.host, e.status IS NOT NULL,
           pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
               'method', e.method, 'status', e.status,
               'duration_ms', pg_catalog.round(e.dur / 1000.0, 3), 'error', e.error))
    FROM ROWS FROM (pg_catalog.unnest($1::bigint[]),
                    pg_catalog.unnest($2::text[]),
                    pg_catalog.unnest($3::text[]),
                    pg_catalog.unnest($4::text[]),
                    pg_catalog.unnest($5::int[]),
                    pg_catalog.unnest($6::bigint[]),
                    pg_catalog.unnest($7::text[]))
         AS e(us, actor, method, host, status, dur, error)";

/// Writes `calls` to the audit log in the current transaction.
pub fn insert_http_calls(calls: &[HttpCall]) {
    if calls.is_empty() {
        return;
    }
    let ats: Vec<i64> = calls.iter().map(|c| c.at).collect();
    let actors: Vec<&str> = calls.iter().map(|c| c.actor.as_str()).collect();
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    let hosts: Vec<&str> = calls.iter().map(|c| c.host.as_str()).collect();
    let statuses: Vec<Option<i32>> = calls.iter().map(|c| c.status.map(i32::from)).collect();
    let durations: Vec<i64> = calls.iter().map(|c| c.duration_us).collect();
    let errors: Vec<Option<&str>> = calls.iter().map(|c| c.error.as_deref()).collect();
    let args = [
        DatumWithOid::from(ats),
        actors.into(),
        methods.into(),
        hosts.into(),
        statuses.into(),
        durations.into(),
        errors.into(),
    ];
    let plan = saved_plan(&HTTP_CALLS_PLAN, HTTP_CALLS_SQL, &args, true);
    Spi::connect_mut(|client| client.update(plan, None, &args).map(drop))
        .unwrap_or_else(|e| error!("insert HTTP audit rows: {e}"));
}

fn actor_name(event: &Event) -> String {
    unfixed(&event.actor)
}

fn action_name(event: &Event) -> &'static str {
    if event.action == Action::Authenticate as u8 {
        Action::Authenticate.as_str()
    } else {
        Action::Verify.as_str()
    }
}

/// Writes an audit row in the caller's transaction (for changes that must
/// commit or roll back together with their row). Call inside `as_owner`.
pub fn write_now(actor: &str, action: &str, target: &str, detail: serde_json::Value) {
    Spi::run_with_args(
        "INSERT INTO integration.audit_log (actor, action, target, ok, detail) VALUES ($1, $2, $3, true, $4)",
        &[
            actor.into(),
            action.into(),
            target.into(),
            pgrx::JsonB(detail).into(),
        ],
    )
    .unwrap_or_else(|e| error!("write the audit row for {action} on {target}: {e}"));
}
