//! The delivery worker: claim due deliveries, send them from the HTTP pool, record outcomes.
//! Only this (main) thread calls PostgreSQL; an SQL error is logged, its transaction aborted,
//! and the loop goes on (a claimed delivery whose outcome was not recorded is claimed again
//! when its lease expires: at least once, nothing lost).

use crate::dispatch::Dispatcher;
use crate::envelope::{self, Event};
use crate::http::{self, Job, Outcome, Pool};
use crate::schedule::{self, AfterFailure, Jitter};
use crate::{guc, target, wake};
use pgrx::bgworkers::*;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

#[derive(Clone, PartialEq)]
struct Settings {
    schedule: Vec<Duration>,
    ttl: Duration,
    timeout: Duration,
    /// webhooks.retry_jitter.
    jitter: f64,
    poll: Duration,
    retention: Duration,
    dead_retention: Duration,
    disable_after: Duration,
    concurrency: usize,
    /// webhooks.worker_memory, in bytes.
    memory: i64,
    /// Workers serving this database: each holds an endpoint to its share of max_in_flight.
    workers: usize,
    batch_size: i64,
    policy: target::Policy,
    ca_file: String,
    proxy: String,
}

impl Settings {
    fn load() -> Settings {
        Settings {
            schedule: schedule::parse_schedule(&guc::string_value(&guc::RETRY_SCHEDULE))
                .unwrap_or_default(),
            jitter: guc::RETRY_JITTER.get(),
            ttl: guc::duration(&guc::TTL, Duration::from_secs(86_400)),
            timeout: guc::duration(&guc::TIMEOUT, Duration::from_secs(10)),
            poll: guc::duration(&guc::POLL_INTERVAL, Duration::from_secs(1))
                .max(Duration::from_millis(10)),
            retention: guc::duration(&guc::RETENTION, Duration::from_secs(7 * 86_400)),
            dead_retention: guc::duration(&guc::DEAD_RETENTION, Duration::from_secs(30 * 86_400)),
            disable_after: guc::duration(&guc::DISABLE_AFTER, Duration::from_secs(5 * 86_400)),
            concurrency: guc::CONCURRENCY.get().max(1) as usize,
            memory: i64::from(guc::WORKER_MEMORY.get().max(1)) * 1024,
            workers: guc::WORKERS.get().max(1) as usize,
            batch_size: guc::BATCH_SIZE.get().max(1) as i64,
            policy: guc::policy(),
            ca_file: crate::tls::file_stamp(&guc::string_value(&guc::TLS_CA_FILE)),
            proxy: guc::string_value(&guc::HTTP_PROXY),
        }
    }

    /// Whether the sender pool (its agent: timeout, guard, trust, proxy) must be rebuilt.
    fn needs_new_pool(&self, old: &Settings) -> bool {
        self.concurrency != old.concurrency
            || self.timeout != old.timeout
            || self.policy.allow_private != old.policy.allow_private
            || self.ca_file != old.ca_file
            || self.proxy != old.proxy
    }
}

