//! `webhook_send_sync`: synchronous events (challenge delivery, `action.verify`) delivered from
//! the calling session. Any non-2xx fails the caller's statement, as the seed pages require.

use crate::envelope::{self, Event};
use crate::http::{self, Job};
use crate::{guc, signing, target};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use std::sync::Arc;

struct Target {
    delivery_id: i64,
    endpoint_id: String,
    url: String,
    secrets: Vec<String>,
    headers: Option<String>,
}

fn raise(code: &str, message: &str, detail: &str) -> ! {
    let args = [code.into(), message.into(), detail.into()];
    let _ = Spi::run_with_args("SELECT webhooks._raise($1, $2, $3)", &args);
    error!("{message}");
}

/// Runs as the extension owner so publishers never see endpoint secrets.
#[pg_extern(volatile, security_definer)]
#[search_path(pg_catalog, webhooks)]
fn webhook_send_sync(
    event_type: &str,
    data: JsonB,
    tenant_id: default!(Option<&str>, "NULL"),
    actor: default!(Option<JsonB>, "NULL"),
) -> JsonB {
    let args = [
        event_type.into(),
        data.into(),
        tenant_id.into(),
        actor.into(),
    ];
    let mut event_id = String::new();
    let mut body = String::new();
    let mut targets = Vec::new();
    Spi::connect_mut(|client| {
        let rows = client
            .update(
                "SELECT * FROM webhooks._sync_prepare($1, $2, $3, $4)",
                None,
                &args,
            )
            .unwrap_or_else(|e| error!("webhook_send_sync: {e}"));
        for row in rows {
            let s = |i: usize| row.get::<String>(i).ok().flatten();
            if event_id.is_empty() {
                event_id = s(2).unwrap_or_default();
                let tenant = s(5);
                let actor = s(6);
                body = envelope::build(&Event {
                    id: &event_id,
                    event_type,
                    version: s(3).as_deref().unwrap_or("1"),
                    source: s(4).as_deref().unwrap_or(""),
                    occurred_at_us: row.get::<i64>(7).ok().flatten().unwrap_or(0),
                    tenant_id: tenant.as_deref(),
                    actor_json: actor.as_deref(),
                    data_json: &s(8).unwrap_or_else(|| "{}".into()),
                });
            }
            targets.push(Target {
                delivery_id: row.get::<i64>(1).ok().flatten().unwrap_or(0),
                endpoint_id: s(9).unwrap_or_default(),
                url: s(10).unwrap_or_default(),
                secrets: [s(11), s(12)].into_iter().flatten().collect(),
                headers: s(13),
            });
        }
    });
    if targets.is_empty() {
        raise(
            "WH002",
            &format!("no enabled endpoint subscribes to synchronous event type \"{event_type}\""),
            "create one with webhooks.endpoint_create(url, ARRAY['<type>'])",
        );
    }

    let policy = guc::policy();
    let timeout = guc::duration(&guc::TIMEOUT, std::time::Duration::from_secs(10));
    let body = Arc::new(body);
    let mut jobs = Vec::new();
    let mut outcomes: Vec<Option<http::Outcome>> = vec![None; targets.len()];
    for (i, t) in targets.iter().enumerate() {
        let refused = |e: String| {
            Some(http::Outcome {
                tag: i,
                error: Some(e),
                started_at_us: http::now_us(),
                ..Default::default()
            })
        };
        if let Err(e) = target::check_url(&t.url, policy) {
            outcomes[i] = refused(format!("refused: {e}"));
            continue;
        }
        let keys: Result<Vec<_>, _> = t.secrets.iter().map(|s| signing::secret_key(s)).collect();
        let Ok(keys) = keys else {
            outcomes[i] = refused("endpoint secret unusable".into());
            continue;
        };
        let headers: Vec<(String, String)> = t
            .headers
            .as_deref()
            .and_then(|h| serde_json::from_str::<serde_json::Map<String, Value>>(h).ok())
            .map(|m| {
                m.into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        jobs.push(Job {
            tag: i,
            url: t.url.clone(),
            msg_id: event_id.clone(),
            event_type: event_type.to_string(),
            attempt: 1,
            body: Arc::clone(&body),
            keys: Arc::new(keys),
            headers: Arc::new(headers),
        });
    }
    // All endpoints at once, from threads that never touch PostgreSQL and block all signals.
    let agent = http::agent(timeout, 1, policy.allow_private);
    let sent: Vec<http::Outcome> = http::with_signals_blocked(|| {
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|j| scope.spawn(|| http::send(&agent, j)))
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        })
    });
    for o in sent {
        let tag = o.tag;
        outcomes[tag] = Some(o);
    }

    let mut ids = Vec::new();
    let mut codes = Vec::new();
    let mut errors = Vec::new();
    let mut started = Vec::new();
    let mut durations = Vec::new();
    let mut bodies = Vec::new();
    let mut responses = Vec::new();
    let mut failures = Vec::new();
    for (t, o) in targets.iter().zip(outcomes.iter()) {
        let o = o.clone().unwrap_or_else(|| http::Outcome {
            error: Some("no response".into()),
            ..Default::default()
        });
        if !o.ok() {
            failures.push(format!(
                "endpoint {} ({}): {}",
                t.endpoint_id,
                t.url,
                o.describe()
            ));
        }
        let answer = serde_json::from_str::<Value>(&o.body)
            .unwrap_or_else(|_| Value::String(o.body.clone()));
        responses.push(json!({"endpoint_id": t.endpoint_id, "status": o.status, "body": answer, "duration_ms": o.duration_ms}));
        ids.push(t.delivery_id);
        codes.push(o.status.map(i32::from));
        errors.push(o.error.clone().or_else(|| (!o.ok()).then(|| o.describe())));
        started.push(o.started_at_us);
        durations.push(o.duration_ms);
        bodies.push((!o.body.is_empty()).then(|| o.body.replace('\0', "")));
    }
    let args = [
        ids.into(),
        codes.into(),
        errors.into(),
        started.into(),
        durations.into(),
        bodies.into(),
    ];
    Spi::run_with_args(
        "SELECT webhooks._sync_record($1, $2, $3, $4, $5, $6)",
        &args,
    )
    .unwrap_or_else(|e| error!("webhook_send_sync: recording attempts failed: {e}"));
    if !failures.is_empty() {
        raise(
            "WH001",
            &format!(
                "synchronous webhook {event_type} failed: {}",
                failures.join("; ")
            ),
            &format!("event {event_id}"),
        );
    }
    JsonB(json!({"event_id": event_id, "responses": responses}))
}
