//! Leasing due deliveries: the claim statement (sql/src/claim.sql), what it is told, and its rows.

use super::*;
use crate::request::Columns;
use std::collections::HashMap;
use std::time::Duration;

/// The claim lives in SQL (`webhooks_internal._claim`) so the isolation specs exercise the same
/// statement. It returns requests (`webhooks_internal.request`), read by column name.
pub(super) const CLAIM_SQL: &str =
    "SELECT c.contended, (c.request).* FROM webhooks_internal._claim($1::pg_catalog.int4, $2::pg_catalog.interval, $3, \
     $4::pg_catalog.int4, $5::pg_catalog.int4, $6::pg_catalog.text[], $7::pg_catalog.int4, $8::pg_catalog.int4, \
     $9::pg_catalog.text[], $10::pg_catalog.int8[], $11::pg_catalog.text[], $12::pg_catalog.int8[], \
     $13::pg_catalog.text[]) c";

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

pub(super) fn claim(settings: &Settings, ask: Ask) -> (Vec<Request>, bool) {
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
        // The claim's commit need not wait for its WAL to reach the disk (a flush is about a
        // fifth of a millisecond here, on every wake-up before the first byte): a lease lost
        // in a crash leaves its row pending, sent again as an expired lease would be (at least
        // once either way), and the record that follows flushes it with its own commit.
        if let Err(e) = client.update("SET LOCAL synchronous_commit = off", None, &[]) {
            warning!("webhooks worker: claim failed: {e}");
            return (Vec::new(), false);
        }
        let table = match client.update(CLAIM_SQL, None, &args) {
            Ok(t) => t,
            Err(e) => {
                warning!("webhooks worker: claim failed: {e}");
                return (Vec::new(), false);
            }
        };
        // (said on every row by the claim, on a row of its own when it took nothing)
        let cols = Columns::of(&table);
        let mut contended = false;
        let mut out = Vec::with_capacity(table.len());
        // Secrets are opened here, once per sealed value while the key file stays as it is.
        crate::secrets::refresh();
        let mut unreadable = Unreadable::default();
        for row in table {
            contended |= cols.get::<bool>(&row, "contended").unwrap_or(false);
            if let Some(mut r) = cols.row(&row) {
                match crate::secrets::open_row(&mut r) {
                    Ok(()) => out.push(Request::from(r)),
                    Err(why) => unreadable.add(r, why),
                }
            }
        }
        if !unreadable.ids.is_empty() {
            unreadable.hold(client);
        }
        (out, contended)
    })
}

/// Claimed rows whose secrets do not open: never sent (unsigned, or signed with something
/// else), given back in the claim's own transaction with their endpoints paused and the reason
/// noted (sql/src/secrets.sql), and said in the log once per endpoint per hold.
#[derive(Default)]
struct Unreadable {
    ids: Vec<i64>,
    leases: Vec<i64>,
    endpoints: Vec<String>,
    reasons: Vec<String>,
}

impl Unreadable {
    fn add(&mut self, r: crate::request::Row, why: String) {
        let endpoint = r.endpoint_id.unwrap_or_default();
        if !self.endpoints.contains(&endpoint) {
            warning!(
                "webhooks worker: nothing is sent to endpoint \"{endpoint}\" for now: {why}; its deliveries wait, and its state says why (webhooks.endpoint_health)"
            );
        }
        self.ids.push(r.delivery_id.unwrap_or(0));
        self.leases.push(r.lease_us.unwrap_or(0));
        self.endpoints.push(endpoint);
        self.reasons.push(why);
    }

    fn hold(self, client: &mut pgrx::spi::SpiClient<'_>) {
        if let Err(e) = client.update(
            "SELECT webhooks_internal._hold_unreadable($1, $2, $3, $4)",
            None,
            &[
                self.ids.into(),
                self.leases.into(),
                self.endpoints.into(),
                self.reasons.into(),
            ],
        ) {
            // (their leases end and they are claimed again)
            warning!("webhooks worker: holding deliveries whose secrets do not open failed: {e}");
        }
    }
}

/// Groups a claim's rows into requests: one per delivery, batched endpoints' rows by endpoint
/// in chunks of batch_max.
pub(super) fn group(mut claimed: Vec<Request>) -> Vec<Vec<Request>> {
    // Publish order (the claim returns its rows in no order): an endpoint's requests are
    // queued, and sent, oldest event first.
    claimed.sort_by(|a, b| (&a.event_id, a.delivery_id).cmp(&(&b.event_id, b.delivery_id)));
    let mut out = Vec::new();
    let mut batches: HashMap<String, Vec<Request>> = HashMap::new();
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