/// One claimed delivery (or a batch of them for batched endpoints).
struct Claimed {
    delivery_id: i64,
    /// The claim's lease end in Unix microseconds: its token. An outcome is recorded only
    /// while the row still carries it, so a late answer never overwrites a newer claim.
    lease_us: i64,
    attempts: i32,
    event_id: String,
    event_type: String,
    occurred_us: i64,
    body: String,
    endpoint_id: String,
    url: String,
    secrets: Vec<String>,
    headers: Option<String>,
    batch_max: i32,
    client_cert: Option<(String, String)>,
    /// The endpoint's tenant (its share of the senders is counted per tenant) and cap.
    endpoint_tenant: String,
    max_in_flight: usize,
    traceparent: Option<String>,
    format: http::Format,
    /// What it costs the worker's memory while claimed (as the claim counted it).
    bytes: i64,
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

/// Endpoints whose client-certificate agents are kept, at most.
const MTLS_CACHE_MAX: usize = 256;

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

/// Failed synchronous sends whose transaction did not commit (src/handoff.rs), recorded so
/// that attempts, dead_letters and endpoint_health show them.
fn record_sync_failures() {
    in_transaction("recording failed synchronous sends", || {
        Spi::connect_mut(|client| {
            if !extension_present(client) {
                return;
            }
            for note in crate::handoff::drain() {
                if let Err(e) = client.update(
                    "SELECT webhooks_internal._sync_failure_record($1::pg_catalog.jsonb)",
                    None,
                    &[note.as_str().into()],
                ) {
                    warning!("webhooks worker: a failed synchronous send was not recorded: {e}");
                }
            }
        })
    });
}

/// The claim lives in SQL (`webhooks_internal._claim`) so the isolation specs exercise the same statement.
const CLAIM_SQL: &str =
    "SELECT * FROM webhooks_internal._claim($1::pg_catalog.int4, $2::pg_catalog.interval, $3, \
     $4::pg_catalog.int4, $5::pg_catalog.int4, $6::pg_catalog.text[], $7::pg_catalog.int4, $8::pg_catalog.int4, \
     $9::pg_catalog.text[], $10::pg_catalog.int8[], $11::pg_catalog.text[], $12::pg_catalog.int8[], \
     $13::pg_catalog.text[])";

const EXPAND_SQL: &str = "SELECT webhooks_internal._expand($1::pg_catalog.int4)";

/// Delivery rows written from fanouts per claim at most (about 50 ms of inserts).
const EXPAND_STEP: i32 = 10_000;

/// Requests an endpoint may have leased (queued here or in flight), in units of what it may
/// have in flight: the claim leases this far ahead so the senders never wait on the database.
const LEASE_AHEAD: i32 = 4;

/// What the sender side tells the claim, refreshed every FAST_EVERY: which endpoints answer fast
/// (they lease further ahead) and which have had work lately (the claim's look at the due rows
/// is sized by what those may take).
#[derive(Clone, Default)]
struct SenderView {
    fast: Vec<String>,
    active: Vec<String>,
}

/// How often the sender side tells the claim which endpoints answer fast.
const FAST_EVERY: Duration = Duration::from_millis(100);

/// Writes a slice of the deliveries of bulk publishes (fanouts), in a transaction of its own:
/// one that fails (logged) never stops the claim. True when more is left to write.
fn expand() -> bool {
    in_transaction("writing the deliveries of a bulk publish", || {
        Spi::connect_mut(|client| {
            if !extension_present(client) {
                return false;
            }
            client
                .update(EXPAND_SQL, Some(1), &[EXPAND_STEP.into()])
                .map(|t| t.first().get::<i32>(1).ok().flatten().unwrap_or(0) >= EXPAND_STEP)
                .unwrap_or(false)
        })
    })
    .unwrap_or(false)
}

/// What one claim asks for, beyond the settings.
struct Ask {
    scan_leases: bool,
    lease: Duration,
    senders: usize,
    view: SenderView,
    /// The workers of this database running now, and this one's rank among them.
    workers: usize,
    rank: usize,
    memory: Memory,
}

fn claim(settings: &Settings, ask: Ask) -> (Vec<Claimed>, bool) {
    let Ask {
        scan_leases,
        lease,
        senders,
        view,
        workers,
        rank,
        memory,
    } = ask;
    let lease = format!("{} milliseconds", lease.as_millis());
    Spi::connect_mut(|client| {
        if !extension_present(client) {
            return (Vec::new(), false);
        }
        let args = [
            settings.batch_size.into(),
            lease.as_str().into(),
            scan_leases.into(),
            (senders as i32).into(),
            LEASE_AHEAD.into(),
            view.fast.into(),
            (workers as i32).into(),
            (rank as i32).into(),
            view.active.into(),
            memory.limits.to_vec().into(),
            memory.ids.into(),
            memory.bytes.into(),
            memory.full.into(),
        ];
        let table = match client.update(CLAIM_SQL, None, &args) {
            Ok(t) => t,
            Err(e) => {
                warning!("webhooks worker: claim failed: {e}");
                return (Vec::new(), false);
            }
        };
        // (set by the claim when another worker's claim held some of its candidates; with one
        // worker there is nobody to wait for)
        let contended = workers > 1
            && client
                .select(
                    "SELECT pg_catalog.current_setting('webhooks_internal.claim_contended', true)",
                    Some(1),
                    &[],
                )
                .ok()
                .and_then(|t| t.first().get::<String>(1).ok().flatten())
                .is_some_and(|v| v == "on");
        let mut out = Vec::with_capacity(table.len());
        for row in table {
            let s = |i: usize| row.get::<String>(i).ok().flatten();
            let event_id = s(3).unwrap_or_default();
            let event_type = s(4).unwrap_or_default();
            let occurred_us = row.get::<i64>(7).ok().flatten().unwrap_or(0);
            let data = s(10).unwrap_or_else(|| "{}".into());
            let actor = s(9);
            let tenant = s(8);
            let format = http::Format::from_columns(
                s(23).as_deref().unwrap_or("standard-webhooks"),
                s(24).as_deref(),
                s(26).as_deref(),
            );
            let endpoint_id = s(11).unwrap_or_default();
            let attempts = row.get::<i32>(2).ok().flatten().unwrap_or(0);
            let (version, source) = (s(5), s(6));
            let event = Event {
                id: &event_id,
                event_type: &event_type,
                version: version.as_deref().unwrap_or("1"),
                source: source.as_deref().unwrap_or(""),
                occurred_at_us: occurred_us,
                tenant_id: tenant.as_deref(),
                actor_json: actor.as_deref(),
                data_json: &data,
            };
            // (the hmac-hex body names its attempt: made for the one this claim sends)
            let body = match format {
                http::Format::StandardWebhooks | http::Format::StandardWebhooksV1a => {
                    envelope::build(&event)
                }
                http::Format::HmacHex { .. } => {
                    envelope::build_hmac_hex(&event, s(25).as_deref(), attempts + 1, &endpoint_id)
                }
            };
            out.push(Claimed {
                delivery_id: row.get::<i64>(1).ok().flatten().unwrap_or(0),
                attempts,
                event_id,
                event_type,
                occurred_us,
                body,
                endpoint_id,
                url: s(12).unwrap_or_default(),
                secrets: [s(13), s(14)].into_iter().flatten().collect(),
                headers: s(15),
                batch_max: row.get::<i32>(16).ok().flatten().unwrap_or(1),
                client_cert: s(17).zip(s(18)),
                lease_us: row.get::<i64>(19).ok().flatten().unwrap_or(0),
                max_in_flight: row.get::<i32>(20).ok().flatten().unwrap_or(1).max(1) as usize,
                endpoint_tenant: s(21).unwrap_or_default(),
                traceparent: s(22),
                format,
                bytes: row.get::<i64>(27).ok().flatten().unwrap_or(1024),
            });
        }
        (out, contended)
    })
}

/// What one HTTP request carries: a single delivery, or several of a batched endpoint (in
/// publish order), with the request itself until it is handed to a sender.
struct Unit {
    members: Vec<Claimed>,
    job: Option<Job>,
    /// The pool it must go to: the one of the configuration it was claimed under.
    pool: Arc<Pool>,
    /// Last moment it may start: its lease must outlast the request by two timeouts.
    not_after: Instant,
    /// webhooks.timeout when it was claimed: after two of them (and a margin) unanswered, it is
    /// stuck.
    timeout: Duration,
}

/// Groups a claim's rows into requests: one per delivery, batched endpoints' rows by endpoint
/// in chunks of batch_max.
fn group(mut claimed: Vec<Claimed>) -> Vec<Vec<Claimed>> {
    // Publish order (the claim returns its rows in no order): an endpoint's requests are
    // queued, and sent, oldest event first.
    claimed.sort_by(|a, b| (&a.event_id, a.delivery_id).cmp(&(&b.event_id, b.delivery_id)));
    let mut out = Vec::new();
    let mut batches: HashMap<String, Vec<Claimed>> = HashMap::new();
    for c in claimed {
        if c.batch_max > 1 {
            batches.entry(c.endpoint_id.clone()).or_default().push(c);
        } else {
            out.push(vec![c]);
        }
    }
    for (_, mut rows) in batches {
        rows.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        let max = rows[0].batch_max.max(1) as usize;
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(max));
            out.push(std::mem::replace(&mut rows, rest));
        }
    }
    out
}

