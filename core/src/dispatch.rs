//! Which claimed request goes to a sender thread next: per-endpoint queues, each endpoint and
//! each tenant held to its share of the senders. Pure logic (no PostgreSQL, no threads), so the
//! fairness rules are unit-tested in milliseconds.
//!
//! The senders are blocking threads: a request holds one until its receiver answers or the
//! timeout passes. So a slow or silent receiver must never hold more than its share, or every
//! other endpoint waits behind it. An endpoint's share is the senders divided by the endpoints
//! that have had work in the last seconds; a tenant's, the senders divided by such tenants. An
//! endpoint that answers fast (its requests come back within a quarter of a second, the oldest
//! one under way included) may also use senders nobody else is using, up to its own
//! `max_in_flight`: it gives them back at once. One that is slow, silent or not yet known is
//! held to its share, and all such endpoints together to three quarters of the senders: the
//! last quarter is kept for fast receivers and for a new endpoint's first request, so even
//! when slow receivers took their shares while they were fewer, a fast one is never locked out
//! for a timeout. A unit is handed out only while a sender is idle, so nothing queues in
//! front of the threads where it could wait behind a silent receiver's requests; of the
//! endpoints that may send, the one with the fewest requests under way goes first.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A receiver is fast while its answers, and its oldest request under way, take less than this.
const FAST: Duration = Duration::from_millis(250);
/// An endpoint without work still counts in the shares this long (a receiver between two
/// claims is not gone), and keeps what was learnt of its speed.
const REMEMBER: Duration = Duration::from_secs(5);

struct Endpoint<U> {
    queue: VecDeque<U>,
    tenant: String,
    max_in_flight: usize,
    busy: usize,
    /// When the requests under way were handed out, oldest first (approximately: answers may
    /// come back out of order).
    started: VecDeque<Instant>,
    /// Average answer time (exponential), once one was seen.
    avg: Option<Duration>,
    last_work: Instant,
}

impl<U> Endpoint<U> {
    fn fast(&self) -> bool {
        self.avg.is_some_and(|a| a < FAST)
            && self.started.front().is_none_or(|t| t.elapsed() < FAST)
    }
}

pub struct Dispatcher<U> {
    senders: usize,
    endpoints: HashMap<String, Endpoint<U>>,
    /// Endpoints with queued units, in the order they are next served among equals.
    ring: VecDeque<String>,
    /// Units in flight per tenant; endpoints known per tenant.
    tenant_busy: HashMap<String, usize>,
    tenant_endpoints: HashMap<String, usize>,
    queued: usize,
    busy: usize,
    last_tidy: Instant,
    /// When the last unit was handed out (`handed_out`): its start, to give back to `done`.
    now: Instant,
}

impl<U> Dispatcher<U> {
    pub fn new(senders: usize) -> Dispatcher<U> {
        Dispatcher {
            senders: senders.max(1),
            endpoints: HashMap::new(),
            ring: VecDeque::new(),
            tenant_busy: HashMap::new(),
            tenant_endpoints: HashMap::new(),
            queued: 0,
            busy: 0,
            last_tidy: Instant::now(),
            now: Instant::now(),
        }
    }

    /// A new pool size (a reload): shares follow it from the next unit on.
    pub fn resize(&mut self, senders: usize) {
        self.senders = senders.max(1);
    }

    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn busy(&self) -> usize {
        self.busy
    }

    /// When the unit `next_unit` last returned was handed out.
    pub fn handed_out(&self) -> Instant {
        self.now
    }

    /// Queues a unit behind the endpoint's earlier ones.
    pub fn push(&mut self, endpoint: &str, tenant: &str, max_in_flight: usize, unit: U) {
        if !self.endpoints.contains_key(endpoint) {
            *self.tenant_endpoints.entry(tenant.to_string()).or_default() += 1;
            self.endpoints.insert(
                endpoint.to_string(),
                Endpoint {
                    queue: VecDeque::new(),
                    tenant: tenant.to_string(),
                    max_in_flight: max_in_flight.max(1),
                    busy: 0,
                    started: VecDeque::new(),
                    avg: None,
                    last_work: Instant::now(),
                },
            );
        }
        let Some(e) = self.endpoints.get_mut(endpoint) else {
            return;
        };
        e.max_in_flight = max_in_flight.max(1);
        e.last_work = Instant::now();
        if e.queue.is_empty() {
            self.ring.push_back(endpoint.to_string());
        }
        e.queue.push_back(unit);
        self.queued += 1;
    }

