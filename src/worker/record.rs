//! Recording outcomes, in one statement per batch.

use super::*;
use crate::answer::{self, State};
use crate::http::Outcome;
use crate::schedule::Jitter;
use std::time::Duration;

/// Outcomes kept for a later try, at most (beyond that the leases take over).
pub(super) const CARRY_MAX: usize = 10_000;

/// Records outcomes; those of rows someone else holds locked (an admin's open transaction)
/// go back into `carry` and are recorded on a later loop instead of being waited for, and so
/// does everything when the record transaction fails (a lock on the table, a cancel). Each
/// outcome is only good while its claim's lease holds: the token makes a late try harmless.
/// Returns the endpoints whose stopping answers (410, a pause) are now recorded.
pub(super) fn save(rec: Record, carry: &mut Record, settings: &Settings) -> Vec<String> {
    if rec.ids.is_empty() {
        return Vec::new();
    }
    let kept = rec.clone();
    let disable_after = format!("{} milliseconds", settings.disable_after.as_millis());
    // (appended: outcomes already waiting there stay)
    let recorded = match in_transaction("recording outcomes", || rec.save(&disable_after)).flatten()
    {
        Some(busy) => {
            let stopped = kept.stopped_except(&busy);
            if !busy.is_empty() {
                carry.append(kept.only(&busy));
            }
            stopped
        }
        None => {
            carry.append(kept);
            Vec::new()
        }
    };
    if carry.ids.len() > CARRY_MAX {
        warning!(
            "webhooks worker: {} outcomes could not be recorded; their deliveries are sent again after their lease",
            carry.ids.len()
        );
        *carry = Record::default();
    }
    recorded
}

/// Outcomes to record, column by column as `_record` takes them.
#[derive(Default, Clone)]
pub(super) struct Record {
    pub(super) ids: Vec<i64>,
    /// Receivers that pushed back: how long their endpoint pauses (microseconds).
    pub(super) pause_us: Vec<Option<i64>>,
    /// 410 Gone: the endpoint is disabled.
    pub(super) gone: Vec<bool>,
    pub(super) lease_us: Vec<i64>,
    pub(super) status: Vec<String>,
    pub(super) attempt: Vec<i32>,
    pub(super) code: Vec<Option<i32>>,
    pub(super) error: Vec<Option<String>>,
    pub(super) retry_in_us: Vec<Option<i64>>,
    pub(super) started_us: Vec<i64>,
    pub(super) duration_ms: Vec<f64>,
    pub(super) body: Vec<Option<String>>,
    /// (not recorded) the endpoint, where this answer stopped it
    pub(super) stopped: Vec<Option<String>>,
}

impl Record {
    /// One delivery's answer, decided (core/src/answer.rs) and written down.
    pub(super) fn push(&mut self, c: &Request, o: &Outcome, s: &Settings, now_us: i64) {
        let attempt = c.attempts + 1;
        let age = Duration::from_micros((now_us - c.occurred_us).max(0) as u64);
        let next = answer::decide(
            &o.answer,
            attempt,
            &s.schedule,
            age,
            s.ttl,
            Jitter::of(s.jitter, c.delivery_id, attempt),
        );
        let mut err = o.error.clone().or_else(|| (!o.ok()).then(|| o.describe()));
        let state = next.state;
        let retry = match state {
            State::Pending { retry_in_us } => Some(retry_in_us),
            State::Dead { why } => {
                if let Some(e) = err.as_mut() {
                    e.push_str(&format!(" ({why})"));
                }
                None
            }
            State::Succeeded => None,
        };
        self.ids.push(c.delivery_id);
        self.pause_us.push(next.pause.map(|p| p.as_micros() as i64));
        self.gone.push(next.gone);
        self.lease_us.push(c.lease_us);
        self.status.push(state.name().into());
        self.attempt.push(attempt);
        self.code.push(o.status().map(i32::from));
        self.error.push(err);
        self.retry_in_us.push(retry);
        self.started_us.push(o.started_at_us);
        self.duration_ms.push(o.duration_ms);
        self.body
            .push((!o.body.is_empty()).then(|| o.body.replace('\0', "")));
        self.stopped
            .push((next.gone || next.pause.is_some()).then(|| c.endpoint_id.clone()));
    }

    /// The endpoints these outcomes stopped, but for the rows of `busy` (not recorded).
    fn stopped_except(&self, busy: &[i64]) -> Vec<String> {
        let busy: std::collections::HashSet<i64> = busy.iter().copied().collect();
        let mut out: Vec<String> = self
            .ids
            .iter()
            .zip(&self.stopped)
            .filter(|(id, _)| !busy.contains(id))
            .filter_map(|(_, ep)| ep.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub(super) fn append(&mut self, mut o: Record) {
        self.ids.append(&mut o.ids);
        self.pause_us.append(&mut o.pause_us);
        self.gone.append(&mut o.gone);
        self.stopped.append(&mut o.stopped);
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
                out.gone.push(self.gone[i]);
                out.stopped.push(self.stopped[i].clone());
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
                self.gone.into(),
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
     $12::pg_catalog.interval, $13)";
