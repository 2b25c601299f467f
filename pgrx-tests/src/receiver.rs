//! A recording HTTP(S) receiver on 127.0.0.1 whose answers each test scripts.
//!
//! HTTPS by default (rustls, TLS 1.2+, `ring`, a certificate from the shared test [`Pki`]):
//! [`Receiver::ok`] / [`Receiver::scripted`]; another certificate through [`Receiver::https`]
//! (builder) or [`Receiver::tls`]. Plain HTTP only for tests about http:// URLs:
//! [`Receiver::plain`].

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use crate::pki::Pki;
pub use crate::pki::ServerCert;

/// How long a connection may sit idle (or in a handshake) before its thread gives up.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Larger request bodies are refused (the connection is closed).
const MAX_BODY: usize = 64 << 20;

#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub at: Instant,
    /// True when the request came over TLS.
    pub tls: bool,
    /// True when the TLS client presented a (verified) client certificate; false for plain http.
    pub client_cert: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("body is JSON")
    }
}

/// How the receiver answers one request.
pub enum Reply {
    Status(u16, &'static str),
    /// A status with a `Retry-After` header of this value.
    RetryAfter(u16, String),
    /// Sleep this long, then answer 200.
    Slow(Duration),
    /// Close the connection without answering.
    Reset,
    /// Write bytes that are not HTTP.
    Garbage,
    /// A 200 whose headers go on for a megabyte.
    HugeHead,
}

type Script = dyn Fn(&Request, usize) -> Reply + Send + Sync;

/// Whether an HTTPS receiver asks for a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Never asks; `Request::client_cert` is always false.
    None,
    /// Asks; accepts clients without one, but a presented certificate must verify against the
    /// client CA.
    Optional,
    /// Requires a certificate that verifies against the client CA; handshakes without fail.
    Required,
}

pub struct Receiver {
    /// `http://127.0.0.1:<port>/hook`, or for HTTPS `https://localhost:<port>/hook`.
    pub url: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
    url_ip: String,
    port: u16,
    shared: Arc<Shared>,
}

/// Builder for an HTTPS [`Receiver`]; see [`Receiver::https`].
pub struct HttpsReceiver<'a> {
    pki: &'a Pki,
    cert: ServerCert,
    client_auth: ClientAuth,
}

impl HttpsReceiver<'_> {
    /// The server certificate to present (default [`ServerCert::Good`]).
    pub fn cert(mut self, cert: ServerCert) -> Self {
        self.cert = cert;
        self
    }

    /// Client certificate policy (default [`ClientAuth::None`]).
    pub fn client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// Shorthand for `client_auth(ClientAuth::Required)`.
    pub fn require_client_cert(self) -> Self {
        self.client_auth(ClientAuth::Required)
    }

    /// Starts the receiver answering 200 to everything.
    pub fn ok(self) -> Receiver {
        self.scripted(|_, _| Reply::Status(200, "ok"))
    }

    /// Starts the receiver; `script(request, n)` decides the answer; n counts requests from 0.
    pub fn scripted(
        self,
        script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let config = server_config(self.pki, self.cert, self.client_auth)
            .unwrap_or_else(|e| panic!("TLS config for {:?}: {e}", self.cert));
        Receiver::start(Some(Arc::new(config)), Box::new(script))
    }
}

impl Receiver {
    /// HTTPS with a certificate of the shared test PKI (whose CA every test cluster trusts
    /// through `webhooks.tls_ca_file`): answers 200 to everything.
    pub fn ok() -> Receiver {
        Receiver::scripted(|_, _| Reply::Status(200, "ok"))
    }

    /// HTTPS as `ok()`; `script(request, n)` decides the answer; n counts requests from 0.
    pub fn scripted(script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        Receiver::https(crate::pki::shared()).scripted(script)
    }

    /// Plain HTTP (only for tests of what happens to http:// URLs).
    pub fn plain(script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        Receiver::start(None, Box::new(script))
    }

