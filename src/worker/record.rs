//! Recording outcomes, in one statement per batch.

use super::*;
use crate::http::Outcome;
use crate::schedule::{self, AfterFailure, Jitter};
use std::time::Duration;

/// Outcomes kept for a later try, at most (beyond that the leases take over).
pub(super) const CARRY_MAX: usize = 10_000;

/// Records outcomes; those of rows someone else holds locked (an admin's open transaction)
/// go back into `carry` and are recorded on a later loop instead of being waited for, and so
/// does everything when the record transaction fails (a lock on the table, a cancel). Each
/// outcome is only good while its claim's lease holds: the token makes a late try harmless.
pub(super) fn save(rec: Record, carry: &mut Record, settings: &Settings) {
    if rec.ids.is_empty() {
        return;
    }
    let kept = rec.clone();
    let disable_after = format!("{} milliseconds", settings.disable_after.as_millis());
    // (appended: outcomes already waiting there stay)
    match in_transaction("recording outcomes", || rec.save(&disable_after)).flatten() {
        Some(busy) if busy.is_empty() => {}
        Some(busy) => carry.append(kept.only(&busy)),
        None => carry.append(kept),
    }
    if carry.ids.len() > CARRY_MAX {
        warning!(
            "webhooks worker: {} outcomes could not be recorded; their deliveries are sent again after their lease",
            carry.ids.len()
        );
        *carry = Record::default();
    }
}

#[derive(Default, Clone)]
pub(super) struct Record {
    pub(super) ids: Vec<i64>,
    /// Receivers that pushed back: how long their endpoint pauses (microseconds).
    pub(super) pause_us: Vec<Option<i64>>,
    pub(super) lease_us: Vec<i64>,
    pub(super) status: Vec<String>,
    pub(super) attempt: Vec<i32>,
    pub(super) code: Vec<Option<i32>>,
    pub(super) error: Vec<Option<String>>,
    pub(super) retry_in_us: Vec<Option<i64>>,
    pub(super) started_us: Vec<i64>,
    pub(super) duration_ms: Vec<f64>,
    pub(super) body: Vec<Option<String>>,
}

impl Record {
    pub(super) fn push(&mut self, c: &Claimed, o: &Outcome, s: &Settings, now_us: i64) {
        let attempt = c.attempts + 1;
        let mut err = o.error.clone().or_else(|| (!o.ok()).then(|| o.describe()));
        let age = Duration::from_micros((now_us - c.occurred_us).max(0) as u64);
        // Throttled with a Retry-After: the whole endpoint pauses (at most for the TTL).
        let pause = o
            .retry_after
            .as_deref()
            .and_then(|v| schedule::retry_after(v, now_us / 1_000_000))
            .map(|p| p.min(s.ttl));
        // (a 410 is a failure like any other here: _record disables its endpoint, which
        // parks this delivery with the others while it has attempts left)
        let (status, retry) = if o.ok() {
            ("succeeded", None)
        } else {
            let jitter = Jitter::of(s.jitter, c.delivery_id, attempt);
            let next = match pause {
                Some(p) => schedule::after_pushback(attempt, &s.schedule, age, s.ttl, p, jitter),
                None => schedule::after_failure(attempt, &s.schedule, age, s.ttl, jitter),
            };
            match next {
                AfterFailure::RetryIn(us) => ("pending", Some(us)),
                AfterFailure::Dead(why) => {
                    if let Some(e) = err.as_mut() {
                        e.push_str(&format!(" ({why})"));
                    }
                    ("dead", None)
                }
            }
        };
        self.ids.push(c.delivery_id);
        self.pause_us.push(pause.map(|p| p.as_micros() as i64));
        self.lease_us.push(c.lease_us);
        self.status.push(status.into());
        self.attempt.push(attempt);
        self.code.push(o.status.map(i32::from));
        self.error.push(err);
        self.retry_in_us.push(retry);
        self.started_us.push(o.started_at_us);
        self.duration_ms.push(o.duration_ms);
        self.body
            .push((!o.body.is_empty()).then(|| o.body.replace('\0', "")));
    }

    pub(super) fn append(&mut self, mut o: Record) {
        self.ids.append(&mut o.ids);
        self.pause_us.append(&mut o.pause_us);
        self.lease_us.append(&mut o.lease_us);
        self.status.append(&mut o.status);
        self.attempt.append(&mut o.attempt);
        self.code.append(&mut o.code);
        self.error.append(&mut o.error);
        self.retry_in_us.append(&mut o.retry_in_us);
        self.started_us.append(&mut o.started_us);
        self.duration_ms.append(&mut o.duration_ms);
        self.body.append(&mut o.body);
    }

    /// The entries of `ids` only.
    pub(super) fn only(self, ids: &[i64]) -> Record {
        let keep: std::collections::HashSet<i64> = ids.iter().copied().collect();
        let mut out = Record::default();
        for i in 0..self.ids.len() {
            if keep.contains(&self.ids[i]) {
                out.ids.push(self.ids[i]);
                out.pause_us.push(self.pause_us[i]);
                out.lease_us.push(self.lease_us[i]);
                out.status.push(self.status[i].clone());
                out.attempt.push(self.attempt[i]);
                out.code.push(self.code[i]);
                out.error.push(self.error[i].clone());
                out.retry_in_us.push(self.retry_in_us[i]);
                out.started_us.push(self.started_us[i]);
                out.duration_ms.push(self.duration_ms[i]);
                out.body.push(self.body[i].clone());
            }
        }
        out
    }

    /// Returns the ids whose rows were locked by someone else.
    pub(super) fn save(self, disable_after: &str) -> Option<Vec<i64>> {
        Spi::connect_mut(|client| {
            let args = [
                self.ids.into(),
                self.lease_us.into(),
                self.status.into(),
                self.attempt.into(),
                self.code.into(),
                self.error.into(),
                self.retry_in_us.into(),
                self.started_us.into(),
                self.duration_ms.into(),
                self.body.into(),
                self.pause_us.into(),
                disable_after.into(),
            ];
            match client.update(RECORD_SQL, None, &args) {
                Ok(t) => t
                    .first()
                    .get::<Vec<i64>>(1)
                    .ok()
                    .flatten()
                    .or(Some(Vec::new())),
                Err(e) => {
                    warning!("webhooks worker: recording outcomes failed: {e}");
                    None
                }
            }
        })
    }
}

pub(super) const RECORD_SQL: &str =
    "SELECT webhooks_internal._record($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
     $12::pg_catalog.interval)";