/// The sender pool and the agents of endpoints with client certificates, built from one
/// configuration. `client` is the error to record when the configuration cannot connect at
/// all (an unreadable `webhooks.tls_ca_file`): every attempt then fails saying so.
struct Connections {
    pool: Arc<Pool>,
    client: Result<http::ClientSettings, String>,
    /// endpoint id -> (hash of its certificate and key, its agent)
    mtls: std::cell::RefCell<HashMap<String, (u64, http::Client)>>,
}

impl Connections {
    fn new(s: &Settings, senders: &std::sync::mpsc::Sender<SenderInput>) -> Connections {
        let client = guc::client_settings(s.concurrency);
        if let Err(e) = &client {
            warning!("webhooks worker: {e}; deliveries fail until it is fixed");
        }
        let fallback = http::ClientSettings {
            timeout: s.timeout,
            allow_private: s.policy.allow_private,
            max_idle_per_host: s.concurrency,
            proxy: None,
            trust: Default::default(),
        };
        let to = std::sync::Mutex::new(senders.clone());
        let answers: Arc<dyn Fn(Outcome) -> bool + Send + Sync> = Arc::new(move |o| {
            to.lock()
                .map(|t| t.send(SenderInput::Answer(o)).is_ok())
                .unwrap_or(false)
        });
        let pool = Arc::new(Pool::new(
            s.concurrency,
            client.as_ref().unwrap_or(&fallback),
            answers,
        ));
        Connections {
            pool,
            client,
            mtls: Default::default(),
        }
    }

    /// The agent presenting an endpoint's client certificate, built once per certificate.
    fn mtls_agent(&self, endpoint: &str, pair: &(String, String)) -> Result<http::Client, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(pair, &mut h);
        let fp = std::hash::Hasher::finish(&h);
        if let Some((seen, a)) = self.mtls.borrow().get(endpoint) {
            if *seen == fp {
                return Ok(a.clone());
            }
        }
        let cert = crate::tls::client_cert(&pair.0, &pair.1)
            .map_err(|e| format!("endpoint client certificate unusable: {e}"))?;
        let a = http::agent(client, Some(cert));
        let mut cache = self.mtls.borrow_mut();
        // Endpoints come and go: a cache that only grows would keep their idle connections.
        if cache.len() >= MTLS_CACHE_MAX {
            cache.clear();
        }
        cache.insert(endpoint.to_string(), (fp, a.clone()));
        Ok(a)
    }
}

struct EndpointParts {
    keys: Arc<Vec<Vec<u8>>>,
    headers: Arc<Vec<(String, String)>>,
    agent: Option<http::Client>,
}

fn endpoint_parts(c: &Claimed, conn: &Connections) -> Result<EndpointParts, String> {
    if let Err(e) = &conn.client {
        return Err(e.clone());
    }
    let keys = c.format.keys(&c.secrets)?;
    let headers = crate::headers::parse_object(c.headers.as_deref())?;
    let agent = match &c.client_cert {
        Some(pair) => Some(conn.mtls_agent(&c.endpoint_id, pair)?),
        None => None,
    };
    Ok(EndpointParts {
        keys: Arc::new(keys),
        headers: Arc::new(headers),
        agent,
    })
}

/// Answers recorded in one statement, at most, and how long an answer may wait to be recorded:
/// each recorded answer frees its endpoint's room in the claim, so they are recorded as they
/// arrive, a few milliseconds apart, not when a whole claim has answered.
const RECORD_MAX: usize = 500;
const RECORD_EVERY: Duration = Duration::from_millis(5);

/// Claimed deliveries held by one worker at most (queued or in flight, counted in rows, a batch
/// being as many as it holds); their bodies are held to webhooks.worker_memory in bytes too
/// (`Memory`).
const MAX_OUTSTANDING: usize = 20_000;

/// What the claim is told of the worker's memory: [bytes it may still hold, of which for
/// endpoints that are not fast, the share of one endpoint, 1 when it holds nothing], and what
/// each endpoint holds. So an
/// endpoint holds at most a sixteenth of webhooks.worker_memory and slow and silent ones
/// together three quarters: the rest is always there for fast ones.
struct Memory {
    limits: [i64; 4],
    ids: Vec<String>,
    bytes: Vec<i64>,
    /// Endpoints that could not take one more row of the size they hold now.
    full: Vec<String>,
}

/// The bodies a worker holds, by endpoint: (bytes, rows).
#[derive(Default)]
struct Held {
    by_endpoint: HashMap<String, (i64, i64)>,
    total: i64,
}

impl Held {
    fn add(&mut self, members: &[Claimed], sign: i64) {
        for c in members {
            let e = self.by_endpoint.entry(c.endpoint_id.clone()).or_default();
            e.0 += sign * c.bytes;
            e.1 += sign;
            self.total += sign * c.bytes;
            if e.0 <= 0 || e.1 <= 0 {
                self.by_endpoint.remove(&c.endpoint_id);
            }
        }
        self.total = self.total.max(0);
    }

    fn for_claim(&self, budget: i64, fast: &[String]) -> Memory {
        let share = budget / 16;
        let (slow, slow_rows) = self
            .by_endpoint
            .iter()
            .filter(|(e, _)| !fast.contains(e))
            .fold((0i64, 0i64), |(b, r), (_, h)| (b + h.0, r + h.1));
        // Rows count too: slow endpoints together hold at most three quarters of what the
        // worker may hold, so that their requests (waiting for a silent receiver's timeout)
        // never leave fast endpoints without room to claim.
        let slow_room = if slow_rows >= (MAX_OUTSTANDING as i64) * 3 / 4 {
            0
        } else {
            budget * 3 / 4 - slow
        };
        let full = self
            .by_endpoint
            .iter()
            .filter(|(_, (bytes, rows))| bytes + bytes / (*rows).max(1) > share)
            .map(|(e, _)| e.clone())
            .collect();
        let (ids, bytes) = self
            .by_endpoint
            .iter()
            .map(|(e, b)| (e.clone(), b.0))
            .unzip();
        Memory {
            limits: [
                budget - self.total,
                slow_room,
                share,
                i64::from(self.total == 0),
            ],
            ids,
            bytes,
            full,
        }
    }
}

/// How long after a claim that found candidates another claim held it is tried again: that
/// claim has committed by then.
const CONTENDED_RETRY: Duration = Duration::from_millis(5);

/// How often outcomes that could not be recorded (rows someone holds) are tried again.
const CARRY_EVERY: Duration = Duration::from_secs(1);

