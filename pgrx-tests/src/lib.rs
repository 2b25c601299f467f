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

/// Python's `cryptography` checks a v1a signature (ed25519 over id.timestamp.body) with the
/// endpoint's whpk_ public key: an implementation independent of the extension's.
pub fn python_verifies_v1a(public_key: &str, req: &receiver::Request) -> Vec<bool> {
    let dir = std::env::temp_dir().join(format!("v1a-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = dir.join(format!("body-{}", req.header("webhook-id")));
    std::fs::write(&body, req.body.as_bytes()).unwrap();
    let script = r#"
import base64, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
key = Ed25519PublicKey.from_public_bytes(base64.b64decode(sys.argv[1].removeprefix("whpk_")))
msg = sys.argv[2].encode() + b"." + sys.argv[3].encode() + b"." + open(sys.argv[4], "rb").read()
for entry in sys.argv[5].split():
    version, _, sig = entry.partition(",")
    try:
        assert version == "v1a"
        key.verify(base64.b64decode(sig), msg)
        print("ok")
    except Exception:
        print("bad")
"#;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            script,
            public_key,
            req.header("webhook-id"),
            req.header("webhook-timestamp"),
            body.to_str().unwrap(),
            req.header("webhook-signature"),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l == "ok")
        .collect()
}
