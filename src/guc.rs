//! Settings. Duration-valued settings are strings checked by `schedule::parse_duration`, so a
//! bad value is refused by `SET`/`ALTER SYSTEM`/reload with an error naming the setting.

use crate::schedule;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use std::ffi::{CStr, CString};
use std::time::Duration;

/// Empty: every database of the cluster that has the extension (the launcher starts their
/// workers); a name restricts delivery to that database.
pub static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
/// The role the workers connect as: empty (the default), the bootstrap superuser; a name, that
/// role (LOGIN, BYPASSRLS, a member of webhooks_worker).
pub static WORKER_ROLE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
/// Worker processes per database.
pub static WORKERS: GucSetting<i32> = GucSetting::<i32>::new(1);
pub static RETRY_SCHEDULE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1m,5m,30m,2h,12h"));
// Every default is written once, here: the setting is registered with it, and the typed
// getters below fall back to it when a value cannot be read.
const TTL_DEFAULT: &CStr = c"24h";
const TIMEOUT_DEFAULT: &CStr = c"10s";
const POLL_INTERVAL_DEFAULT: &CStr = c"1s";
const RETENTION_DEFAULT: &CStr = c"7d";
const DISABLE_AFTER_DEFAULT: &CStr = c"5d";
const DEAD_RETENTION_DEFAULT: &CStr = c"30d";
const SOURCE_DEFAULT: &CStr = c"urn:webhooks";
pub static TTL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(TTL_DEFAULT));
pub static TIMEOUT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(TIMEOUT_DEFAULT));
pub static POLL_INTERVAL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(POLL_INTERVAL_DEFAULT));
pub static RETENTION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(RETENTION_DEFAULT));
pub static DISABLE_AFTER: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(DISABLE_AFTER_DEFAULT));
pub static DEAD_RETENTION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(DEAD_RETENTION_DEFAULT));
pub static SOURCE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(SOURCE_DEFAULT));
pub static TENANT_ID: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static ACTOR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static TRACEPARENT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static TLS_CA_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static HTTP_PROXY: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// The server key file for secrets at rest (src/keys.rs); empty: webhooks.key in the data
/// directory, made at the first start.
pub static KEY_FILE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(64);
/// Bodies of claimed deliveries a worker holds at once, in kB (the unit PostgreSQL gives
/// memory settings): 256 MB.
pub static WORKER_MEMORY: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024);
/// How far each retry spreads around the schedule, as a fraction of its delay either way.
pub static RETRY_JITTER: GucSetting<f64> = GucSetting::<f64>::new(0.1);
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(500);
pub static MAX_PAYLOAD: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024);
pub static ALLOW_PRIVATE_TARGETS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static REQUIRE_HTTPS: GucSetting<bool> = GucSetting::<bool>::new(true);

fn set_check_detail(msg: &str) {
    let c = CString::new(msg.replace('\0', "")).unwrap_or_default();
    // GUC_check_errdetail(): the string must live in PostgreSQL memory.
    unsafe {
        pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(c.as_ptr());
    }
}

unsafe fn checked_value<'a>(newval: *mut *mut std::os::raw::c_char) -> Option<&'a str> {
    if newval.is_null() || (*newval).is_null() {
        return None;
    }
    CStr::from_ptr(*newval).to_str().ok()
}

/// Runs `parse` on the proposed value; on failure its message becomes the error's DETAIL.
unsafe fn check_with(
    newval: *mut *mut std::os::raw::c_char,
    parse: impl Fn(&str) -> Result<(), String>,
) -> bool {
    match checked_value(newval) {
        None => true,
        Some(v) => match parse(v) {
            Ok(()) => true,
            Err(e) => {
                set_check_detail(&e);
                false
            }
        },
    }
}