/// What the worker's main thread (the only one that talks to PostgreSQL) tells the sender side.
enum ToSenders {
    /// Requests to queue: (endpoint, its tenant, its max_in_flight for this worker, request).
    Queue(Vec<(String, String, usize, Unit)>),
    /// A reload changed how to connect: every queued request comes back unsent.
    GiveBackQueued,
    /// A reload changed the number of senders.
    Resize(usize),
    /// Stopping: queued requests come back unsent, answers are awaited for half a second.
    Stop,
}

enum SenderInput {
    Main(ToSenders),
    Answer(Outcome),
}

/// What the sender side tells the main thread, to record.
enum FromSenders {
    Answered(Vec<Claimed>, Outcome),
    /// Never sent: pending again after the delay (none but when no DNS helper was free).
    Unsent(Vec<Claimed>, Duration),
    /// Given up as stuck (far past every timeout): nothing to record, its lease lapses; its
    /// bodies are no longer held.
    Dropped(Vec<Claimed>),
    Stopped,
}

/// The sender side, on a thread of its own that never calls into PostgreSQL: per-endpoint
/// queues (`dispatch`), handed to the pool's threads as they come free and answers passed back
/// as they arrive. So the senders never wait for the main thread's claims and records, and the
/// main thread never waits for a sender.
fn run_senders(
    input: std::sync::mpsc::Receiver<SenderInput>,
    out: std::sync::mpsc::Sender<FromSenders>,
    senders: usize,
    hungry: Arc<std::sync::atomic::AtomicBool>,
    outstanding: Arc<std::sync::atomic::AtomicUsize>,
    view: Arc<std::sync::Mutex<SenderView>>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut queued: Dispatcher<Unit> = Dispatcher::new(senders);
    let mut in_flight: HashMap<usize, (String, Unit, Instant)> = HashMap::new();
    let mut next_tag = 0usize;
    let mut stopping: Option<Instant> = None;
    let mut last_sweep = Instant::now();
    let mut last_fast = Instant::now();
    let finished = |n: usize| {
        outstanding.fetch_sub(n, Relaxed);
    };
    loop {
        let wait = if stopping.is_some() {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(200)
        };
        let first = match input.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut next = first;
        while let Some(msg) = next.take() {
            match msg {
                SenderInput::Main(ToSenders::Queue(units)) => {
                    for (ep, tenant, cap, unit) in units {
                        queued.push(&ep, &tenant, cap, unit);
                    }
                }
                SenderInput::Main(ToSenders::GiveBackQueued) => {
                    for u in queued.take_all_queued() {
                        let rows = u.members.len();
                        let _ = out.send(FromSenders::Unsent(u.members, Duration::ZERO));
                        finished(rows);
                    }
                }
                SenderInput::Main(ToSenders::Resize(n)) => queued.resize(n),
                SenderInput::Main(ToSenders::Stop) => {
                    for u in queued.take_all_queued() {
                        let rows = u.members.len();
                        let _ = out.send(FromSenders::Unsent(u.members, Duration::ZERO));
                        finished(rows);
                    }
                    for (_, u, _) in in_flight.values() {
                        u.pool.close();
                    }
                    stopping = Some(Instant::now() + Duration::from_millis(500));
                }
                SenderInput::Answer(o) => {
                    if let Some((ep, unit, at)) = in_flight.remove(&o.tag) {
                        queued.done(&ep, Some(at));
                        let pause = o
                            .retry_after
                            .as_deref()
                            .and_then(|v| schedule::retry_after(v, http::now_us() / 1_000_000));
                        let pushback = pause.is_some_and(|p| !p.is_zero()) || o.status == Some(410);
                        let rows = unit.members.len();
                        if o.error.as_deref() == Some(http::UNSENT) {
                            let _ = out.send(FromSenders::Unsent(unit.members, Duration::ZERO));
                        } else if o.error.as_deref() == Some(http::UNSENT_BUSY) {
                            let _ =
                                out.send(FromSenders::Unsent(unit.members, Duration::from_secs(1)));
                        } else {
                            let _ = out.send(FromSenders::Answered(unit.members, o));
                        }
                        // (passed back before it stops counting: the main thread takes
                        // everything once nothing is outstanding)
                        finished(rows);
                        // A receiver that asked for a pause (Retry-After) or is gone (410):
                        // what waits here for it goes back now, to be deferred or parked.
                        if pushback {
                            for u in queued.take_queued(&ep) {
                                let rows = u.members.len();
                                let _ = out.send(FromSenders::Unsent(u.members, Duration::ZERO));
                                finished(rows);
                            }
                        }
                    }
                }
            }
            next = input.try_recv().ok();
        }
        // Every request the pool takes is answered (a success, an error, its timeout, or "not
        // sent"), so only a sender stuck beyond every bound is given up here: far past the
        // timeout, not merely late on a loaded machine (its answer would then be dropped and
        // the delivery sent again after its lease).
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = Instant::now();
            let stuck: Vec<usize> = in_flight
                .iter()
                .filter(|(_, (_, u, at))| at.elapsed() > u.timeout * 10 + Duration::from_secs(60))
                .map(|(tag, _)| *tag)
                .collect();
            for tag in stuck {
                if let Some((ep, unit, at)) = in_flight.remove(&tag) {
                    queued.done(&ep, Some(at));
                    let rows = unit.members.len();
                    let _ = out.send(FromSenders::Dropped(unit.members));
                    finished(rows);
                }
            }
        }
        if stopping.is_none() {
            while let Some((ep, mut unit)) = queued.next_unit() {
                match unit.job.take() {
                    Some(mut job) if Instant::now() < unit.not_after => {
                        job.tag = next_tag;
                        next_tag += 1;
                        let tag = job.tag;
                        let pool = Arc::clone(&unit.pool);
                        in_flight.insert(tag, (ep.clone(), unit, queued.handed_out()));
                        if !pool.submit(job) {
                            if let Some((_, unit, _)) = in_flight.remove(&tag) {
                                queued.done(&ep, None);
                                let o = Outcome {
                                    error: Some("internal: no sender thread available".into()),
                                    started_at_us: http::now_us(),
                                    ..Default::default()
                                };
                                let rows = unit.members.len();
                                let _ = out.send(FromSenders::Answered(unit.members, o));
                                finished(rows);
                            }
                        }
                    }
                    // Not started while its lease still covers it: given back, never sent late.
                    _ => {
                        queued.done(&ep, None);
                        let rows = unit.members.len();
                        let _ = out.send(FromSenders::Unsent(unit.members, Duration::ZERO));
                        finished(rows);
                    }
                }
            }
        }
        hungry.store(queued.hungry(), Relaxed);
        if last_fast.elapsed() >= FAST_EVERY {
            last_fast = Instant::now();
            if let Ok(mut v) = view.lock() {
                *v = SenderView {
                    fast: queued.fast_endpoints(),
                    active: queued.active_endpoints(),
                };
            }
        }
        if stopping.is_some_and(|t| in_flight.is_empty() || Instant::now() >= t) {
            let _ = out.send(FromSenders::Stopped);
            return;
        }
    }
}

