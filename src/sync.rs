//! The HTTP half of `webhook_send_sync` (the SQL half, with its errors, is in sql/sync.sql):
//! delivers one event to every target at once from the calling session and reports each answer.
//! No SPI here; only the extension owner may call it (it receives secrets).

use crate::envelope::{self, Event};
use crate::http::{self, Job, Outcome};
use crate::{guc, target};
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

fn text<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
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

/// `targets`: rows of `webhooks_internal._sync_prepare` as a JSON array. Returns one answer per target.
#[pg_extern(volatile, schema = "webhooks_internal")]
fn _sync_send(event_type: &str, targets: JsonB) -> JsonB {
    let targets = targets.0.as_array().cloned().unwrap_or_default();
    let Some(first) = targets.first() else {
        return JsonB(json!([]));
    };
    let event_id = text(first, "event_id").unwrap_or_default().to_string();
    let event = Event {
        id: &event_id,
        event_type,
        version: text(first, "version").unwrap_or("1"),
        source: text(first, "source").unwrap_or(""),
        occurred_at_us: first
            .get("occurred_us")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        tenant_id: text(first, "tenant_id"),
        actor_json: text(first, "actor"),
        data_json: text(first, "data").unwrap_or("{}"),
    };
    let body = Arc::new(envelope::build(&event));
    let policy = guc::policy();
    let client = kept_client();
    let traceparent = Some(guc::string_value(&guc::TRACEPARENT)).filter(|t| !t.is_empty());

    let mut outcomes: Vec<Option<Outcome>> = vec![None; targets.len()];
    let mut jobs = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let refuse = |e: String| {
            Some(Outcome {
                tag: i,
                error: Some(e),
                started_at_us: http::now_us(),
                ..Default::default()
            })
        };
        let url = text(t, "url").unwrap_or_default();
        let (settings, shared) = match &client {
            Ok(c) => c,
            Err(e) => {
                outcomes[i] = refuse(e.clone());
                continue;
            }
        };
        if let Err(e) = target::check_url(url, policy) {
            // Publishers read this error: the URL (which may carry a token) stays out of it.
            outcomes[i] = refuse(format!("refused: {}", e.replace(url, "<endpoint url>")));
            continue;
        }
        let agent = match (text(t, "tls_client_cert"), text(t, "tls_client_key")) {
            (Some(c), Some(k)) => match kept_cert_client(settings, c, k) {
                Ok(a) => a,
                Err(e) => {
                    outcomes[i] = refuse(format!("endpoint client certificate unusable: {e}"));
                    continue;
                }
            },
            _ => shared.clone(),
        };
        let secrets: Vec<String> = ["secret", "previous_secret"]
            .iter()
            .filter_map(|k| text(t, k).map(str::to_string))
            .collect();
        let format = http::Format::from_columns(
            text(t, "format").unwrap_or("standard-webhooks"),
            text(t, "header_prefix"),
            text(t, "signature"),
        );
        let (Ok(keys), Ok(headers)) = (
            format.keys(&secrets),
            crate::headers::parse_object(text(t, "headers")),
        ) else {
            outcomes[i] = refuse("endpoint secret or headers unusable".into());
            continue;
        };
        // (an hmac-hex body names its endpoint: one body per target)
        let body = match &format {
            http::Format::StandardWebhooks | http::Format::StandardWebhooksV1a => Arc::clone(&body),
            http::Format::HmacHex { .. } => Arc::new(envelope::build_hmac_hex(
                &event,
                text(t, "tenant_slug"),
                1,
                text(t, "endpoint_id").unwrap_or_default(),
            )),
        };
        jobs.push(Job {
            tag: i,
            url: url.to_string(),
            msg_id: event_id.clone(),
            event_type: event_type.to_string(),
            attempt: 1,
            body,
            keys: Arc::new(keys),
            headers: Arc::new(headers),
            traceparent: traceparent.clone(),
            format,
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
    let timeout = crate::guc::duration(&crate::guc::TIMEOUT, std::time::Duration::from_secs(10));
    let deadline = std::time::Instant::now() + timeout;
    let queue = Arc::new(std::sync::Mutex::new(jobs));
    let (tx, rx) = std::sync::mpsc::channel::<Outcome>();
    let spawned = http::with_signals_blocked(|| {
        (0..n.min(MAX_THREADS))
            .filter_map(|i| {
                let (queue, tx) = (Arc::clone(&queue), tx.clone());
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
                            Outcome {
                                tag: job.tag,
                                error: Some(format!(
                                    "not sent: webhooks.timeout ({}) ran out before its turn in this call",
                                    crate::guc::string_value(&crate::guc::TIMEOUT)
                                )),
                                started_at_us: http::now_us(),
                                ..Default::default()
                            }
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
    let answers: Vec<Value> = targets
        .iter()
        .zip(outcomes)
        .map(|(t, o)| {
            let o = o.unwrap_or_else(|| Outcome {
                error: Some("no response".into()),
                ..Default::default()
            });
            // jsonb refuses U+0000: a receiver's NUL must not turn its 2xx into an error.
            let text = o.body.replace('\0', "");
            let mut body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
            strip_nul(&mut body);
            json!({
                "delivery_id": t.get("delivery_id"),
                "endpoint_id": t.get("endpoint_id"),
                "endpoint_tenant": t.get("endpoint_tenant"),
                "url": t.get("url"),
                "status": o.status,
                "error": (!o.ok()).then(|| o.describe()),
                "public_error": (!o.ok()).then(|| o.public()),
                "body": body,
                "raw_body": (!o.body.is_empty()).then(|| o.body.replace('\0', "")),
                "started_us": o.started_at_us,
                "duration_ms": o.duration_ms,
            })
        })
        .collect();
    JsonB(Value::Array(answers))
}
