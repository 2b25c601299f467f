//! Leasing due deliveries: the claim statement (sql/worker.sql), what it is told, and its rows.

use super::*;
use crate::envelope::{self, Event};
use crate::http::{self};
use std::collections::HashMap;
use std::time::Duration;

/// One claimed delivery (or a batch of them for batched endpoints).
pub(super) struct Claimed {
    pub(super) delivery_id: i64,
    /// The claim's lease end in Unix microseconds: its token. An outcome is recorded only
    /// while the row still carries it, so a late answer never overwrites a newer claim.
    pub(super) lease_us: i64,
    pub(super) attempts: i32,
    pub(super) event_id: String,
    pub(super) event_type: String,
    pub(super) occurred_us: i64,
    pub(super) body: String,
    pub(super) endpoint_id: String,
    pub(super) url: String,
    pub(super) secrets: Vec<String>,
    pub(super) headers: Option<String>,
    pub(super) batch_max: i32,
    pub(super) client_cert: Option<(String, String)>,
    /// The endpoint's tenant (its share of the senders is counted per tenant) and cap.
    pub(super) endpoint_tenant: String,
    pub(super) max_in_flight: usize,
    pub(super) traceparent: Option<String>,
    pub(super) format: http::Format,
    /// What it costs the worker's memory while claimed (as the claim counted it).
    pub(super) bytes: i64,
}

/// The claim lives in SQL (`webhooks_internal._claim`) so the isolation specs exercise the same statement.
pub(super) const CLAIM_SQL: &str =
    "SELECT * FROM webhooks_internal._claim($1::pg_catalog.int4, $2::pg_catalog.interval, $3, \
     $4::pg_catalog.int4, $5::pg_catalog.int4, $6::pg_catalog.text[], $7::pg_catalog.int4, $8::pg_catalog.int4, \
     $9::pg_catalog.text[], $10::pg_catalog.int8[], $11::pg_catalog.text[], $12::pg_catalog.int8[], \
     $13::pg_catalog.text[])";

pub(super) const EXPAND_SQL: &str = "SELECT webhooks_internal._expand($1::pg_catalog.int4)";

/// Delivery rows written from fanouts per claim at most (about 50 ms of inserts).
pub(super) const EXPAND_STEP: i32 = 10_000;

/// Requests an endpoint may have leased (queued here or in flight), in units of what it may
/// have in flight: the claim leases this far ahead so the senders never wait on the database.
pub(super) const LEASE_AHEAD: i32 = 4;

/// What the sender side tells the claim, refreshed every FAST_EVERY: which endpoints answer fast
/// (they lease further ahead) and which have had work lately (the claim's look at the due rows
/// is sized by what those may take).
#[derive(Clone, Default)]
pub(super) struct SenderView {
    pub(super) fast: Vec<String>,
    pub(super) active: Vec<String>,
}

/// How often the sender side tells the claim which endpoints answer fast.
pub(super) const FAST_EVERY: Duration = Duration::from_millis(100);

/// Writes a slice of the deliveries of bulk publishes (fanouts), in a transaction of its own:
/// one that fails (logged) never stops the claim. True when more is left to write.
pub(super) fn expand() -> bool {
    in_transaction("writing the deliveries of a bulk publish", || {
        Spi::connect_mut(|client| {
            if !extension_present(client) {
                return false;
            }
            client
                .update(EXPAND_SQL, Some(1), &[EXPAND_STEP.into()])
                .map(|t| t.first().get::<i32>(1).ok().flatten().unwrap_or(0) >= EXPAND_STEP)
                .unwrap_or(false)
        })
    })
    .unwrap_or(false)
}

/// What one claim asks for, beyond the settings.
pub(super) struct Ask {
    pub(super) scan_leases: bool,
    pub(super) lease: Duration,
    pub(super) senders: usize,
    pub(super) view: SenderView,
    /// The workers of this database running now, and this one's rank among them.
    pub(super) workers: usize,
    pub(super) rank: usize,
    pub(super) memory: Memory,
}

