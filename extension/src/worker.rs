//! The background workers. Each database that needs one gets its own
//! worker, started on demand by the backend that has work for it: it writes
//! the audit events waiting in shared memory and delivers the database's
//! HTTP queue, and leaves after a few idle seconds so that `DROP DATABASE`
//! is not held up. A launcher, registered when the library is preloaded,
//! starts a worker in every database once after each server start or crash
//! recovery, so requests queued before a restart are delivered without
//! anyone calling in. When more requests are due than a worker may have in
//! flight, it starts helpers (up to `integration.http_queue_workers` in
//! all) that share the HTTP queue with it and leave once it is drained.

use crate::http::queue::{self, Deliverer};
use crate::{audit, settings};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};
use std::time::Duration;

/// Workers (a database's first and its helpers) that can run at the same time.
const SLOTS: usize = 64;
/// How long an idle worker sleeps between looks at its queue.
const POLL: Duration = Duration::from_millis(200);
/// A worker leaves after this many idle polls with nothing queued.
const IDLE_POLLS: u32 = 25;
/// A helper leaves after this many polls in which it took nothing.
const HELPER_IDLE_POLLS: u32 = 5;
/// A worker that could not connect this many times gives up on its database.
const MAX_ATTEMPTS: u8 = 3;

#[derive(Copy, Clone, Default, PartialEq, Eq)]
enum State {
    #[default]
    Free,
    Starting,
    Running,
}

#[derive(Copy, Clone, Default)]
struct Slot {
    database: u32,
    /// 0 for the database's worker, 1.. for the helpers on its HTTP queue.
    index: u8,
    state: State,
    attempts: u8,
    /// The worker's process id once it runs (to set its latch).
    pid: i32,
    /// Started by the launcher to look for queued work: leave at once if none.
    probe: bool,
}

#[derive(Copy, Clone)]
struct Workers {
    slots: [Slot; SLOTS],
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            slots: [Slot::default(); SLOTS],
        }
    }
}

// SAFETY: plain old data without pointers.
unsafe impl PGRXSharedMemory for Workers {}

static WORKERS: PgLwLock<Workers> = unsafe { PgLwLock::new(c"pg_integration_workers") };

impl Workers {
    fn slot(&mut self, database: u32, index: u8) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| s.state != State::Free && s.database == database && s.index == index)
    }

    /// Takes a free slot for worker `index` of `database`; false when it
    /// has one or none is free.
    fn claim(&mut self, database: u32, index: u8, probe: bool) -> bool {
        if self.slot(database, index).is_some() {
            return false;
        }
        match self.slots.iter_mut().find(|s| s.state == State::Free) {
            Some(slot) => {
                *slot = Slot {
                    database,
                    index,
                    state: State::Starting,
                    attempts: 0,
                    pid: 0,
                    probe,
                };
                true
            }
            None => false,
        }
    }

    fn release(&mut self, database: u32, index: u8) {
        if let Some(slot) = self.slot(database, index) {
            *slot = Slot::default();
        }
    }
}

