//! The public entry points that act with the extension owner's rights, and the identity they
//! act for.
//!
//! A SECURITY DEFINER function cannot tell who called it: `current_user` is its owner and the
//! session's role (`GetOuterUserId`) is not the caller when the call comes from someone else's
//! code in that session (a definer function or trigger a victim runs, an index expression that
//! ANALYZE evaluates as the table's owner). So the API that needs the owner's rights is written
//! here, as ordinary (invoker) functions: each records the role that really called it
//! (`GetUserId()` at entry), becomes the owner the way fmgr does for a definer function, runs
//! the owner-only SQL function that does the work, and becomes the caller again. Tenancy and
//! ownership checks in SQL ask `webhooks_internal._caller()`, which answers that recorded role.

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::cell::{Cell, RefCell};

thread_local! {
    static CALLERS: RefCell<Vec<pg_sys::Oid>> = const { RefCell::new(Vec::new()) };
    static OWNER: Cell<Option<(pg_sys::Oid, pg_sys::Oid)>> = const { Cell::new(None) };
}

/// The extension's owner (cached per backend, checked against the extension's oid so that a
/// DROP/CREATE EXTENSION by someone else is noticed).
fn owner() -> pg_sys::Oid {
    let ext = unsafe { pg_sys::get_extension_oid(c"webhooks".as_ptr(), true) };
    if let Some((e, o)) = OWNER.get() {
        if e == ext {
            return o;
        }
    }
    // Runs as the caller, under the caller's search_path: nothing in it may resolve to
    // something the caller defined (an `=` of theirs would pick another extension's owner).
    let o = Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.oid OPERATOR(pg_catalog.=) $1",
        &[ext.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| error!("the webhooks extension is not installed in this database"));
    OWNER.set(Some((ext, o)));
    o
}

/// The role the current call acts for: the caller recorded by the innermost entry point while
/// running as the owner; otherwise the current user itself.
pub fn effective_caller() -> pg_sys::Oid {
    caller_given_owner(owner)
}

/// effective_caller, with the owner looked up only when a caller was recorded (the lookup is
/// an index scan of pg_extension: an entry point that needs the owner anyway passes it).
fn caller_given_owner(owner: impl FnOnce() -> pg_sys::Oid) -> pg_sys::Oid {
    // The recorded callers live in the leader's memory: a parallel worker cannot know them.
    if unsafe { pg_sys::ParallelWorkerNumber } >= 0 {
        error!("webhooks: the calling role cannot be determined in a parallel worker");
    }
    let current = unsafe { pg_sys::GetUserId() };
    match CALLERS.with(|c| c.borrow().last().copied()) {
        Some(caller) if current == owner() => caller,
        _ => current,
    }
}

/// Restores the caller's identity however the call ends (an ERROR unwinds through it too).
struct Restore {
    user: pg_sys::Oid,
    context: i32,
}

impl Drop for Restore {
    fn drop(&mut self) {
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
        CALLERS.with(|c| {
            c.borrow_mut().pop();
        });
    }
}

/// Runs `f` as the extension owner on behalf of the current caller.
pub fn as_owner<R>(f: impl FnOnce() -> R) -> R {
    let owner = owner();
    let caller = caller_given_owner(|| owner);
    let mut user = pg_sys::Oid::INVALID;
    let mut context = 0i32;
    unsafe { pg_sys::GetUserIdAndSecContext(&mut user, &mut context) };
    CALLERS.with(|c| c.borrow_mut().push(caller));
    let _restore = Restore { user, context };
    unsafe {
        pg_sys::SetUserIdAndSecContext(owner, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32)
    };
    f()
}

thread_local! {
    /// Statements of the entry points, prepared once per backend (the publish path would
    /// otherwise parse and plan its one statement on every call). PostgreSQL replans a kept plan
    /// when what it refers to changes (DROP/CREATE EXTENSION included).
    static PLANS: RefCell<std::collections::HashMap<&'static str, std::rc::Rc<pgrx::spi::OwnedPreparedStatement>>> =
        RefCell::new(std::collections::HashMap::new());
}

