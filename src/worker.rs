//! The delivery worker: claim due deliveries, send them from the HTTP pool, record outcomes.
//! Only this (main) thread calls PostgreSQL; an SQL error is logged, its transaction aborted,
//! and the loop goes on (a claimed delivery whose outcome was not recorded is claimed again
//! when its lease expires: at least once, nothing lost).

use crate::envelope::{self, Event};
use crate::http::{self, Job, Outcome, Pool};
use crate::schedule::{self, AfterFailure};
use crate::{guc, signing, target, wake};
use pgrx::bgworkers::*;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn register() {
    BackgroundWorkerBuilder::new("webhooks worker")
        .set_type("webhooks worker")
        .set_function("webhooks_worker_main")
        .set_library("webhooks")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        // Without a restart time a worker that exits once is gone for good.
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[derive(Clone, PartialEq)]
struct Settings {
    schedule: Vec<Duration>,
    ttl: Duration,
    timeout: Duration,
    poll: Duration,
    retention: Duration,
    dead_retention: Duration,
    disable_after: Duration,
    concurrency: usize,
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
            ttl: guc::duration(&guc::TTL, Duration::from_secs(86_400)),
            timeout: guc::duration(&guc::TIMEOUT, Duration::from_secs(10)),
            poll: guc::duration(&guc::POLL_INTERVAL, Duration::from_secs(1))
                .max(Duration::from_millis(10)),
            retention: guc::duration(&guc::RETENTION, Duration::from_secs(7 * 86_400)),
            dead_retention: guc::duration(&guc::DEAD_RETENTION, Duration::from_secs(30 * 86_400)),
            disable_after: guc::duration(&guc::DISABLE_AFTER, Duration::from_secs(5 * 86_400)),
            concurrency: guc::CONCURRENCY.get().max(1) as usize,
            batch_size: guc::BATCH_SIZE.get().max(1) as i64,
            policy: guc::policy(),
            ca_file: ca_file_stamp(&guc::string_value(&guc::TLS_CA_FILE)),
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
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn webhooks_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = guc::string_value(&guc::DATABASE);
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    unsafe {
        wake::WORKER_DB
            .get()
            .store(u32::from(pg_sys::MyDatabaseId) as i32, Ordering::Relaxed);
        wake::WORKER_PID
            .get()
            .store(pg_sys::MyProcPid, Ordering::Relaxed);
    }
    log!("webhooks worker started on database \"{db}\"");

    // Every statement of the worker is bounded: lock waits here (lock_timeout is armed at the
    // wait itself), statements in `in_transaction` (a statement timeout it arms itself, since
    // statement_timeout is only armed for client statements).
    in_transaction("setting session defaults", || {
        // Whatever postgresql.conf says: the worker's statements are read-write, read committed
        // (SKIP LOCKED and the lease token rely on it), and never wait on a lock for long.
        Spi::run(
            "SET lock_timeout = '2s'; SET default_transaction_isolation = 'read committed'; \
             SET default_transaction_read_only = off",
        )
        .ok();
    });

    let mut settings = Settings::load();
    let mut conn = Rc::new(Connections::new(&settings));
    let mut last_housekeeping = Instant::now() - Duration::from_secs(3600);
    let mut last_lease_scan = Instant::now() - Duration::from_secs(3600);
    // Several batches in flight: while the HTTP threads send, this thread records whatever
    // batch has finished and claims more as soon as work is committed, so a slow receiver's
    // batch never holds back another endpoint's (each endpoint is capped by max_in_flight).
    let mut inflight: VecDeque<Batch> = VecDeque::new();
    let mut next_tag = 0usize;
    let mut carry = Record::default();
    let mut claim_now = true;
    let mut last_claim = Instant::now();

    loop {
        // A reload applies now, whatever is in flight: batches keep the pool that sends them,
        // new claims use the new settings (and a new pool when connecting changed).
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            let fresh = Settings::load();
            if fresh.needs_new_pool(&settings) {
                conn = Rc::new(Connections::new(&fresh));
            }
            settings = fresh;
            claim_now = true;
        }
        if signals::stopping() || !unsafe { PostmasterIsAliveInternal() } {
            break;
        }
        if last_claim.elapsed() >= settings.poll {
            claim_now = true;
        }
        // An unreadable webhooks.tls_ca_file: claim nothing (attempts would only fail and use up
        // their retries) until the file or the setting is fixed and reloaded.
        let can_send = conn.client.is_ok();
        if claim_now && inflight.len() < MAX_BATCHES && can_send {
            claim_now = false;
            last_claim = Instant::now();
            let scan_leases = last_lease_scan.elapsed() > Duration::from_secs(5);
            if scan_leases {
                last_lease_scan = Instant::now();
            }
            // Requests still queued or under way on this pool go before the new batch's.
            let queued: usize = inflight
                .iter()
                .filter(|b| Rc::ptr_eq(&b.conn, &conn))
                .map(|b| b.waiting)
                .sum();
            if let Some(b) = submit(&settings, &conn, scan_leases, &mut next_tag, queued) {
                // A full batch means more is probably due: claim again at once.
                claim_now = b.claimed.len() as i64 >= settings.batch_size;
                inflight.push_back(b);
            }
        }
        wake::WORKER_BEAT
            .get()
            .store(http::now_us(), Ordering::Relaxed);
        if last_housekeeping.elapsed() > settings.retention.min(Duration::from_secs(60))
            && !signals::stopping()
        {
            last_housekeeping = Instant::now();
            housekeeping(&settings);
        }
        if crate::handoff::pending() {
            record_sync_failures();
        }
        if !carry.ids.is_empty() && inflight.is_empty() {
            let again = std::mem::take(&mut carry);
            save(again, &mut carry, &settings);
        }
        report_statistics();
        if inflight.is_empty() {
            if !signals::wait(settings.poll) {
                break;
            }
            claim_now = true;
            continue;
        }
        if claim_now && inflight.len() < MAX_BATCHES {
            continue;
        }
        // Answers for a short while; then record what finished, and claim if woken.
        pump(&mut inflight, &conn, Duration::from_millis(20));
        // Recorded work frees room under the endpoints' max_in_flight: claim again.
        if record_finished(&mut inflight, &settings, &mut carry) || latch_was_set() {
            claim_now = true;
        }
    }
    // Stopping: claim nothing more; queued requests are dropped now, unstarted; record what
    // answers within webhooks.timeout (a request under way ends by then) and leave the rest to
    // its lease.
    conn.pool.close();
    for b in inflight.iter() {
        b.conn.pool.close();
    }
    // (a batch is recorded one timeout after its deadline)
    let cut = Instant::now() + Duration::from_millis(500);
    for b in inflight.iter_mut() {
        b.deadline = b.deadline.min(cut);
    }
    while !inflight.is_empty() {
        pump(&mut inflight, &conn, Duration::from_millis(50));
        record_finished(&mut inflight, &settings, &mut carry);
    }
    report_statistics();
    wake::WORKER_PID.get().store(0, Ordering::Relaxed);
    drop(conn);
    log!("webhooks worker stopped");
    // Exit code 0 would unregister the worker for good (pg_terminate_backend included); with 1
    // the postmaster starts it again after the restart time, except during shutdown.
    unsafe { pg_sys::proc_exit(1) };
}

