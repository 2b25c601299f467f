//! The sender side: per-endpoint queues handed to the HTTP pool's threads, on a thread of its
//! own that never calls into PostgreSQL.

use super::*;
use crate::answer::Answer;
use crate::dispatch::Dispatcher;
use crate::guc;
use crate::http::{self, Job, Outcome, Pool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Endpoints whose client-certificate agents are kept, at most.
pub(super) const MTLS_CACHE_MAX: usize = 256;

/// What one HTTP request carries: a single delivery, or several of a batched endpoint (in
/// publish order), with the request itself until it is handed to a sender.
pub(super) struct Unit {
    pub(super) members: Vec<Request>,
    pub(super) job: Option<Job>,
    /// The pool it must go to: the one of the configuration it was claimed under.
    pub(super) pool: Arc<Pool>,
    /// Last moment it may start: its lease must outlast the request by two timeouts.
    pub(super) not_after: Instant,
    /// webhooks.timeout when it was claimed: after two of them (and a margin) unanswered, it is
    /// stuck.
    pub(super) timeout: Duration,
}

/// The sender pool and the agents of endpoints with client certificates, built from one
/// configuration. `client` is the error to record when the configuration cannot connect at
/// all (an unreadable `webhooks.tls_ca_file`): the worker then claims nothing (`Flow::wants_claim`),
/// and a request claimed before fails saying so.
pub(super) struct Connections {
    pub(super) pool: Arc<Pool>,
    pub(super) client: Result<http::ClientSettings, String>,
    /// endpoint id -> (hash of its certificate and key, its agent)
    pub(super) mtls: std::cell::RefCell<HashMap<String, (u64, http::Client)>>,
}

impl Connections {
    pub(super) fn new(s: &Settings, senders: &std::sync::mpsc::Sender<SenderInput>) -> Connections {
        let client = guc::client_settings(s.concurrency);
        if let Err(e) = &client {
            warning!(
                "webhooks worker: {e}; nothing is claimed until it is fixed and the server reloads (deliveries wait, no attempt is used up)"
            );
        }
        let fallback = http::ClientSettings {
            timeout: s.timeout,
            allow_private: s.policy.allow_private,
            max_idle_per_host: s.concurrency,
            proxy: None,
            trust: Default::default(),
        };
        let to = std::sync::Mutex::new(senders.clone());
        let answers: Arc<dyn Fn(Outcome) -> bool + Send + Sync> = Arc::new(move |o| {
            to.lock()
                .map(|t| t.send(SenderInput::Answer(o)).is_ok())
                .unwrap_or(false)
        });
        let pool = Arc::new(Pool::new(
            s.concurrency,
            client.as_ref().unwrap_or(&fallback),
            answers,
        ));
        Connections {
            pool,
            client,
            mtls: Default::default(),
        }
    }

    /// The agent presenting an endpoint's client certificate, built once per certificate.
    pub(super) fn mtls_agent(
        &self,
        endpoint: &str,
        pair: &(String, String),
    ) -> Result<http::Client, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(pair, &mut h);
        let fp = std::hash::Hasher::finish(&h);
        if let Some((seen, a)) = self.mtls.borrow().get(endpoint) {
            if *seen == fp {
                return Ok(a.clone());
            }
        }
        let cert = crate::tls::client_cert(&pair.0, &pair.1)
            .map_err(|e| format!("endpoint client certificate unusable: {e}"))?;
        let a = http::agent(client, Some(cert));
        let mut cache = self.mtls.borrow_mut();
        // Endpoints come and go: a cache that only grows would keep their idle connections.
        if cache.len() >= MTLS_CACHE_MAX {
            cache.clear();
        }
        cache.insert(endpoint.to_string(), (fp, a.clone()));
        Ok(a)
    }
}

pub(super) struct EndpointParts {
    pub(super) keys: Arc<Vec<Vec<u8>>>,
    pub(super) headers: Arc<Vec<(String, String)>>,
    pub(super) agent: Option<http::Client>,
}