/// Runs one statement as the owner and returns the first column of its first row.
fn owner_query<T: FromDatum + IntoDatum>(
    sql: &'static str,
    types: &[pg_sys::Oid],
    args: &[pgrx::datum::DatumWithOid],
) -> Option<T> {
    as_owner(|| {
        Spi::connect_mut(|client: &mut SpiClient<'_>| {
            let cached = PLANS.with(|p| p.borrow().get(sql).cloned());
            let stmt = match cached {
                Some(s) => s,
                None => {
                    let oids: Vec<pgrx::PgOid> =
                        types.iter().map(|o| pgrx::PgOid::from(*o)).collect();
                    let s = std::rc::Rc::new(
                        client
                            .prepare_mut(sql, &oids)
                            .unwrap_or_else(|e| error!("{e}"))
                            .keep(),
                    );
                    PLANS.with(|p| p.borrow_mut().insert(sql, std::rc::Rc::clone(&s)));
                    s
                }
            };
            client
                .update(&*stmt, Some(1), args)
                .unwrap_or_else(|e| error!("{e}"))
                .first()
                .get::<T>(1)
                .unwrap_or_else(|e| error!("{e}"))
        })
    })
}

use pg_sys::{JSONBOID as JB, OIDOID as OI, REGCLASSOID as RC, TEXTARRAYOID as TA, TEXTOID as TX};

/// Declares a Rust type that passes a datum of an SQL type through untouched.
macro_rules! raw_sql_type {
    ($name:ident, $sql:literal, $oid:expr) => {
        pub struct $name(pg_sys::Datum);

        impl FromDatum for $name {
            unsafe fn from_polymorphic_datum(
                datum: pg_sys::Datum,
                is_null: bool,
                _typoid: pg_sys::Oid,
            ) -> Option<Self> {
                (!is_null).then_some($name(datum))
            }
        }

        impl IntoDatum for $name {
            fn into_datum(self) -> Option<pg_sys::Datum> {
                Some(self.0)
            }
            fn type_oid() -> pg_sys::Oid {
                $oid
            }
        }

        unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for $name {
            unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
                let index = arg.index();
                unsafe {
                    arg.unbox_arg_using_from_datum()
                        .unwrap_or_else(|| panic!("argument {index} must not be null"))
                }
            }

            unsafe fn unbox_nullable_arg(
                arg: pgrx::callconv::Arg<'_, 'fcx>,
            ) -> pgrx::nullable::Nullable<Self> {
                unsafe { arg.unbox_arg_using_from_datum().into() }
            }
        }

        unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for $name {
            const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!($name);
            const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
                pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
            const ARGUMENT_SQL: Result<
                pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
                pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
            > = Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal($sql));
            const RETURN_SQL: Result<
                pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
                pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
            > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
                pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal($sql),
            ));
        }
    };
}

// A jsonb argument passed on as is (no round trip through serde_json), and a regclass.
raw_sql_type!(RawJsonb, "jsonb", pg_sys::JSONBOID);
raw_sql_type!(Regclass, "regclass", pg_sys::REGCLASSOID);

impl RawJsonb {
    pub fn datum(&self) -> pg_sys::Datum {
        self.0
    }
}

impl Regclass {
    pub fn oid(&self) -> pg_sys::Oid {
        pg_sys::Oid::from(self.0.value() as u32)
    }

    /// # Safety
    /// `oid` must be a relation's.
    pub unsafe fn of(oid: pg_sys::Oid) -> Regclass {
        Regclass(pg_sys::Datum::from(oid))
    }
}
// Arrays passed on as they are: a statement's events are not copied element by element.
raw_sql_type!(RawJsonbArray, "jsonb[]", pg_sys::JSONBARRAYOID);
raw_sql_type!(RawTextArray, "text[]", pg_sys::TEXTARRAYOID);

/// The role a SECURITY DEFINER function acts for (see the module documentation). Parallel
/// unsafe: only the leader knows the recorded callers.
#[pg_extern(stable, parallel_unsafe, schema = "webhooks_internal")]
fn _caller() -> pg_sys::Oid {
    effective_caller()
}

#[pg_extern(volatile)]
fn webhook_publish(
    event_type: Option<&str>,
    data: Option<RawJsonb>,
    tenant_id: default!(Option<&str>, "NULL"),
    actor: default!(Option<RawJsonb>, "NULL"),
    entity_key: default!(Option<&str>, "NULL"),
    idempotency_key: default!(Option<&str>, "NULL"),
) -> Option<String> {
    owner_query(
        "SELECT webhooks_internal._publish($1, $2, $3, $4, $5, $6)",
        &[TX, JB, TX, JB, TX, TX],
        &[
            event_type.into(),
            data.into(),
            tenant_id.into(),
            actor.into(),
            entity_key.into(),
            idempotency_key.into(),
        ],
    )
}