/// The worker's deliveries between the claim and the record, as the main thread sees them:
/// it claims and builds requests, hands them to the sender side, and records what comes back.
struct Flow {
    settings: Settings,
    conn: Connections,
    to_senders: std::sync::mpsc::Sender<SenderInput>,
    from_senders: std::sync::mpsc::Receiver<FromSenders>,
    /// Whether the sender side could use more work; requests there at all (queued or in
    /// flight).
    hungry: Arc<std::sync::atomic::AtomicBool>,
    outstanding: Arc<std::sync::atomic::AtomicUsize>,
    /// The sender side's view of the endpoints, for the claim (`SenderView`).
    view: Arc<std::sync::Mutex<SenderView>>,
    answered: Record,
    answered_since: Option<Instant>,
    carry: Record,
    last_carry: Instant,
    /// (delivery id, lease, after how many milliseconds) of claimed deliveries never sent: back
    /// to pending.
    unsent: Vec<(i64, i64, i64)>,
    claim_wanted: bool,
    claim_forced: bool,
    /// Claims in a row that found candidates another claim held (a second worker's, or a
    /// session's lock, which may last: a few retries, then the next wake as usual), and when to
    /// claim again.
    contended: u32,
    retry_claim_at: Option<Instant>,
    /// Workers of this database running now (webhooks.workers at most): each leases and sends
    /// its part of an endpoint's allowance, so one left alone takes the whole of it.
    live_workers: usize,
    /// This worker's rank among them (by pid): which part of each allowance is its own.
    rank: usize,
    /// An answer that pauses or disables its endpoint waits to be recorded.
    urgent: bool,
    /// The bodies of what it has claimed and not yet had back.
    held: Held,
    claimed_since_trim: i64,
    last_trim: Instant,
}

impl Flow {
    fn new(settings: Settings) -> Flow {
        use std::sync::atomic::AtomicUsize;
        let (to_senders, input) = std::sync::mpsc::channel::<SenderInput>();
        let (out, from_senders) = std::sync::mpsc::channel::<FromSenders>();
        let conn = Connections::new(&settings, &to_senders);
        let hungry = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let outstanding = Arc::new(AtomicUsize::new(0));
        let view = Arc::new(std::sync::Mutex::new(SenderView::default()));
        let (r, o, f) = (
            Arc::clone(&hungry),
            Arc::clone(&outstanding),
            Arc::clone(&view),
        );
        let senders = conn.pool.size();
        // (spawned with every signal blocked: PostgreSQL's handlers run on this thread only)
        let spawned = http::with_signals_blocked(|| {
            std::thread::Builder::new()
                .name("webhooks-dispatch".into())
                .spawn(move || run_senders(input, out, senders, r, o, f))
        });
        if let Err(e) = spawned {
            error!("webhooks worker: cannot start its dispatch thread: {e}");
        }
        Flow {
            settings,
            conn,
            to_senders,
            from_senders,
            hungry,
            outstanding,
            view,
            answered: Record::default(),
            answered_since: None,
            carry: Record::default(),
            last_carry: Instant::now(),
            unsent: Vec::new(),
            claim_wanted: true,
            claim_forced: true,
            contended: 0,
            retry_claim_at: None,
            live_workers: 1,
            rank: 0,
            urgent: false,
            held: Held::default(),
            claimed_since_trim: 0,
            last_trim: Instant::now(),
        }
    }

    /// Large bodies come and go (each claim copies them a few times): the allocator keeps what
    /// was freed unless asked to give it back, so the worker's memory stayed at its high-water
    /// mark, well above what it holds. Once a second at most, after claims that brought large
    /// bodies.
    fn trim_memory(&mut self) {
        if self.claimed_since_trim < 16 << 20 || self.last_trim.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.claimed_since_trim = 0;
        self.last_trim = Instant::now();
        unsafe { libc::malloc_trim(0) };
    }

    fn tell(&self, m: ToSenders) {
        let _ = self.to_senders.send(SenderInput::Main(m));
    }

    fn reload(&mut self, fresh: Settings) {
        if fresh.needs_new_pool(&self.settings) {
            // What waits was built for the old way of connecting: given back, claimed again
            // under the new one. Requests under way finish on their pool, which ends with them.
            self.tell(ToSenders::GiveBackQueued);
            self.conn = Connections::new(&fresh, &self.to_senders);
            self.tell(ToSenders::Resize(self.conn.pool.size()));
        }
        self.settings = fresh;
        self.claim_forced = true;
    }

    fn idle(&self) -> bool {
        self.outstanding.load(std::sync::atomic::Ordering::Relaxed) == 0
    }

    fn senders(&self) -> usize {
        self.conn.pool.size().max(1)
    }

    /// A claim goes when new work may be due (a commit woke the worker, the poll interval
    /// passed: `claim_forced`), or when answers freed room and the senders could use more.
    /// An unreadable webhooks.tls_ca_file: claim nothing (attempts would only fail and use up
    /// their retries) until the file or the setting is fixed and reloaded.
    fn wants_claim(&self) -> bool {
        self.conn.client.is_ok()
            && self.outstanding.load(std::sync::atomic::Ordering::Relaxed) < MAX_OUTSTANDING
            && self.held.total < self.settings.memory
            && (self.claim_forced
                || (self.claim_wanted && self.hungry.load(std::sync::atomic::Ordering::Relaxed)))
    }

    fn give_back(&mut self, members: &[Claimed], after: Duration) {
        self.held.add(members, -1);
        let ms = after.as_millis() as i64;
        self.unsent
            .extend(members.iter().map(|c| (c.delivery_id, c.lease_us, ms)));
    }