pub(super) fn endpoint_parts(c: &Request, conn: &Connections) -> Result<EndpointParts, String> {
    if let Err(e) = &conn.client {
        return Err(e.clone());
    }
    let keys = c.format.keys(&c.secrets)?;
    let headers = crate::headers::parse_object(c.headers.as_deref())?;
    let agent = match &c.client_cert {
        Some(pair) => Some(conn.mtls_agent(&c.endpoint_id, pair)?),
        None => None,
    };
    Ok(EndpointParts {
        keys: Arc::new(keys),
        headers: Arc::new(headers),
        agent,
    })
}

/// What the worker's main thread (the only one that talks to PostgreSQL) tells the sender side.
pub(super) enum ToSenders {
    /// Requests to queue: (endpoint, its tenant, its max_in_flight for this worker, request).
    Queue(Vec<(String, String, usize, Unit)>),
    /// A reload changed how to connect: every queued request comes back unsent.
    GiveBackQueued,
    /// A reload changed the number of senders.
    Resize(usize),
    /// Stopping: queued requests come back unsent, answers are awaited for half a second.
    Stop,
    /// The answers that stopped these endpoints are recorded: the table now keeps the claim
    /// from them (disabled, paused), and the sender side lets their requests through again.
    Recorded(Vec<String>),
}

pub(super) enum SenderInput {
    Main(ToSenders),
    Answer(Outcome),
}

/// What the sender side tells the main thread, to record.
pub(super) enum FromSenders {
    Answered(Vec<Request>, Outcome),
    /// Never sent: pending again after the delay (none but when no DNS helper was free).
    Unsent(Vec<Request>, Duration),
    /// Given up as stuck (far past every timeout): nothing to record, its lease lapses; its
    /// bodies are no longer held.
    Dropped(Vec<Request>),
    Stopped,
}