/// Endpoints whose client-certificate agents are kept, at most.
const MTLS_CACHE_MAX: usize = 256;

/// Batches claimed and not yet recorded, at most.
const MAX_BATCHES: usize = 4;

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

/// The CA file's path with its size and modification time: a bundle replaced at the same path
/// is picked up by a reload.
fn ca_file_stamp(path: &str) -> String {
    let meta = std::fs::metadata(path.trim()).ok();
    let (len, mtime) = meta
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (m.len(), t)
        })
        .unwrap_or((0, 0));
    format!("{path}|{len}|{mtime}")
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
        .select(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'webhooks'",
            Some(1),
            &[],
        )
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
                    "SELECT webhooks_internal._sync_failure_record($1::jsonb)",
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
const CLAIM_SQL: &str = "SELECT * FROM webhooks_internal._claim($1::int4, $2::interval, $3)";

fn claim(settings: &Settings, scan_leases: bool, lease: Duration) -> Vec<Claimed> {
    let lease = format!("{} milliseconds", lease.as_millis());
    Spi::connect_mut(|client| {
        if !extension_present(client) {
            return Vec::new();
        }
        let args = [
            settings.batch_size.into(),
            lease.as_str().into(),
            scan_leases.into(),
        ];
        let table = match client.update(CLAIM_SQL, None, &args) {
            Ok(t) => t,
            Err(e) => {
                warning!("webhooks worker: claim failed: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(table.len());
        for row in table {
            let s = |i: usize| row.get::<String>(i).ok().flatten();
            let event_id = s(3).unwrap_or_default();
            let event_type = s(4).unwrap_or_default();
            let occurred_us = row.get::<i64>(7).ok().flatten().unwrap_or(0);
            let data = s(10).unwrap_or_else(|| "{}".into());
            let actor = s(9);
            let tenant = s(8);
            let body = envelope::build(&Event {
                id: &event_id,
                event_type: &event_type,
                version: s(5).as_deref().unwrap_or("1"),
                source: s(6).as_deref().unwrap_or(""),
                occurred_at_us: occurred_us,
                tenant_id: tenant.as_deref(),
                actor_json: actor.as_deref(),
                data_json: &data,
            });
            out.push(Claimed {
                delivery_id: row.get::<i64>(1).ok().flatten().unwrap_or(0),
                attempts: row.get::<i32>(2).ok().flatten().unwrap_or(0),
                event_id,
                event_type,
                occurred_us,
                body,
                endpoint_id: s(11).unwrap_or_default(),
                url: s(12).unwrap_or_default(),
                secrets: [s(13), s(14)].into_iter().flatten().collect(),
                headers: s(15),
                batch_max: row.get::<i32>(16).ok().flatten().unwrap_or(1),
                client_cert: s(17).zip(s(18)),
                lease_us: row.get::<i64>(19).ok().flatten().unwrap_or(0),
            });
        }
        out
    })
}

/// What one HTTP request carries: a single delivery, or several of a batched endpoint.
struct Unit {
    members: Vec<usize>,
}

fn units(claimed: &[Claimed]) -> Vec<Unit> {
    let mut out = Vec::new();
    let mut batches: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in claimed.iter().enumerate() {
        if c.batch_max > 1 {
            batches.entry(&c.endpoint_id).or_default().push(i);
        } else {
            out.push(Unit { members: vec![i] });
        }
    }
    for (_, mut idx) in batches {
        // Publish order inside a batch.
        idx.sort_by(|a, b| claimed[*a].event_id.cmp(&claimed[*b].event_id));
        let max = claimed[idx[0]].batch_max.max(1) as usize;
        for chunk in idx.chunks(max) {
            out.push(Unit {
                members: chunk.to_vec(),
            });
        }
    }
    out
}

/// The sender pool and the agents of endpoints with client certificates, built from one
/// configuration. `client` is the error to record when the configuration cannot connect at
/// all (an unreadable `webhooks.tls_ca_file`): every attempt then fails saying so.
struct Connections {
    pool: Pool,
    client: Result<http::ClientSettings, String>,
    /// endpoint id -> (hash of its certificate and key, its agent)
    mtls: std::cell::RefCell<HashMap<String, (u64, http::Client)>>,
}

impl Connections {
    fn new(s: &Settings) -> Connections {
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
        let pool = Pool::new(s.concurrency, client.as_ref().unwrap_or(&fallback));
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
    let keys = signing::keys(c.secrets.iter().map(String::as_str))
        .map_err(|e| format!("endpoint secret unusable: {e}"))?;
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

/// Claims one batch, sends it and records the outcomes. Returns how many were claimed.
/// A claimed batch whose requests are queued in the pool. Its jobs are tagged `base + unit`, so
/// an answer arriving after its batch was recorded (a request that outlived the deadline) matches
/// no batch and is dropped: that delivery keeps its lease and is claimed again later.
struct Batch {
    base: usize,
    claimed: Vec<Claimed>,
    units: Vec<Unit>,
    outcomes: Vec<Option<Outcome>>,
    waiting: usize,
    deadline: Instant,
    /// The pool sending it (a reload may have made a new one for later batches).
    conn: Rc<Connections>,
}

/// Claims a batch and queues its requests. None when nothing was due (or the claim failed).
fn submit(
    settings: &Settings,
    conn: &Rc<Connections>,
    scan_leases: bool,
    next_tag: &mut usize,
    queued: usize,
) -> Option<Batch> {
    // Requests run `pool.size()` at a time, each within the timeout, after the `queued` ones.
    // No request starts after the batch's deadline (the sender drops it) and a request lasts at
    // most two timeouts (a proxied target is resolved first), so a lease that outlasts the
    // deadline by that covers every copy that can be on the wire: the lease scan never claims a
    // row whose request may still be sent. A claim returns at most `batch_size` rows.
    let size = conn.pool.size().max(1);
    let rounds = (queued + settings.batch_size as usize).div_ceil(size) as u32;
    let deadline = Instant::now() + settings.timeout * rounds.max(1) + Duration::from_secs(5);
    let lease = deadline.saturating_duration_since(Instant::now())
        + settings.timeout * 2
        + Duration::from_secs(30);
    let mut claimed = in_transaction("claiming deliveries", || {
        claim(settings, scan_leases, lease)
    })?;
    if claimed.is_empty() {
        return None;
    }
    let units = units(&claimed);
    // Bodies move into the jobs: recording needs only ids and attempt counts, not payloads.
    let mut bodies: Vec<String> = claimed
        .iter_mut()
        .map(|c| std::mem::take(&mut c.body))
        .collect();
    let base = *next_tag;
    *next_tag += units.len();
    let mut parts: HashMap<String, Result<EndpointParts, String>> = HashMap::new();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; units.len()];
    let mut waiting = 0usize;
    for (u, unit) in units.iter().enumerate() {
        let first = &claimed[unit.members[0]];
        let refuse = |msg: String| Outcome {
            tag: base + u,
            error: Some(msg),
            started_at_us: http::now_us(),
            ..Default::default()
        };
        if let Err(e) = target::check_url(&first.url, settings.policy) {
            outcomes[u] = Some(refuse(format!("refused: {e}")));
            continue;
        }
        let p = parts
            .entry(first.endpoint_id.clone())
            .or_insert_with(|| endpoint_parts(first, conn));
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                outcomes[u] = Some(refuse(e.clone()));
                continue;
            }
        };
        let (msg_id, body) = if first.batch_max > 1 {
            let bodies: Vec<String> = unit
                .members
                .iter()
                .map(|i| std::mem::take(&mut bodies[*i]))
                .collect();
            // A batch is its own message, named by its contents: the same events give the same
            // webhook-id (receivers dedupe a resent batch), different events a different one.
            let ids: Vec<&str> = unit
                .members
                .iter()
                .map(|i| claimed[*i].event_id.as_str())
                .collect();
            (envelope::batch_id(&ids), envelope::build_batch(&bodies))
        } else {
            (
                first.event_id.clone(),
                std::mem::take(&mut bodies[unit.members[0]]),
            )
        };
        let job = Job {
            tag: base + u,
            url: first.url.clone(),
            msg_id,
            event_type: first.event_type.clone(),
            attempt: first.attempts + 1,
            body: Arc::new(body),
            keys: Arc::clone(&p.keys),
            headers: Arc::clone(&p.headers),
            agent: p.agent.clone(),
            not_after: Some(deadline),
        };
        if conn.pool.submit(job) {
            waiting += 1;
        } else {
            outcomes[u] = Some(refuse("internal: no sender thread available".into()));
        }
    }
    Some(Batch {
        base,
        claimed,
        units,
        outcomes,
        waiting,
        deadline,
        conn: Rc::clone(conn),
    })
}

fn route(inflight: &mut VecDeque<Batch>, o: Outcome) {
    for b in inflight.iter_mut() {
        if o.tag >= b.base && o.tag < b.base + b.outcomes.len() {
            let slot = &mut b.outcomes[o.tag - b.base];
            if slot.is_none() {
                *slot = Some(o);
                b.waiting -= 1;
            }
            return;
        }
    }
}

/// Waits for the oldest batch's answers (routing any others to their batches) and records it.
/// Routes answers to their batches for up to `wait`: from every pool that batches still use
/// (a reload may have left an older one), waiting on the newest.
fn pump(inflight: &mut VecDeque<Batch>, newest: &Rc<Connections>, wait: Duration) {
    let mut pools: Vec<Rc<Connections>> = Vec::new();
    for b in inflight.iter() {
        if !Rc::ptr_eq(&b.conn, newest) && !pools.iter().any(|p| Rc::ptr_eq(p, &b.conn)) {
            pools.push(Rc::clone(&b.conn));
        }
    }
    for p in &pools {
        while let Ok(o) = p.pool.results.try_recv() {
            route(inflight, o);
        }
    }
    let until = Instant::now() + wait;
    while !inflight.iter().any(|b| b.waiting == 0) {
        match newest
            .pool
            .results
            .recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            Ok(o) => route(inflight, o),
            Err(_) => break,
        }
    }
}

/// Records every batch that is fully answered or past its deadline (an unanswered request
/// keeps its lease and is claimed again after it expires). True when one was recorded.
fn record_finished(
    inflight: &mut VecDeque<Batch>,
    settings: &Settings,
    carry: &mut Record,
) -> bool {
    let now_i = Instant::now();
    let mut rec = std::mem::take(carry);
    let mut left = VecDeque::with_capacity(inflight.len());
    let now = http::now_us();
    let mut fresh = false;
    for b in inflight.drain(..) {
        // A request started just before the deadline answers within one timeout after it.
        if b.waiting > 0 && b.deadline + settings.timeout > now_i {
            left.push_back(b);
            continue;
        }
        fresh = true;
        for (u, unit) in b.units.iter().enumerate() {
            let Some(o) = &b.outcomes[u] else { continue };
            for &i in &unit.members {
                rec.push(&b.claimed[i], o, settings, now);
            }
        }
    }
    *inflight = left;
    save(rec, carry, settings);
    fresh
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
    match in_transaction("recording outcomes", || rec.save(&disable_after)).flatten() {
        Some(busy) if busy.is_empty() => {}
        Some(busy) => *carry = kept.only(&busy),
        None => *carry = kept,
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
            let next = match pause {
                Some(p) => schedule::after_pushback(attempt, &s.schedule, age, s.ttl, p),
                None => schedule::after_failure(attempt, &s.schedule, age, s.ttl),
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
    "SELECT webhooks_internal._record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::interval)";

fn housekeeping(settings: &Settings) {
    let keep = format!("{} seconds", settings.retention.as_secs());
    let keep_dead = format!("{} seconds", settings.dead_retention.as_secs());
    // Event ids are ULIDs: every event published before the cutoff has a smaller id, so the
    // primary key finds them (no index on occurred_at on the publish path).
    let cutoff_ms = ((http::now_us() / 1000) as u64)
        .saturating_sub(settings.retention.min(settings.dead_retention).as_millis() as u64);
    let before = format!("evt_{}", crate::ids::ulid(cutoff_ms, [0; 10]));
    in_transaction("housekeeping", || {
        Spi::connect_mut(|client| {
            if !extension_present(client) {
                return;
            }
            let args = [keep.as_str().into(), keep_dead.as_str().into()];
            // SKIP LOCKED: a row someone holds is pruned next time, never waited for.
            let _ = client.update(
                "DELETE FROM webhooks.deliveries WHERE id IN (
                    SELECT id FROM webhooks.deliveries
                    WHERE status = 'succeeded' AND completed_at < now() - $1::interval
                    LIMIT 5000 FOR UPDATE SKIP LOCKED)",
                None,
                &args[..1],
            );
            let _ = client.update(
                "DELETE FROM webhooks.deliveries WHERE id IN (
                    SELECT id FROM webhooks.deliveries
                    WHERE status = 'dead' AND completed_at < now() - $1::interval
                    LIMIT 5000 FOR UPDATE SKIP LOCKED)",
                None,
                &args[1..],
            );
            let _ = client.update(
                "DELETE FROM webhooks.events WHERE id IN (
                    SELECT e.id FROM webhooks.events e
                    WHERE e.id < $1
                      AND NOT EXISTS (SELECT 1 FROM webhooks.deliveries d WHERE d.event_id = e.id)
                    LIMIT 5000 FOR UPDATE SKIP LOCKED)",
                None,
                &[before.as_str().into()],
            );
            // A parking that raced an endpoint_enable, or an orphan whose endpoint and event
            // exist by now (a restore that finished loading): release what waits for no reason.
            let _ = client.update(
                "UPDATE webhooks.deliveries d SET next_attempt_at = now(), lease_until = NULL
                 WHERE d.status = 'pending' AND d.next_attempt_at = 'infinity'
                   AND EXISTS (SELECT 1 FROM webhooks.endpoints ep WHERE ep.id = d.endpoint_id AND ep.enabled
                                 AND coalesce(ep.tenant_id, '') = coalesce(d.endpoint_tenant, ''))
                   AND EXISTS (SELECT 1 FROM webhooks.events e WHERE e.id = d.event_id)",
                None,
                &[],
            );
            // Bindings of dropped roles bind nobody (they are keyed by oid); they go.
            let _ = client.update(
                "DELETE FROM webhooks.tenant_roles t
                 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = t.role_name::oid)",
                None,
                &[],
            );
            // Orphans parked an hour ago whose endpoint or event never came (back).
            let _ = client.update(
                "DELETE FROM webhooks.deliveries d
                 WHERE d.status = 'pending' AND d.next_attempt_at = 'infinity'
                   AND d.lease_until < now() - interval '1 hour'
                   AND (NOT EXISTS (SELECT 1 FROM webhooks.endpoints ep WHERE ep.id = d.endpoint_id
                                    AND coalesce(ep.tenant_id, '') = coalesce(d.endpoint_tenant, ''))
                        OR NOT EXISTS (SELECT 1 FROM webhooks.events e WHERE e.id = d.event_id))",
                None,
                &[],
            );
        })
    });
}
