//! The worker's deliveries between the claim and the record, as its main thread sees them.

use super::*;
use crate::envelope;
use crate::http::{self, Job, Outcome};
use crate::{target, wake};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Answers recorded in one statement, at most, and how long an answer may wait to be recorded:
/// each recorded answer frees its endpoint's room in the claim, so they are recorded as they
/// arrive, a few milliseconds apart, not when a whole claim has answered.
pub(super) const RECORD_MAX: usize = 500;
pub(super) const RECORD_EVERY: Duration = Duration::from_millis(5);

/// How long after a claim that found candidates another claim held it is tried again: that
/// claim has committed by then.
pub(super) const CONTENDED_RETRY: Duration = Duration::from_millis(5);

/// How often outcomes that could not be recorded (rows someone holds) are tried again.
pub(super) const CARRY_EVERY: Duration = Duration::from_secs(1);

/// The worker's deliveries between the claim and the record, as the main thread sees them:
/// it claims and builds requests, hands them to the sender side, and records what comes back.
pub(super) struct Flow {
    pub(super) settings: Settings,
    pub(super) conn: Connections,
    pub(super) to_senders: std::sync::mpsc::Sender<SenderInput>,
    pub(super) from_senders: std::sync::mpsc::Receiver<FromSenders>,
    /// Whether the sender side could use more work; requests there at all (queued or in
    /// flight).
    pub(super) hungry: Arc<std::sync::atomic::AtomicBool>,
    pub(super) outstanding: Arc<std::sync::atomic::AtomicUsize>,
    /// The sender side's view of the endpoints, for the claim (`SenderView`).
    pub(super) view: Arc<std::sync::Mutex<SenderView>>,
    pub(super) answered: Record,
    pub(super) answered_since: Option<Instant>,
    pub(super) carry: Record,
    pub(super) last_carry: Instant,
    /// (delivery id, lease, after how many milliseconds) of claimed deliveries never sent: back
    /// to pending.
    pub(super) unsent: Vec<(i64, i64, i64)>,
    pub(super) claim_wanted: bool,
    pub(super) claim_forced: bool,
    /// Claims in a row that found candidates another claim held (a second worker's, or a
    /// session's lock, which may last: a few retries, then the next wake as usual), and when to
    /// claim again.
    pub(super) contended: u32,
    pub(super) retry_claim_at: Option<Instant>,
    /// Workers of this database running now (webhooks.workers at most): each leases and sends
    /// its part of an endpoint's allowance, so one left alone takes the whole of it.
    pub(super) live_workers: usize,
    /// This worker's rank among them (by pid): which part of each allowance is its own.
    pub(super) rank: usize,
    /// An answer that pauses or disables its endpoint waits to be recorded.
    pub(super) urgent: bool,
    /// Endpoints an answer stopped (410, a pause), until it is recorded: the claim takes none
    /// of their rows meanwhile.
    pub(super) stopped: std::collections::HashSet<String>,
    /// The bodies of what it has claimed and not yet had back.
    pub(super) held: Held,
    pub(super) claimed_since_trim: i64,
    pub(super) last_trim: Instant,
}

impl Flow {
    pub(super) fn new(settings: Settings) -> Flow {
        use std::sync::atomic::AtomicUsize;
        let (to_senders, input) = std::sync::mpsc::channel::<SenderInput>();
        let (out, from_senders) = std::sync::mpsc::channel::<FromSenders>();
        let conn = Connections::new(&settings, &to_senders);
        let hungry = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let outstanding = Arc::new(AtomicUsize::new(0));
        let view = Arc::new(std::sync::Mutex::new(SenderView::default()));
        let (r, o, f) = (
            Arc::clone(&hungry),
            Arc::clone(&outstanding),
            Arc::clone(&view),
        );
        let senders = conn.pool.size();
        // (spawned with every signal blocked: PostgreSQL's handlers run on this thread only)
        let spawned = http::with_signals_blocked(|| {
            std::thread::Builder::new()
                .name("webhooks-dispatch".into())
                .spawn(move || run_senders(input, out, senders, r, o, f))
        });
        if let Err(e) = spawned {
            error!("webhooks worker: cannot start its dispatch thread: {e}");
        }
        Flow {
            settings,
            conn,
            to_senders,
            from_senders,
            hungry,
            outstanding,
            view,
            answered: Record::default(),
            answered_since: None,
            carry: Record::default(),
            last_carry: Instant::now(),
            unsent: Vec::new(),
            claim_wanted: true,
            claim_forced: true,
            contended: 0,
            retry_claim_at: None,
            live_workers: 1,
            rank: 0,
            urgent: false,
            stopped: Default::default(),
            held: Held::default(),
            claimed_since_trim: 0,
            last_trim: Instant::now(),
        }
    }

