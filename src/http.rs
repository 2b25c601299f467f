//! Sending one signed webhook over HTTP, and the worker's pool of sender threads.
//! Nothing here touches PostgreSQL: threads only move plain Rust data over channels.

use crate::signing;
use crate::target;
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::Agent;

/// Response bytes read before the connection is given up; the first `KEEP_BODY` are recorded.
pub const READ_LIMIT: usize = 64 * 1024;
pub const KEEP_BODY: usize = 4 * 1024;
pub const USER_AGENT: &str = concat!("webhooks-pg/", env!("CARGO_PKG_VERSION"));

/// What the sender needs to make one request. Signing happens on the sender thread so that
/// `webhook-timestamp` is the time of this attempt.
#[derive(Clone, Debug)]
pub struct Job {
    pub tag: usize,
    pub url: String,
    pub msg_id: String,
    pub event_type: String,
    pub attempt: i32,
    pub body: Arc<String>,
    pub keys: Arc<Vec<Vec<u8>>>,
    pub headers: Arc<Vec<(String, String)>>,
}

#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub tag: usize,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub body: String,
    pub started_at_us: i64,
    pub duration_ms: f64,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// A short description of a failure for `last_error` and error messages.
    pub fn describe(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => format!("HTTP {s}"),
            (None, None) => "no response".into(),
        }
    }
}

/// Resolves like the system resolver, then refuses the whole answer when any address is one
/// the outbound guard forbids: the check is on the address actually connected to.
#[derive(Debug)]
struct GuardedResolver {
    allow_private: bool,
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(ureq::Error::Io)?
            .collect();
        let mut out = self.empty();
        for a in addrs.iter().take(16) {
            if !self.allow_private {
                if let Some(why) = target::forbidden_reason(a.ip()) {
                    return Err(ureq::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!("refused: {host} resolves to {} ({why} address)", a.ip()),
                    )));
                }
            }
            out.push(*a);
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

pub fn agent(timeout: Duration, max_idle: usize, allow_private: bool) -> Agent {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .user_agent(USER_AGENT)
        .max_idle_connections(max_idle.max(1) * 4)
        .max_idle_connections_per_host(max_idle.max(1))
        .build();
    Agent::with_parts(
        config,
        DefaultConnector::new(),
        GuardedResolver { allow_private },
    )
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Makes one attempt. Never panics on network input: every failure becomes `Outcome::error`.
pub fn send(agent: &Agent, job: &Job) -> Outcome {
    let started_at_us = now_us();
    let t0 = Instant::now();
    let ts = started_at_us / 1_000_000;
    let signature = signing::signature_header(&job.keys, &job.msg_id, ts, job.body.as_bytes());
    let mut req = agent
        .post(&job.url)
        .header("content-type", "application/json")
        .header("webhook-id", &job.msg_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .header("webhook-event-type", &job.event_type)
        .header("webhook-attempt", job.attempt.to_string());
    for (k, v) in job.headers.iter() {
        req = req.header(k, v);
    }
    let mut out = Outcome {
        tag: job.tag,
        started_at_us,
        ..Default::default()
    };
    match req.send(job.body.as_bytes()) {
        Ok(mut resp) => {
            out.status = Some(resp.status().as_u16());
            let mut buf = Vec::with_capacity(256);
            let reader = resp.body_mut().as_reader();
            if let Err(e) = reader.take(READ_LIMIT as u64).read_to_end(&mut buf) {
                // The status already arrived; a broken body is recorded but does not fail a 2xx.
                out.body = format!("(response body unreadable: {e})");
            } else {
                buf.truncate(KEEP_BODY);
                out.body = String::from_utf8_lossy(&buf).into_owned();
            }
        }
        Err(e) => out.error = Some(describe_error(&e)),
    }
    out.duration_ms = t0.elapsed().as_secs_f64() * 1000.0;
    out
}

fn describe_error(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timeout ({t:?})"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::Io(io) => format!("connection error: {io}"),
        other => format!("{other}"),
    }
}

/// Runs `f` with every signal blocked in the calling thread, so threads it spawns start with
/// all signals blocked: PostgreSQL's handlers must only ever run on the main thread.
pub fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

/// A fixed set of sender threads sharing one keep-alive connection pool.
pub struct Pool {
    jobs: Option<Sender<Job>>,
    pub results: Receiver<Outcome>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    pub fn new(size: usize, timeout: Duration, allow_private: bool) -> Pool {
        let (job_tx, job_rx) = channel::<Job>();
        let (res_tx, res_rx) = channel::<Outcome>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let agent = agent(timeout, size, allow_private);
        let threads = with_signals_blocked(|| {
            (0..size.max(1))
                .filter_map(|i| {
                    let rx = Arc::clone(&job_rx);
                    let tx = res_tx.clone();
                    let agent = agent.clone();
                    std::thread::Builder::new()
                        .name(format!("webhooks-http-{i}"))
                        .spawn(move || loop {
                            let job = match rx.lock() {
                                Ok(guard) => match guard.recv() {
                                    Ok(j) => j,
                                    Err(_) => return,
                                },
                                Err(_) => return,
                            };
                            if tx.send(send(&agent, &job)).is_err() {
                                return;
                            }
                        })
                        .ok()
                })
                .collect()
        });
        Pool {
            jobs: Some(job_tx),
            results: res_rx,
            threads,
        }
    }

    pub fn size(&self) -> usize {
        self.threads.len()
    }

    /// Queues a job; false when no sender thread is left to take it.
    pub fn submit(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn serve_once(response: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            s.write_all(response.as_bytes()).unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        (url, h)
    }

    fn job(url: String) -> Job {
        Job {
            tag: 7,
            url,
            msg_id: "evt_1".into(),
            event_type: "user.created".into(),
            attempt: 2,
            body: Arc::new("{\"a\":1}".into()),
            keys: Arc::new(vec![vec![1u8; 32]]),
            headers: Arc::new(vec![("x-extra".into(), "yes".into())]),
        }
    }

    #[test]
    fn sends_signed_request_and_reads_status() {
        let (url, h) = serve_once("HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok");
        let out = send(&agent(Duration::from_secs(5), 1, true), &job(url));
        let req = h.join().unwrap().to_ascii_lowercase();
        assert_eq!(out.status, Some(201), "{out:?}");
        assert!(out.ok());
        assert_eq!(out.body, "ok");
        assert!(req.contains("webhook-id: evt_1"));
        assert!(req.contains("webhook-attempt: 2"));
        assert!(req.contains("webhook-signature: v1,"));
        assert!(req.contains("x-extra: yes"));
        assert!(req.ends_with("{\"a\":1}"));
    }

    #[test]
    fn non_2xx_and_refused_targets_fail() {
        let (url, h) = serve_once("HTTP/1.1 503 Busy\r\ncontent-length: 4\r\n\r\nbusy");
        let out = send(&agent(Duration::from_secs(5), 1, true), &job(url));
        h.join().unwrap();
        assert!(!out.ok());
        assert_eq!(out.describe(), "HTTP 503");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let out = send(&agent(Duration::from_secs(5), 1, false), &job(url));
        assert!(out.describe().contains("refused"), "{out:?}");
    }
}