/// A GUC string check hook: `$parse` refuses a value with a message (the error's DETAIL).
macro_rules! check_hook {
    ($(#[$doc:meta])* $name:ident, $parse:expr) => {
        $(#[$doc])*
        #[pgrx::pg_guard]
        unsafe extern "C-unwind" fn $name(
            newval: *mut *mut std::os::raw::c_char,
            _extra: *mut *mut std::os::raw::c_void,
            _source: pg_sys::GucSource::Type,
        ) -> bool {
            check_with(newval, $parse)
        }
    };
}

check_hook!(check_duration, |v| schedule::parse_duration(v).map(|_| ()));

check_hook!(
    #[doc = "Timeouts and the poll interval: a duration above zero."]
    check_positive_duration,
    |v| match schedule::parse_duration(v)? {
        d if d.is_zero() => Err(format!("\"{v}\" must be more than zero")),
        _ => Ok(()),
    }
);

check_hook!(
    #[doc = "The actor of row events: a JSON object, as the envelope carries it."]
    check_actor,
    |v| {
        if v.trim().is_empty() {
            return Ok(());
        }
        match serde_json::from_str::<serde_json::Value>(v) {
            Ok(serde_json::Value::Object(_)) if v.len() <= 8192 => Ok(()),
            Ok(serde_json::Value::Object(_)) => Err("must be at most 8192 bytes".into()),
            Ok(_) => Err(format!("\"{v}\" must be a JSON object, like {{\"kind\": \"admin\", \"id\": \"adm_9\"}}")),
            Err(e) => Err(format!("\"{v}\" is not JSON ({e}); expected an object like {{\"kind\": \"admin\", \"id\": \"adm_9\"}}")),
        }
    }
);

check_hook!(
    #[doc = "W3C Trace Context: what a publishing session's trace is, sent as `traceparent`."]
    check_traceparent,
    crate::headers::check_traceparent
);

check_hook!(check_schedule, |v| {
    schedule::parse_schedule(v)
        .map(|_| ())
        .map_err(|e| format!("retry schedule {e}; expected a list like 1m,5m,30m,2h,12h"))
});

check_hook!(check_ca_file, |v| {
    if v.trim().is_empty() {
        return Ok(());
    }
    crate::tls::read_ca_file(v.trim()).map(|_| ())
});

check_hook!(check_proxy, |v| {
    if v.trim().is_empty() {
        return Ok(());
    }
    crate::http::parse_proxy(v).map(|_| ())
});

fn string(
    name: &'static CStr,
    short: &'static CStr,
    setting: &'static GucSetting<Option<CString>>,
    ctx: GucContext,
    check: pg_sys::GucStringCheckHook,
) {
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            name,
            short,
            c"",
            setting,
            ctx,
            GucFlags::default(),
            check,
            None,
            None,
        );
    }
}

