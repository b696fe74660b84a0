//! Audit events that must survive the caller's transaction: failed key
//! verifications (often inside READ ONLY transactions, or followed by an
//! error that rolls everything back) and "key used" marks. Backends append
//! them to a ring in shared memory; a per-database background worker
//! writes them to `integration.audit_log` and `api_key_store.last_used_at`.
//! Events are lost only when the ring is full (counted and reported as an
//! `audit.dropped` row) or when the server stops before the next flush
//! (about 200 ms).

use crate::settings;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::time::Duration;

/// Events the ring holds; about 260 bytes each.
const CAPACITY: usize = 4096;
/// Databases that can have a writer at the same time.
const WORKER_SLOTS: usize = 32;
/// A writer leaves after this many empty polls (200 ms each): soon, since
/// while it is connected `DROP DATABASE` (without FORCE) is refused.
const IDLE_POLLS: u32 = 25;
/// Events written per transaction.
const BATCH: usize = 512;
/// A writer that could not connect this many times gives up on its database.
const MAX_ATTEMPTS: u8 = 3;

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
struct Slot {
    database: u32,
    /// 0 free, 1 starting, 2 running.
    state: u8,
    attempts: u8,
}

#[derive(Copy, Clone)]
struct Ring {
    events: [Event; CAPACITY],
    len: usize,
    dropped: u64,
    slots: [Slot; WORKER_SLOTS],
}

impl Default for Ring {
    fn default() -> Self {
        Ring {
            events: [Event::EMPTY; CAPACITY],
            len: 0,
            dropped: 0,
            slots: [Slot {
                database: 0,
                state: 0,
                attempts: 0,
            }; WORKER_SLOTS],
        }
    }
}

// SAFETY: plain old data without pointers.
unsafe impl PGRXSharedMemory for Ring {}

static RING: PgLwLock<Ring> = unsafe { PgLwLock::new(c"pg_integration_audit_ring") };

impl Ring {
    fn slot(&mut self, database: u32) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| s.state != 0 && s.database == database)
    }

    /// Marks a writer for `database` as starting; false when one is already
    /// there or no slot is free (the events then wait for the next push).
    fn claim(&mut self, database: u32) -> bool {
        if self.slot(database).is_some() {
            return false;
        }
        match self.slots.iter_mut().find(|s| s.state == 0) {
            Some(slot) => {
                *slot = Slot {
                    database,
                    state: 1,
                    attempts: 0,
                };
                true
            }
            None => false,
        }
    }

    fn release(&mut self, database: u32) {
        if let Some(slot) = self.slot(database) {
            slot.state = 0;
        }
    }

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

fn push(event: Event) {
    let database = event.database;
    let start_writer = {
        let mut ring = RING.exclusive();
        if ring.len < CAPACITY {
            let len = ring.len;
            ring.events[len] = event;
            ring.len += 1;
        } else {
            ring.dropped += 1;
        }
        ring.claim(database)
    };
    if start_writer && start_worker(database).is_err() {
        RING.exclusive().release(database);
        pgrx::warning!(
            "pg_integration: could not start the audit writer (max_worker_processes reached?); \
             events wait in shared memory"
        );
    }
}

fn start_worker(database: u32) -> Result<(), ()> {
    BackgroundWorkerBuilder::new(&format!("pg_integration writer for database {database}"))
        .set_type("pg_integration writer")
        .set_library("pg_integration")
        .set_function("pg_integration_db_worker")
        .set_argument(Some(pg_sys::Datum::from(database)))
        .enable_spi_access()
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load_dynamic()
        .map(|_| ())
        .map_err(|_| ())
}

/// The per-database writer: drains this database's events, leaves when idle.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_integration_db_worker(arg: pg_sys::Datum) {
    let database = arg.value() as u32;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    {
        let mut ring = RING.exclusive();
        if ring.slot(database).is_none() {
            // After a crash restart the slot may be gone: take one again.
            ring.claim(database);
        }
        let give_up = match ring.slot(database) {
            Some(slot) => {
                slot.attempts += 1;
                slot.attempts > MAX_ATTEMPTS
            }
            None => true,
        };
        if give_up {
            let lost = ring.forget(database);
            ring.release(database);
            drop(ring);
            pgrx::log!(
                "pg_integration: cannot write audit events to database {database}; {lost} dropped"
            );
            return;
        }
    }
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    if let Some(slot) = RING.exclusive().slot(database) {
        slot.state = 2;
        slot.attempts = 0;
    }
    let installed = BackgroundWorker::transaction(|| {
        Spi::get_one::<bool>("SELECT to_regclass('integration.audit_log') IS NOT NULL")
            .ok()
            .flatten()
            .unwrap_or(false)
    });
    let mut idle = 0;
    loop {
        let running = BackgroundWorker::wait_latch(Some(Duration::from_millis(200)));
        let (batch, dropped) = {
            let mut ring = RING.exclusive();
            let batch = ring.take(database, BATCH);
            let dropped = std::mem::take(&mut ring.dropped);
            if batch.is_empty() && dropped == 0 && (!running || idle >= IDLE_POLLS) {
                ring.release(database);
                return;
            }
            (batch, dropped)
        };
        if batch.is_empty() && dropped == 0 {
            idle += 1;
            continue;
        }
        idle = 0;
        if !installed {
            pgrx::log!(
                "pg_integration: {} audit events for database {database} dropped: the extension is not installed there",
                batch.len()
            );
            continue;
        }
        write(&batch, dropped);
    }
}

