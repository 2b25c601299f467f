//! SQL-callable functions written in Rust. The plpgsql API in `sql/*.sql` calls the `_`
//! helpers; the rest are public.

use crate::{filter, guc, headers, ids, signing, target};
use pgrx::prelude::*;
use pgrx::JsonB;

fn now_secs() -> i64 {
    crate::http::now_us() / 1_000_000
}

fn signing_error(e: signing::SigningError) -> ! {
    invalid(&format!("invalid webhook secret: {e}"))
}

// Documented for psql users by its COMMENT in sql/src/security.sql.
#[pg_extern(immutable, parallel_safe)]
fn webhook_sign(secret: &str, msg_id: &str, msg_timestamp: i64, body: &str) -> String {
    signing::sign(secret, msg_id, msg_timestamp, body.as_bytes())
        .unwrap_or_else(|e| signing_error(e))
}

// Documented by its COMMENT in sql/src/security.sql.
#[pg_extern(volatile, parallel_safe)]
fn webhook_verify(
    secret: &str,
    msg_id: &str,
    msg_timestamp: i64,
    body: &str,
    signature: &str,
    tolerance_seconds: default!(i32, 300),
) -> bool {
    signing::verify(
        secret,
        msg_id,
        msg_timestamp,
        body.as_bytes(),
        signature,
        tolerance_seconds as i64,
        now_secs(),
    )
    .unwrap_or_else(|e| signing_error(e))
}

// Documented by its COMMENT in sql/src/security.sql.
#[pg_extern(volatile, parallel_safe, name = "webhook_verify")]
fn webhook_verify_headers(
    secret: &str,
    headers: JsonB,
    body: &str,
    tolerance_seconds: default!(i32, 300),
) -> bool {
    let obj = match headers.0.as_object() {
        Some(o) => o,
        None => error!("headers must be a JSON object of header name to value"),
    };
    let get = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_i64().map(|n| n.to_string()))
            })
    };
    let (Some(id), Some(ts), Some(sig)) = (
        get("webhook-id"),
        get("webhook-timestamp"),
        get("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(ts) = ts.trim().parse::<i64>() else {
        return false;
    };
    signing::verify(
        secret,
        &id,
        ts,
        body.as_bytes(),
        &sig,
        tolerance_seconds as i64,
        now_secs(),
    )
    .unwrap_or_else(|e| signing_error(e))
}

fn invalid(msg: &str) -> ! {
    ereport!(ERROR, PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, msg);
}

fn ok_or_error<T>(r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| invalid(&e))
}

#[pg_extern(volatile, parallel_safe, schema = "webhooks_internal")]
fn _new_event_id() -> String {
    ok_or_error(ids::prefixed("evt_"))
}

/// `n` event ids in increasing order, for the set form of publishing.
#[pg_extern(volatile, parallel_safe, schema = "webhooks_internal")]
fn _new_event_ids(n: i32) -> Vec<String> {
    (0..n.max(0))
        .map(|_| ok_or_error(ids::prefixed("evt_")))
        .collect()
}

#[pg_extern(volatile, parallel_safe, schema = "webhooks_internal")]
fn _new_endpoint_id() -> String {
    ok_or_error(ids::prefixed("ep_"))
}

#[pg_extern(volatile, parallel_safe, schema = "webhooks_internal")]
fn _new_secret() -> String {
    ok_or_error(ids::new_secret())
}

/// Raises a clear error when a secret cannot sign (rotation to a caller-provided secret).
#[pg_extern(immutable, parallel_safe, schema = "webhooks_internal")]
fn _check_secret(secret: &str) -> bool {
    match signing::secret_key(secret) {
        Ok(k) if k.len() >= 24 && k.len() <= 64 => true,
        Ok(k) => error!(
            "secret must decode to 24-64 bytes, this one has {}",
            k.len()
        ),
        Err(e) => signing_error(e),
    }
}

/// Raises an error naming the column when a client certificate or key is unusable or when
/// they do not belong together.
#[pg_extern(immutable, parallel_safe, schema = "webhooks_internal")]
fn _check_client_cert(cert: &str, key: &str) -> bool {
    ok_or_error(crate::tls::client_cert(cert, key).map(|_| ()));
    true
}

/// A tracked table's condition is one SQL expression and nothing more: it is put in a trigger
/// definition run as the owner, so text that would close the expression (`true) EXECUTE ...;
/// ALTER ROLE ...`) is refused before PostgreSQL ever runs it.
#[pg_extern(immutable, parallel_safe, schema = "webhooks_internal")]
fn _check_condition(condition: &str) -> bool {
    let sql = format!("SELECT ({condition}\n)");
    let Ok(c) = std::ffi::CString::new(sql) else {
        invalid("condition must not contain NUL bytes");
    };
    // The raw parser only: nothing is looked up or run. A syntax error raises here.
    let list = unsafe { pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT) };
    let n = if list.is_null() {
        0
    } else {
        unsafe { (*list).length }
    };
    if n != 1 {
        invalid("condition must be one SQL expression over OLD and NEW, like NEW.email IS DISTINCT FROM OLD.email");
    }
    true
}