    /// Starts building an HTTPS receiver with a certificate from `pki`, e.g.
    /// `Receiver::https(&pki).cert(ServerCert::Expired).require_client_cert().ok()`.
    pub fn https(pki: &Pki) -> HttpsReceiver<'_> {
        HttpsReceiver {
            pki,
            cert: ServerCert::Good,
            client_auth: ClientAuth::None,
        }
    }

    /// HTTPS receiver presenting `cert`; with `require_client_cert` it requires a client
    /// certificate signed by the PKI's client CA.
    pub fn tls(
        pki: &Pki,
        cert: ServerCert,
        require_client_cert: bool,
        script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static,
    ) -> Receiver {
        let auth = if require_client_cert {
            ClientAuth::Required
        } else {
            ClientAuth::None
        };
        Receiver::https(pki)
            .cert(cert)
            .client_auth(auth)
            .scripted(script)
    }

    fn start(tls: Option<Arc<ServerConfig>>, script: Box<Script>) -> Receiver {
        let v4 = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = v4.local_addr().expect("local_addr").port();
        let mut listeners = vec![v4];
        // Also listen on [::1] with the same port in case `localhost` resolves there first.
        if let Ok(v6) = TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
            listeners.push(v6);
        }
        for l in &listeners {
            l.set_nonblocking(true).expect("set_nonblocking");
        }
        let (url, url_ip) = match tls {
            Some(_) => (
                format!("https://localhost:{port}/hook"),
                format!("https://127.0.0.1:{port}/hook"),
            ),
            None => {
                let u = format!("http://127.0.0.1:{port}/hook");
                (u.clone(), u)
            }
        };
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            requests: Arc::clone(&requests),
            script,
            tls,
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            failed_handshakes: AtomicUsize::new(0),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
        });
        let sh = Arc::clone(&shared);
        std::thread::spawn(move || accept_loop(listeners, sh));
        Receiver {
            url,
            requests,
            url_ip,
            port,
            shared,
        }
    }

    /// Like `url` but with the IP address: `https://127.0.0.1:<port>/hook` (or http).
    pub fn url_ip(&self) -> &str {
        &self.url_ip
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    pub fn count(&self) -> usize {
        lock(&self.requests).len()
    }

    pub fn all(&self) -> Vec<Request> {
        lock(&self.requests).clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Completed TLS handshakes (0 for plain http).
    pub fn handshakes(&self) -> usize {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed (bad client certificate, client rejected ours, EOF, ...).
    pub fn failed_handshakes(&self) -> usize {
        self.shared.failed_handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    /// Stops accepting and closes every open connection, so all threads end promptly.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in lock(&self.shared.conns).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

struct Shared {
    requests: Arc<Mutex<Vec<Request>>>,
    script: Box<Script>,
    tls: Option<Arc<ServerConfig>>,
    stop: AtomicBool,
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    failed_handshakes: AtomicUsize,
    /// Open connections (clones), shut down on drop.
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_conn: AtomicU64,
}

/// Locks ignoring poison: a panicking script must not take the receiver down with it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn server_config(
    pki: &Pki,
    cert: ServerCert,
    client_auth: ClientAuth,
) -> Result<ServerConfig, Box<dyn std::error::Error>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let mut roots = RootCertStore::empty();
            roots.add(pki.client_ca().cert_der())?;
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if client_auth == ClientAuth::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build()?)
        }
    };
    let ck = pki.server(cert);
    Ok(builder.with_single_cert(vec![ck.cert_der()], ck.key_der())?)
}

fn accept_loop(listeners: Vec<TcpListener>, sh: Arc<Shared>) {
    while !sh.stop.load(Ordering::SeqCst) {
        let mut idle = true;
        for l in &listeners {
            if let Ok((s, _)) = l.accept() {
                idle = false;
                let sh = Arc::clone(&sh);
                std::thread::spawn(move || connection(s, sh));
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One accepted connection: register it, (TLS: handshake), serve, unregister.
fn connection(s: TcpStream, sh: Arc<Shared>) {
    sh.connections.fetch_add(1, Ordering::SeqCst);
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let id = sh.next_conn.fetch_add(1, Ordering::SeqCst);
    if let Ok(c) = s.try_clone() {
        lock(&sh.conns).insert(id, c);
    }
    // Drop may have swept the registry just before we registered.
    if !sh.stop.load(Ordering::SeqCst) {
        match &sh.tls {
            None => serve(s, false, false, &sh),
            Some(cfg) => match handshake(s, Arc::clone(cfg)) {
                Some(stream) => {
                    sh.handshakes.fetch_add(1, Ordering::SeqCst);
                    let client_cert = stream
                        .conn
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    serve(stream, true, client_cert, &sh);
                }
                None => {
                    sh.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            },
        }
    }
    lock(&sh.conns).remove(&id);
}

fn handshake(
    mut tcp: TcpStream,
    cfg: Arc<ServerConfig>,
) -> Option<StreamOwned<ServerConnection, TcpStream>> {
    let mut conn = ServerConnection::new(cfg).ok()?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).ok()?;
    }
    Some(StreamOwned::new(conn, tcp))
}

/// Keep-alive request loop shared by plain and TLS connections.
fn serve<S: Read + Write>(s: S, tls: bool, client_cert: bool, sh: &Shared) {
    let mut r = BufReader::new(s);
    while !sh.stop.load(Ordering::SeqCst) {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if len > MAX_BODY {
            return;
        }
        let mut body = Vec::with_capacity(len.min(1 << 20));
        match (&mut r).take(len as u64).read_to_end(&mut body) {
            Ok(n) if n == len => {}
            _ => return,
        }
        let req = Request {
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
            tls,
            client_cert,
        };
        let n = {
            let mut all = lock(&sh.requests);
            all.push(req.clone());
            all.len() - 1
        };
        let mut extra = String::new();
        let (status, text) = match (sh.script)(&req, n) {
            Reply::Status(s, t) => (s, t),
            Reply::RetryAfter(s, after) => {
                extra = format!("retry-after: {after}\r\n");
                (s, "slow down")
            }
            Reply::Slow(d) => {
                std::thread::sleep(d);
                (200, "slow ok")
            }
            Reply::Reset => return,
            Reply::Garbage => {
                let w = r.get_mut();
                let _ = w.write_all(b"\x00\x01garbage not http\r\n\r\n");
                let _ = w.flush();
                return;
            }
            Reply::HugeHead => {
                let w = r.get_mut();
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\n");
                let line = format!("x-pad: {}\r\n", "p".repeat(1000));
                for _ in 0..1000 {
                    if w.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                }
                let _ = w.write_all(b"content-length: 0\r\n\r\n");
                let _ = w.flush();
                return;
            }
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{text}",
            text.len()
        );
        let w = r.get_mut();
        if w.write_all(resp.as_bytes())
            .and_then(|_| w.flush())
            .is_err()
        {
            return;
        }
    }
}
