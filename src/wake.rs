//! Waking the workers when a publishing transaction commits, and knowing which workers run.
//! Each worker takes a slot in shared memory (its pid and database); a transaction that
//! published sets a flag, and the commit callback sets the latches of its database's workers.
//! Rolled-back transactions wake nobody. The launcher (every-database mode) is woken after a
//! CREATE EXTENSION commits, and workers leave a database before DROP DATABASE needs it empty.

use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::{pg_shmem_init, PgAtomic};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Worker processes at once, over every database.
pub const SLOTS: usize = 64;

#[derive(Clone, Copy)]
pub struct Slots {
    pub pid: [i32; SLOTS],
    pub db: [u32; SLOTS],
    /// Unix microseconds of each worker's last completed loop, for `webhooks.status()`.
    pub beat: [i64; SLOTS],
    /// Databases whose worker left because the extension is not there (0: free), for the
    /// launcher to tell that from a worker stopped for another reason.
    pub absent: [u32; SLOTS],
    /// INSTALLS when that worker looked: a CREATE EXTENSION committed since makes it stale.
    pub absent_seen: [u32; SLOTS],
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            pid: [0; SLOTS],
            db: [0; SLOTS],
            beat: [0; SLOTS],
            absent: [0; SLOTS],
            absent_seen: [0; SLOTS],
        }
    }
}

unsafe impl PGRXSharedMemory for Slots {}

pub static WORKERS: PgLwLock<Slots> = unsafe { PgLwLock::new(c"webhooks_workers") };
pub static LAUNCHER_PID: PgAtomic<AtomicI32> = unsafe { PgAtomic::new(c"webhooks_launcher_pid") };
/// Bumped by every committed CREATE EXTENSION: the launcher looks at every database again when
/// it changed (its latch alone would be reset by its own wait before it could tell).
pub static INSTALLS: PgAtomic<std::sync::atomic::AtomicU32> =
    unsafe { PgAtomic::new(c"webhooks_installs") };

static SHMEM_READY: AtomicBool = AtomicBool::new(false);

