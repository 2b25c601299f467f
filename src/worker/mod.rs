//! The delivery worker: claim due deliveries, send them from the HTTP pool, record outcomes.
//! Only this (main) thread calls PostgreSQL; an SQL error is logged, its transaction aborted,
//! and the loop goes on (a claimed delivery whose outcome was not recorded is claimed again
//! when its lease expires: at least once, nothing lost).

use crate::http::{self};
use crate::request::Request;
use crate::{guc, wake};
use pgrx::bgworkers::*;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::time::{Duration, Instant};

mod claim;
mod flow;
mod housekeeping;
mod memory;
mod record;
mod senders;
mod settings;

use claim::*;
use flow::*;
use housekeeping::*;
use memory::*;
use record::*;
use senders::*;
use settings::*;

/// With `webhooks.database` set, its `webhooks.workers` workers; empty (the default), the
/// launcher, which starts them in every database with the extension (src/launcher.rs).
pub fn register() {
    if guc::string_value(&guc::DATABASE).trim().is_empty() {
        crate::launcher::register();
        return;
    }
    for i in 0..guc::WORKERS.get().clamp(1, 16) {
        BackgroundWorkerBuilder::new(&format!("webhooks worker {i}"))
            .set_type("webhooks worker")
            .set_function("webhooks_worker_main")
            .set_library("webhooks")
            .set_argument(Some(pg_sys::Datum::from(0u32)))
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            // Without a restart time a worker that exits once is gone for good.
            .set_restart_time(Some(Duration::from_secs(5)))
            .load();
    }
}

const EXTENSION_VERSION_SQL: &str = "SELECT e.extversion FROM pg_catalog.pg_extension e \
     WHERE e.extname OPERATOR(pg_catalog.=) 'webhooks'::pg_catalog.name";

