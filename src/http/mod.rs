//! Sending one signed webhook over HTTP, and the worker's pool of sender threads.
//! Nothing here touches PostgreSQL: threads only move plain Rust data over channels.

use crate::answer::Answer;
use std::sync::Arc;
use std::time::Instant;

mod client;
mod format;
mod pool;
mod resolve;
mod tunnel;

pub use client::*;
pub use format::*;
pub use pool::*;
pub use resolve::*;
pub use tunnel::*;

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
    /// W3C trace context of the transaction that published the event, sent as is.
    pub traceparent: Option<String>,
    pub format: Format,
    /// The endpoint's own agent when it presents a client certificate; else the shared one.
    pub agent: Option<Client>,
    /// A request not started by then is dropped unsent: its batch stopped waiting for it and
    /// its lease covers only requests that start before this instant.
    pub not_after: Option<Instant>,
}

/// One request's end: the answer (made on the sender thread, `crate::answer`), what went wrong
/// in words, the first bytes of the answer's body and when and how long.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub tag: usize,
    pub answer: Answer,
    pub error: Option<String>,
    pub body: String,
    pub started_at_us: i64,
    pub duration_ms: f64,
}

impl Outcome {
    /// Never sent (`Answer::NotSent`): no attempt to record.
    pub fn unsent(tag: usize, busy: bool) -> Outcome {
        Outcome {
            tag,
            answer: Answer::NotSent { busy },
            ..Default::default()
        }
    }

    /// Not attempted for a reason of ours (the guard, an unusable endpoint): a failed attempt.
    pub fn failed(tag: usize, why: String) -> Outcome {
        Outcome {
            tag,
            error: Some(why),
            started_at_us: now_us(),
            ..Default::default()
        }
    }

    pub fn ok(&self) -> bool {
        self.error.is_none() && self.answer.ok()
    }

    pub fn status(&self) -> Option<u16> {
        self.answer.code()
    }

    /// What went wrong, in words that name no host, address or URL: for publishers, who must
    /// not learn where an endpoint points.
    pub fn public(&self) -> String {
        if let (None, Some(s)) = (&self.error, self.status()) {
            return format!("HTTP {s}");
        }
        let e = self.error.as_deref().unwrap_or("no response");
        let kinds = [
            ("TLS: untrusted certificate", "TLS: untrusted certificate"),
            ("TLS: hostname mismatch", "TLS: hostname mismatch"),
            (
                "TLS: the certificate of",
                "TLS: certificate expired or not yet valid",
            ),
            ("TLS: ", "TLS handshake failed"),
            ("refused", "refused by the outbound guard"),
            ("timeout", "timeout"),
            ("host not found", "host not found"),
            ("proxy refused", "proxy refused the tunnel"),
            ("endpoint client certificate", "client certificate unusable"),
            ("endpoint secret", "endpoint secret or headers unusable"),
            ("webhooks.tls_ca_file", "webhooks.tls_ca_file unreadable"),
        ];
        kinds
            .iter()
            .find(|(prefix, _)| e.starts_with(prefix))
            .map(|(_, k)| k.to_string())
            .unwrap_or_else(|| "connection failed".into())
    }