    /// Large bodies come and go (each claim copies them a few times): the allocator keeps what
    /// was freed unless asked to give it back, so the worker's memory stayed at its high-water
    /// mark, well above what it holds. Once a second at most, after claims that brought large
    /// bodies.
    pub(super) fn trim_memory(&mut self) {
        if self.claimed_since_trim < 16 << 20 || self.last_trim.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.claimed_since_trim = 0;
        self.last_trim = Instant::now();
        unsafe { libc::malloc_trim(0) };
    }

    pub(super) fn tell(&self, m: ToSenders) {
        let _ = self.to_senders.send(SenderInput::Main(m));
    }

    pub(super) fn reload(&mut self, fresh: Settings) {
        if fresh.needs_new_pool(&self.settings) {
            // What waits was built for the old way of connecting: given back, claimed again
            // under the new one. Requests under way finish on their pool, which ends with them.
            self.tell(ToSenders::GiveBackQueued);
            self.conn = Connections::new(&fresh, &self.to_senders);
            self.tell(ToSenders::Resize(self.conn.pool.size()));
        }
        self.settings = fresh;
        self.claim_forced = true;
    }

    pub(super) fn idle(&self) -> bool {
        self.outstanding.load(std::sync::atomic::Ordering::Relaxed) == 0
    }

    pub(super) fn senders(&self) -> usize {
        self.conn.pool.size().max(1)
    }

    /// A claim goes when new work may be due (a commit woke the worker, the poll interval
    /// passed: `claim_forced`), or when answers freed room and the senders could use more.
    /// An unreadable webhooks.tls_ca_file: claim nothing (attempts would only fail and use up
    /// their retries) until the file or the setting is fixed and reloaded.
    pub(super) fn wants_claim(&self) -> bool {
        self.conn.client.is_ok()
            && self.outstanding.load(std::sync::atomic::Ordering::Relaxed) < MAX_OUTSTANDING
            && self.held.total < self.settings.memory
            && (self.claim_forced
                || (self.claim_wanted && self.hungry.load(std::sync::atomic::Ordering::Relaxed)))
    }

    pub(super) fn give_back(&mut self, members: &[Request], after: Duration) {
        self.held.add(members, -1);
        let ms = after.as_millis() as i64;
        self.unsent
            .extend(members.iter().map(|c| (c.delivery_id, c.lease_us, ms)));
    }

    pub(super) fn note_answer(&mut self, members: &[Request], o: &Outcome) {
        self.held.add(members, -1);
        let now = http::now_us();
        for c in members {
            self.answered.push(c, o, &self.settings, now);
        }
        // A pause or a 410 is recorded at once: until then the senders hold the endpoint's
        // requests and the claim takes none of its rows.
        if o.answer.stops_endpoint() {
            self.urgent = true;
            if let Some(c) = members.first() {
                self.stopped.insert(c.endpoint_id.clone());
            }
        }
        self.answered_since.get_or_insert_with(Instant::now);
    }