    fn note_answer(&mut self, members: &[Claimed], o: &Outcome) {
        self.held.add(members, -1);
        // A pause or a 410 is recorded before the next claim, which would otherwise send the
        // endpoint more.
        if o.retry_after.is_some() || o.status == Some(410) {
            self.urgent = true;
        }
        let now = http::now_us();
        for c in members {
            self.answered.push(c, o, &self.settings, now);
        }
        self.answered_since.get_or_insert_with(Instant::now);
    }

    /// Leases due deliveries and hands their requests to the sender side.
    fn claim(&mut self, scan_leases: bool) {
        self.claim_wanted = false;
        self.claim_forced = false;
        // Leased ahead: a request may wait while its endpoint's earlier ones are sent (at most
        // LEASE_AHEAD rounds of its max_in_flight, each within the timeout), then take two
        // timeouts (a proxied target is resolved first). The lease outlasts all of that, and a
        // request not started in time is given back instead of sent: the lease scan never
        // claims a row whose request may still be on the wire. (A fast endpoint leases four
        // times as many rounds, each a fraction of a second; if it turns slow meanwhile, what
        // it cannot start in time goes back.)
        let t = self.settings.timeout;
        let lease = t * (LEASE_AHEAD as u32 + 2) + Duration::from_secs(30);
        let not_after = Instant::now() + lease - t * 2 - Duration::from_secs(5);
        let senders = self.senders();
        let settings = self.settings.clone();
        // (several workers: each leases its own part of an endpoint's allowance, so one that
        // finds the endpoint fast leases further ahead within its part only)
        let view = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        // Deliveries of bulk publishes are written first, a slice per claim, so that what a
        // large statement published never holds back the claim for long; with more left, the
        // next claim goes on with them without waiting.
        self.claim_forced = expand();
        // (its rank among the workers of this database, by pid: which part of each endpoint's
        // allowance is its own)
        let mut pids: Vec<i32> = wake::workers_of(unsafe { u32::from(pg_sys::MyDatabaseId) })
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        pids.sort_unstable();
        let me = unsafe { pg_sys::MyProcPid };
        self.live_workers = pids.len().clamp(1, self.settings.workers.max(1));
        self.rank = pids.iter().position(|p| *p == me).unwrap_or(0) % self.live_workers;
        let (workers, rank) = (self.live_workers, self.rank);
        let memory = self.held.for_claim(self.settings.memory, &view.fast);
        let ask = Ask {
            scan_leases,
            lease,
            senders,
            view,
            workers,
            rank,
            memory,
        };
        let (claimed, contended) =
            in_transaction("claiming deliveries", || claim(&settings, ask)).unwrap_or_default();
        self.held.add(&claimed, 1);
        let claimed_bytes: i64 = claimed.iter().map(|c| c.bytes).sum();
        self.claimed_since_trim += claimed_bytes;
        // Another worker's claim held some of what this one chose: claim again shortly, once
        // that claim has committed (its rows are then in flight, out of the way; at once, the
        // same head would be chosen and skipped again).
        self.contended = if contended {
            self.contended.saturating_add(1)
        } else {
            0
        };
        self.retry_claim_at =
            (contended && self.contended <= 3).then(|| Instant::now() + CONTENDED_RETRY);
        if claimed.is_empty() {
            return;
        }
        // A full claim means more is probably due: claim again as soon as there is room.
        self.claim_wanted = claimed.len() as i64 >= self.settings.batch_size;
        let mut parts: HashMap<String, Result<EndpointParts, String>> = HashMap::new();
        let mut units = Vec::new();
        for mut members in group(claimed) {
            let first = &members[0];
            let refused = |msg: String| Outcome {
                error: Some(msg),
                started_at_us: http::now_us(),
                ..Default::default()
            };
            if let Err(e) = target::check_url(&first.url, self.settings.policy) {
                let o = refused(format!("refused: {e}"));
                self.note_answer(&members, &o);
                continue;
            }
            let p = match parts
                .entry(first.endpoint_id.clone())
                .or_insert_with(|| endpoint_parts(first, &self.conn))
            {
                Ok(p) => p,
                Err(e) => {
                    let o = refused(e.clone());
                    self.note_answer(&members, &o);
                    continue;
                }
            };
            let (msg_id, body) = if first.batch_max > 1 {
                // A batch is its own message, named by its contents: the same events give the
                // same webhook-id (receivers dedupe a resent batch), different events another.
                let ids: Vec<&str> = members.iter().map(|c| c.event_id.as_str()).collect();
                let id = envelope::batch_id(&ids);
                let bodies: Vec<String> = members
                    .iter_mut()
                    .map(|c| std::mem::take(&mut c.body))
                    .collect();
                (id, envelope::build_batch(&bodies))
            } else {
                (first.event_id.clone(), std::mem::take(&mut members[0].body))
            };
            let first = &members[0];
            let job = Job {
                tag: 0,
                url: first.url.clone(),
                msg_id,
                event_type: first.event_type.clone(),
                attempt: first.attempts + 1,
                body: Arc::new(body),
                keys: Arc::clone(&p.keys),
                headers: Arc::clone(&p.headers),
                traceparent: first.traceparent.clone(),
                format: first.format.clone(),
                agent: p.agent.clone(),
                not_after: Some(not_after),
            };
            let (ep, tenant, cap) = (
                first.endpoint_id.clone(),
                first.endpoint_tenant.clone(),
                // (its part of max_in_flight, as the claim counted it; at least one, should
                // the workers have changed since the claim)
                (crate::lease::part(
                    first.max_in_flight as u32,
                    self.live_workers as u32,
                    self.rank as u32,
                    &first.endpoint_id,
                ) as usize)
                    .max(1),
            );
            units.push((
                ep,
                tenant,
                cap,
                Unit {
                    members,
                    job: Some(job),
                    pool: Arc::clone(&self.conn.pool),
                    not_after,
                    timeout: self.settings.timeout,
                },
            ));
        }
        if units.is_empty() {
            return;
        }
        let rows = units.iter().map(|(_, _, _, u)| u.members.len()).sum();
        self.outstanding
            .fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
        self.tell(ToSenders::Queue(units));
    }