pub fn init() {
    if !settings::preloaded() {
        return;
    }
    pg_shmem_init!(WORKERS);
    BackgroundWorkerBuilder::new("pg_integration launcher")
        .set_type("pg_integration launcher")
        .set_library("pg_integration")
        .set_function("pg_integration_launcher")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// Makes sure `database` has a worker; false when none could be started
/// (the work then waits for the next call, or the launcher).
pub fn ensure(database: u32) -> bool {
    start(database, 0, false)
}

fn has_worker(database: u32, index: u8) -> bool {
    WORKERS
        .share()
        .slots
        .iter()
        .any(|s| s.state != State::Free && s.database == database && s.index == index)
}

fn start(database: u32, index: u8, probe: bool) -> bool {
    // The common case, a worker already there, takes only a shared lock.
    if has_worker(database, index) {
        return true;
    }
    if !WORKERS.exclusive().claim(database, index, probe) {
        return has_worker(database, index);
    }
    let name = match index {
        0 => format!("pg_integration worker for database {database}"),
        n => format!("pg_integration helper {n} for database {database}"),
    };
    let started = BackgroundWorkerBuilder::new(&name)
        .set_type("pg_integration worker")
        .set_library("pg_integration")
        .set_function("pg_integration_db_worker")
        .set_argument(Some(pg_sys::Datum::from(
            u64::from(database) | (u64::from(index) << 32),
        )))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load_dynamic()
        .is_ok();
    if !started {
        WORKERS.exclusive().release(database, index);
        pgrx::log!(
            "pg_integration: could not start {name} \
             (max_worker_processes reached?); its work waits"
        );
    }
    started
}

/// Tells `database`'s worker that work arrived, starting one when there is
/// none. Never raises: it runs after commit.
pub fn wake(database: u32) {
    let pid = WORKERS
        .share()
        .slots
        .iter()
        .find(|s| s.state != State::Free && s.database == database && s.index == 0)
        .map(|s| s.pid);
    match pid {
        // A starting worker looks at its queue as soon as it runs.
        Some(0) => {}
        Some(pid) => {
            // SAFETY: BackendPidGetProc returns NULL or a live PGPROC;
            // SetLatch is safe on any process' latch.
            unsafe {
                let proc_ = pg_sys::BackendPidGetProc(pid);
                if !proc_.is_null() {
                    pg_sys::SetLatch(&mut (*proc_).procLatch);
                }
            }
        }
        None => {
            start(database, 0, false);
        }
    }
}

/// Takes slot `index` of `database` as the running worker; None when the
/// worker should not run (it failed to connect too often). Returns the
/// probe flag.
fn enter(database: u32, index: u8) -> Option<bool> {
    let mut workers = WORKERS.exclusive();
    if workers.slot(database, index).is_none() {
        // After a crash restart the slot may be gone: take one again.
        workers.claim(database, index, false);
    }
    let slot = workers.slot(database, index)?;
    slot.attempts += 1;
    if slot.attempts > MAX_ATTEMPTS {
        workers.release(database, index);
        return None;
    }
    Some(slot.probe)
}

/// Frees the slot; if work arrived meanwhile and nobody else took the slot,
/// takes it back and returns false (keep running).
fn leave(database: u32, index: u8, more_work: impl FnOnce() -> bool) -> bool {
    WORKERS.exclusive().release(database, index);
    if !more_work() {
        return true;
    }
    let mut workers = WORKERS.exclusive();
    if !workers.claim(database, index, false) {
        return true;
    }
    mark_running(&mut workers, database, index);
    false
}

fn mark_running(workers: &mut Workers, database: u32, index: u8) {
    if let Some(slot) = workers.slot(database, index) {
        slot.state = State::Running;
        slot.attempts = 0;
        // SAFETY: a global set at process start.
        slot.pid = unsafe { pg_sys::MyProcPid };
    }
}

/// Starts the helpers `database`'s queue may have that do not run yet.
fn start_helpers(database: u32) {
    let wanted = queue::workers();
    for index in 1..wanted {
        if !start(database, index, false) {
            break;
        }
    }
}

fn installed(table: &str) -> bool {
    BackgroundWorker::transaction(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
            &[table.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false)
    })
}

/// A database's worker (audit events and the HTTP queue) or one of its
/// helpers (the HTTP queue only). The argument holds the database in its
/// low 32 bits and the worker's index above them.
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_integration_db_worker(arg: pg_sys::Datum) {
    let raw = arg.value() as u64;
    let database = raw as u32;
    let index = (raw >> 32) as u8;
    let helper = index > 0;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let Some(probe) = enter(database, index) else {
        if helper {
            return;
        }
        let lost = audit::forget(database);
        pgrx::log!(
            "pg_integration: the worker for database {database} gives up (it failed to \
             connect {MAX_ATTEMPTS} times, or no slot was free); {lost} audit events dropped"
        );
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(database)), None);
    pin_search_path();
    let settings = session_settings();
    mark_running(&mut WORKERS.exclusive(), database, index);
    let has_audit = !helper && installed("integration.audit_log");
    let mut queue = if installed("integration.http_requests") {
        match Deliverer::new() {
            Ok(deliverer) => Some(deliverer),
            Err(error) => {
                pgrx::warning!("pg_integration: the HTTP queue cannot run: {error}");
                None
            }
        }
    } else {
        None
    };
    let mut idle = 0;
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to reload.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let wrote = !helper && audit::drain(database, has_audit);
        let activity = queue.as_mut().map(Deliverer::step).unwrap_or_default();
        if activity.ran_callbacks {
            if let Err(damage) = session_intact(&settings) {
                pgrx::log!(
                    "pg_integration: a queue callback left the worker's session changed \
                     ({damage}); the worker restarts in a new session"
                );
                if let Some(queue) = queue {
                    queue.stop();
                }
                WORKERS.exclusive().release(database, index);
                start(database, index, false);
                return;
            }
        }
        if wrote || activity.worked {
            idle = 0;
        } else {
            idle += 1;
        }
        // More is due than this worker may have in flight: share the load.
        if !helper && activity.worked && activity.wait.is_zero() {
            start_helpers(database);
        }
        let running = if activity.in_flight > 0 {
            !BackgroundWorker::sigterm_received()
        } else {
            // A helper leaves as soon as nothing is due; the worker stays
            // for requests due later and leaves after a few idle seconds.
            let quiet = if helper {
                idle >= HELPER_IDLE_POLLS
            } else {
                !activity.pending && (idle >= IDLE_POLLS || (probe && idle >= 1))
            };
            if quiet
                && leave(database, index, || {
                    !helper
                        && (audit::has_events(database)
                            || queue.as_mut().is_some_and(Deliverer::has_requests))
                })
            {
                return;
            }
            BackgroundWorker::wait_latch(Some(activity.wait.min(POLL)))
        };
        if !running {
            break;
        }
    }
    if let Some(queue) = queue {
        queue.stop();
    }
    WORKERS.exclusive().release(database, index);
}