    /// Leases due deliveries and hands their requests to the sender side.
    pub(super) fn claim(&mut self, scan_leases: bool) {
        self.claim_wanted = false;
        self.claim_forced = false;
        // Leased ahead: a request may wait while its endpoint's earlier ones are sent (at most
        // LEASE_AHEAD rounds of its max_in_flight, each within the timeout), then take two
        // timeouts (a proxied target is resolved first). The lease outlasts all of that, and a
        // request not started in time is given back instead of sent: the lease scan never
        // claims a row whose request may still be on the wire. (A fast endpoint leases four
        // times as many rounds, each a fraction of a second; if it turns slow meanwhile, what
        // it cannot start in time goes back.)
        let t = self.settings.timeout;
        let lease = t * (LEASE_AHEAD as u32 + 2) + Duration::from_secs(30);
        let not_after = Instant::now() + lease - t * 2 - Duration::from_secs(5);
        let senders = self.senders();
        let settings = self.settings.clone();
        // (several workers: each leases its own part of an endpoint's allowance, so one that
        // finds the endpoint fast leases further ahead within its part only)
        let view = self.view.lock().map(|v| v.clone()).unwrap_or_default();
        // Deliveries of bulk publishes are written first, a slice per claim, so that what a
        // large statement published never holds back the claim for long; with more left, the
        // next claim goes on with them without waiting.
        self.claim_forced = expand();
        // (its rank among the workers of this database, by pid: which part of each endpoint's
        // allowance is its own)
        let mut pids: Vec<i32> = wake::workers_of(unsafe { u32::from(pg_sys::MyDatabaseId) })
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        pids.sort_unstable();
        let me = unsafe { pg_sys::MyProcPid };
        self.live_workers = pids.len().clamp(1, self.settings.workers.max(1));
        self.rank = pids.iter().position(|p| *p == me).unwrap_or(0) % self.live_workers;
        let (workers, rank) = (self.live_workers, self.rank);
        let mut memory = self.held.for_claim(self.settings.memory, &view.fast);
        memory.full.extend(self.stopped.iter().cloned());
        let ask = Ask {
            scan_leases,
            lease,
            senders,
            view,
            workers,
            rank,
            memory,
        };
        let (claimed, contended) =
            in_transaction("claiming deliveries", || claim(&settings, ask)).unwrap_or_default();
        self.held.add(&claimed, 1);
        let claimed_bytes: i64 = claimed.iter().map(|c| c.bytes).sum();
        self.claimed_since_trim += claimed_bytes;
        // Another worker's claim held some of what this one chose: claim again shortly, once
        // that claim has committed (its rows are then in flight, out of the way; at once, the
        // same head would be chosen and skipped again).
        self.contended = if contended {
            self.contended.saturating_add(1)
        } else {
            0
        };
        self.retry_claim_at =
            (contended && self.contended <= 3).then(|| Instant::now() + CONTENDED_RETRY);
        if claimed.is_empty() {
            return;
        }
        // A full claim means more is probably due: claim again as soon as there is room.
        self.claim_wanted = claimed.len() as i64 >= self.settings.batch_size;
        let mut parts: HashMap<String, Result<EndpointParts, String>> = HashMap::new();
        let mut units = Vec::new();
        for mut members in group(claimed) {
            let first = &members[0];
            let refused = |msg: String| Outcome {
                error: Some(msg),
                started_at_us: http::now_us(),
                ..Default::default()
            };
            if let Err(e) = target::check_url(&first.url, self.settings.policy) {
                let o = refused(format!("refused: {e}"));
                self.note_answer(&members, &o);
                continue;
            }
            let p = match parts
                .entry(first.endpoint_id.clone())
                .or_insert_with(|| endpoint_parts(first, &self.conn))
            {
                Ok(p) => p,
                Err(e) => {
                    let o = refused(e.clone());
                    self.note_answer(&members, &o);
                    continue;
                }
            };
            let (msg_id, body) = if first.batch_max > 1 {
                // A batch is its own message, named by its contents: the same events give the
                // same webhook-id (receivers dedupe a resent batch), different events another.
                let ids: Vec<&str> = members.iter().map(|c| c.event_id.as_str()).collect();
                let id = envelope::batch_id(&ids);
                let bodies: Vec<String> = members
                    .iter_mut()
                    .map(|c| std::mem::take(&mut c.body))
                    .collect();
                (id, envelope::build_batch(&bodies))
            } else {
                (first.event_id.clone(), std::mem::take(&mut members[0].body))
            };
            let first = &members[0];
            let job = Job {
                tag: 0,
                url: first.url.clone(),
                msg_id,
                event_type: first.event_type.clone(),
                attempt: first.attempts + 1,
                body: Arc::new(body),
                keys: Arc::clone(&p.keys),
                headers: Arc::clone(&p.headers),
                traceparent: first.traceparent.clone(),
                format: first.format.clone(),
                agent: p.agent.clone(),
                not_after: Some(not_after),
            };
            let (ep, tenant, cap) = (
                first.endpoint_id.clone(),
                first.endpoint_tenant.clone(),
                // (its part of max_in_flight, as the claim counted it; at least one, should
                // the workers have changed since the claim)
                (crate::lease::part(
                    first.max_in_flight as u32,
                    self.live_workers as u32,
                    self.rank as u32,
                    &first.endpoint_id,
                ) as usize)
                    .max(1),
            );
            units.push((
                ep,
                tenant,
                cap,
                Unit {
                    members,
                    job: Some(job),
                    pool: Arc::clone(&self.conn.pool),
                    not_after,
                    timeout: self.settings.timeout,
                },
            ));
        }
        if units.is_empty() {
            return;
        }
        let rows = units.iter().map(|(_, _, _, u)| u.members.len()).sum();
        self.outstanding
            .fetch_add(rows, std::sync::atomic::Ordering::Relaxed);
        self.tell(ToSenders::Queue(units));
    }

