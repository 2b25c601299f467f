//! Pruning, releases and other chores, in small steps that never hold up delivery.

use super::*;
use crate::http::{self};
use std::time::{Duration, Instant};

/// Failed synchronous sends whose transaction did not commit (src/handoff.rs), recorded so
/// that attempts, dead_letters and endpoint_health show them.
pub(super) fn record_sync_failures() {
    in_transaction("recording failed synchronous sends", || {
        Spi::connect_mut(|client| {
            if !extension_present(client) {
                return;
            }
            for note in crate::handoff::drain() {
                if let Err(e) = client.update(
                    "SELECT webhooks_internal._sync_failure_record($1::pg_catalog.jsonb)",
                    None,
                    &[note.as_str().into()],
                ) {
                    warning!("webhooks worker: a failed synchronous send was not recorded: {e}");
                }
            }
        })
    });
}

/// Rows one pruning statement deletes at most, and how long one housekeeping pass may run
/// before the worker goes back to delivering (the pass goes on a second later).
pub(super) const PRUNE_STEP: i32 = 5_000;
pub(super) const HOUSEKEEPING_BUDGET: Duration = Duration::from_millis(250);
/// Endpoints (and key pairs) resealed per transaction: each takes an AES-GCM open and seal and
/// an endpoint update, about 50 us.
pub(super) const RESEAL_STEP: i32 = 200;

/// Runs one step of housekeeping (a function of sql/src/housekeeping.sql) in its own transaction,
/// with its own timeout, and returns how many rows it changed; a failure is logged and the
/// next step runs anyway.
pub(super) fn chore(what: &str, sql: &str, args: &[pgrx::datum::DatumWithOid]) -> i64 {
    in_transaction(what, || {
        Spi::connect_mut(|client| {
            if !extension_present(client) {
                return 0;
            }
            match client.update(sql, Some(1), args) {
                Ok(t) => t.first().get::<i64>(1).ok().flatten().unwrap_or(0),
                Err(e) => {
                    warning!("webhooks worker: {what} failed: {e}");
                    0
                }
            }
        })
    })
    .unwrap_or(0)
}

/// Prunes history past the retention in steps of PRUNE_STEP rows, each its own transaction,
/// until done or out of budget; then the smaller chores. True when rows were left to prune.
pub(super) fn housekeeping(settings: &Settings) -> bool {
    let keep = format!("{} seconds", settings.retention.as_secs());
    let keep_dead = format!("{} seconds", settings.dead_retention.as_secs());
    // Event ids are ULIDs: every event published before the cutoff has a smaller id, so the
    // primary key finds them (no index on occurred_at on the publish path).
    let cutoff_ms = ((http::now_us() / 1000) as u64)
        .saturating_sub(settings.retention.min(settings.dead_retention).as_millis() as u64);
    let before = format!("evt_{}", crate::ids::ulid(cutoff_ms, [0; 10]));
    let started = Instant::now();
    let mut behind = false;
    let prune: [(&str, &str, &str); 3] = [
        (
            "pruning succeeded deliveries",
            "SELECT webhooks_internal._prune_succeeded($1::pg_catalog.interval, $2)",
            keep.as_str(),
        ),
        (
            "pruning dead deliveries",
            "SELECT webhooks_internal._prune_dead($1::pg_catalog.interval, $2)",
            keep_dead.as_str(),
        ),
        (
            "pruning events",
            "SELECT webhooks_internal._prune_events($1, $2)",
            before.as_str(),
        ),
    ];
    for (what, sql, arg) in prune {
        loop {
            if chore(what, sql, &[arg.into(), PRUNE_STEP.into()]) < PRUNE_STEP as i64 {
                break;
            }
            if started.elapsed() > HOUSEKEEPING_BUDGET || signals::stopping() {
                behind = true;
                break;
            }
        }
    }
    chore(
        "releasing parked deliveries",
        "SELECT webhooks_internal._release_parked($1)",
        &[PRUNE_STEP.into()],
    );
    chore(
        "deleting orphans",
        "SELECT webhooks_internal._delete_orphans($1)",
        &[PRUNE_STEP.into()],
    );
    chore(
        "removing bindings of dropped roles",
        "SELECT webhooks_internal._forget_dropped_roles()",
        &[],
    );
    // Secrets not sealed under the key file's current key (a rotation, an upgrade, a restored
    // dump of plain ones) are sealed again in small steps while delivery goes on.
    loop {
        let n = chore(
            "resealing secrets under the current key",
            "SELECT webhooks_internal._reseal_step($1)",
            &[RESEAL_STEP.into()],
        );
        if n < RESEAL_STEP as i64 {
            break;
        }
        if started.elapsed() > HOUSEKEEPING_BUDGET || signals::stopping() {
            behind = true;
            break;
        }
    }
    behind
}