    /// Takes what the sender side passed back within `wait` (returns at the first, with
    /// whatever else is there by then). False when the sender side has stopped.
    fn collect(&mut self, wait: Duration) -> bool {
        let first = match self.from_senders.recv_timeout(wait) {
            Ok(m) => m,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return true,
            // The sender side is gone (it cannot panic on input, but if it did): stop, and be
            // started again with a fresh one.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                warning!("webhooks worker: its sender thread ended; restarting");
                return false;
            }
        };
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                FromSenders::Answered(members, o) => self.note_answer(&members, &o),
                FromSenders::Unsent(members, after) => self.give_back(&members, after),
                FromSenders::Dropped(members) => self.held.add(&members, -1),
                FromSenders::Stopped => return false,
            }
            next = self.from_senders.try_recv().ok();
        }
        true
    }

    /// Records the answers when enough wait or the oldest has waited long enough (or `now`),
    /// and gives back what was never sent.
    fn flush(&mut self, now: bool) {
        let n = self.answered.ids.len();
        let due = n > 0
            && (now
                || self.urgent
                || n >= RECORD_MAX
                || self.idle()
                || self
                    .answered_since
                    .is_some_and(|t| t.elapsed() >= RECORD_EVERY));
        // Given back first: an answer recorded next may disable or pause their endpoint, which
        // then parks or defers them with its other pending work.
        if !self.unsent.is_empty() && (due || now || self.idle()) {
            let unsent = std::mem::take(&mut self.unsent);
            let ids: Vec<i64> = unsent.iter().map(|u| u.0).collect();
            let leases: Vec<i64> = unsent.iter().map(|u| u.1).collect();
            let after: Vec<i64> = unsent.iter().map(|u| u.2).collect();
            let done = in_transaction("giving back unsent deliveries", || {
                Spi::connect_mut(|client| {
                    client
                        .update(
                            "SELECT webhooks_internal._release($1, $2, $3)",
                            None,
                            &[ids.into(), leases.into(), after.into()],
                        )
                        .map_err(|e| {
                            warning!("webhooks worker: giving back unsent deliveries failed: {e}")
                        })
                        .is_ok()
                })
            });
            // Tried again with the next flush (their leases end anyway).
            if done != Some(true) && unsent.len() < CARRY_MAX {
                self.unsent = unsent;
            }
            self.claim_wanted = true;
        }
        // (never more often than CARRY_EVERY, idle or not: rows an open transaction holds are
        // not asked for in a loop)
        let retry_carry = !self.carry.ids.is_empty() && self.last_carry.elapsed() >= CARRY_EVERY;
        if due || retry_carry {
            let mut rec = std::mem::take(&mut self.answered);
            self.answered_since = None;
            self.urgent = false;
            if retry_carry {
                self.last_carry = Instant::now();
                rec.append(std::mem::take(&mut self.carry));
            }
            save(rec, &mut self.carry, &self.settings);
            // Recorded answers free their endpoints' room in the claim.
            if due {
                self.claim_wanted = true;
            }
        }
    }

    /// Stopping: nothing new starts, what waits goes back to the table at once (no lease to
    /// wait out), answers that come within half a second are recorded, and the rest keep
    /// their lease.
    fn stop(&mut self) {
        self.tell(ToSenders::Stop);
        self.conn.pool.close();
        let cut = Instant::now() + Duration::from_secs(1);
        while Instant::now() < cut && self.collect(Duration::from_millis(50)) {}
        self.flush(true);
    }
}

/// Outcomes kept for a later try, at most (beyond that the leases take over).
const CARRY_MAX: usize = 10_000;

/// Records outcomes; those of rows someone else holds locked (an admin's open transaction)
/// go back into `carry` and are recorded on a later loop instead of being waited for, and so
/// does everything when the record transaction fails (a lock on the table, a cancel). Each
/// outcome is only good while its claim's lease holds: the token makes a late try harmless.
fn save(rec: Record, carry: &mut Record, settings: &Settings) {
    if rec.ids.is_empty() {
        return;
    }
    let kept = rec.clone();
    let disable_after = format!("{} milliseconds", settings.disable_after.as_millis());
    // (appended: outcomes already waiting there stay)
    match in_transaction("recording outcomes", || rec.save(&disable_after)).flatten() {
        Some(busy) if busy.is_empty() => {}
        Some(busy) => carry.append(kept.only(&busy)),
        None => carry.append(kept),
    }
    if carry.ids.len() > CARRY_MAX {
        warning!(
            "webhooks worker: {} outcomes could not be recorded; their deliveries are sent again after their lease",
            carry.ids.len()
        );
        *carry = Record::default();
    }
}

#[derive(Default, Clone)]
struct Record {
    ids: Vec<i64>,
    /// Receivers that pushed back: how long their endpoint pauses (microseconds).
    pause_us: Vec<Option<i64>>,
    lease_us: Vec<i64>,
    status: Vec<String>,
    attempt: Vec<i32>,
    code: Vec<Option<i32>>,
    error: Vec<Option<String>>,
    retry_in_us: Vec<Option<i64>>,
    started_us: Vec<i64>,
    duration_ms: Vec<f64>,
    body: Vec<Option<String>>,
}

impl Record {
    fn push(&mut self, c: &Claimed, o: &Outcome, s: &Settings, now_us: i64) {
        let attempt = c.attempts + 1;
        let mut err = o.error.clone().or_else(|| (!o.ok()).then(|| o.describe()));
        let age = Duration::from_micros((now_us - c.occurred_us).max(0) as u64);
        // Throttled with a Retry-After: the whole endpoint pauses (at most for the TTL).
        let pause = o
            .retry_after
            .as_deref()
            .and_then(|v| schedule::retry_after(v, now_us / 1_000_000))
            .map(|p| p.min(s.ttl));
        // (a 410 is a failure like any other here: _record disables its endpoint, which
        // parks this delivery with the others while it has attempts left)
        let (status, retry) = if o.ok() {
            ("succeeded", None)
        } else {
            let jitter = Jitter::of(s.jitter, c.delivery_id, attempt);
            let next = match pause {
                Some(p) => schedule::after_pushback(attempt, &s.schedule, age, s.ttl, p, jitter),
                None => schedule::after_failure(attempt, &s.schedule, age, s.ttl, jitter),
            };
            match next {
                AfterFailure::RetryIn(us) => ("pending", Some(us)),
                AfterFailure::Dead(why) => {
                    if let Some(e) = err.as_mut() {
                        e.push_str(&format!(" ({why})"));
                    }
                    ("dead", None)
                }
            }
        };
        self.ids.push(c.delivery_id);
        self.pause_us.push(pause.map(|p| p.as_micros() as i64));
        self.lease_us.push(c.lease_us);
        self.status.push(status.into());
        self.attempt.push(attempt);
        self.code.push(o.status.map(i32::from));
        self.error.push(err);
        self.retry_in_us.push(retry);
        self.started_us.push(o.started_at_us);
        self.duration_ms.push(o.duration_ms);
        self.body
            .push((!o.body.is_empty()).then(|| o.body.replace('\0', "")));
    }