pub fn init() {
    string(
        c"webhooks.database",
        c"The one database delivered from; empty (the default): every database with the extension.",
        &DATABASE,
        GucContext::Postmaster,
        None,
    );
    string(
        c"webhooks.worker_role",
        c"The role the workers connect as; empty (the default): the bootstrap superuser. It needs LOGIN, BYPASSRLS and membership in webhooks_worker.",
        &WORKER_ROLE,
        GucContext::Postmaster,
        None,
    );
    string(
        c"webhooks.retry_schedule",
        c"Delays between delivery attempts, e.g. 1m,5m,30m,2h,12h (six attempts).",
        &RETRY_SCHEDULE,
        GucContext::Sighup,
        Some(check_schedule),
    );
    string(
        c"webhooks.ttl",
        c"Age after which an undelivered event is dead.",
        &TTL,
        GucContext::Sighup,
        Some(check_duration),
    );
    string(
        c"webhooks.timeout",
        c"Timeout of one HTTP attempt.",
        &TIMEOUT,
        GucContext::Suset,
        Some(check_positive_duration),
    );
    string(
        c"webhooks.poll_interval",
        c"Longest time the worker sleeps between looks for due work.",
        &POLL_INTERVAL,
        GucContext::Sighup,
        Some(check_positive_duration),
    );
    string(
        c"webhooks.retention",
        c"How long succeeded deliveries and their events are kept.",
        &RETENTION,
        GucContext::Sighup,
        Some(check_duration),
    );
    string(
        c"webhooks.disable_after",
        c"An endpoint whose every attempt has failed for this long is disabled (0: never).",
        &DISABLE_AFTER,
        GucContext::Sighup,
        Some(check_duration),
    );
    string(
        c"webhooks.dead_retention",
        c"How long dead deliveries (and events nothing else refers to) are kept.",
        &DEAD_RETENTION,
        GucContext::Sighup,
        Some(check_duration),
    );
    string(
        c"webhooks.source",
        c"The envelope's source field.",
        &SOURCE,
        GucContext::Suset,
        None,
    );
    string(
        c"webhooks.tenant_id",
        c"Tenant of this session: it sees and manages only that tenant's rows.",
        &TENANT_ID,
        GucContext::Userset,
        None,
    );
    string(
        c"webhooks.actor",
        c"Actor (JSON) recorded on row events of this session.",
        &ACTOR,
        GucContext::Userset,
        Some(check_actor),
    );
    string(
        c"webhooks.traceparent",
        c"W3C traceparent stored with the events this session publishes and sent with their deliveries.",
        &TRACEPARENT,
        GucContext::Userset,
        Some(check_traceparent),
    );
    string(
        c"webhooks.tls_ca_file",
        c"PEM bundle of CAs trusted for delivery in addition to the system trust store.",
        &TLS_CA_FILE,
        GucContext::Sighup,
        Some(check_ca_file),
    );
    string(
        c"webhooks.key_file",
        c"The file of keys that seal endpoint secrets at rest (mode 0600, the server's user's); empty: webhooks.key in the data directory, made at the first start.",
        &KEY_FILE,
        GucContext::Sighup,
        None,
    );
    string(
        c"webhooks.http_proxy",
        c"http://host:port of a CONNECT proxy for outbound deliveries (the environment is ignored).",
        &HTTP_PROXY,
        GucContext::Sighup,
        Some(check_proxy),
    );
    GucRegistry::define_int_guc(
        c"webhooks.workers",
        c"Worker processes per database; they share its queue (each endpoint's max_in_flight is split between them).",
        c"",
        &WORKERS,
        1,
        16,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhooks.concurrency",
        c"HTTP requests the worker keeps in flight.",
        c"",
        &CONCURRENCY,
        1,
        1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhooks.worker_memory",
        c"Bodies of claimed deliveries a worker holds at once, at most (each endpoint a sixteenth of it, slow ones three quarters together).",
        c"",
        &WORKER_MEMORY,
        16 * 1024,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_float_guc(
        c"webhooks.retry_jitter",
        c"How far each retry spreads around webhooks.retry_schedule, as a fraction of its delay either way (0.1: a 1m retry comes 54-66 s later).",
        c"",
        &RETRY_JITTER,
        0.0,
        0.5,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhooks.batch_size",
        c"Deliveries the worker claims per batch.",
        c"",
        &BATCH_SIZE,
        1,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"webhooks.max_payload",
        c"Largest event data, in bytes.",
        c"",
        &MAX_PAYLOAD,
        1024,
        64 * 1024 * 1024,
        GucContext::Suset,
        GucFlags::default(),
    );
    // The outbound policy is the server's (postgresql.conf, ALTER SYSTEM): no role, database or
    // session setting changes what a tenant's endpoint may reach, since the worker and the
    // application's sessions (synchronous sends) must apply the same one.
    GucRegistry::define_bool_guc(
        c"webhooks.allow_private_targets",
        c"Allow loopback, private and link-local delivery targets.",
        c"Set in postgresql.conf or with ALTER SYSTEM only: it applies to the whole server.",
        &ALLOW_PRIVATE_TARGETS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"webhooks.require_https",
        c"Refuse http:// endpoint URLs.",
        c"Set in postgresql.conf or with ALTER SYSTEM only: it applies to the whole server.",
        &REQUIRE_HTTPS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    unsafe { pg_sys::MarkGUCPrefixReserved(c"webhooks".as_ptr()) };
}

/// What a worker's session runs with, whatever `ALTER DATABASE`, `ALTER ROLE ... IN DATABASE`,
/// `ALTER ROLE ALL IN DATABASE` or `ALTER SYSTEM` say. A database owner may set any of these
/// for its database, and PostgreSQL applies them when the worker connects: `search_path` decides
/// whose operators, functions, types and casts an unqualified name reaches (a trojan `=` in a
/// schema listed before pg_catalog ran as the superuser the worker connects as); the others
/// change what a literal or a comparison means, or whether our triggers fire at all. Everything
/// else a database may set (planner costs, memory) can only make its own deliveries slower.
const WORKER_SESSION: &[(&CStr, &CStr)] = &[
    (c"search_path", c"pg_catalog, pg_temp"),
    // (ALTER DATABASE ... SET role would make the worker act as another role there)
    (c"role", c"none"),
    (c"standard_conforming_strings", c"on"),
    (c"transform_null_equals", c"off"),
    (c"array_nulls", c"on"),
    (c"backslash_quote", c"safe_encoding"),
    (c"DateStyle", c"ISO, MDY"),
    (c"IntervalStyle", c"postgres"),
    (c"row_security", c"on"),
    (c"check_function_bodies", c"on"),
    (c"session_replication_role", c"origin"),
    (c"exit_on_error", c"off"),
    (c"plan_cache_mode", c"auto"),
    // (read committed: SKIP LOCKED and the lease token rely on it)
    (c"default_transaction_isolation", c"read committed"),
    (c"default_transaction_read_only", c"off"),
    (c"default_transaction_deferrable", c"off"),
    // The worker arms its own statement timeout (src/worker/mod.rs); lock waits are bounded here.
    (c"statement_timeout", c"0"),
    (c"lock_timeout", c"2s"),
    (c"idle_in_transaction_session_timeout", c"0"),
    // Its statements read a few rows by key: a plan whose estimate crosses jit_above_cost (a
    // housekeeping pass over a large table) spent 110 ms compiling for a statement that runs in 1.
    (c"jit", c"off"),
    (c"plpgsql.extra_errors", c"none"),
    (c"plpgsql.extra_warnings", c"none"),
    (c"plpgsql.variable_conflict", c"error"),
    (c"plpgsql.print_strict_params", c"off"),
    // A session's own settings of ours mean nothing to the worker.
    (c"webhooks.tenant_id", c""),
    (c"webhooks.actor", c""),
    (c"webhooks.traceparent", c""),
    #[cfg(any(feature = "pg17", feature = "pg18"))]
    (c"transaction_timeout", c"0"),
];

/// Pins the worker session's settings (`WORKER_SESSION`), at session level as `SET` would (so
/// the `SET` clauses of our functions still apply inside them), before its first statement.
/// Called inside a transaction that then commits: a session setting made in an aborted one goes.
pub fn pin_worker_session() {
    for (name, value) in WORKER_SESSION {
        unsafe {
            pg_sys::SetConfigOption(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
            )
        };
    }
}

pub fn string_value(s: &GucSetting<Option<CString>>) -> String {
    s.get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Check hooks guarantee these parse; the fallback only covers a value set before the hook ran.
fn duration(s: &GucSetting<Option<CString>>, default: &CStr) -> Duration {
    schedule::parse_duration(&string_value(s))
        .or_else(|_| schedule::parse_duration(default.to_str().unwrap_or_default()))
        .unwrap_or(Duration::from_secs(1))
}

/// webhooks.ttl: how long an event is delivered (and an idempotency key holds).
pub fn ttl() -> Duration {
    duration(&TTL, TTL_DEFAULT)
}

/// webhooks.timeout: one request, connection to last byte.
pub fn timeout() -> Duration {
    duration(&TIMEOUT, TIMEOUT_DEFAULT)
}

/// webhooks.poll_interval: how often a worker looks without being woken.
pub fn poll_interval() -> Duration {
    duration(&POLL_INTERVAL, POLL_INTERVAL_DEFAULT)
}

/// webhooks.retention: how long succeeded deliveries are kept.
pub fn retention() -> Duration {
    duration(&RETENTION, RETENTION_DEFAULT)
}

/// webhooks.disable_after: a failing streak this long disables its endpoint.
pub fn disable_after() -> Duration {
    duration(&DISABLE_AFTER, DISABLE_AFTER_DEFAULT)
}

/// webhooks.dead_retention: how long dead letters are kept.
pub fn dead_retention() -> Duration {
    duration(&DEAD_RETENTION, DEAD_RETENTION_DEFAULT)
}

/// webhooks.source: the events' `source`; empty means the default.
pub fn source() -> String {
    optional(&SOURCE).unwrap_or_else(|| SOURCE_DEFAULT.to_string_lossy().into_owned())
}

pub fn policy() -> crate::target::Policy {
    crate::target::Policy {
        allow_private: ALLOW_PRIVATE_TARGETS.get(),
        require_https: REQUIRE_HTTPS.get(),
    }
}

fn optional(s: &GucSetting<Option<CString>>) -> Option<String> {
    Some(string_value(s)).filter(|v| !v.trim().is_empty())
}

/// webhooks.key_file as set (None: the default in the data directory).
pub fn key_file() -> Option<String> {
    optional(&KEY_FILE)
}

/// How to connect, from the current settings. An unreadable `webhooks.tls_ca_file` is an error
/// naming the setting and the path, never a silent fallback to the system store alone.
pub fn client_settings(max_idle_per_host: usize) -> Result<crate::http::ClientSettings, String> {
    let trust = crate::tls::load_trust(optional(&TLS_CA_FILE).as_deref())?;
    Ok(crate::http::ClientSettings {
        timeout: timeout(),
        allow_private: ALLOW_PRIVATE_TARGETS.get(),
        max_idle_per_host,
        proxy: optional(&HTTP_PROXY),
        trust,
    })
}