/// The installed extension's version in this database, if any.
fn installed_version() -> Option<String> {
    in_transaction("looking for the extension", || {
        Spi::get_one::<String>(EXTENSION_VERSION_SQL).ok().flatten()
    })
    .flatten()
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn webhooks_worker_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // Started by the launcher for a database (its oid), or one of webhooks.database's own.
    let started_for = arg.value() as u32;
    let launched = started_for != 0;
    // As webhooks.worker_role (by the oid the launcher found for it), or the bootstrap superuser.
    if launched {
        let role = BackgroundWorker::get_extra()
            .parse::<u32>()
            .ok()
            .map(pg_sys::Oid::from);
        BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(started_for)), role);
    } else {
        let role = guc::string_value(&guc::WORKER_ROLE);
        let role = Some(role.trim()).filter(|r| !r.is_empty());
        BackgroundWorker::connect_worker_to_spi(Some(&guc::string_value(&guc::DATABASE)), role);
    }
    // Before the first statement: what the database's and the roles' settings said is
    // replaced by what the worker's SQL was written for (whose operators it calls above all).
    in_transaction("pinning the session's settings", guc::pin_worker_session);
    let db = in_transaction("naming the database", || {
        Spi::get_one::<String>("SELECT pg_catalog.current_database()::pg_catalog.text")
            .ok()
            .flatten()
    })
    .flatten()
    .unwrap_or_default();
    // A database without the extension needs no worker: the launcher's leaves it at once (and
    // is started again when a CREATE EXTENSION commits).
    let seen = wake::installs();
    if launched && installed_version().is_none() {
        wake::note_absent(unsafe { u32::from(pg_sys::MyDatabaseId) }, seen);
        unsafe { pg_sys::proc_exit(0) };
    }
    if !wake::register_worker(unsafe { u32::from(pg_sys::MyDatabaseId) }) {
        warning!(
            "webhooks worker: {} workers run already; none more for database \"{db}\"",
            wake::SLOTS
        );
        unsafe { pg_sys::proc_exit(0) };
    }
    // A role of its own must see every tenant's work: row-level security would hide it.
    let (sees_all, me) = in_transaction("looking at its role", || (sees_every_row(), role_name()))
        .unwrap_or((false, String::new()));
    if !sees_all {
        warning!(
            "webhooks worker: webhooks.worker_role \"{}\" has no BYPASSRLS: row-level security would hide every tenant's work from it, so nothing is delivered (ALTER ROLE {} BYPASSRLS)",
            guc::string_value(&guc::WORKER_ROLE).trim(),
            guc::string_value(&guc::WORKER_ROLE).trim()
        );
        wake::unregister_worker();
        unsafe { pg_sys::proc_exit(if launched { 0 } else { 1 }) };
    }
    log!("webhooks worker started on database \"{db}\" as role \"{me}\"");

    // Every statement of the worker is bounded: lock waits by lock_timeout (armed at the wait
    // itself, pinned above), statements by the timeout `in_transaction` arms itself (a
    // statement_timeout setting is only armed for client statements).

    let mut flow = Flow::new(Settings::load());
    let mut last_housekeeping = Instant::now() - Duration::from_secs(3600);
    let mut housekeeping_behind = false;
    let mut last_lease_scan = Instant::now() - Duration::from_secs(3600);
    let mut last_claim = Instant::now();
    let mut last_beat = Instant::now() - Duration::from_secs(1);

    // One flow, its states in turn on this thread (see `Flow`):
    //   claim   - while few requests wait here, lease due deliveries ahead (a small claim);
    //   send    - hand requests to idle sender threads, each endpoint and tenant within its share;
    //   collect - take answers as they arrive (each frees its endpoint's slot at once);
    //   record  - every few milliseconds, or every few hundred answers, in one statement;
    //   rest    - when nothing is queued or in flight, sleep until a commit or the poll interval.
    loop {
        // A reload applies now: requests in flight finish on the pool that sends them, new
        // ones use the new settings (and a new pool when connecting changed).
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            flow.reload(Settings::load());
        }
        if signals::stopping() || !unsafe { PostmasterIsAliveInternal() } {
            break;
        }
        if last_claim.elapsed() >= flow.settings.poll {
            flow.claim_forced = true;
        }
        if flow.retry_claim_at.is_some_and(|t| Instant::now() >= t) {
            flow.retry_claim_at = None;
            flow.claim_forced = true;
        }
        if flow.wants_claim() {
            last_claim = Instant::now();
            let scan_leases = last_lease_scan.elapsed() > Duration::from_secs(5);
            if scan_leases {
                last_lease_scan = Instant::now();
            }
            flow.claim(scan_leases);
        }
        if last_beat.elapsed() > Duration::from_millis(100) {
            last_beat = Instant::now();
            wake::beat(http::now_us());
        }
        // Pruning that could not finish in one pass (a backlog past the retention) goes on
        // every second until it has caught up.
        let every = if housekeeping_behind {
            Duration::from_secs(1)
        } else {
            flow.settings.retention.min(Duration::from_secs(60))
        };
        if last_housekeeping.elapsed() > every && !signals::stopping() {
            last_housekeeping = Instant::now();
            housekeeping_behind = housekeeping(&flow.settings);
        }
        if crate::handoff::pending() {
            record_sync_failures();
        }
        flow.trim_memory();
        if flow.idle() {
            // (answers are passed back before they stop counting as outstanding: take them)
            flow.collect(Duration::ZERO);
            flow.flush(true);
            report_statistics();
            // Recording freed room: claim again before resting.
            if flow.wants_claim() {
                continue;
            }
            // DROP EXTENSION: a launched worker leaves (its database may be dropped next).
            let seen = wake::installs();
            if launched && installed_version().is_none() {
                wake::note_absent(unsafe { u32::from(pg_sys::MyDatabaseId) }, seen);
                break;
            }
            let retry = flow
                .retry_claim_at
                .map(|t| t.saturating_duration_since(Instant::now()));
            if !signals::wait(retry.map_or(flow.settings.poll, |r| r.min(flow.settings.poll))) {
                break;
            }
            // (a wake of its own, not the retry's: contention starts anew)
            if retry.is_none() {
                flow.contended = 0;
            }
            flow.claim_forced = true;
            continue;
        }
        // Answers for a millisecond at most: a commit sets the latch, not this channel, so a
        // longer wait here would hold a new event back while others are in flight.
        if !flow.collect(Duration::from_millis(1)) {
            break;
        }
        flow.flush(false);
        if latch_was_set() {
            flow.claim_forced = true;
        }
        report_statistics();
    }
    flow.stop();
    report_statistics();
    wake::unregister_worker();
    drop(flow);
    log!("webhooks worker stopped");
    // Exit code 0 would unregister a static worker for good (pg_terminate_backend included);
    // with 1 the postmaster starts it again after the restart time, except during shutdown.
    // A launched worker is the launcher's to start again.
    unsafe { pg_sys::proc_exit(if launched { 0 } else { 1 }) };
}

/// Whether the role the worker runs as bypasses row-level security (a superuser does).
fn sees_every_row() -> bool {
    unsafe {
        let tup = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::AUTHOID as _,
            pg_sys::Datum::from(pg_sys::GetUserId()),
        );
        if tup.is_null() {
            return false;
        }
        let form = pg_sys::GETSTRUCT(tup) as *mut pg_sys::FormData_pg_authid;
        let yes = (*form).rolsuper || (*form).rolbypassrls;
        pg_sys::ReleaseSysCache(tup);
        yes
    }
}

fn role_name() -> String {
    unsafe {
        let n = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true);
        if n.is_null() {
            return String::new();
        }
        std::ffi::CStr::from_ptr(n).to_string_lossy().into_owned()
    }
}