/// Writes one batch in its own transaction; a failure is logged, not retried.
fn write(batch: &[Event], dropped: u64) {
    let count = batch.len();
    let outcome = BackgroundWorker::transaction(|| {
        PgTryBuilder::new(|| {
            insert(batch, dropped);
            true
        })
        .catch_others(|error| {
            pgrx::warning!("pg_integration: writing {count} audit events failed: {error:?}");
            false
        })
        .execute()
    });
    if dropped > 0 {
        pgrx::log!("pg_integration: {dropped} audit events dropped: the ring was full");
    }
    if !outcome {
        pgrx::log!("pg_integration: {count} audit events lost");
    }
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
        Spi::run_with_args(
            "INSERT INTO integration.audit_log (at, actor, action, target, ok, detail)
             SELECT timestamptz '2000-01-01 00:00:00+00' + e.us * interval '1 microsecond',
                    e.actor, e.action,
                    CASE WHEN e.id IS NULL THEN NULL ELSE 'api_key:' || e.id END,
                    false,
                    jsonb_strip_nulls(jsonb_build_object('reason', e.reason, 'key_id', e.id))
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[])
                  AS e(us, actor, action, id, reason)",
            &[
                ats.into(),
                actors.into(),
                actions.into(),
                ids.into(),
                reasons.into(),
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
             FROM (SELECT id, timestamptz '2000-01-01 00:00:00+00' + max(us) * interval '1 microsecond' AS at
                   FROM unnest($1::bigint[], $2::bigint[]) AS x(id, us) GROUP BY id) u
             WHERE s.id = u.id",
            &[ids.into(), ats.into()],
        )
        .unwrap_or_else(|e| error!("update last_used_at: {e}"));
    }
    let calls: Vec<&Event> = batch
        .iter()
        .filter(|e| e.kind == Kind::Http as u8)
        .collect();
    if !calls.is_empty() {
        let ats: Vec<i64> = calls.iter().map(|e| e.at).collect();
        let actors: Vec<String> = calls.iter().map(|e| actor_name(e)).collect();
        let methods: Vec<String> = calls.iter().map(|e| unfixed(&e.method)).collect();
        let hosts: Vec<String> = calls.iter().map(|e| unfixed(&e.host)).collect();
        let statuses: Vec<Option<i32>> = calls
            .iter()
            .map(|e| (e.status != 0).then_some(i32::from(e.status)))
            .collect();
        let durations: Vec<i64> = calls
            .iter()
            .map(|e| i64::try_from(e.duration_us).unwrap_or(i64::MAX))
            .collect();
        let errors: Vec<Option<String>> = calls
            .iter()
            .map(|e| Some(unfixed(&e.error)).filter(|s| !s.is_empty()))
            .collect();
        Spi::run_with_args(
            "INSERT INTO integration.audit_log (at, actor, action, target, ok, detail)
             SELECT timestamptz '2000-01-01 00:00:00+00' + e.us * interval '1 microsecond',
                    e.actor, 'http.request', e.host, e.status IS NOT NULL,
                    jsonb_strip_nulls(jsonb_build_object(
                        'method', e.method, 'status', e.status,
                        'duration_ms', round(e.dur / 1000.0, 3), 'error', e.error))
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[],
                         $6::bigint[], $7::text[])
                  AS e(us, actor, method, host, status, dur, error)",
            &[
                ats.into(),
                actors.into(),
                methods.into(),
                hosts.into(),
                statuses.into(),
                durations.into(),
                errors.into(),
            ],
        )
        .unwrap_or_else(|e| error!("insert HTTP audit rows: {e}"));
    }
    if dropped > 0 {
        Spi::run_with_args(
            "INSERT INTO integration.audit_log (actor, action, ok, detail)
             VALUES ('pg_integration', 'audit.dropped', false, jsonb_build_object('events', $1::bigint))",
            &[(dropped as i64).into()],
        )
        .unwrap_or_else(|e| error!("insert audit.dropped row: {e}"));
    }
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
