//! What a tracked table's row events carry, decided when each statement runs (sql/src/tracking.sql's
//! `_row_shape`, from the catalog as it stands) and kept per backend until PostgreSQL says the
//! table's definition changed: any ALTER of the table, a trigger made or dropped on it, and a
//! change of its row in webhooks.tracked_tables (whose trigger announces it) each send a relcache
//! invalidation, which reaches every backend, this one at its next command and the others
//! before they next lock the table. So a statement never uses a decision older than the table
//! it writes, whichever way the table changed (event triggers are not needed for it).

use crate::gate::{as_owner, effective_caller, Regclass};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Clone)]
struct Shape {
    entity: String,
    excluded: Vec<String>,
    tenant_column: Option<String>,
    key_columns: Vec<String>,
    sent: Vec<String>,
    condition: Option<String>,
    problem: Option<String>,
    /// A Citus shard's table, whose tracking it follows: an invalidation of the table forgets
    /// the shard's shape too.
    parent: Option<pg_sys::Oid>,
}

thread_local! {
    static SHAPES: RefCell<HashMap<pg_sys::Oid, Shape>> = RefCell::new(HashMap::new());
}

/// Called from `_PG_init` in every backend.
pub fn init_backend() {
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget), pg_sys::Datum::from(0)) };
}

/// A relcache invalidation: of one relation, or (InvalidOid) of all of them.
#[pg_guard]
unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    SHAPES.with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if relid == pg_sys::Oid::INVALID {
                s.clear();
            } else {
                s.retain(|table, shape| *table != relid && shape.parent != Some(relid));
            }
        }
    });
}

fn may_see(table: pg_sys::Oid) -> bool {
    let mode = pg_sys::ACL_INSERT | pg_sys::ACL_UPDATE | pg_sys::ACL_DELETE;
    unsafe {
        pg_sys::pg_class_aclcheck(table, effective_caller(), mode as pg_sys::AclMode)
            == pg_sys::AclResult::ACLCHECK_OK
    }
}

/// `_row_shape` of a table with the latest snapshot: a statement writes the table as it is now
/// (its columns are the relation's current ones), and in a REPEATABLE READ transaction the
/// transaction's snapshot could still show a table without a column added since (which would
/// then be sent). So it is what may be cached, too. Then what differs is recorded, in READ
/// COMMITTED only (a concurrent recording would fail a REPEATABLE READ writer's statement).
fn computed(table: pg_sys::Oid) -> Option<Shape> {
    const SQL: &std::ffi::CStr =
        c"SELECT s.entity, s.excluded, s.tenant_column, s.key_columns, s.sent, \
        s.condition, s.problem, s.auto_excluded, s.seen, s.applied, s.changed, \
        webhooks_internal._shard_parent($1) \
        FROM webhooks_internal._row_shape($1) s";
    as_owner(|| {
        let (shape, record) = Spi::connect(|_| unsafe {
            pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
            let mut types = [pg_sys::REGCLASSOID];
            let mut values = [pg_sys::Datum::from(table)];
            let status = pg_sys::SPI_execute_with_args(
                SQL.as_ptr(),
                1,
                types.as_mut_ptr(),
                values.as_mut_ptr(),
                std::ptr::null(),
                true,
                1,
            );
            pg_sys::PopActiveSnapshot();
            if status != pg_sys::SPI_OK_SELECT as i32 || pg_sys::SPI_processed == 0 {
                return (None, None);
            }
            let t = pg_sys::SPI_tuptable;
            let (tuple, desc) = (*(*t).vals, (*t).tupdesc);
            let datum = |i: i32| {
                let mut null = false;
                let d = pg_sys::SPI_getbinval(tuple, desc, i, &mut null);
                (d, null)
            };
            let text = |i: i32| {
                let (d, n) = datum(i);
                String::from_datum(d, n)
            };
            let texts = |i: i32| {
                let (d, n) = datum(i);
                Vec::<Option<String>>::from_datum(d, n)
                    .unwrap_or_default()
                    .into_iter()
                    .flatten()
                    .collect::<Vec<String>>()
            };
            let Some(entity) = text(1) else {
                return (None, None);
            };
            let shape = Shape {
                entity,
                excluded: texts(2),
                tenant_column: text(3),
                key_columns: texts(4),
                sent: texts(5),
                condition: text(6),
                problem: text(7),
                parent: {
                    let (d, n) = datum(12);
                    pg_sys::Oid::from_datum(d, n)
                },
            };
            let (changed, n) = datum(11);
            let record = bool::from_datum(changed, n).unwrap_or(false).then(|| {
                let (seen, n) = datum(9);
                (
                    texts(8),
                    Vec::<Option<i16>>::from_datum(seen, n)
                        .unwrap_or_default()
                        .into_iter()
                        .flatten()
                        .collect::<Vec<i16>>(),
                    texts(10),
                    shape.problem.clone(),
                )
            });
            (Some(shape), record)
        });
        let read_committed = unsafe { pg_sys::XactIsoLevel } < pg_sys::XACT_REPEATABLE_READ as i32;
        if let (Some((auto, seen, applied, problem)), true) = (record, read_committed) {
            Spi::connect_mut(|client| {
                client
                    .update(
                        "SELECT webhooks_internal._row_shape_save($1, $2, $3, $4, $5)",
                        None,
                        &[
                            unsafe { Regclass::of(table) }.into(),
                            auto.into(),
                            seen.into(),
                            applied.into(),
                            problem.into(),
                        ],
                    )
                    .unwrap_or_else(|e| error!("{e}"));
            });
        }
        shape
    })
}

