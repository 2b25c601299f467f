//! Which claimed request goes to a sender thread next: per-endpoint queues served round robin,
//! each endpoint and each tenant held to its share of the senders. Pure logic (no PostgreSQL,
//! no threads), so the fairness rules are unit-tested in milliseconds.
//!
//! The senders are blocking threads: a request holds one until its receiver answers or the
//! timeout passes. So a slow or silent receiver must never hold more than its share, or every
//! other endpoint waits behind it. An endpoint's share is the senders divided by the endpoints
//! that have work (queued or in flight), a tenant's the senders divided by the tenants that have
//! work; an endpoint's own `max_in_flight` can only lower it. A unit is handed out only while a
//! sender is idle, so nothing queues in front of the threads where it could wait behind a
//! silent receiver's requests.

use std::collections::{HashMap, VecDeque};

#[derive(Default)]
struct Endpoint<U> {
    queue: VecDeque<U>,
    tenant: String,
    max_in_flight: usize,
    busy: usize,
}

pub struct Dispatcher<U> {
    senders: usize,
    endpoints: HashMap<String, Endpoint<U>>,
    /// Endpoints with queued units, in the order they are next served.
    ring: VecDeque<String>,
    /// Units in flight per tenant; tenants with work (queued or in flight) per count.
    tenant_busy: HashMap<String, usize>,
    tenant_active: HashMap<String, usize>,
    queued: usize,
    busy: usize,
}

