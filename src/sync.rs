//! `webhook_send_sync`: an event delivered now, from the calling session, to every endpoint
//! that subscribes to it. SQL prepares the requests (`_sync_prepare`, sql/src/sync.sql: the event,
//! its deliveries, and `webhooks_internal.request` rows as the claim returns them), this sends
//! them all at once and SQL records and judges the answers (`_sync_finish`: WH001, WH002, what
//! the caller may see). The requests are read into the worker's struct (src/request.rs).

use crate::http::{self, Job, Outcome};
use crate::request::{Columns, Request, Row};
use crate::{guc, target};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::sync::Arc;

/// Threads one synchronous send may use: every target of a call starts at once up to this
/// many, so that a call takes at most webhooks.timeout (with 8, 24 silent targets took three
/// timeouts one after the other).
const MAX_THREADS: usize = 32;

/// Removes U+0000 (which jsonb cannot store) from every string in `v`.
fn strip_nul(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', ""),
        Value::Array(a) => a.iter_mut().for_each(strip_nul),
        Value::Object(o) => {
            let keys: Vec<String> = o.keys().filter(|k| k.contains('\0')).cloned().collect();
            for k in keys {
                if let Some(x) = o.remove(&k) {
                    o.insert(k.replace('\0', ""), x);
                }
            }
            o.values_mut().for_each(strip_nul)
        }
        _ => {}
    }
}

thread_local! {
    /// This backend's client for synchronous sends, with the settings it was built from: the
    /// trust store is loaded and connections are kept between calls (an OTP sent over HTTPS
    /// pays no handshake when the connection is warm). Rebuilt when a setting, or the CA
    /// file's size or modification time, changes.
    static KEPT: std::cell::RefCell<Option<(String, http::ClientSettings, http::Client)>> =
        const { std::cell::RefCell::new(None) };
    /// Clients of endpoints that present a client certificate, by certificate and settings.
    static KEPT_CERTS: std::cell::RefCell<std::collections::HashMap<u64, http::Client>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Endpoints with client certificates whose clients a backend keeps, at most.
const KEPT_CERTS_MAX: usize = 64;

fn kept_client() -> Result<(http::ClientSettings, http::Client), String> {
    let key = format!(
        "{}|{}|{}|{}",
        crate::tls::file_stamp(&guc::string_value(&guc::TLS_CA_FILE)),
        guc::string_value(&guc::TIMEOUT),
        guc::ALLOW_PRIVATE_TARGETS.get(),
        guc::string_value(&guc::HTTP_PROXY),
    );
    KEPT.with(|k| {
        if let Some((seen, settings, client)) = k.borrow().as_ref() {
            if *seen == key {
                return Ok((settings.clone(), client.clone()));
            }
        }
        let settings = guc::client_settings(MAX_THREADS)?;
        let client = http::agent(&settings, None);
        KEPT_CERTS.with(|c| c.borrow_mut().clear());
        *k.borrow_mut() = Some((key, settings.clone(), client.clone()));
        Ok((settings, client))
    })
}

fn kept_cert_client(
    settings: &http::ClientSettings,
    cert: &str,
    key: &str,
) -> Result<http::Client, String> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&(cert, key), &mut h);
    let fp = std::hash::Hasher::finish(&h);
    if let Some(a) = KEPT_CERTS.with(|c| c.borrow().get(&fp).cloned()) {
        return Ok(a);
    }
    let a = http::agent(settings, Some(crate::tls::client_cert(cert, key)?));
    KEPT_CERTS.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= KEPT_CERTS_MAX {
            c.clear();
        }
        c.insert(fp, a.clone());
    });
    Ok(a)
}