    /// A short description of a failure for `last_error` and error messages.
    pub fn describe(&self) -> String {
        match (&self.error, self.status()) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => format!("HTTP {s}"),
            (None, None) => "no response".into(),
        }
    }
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Mutex;
    use std::time::Duration;

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
            traceparent: None,
            format: Format::default(),
            agent: None,
            not_after: None,
        }
    }

    fn plain(allow_private: bool) -> Client {
        agent(
            &ClientSettings {
                timeout: Duration::from_secs(5),
                allow_private,
                max_idle_per_host: 1,
                proxy: None,
                trust: tls::Trust::default(),
            },
            None,
        )
    }

    #[test]
    fn proxy_setting_is_http_host_port_only() {
        assert_eq!(
            parse_proxy("http://proxy.corp:3128").unwrap(),
            ("proxy.corp".to_string(), 3128)
        );
        assert!(parse_proxy("https://p:1").unwrap_err().contains("http://"));
        assert!(parse_proxy("http://u:p@p:1")
            .unwrap_err()
            .contains("password"));
        assert!(parse_proxy("http://p:1/x")
            .unwrap_err()
            .contains("host:port"));
        assert!(parse_proxy("nope").is_err());
    }

    #[test]
    fn with_a_proxy_the_target_is_still_checked_and_the_proxy_is_exempt() {
        let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
        proxy.set_nonblocking(true).unwrap();
        let a = agent(
            &ClientSettings {
                timeout: Duration::from_secs(5),
                allow_private: false,
                max_idle_per_host: 1,
                proxy: Some(format!("http://{}", proxy.local_addr().unwrap())),
                trust: tls::Trust::default(),
            },
            None,
        );
        // A name (not an IP literal the URL check would catch) that resolves to loopback.
        let out = send(&a, &job("https://localhost:1/hook".into()));
        let e = out.error.unwrap_or_default();
        assert!(e.contains("refused") && e.contains("loopback"), "{e}");
        assert!(proxy.accept().is_err(), "the proxy was never asked");
        // The proxy's own (loopback) address is not refused: the CONNECT reaches it. The
        // target is a documentation address; only the local proxy is ever connected to.
        proxy.set_nonblocking(false).unwrap();
        let h = std::thread::spawn(move || {
            let (mut s, _) = proxy.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&req).contains("\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        let out = send(&a, &job("https://93.184.215.14:443/hook".into()));
        let connect = h.join().unwrap();
        assert!(
            connect.starts_with("CONNECT 93.184.215.14:443 "),
            "{connect}"
        );
        let e = out.error.unwrap_or_default();
        assert!(e.contains("proxy refused"), "{e}");
    }

    /// Test names with scripted answers, one per lookup (the last one repeats).
    static DNS: Mutex<Vec<(String, Vec<std::net::IpAddr>)>> = Mutex::new(Vec::new());

    pub(super) fn dns_answer(host: &str) -> Option<Vec<std::net::IpAddr>> {
        let mut script = DNS.lock().ok()?;
        let i = script.iter().position(|(h, _)| h == host)?;
        let more = script.iter().filter(|(h, _)| h == host).count() > 1;
        let (_, ips) = if more {
            script.remove(i)
        } else {
            script[i].clone()
        };
        Some(ips)
    }

    #[test]
    fn the_proxy_is_asked_for_the_checked_address_not_the_name() {
        // A rebinding name: public on the first lookup, loopback on every later one. The
        // guard looks once; the proxy must be asked for that address, never for the name
        // (it would look again and reach the loopback address).
        {
            let mut script = DNS.lock().unwrap();
            script.push(("rebind.test".into(), vec!["93.184.215.14".parse().unwrap()]));
            script.push(("rebind.test".into(), vec!["127.0.0.1".parse().unwrap()]));
        }
        let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = agent(
            &ClientSettings {
                timeout: Duration::from_secs(5),
                allow_private: false,
                max_idle_per_host: 1,
                proxy: Some(format!("http://{}", proxy.local_addr().unwrap())),
                trust: tls::Trust::default(),
            },
            None,
        );
        let h = std::thread::spawn(move || {
            let (mut s, _) = proxy.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&req).contains("\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&req).into_owned()
        });
        let out = send(&a, &job("https://rebind.test:8443/hook".into()));
        let connect = h.join().unwrap();
        assert!(
            connect.starts_with("CONNECT 93.184.215.14:8443 HTTP/1.1\r\n"),
            "{connect}"
        );
        assert!(!connect.contains("rebind.test"), "{connect}");
        let e = out.error.unwrap_or_default();
        assert!(e.contains("proxy refused"), "{e}");
        // The second answer was never asked for: one lookup, by the guard.
        assert_eq!(
            dns_answer("rebind.test"),
            Some(vec!["127.0.0.1".parse().unwrap()])
        );
        DNS.lock().unwrap().clear();
    }

    #[test]
    fn one_lookup_per_name_and_a_full_table_defers_others() {
        let mut under_way = std::collections::HashMap::new();
        let (a, start) = join_lookup(&mut under_way, "dead.example.invalid").unwrap();
        assert!(start);
        // a second request for the name waits on the same lookup
        let (b, start) = join_lookup(&mut under_way, "dead.example.invalid").unwrap();
        assert!(!start && Arc::ptr_eq(&a, &b));
        // every helper taken by other names: a lookup is deferred, not failed
        for i in 1..DNS_HELPERS_MAX {
            join_lookup(&mut under_way, &format!("dead{i}.invalid")).unwrap();
        }
        let e = join_lookup(&mut under_way, "alive.example.com")
            .err()
            .unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(e.to_string(), UNSENT_BUSY);
        // (but a name already being looked up is still joined)
        assert!(!join_lookup(&mut under_way, "dead7.invalid").unwrap().1);
    }

    #[test]
    fn dns_is_bounded_by_the_budget() {
        // An IP literal never waits; a name gets at most the budget.
        assert!(resolve_within("127.0.0.1", 1, Duration::from_millis(1)).is_ok());
        let t = Instant::now();
        let _ = resolve_within("name.invalid", 1, Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn sends_signed_request_and_reads_status() {
        let (url, h) = serve_once("HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok");
        let out = send(&plain(true), &job(url));
        let req = h.join().unwrap().to_ascii_lowercase();
        assert_eq!(out.status(), Some(201), "{out:?}");
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
        let out = send(&plain(true), &job(url));
        h.join().unwrap();
        assert!(!out.ok());
        assert_eq!(out.describe(), "HTTP 503");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let out = send(&plain(false), &job(url));
        assert!(out.describe().contains("refused"), "{out:?}");
    }
}