/// A new ed25519 key pair for a v1a endpoint: {whsk_ private, whpk_ public}.
#[pg_extern(volatile, parallel_safe, schema = "webhooks_internal")]
fn _new_key_pair() -> Vec<String> {
    let seed = ok_or_error(ids::random_bytes::<32>());
    let (private, public) = ok_or_error(signing::ed25519_key_pair(seed));
    vec![private, public]
}

/// An hmac-hex endpoint's header prefix: what it makes must be valid header names of its own.
#[pg_extern(immutable, parallel_safe, schema = "webhooks_internal")]
fn _check_header_prefix(prefix: &str) -> bool {
    if prefix.len() > 64 {
        invalid("header_prefix is limited to 64 bytes");
    }
    ok_or_error(
        crate::headers::validate(&format!("{prefix}Signature"), "x")
            .map_err(|e| format!("header_prefix \"{prefix}\" does not make valid headers: {e}")),
    );
    true
}

#[pg_extern(stable, parallel_safe, schema = "webhooks_internal")]
fn _check_url(url: &str) -> bool {
    ok_or_error(target::check_url(url, guc::policy()));
    true
}

#[pg_extern(immutable, parallel_safe, schema = "webhooks_internal")]
fn _check_filters(filters: Vec<Option<String>>) -> bool {
    if filters.is_empty() {
        error!("event_types must list at least one event type, category.* or *");
    }
    for f in filters {
        let Some(f) = f else {
            error!("event_types must not contain NULL")
        };
        ok_or_error(filter::validate(&f));
    }
    true
}

#[pg_extern(immutable, parallel_safe, schema = "webhooks_internal")]
fn _check_event_type_name(name: &str) -> bool {
    ok_or_error(filter::validate_type_name(name));
    true
}

#[pg_extern(immutable, parallel_safe, schema = "webhooks_internal")]
fn _check_headers(h: JsonB) -> bool {
    let Some(obj) = h.0.as_object() else {
        error!("headers must be a JSON object of header name to string value")
    };
    let mut pairs = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        let Some(v) = v.as_str() else {
            error!("header \"{k}\" must have a string value")
        };
        pairs.push((k.as_str(), v));
    }
    ok_or_error(headers::validate_all(pairs));
    true
}

/// `webhooks.ttl` for SQL: how long an idempotency key holds.
#[pg_extern(stable, parallel_safe, schema = "webhooks_internal")]
fn _ttl() -> pgrx::datum::Interval {
    pgrx::datum::Interval::try_from(crate::guc::ttl())
        .unwrap_or_else(|e| error!("webhooks.ttl cannot be an interval: {e:?}"))
}

/// `webhooks.source` for SQL: the `source` of the events published now (its default when empty).
#[pg_extern(stable, parallel_safe, schema = "webhooks_internal")]
fn _source() -> String {
    crate::guc::source()
}

/// The CHECK of webhooks.deliveries (sql/src/states.sql). A function call, not the CASE it
/// replaces: PostgreSQL reads a CHECK's expression tree anew for every statement that writes
/// the table, and the CASE's 4 kB tree cost each one-row publish 10-25 µs of a 60-90 µs call.
#[pg_extern(immutable, parallel_safe, schema = "webhooks_internal")]
fn _delivery_state_ok(
    status: Option<&str>,
    attempts: Option<i32>,
    next_attempt_at: Option<pgrx::datum::TimestampWithTimeZone>,
    lease_until: Option<pgrx::datum::TimestampWithTimeZone>,
    completed_at: Option<pgrx::datum::TimestampWithTimeZone>,
) -> bool {
    match (status, attempts) {
        (Some(s), Some(a)) => crate::state::consistent(
            s,
            a,
            next_attempt_at.is_some(),
            lease_until.is_some(),
            completed_at.is_some(),
        ),
        // (both columns are NOT NULL, which refuses such a row with its own message)
        _ => true,
    }
}

#[pg_extern(immutable, parallel_safe, strict, schema = "webhooks_internal")]
fn _matches(filters: Vec<Option<String>>, event_type: &str) -> bool {
    let f: Vec<String> = filters.into_iter().flatten().collect();
    filter::matches(&f, event_type)
}

/// The state of this database's workers, from shared memory: the first one's pid and the
/// latest loop of any.
#[pg_extern(volatile, schema = "webhooks_internal")]
fn _worker_state() -> TableIterator<
    'static,
    (
        name!(preloaded, bool),
        name!(pid, Option<i32>),
        name!(last_loop_us, Option<i64>),
    ),
