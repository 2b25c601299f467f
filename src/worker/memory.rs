//! What the worker holds of claimed deliveries, held to webhooks.worker_memory.

use super::*;
use std::collections::HashMap;

/// Claimed deliveries held by one worker at most (queued or in flight, counted in rows, a batch
/// being as many as it holds); their bodies are held to webhooks.worker_memory in bytes too
/// (`Memory`).
pub(super) const MAX_OUTSTANDING: usize = 20_000;

/// What the claim is told of the worker's memory: [bytes it may still hold, of which for
/// endpoints that are not fast, the share of one endpoint, 1 when it holds nothing], and what
/// each endpoint holds. So an
/// endpoint holds at most a sixteenth of webhooks.worker_memory and slow and silent ones
/// together three quarters: the rest is always there for fast ones.
pub(super) struct Memory {
    pub(super) limits: [i64; 4],
    pub(super) ids: Vec<String>,
    pub(super) bytes: Vec<i64>,
    /// Endpoints that could not take one more row of the size they hold now.
    pub(super) full: Vec<String>,
}

/// The bodies a worker holds, by endpoint: (bytes, rows).
#[derive(Default)]
pub(super) struct Held {
    pub(super) by_endpoint: HashMap<String, (i64, i64)>,
    pub(super) total: i64,
}

impl Held {
    pub(super) fn add(&mut self, members: &[Request], sign: i64) {
        for c in members {
            let e = self.by_endpoint.entry(c.endpoint_id.clone()).or_default();
            e.0 += sign * c.bytes;
            e.1 += sign;
            self.total += sign * c.bytes;
            if e.0 <= 0 || e.1 <= 0 {
                self.by_endpoint.remove(&c.endpoint_id);
            }
        }
        self.total = self.total.max(0);
    }

    pub(super) fn for_claim(&self, budget: i64, fast: &[String]) -> Memory {
        let share = budget / 16;
        let (slow, slow_rows) = self
            .by_endpoint
            .iter()
            .filter(|(e, _)| !fast.contains(e))
            .fold((0i64, 0i64), |(b, r), (_, h)| (b + h.0, r + h.1));
        // Rows count too: slow endpoints together hold at most three quarters of what the
        // worker may hold, so that their requests (waiting for a silent receiver's timeout)
        // never leave fast endpoints without room to claim.
        let slow_room = if slow_rows >= (MAX_OUTSTANDING as i64) * 3 / 4 {
            0
        } else {
            budget * 3 / 4 - slow
        };
        let full = self
            .by_endpoint
            .iter()
            .filter(|(_, (bytes, rows))| bytes + bytes / (*rows).max(1) > share)
            .map(|(e, _)| e.clone())
            .collect();
        let (ids, bytes) = self
            .by_endpoint
            .iter()
            .map(|(e, b)| (e.clone(), b.0))
            .unzip();
        Memory {
            limits: [
                budget - self.total,
                slow_room,
                share,
                i64::from(self.total == 0),
            ],
            ids,
            bytes,
            full,
        }
    }
}