impl<U> Dispatcher<U> {
    pub fn new(senders: usize) -> Dispatcher<U> {
        Dispatcher {
            senders: senders.max(1),
            endpoints: HashMap::new(),
            ring: VecDeque::new(),
            tenant_busy: HashMap::new(),
            tenant_active: HashMap::new(),
            queued: 0,
            busy: 0,
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

    /// Units queued for one endpoint (the claim leases ahead up to a limit per endpoint).
    pub fn queued_for(&self, endpoint: &str) -> usize {
        self.endpoints.get(endpoint).map_or(0, |e| e.queue.len())
    }

    /// Queues a unit behind the endpoint's earlier ones.
    pub fn push(&mut self, endpoint: &str, tenant: &str, max_in_flight: usize, unit: U) {
        // (the map holds exactly the endpoints with work: idle ones are forgotten)
        let was_active = self.endpoints.contains_key(endpoint);
        let e = self
            .endpoints
            .entry(endpoint.to_string())
            .or_insert_with(|| Endpoint {
                queue: VecDeque::new(),
                tenant: tenant.to_string(),
                max_in_flight,
                busy: 0,
            });
        e.max_in_flight = max_in_flight.max(1);
        if e.queue.is_empty() {
            self.ring.push_back(endpoint.to_string());
        }
        e.queue.push_back(unit);
        self.queued += 1;
        if !was_active {
            *self.tenant_active.entry(tenant.to_string()).or_default() += 1;
        }
    }

    /// What an endpoint may have in flight now.
    fn endpoint_cap(&self, e: &Endpoint<U>) -> usize {
        let share = (self.senders / self.endpoints.len().max(1)).max(1);
        e.max_in_flight.min(share).min(self.senders)
    }

    fn tenant_cap(&self) -> usize {
        (self.senders / self.tenant_active.len().max(1)).max(1)
    }

    /// The next unit to send, while a sender is idle: the first endpoint in the ring below its
    /// own and its tenant's share. None when every sender is busy or nothing may go now.
    pub fn next_unit(&mut self) -> Option<(String, U)> {
        if self.busy >= self.senders {
            return None;
        }
        let tenant_cap = self.tenant_cap();
        for _ in 0..self.ring.len() {
            let name = self.ring.pop_front()?;
            let Some(e) = self.endpoints.get(&name) else {
                continue;
            };
            let cap = self.endpoint_cap(e);
            let tenant_busy = self.tenant_busy.get(&e.tenant).copied().unwrap_or(0);
            if e.busy >= cap || tenant_busy >= tenant_cap {
                self.ring.push_back(name);
                continue;
            }
            let e = self.endpoints.get_mut(&name)?;
            let unit = e.queue.pop_front()?;
            e.busy += 1;
            *self.tenant_busy.entry(e.tenant.clone()).or_default() += 1;
            if !e.queue.is_empty() {
                self.ring.push_back(name.clone());
            }
            self.queued -= 1;
            self.busy += 1;
            return Some((name, unit));
        }
        None
    }

    /// A unit handed out by `next` has its answer (or was given up): its slot is free.
    pub fn done(&mut self, endpoint: &str) {
        let Some(e) = self.endpoints.get_mut(endpoint) else {
            return;
        };
        if e.busy == 0 {
            return;
        }
        e.busy -= 1;
        self.busy -= 1;
        let tenant = e.tenant.clone();
        if let Some(n) = self.tenant_busy.get_mut(&tenant) {
            *n = n.saturating_sub(1);
        }
        self.forget_if_idle(endpoint);
    }

    /// Takes back everything still queued for an endpoint (it asked for a pause, or is gone).
    pub fn take_queued(&mut self, endpoint: &str) -> Vec<U> {
        let Some(e) = self.endpoints.get_mut(endpoint) else {
            return Vec::new();
        };
        let out: Vec<U> = e.queue.drain(..).collect();
        self.queued -= out.len();
        self.ring.retain(|n| n != endpoint);
        self.forget_if_idle(endpoint);
        out
    }

    /// Takes back everything queued (stopping, or a reload that changes how to connect).
    pub fn take_all_queued(&mut self) -> Vec<U> {
        let names: Vec<String> = self.ring.iter().cloned().collect();
        names.iter().flat_map(|n| self.take_queued(n)).collect()
    }

    fn forget_if_idle(&mut self, endpoint: &str) {
        let idle = self
            .endpoints
            .get(endpoint)
            .is_some_and(|e| e.queue.is_empty() && e.busy == 0);
        if idle {
            if let Some(e) = self.endpoints.remove(endpoint) {
                if let Some(n) = self.tenant_active.get_mut(&e.tenant) {
                    *n -= 1;
                    if *n == 0 {
                        self.tenant_active.remove(&e.tenant);
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
    fn one_endpoint_alone_gets_every_sender_up_to_its_max_in_flight() {
        let mut d = Dispatcher::new(8);
        fill(&mut d, "a", "t", 1000, 20);
        assert_eq!(take_all(&mut d).len(), 8);
        let mut d = Dispatcher::new(8);
        fill(&mut d, "a", "t", 3, 20);
        assert_eq!(take_all(&mut d).len(), 3);
    }

    #[test]
    fn silent_endpoints_hold_only_their_share_and_the_healthy_one_keeps_going() {
        // 8 senders, 4 endpoints that never answer, 1 healthy endpoint: each silent one gets
        // at most 8/5 -> 1 sender, so the healthy one always finds senders free.
        let mut d = Dispatcher::new(8);
        for s in ["s1", "s2", "s3", "s4"] {
            fill(&mut d, s, s, 32, 100);
        }
        fill(&mut d, "ok", "ok", 32, 1000);
        let first = take_all(&mut d);
        for s in ["s1", "s2", "s3", "s4"] {
            assert_eq!(first.iter().filter(|e| *e == s).count(), 1, "{first:?}");
        }
        // The healthy endpoint's answers come back; the silent ones' never do.
        let mut sent = first.iter().filter(|e| *e == "ok").count();
        assert!(sent >= 1);
        for _ in 0..500 {
            d.done("ok");
            let more = take_all(&mut d);
            assert!(more.iter().all(|e| e == "ok"), "{more:?}");
            sent += more.len();
        }
        assert!(sent >= 500, "{sent}");
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
        assert_eq!(got.iter().filter(|e| *e == "small").count(), 1);
    }

    #[test]
    fn order_within_an_endpoint_is_kept_and_taken_back_units_are_not_sent() {
        let mut d = Dispatcher::new(2);
        fill(&mut d, "a", "t", 1, 5);
        let (_, first) = d.next_unit().unwrap();
        assert_eq!(first, 0);
        assert!(d.next_unit().is_none(), "at its max_in_flight");
        d.done("a");
        assert_eq!(d.next_unit().unwrap().1, 1);
        assert_eq!(d.take_queued("a"), vec![2, 3, 4]);
        assert_eq!(d.queued(), 0);
        d.done("a");
        assert_eq!(d.busy(), 0);
        assert!(d.next_unit().is_none());
        fill(&mut d, "b", "t", 4, 3);
        assert_eq!(d.take_all_queued().len(), 3);
    }
}
