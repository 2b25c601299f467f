//! Test support: private PostgreSQL clusters run as the `postgres` user, a recording HTTP(S)
//! receiver on 127.0.0.1 whose answers each test scripts, a run-time test PKI and a CONNECT proxy.

pub mod cluster;
pub mod pki;
pub mod proxy;
pub mod receiver;
pub mod restore;
pub mod trojan;

use std::time::{Duration, Instant};

/// Polls `f` until it returns Some or `timeout` passes (then panics with `what`).
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when the request's Standard Webhooks headers verify with the reference library
/// (the `standardwebhooks` crate) for `secret`.
pub fn verify_signature(secret: &str, req: &receiver::Request) -> bool {
    let Ok(wh) = standardwebhooks::Webhook::new(secret) else {
        return false;
    };
    let mut h = http::HeaderMap::new();
    for k in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        match req.header(k).parse() {
            Ok(v) => {
                h.insert(k, v);
            }
            Err(_) => return false,
        }
    }
    wh.verify(req.body.as_bytes(), &h).is_ok()
}