    fn append(&mut self, mut o: Record) {
        self.ids.append(&mut o.ids);
        self.pause_us.append(&mut o.pause_us);
        self.lease_us.append(&mut o.lease_us);
        self.status.append(&mut o.status);
        self.attempt.append(&mut o.attempt);
        self.code.append(&mut o.code);
        self.error.append(&mut o.error);
        self.retry_in_us.append(&mut o.retry_in_us);
        self.started_us.append(&mut o.started_us);
        self.duration_ms.append(&mut o.duration_ms);
        self.body.append(&mut o.body);
    }

    /// The entries of `ids` only.
    fn only(self, ids: &[i64]) -> Record {
        let keep: std::collections::HashSet<i64> = ids.iter().copied().collect();
        let mut out = Record::default();
        for i in 0..self.ids.len() {
            if keep.contains(&self.ids[i]) {
                out.ids.push(self.ids[i]);
                out.pause_us.push(self.pause_us[i]);
                out.lease_us.push(self.lease_us[i]);
                out.status.push(self.status[i].clone());
                out.attempt.push(self.attempt[i]);
                out.code.push(self.code[i]);
                out.error.push(self.error[i].clone());
                out.retry_in_us.push(self.retry_in_us[i]);
                out.started_us.push(self.started_us[i]);
                out.duration_ms.push(self.duration_ms[i]);
                out.body.push(self.body[i].clone());
            }
        }
        out
    }

    /// Returns the ids whose rows were locked by someone else.
    fn save(self, disable_after: &str) -> Option<Vec<i64>> {
        Spi::connect_mut(|client| {
            let args = [
                self.ids.into(),
                self.lease_us.into(),
                self.status.into(),
                self.attempt.into(),
                self.code.into(),
                self.error.into(),
                self.retry_in_us.into(),
                self.started_us.into(),
                self.duration_ms.into(),
                self.body.into(),
                self.pause_us.into(),
                disable_after.into(),
            ];
            match client.update(RECORD_SQL, None, &args) {
                Ok(t) => t
                    .first()
                    .get::<Vec<i64>>(1)
                    .ok()
                    .flatten()
                    .or(Some(Vec::new())),
                Err(e) => {
                    warning!("webhooks worker: recording outcomes failed: {e}");
                    None
                }
            }
        })
    }
}

const RECORD_SQL: &str =
    "SELECT webhooks_internal._record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
     $12::pg_catalog.interval)";

/// Rows one pruning statement deletes at most, and how long one housekeeping pass may run
/// before the worker goes back to delivering (the pass goes on a second later).
const PRUNE_STEP: i32 = 5_000;
const HOUSEKEEPING_BUDGET: Duration = Duration::from_millis(250);

/// Runs one step of housekeeping (a function of sql/housekeeping.sql) in its own transaction,
/// with its own timeout, and returns how many rows it changed; a failure is logged and the
/// next step runs anyway.
fn chore(what: &str, sql: &str, args: &[pgrx::datum::DatumWithOid]) -> i64 {
    in_transaction(what, || {
        Spi::connect_mut(|client| {
            if !extension_present(client) {
                return 0;
            }
            match client.update(sql, Some(1), args) {
                Ok(t) => t.first().get::<i64>(1).ok().flatten().unwrap_or(0),
                Err(e) => {
                    warning!("webhooks worker: {what} failed: {e}");
                    0
                }
            }
        })
    })
    .unwrap_or(0)
}

/// Prunes history past the retention in steps of PRUNE_STEP rows, each its own transaction,
/// until done or out of budget; then the smaller chores. True when rows were left to prune.
fn housekeeping(settings: &Settings) -> bool {
    let keep = format!("{} seconds", settings.retention.as_secs());
    let keep_dead = format!("{} seconds", settings.dead_retention.as_secs());
    // Event ids are ULIDs: every event published before the cutoff has a smaller id, so the
    // primary key finds them (no index on occurred_at on the publish path).
    let cutoff_ms = ((http::now_us() / 1000) as u64)
        .saturating_sub(settings.retention.min(settings.dead_retention).as_millis() as u64);
    let before = format!("evt_{}", crate::ids::ulid(cutoff_ms, [0; 10]));
    let started = Instant::now();
    let mut behind = false;
    let prune: [(&str, &str, &str); 3] = [
        (
            "pruning succeeded deliveries",
            "SELECT webhooks_internal._prune_succeeded($1::pg_catalog.interval, $2)",
            keep.as_str(),
        ),
        (
            "pruning dead deliveries",
            "SELECT webhooks_internal._prune_dead($1::pg_catalog.interval, $2)",
            keep_dead.as_str(),
        ),
        (
            "pruning events",
            "SELECT webhooks_internal._prune_events($1, $2)",
            before.as_str(),
        ),
    ];
    for (what, sql, arg) in prune {
        loop {
            if chore(what, sql, &[arg.into(), PRUNE_STEP.into()]) < PRUNE_STEP as i64 {
                break;
            }
            if started.elapsed() > HOUSEKEEPING_BUDGET || signals::stopping() {
                behind = true;
                break;
            }
        }
    }
    chore(
        "releasing parked deliveries",
        "SELECT webhooks_internal._release_parked($1)",
        &[PRUNE_STEP.into()],
    );
    chore(
        "deleting orphans",
        "SELECT webhooks_internal._delete_orphans($1)",
        &[PRUNE_STEP.into()],
    );
    chore(
        "removing bindings of dropped roles",
        "SELECT webhooks_internal._forget_dropped_roles()",
        &[],
    );
    behind
}