/// The worker's session is a superuser's: it finds every name in
/// `pg_catalog` only, whatever a user puts on a `search_path`.
fn pin_search_path() {
    BackgroundWorker::transaction(|| {
        Spi::run("SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)")
            .unwrap_or_else(|e| error!("pin the worker's search_path: {e}"))
    });
}

/// The settings this session has from its start (what a callback must
/// not change), as one comparable text.
fn session_settings() -> String {
    BackgroundWorker::transaction(|| {
        Spi::get_one::<String>(
            "SELECT pg_catalog.string_agg(s.name || '=' || s.setting, ', ' ORDER BY s.name)
             FROM pg_catalog.pg_settings s WHERE s.source = 'session'",
        )
        .unwrap_or_else(|e| error!("read the worker's settings: {e}"))
        .unwrap_or_default()
    })
}

/// Checks that the callbacks that ran left nothing behind in the session:
/// callbacks run contained (see `contained.rs`), this is the second line.
/// Returns what changed.
fn session_intact(settings: &str) -> Result<(), String> {
    let damage = BackgroundWorker::transaction(|| {
        Spi::get_one_with_args::<String>(
            "SELECT pg_catalog.concat_ws('; ',
                 CASE WHEN now_settings IS DISTINCT FROM $1
                      THEN 'settings ' || coalesce(now_settings, '') END,
                 CASE WHEN pg_catalog.current_setting('transaction_read_only')::bool
                      THEN 'read-only' END,
                 CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_locks l
                                   WHERE l.pid = pg_catalog.pg_backend_pid()
                                     AND l.locktype = 'advisory')
                      THEN 'advisory locks held' END,
                 CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_listening_channels())
                      THEN 'listening' END,
                 CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_prepared_statements)
                      THEN 'prepared statements' END)
             FROM (SELECT pg_catalog.string_agg(s.name || '=' || s.setting, ', ' ORDER BY s.name)
                   FROM pg_catalog.pg_settings s WHERE s.source = 'session') AS n(now_settings)",
            &[settings.into()],
        )
    });
    match damage {
        Ok(Some(damage)) if damage.is_empty() => Ok(()),
        Ok(damage) => Err(damage.unwrap_or_default()),
        Err(error) => Err(error.to_string()),
    }
}

/// The databases that accept connections, read from the shared catalog
/// (the launcher is connected to no database).
fn databases() -> Vec<u32> {
    let mut found = Vec::new();
    // SAFETY: the catalog scan autovacuum's launcher makes, in a transaction.
    unsafe {
        pg_sys::StartTransactionCommand();
        pg_sys::GetTransactionSnapshot();
        let relation = pg_sys::table_open(
            pg_sys::DatabaseRelationId,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        );
        let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let row = pg_sys::GETSTRUCT(tuple) as pg_sys::Form_pg_database;
            if (*row).datallowconn && !(*row).datistemplate {
                found.push((*row).oid.to_u32());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::CommitTransactionCommand();
    }
    found
}

/// Starts a probing worker in each database, one at a time, then sleeps
/// until the server stops (so it is started again after a crash).
#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pg_integration_launcher(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let mut waiting = databases();
    while !waiting.is_empty() {
        let database = waiting[0];
        if start(database, 0, true) {
            waiting.remove(0);
            // Let it look before starting the next, so a small
            // max_worker_processes is not exhausted by probes.
            for _ in 0..200 {
                let starting = WORKERS
                    .share()
                    .slots
                    .iter()
                    .any(|s| s.database == database && s.state == State::Starting);
                if !starting {
                    break;
                }
                if !BackgroundWorker::wait_latch(Some(Duration::from_millis(50))) {
                    return;
                }
            }
        } else if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            return;
        }
    }
    while BackgroundWorker::wait_latch(None) {}
}