/// The sender side, on a thread of its own that never calls into PostgreSQL: per-endpoint
/// queues (`dispatch`), handed to the pool's threads as they come free and answers passed back
/// as they arrive. So the senders never wait for the main thread's claims and records, and the
/// main thread never waits for a sender.
pub(super) fn run_senders(
    input: std::sync::mpsc::Receiver<SenderInput>,
    out: std::sync::mpsc::Sender<FromSenders>,
    senders: usize,
    hungry: Arc<std::sync::atomic::AtomicBool>,
    outstanding: Arc<std::sync::atomic::AtomicUsize>,
    view: Arc<std::sync::Mutex<SenderView>>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut queued: Dispatcher<Unit> = Dispatcher::new(senders);
    let mut in_flight: HashMap<usize, (String, Unit, Instant)> = HashMap::new();
    let mut next_tag = 0usize;
    // Endpoints an answer stopped (410, a pause) until that answer is recorded.
    let mut stopped: std::collections::HashSet<String> = Default::default();
    let mut stopping: Option<Instant> = None;
    let mut last_sweep = Instant::now();
    let mut last_fast = Instant::now();
    let finished = |n: usize| {
        outstanding.fetch_sub(n, Relaxed);
    };
    loop {
        let wait = if stopping.is_some() {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(200)
        };
        let first = match input.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let mut next = first;
        while let Some(msg) = next.take() {
            match msg {
                SenderInput::Main(ToSenders::Queue(units)) => {
                    for (ep, tenant, cap, unit) in units {
                        // (claimed before the answer that stopped its endpoint was recorded)
                        if stopped.contains(&ep) {
                            let rows = unit.members.len();
                            let _ = out.send(FromSenders::Unsent(unit.members, Duration::ZERO));
                            finished(rows);
                            continue;
                        }
                        queued.push(&ep, &tenant, cap, unit);
                    }
                }
                SenderInput::Main(ToSenders::Recorded(endpoints)) => {
                    for ep in endpoints {
                        stopped.remove(&ep);
                    }
                }
                SenderInput::Main(ToSenders::GiveBackQueued) => {
                    for u in queued.take_all_queued() {
                        let rows = u.members.len();
                        let _ = out.send(FromSenders::Unsent(u.members, Duration::ZERO));
                        finished(rows);
                    }
                }
                SenderInput::Main(ToSenders::Resize(n)) => queued.resize(n),
                SenderInput::Main(ToSenders::Stop) => {
                    for u in queued.take_all_queued() {
                        let rows = u.members.len();
                        let _ = out.send(FromSenders::Unsent(u.members, Duration::ZERO));
                        finished(rows);
                    }
                    for (_, u, _) in in_flight.values() {
                        u.pool.close();
                    }
                    stopping = Some(Instant::now() + Duration::from_millis(500));
                }
                SenderInput::Answer(o) => {
                    if let Some((ep, unit, at)) = in_flight.remove(&o.tag) {
                        queued.done(&ep, Some(at));
                        let stops = o.answer.stops_endpoint();
                        let rows = unit.members.len();
                        match o.answer {
                            Answer::NotSent { busy } => {
                                let after = if busy {
                                    Duration::from_secs(1)
                                } else {
                                    Duration::ZERO
                                };
                                let _ = out.send(FromSenders::Unsent(unit.members, after));
                            }
                            _ => {
                                let _ = out.send(FromSenders::Answered(unit.members, o));
                            }
                        }
                        // (passed back before it stops counting: the main thread takes
                        // everything once nothing is outstanding)
                        finished(rows);
                        // A receiver that asked for a pause (Retry-After) or is gone (410):
                        // from now on nothing more is sent to it. What waits here for it goes
                        // back at once, to be deferred or parked, and so does what reaches
                        // here for it until the main thread says the answer is recorded
                        // (claimed meanwhile, while the table still said enabled and due).
                        if stops {
                            stopped.insert(ep.clone());
                            for u in queued.take_queued(&ep) {
                                let rows = u.members.len();
                                let _ = out.send(FromSenders::Unsent(u.members, Duration::ZERO));
                                finished(rows);
                            }
                        }
                    }
                }
            }
            next = input.try_recv().ok();
        }
        // Every request the pool takes is answered (a success, an error, its timeout, or "not
        // sent"), so only a sender stuck beyond every bound is given up here: far past the
        // timeout, not merely late on a loaded machine (its answer would then be dropped and
        // the delivery sent again after its lease).
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = Instant::now();
            let stuck: Vec<usize> = in_flight
                .iter()
                .filter(|(_, (_, u, at))| at.elapsed() > u.timeout * 10 + Duration::from_secs(60))
                .map(|(tag, _)| *tag)
                .collect();
            for tag in stuck {
                if let Some((ep, unit, at)) = in_flight.remove(&tag) {
                    queued.done(&ep, Some(at));
                    let rows = unit.members.len();
                    let _ = out.send(FromSenders::Dropped(unit.members));
                    finished(rows);
                }
            }
        }
        if stopping.is_none() {
            while let Some((ep, mut unit)) = queued.next_unit() {
                match unit.job.take() {
                    Some(mut job) if Instant::now() < unit.not_after => {
                        job.tag = next_tag;
                        next_tag += 1;
                        let tag = job.tag;
                        let pool = Arc::clone(&unit.pool);
                        in_flight.insert(tag, (ep.clone(), unit, queued.handed_out()));
                        if !pool.submit(job) {
                            if let Some((_, unit, _)) = in_flight.remove(&tag) {
                                queued.done(&ep, None);
                                let o = Outcome {
                                    error: Some("internal: no sender thread available".into()),
                                    started_at_us: http::now_us(),
                                    ..Default::default()
                                };
                                let rows = unit.members.len();
                                let _ = out.send(FromSenders::Answered(unit.members, o));
                                finished(rows);
                            }
                        }
                    }
                    // Not started while its lease still covers it: given back, never sent late.
                    _ => {
                        queued.done(&ep, None);
                        let rows = unit.members.len();
                        let _ = out.send(FromSenders::Unsent(unit.members, Duration::ZERO));
                        finished(rows);
                    }
                }
            }
        }
        hungry.store(queued.hungry(), Relaxed);
        if last_fast.elapsed() >= FAST_EVERY {
            last_fast = Instant::now();
            if let Ok(mut v) = view.lock() {
                *v = SenderView {
                    fast: queued.fast_endpoints(),
                    active: queued.active_endpoints(),
                };
            }
        }
        if stopping.is_some_and(|t| in_flight.is_empty() || Instant::now() >= t) {
            let _ = out.send(FromSenders::Stopped);
            return;
        }
    }
}