/// What the row events of a tracked table carry, as the table is now: its entity, the columns
/// kept out and those sent, the tenant column, the columns of the entity key, the condition,
/// and the problem that makes its writes fail, if any. No row when the table is not tracked.
/// For roles that may write the table (its row triggers call it as the writing role).
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn tracked_columns(
    tbl: Regclass,
) -> TableIterator<
    'static,
    (
        name!(entity, String),
        name!(excluded, Vec<String>),
        name!(tenant_column, Option<String>),
        name!(key_columns, Vec<String>),
        name!(sent, Vec<String>),
        name!(condition, Option<String>),
        name!(problem, Option<String>),
    ),
> {
    let table = tbl.oid();
    if !may_see(table) {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "permission denied: tracked_columns is for roles that may write the table"
        );
    }
    let cached = SHAPES.with(|s| s.borrow().get(&table).cloned());
    let shape = match cached {
        Some(s) => Some(s),
        None => {
            let s = computed(table);
            if let Some(s) = &s {
                SHAPES.with(|c| c.borrow_mut().insert(table, s.clone()));
            }
            s
        }
    };
    TableIterator::new(shape.into_iter().map(|s| {
        (
            s.entity,
            s.excluded,
            s.tenant_column,
            s.key_columns,
            s.sent,
            s.condition,
            s.problem,
        )
    }))
}

/// Tells every backend (this one at once) that a tracked table's row events must be decided
/// anew. A table dropped meanwhile needs nothing: its cache entries go with its invalidation.
#[pg_extern(volatile, schema = "webhooks_internal")]
fn _forget_row_shape(relid: pg_sys::Oid) {
    unsafe {
        let tup = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as _,
            pg_sys::Datum::from(relid),
        );
        if tup.is_null() {
            return;
        }
        pg_sys::ReleaseSysCache(tup);
        pg_sys::CacheInvalidateRelcacheByRelid(relid);
    }
    SHAPES.with(|s| {
        s.borrow_mut().remove(&relid);
    });
}

/// Runs `sql` as the owner of `tbl`, the way PostgreSQL runs a table owner's index expressions
/// and ANALYZE does (a security-restricted operation: no SET ROLE, no temporary objects, no
/// LISTEN). A tracked table's condition is made into its holder trigger here: parse analysis of
/// a condition reads its literals with their types' input functions, and a domain's CHECK may
/// call any function of its author, which must run as nobody but the table's owner, never as
/// the extension's (0.3.0 made a publisher a superuser that way).
#[pg_extern(volatile, parallel_unsafe, schema = "webhooks_internal")]
fn _as_owner_of(tbl: Regclass, sql: &str) {
    let relid = tbl.oid();
    let owner = unsafe {
        let tup = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as _,
            pg_sys::Datum::from(relid),
        );
        if tup.is_null() {
            error!("relation {} does not exist", u32::from(relid));
        }
        let form = pg_sys::GETSTRUCT(tup) as *const pg_sys::FormData_pg_class;
        let owner = (*form).relowner;
        pg_sys::ReleaseSysCache(tup);
        owner
    };
    let mut user = pg_sys::Oid::INVALID;
    let mut context = 0i32;
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
    struct Back(pg_sys::Oid, i32);
    impl Drop for Back {
        fn drop(&mut self) {
            unsafe { pg_sys::SetUserIdAndSecContext(self.0, self.1) };
        }
    }
    let _back = Back(user, context);
    unsafe {
        pg_sys::SetUserIdAndSecContext(
            owner,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        )
    };
    Spi::run(sql).unwrap_or_else(|e| error!("{e}"));
}