    /// What an endpoint may have in flight now.
    fn endpoint_cap(&self, e: &Endpoint<U>) -> usize {
        // A share of its tenant's share: a tenant with many endpoints dilutes only its own.
        let of_tenant = self.tenant_endpoints.get(&e.tenant).copied().unwrap_or(1);
        let share = (self.tenant_cap() / of_tenant.max(1)).max(1);
        let cap = if e.fast() { self.senders } else { share };
        e.max_in_flight.min(cap)
    }

    fn tenant_cap(&self) -> usize {
        (self.senders / self.tenant_endpoints.len().max(1)).max(1)
    }

    /// The next unit to send, while a sender is idle: of the endpoints below their own and
    /// their tenant's share, the one with the fewest requests under way (the first in the ring
    /// among equals). None when every sender is busy or nothing may go now.
    pub fn next_unit(&mut self) -> Option<(String, U)> {
        self.tidy();
        self.now = Instant::now();
        if self.busy >= self.senders {
            return None;
        }
        let tenant_cap = self.tenant_cap();
        let slow_busy: usize = self
            .endpoints
            .values()
            .filter(|e| !e.fast())
            .map(|e| e.busy)
            .sum();
        let slow_room = slow_busy < self.senders - (self.senders / 4).max(1).min(self.senders - 1);
        let mut best: Option<(usize, usize)> = None;
        for (i, name) in self.ring.iter().enumerate() {
            let Some(e) = self.endpoints.get(name) else {
                continue;
            };
            let tenant_busy = self.tenant_busy.get(&e.tenant).copied().unwrap_or(0);
            if e.busy >= self.endpoint_cap(e) || tenant_busy >= tenant_cap {
                continue;
            }
            // (a new endpoint's first request may use the reserve: that is how it shows it is fast)
            if !(e.fast() || slow_room || (e.avg.is_none() && e.busy == 0)) {
                continue;
            }
            if best.is_none_or(|(_, b)| e.busy < b) {
                best = Some((i, e.busy));
                if e.busy == 0 {
                    break;
                }
            }
        }
        let (i, _) = best?;
        let name = self.ring.remove(i)?;
        let e = self.endpoints.get_mut(&name)?;
        let unit = e.queue.pop_front()?;
        e.busy += 1;
        e.started.push_back(self.now);
        e.last_work = Instant::now();
        *self.tenant_busy.entry(e.tenant.clone()).or_default() += 1;
        if !e.queue.is_empty() {
            self.ring.push_back(name.clone());
        }
        self.queued -= 1;
        self.busy += 1;
        Some((name, unit))
    }

    /// A unit handed out by `next_unit` (at `started`, as `handed_out` said) has its answer
    /// (None: it was given up unsent, which says nothing of the receiver): its slot is free.
    pub fn done(&mut self, endpoint: &str, started: Option<Instant>) {
        let Some(e) = self.endpoints.get_mut(endpoint) else {
            return;
        };
        if e.busy == 0 {
            return;
        }
        e.busy -= 1;
        // This request's own start, not the oldest: a receiver that answers some requests at
        // once must not hide the ones it holds.
        match started.and_then(|s| e.started.iter().position(|t| *t == s)) {
            Some(i) => {
                e.started.remove(i);
            }
            None => {
                e.started.pop_front();
            }
        }
        if let Some(took) = started.map(|s| s.elapsed()) {
            e.avg = Some(match e.avg {
                Some(a) => (a * 7 + took) / 8,
                None => took,
            });
        }
        e.last_work = Instant::now();
        self.busy -= 1;
        if let Some(n) = self.tenant_busy.get_mut(&e.tenant) {
            *n = n.saturating_sub(1);
        }
    }

    /// Takes back everything still queued for an endpoint (it asked for a pause, or is gone).
    pub fn take_queued(&mut self, endpoint: &str) -> Vec<U> {
        let Some(e) = self.endpoints.get_mut(endpoint) else {
            return Vec::new();
        };
        let out: Vec<U> = e.queue.drain(..).collect();
        self.queued -= out.len();
        self.ring.retain(|n| n != endpoint);
        out
    }