/// A synchronous send, as the extension owner (the caller's identity recorded by the entry
/// point, src/gate.rs): `args` are webhook_send_sync's four, `event_type` the first again. Returns the answers, or
/// `{"error": {...}}`.
pub fn send_sync(event_type: Option<&str>, args: &[DatumWithOid]) -> Option<JsonB> {
    Spi::connect_mut(|client| {
        let table = client
            .update(
                "SELECT p.* FROM webhooks_internal._sync_prepare($1, $2, $3, $4) p",
                None,
                args,
            )
            .unwrap_or_else(|e| error!("{e}"));
        let cols = Columns::of(&table);
        crate::secrets::refresh();
        let requests: Vec<Request> = table
            .filter_map(|row| cols.row(&row))
            .map(|mut r| {
                // A secret that does not open fails the call: nothing goes out unsigned.
                if let Err(why) = crate::secrets::open_row(&mut r) {
                    ereport!(
                        ERROR,
                        PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
                        format!(
                            "endpoint \"{}\" cannot be sent to: {why}",
                            r.endpoint_id.as_deref().unwrap_or("")
                        )
                    );
                }
                Request::from(r)
            })
            .collect();
        let answers = answers(&requests, send_all(&requests));
        // (what the worker records should the caller roll back: the event without its data)
        let event = requests.first().map(|r| {
            json!({"event_id": r.event_id, "version": r.version, "source": r.source,
                   "tenant_id": r.tenant_id, "event_type": r.event_type})
        });
        client
            .update(
                "SELECT webhooks_internal._sync_finish($1, $2, $3)",
                Some(1),
                &[
                    event_type.into(),
                    event.map(JsonB).into(),
                    JsonB(answers).into(),
                ],
            )
            .and_then(|t| t.first().get_one::<JsonB>())
            .unwrap_or_else(|e| error!("{e}"))
    })
}

/// Whether this database's schema has `_sync_finish` (0.4.0 and later).
pub fn schema_has_finish() -> bool {
    Spi::get_one::<bool>(
        "SELECT pg_catalog.to_regprocedure('webhooks_internal._sync_finish(pg_catalog.text,pg_catalog.jsonb,pg_catalog.jsonb)') IS NOT NULL",
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// 0.3.0's HTTP half, kept for its SQL (`_send_sync`) and for endpoint_test: `targets` are
/// requests as JSON objects (the columns of `webhooks_internal.request`). One answer each.
#[pg_extern(volatile, schema = "webhooks_internal")]
fn _sync_send(event_type: &str, targets: JsonB) -> JsonB {
    crate::secrets::refresh();
    let requests: Vec<Request> = targets
        .0
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let mut row = serde_json::from_value::<Row>(t.clone()).unwrap_or_default();
            row.event_type.get_or_insert_with(|| event_type.to_string());
            if let Err(why) = crate::secrets::open_row(&mut row) {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
                    format!(
                        "endpoint \"{}\" cannot be sent to: {why}",
                        row.endpoint_id.as_deref().unwrap_or("")
                    )
                );
            }
            Request::from(row)
        })
        .collect();
    JsonB(answers(&requests, send_all(&requests)))
}

/// Each request's answer as `_sync_finish` reads it.
fn answers(requests: &[Request], outcomes: Vec<Outcome>) -> Value {
    Value::Array(
        requests
            .iter()
            .zip(outcomes)
            .map(|(r, o)| {
                // jsonb refuses U+0000: a receiver's NUL must not turn its 2xx into an error.
                let text = o.body.replace('\0', "");
                let mut body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
                strip_nul(&mut body);
                json!({
                    "delivery_id": (r.delivery_id != 0).then_some(r.delivery_id),
                    "endpoint_id": r.endpoint_id,
                    "endpoint_tenant": (!r.endpoint_tenant.is_empty()).then_some(&r.endpoint_tenant),
                    "status": o.status(),
                    "error": (!o.ok()).then(|| o.describe()),
                    "public_error": (!o.ok()).then(|| o.public()),
                    "body": body,
                    "raw_body": (!o.body.is_empty()).then(|| o.body.replace('\0', "")),
                    "started_us": o.started_at_us,
                    "duration_ms": o.duration_ms,
                })
            })
            .collect(),
    )
}