/// Publishes many events of one type in one call (a backfill, an import, the rows of a
/// statement): returns their ids in the order of `data`. Element i of each array belongs to
/// element i of `data`; a NULL array means NULL for every element.
#[pg_extern(volatile)]
fn webhook_publish_many(
    event_type: Option<&str>,
    data: Option<RawJsonbArray>,
    tenant_ids: default!(Option<RawTextArray>, "NULL"),
    actor: default!(Option<RawJsonb>, "NULL"),
    entity_keys: default!(Option<RawTextArray>, "NULL"),
    idempotency_keys: default!(Option<RawTextArray>, "NULL"),
) -> Option<Vec<Option<String>>> {
    owner_query(
        "SELECT webhooks_internal._publish_many($1, $2, $3, $4, $5, $6)",
        &[TX, pg_sys::JSONBARRAYOID, TA, JB, TA, TA],
        &[
            event_type.into(),
            data.into(),
            tenant_ids.into(),
            actor.into(),
            entity_keys.into(),
            idempotency_keys.into(),
        ],
    )
}

/// `webhook_send_sync` without the raise: the answers, or `{"error": {...}}` (the failed
/// attempts then stay recorded if the caller commits).
#[pg_extern(volatile)]
fn webhook_send_sync_result(
    event_type: Option<&str>,
    data: Option<RawJsonb>,
    tenant_id: default!(Option<&str>, "NULL"),
    actor: default!(Option<RawJsonb>, "NULL"),
) -> Option<pgrx::JsonB> {
    // (as the owner: the caller may not look into webhooks_internal)
    if !as_owner(crate::sync::schema_has_finish) {
        // A schema older than the library, between a package upgrade and ALTER EXTENSION
        // UPDATE: its own SQL half, which calls _sync_send.
        return owner_query(
            "SELECT webhooks_internal._send_sync($1, $2, $3, $4)",
            &[TX, JB, TX, JB],
            &[
                event_type.into(),
                data.into(),
                tenant_id.into(),
                actor.into(),
            ],
        );
    }
    as_owner(|| {
        crate::sync::send_sync(
            event_type,
            &[
                event_type.into(),
                data.into(),
                tenant_id.into(),
                actor.into(),
            ],
        )
    })
}

/// 0.2.0's `track_table` (five arguments) as its SQL still calls it between a package upgrade
/// and ALTER EXTENSION UPDATE: the symbol stays, with no SQL of its own in 0.3.0.
#[pg_extern(volatile, sql = false)]
fn track_table(
    tbl: Option<Regclass>,
    entity: Option<&str>,
    exclude_columns: Option<Vec<Option<String>>>,
    tenant_column: Option<&str>,
    include_columns: Option<Vec<Option<String>>>,
) -> Option<String> {
    owner_query(
        "SELECT webhooks_internal._track_table($1, $2, $3, $4, $5)",
        &[RC, TX, TA, TX, TA],
        &[
            tbl.into(),
            entity.into(),
            exclude_columns.into(),
            tenant_column.into(),
            include_columns.into(),
        ],
    )
}

#[pg_extern(volatile, name = "track_table")]
fn track_table_with_condition(
    tbl: Option<Regclass>,
    entity: Option<&str>,
    exclude_columns: default!(Option<Vec<Option<String>>>, "'{}'"),
    tenant_column: default!(Option<&str>, "NULL"),
    include_columns: default!(Option<Vec<Option<String>>>, "NULL"),
    condition: default!(Option<&str>, "NULL"),
) -> Option<String> {
    owner_query(
        "SELECT webhooks_internal._track_table($1, $2, $3, $4, $5, $6)",
        &[RC, TX, TA, TX, TA, TX],
        &[
            tbl.into(),
            entity.into(),
            exclude_columns.into(),
            tenant_column.into(),
            include_columns.into(),
            condition.into(),
        ],
    )
}

