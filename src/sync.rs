//! The HTTP half of `webhook_send_sync` (the SQL half, with its errors, is in sql/api.sql):
//! delivers one event to every target at once from the calling session and reports each answer.
//! No SPI here; only the extension owner may call it (it receives secrets).

use crate::envelope::{self, Event};
use crate::http::{self, Job, Outcome};
use crate::{guc, signing, target};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::sync::Arc;

fn text<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// `targets`: rows of `webhooks._sync_prepare` as a JSON array. Returns one answer per target.
#[pg_extern(volatile)]
fn _sync_send(event_type: &str, targets: JsonB) -> JsonB {
    let targets = targets.0.as_array().cloned().unwrap_or_default();
    let Some(first) = targets.first() else {
        return JsonB(json!([]));
    };
    let event_id = text(first, "event_id").unwrap_or_default().to_string();
    let body = Arc::new(envelope::build(&Event {
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
    }));
    let policy = guc::policy();
    let client = guc::client_settings(1);

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
        let client = match &client {
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
            (Some(c), Some(k)) => match crate::tls::client_cert(c, k) {
                Ok(cert) => http::agent(client, Some(cert)),
                Err(e) => {
                    outcomes[i] = refuse(format!("endpoint client certificate unusable: {e}"));
                    continue;
                }
            },
            _ => http::agent(client, None),
        };
        let secrets = ["secret", "previous_secret"]
            .iter()
            .filter_map(|k| text(t, k));
        let (Ok(keys), Ok(headers)) = (
            signing::keys(secrets),
            crate::headers::parse_object(text(t, "headers")),
        ) else {
            outcomes[i] = refuse("endpoint secret or headers unusable".into());
            continue;
        };
        jobs.push(Job {
            tag: i,
            url: url.to_string(),
            msg_id: event_id.clone(),
            event_type: event_type.to_string(),
            attempt: 1,
            body: Arc::clone(&body),
            keys: Arc::new(keys),
            headers: Arc::new(headers),
            agent: Some(agent),
        });
    }
    // Every endpoint at once, from threads that never touch PostgreSQL and block all signals.
    let sent: Vec<Outcome> = http::with_signals_blocked(|| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .filter_map(|j| {
                    j.agent
                        .as_ref()
                        .map(|a| scope.spawn(move || http::send(a, j)))
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        })
    });
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
            let body = serde_json::from_str::<Value>(&o.body)
                .unwrap_or_else(|_| Value::String(o.body.clone()));
            json!({
                "delivery_id": t.get("delivery_id"),
                "endpoint_id": t.get("endpoint_id"),
                "url": t.get("url"),
                "status": o.status,
                "error": (!o.ok()).then(|| o.describe()),
                "body": body,
                "raw_body": (!o.body.is_empty()).then(|| o.body.replace('\0', "")),
                "started_us": o.started_at_us,
                "duration_ms": o.duration_ms,
            })
        })
        .collect();
    JsonB(Value::Array(answers))
}