/// Whether a commit (or a signal) set the worker's latch since it last looked; resets it.
fn latch_was_set() -> bool {
    unsafe {
        let latch = pg_sys::MyLatch;
        if latch.is_null() || (*latch).is_set == 0 {
            return false;
        }
        pg_sys::ResetLatch(latch);
        true
    }
}

/// SIGTERM, remembered: pgrx clears its flag when read (by `sigterm_received` and
/// `wait_latch` alike), so every read goes through here and the answer stays "stop".
mod signals {
    use pgrx::bgworkers::BackgroundWorker;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    static STOP: AtomicBool = AtomicBool::new(false);

    pub fn stopping() -> bool {
        if BackgroundWorker::sigterm_received() {
            STOP.store(true, Ordering::Relaxed);
        }
        STOP.load(Ordering::Relaxed)
    }

    /// Sleeps until woken, `d` passes or a stop is asked; false when stopping.
    pub fn wait(d: Duration) -> bool {
        if stopping() {
            return false;
        }
        if !BackgroundWorker::wait_latch(Some(d)) {
            STOP.store(true, Ordering::Relaxed);
        }
        !STOP.load(Ordering::Relaxed)
    }
}

/// Autovacuum and pg_stat_user_tables learn of a background worker's writes only when it
/// reports them itself (a client backend does it when idle).
fn report_statistics() {
    unsafe {
        if !pg_sys::IsTransactionState() {
            pg_sys::pgstat_report_stat(false);
        }
    }
}

// utils/timeout.h, which pgrx does not bind. STATEMENT_TIMEOUT is the fourth TimeoutId.
const STATEMENT_TIMEOUT: std::os::raw::c_int = 3;
unsafe extern "C-unwind" {
    fn enable_timeout_after(id: std::os::raw::c_int, delay_ms: std::os::raw::c_int);
    fn disable_timeout(id: std::os::raw::c_int, keep_indicator: bool);
    // storage/pmsignal.h: a worker busy sending must still notice a dead postmaster.
    fn PostmasterIsAliveInternal() -> bool;
}

/// Longest a worker transaction may run: a claim or a record is milliseconds; a plan gone
/// wrong or a wait not covered by lock_timeout becomes a logged, retried error.
const STATEMENT_TIMEOUT_MS: i32 = 60_000;

/// Runs `f` in its own transaction. An ERROR is logged and the transaction rolled back.
fn in_transaction<R>(
    what: &str,
    f: impl FnOnce() -> R + std::panic::UnwindSafe + std::panic::RefUnwindSafe,
) -> Option<R> {
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        // A statement_timeout setting is not armed for a worker's statements: arm it here.
        enable_timeout_after(STATEMENT_TIMEOUT, STATEMENT_TIMEOUT_MS);
    }
    let result = PgTryBuilder::new(|| {
        let r = f();
        // Inside the try: a commit can fail too (a serialization failure, a deferred check).
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        Some(r)
    })
    .catch_others(|e| {
        let msg = match &e {
            pg_sys::panic::CaughtError::PostgresError(r)
            | pg_sys::panic::CaughtError::ErrorReport(r)
            | pg_sys::panic::CaughtError::RustPanic { ereport: r, .. } => r.message().to_string(),
        };
        warning!("webhooks worker: {what} failed: {msg}");
        None
    })
    .execute();
    unsafe {
        disable_timeout(STATEMENT_TIMEOUT, false);
        // A cancel that arrived after the last check must not fire later, outside any
        // transaction (in wait_latch), where it would end the worker.
        pg_sys::QueryCancelPending = 0;
        if result.is_none() {
            pg_sys::AbortCurrentTransaction();
        }
    }
    result
}

/// The worker speaks its own version's schema only. Between installing a new library and
/// `ALTER EXTENSION webhooks UPDATE` the tables are the old version's: it waits, and says why
/// once, instead of failing every loop (or worse, half-working) against them.
fn extension_present(client: &SpiClient<'_>) -> bool {
    let installed = client
        .select(EXTENSION_VERSION_SQL, Some(1), &[])
        .ok()
        .and_then(|t| t.first().get::<String>(1).ok().flatten());
    let Some(installed) = installed else {
        return false;
    };
    let ours = env!("CARGO_PKG_VERSION");
    if installed == ours {
        return true;
    }
    thread_local! {
        static TOLD: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    TOLD.with(|told| {
        if *told.borrow() != installed {
            log!(
                "webhooks worker: the library is {ours} but the extension in this database is \
                 {installed}; nothing is sent until ALTER EXTENSION webhooks UPDATE"
            );
            *told.borrow_mut() = installed;
        }
    });
    false
}