#[pg_extern(volatile)]
fn untrack_table(tbl: Option<Regclass>) {
    owner_query::<bool>(
        "SELECT webhooks_internal._untrack_table($1) IS NULL",
        &[RC],
        &[tbl.into()],
    );
}

#[pg_extern(stable)]
pub fn tenant_scope() -> Option<Vec<Option<String>>> {
    let caller = effective_caller();
    // A superuser acts for every tenant unless its session narrowed itself: no query needed.
    if unsafe { pg_sys::superuser_arg(caller) }
        && crate::guc::string_value(&crate::guc::TENANT_ID).is_empty()
    {
        return None;
    }
    owner_query(
        "SELECT webhooks_internal._scope_of($1)",
        &[OI],
        &[caller.into()],
    )
}

/// The tenants of the role the session acts as outside any SECURITY DEFINER function (SET ROLE
/// included): who wrote a row, seen from a trigger that runs as the owner.
#[pg_extern(stable, schema = "webhooks_internal")]
fn _outer_scope() -> Option<Vec<Option<String>>> {
    let outer = unsafe { pg_sys::GetOuterUserId() };
    if unsafe { pg_sys::superuser_arg(outer) }
        && crate::guc::string_value(&crate::guc::TENANT_ID).is_empty()
    {
        return None;
    }
    owner_query(
        "SELECT webhooks_internal._scope_of($1)",
        &[OI],
        &[outer.into()],
    )
}

#[pg_extern(stable)]
fn current_tenant() -> Option<String> {
    let scope = tenant_scope()?;
    match scope.as_slice() {
        [Some(t)] if !t.is_empty() => Some(t.clone()),
        _ => None,
    }
}

#[pg_extern(volatile)]
fn tenant_grant(role_name: Option<&str>, tenant_id: Option<&str>) {
    owner_query::<bool>(
        "SELECT webhooks_internal._tenant_grant($1, $2) IS NULL",
        &[TX, TX],
        &[role_name.into(), tenant_id.into()],
    );
}

#[pg_extern(volatile)]
fn tenant_revoke(role_name: Option<&str>, tenant_id: Option<&str>) {
    owner_query::<bool>(
        "SELECT webhooks_internal._tenant_revoke($1, $2) IS NULL",
        &[TX, TX],
        &[role_name.into(), tenant_id.into()],
    );
}

/// An endpoint's signing secret as its receiver verifies with (`whsec_...`), opened from its
/// sealed form for a caller who may see that endpoint (a tenant's admin: its tenants' only).
/// The one way back to a stored secret: opening is never offered for a value the caller brings
/// (a sealed value from a leaked dump must stay shut).
#[pg_extern(volatile)]
fn endpoint_secret(id: Option<&str>) -> Option<String> {
    owner_query::<String>(
        "SELECT webhooks_internal._endpoint_secret($1)",
        &[TX],
        &[id.into()],
    )
}

#[pg_extern(volatile)]
fn event_replay(
    event_id: Option<&str>,
    endpoint_id: default!(Option<&str>, "NULL"),
) -> TableIterator<'static, (name!(delivery_id, i64), name!(endpoint_id, String))> {
    let rows: Vec<(i64, String)> = as_owner(|| {
        Spi::connect_mut(|client| {
            client
                .update(
                    "SELECT new_delivery_id, to_endpoint_id FROM webhooks_internal._event_replay($1, $2)",
                    None,
                    &[event_id.into(), endpoint_id.into()],
                )
                .unwrap_or_else(|e| error!("{e}"))
                .map(|r| {
                    (
                        r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                        r.get::<String>(2).ok().flatten().unwrap_or_default(),
                    )
                })
                .collect()
        })
    });
    TableIterator::new(rows)
}

/// Sends a dead (or waiting) delivery again now. As the owner: admins have no write right on
/// deliveries, so nothing but these checks (tenant, endpoint, not in flight) can requeue one.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn delivery_retry(
    delivery_id: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(event_id, String),
        name!(endpoint_id, String),
        name!(status, String),
        name!(attempts, i32),
        name!(next_attempt_at, Option<pgrx::datum::TimestampWithTimeZone>),
    ),