/// Sends every request at once (one outcome each, in order).
fn send_all(requests: &[Request]) -> Vec<Outcome> {
    let policy = guc::policy();
    let client = kept_client();
    let traceparent = Some(guc::string_value(&guc::TRACEPARENT)).filter(|t| !t.is_empty());
    let mut outcomes: Vec<Option<Outcome>> = vec![None; requests.len()];
    let mut jobs = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let (settings, shared) = match &client {
            Ok(c) => c,
            Err(e) => {
                outcomes[i] = Some(Outcome::failed(i, e.clone()));
                continue;
            }
        };
        if let Err(e) = target::check_url(&r.url, policy) {
            // Publishers read this error: the URL (which may carry a token) stays out of it.
            let why = format!("refused: {}", e.replace(&r.url, "<endpoint url>"));
            outcomes[i] = Some(Outcome::failed(i, why));
            continue;
        }
        let agent = match &r.client_cert {
            Some((c, k)) => match kept_cert_client(settings, c, k) {
                Ok(a) => a,
                Err(e) => {
                    let why = format!("endpoint client certificate unusable: {e}");
                    outcomes[i] = Some(Outcome::failed(i, why));
                    continue;
                }
            },
            None => shared.clone(),
        };
        let (Ok(keys), Ok(headers)) = (
            r.format.keys(&r.secrets),
            crate::headers::parse_object(r.headers.as_deref()),
        ) else {
            outcomes[i] = Some(Outcome::failed(
                i,
                "endpoint secret or headers unusable".into(),
            ));
            continue;
        };
        jobs.push(Job {
            tag: i,
            url: r.url.clone(),
            msg_id: r.event_id.clone(),
            event_type: r.event_type.clone(),
            attempt: r.attempts + 1,
            body: Arc::new(r.body.clone()),
            keys: Arc::new(keys),
            headers: Arc::new(headers),
            traceparent: r.traceparent.clone().or_else(|| traceparent.clone()),
            format: r.format.clone(),
            agent: Some(agent),
            not_after: None,
        });
    }
    // Every endpoint at once (at most MAX_THREADS requests at a time), from threads that never
    // touch PostgreSQL and start with every signal blocked. Signals are blocked only while the
    // threads are spawned: the session stays cancellable (and statement_timeout works) while
    // they send; a cancelled caller leaves them to finish within webhooks.timeout.
    // One deadline for the call: a target whose turn comes after webhooks.timeout is not sent
    // (said in its answer), so a call lasts at most twice the timeout however many endpoints a
    // tenant's admin subscribed to its type.
    let n = jobs.len();
    let timeout = guc::timeout();
    let deadline = std::time::Instant::now() + timeout;
    // (said in words made here: the threads never read a setting)
    let late: Arc<str> = format!(
        "not sent: webhooks.timeout ({}) ran out before its turn in this call",
        guc::string_value(&guc::TIMEOUT)
    )
    .into();
    let queue = Arc::new(std::sync::Mutex::new(jobs));
    let (tx, rx) = std::sync::mpsc::channel::<Outcome>();
    let spawned = http::with_signals_blocked(|| {
        (0..n.min(MAX_THREADS))
            .filter_map(|i| {
                let (queue, tx, late) = (Arc::clone(&queue), tx.clone(), Arc::clone(&late));
                std::thread::Builder::new()
                    .name(format!("webhooks-sync-{i}"))
                    .spawn(move || loop {
                        let job = match queue.lock() {
                            Ok(mut q) => q.pop(),
                            Err(_) => None,
                        };
                        let Some(job) = job else { return };
                        let Some(agent) = job.agent.clone() else {
                            continue;
                        };
                        let outcome = if std::time::Instant::now() >= deadline {
                            Outcome::failed(job.tag, late.to_string())
                        } else {
                            http::send(&agent, &job)
                        };
                        if tx.send(outcome).is_err() {
                            return;
                        }
                    })
                    .ok()
            })
            .count()
    });
    drop(tx);
    let mut sent: Vec<Outcome> = Vec::with_capacity(n);
    if spawned > 0 {
        while sent.len() < n {
            match rx.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(o) => sent.push(o),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    pgrx::check_for_interrupts!();
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
    for o in sent {
        let tag = o.tag;
        outcomes[tag] = Some(o);
    }
    outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| o.unwrap_or_else(|| Outcome::failed(i, "no response".into())))
        .collect()
}
