//! Secrets at rest, as SQL and the senders see them: the endpoints' trigger seals what an admin
//! writes (`_seal`), the request contract's rows are opened here before anything is signed
//! (`open_row`, cached per sealed value), housekeeping reseals under the current key in small
//! steps (`_reseal`), and `webhooks.secret_keys` says how far that got. The key file is
//! src/keys.rs's.

use crate::keys;
use crate::request::Row;
use crate::sealing;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// Plain values by sealed value, valid for one state of the key file (a key removed or
/// replaced empties it): the worker opens each endpoint's secrets once, not per request.
struct Cache {
    ring: Option<Arc<sealing::Keyring>>,
    plain: HashMap<String, String>,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| {
    Mutex::new(Cache {
        ring: None,
        plain: HashMap::new(),
    })
});

/// Bounded: a cluster with more endpoints than this opens some more than once.
const CACHE_MAX: usize = 20_000;

/// Checks the key file once (a claim calls it before its rows are opened): if it changed, what
/// was opened under the old state is forgotten.
pub fn refresh() {
    let ring = keys::keyring().ok();
    if let Ok(mut c) = CACHE.lock() {
        let same = match (&c.ring, &ring) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if !same {
            c.plain.clear();
            c.ring = ring;
        }
    }
}

fn open_cached(v: &str) -> Result<String, String> {
    if !sealing::is_sealed(v) {
        return Ok(v.to_string());
    }
    if let Ok(c) = CACHE.lock() {
        if c.ring.is_some() {
            if let Some(p) = c.plain.get(v) {
                return Ok(p.clone());
            }
        }
    }
    let ring = keys::keyring()?;
    let plain = ring.open(v).map_err(|e| e.to_string())?;
    if let Ok(mut c) = CACHE.lock() {
        if !c.ring.as_ref().is_some_and(|r| Arc::ptr_eq(r, &ring)) {
            c.plain.clear();
            c.ring = Some(ring);
        }
        if c.plain.len() >= CACHE_MAX {
            c.plain.clear();
        }
        c.plain.insert(v.to_string(), plain.clone());
    }
    Ok(plain)
}

/// Opens a request row's secret, previous secret and client key in place; the error says which
/// and why (never the value).
pub fn open_row(r: &mut Row) -> Result<(), String> {
    for (name, v) in [
        ("secret", &mut r.secret),
        ("previous secret", &mut r.previous_secret),
        ("TLS client key", &mut r.tls_client_key),
    ] {
        if let Some(s) = v.as_mut() {
            match open_cached(s) {
                Ok(p) => *s = p,
                Err(e) => return Err(format!("its {name} cannot be opened: {e}")),
            }
        }
    }
    Ok(())
}

fn fail(msg: String, detail: &str) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
        msg,
        detail
    );
}

/// A value as stored: sealed under the current key (one already sealed is checked and kept).
#[pg_extern(volatile, strict, schema = "webhooks_internal")]
fn _seal(v: &str) -> String {
    keys::seal(v).unwrap_or_else(|e| {
        fail(
            format!("cannot seal an endpoint secret: {e}"),
            "Secrets are stored sealed under the key in webhooks.key_file (README: Secrets at rest).",
        )
    })
}

/// A stored value opened (a plain one as it is).
#[pg_extern(volatile, strict, schema = "webhooks_internal")]
fn _open(v: &str) -> String {
    keys::open(v).unwrap_or_else(|e| {
        fail(
            format!("cannot open a sealed endpoint secret: {e}"),
            "Put the key it names back into webhooks.key_file (its line from a copy of that file).",
        )
    })
}

/// Housekeeping's step: a value sealed again under the current key when it needs it, else as
/// it is (one whose key is missing waits for it; nothing here fails a step).
#[pg_extern(volatile, schema = "webhooks_internal")]
fn _reseal(v: Option<&str>) -> Option<String> {
    let v = v?;
    let Ok(ring) = keys::keyring() else {
        return Some(v.to_string());
    };
    if !ring.needs_reseal(v) {
        return Some(v.to_string());
    }
    // (opened and sealed with one reading of the file: a file changed in between must not
    // seal under a key that the file then lacks)
    let nonce = keys::random::<12>().ok()?;
    match ring.open(v).ok().and_then(|p| ring.seal(&p, nonce)) {
        Some(s) => Some(s),
        None => Some(v.to_string()),
    }
}

/// Whether housekeeping has a value to reseal (plain, or under an older key the file holds).
#[pg_extern(volatile, schema = "webhooks_internal")]
fn _needs_reseal(v: Option<&str>) -> bool {
    match (v, keys::keyring()) {
        (Some(v), Ok(ring)) => ring.needs_reseal(v),
        _ => false,
    }
}

/// The key file's keys (ids only) and which one seals; one row with the error when it cannot
/// be read.
#[pg_extern(volatile, schema = "webhooks_internal")]
fn _key_file() -> TableIterator<
    'static,
    (
        name!(key_id, Option<String>),
        name!(seals, bool),
        name!(problem, Option<String>),
    ),
> {
    let rows: Vec<(Option<String>, bool, Option<String>)> = match keys::keyring() {
        Ok(ring) => {
            let last = ring.keys.len().saturating_sub(1);
            ring.keys
                .iter()
                .enumerate()
                .map(|(i, k)| (Some(k.id.clone()), i == last, None))
                .collect()
        }
        Err(e) => vec![(None, false, Some(e))],
    };
    TableIterator::new(rows)
}

/// Adds a fresh key to the key file, which seals from now on; the worker reseals every
/// database's secrets under it in small steps while it keeps sending (webhooks.secret_keys
/// shows how far). Returns the new key's id.
#[pg_extern(volatile)]
fn key_rotate() -> String {
    // A standby reads its own key file: a key added here alone would make every secret it
    // replays unreadable there (a failover would stop delivery).
    let standbys = Spi::get_one::<i64>(
        "SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_replication)
              + (SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_slots s WHERE s.slot_type OPERATOR(pg_catalog.=) 'physical')",
    )
    .ok()
    .flatten()
    .unwrap_or(0);
    if standbys > 0 {
        fail(
            format!("cannot rotate the secrets key here: this server has {standbys} physical standbys or replication slots, whose key files would lack the new key"),
            "Add a new line \"<key id> <base64 of 32 random bytes>\" at the end of every standby's webhooks.key_file first, then at the end of this server's: it seals from then on, and the worker reseals under it (README: Secrets at rest).",
        );
    }
    keys::rotate().unwrap_or_else(|e| {
        fail(
            format!("cannot rotate the secrets key: {e}"),
            "Nothing changed: the key file is as it was.",
        )
    })
}