thread_local! {
    static PUBLISHED: Cell<bool> = const { Cell::new(false) };
    static INSTALLED: Cell<bool> = const { Cell::new(false) };
    /// This process's slot, when it is a worker.
    static MY_SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Called from `_PG_init` while shared_preload_libraries is processed.
pub fn init_shmem() {
    pg_shmem_init!(WORKERS);
    pg_shmem_init!(LAUNCHER_PID);
    pg_shmem_init!(INSTALLS);
    SHMEM_READY.store(true, Ordering::Relaxed);
}

pub fn shmem_ready() -> bool {
    SHMEM_READY.load(Ordering::Relaxed)
}

fn alive(pid: i32) -> bool {
    pid != 0 && unsafe { !pg_sys::BackendPidGetProc(pid).is_null() }
}

/// Takes a slot for this worker (freeing those of workers that died without leaving theirs).
/// False when every slot is taken by a live worker.
pub fn register_worker(db: u32) -> bool {
    if !shmem_ready() {
        return false;
    }
    let me = unsafe { pg_sys::MyProcPid };
    let mut w = WORKERS.exclusive();
    for i in 0..SLOTS {
        if w.pid[i] != 0 && w.pid[i] != me && !alive(w.pid[i]) {
            w.pid[i] = 0;
        }
    }
    match (0..SLOTS).find(|i| w.pid[*i] == 0) {
        Some(i) => {
            w.pid[i] = me;
            w.db[i] = db;
            w.beat[i] = 0;
            MY_SLOT.with(|s| s.set(Some(i)));
            true
        }
        None => false,
    }
}

pub fn unregister_worker() {
    if let Some(i) = MY_SLOT.with(|s| s.take()) {
        let mut w = WORKERS.exclusive();
        if w.pid[i] == unsafe { pg_sys::MyProcPid } {
            w.pid[i] = 0;
        }
    }
}

pub fn beat(us: i64) {
    if let Some(i) = MY_SLOT.with(|s| s.get()) {
        WORKERS.exclusive().beat[i] = us;
    }
}

/// The live workers of a database: (pid, last loop in Unix microseconds).
pub fn workers_of(db: u32) -> Vec<(i32, i64)> {
    if !shmem_ready() {
        return Vec::new();
    }
    let w = WORKERS.share();
    (0..SLOTS)
        .filter(|i| w.pid[*i] != 0 && w.db[*i] == db)
        .map(|i| (w.pid[i], w.beat[i]))
        .collect()
}

/// A launched worker leaves its database: the extension is not there (as of `seen`, the
/// INSTALLS it read before looking).
pub fn note_absent(db: u32, seen: u32) {
    if !shmem_ready() {
        return;
    }
    let mut w = WORKERS.exclusive();
    let slot = (0..SLOTS)
        .find(|i| w.absent[*i] == db)
        .or_else(|| (0..SLOTS).find(|i| w.absent[*i] == 0));
    if let Some(i) = slot {
        w.absent[i] = db;
        w.absent_seen[i] = seen;
    }
}

/// Whether a worker of `db` left for want of the extension, looking after the last CREATE
/// EXTENSION committed anywhere (an older look says nothing), since the launcher last asked.
pub fn take_absent(db: u32) -> bool {
    let installs = INSTALLS.get().load(Ordering::Relaxed);
    let mut w = WORKERS.exclusive();
    match (0..SLOTS).find(|i| w.absent[*i] == db) {
        Some(i) => {
            w.absent[i] = 0;
            w.absent_seen[i] == installs
        }
        None => false,
    }
}

pub fn installs() -> u32 {
    if !shmem_ready() {
        return 0;
    }
    INSTALLS.get().load(Ordering::Relaxed)
}

fn is_worker() -> bool {
    MY_SLOT.with(|s| s.get()).is_some()
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
    // Workers connected to a database would make DROP DATABASE (and CREATE DATABASE ... TEMPLATE
    // it, ALTER DATABASE ... RENAME) fail: they are asked to leave first, and the launcher starts
    // none there while the database is gone or its extension absent. Only for a caller that
    // PostgreSQL will let do it: a refused DROP DATABASE in a loop stopped any database's
    // delivery and made requests in flight go again.
    if let Some(db) = database_being_dropped(pstmt) {
        if context == pg_sys::ProcessUtilityContext::PROCESS_UTILITY_TOPLEVEL
            && !pg_sys::IsTransactionBlock()
            && may_take_database(pstmt, db)
        {
            stop_workers_of(db);
        }
    }
    // The notifications of channel "webhooks" name every tenant's operational events (an
    // endpoint disabled, a delivery dead): only the platform's roles may listen to them.
    if listens_to_webhooks(pstmt) && !may_listen() {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "LISTEN webhooks is for the platform's roles: its notifications name every tenant's operational events",
            "A superuser, or a role bound to every tenant (webhooks.tenant_grant(role, '*')), may listen; a tenant's roles read their own operational events in webhooks.events."
        );
    }
    // Every role with UPDATE or DELETE on a table may LOCK it in any mode, and row-level
    // security does not apply to locks: a tenant's admin holding ACCESS EXCLUSIVE on
    // webhooks.endpoints stopped every tenant's publishes and the worker. Beyond what DML
    // takes itself (ROW EXCLUSIVE), only the owner of the extension's tables may lock them,
    // through a view too (a view locks what it reads).
    if let Some(what) = locks_shared_tables(pstmt) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("LOCK TABLE of {what} in this mode is refused: the extension's tables are shared by every tenant"),
            "Only their owner may lock them beyond ROW EXCLUSIVE MODE; reads and writes take the locks they need themselves."
        );
    }
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

/// Whether the statement is LISTEN "webhooks" in a database that has the extension.
unsafe fn listens_to_webhooks(pstmt: *mut pg_sys::PlannedStmt) -> bool {
    if pstmt.is_null() || (*pstmt).utilityStmt.is_null() {
        return false;
    }
    let node = (*pstmt).utilityStmt;
    if (*node).type_ != pg_sys::NodeTag::T_ListenStmt {
        return false;
    }
    let name = (*(node as *mut pg_sys::ListenStmt)).conditionname;
    !name.is_null()
        && std::ffi::CStr::from_ptr(name).to_bytes() == b"webhooks"
        && pg_sys::get_extension_oid(c"webhooks".as_ptr(), true) != pg_sys::Oid::INVALID
}

