//! Waking the worker when a publishing transaction commits. The worker's pid lives in shared
//! memory; a transaction that published sets a flag, and the commit callback sets the worker's
//! latch. Rolled-back transactions wake nobody.

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, Ordering};

pub static WORKER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"webhooks_worker_pid") };
pub static WORKER_DB: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"webhooks_worker_db") };
/// Unix microseconds of the worker's last completed loop, for `webhooks.status()`.
pub static WORKER_BEAT: PgAtomic<AtomicI64> = unsafe { PgAtomic::new(c"webhooks_worker_beat") };

static SHMEM_READY: AtomicBool = AtomicBool::new(false);

thread_local! {
    static PUBLISHED: Cell<bool> = const { Cell::new(false) };
}

/// Called from `_PG_init` while shared_preload_libraries is processed.
pub fn init_shmem() {
    pg_shmem_init!(WORKER_PID);
    pg_shmem_init!(WORKER_DB);
    pg_shmem_init!(WORKER_BEAT);
    SHMEM_READY.store(true, Ordering::Relaxed);
}

pub fn shmem_ready() -> bool {
    SHMEM_READY.load(Ordering::Relaxed)
}

static mut PREV_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// Registers the commit callback and the COMMIT PREPARED hook once per backend.
pub fn init_backend() {
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        PREV_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(on_utility);
    }
}

/// A prepared transaction that published is committed later, maybe by another session, which
/// cannot know: every COMMIT PREPARED wakes the worker once it has committed (cheap, and rare).
#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn on_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::os::raw::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    let commit_prepared = !pstmt.is_null() && {
        let node = (*pstmt).utilityStmt;
        !node.is_null()
            && (*node).type_ == pg_sys::NodeTag::T_TransactionStmt
            && (*(node as *mut pg_sys::TransactionStmt)).kind
                == pg_sys::TransactionStmtKind::TRANS_STMT_COMMIT_PREPARED
    };
    match PREV_UTILITY {
        Some(prev) => prev(pstmt, query, read_only_tree, context, params, env, dest, qc),
        None => pg_sys::standard_ProcessUtility(
            pstmt,
            query,
            read_only_tree,
            context,
            params,
            env,
            dest,
            qc,
        ),
    }
    if commit_prepared {
        wake_worker();
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::os::raw::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
            if PUBLISHED.with(|p| p.replace(false)) =>
        {
            wake_worker();
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            PUBLISHED.with(|p| p.set(false));
        }
        _ => {}
    }
}

pub fn mark_published() {
    PUBLISHED.with(|p| p.set(true));
}

/// Sets the worker's latch if it runs and serves this database.
pub fn wake_worker() {
    if !shmem_ready() {
        return;
    }
    let pid = WORKER_PID.get().load(Ordering::Relaxed);
    if pid == 0 {
        return;
    }
    let db = WORKER_DB.get().load(Ordering::Relaxed);
    unsafe {
        if db != 0 && db as u32 != u32::from(pg_sys::MyDatabaseId) {
            return;
        }
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&mut (*proc_).procLatch);
        }
    }
}

/// Wakes the worker when the current transaction commits (the worker never wakes itself).
#[pg_extern(parallel_safe, schema = "webhooks_internal")]
fn _wake_on_commit() {
    if shmem_ready() && WORKER_PID.get().load(Ordering::Relaxed) == unsafe { pg_sys::MyProcPid } {
        return;
    }
    mark_published();
}