    /// Takes back everything queued (stopping, or a reload that changes how to connect).
    pub fn take_all_queued(&mut self) -> Vec<U> {
        let names: Vec<String> = self.ring.iter().cloned().collect();
        names.iter().flat_map(|n| self.take_queued(n)).collect()
    }

    /// Whether a claim may find work the senders could use: some endpoint with work has less
    /// than two rounds of what it may send queued (a silent receiver's long queue does not
    /// count: it must not keep the claim from finding other endpoints' work), or none has any.
    pub fn hungry(&self) -> bool {
        self.queued == 0
            || self
                .endpoints
                .values()
                .any(|e| e.queue.len() < 2 * self.endpoint_cap(e))
    }

    /// The endpoints that answer fast now (the claim leases further ahead for them).
    pub fn fast_endpoints(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .filter(|(_, e)| e.fast())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The endpoints with work now or within REMEMBER (the claim sizes its look at the due
    /// rows by what these may take).
    pub fn active_endpoints(&self) -> Vec<String> {
        self.endpoints.keys().cloned().collect()
    }

    /// Forgets endpoints without work for REMEMBER.
    fn tidy(&mut self) {
        if self.last_tidy.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_tidy = Instant::now();
        let gone: Vec<String> = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.queue.is_empty() && e.busy == 0 && e.last_work.elapsed() > REMEMBER)
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            if let Some(e) = self.endpoints.remove(&name) {
                if let Some(n) = self.tenant_endpoints.get_mut(&e.tenant) {
                    *n -= 1;
                    if *n == 0 {
                        self.tenant_endpoints.remove(&e.tenant);
                        self.tenant_busy.remove(&e.tenant);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> Option<Instant> {
        Some(Instant::now())
    }

    fn fill(d: &mut Dispatcher<u32>, ep: &str, tenant: &str, cap: usize, n: u32) {
        for i in 0..n {
            d.push(ep, tenant, cap, i);
        }
    }

    fn take_all(d: &mut Dispatcher<u32>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((ep, _)) = d.next_unit() {
            out.push(ep);
        }
        out
    }

    #[test]
    fn only_endpoints_that_answered_fast_are_named_fast() {
        let mut d = Dispatcher::new(8);
        fill(&mut d, "quick", "t", 32, 4);
        fill(&mut d, "silent", "t", 32, 4);
        fill(&mut d, "new", "t", 32, 4);
        let _ = take_all(&mut d);
        // Nothing answered yet: nobody is fast.
        assert!(d.fast_endpoints().is_empty());
        d.done("quick", quick());
        d.done("quick", quick());
        // A slow answer, and one still under way: not fast.
        d.done("silent", Some(Instant::now() - Duration::from_secs(5)));
        assert_eq!(d.fast_endpoints(), vec!["quick".to_string()]);
    }

    #[test]
    fn one_endpoint_alone_gets_every_sender_up_to_its_max_in_flight() {
        let mut d = Dispatcher::new(8);
        fill(&mut d, "a", "t", 1000, 20);
        // Not yet known: three quarters; once it answered fast, every sender.
        assert_eq!(take_all(&mut d).len(), 6);
        d.done("a", quick());
        assert_eq!(take_all(&mut d).len(), 3);
        let mut d = Dispatcher::new(8);
        fill(&mut d, "a", "t", 3, 20);
        assert_eq!(take_all(&mut d).len(), 3);
    }

    #[test]
    fn silent_endpoints_hold_only_their_share_and_a_fast_one_uses_the_rest() {
        // 8 senders, 4 endpoints that never answer, 1 healthy endpoint: each silent one gets
        // its share (8/5 -> 1); the healthy one, once it has shown it answers fast, the rest.
        let mut d = Dispatcher::new(8);
        for s in ["s1", "s2", "s3", "s4"] {
            fill(&mut d, s, "t", 32, 100);
        }
        fill(&mut d, "ok", "t", 32, 1000);
        let first = take_all(&mut d);
        for s in ["s1", "s2", "s3", "s4"] {
            assert_eq!(first.iter().filter(|e| *e == s).count(), 1, "{first:?}");
        }
        assert_eq!(first.iter().filter(|e| *e == "ok").count(), 1, "{first:?}");
        d.done("ok", quick());
        let more = take_all(&mut d);
        assert_eq!(
            more,
            vec!["ok"; 4],
            "the idle senders go to the fast endpoint"
        );
        for _ in 0..200 {
            d.done("ok", quick());
            let again = take_all(&mut d);
            assert!(again.iter().all(|e| e == "ok"), "{again:?}");
        }
    }

    #[test]
    fn slow_receivers_together_leave_a_quarter_of_the_senders() {
        // Silent endpoints arriving one by one each took a large share while they were few:
        // together they still stop at three quarters, and a fast endpoint finds the rest.
        let mut d = Dispatcher::new(8);
        for s in ["s1", "s2"] {
            fill(&mut d, s, "t", 32, 100);
            take_all(&mut d);
            d.done(s, Some(Instant::now() - Duration::from_secs(10)));
            take_all(&mut d);
        }
        assert!(d.busy() <= 6, "{}", d.busy());
        fill(&mut d, "ok", "t", 32, 100);
        let (ep, _) = d.next_unit().expect("the reserve");
        assert_eq!(ep, "ok");
        d.done("ok", quick());
        assert_eq!(take_all(&mut d).iter().filter(|e| *e == "ok").count(), 2);
    }

    #[test]
    fn a_tenant_with_many_endpoints_gets_a_tenants_share() {
        // Tenant "big" has 6 endpoints, tenant "small" 1: by endpoint shares alone big would hold
        // 6 of 7 senders; by tenant it holds half.
        let mut d = Dispatcher::new(8);
        for i in 0..6 {
            fill(&mut d, &format!("big{i}"), "big", 32, 10);
        }
        fill(&mut d, "small", "small", 32, 10);
        let got = take_all(&mut d);
        let big = got.iter().filter(|e| e.starts_with("big")).count();
        assert_eq!(big, 4, "{got:?}");
        assert!(got.iter().any(|e| e == "small"), "{got:?}");
    }

    #[test]
    fn the_endpoint_with_fewest_requests_under_way_goes_first() {
        // Three silent endpoints took 2 senders each while they were alone (share 2 of 8);
        // a healthy endpoint arrives: it is served before they get another.
        let mut d = Dispatcher::new(8);
        for s in ["s1", "s2", "s3"] {
            fill(&mut d, s, s, 32, 50);
        }
        let first = take_all(&mut d);
        assert_eq!(first.len(), 6, "{first:?}");
        fill(&mut d, "ok", "ok", 32, 200);
        for _ in 0..100 {
            let (ep, _) = d.next_unit().expect("a sender is free");
            assert_eq!(ep, "ok");
            d.done("ok", quick());
        }
    }

    #[test]
    fn a_long_queue_of_a_silent_endpoint_does_not_stop_the_claim() {
        let mut d = Dispatcher::new(4);
        assert!(d.hungry(), "nothing queued");
        fill(&mut d, "silent", "t", 32, 100);
        assert!(!d.hungry(), "two rounds and more queued");
        fill(&mut d, "ok", "u", 32, 3);
        take_all(&mut d);
        assert!(d.hungry(), "the healthy endpoint is short of work");
    }

    #[test]
    fn order_within_an_endpoint_is_kept_and_taken_back_units_are_not_sent() {
        let mut d = Dispatcher::new(2);
        fill(&mut d, "a", "t", 1, 5);
        let (_, first) = d.next_unit().unwrap();
        assert_eq!(first, 0);
        assert!(d.next_unit().is_none(), "at its max_in_flight");
        d.done("a", quick());
        assert_eq!(d.next_unit().unwrap().1, 1);
        assert_eq!(d.take_queued("a"), vec![2, 3, 4]);
        assert_eq!(d.queued(), 0);
        d.done("a", quick());
        assert_eq!(d.busy(), 0);
        assert!(d.next_unit().is_none());
        fill(&mut d, "b", "t", 4, 3);
        assert_eq!(d.take_all_queued().len(), 3);
    }
}