/// For a LOCK stronger than ROW EXCLUSIVE by a role that does not own what it would lock: the
/// first table of the extension's (webhooks, webhooks_internal) among the relations named and
/// those their views read, recursively.
unsafe fn locks_shared_tables(pstmt: *mut pg_sys::PlannedStmt) -> Option<String> {
    if pstmt.is_null() || (*pstmt).utilityStmt.is_null() {
        return None;
    }
    let node = (*pstmt).utilityStmt;
    if (*node).type_ != pg_sys::NodeTag::T_LockStmt {
        return None;
    }
    let lock = node as *mut pg_sys::LockStmt;
    if (*lock).mode < pg_sys::ShareUpdateExclusiveLock as i32
        || (*lock).relations.is_null()
        || pg_sys::get_extension_oid(c"webhooks".as_ptr(), true) == pg_sys::Oid::INVALID
    {
        return None;
    }
    let list = (*lock).relations;
    let mut oids = Vec::new();
    for i in 0..(*list).length as usize {
        let rv = (*(*list).elements.add(i)).ptr_value as *const pg_sys::RangeVar;
        let oid = pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as i32,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        );
        if oid != pg_sys::Oid::INVALID {
            oids.push(oid);
        }
    }
    if oids.is_empty() {
        return None;
    }
    // Runs in the caller's session under the caller's search_path: every operator is
    // pg_catalog's by name.
    Spi::get_one_with_args::<String>(
        "WITH RECURSIVE r(oid) AS ( \
             SELECT x FROM pg_catalog.unnest($1::pg_catalog.oid[]) x \
             UNION \
             SELECT d.refobjid FROM r \
             JOIN pg_catalog.pg_rewrite w ON w.ev_class OPERATOR(pg_catalog.=) r.oid \
             JOIN pg_catalog.pg_depend d ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_rewrite'::pg_catalog.regclass \
                  AND d.objid OPERATOR(pg_catalog.=) w.oid \
                  AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass \
                  AND d.refobjid OPERATOR(pg_catalog.<>) r.oid) \
         SELECT c.oid::pg_catalog.regclass::pg_catalog.text FROM r \
         JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) r.oid \
         JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
         WHERE n.nspname OPERATOR(pg_catalog.=) ANY ('{webhooks,webhooks_internal}'::pg_catalog.name[]) \
           AND NOT pg_catalog.pg_has_role(c.relowner, 'USAGE') \
         ORDER BY 1 LIMIT 1",
        &[oids.into()],
    )
    .ok()
    .flatten()
}

/// A role of scope every tenant (a superuser, or bound to '*'), as the API sees its caller.
fn may_listen() -> bool {
    let superuser = unsafe { pg_sys::superuser() };
    superuser || crate::gate::tenant_scope().is_none()
}

/// The database a DROP DATABASE (or a CREATE DATABASE copying it) names, if it exists.
unsafe fn database_being_dropped(pstmt: *mut pg_sys::PlannedStmt) -> Option<u32> {
    if pstmt.is_null() {
        return None;
    }
    let node = (*pstmt).utilityStmt;
    if node.is_null() {
        return None;
    }
    let name = match (*node).type_ {
        pg_sys::NodeTag::T_DropdbStmt => (*(node as *mut pg_sys::DropdbStmt)).dbname,
        pg_sys::NodeTag::T_CreatedbStmt => {
            // CREATE DATABASE ... TEMPLATE x: x must have no other sessions either.
            let options = (*(node as *mut pg_sys::CreatedbStmt)).options;
            let mut template = std::ptr::null_mut();
            if !options.is_null() {
                for i in 0..(*options).length as usize {
                    let d = (*(*options).elements.add(i)).ptr_value as *mut pg_sys::DefElem;
                    if !d.is_null()
                        && !(*d).defname.is_null()
                        && std::ffi::CStr::from_ptr((*d).defname).to_bytes() == b"template"
                        && !(*d).arg.is_null()
                    {
                        template = pg_sys::defGetString(d);
                    }
                }
            }
            template
        }
        // ALTER DATABASE x RENAME: x must have no other sessions either.
        pg_sys::NodeTag::T_RenameStmt
            if (*(node as *mut pg_sys::RenameStmt)).renameType
                == pg_sys::ObjectType::OBJECT_DATABASE =>
        {
            (*(node as *mut pg_sys::RenameStmt)).subname
        }
        _ => return None,
    };
    if name.is_null() {
        return None;
    }
    let oid = pg_sys::get_database_oid(name, true);
    (oid != pg_sys::Oid::INVALID).then(|| u32::from(oid))
}

