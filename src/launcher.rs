//! Every database at once (`webhooks.database` empty, the default): a launcher, connected to no
//! database, lists the databases that accept connections and starts `webhooks.workers` workers
//! in each. A worker that finds no extension in its database leaves at once; the launcher tries
//! that database again when a `CREATE EXTENSION webhooks` commits anywhere (it wakes the
//! launcher) and every few minutes, and starts workers in new databases as they appear. A
//! database being dropped is left first (src/wake.rs).

use pgrx::bgworkers::*;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the databases are listed again, and how often a database without the extension
/// is tried again although no CREATE EXTENSION woke the launcher.
const RESCAN: Duration = Duration::from_secs(5);
/// A database gets one worker first; the others once that one has stayed (the extension is
/// there), so databases without it cost one short-lived process, not `webhooks.workers`.
const STAYED: Duration = Duration::from_secs(2);
const RETRY_ABSENT: Duration = Duration::from_secs(300);

pub fn register() {
    BackgroundWorkerBuilder::new("webhooks launcher")
        .set_type("webhooks launcher")
        .set_function("webhooks_launcher_main")
        .set_library("webhooks")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// One database's workers.
struct Database {
    name: String,
    workers: Vec<(DynamicBackgroundWorker, Instant)>,
    /// When its workers last left on their own (no extension there).
    absent_since: Option<Instant>,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn webhooks_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: only the shared catalogs (pg_database) are read, and no database is held
    // open against DROP DATABASE.
    BackgroundWorker::connect_worker_to_spi(None, None);
    crate::wake::LAUNCHER_PID
        .get()
        .store(unsafe { pg_sys::MyProcPid }, Ordering::Relaxed);
    log!("webhooks launcher started: serving every database with the extension");
    let per_db = crate::guc::WORKERS.get().clamp(1, 16) as usize;
    let mut dbs: HashMap<u32, Database> = HashMap::new();
    let mut last_scan = Instant::now() - RESCAN;
    let mut installs = crate::wake::INSTALLS.get().load(Ordering::Relaxed);
    loop {
        let now_installs = crate::wake::INSTALLS.get().load(Ordering::Relaxed);
        let woken = now_installs != installs;
        installs = now_installs;
        if woken {
            // A CREATE EXTENSION committed somewhere: every database gets another look.
            for d in dbs.values_mut() {
                d.absent_since = None;
            }
        }
        if woken || last_scan.elapsed() >= RESCAN {
            last_scan = Instant::now();
            let (listed, role) = databases();
            // webhooks.worker_role names a role that does not exist: no worker starts (falling
            // back to the superuser would undo what the setting is for).
            let wanted = crate::guc::string_value(&crate::guc::WORKER_ROLE);
            if !wanted.trim().is_empty() && role.is_none() {
                warning!(
                    "webhooks launcher: webhooks.worker_role \"{}\" does not exist: no worker starts until it does",
                    wanted.trim()
                );
                if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
                    break;
                }
                continue;
            }
            dbs.retain(|oid, _| listed.iter().any(|(o, _)| o == oid));
            for (oid, name) in listed {
                let d = dbs.entry(oid).or_insert_with(|| Database {
                    name: name.clone(),
                    workers: Vec::new(),
                    absent_since: None,
                });
                d.name = name;
                // Workers that stopped: gone because the extension is absent (or they failed).
                let before = d.workers.len();
                d.workers.retain(|(w, _)| {
                    !matches!(
                        w.pid(),
                        Err(BackgroundWorkerStatus::Stopped
                            | BackgroundWorkerStatus::PostmasterDied)
                    )
                });
                // (a worker that looked before the last CREATE EXTENSION committed says
                // nothing: the database is tried again)
                if d.workers.len() < before && crate::wake::take_absent(oid) {
                    d.absent_since.get_or_insert_with(Instant::now);
                }
                if d.absent_since.is_some_and(|t| t.elapsed() < RETRY_ABSENT) {
                    continue;
                }
                d.absent_since = None;
                let stayed = d.workers.iter().any(|(_, at)| at.elapsed() >= STAYED);
                let want = if stayed { per_db } else { 1 };
                while d.workers.len() < want {
                    match start_worker(oid, &d.name, d.workers.len(), role) {
                        Some(w) => d.workers.push((w, Instant::now())),
                        None => {
                            warning!(
                                "webhooks launcher: no background worker slot left for database \"{}\" (raise max_worker_processes)",
                                d.name
                            );
                            break;
                        }
                    }
                }
            }
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
    }
    crate::wake::LAUNCHER_PID.get().store(0, Ordering::Relaxed);
    // Its workers stop with the postmaster's shutdown (a fast stop signals every process).
    unsafe { pg_sys::proc_exit(1) };
}

fn start_worker(
    oid: u32,
    name: &str,
    n: usize,
    role: Option<pg_sys::Oid>,
) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("webhooks worker {n} for {name}"))
        .set_type("webhooks worker")
        .set_function("webhooks_worker_main")
        .set_library("webhooks")
        .set_argument(Some(pg_sys::Datum::from(oid)))
        // (the role to connect as, by oid: the worker cannot look a name up before it connects)
        .set_extra(&role.map(|r| u32::from(r).to_string()).unwrap_or_default())
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}

/// The databases that accept connections (templates excluded), read from the shared catalog
/// the way the autovacuum launcher does: no database connection needed; and the oid of the
/// role the workers connect as (None: webhooks.worker_role names a role that does not exist).
fn databases() -> (Vec<(u32, String)>, Option<pg_sys::Oid>) {
    let mut out = Vec::new();
    let role;
    unsafe {
        pg_sys::StartTransactionCommand();
        role = worker_role_oid();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as _);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tup = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tup.is_null() {
                break;
            }
            // GETSTRUCT: the fixed part of the row follows the tuple header.
            let data = (*tup).t_data;
            if data.is_null() {
                continue;
            }
            let form =
                (data as *mut u8).add((*data).t_hoff as usize) as *mut pg_sys::FormData_pg_database;
            // (datconnlimit -2: a database whose DROP was interrupted, invalid)
            if form.is_null()
                || !(*form).datallowconn
                || (*form).datistemplate
                || (*form).datconnlimit == -2
            {
                continue;
            }
            let name = std::ffi::CStr::from_ptr((*form).datname.data.as_ptr())
                .to_string_lossy()
                .into_owned();
            out.push((u32::from((*form).oid), name));
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as _);
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
    (out, role)
}

/// webhooks.worker_role's oid (from the shared catalog pg_authid); for an empty setting, the
/// bootstrap superuser's (the workers' default).
unsafe fn worker_role_oid() -> Option<pg_sys::Oid> {
    let wanted = crate::guc::string_value(&crate::guc::WORKER_ROLE);
    let wanted = wanted.trim();
    if wanted.is_empty() {
        return Some(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID));
    }
    let name = std::ffi::CString::new(wanted).ok()?;
    let oid = pg_sys::get_role_oid(name.as_ptr(), true);
    (oid != pg_sys::Oid::INVALID).then_some(oid)
}