    /// Takes what the sender side passed back within `wait` (returns at the first, with
    /// whatever else is there by then). False when the sender side has stopped.
    pub(super) fn collect(&mut self, wait: Duration) -> bool {
        let first = match self.from_senders.recv_timeout(wait) {
            Ok(m) => m,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return true,
            // The sender side is gone (it cannot panic on input, but if it did): stop, and be
            // started again with a fresh one.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                warning!("webhooks worker: its sender thread ended; restarting");
                return false;
            }
        };
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                FromSenders::Answered(members, o) => self.note_answer(&members, &o),
                FromSenders::Unsent(members, after) => self.give_back(&members, after),
                FromSenders::Dropped(members) => self.held.add(&members, -1),
                FromSenders::Stopped => return false,
            }
            next = self.from_senders.try_recv().ok();
        }
        true
    }

    /// Records the answers when enough wait or the oldest has waited long enough (or `now`),
    /// and gives back what was never sent.
    pub(super) fn flush(&mut self, now: bool) {
        let n = self.answered.ids.len();
        let due = n > 0
            && (now
                || self.urgent
                || n >= RECORD_MAX
                || self.idle()
                || self
                    .answered_since
                    .is_some_and(|t| t.elapsed() >= RECORD_EVERY));
        // Given back first: an answer recorded next may disable or pause their endpoint, which
        // then parks or defers them with its other pending work.
        if !self.unsent.is_empty() && (due || now || self.idle()) {
            let unsent = std::mem::take(&mut self.unsent);
            let ids: Vec<i64> = unsent.iter().map(|u| u.0).collect();
            let leases: Vec<i64> = unsent.iter().map(|u| u.1).collect();
            let after: Vec<i64> = unsent.iter().map(|u| u.2).collect();
            let done = in_transaction("giving back unsent deliveries", || {
                Spi::connect_mut(|client| {
                    client
                        .update(
                            "SELECT webhooks_internal._release($1, $2, $3)",
                            None,
                            &[ids.into(), leases.into(), after.into()],
                        )
                        .map_err(|e| {
                            warning!("webhooks worker: giving back unsent deliveries failed: {e}")
                        })
                        .is_ok()
                })
            });
            // Tried again with the next flush (their leases end anyway).
            if done != Some(true) && unsent.len() < CARRY_MAX {
                self.unsent = unsent;
            }
            self.claim_wanted = true;
        }
        // (never more often than CARRY_EVERY, idle or not: rows an open transaction holds are
        // not asked for in a loop)
        let retry_carry = !self.carry.ids.is_empty() && self.last_carry.elapsed() >= CARRY_EVERY;
        if due || retry_carry {
            let mut rec = std::mem::take(&mut self.answered);
            self.answered_since = None;
            self.urgent = false;
            if retry_carry {
                self.last_carry = Instant::now();
                rec.append(std::mem::take(&mut self.carry));
            }
            let recorded = save(rec, &mut self.carry, &self.settings);
            if !recorded.is_empty() {
                for ep in &recorded {
                    self.stopped.remove(ep);
                }
                self.tell(ToSenders::Recorded(recorded));
            }
            // Recorded answers free their endpoints' room in the claim.
            if due {
                self.claim_wanted = true;
            }
        }
    }

    /// Stopping: nothing new starts, what waits goes back to the table at once (no lease to
    /// wait out), answers that come within half a second are recorded, and the rest keep
    /// their lease.
    pub(super) fn stop(&mut self) {
        self.tell(ToSenders::Stop);
        self.conn.pool.close();
        let cut = Instant::now() + Duration::from_secs(1);
        while Instant::now() < cut && self.collect(Duration::from_millis(50)) {}
        self.flush(true);
    }
}