/// Whether the current user passes the checks PostgreSQL makes before it drops, renames or
/// copies the database `db` (`dropdb`, `RenameDatabase`, `createdb` in dbcommands.c): owner of it
/// (or a member of its owner, superusers included), not connected to it, not dropping a
/// template; CREATEDB to rename or copy, a copy only of a template or of its own database, and
/// a new name that is free.
/// Made before PostgreSQL's own, so that it never acts for a caller it will refuse.
unsafe fn may_take_database(pstmt: *mut pg_sys::PlannedStmt, db: u32) -> bool {
    let user = pg_sys::GetUserId();
    let Some((owner, template)) = database_owner(db) else {
        return false;
    };
    let owns = pg_sys::has_privs_of_role(user, owner);
    let connected_here = u32::from(pg_sys::MyDatabaseId) == db;
    let node = (*pstmt).utilityStmt;
    let name_free = |name: *const std::os::raw::c_char| {
        !name.is_null() && pg_sys::get_database_oid(name, true) == pg_sys::Oid::INVALID
    };
    match (*node).type_ {
        pg_sys::NodeTag::T_DropdbStmt => owns && !connected_here && !template,
        pg_sys::NodeTag::T_RenameStmt => {
            owns && may_create_databases(user)
                && !connected_here
                && name_free((*(node as *mut pg_sys::RenameStmt)).newname)
        }
        pg_sys::NodeTag::T_CreatedbStmt => {
            may_create_databases(user)
                && (template || owns)
                && !connected_here
                && name_free((*(node as *mut pg_sys::CreatedbStmt)).dbname)
        }
        _ => false,
    }
}

/// (datdba, datistemplate) of a database, from the system cache.
unsafe fn database_owner(db: u32) -> Option<(pg_sys::Oid, bool)> {
    let tup = pg_sys::SearchSysCache1(
        pg_sys::SysCacheIdentifier::DATABASEOID as _,
        pg_sys::Datum::from(db),
    );
    if tup.is_null() {
        return None;
    }
    let form = pg_sys::GETSTRUCT(tup) as *mut pg_sys::FormData_pg_database;
    let out = ((*form).datdba, (*form).datistemplate);
    pg_sys::ReleaseSysCache(tup);
    Some(out)
}

/// CREATEDB (or superuser), as `have_createdb_privilege` says (not exported by every major).
unsafe fn may_create_databases(user: pg_sys::Oid) -> bool {
    if pg_sys::superuser_arg(user) {
        return true;
    }
    let tup = pg_sys::SearchSysCache1(
        pg_sys::SysCacheIdentifier::AUTHOID as _,
        pg_sys::Datum::from(user),
    );
    if tup.is_null() {
        return false;
    }
    let form = pg_sys::GETSTRUCT(tup) as *mut pg_sys::FormData_pg_authid;
    let yes = (*form).rolcreatedb;
    pg_sys::ReleaseSysCache(tup);
    yes
}

/// Sends SIGTERM to the workers of a database and waits (a few seconds at most) until they are
/// gone.
fn stop_workers_of(db: u32) {
    let pids: Vec<i32> = workers_of(db).into_iter().map(|(p, _)| p).collect();
    for pid in &pids {
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    for _ in 0..100 {
        if !pids.iter().any(|p| alive(*p)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::os::raw::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT => {
            if PUBLISHED.with(|p| p.replace(false)) {
                wake_worker();
            }
            if INSTALLED.with(|p| p.replace(false)) {
                wake_launcher();
            }
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            PUBLISHED.with(|p| p.set(false));
            INSTALLED.with(|p| p.set(false));
        }
        _ => {}
    }
}

pub fn mark_published() {
    PUBLISHED.with(|p| p.set(true));
}

/// Sets the latches of the workers that serve this database.
pub fn wake_worker() {
    let db = unsafe { u32::from(pg_sys::MyDatabaseId) };
    for (pid, _) in workers_of(db) {
        unsafe {
            let proc_ = pg_sys::BackendPidGetProc(pid);
            if !proc_.is_null() {
                pg_sys::SetLatch(&mut (*proc_).procLatch);
            }
        }
    }
}

fn wake_launcher() {
    if !shmem_ready() {
        return;
    }
    INSTALLS.get().fetch_add(1, Ordering::Relaxed);
    let pid = LAUNCHER_PID.get().load(Ordering::Relaxed);
    if pid == 0 {
        return;
    }
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&mut (*proc_).procLatch);
        }
    }
}

/// Wakes the workers when the current transaction commits (a worker never wakes itself).
#[pg_extern(parallel_safe, schema = "webhooks_internal")]
fn _wake_on_commit() {
    if is_worker() {
        return;
    }
    mark_published();
}

/// Called by the install (and upgrade) script: once it commits, the launcher starts this
/// database's workers.
#[pg_extern(volatile, schema = "webhooks_internal")]
fn _installed() {
    INSTALLED.with(|p| p.set(true));
}