pub(super) fn claim(settings: &Settings, ask: Ask) -> (Vec<Claimed>, bool) {
    let Ask {
        scan_leases,
        lease,
        senders,
        view,
        workers,
        rank,
        memory,
    } = ask;
    let lease = format!("{} milliseconds", lease.as_millis());
    Spi::connect_mut(|client| {
        if !extension_present(client) {
            return (Vec::new(), false);
        }
        let args = [
            settings.batch_size.into(),
            lease.as_str().into(),
            scan_leases.into(),
            (senders as i32).into(),
            LEASE_AHEAD.into(),
            view.fast.into(),
            (workers as i32).into(),
            (rank as i32).into(),
            view.active.into(),
            memory.limits.to_vec().into(),
            memory.ids.into(),
            memory.bytes.into(),
            memory.full.into(),
        ];
        let table = match client.update(CLAIM_SQL, None, &args) {
            Ok(t) => t,
            Err(e) => {
                warning!("webhooks worker: claim failed: {e}");
                return (Vec::new(), false);
            }
        };
        // (set by the claim when another worker's claim held some of its candidates; with one
        // worker there is nobody to wait for)
        let contended = workers > 1
            && client
                .select(
                    "SELECT pg_catalog.current_setting('webhooks_internal.claim_contended', true)",
                    Some(1),
                    &[],
                )
                .ok()
                .and_then(|t| t.first().get::<String>(1).ok().flatten())
                .is_some_and(|v| v == "on");
        let mut out = Vec::with_capacity(table.len());
        for row in table {
            let s = |i: usize| row.get::<String>(i).ok().flatten();
            let event_id = s(3).unwrap_or_default();
            let event_type = s(4).unwrap_or_default();
            let occurred_us = row.get::<i64>(7).ok().flatten().unwrap_or(0);
            let data = s(10).unwrap_or_else(|| "{}".into());
            let actor = s(9);
            let tenant = s(8);
            let format = http::Format::from_columns(
                s(23).as_deref().unwrap_or("standard-webhooks"),
                s(24).as_deref(),
                s(26).as_deref(),
            );
            let endpoint_id = s(11).unwrap_or_default();
            let attempts = row.get::<i32>(2).ok().flatten().unwrap_or(0);
            let (version, source) = (s(5), s(6));
            let event = Event {
                id: &event_id,
                event_type: &event_type,
                version: version.as_deref().unwrap_or("1"),
                source: source.as_deref().unwrap_or(""),
                occurred_at_us: occurred_us,
                tenant_id: tenant.as_deref(),
                actor_json: actor.as_deref(),
                data_json: &data,
            };
            // (the hmac-hex body names its attempt: made for the one this claim sends)
            let body = match format {
                http::Format::StandardWebhooks | http::Format::StandardWebhooksV1a => {
                    envelope::build(&event)
                }
                http::Format::HmacHex { .. } => {
                    envelope::build_hmac_hex(&event, s(25).as_deref(), attempts + 1, &endpoint_id)
                }
            };
            out.push(Claimed {
                delivery_id: row.get::<i64>(1).ok().flatten().unwrap_or(0),
                attempts,
                event_id,
                event_type,
                occurred_us,
                body,
                endpoint_id,
                url: s(12).unwrap_or_default(),
                secrets: [s(13), s(14)].into_iter().flatten().collect(),
                headers: s(15),
                batch_max: row.get::<i32>(16).ok().flatten().unwrap_or(1),
                client_cert: s(17).zip(s(18)),
                lease_us: row.get::<i64>(19).ok().flatten().unwrap_or(0),
                max_in_flight: row.get::<i32>(20).ok().flatten().unwrap_or(1).max(1) as usize,
                endpoint_tenant: s(21).unwrap_or_default(),
                traceparent: s(22),
                format,
                bytes: row.get::<i64>(27).ok().flatten().unwrap_or(1024),
            });
        }
        (out, contended)
    })
}

/// Groups a claim's rows into requests: one per delivery, batched endpoints' rows by endpoint
/// in chunks of batch_max.
pub(super) fn group(mut claimed: Vec<Claimed>) -> Vec<Vec<Claimed>> {
    // Publish order (the claim returns its rows in no order): an endpoint's requests are
    // queued, and sent, oldest event first.
    claimed.sort_by(|a, b| (&a.event_id, a.delivery_id).cmp(&(&b.event_id, b.delivery_id)));
    let mut out = Vec::new();
    let mut batches: HashMap<String, Vec<Claimed>> = HashMap::new();
    for c in claimed {
        if c.batch_max > 1 {
            batches.entry(c.endpoint_id.clone()).or_default().push(c);
        } else {
            out.push(vec![c]);
        }
    }
    for (_, mut rows) in batches {
        rows.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        let max = rows[0].batch_max.max(1) as usize;
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(max));
            out.push(std::mem::replace(&mut rows, rest));
        }
    }
    out
}