> {
    let row = as_owner(|| {
        Spi::connect_mut(|client| {
            let t = client
                .update(
                    "SELECT d.id, d.event_id, d.endpoint_id, d.status, d.attempts, d.next_attempt_at \
                     FROM webhooks_internal._delivery_retry($1) d",
                    Some(1),
                    &[delivery_id.into()],
                )
                .unwrap_or_else(|e| error!("{e}"));
            let r = t.first();
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<String>(2).ok().flatten().unwrap_or_default(),
                r.get::<String>(3).ok().flatten().unwrap_or_default(),
                r.get::<String>(4).ok().flatten().unwrap_or_default(),
                r.get::<i32>(5).ok().flatten().unwrap_or_default(),
                r.get::<pgrx::datum::TimestampWithTimeZone>(6)
                    .ok()
                    .flatten(),
            )
        })
    });
    TableIterator::once(row)
}

/// Sends again every dead delivery of an endpoint since a time; returns how many.
#[pg_extern(volatile)]
fn endpoint_recover(
    endpoint_id: Option<&str>,
    since: Option<pgrx::datum::TimestampWithTimeZone>,
) -> i64 {
    owner_query::<i64>(
        "SELECT webhooks_internal._endpoint_recover($1, $2)",
        &[TX, pg_sys::TIMESTAMPTZOID],
        &[endpoint_id.into(), since.into()],
    )
    .unwrap_or_default()
}

/// Sends a signed test event to one endpoint now and returns the answer (for psql users
/// checking a new endpoint). As the owner: the endpoint's secret and URL never reach the caller.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn endpoint_test(
    endpoint_id: Option<&str>,
    event_type: default!(Option<&str>, "'webhook.test'"),
) -> TableIterator<
    'static,
    (
        name!(endpoint_id, Option<String>),
        name!(event_id, Option<String>),
        name!(status, Option<i32>),
        name!(ok, Option<bool>),
        name!(duration_ms, Option<f64>),
        name!(error, Option<String>),
        name!(response, Option<pgrx::JsonB>),
    ),
> {
    let rows = as_owner(|| {
        Spi::connect_mut(|client| {
            client
                .update(
                    "SELECT * FROM webhooks_internal._endpoint_test($1, $2)",
                    None,
                    &[endpoint_id.into(), event_type.into()],
                )
                .unwrap_or_else(|e| error!("{e}"))
                .map(|r| {
                    (
                        r.get::<String>(1).ok().flatten(),
                        r.get::<String>(2).ok().flatten(),
                        r.get::<i32>(3).ok().flatten(),
                        r.get::<bool>(4).ok().flatten(),
                        r.get::<f64>(5).ok().flatten(),
                        r.get::<String>(6).ok().flatten(),
                        r.get::<pgrx::JsonB>(7).ok().flatten(),
                    )
                })
                .collect::<Vec<_>>()
        })
    });
    TableIterator::new(rows)
}

type Ts = pgrx::datum::TimestampWithTimeZone;

#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn status() -> TableIterator<
    'static,
    (
        name!(preloaded, Option<bool>),
        name!(worker_pid, Option<i32>),
        name!(worker_running, Option<bool>),
        name!(last_loop, Option<Ts>),
        name!(database, Option<String>),
        name!(serves_this_database, Option<bool>),
        name!(pending, Option<i64>),
        name!(due, Option<i64>),
        name!(in_flight, Option<i64>),
        name!(dead, Option<i64>),
        name!(oldest_due, Option<Ts>),
        name!(secrets_unreadable, Option<i64>),
    ),
> {
    let row = as_owner(|| {
        Spi::connect_mut(|client| {
            let t = client
                .update("SELECT * FROM webhooks_internal._status()", Some(1), &[])
                .unwrap_or_else(|e| error!("{e}"));
            let r = t.first();
            (
                r.get::<bool>(1).ok().flatten(),
                r.get::<i32>(2).ok().flatten(),
                r.get::<bool>(3).ok().flatten(),
                r.get::<Ts>(4).ok().flatten(),
                r.get::<String>(5).ok().flatten(),
                r.get::<bool>(6).ok().flatten(),
                r.get::<i64>(7).ok().flatten(),
                r.get::<i64>(8).ok().flatten(),
                r.get::<i64>(9).ok().flatten(),
                r.get::<i64>(10).ok().flatten(),
                r.get::<Ts>(11).ok().flatten(),
                r.get::<i64>(12).ok().flatten(),
            )
        })
    });
    TableIterator::once(row)
}