> {
    if !crate::wake::shmem_ready() {
        return TableIterator::once((false, None, None));
    }
    let mine = crate::wake::workers_of(unsafe { u32::from(pg_sys::MyDatabaseId) });
    let pid = mine.iter().map(|(p, _)| *p).min();
    let beat = mine.iter().map(|(_, b)| *b).max().filter(|b| *b != 0);
    TableIterator::once((true, pid, beat))
}

/// This worker's quota of an endpoint's rows (core/src/lease.rs), for the claim.
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe, strict, schema = "webhooks_internal")]
fn _lease_quota(
    max_in_flight: i32,
    batch_max: i32,
    senders: i32,
    ahead: i32,
    fast: bool,
    workers: i32,
    rank: i32,
    endpoint_id: &str,
) -> i32 {
    let u = |v: i32| v.max(0) as u32;
    crate::lease::quota(
        u(max_in_flight),
        u(batch_max),
        u(senders),
        u(ahead),
        fast,
        crate::lease::Worker {
            workers: u(workers).max(1),
            rank: u(rank),
        },
        endpoint_id,
    ) as i32
}

/// How many more rows of an endpoint this worker may take (core/src/lease.rs), for the claim.
#[pg_extern(immutable, parallel_safe, schema = "webhooks_internal")]
fn _lease_room(quota: i32, busy: Option<i32>, mine: Option<i32>, workers: i32) -> i32 {
    crate::lease::room(
        i64::from(quota),
        i64::from(busy.unwrap_or(0)),
        i64::from(mine.unwrap_or(0)),
        workers.max(1) as u32,
    )
    .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// The weight of an endpoint filter (the paths it evaluates), or an error naming what in it is
/// not allowed and why (core/src/filter_path.rs). `printed` is the filter as PostgreSQL prints it.
#[pg_extern(immutable, parallel_safe, strict, schema = "webhooks_internal")]
fn _filter_weight(printed: &str) -> i32 {
    match crate::filter_path::check(printed) {
        Ok(w) => w as i32,
        Err(why) => refused_filter(printed, &why),
    }
}

fn refused_filter(printed: &str, why: &str) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        format!("filter \"{printed}\" is not allowed: {why}"),
        "_filter_weight",
    )
    .set_hint(
        "A filter compares paths of the envelope with constants ($.data.user.email_verified == true, $.type starts with \"user.\"), joined with && || !; it evaluates at most 16 paths.",
    )
    .report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

/// The weight of a filter, NULL for one that 0.4.0 refuses (never evaluated, see
/// `_filter_affordable`): for filters written before those checks.
#[pg_extern(immutable, parallel_safe, strict, schema = "webhooks_internal")]
fn _filter_weight_or_null(printed: &str) -> Option<i32> {
    crate::filter_path::check(printed).ok().map(|w| w as i32)
}

thread_local! {
    /// Endpoints whose filter was last skipped for its budget, and when (a LOG line each
    /// minute at most).
    static SKIPPED: std::cell::RefCell<std::collections::HashMap<String, std::time::Instant>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Whether a filter of `weight` may be evaluated on `data` within the budget
/// (core/src/filter_path.rs). When it may not, the event is delivered as if the filter matched, and
/// the log says so once a minute per endpoint. A weight of NULL (a filter refused by these
/// checks, kept from an older version) is never evaluated.
#[pg_extern(stable, parallel_safe, schema = "webhooks_internal")]
fn _filter_affordable(
    weight: Option<i32>,
    data: Option<crate::gate::RawJsonb>,
    endpoint: Option<&str>,
) -> bool {
    let bytes = data
        .map(|d| unsafe { pg_sys::toast_raw_datum_size(d.datum()) } as i64)
        .unwrap_or(0);
    let ok = weight.is_some_and(|w| crate::filter_path::affordable(i64::from(w), bytes));
    if !ok {
        let ep = endpoint.unwrap_or("").to_string();
        let say = SKIPPED.with(|s| {
            let mut s = s.borrow_mut();
            let due = s
                .get(&ep)
                .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60));
            if due {
                if s.len() > 1024 {
                    s.clear();
                }
                s.insert(ep.clone(), std::time::Instant::now());
            }
            due
        });
        if say {
            match weight {
                Some(w) => log!(
                    "webhooks: the filter of endpoint {ep} (weight {w}) was not evaluated on an event of {bytes} bytes, over its budget of {} weight x bytes: the event goes to the endpoint unfiltered",
                    crate::filter_path::BUDGET
                ),
                None => log!(
                    "webhooks: the filter of endpoint {ep} is one this version refuses, so it is not evaluated: its events go to the endpoint unfiltered until it is changed"
                ),
            }
        }
    }
    ok
}
