//! Sending one signed webhook over HTTP, and the worker's pool of sender threads.
//! Nothing here touches PostgreSQL: threads only move plain Rust data over channels.

use crate::signing;
use crate::target;
use crate::tls;
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ureq::http::Uri;
use ureq::tls::{ClientCert, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    ConnectionDetails, Connector, Either, NextTimeout, RustlsConnector, TcpConnector, Transport,
    TransportAdapter,
};
use ureq::Agent;

/// Response bytes read before the connection is given up; the first `KEEP_BODY` are recorded.
pub const READ_LIMIT: usize = 64 * 1024;
pub const KEEP_BODY: usize = 4 * 1024;
pub const USER_AGENT: &str = concat!("webhooks-pg/", env!("CARGO_PKG_VERSION"));

/// How a request is signed and which headers name it: the Standard Webhooks `webhook-*`
/// headers, or the hmac-hex format's `<prefix>Signature` (hex HMAC of the body), `Event-Id`,
/// `Event-Type`, `Delivery-Attempt` and `Timestamp`.
#[derive(Clone, Debug, Default)]
pub enum Format {
    #[default]
    StandardWebhooks,
    /// Standard Webhooks with `v1a` (ed25519) signatures: the keys are private key seeds.
    StandardWebhooksV1a,
    HmacHex {
        prefix: String,
    },
}

impl Format {
    pub fn from_columns(format: &str, prefix: Option<&str>, signature: Option<&str>) -> Format {
        match (format, signature) {
            ("hmac-hex", _) => Format::HmacHex {
                prefix: prefix.unwrap_or("X-Webhook-").to_string(),
            },
            (_, Some("v1a")) => Format::StandardWebhooksV1a,
            _ => Format::StandardWebhooks,
        }
    }

    /// The signing keys of a secret in this format: Standard Webhooks keys are the base64 after
    /// `whsec_`; an hmac-hex receiver holds the whole string.
    pub fn keys(&self, secrets: &[String]) -> Result<Vec<Vec<u8>>, String> {
        match self {
            Format::StandardWebhooks => signing::keys(secrets.iter().map(String::as_str))
                .map_err(|e| format!("endpoint secret unusable: {e}")),
            // (no key: refused, never sent unsigned)
            Format::StandardWebhooksV1a if secrets.is_empty() => {
                Err("the endpoint's v1a private key is missing".into())
            }
            Format::StandardWebhooksV1a => secrets
                .iter()
                .map(|s| {
                    signing::ed25519_seed(s).map_err(|e| format!("endpoint key unusable: {e}"))
                })
                .collect(),
            Format::HmacHex { .. } => Ok(secrets.iter().map(|s| s.as_bytes().to_vec()).collect()),
        }
    }
}

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

#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub tag: usize,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub body: String,
    pub started_at_us: i64,
    pub duration_ms: f64,
    /// The receiver's `Retry-After`, as sent (read only on the answers that may carry it).
    pub retry_after: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.status.is_some_and(|s| (200..300).contains(&s))
    }

    /// What went wrong, in words that name no host, address or URL: for publishers, who must
    /// not learn where an endpoint points.
    pub fn public(&self) -> String {
        if let (None, Some(s)) = (&self.error, self.status) {
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
        match (&self.error, self.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => format!("HTTP {s}"),
            (None, None) => "no response".into(),
        }
    }
}

/// How delivery connects: trust, proxy, guard and timeout. One per worker configuration (or
/// sync call); endpoints with a client certificate get an agent of their own built from it.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub timeout: Duration,
    pub allow_private: bool,
    pub max_idle_per_host: usize,
    /// `http://host:port` of an explicit CONNECT proxy (`webhooks.http_proxy`).
    pub proxy: Option<String>,
    pub trust: tls::Trust,
}

/// Resolves with the system resolver within the attempt's time budget, then refuses the whole
/// answer when any address is one the outbound guard forbids: the check is on the address
/// actually connected to, directly or through the proxy (see `CheckedTunnel`).
#[derive(Debug)]
struct GuardedResolver {
    allow_private: bool,
}

fn default_port(uri: &Uri) -> u16 {
    uri.port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        })
}

/// `to_socket_addrs` blocks for as long as the system resolver likes (30 s and more with a dead
/// nameserver): it runs on a helper thread and the callers stop waiting when their budget is
/// spent. A helper left behind ends when the resolver gives up; it never touches PostgreSQL.
/// One lookup per name at a time: requests that need a name being looked up wait for that
/// lookup's answer (a burst of requests to one receiver makes one lookup, and a name whose
/// nameserver never answers holds one helper, its own requests timing out on it). When every
/// helper is taken anyway (that many such names), a lookup of another name is not failed but
/// deferred (`UNSENT_BUSY`): another endpoint's dead names are never held against it.
const DNS_HELPERS_MAX: usize = 256;

/// A lookup under way and what it found (addresses without their port).
struct Lookup {
    answer: Mutex<Option<Result<Vec<std::net::IpAddr>, String>>>,
    done: std::sync::Condvar,
}

static LOOKUPS: Mutex<Option<std::collections::HashMap<String, Arc<Lookup>>>> = Mutex::new(None);

/// A lookup that could not start for want of a helper: the request is given back, unsent, to
/// be tried a second later (no attempt counted).
pub const UNSENT_BUSY: &str = "internal: not sent (every DNS helper is waiting on a nameserver)";

/// The lookup of `name` to wait for: the one under way, or a new one (true: the caller starts
/// it), or none when every helper is taken.
fn join_lookup(
    under_way: &mut std::collections::HashMap<String, Arc<Lookup>>,
    name: &str,
) -> Result<(Arc<Lookup>, bool), std::io::Error> {
    if let Some(l) = under_way.get(name) {
        return Ok((Arc::clone(l), false));
    }
    if under_way.len() >= DNS_HELPERS_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            UNSENT_BUSY,
        ));
    }
    let l = Arc::new(Lookup {
        answer: Mutex::new(None),
        done: std::sync::Condvar::new(),
    });
    under_way.insert(name.to_string(), Arc::clone(&l));
    Ok((l, true))
}

fn resolve_within(host: &str, port: u16, budget: Duration) -> Result<Vec<SocketAddr>, ureq::Error> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    #[cfg(test)]
    if let Some(ips) = tests::dns_answer(host) {
        return Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    let name = host.to_ascii_lowercase();
    let (lookup, start) = {
        let mut g = LOOKUPS.lock().unwrap_or_else(|p| p.into_inner());
        join_lookup(g.get_or_insert_with(Default::default), &name).map_err(ureq::Error::Io)?
    };
    if start {
        let (helper, held) = (Arc::clone(&lookup), name.clone());
        let spawned = with_signals_blocked(|| {
            std::thread::Builder::new()
                .name("webhooks-dns".into())
                .spawn(move || {
                    let r = (held.as_str(), 0)
                        .to_socket_addrs()
                        .map(|a| a.map(|a| a.ip()).collect::<Vec<_>>())
                        .map_err(|e| e.to_string());
                    // (gone from the table first: a later request looks the name up anew)
                    if let Some(m) = LOOKUPS.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                        m.remove(&held);
                    }
                    *helper.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                    helper.done.notify_all();
                })
        });
        if let Err(e) = spawned {
            if let Some(m) = LOOKUPS.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                m.remove(&name);
            }
            return Err(ureq::Error::Io(e));
        }
    }
    let answer = lookup.answer.lock().unwrap_or_else(|p| p.into_inner());
    let (answer, _) = lookup
        .done
        .wait_timeout_while(answer, budget, |a| a.is_none())
        .unwrap_or_else(|p| p.into_inner());
    match answer.as_ref() {
        Some(Ok(ips)) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
        Some(Err(e)) => Err(ureq::Error::Io(std::io::Error::other(e.clone()))),
        None => Err(ureq::Error::Timeout(ureq::Timeout::Resolve)),
    }
}

impl Resolver for GuardedResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = default_port(uri);
        let budget = (*timeout.after).min(Duration::from_secs(60));
        let addrs = resolve_within(host, port, budget)?;
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

/// Checks a `webhooks.http_proxy` value: `http://host:port`, nothing else.
pub fn parse_proxy(raw: &str) -> Result<(String, u16), String> {
    let url = url::Url::parse(raw.trim())
        .map_err(|e| format!("\"{raw}\" is not a URL like http://proxy.example.com:3128: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "\"{raw}\" must start with http:// (the proxy is reached over plain HTTP and tunnels TLS with CONNECT)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "\"{raw}\" must not contain a user name or password"
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("\"{raw}\" must be only http://host:port"));
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("\"{raw}\" has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port().unwrap_or(80);
    Ok((host, port))
}

/// A ureq agent with its timeout.
#[derive(Clone, Debug)]
pub struct Client {
    agent: Agent,
}

/// `webhooks.http_proxy`: ureq is given no proxy, so it resolves the target itself through the
/// `GuardedResolver` and the addresses it hands the connectors passed the guard. This
/// connector, first in the chain, then opens the TCP connection to the proxy instead and asks
/// it to CONNECT to the first checked address, never to the name: the proxy makes no lookup of
/// its own that a rebinding name could answer differently. TLS runs through the tunnel with the
/// name as SNI and for the certificate check (the next connectors see the target's URI).
/// The proxy itself is exempt from the guard (it usually is a private address).
#[derive(Debug)]
struct CheckedTunnel {
    proxy: Option<(String, u16)>,
}

/// The head of a proxy's answer to CONNECT, at most.
const PROXY_HEAD_MAX: usize = 8 * 1024;

impl<In: Transport> Connector<In> for CheckedTunnel {
    type Out = Either<In, Box<dyn Transport>>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        if chained.is_some() {
            return Ok(chained.map(Either::A));
        }
        let Some((host, port)) = &self.proxy else {
            return Ok(None);
        };
        // Every address that passed, IPv4 first (a proxy without IPv6 is common): the next is
        // tried when the proxy cannot reach one.
        let mut targets: Vec<SocketAddr> = details.addrs.iter().copied().collect();
        targets.sort_by_key(|a| a.is_ipv6());
        let mut last = ureq::Error::HostNotFound;
        for target in targets.into_iter().take(4) {
            match self.tunnel(details, host, *port, target) {
                Ok(t) => return Ok(Some(Either::B(t))),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl CheckedTunnel {
    /// A TCP connection to the proxy, tunnelled by CONNECT to `target`.
    fn tunnel(
        &self,
        details: &ConnectionDetails,
        host: &str,
        port: u16,
        target: SocketAddr,
    ) -> Result<Box<dyn Transport>, ureq::Error> {
        let budget = (*details.timeout.after).min(Duration::from_secs(60));
        let found = resolve_within(host, port, budget)?;
        let mut addrs = details.resolver.empty();
        for a in found.iter().take(16) {
            addrs.push(*a);
        }
        if addrs.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let proxy_uri: Uri = format!("http://{authority}/")
            .parse()
            .map_err(|_| ureq::Error::BadUri(authority.clone()))?;
        let leg = ConnectionDetails {
            uri: &proxy_uri,
            addrs,
            config: details.config,
            request_level: details.request_level,
            resolver: details.resolver,
            now: details.now,
            timeout: details.timeout,
            current_time: details.current_time.clone(),
            run_connector: details.run_connector.clone(),
            register_shutdown: details.register_shutdown.clone(),
        };
        let tcp = <TcpConnector as Connector<()>>::connect(&TcpConnector::default(), &leg, None)?
            .ok_or(ureq::Error::HostNotFound)?;
        let mut w = TransportAdapter::new(tcp, details.current_time.clone());
        w.set_timeout(details.timeout);
        // A SocketAddr prints as the authority CONNECT takes: 192.0.2.1:443, [2001:db8::1]:443.
        std::io::Write::write_all(
            &mut w,
            format!(
                "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {USER_AGENT}\r\n\r\n"
            )
            .as_bytes(),
        )?;
        // Byte by byte up to the blank line: nothing of the tunnel may be read ahead.
        let mut head = Vec::with_capacity(128);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= PROXY_HEAD_MAX || w.read(&mut byte)? == 0 {
                return Err(ureq::Error::ConnectProxyFailed(
                    "the proxy closed the connection or sent no complete answer".into(),
                ));
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        let status = head.lines().next().unwrap_or_default();
        let code = status.split_whitespace().nth(1).unwrap_or_default();
        if !status.starts_with("HTTP/1.") || code != "200" {
            return Err(ureq::Error::ConnectProxyFailed(format!(
                "proxy server responded {}",
                status.chars().take(80).collect::<String>()
            )));
        }
        Ok(w.into_inner().boxed())
    }
}

/// Idle connections per host a client with a certificate keeps, at most.
const MTLS_IDLE: usize = 4;

/// A client for `s`, presenting `client` when a receiver asks for a client certificate.
pub fn agent(s: &ClientSettings, client: Option<ClientCert>) -> Client {
    // A client with a certificate serves one endpoint (the worker keeps up to 256 of them):
    // its idle connections are held to a few, so that together they stay far from the
    // process's descriptor limit (100 mTLS endpoints reached 810 of 1,024 in 0.4.0's review).
    let idle = if client.is_some() {
        s.max_idle_per_host.clamp(1, MTLS_IDLE)
    } else {
        s.max_idle_per_host.max(1)
    };
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(tls::crypto_provider())
        .root_certs(RootCerts::Specific(Arc::clone(&s.trust.roots)))
        .client_cert(client)
        .build();
    let proxy_at = s.proxy.as_deref().and_then(|p| parse_proxy(p).ok());
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(s.timeout))
        .user_agent(USER_AGENT)
        .max_idle_connections(idle * 4)
        .max_idle_connections_per_host(idle)
        // Buffers per connection, kept by idle ones too: 64 KiB to read an answer's head (its
        // limit), 16 KiB to write (a body goes out in chunks). ureq's 128 KiB each made a
        // worker's 64 senders and their idle connections hold tens of megabytes.
        .input_buffer_size(64 * 1024)
        .output_buffer_size(16 * 1024)
        // (below the input buffer: at its size a longer head filled the buffer and was
        // reported as "Peer disconnected" instead of too long)
        .max_response_header_size(MAX_ANSWER_HEAD)
        .tls_config(tls)
        // Never the environment's ALL_PROXY/HTTPS_PROXY; the setting's proxy is CheckedTunnel's.
        .proxy(None)
        .build();
    let connector =
        ().chain(CheckedTunnel { proxy: proxy_at })
            .chain(TcpConnector::default())
            .chain(RustlsConnector::default());
    let agent = Agent::with_parts(
        config,
        connector,
        GuardedResolver {
            allow_private: s.allow_private,
        },
    );
    Client { agent }
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Makes one attempt. Never panics on network input: every failure becomes `Outcome::error`.
pub fn send(client: &Client, job: &Job) -> Outcome {
    let client = job.agent.as_ref().unwrap_or(client);
    let agent = &client.agent;
    let started_at_us = now_us();
    let t0 = Instant::now();
    let ts = started_at_us / 1_000_000;
    let mut req = agent
        .post(&job.url)
        .header("content-type", "application/json");
    match &job.format {
        Format::StandardWebhooks | Format::StandardWebhooksV1a => {
            let signature = if matches!(job.format, Format::StandardWebhooksV1a) {
                signing::signature_header_v1a(&job.keys, &job.msg_id, ts, job.body.as_bytes())
            } else {
                signing::signature_header(&job.keys, &job.msg_id, ts, job.body.as_bytes())
            };
            req = req
                .header("webhook-id", &job.msg_id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .header("webhook-event-type", &job.event_type)
                .header("webhook-attempt", job.attempt.to_string());
        }
        Format::HmacHex { prefix } => {
            // During a rotation's grace period the previous secret signs too, in its own header:
            // a receiver checks either (one hex value per header, as seed 004 documents it).
            for (i, key) in job.keys.iter().take(2).enumerate() {
                let name = if i == 0 {
                    "Signature"
                } else {
                    "Signature-Previous"
                };
                req = req.header(
                    format!("{prefix}{name}"),
                    signing::hmac_hex(key, job.body.as_bytes()),
                );
            }
            req = req
                .header(format!("{prefix}Event-Id"), &job.msg_id)
                .header(format!("{prefix}Event-Type"), &job.event_type)
                .header(format!("{prefix}Delivery-Attempt"), job.attempt.to_string())
                .header(format!("{prefix}Timestamp"), ts.to_string());
        }
    }
    for (k, v) in job.headers.iter() {
        req = req.header(k, v);
    }
    if let Some(t) = &job.traceparent {
        req = req.header("traceparent", t);
    }
    let mut out = Outcome {
        tag: job.tag,
        started_at_us,
        ..Default::default()
    };
    match req.send(job.body.as_bytes()) {
        Ok(mut resp) => {
            out.status = Some(resp.status().as_u16());
            if matches!(out.status, Some(429 | 502 | 503 | 504)) {
                out.retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.chars().take(64).collect());
            }
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
        // (no helper to look the name up: not an attempt, see UNSENT_BUSY)
        Err(ureq::Error::Io(io))
            if io.kind() == std::io::ErrorKind::WouldBlock && io.to_string() == UNSENT_BUSY =>
        {
            out.error = Some(UNSENT_BUSY.into())
        }
        Err(e) => out.error = Some(describe_error(&e, &job.url)),
    }
    out.duration_ms = t0.elapsed().as_secs_f64() * 1000.0;
    out
}

/// An answer's status line and headers, at most (bytes).
const MAX_ANSWER_HEAD: usize = 48 * 1024;

/// A failure in words, naming the host but never the URL's path or query (they may carry
/// tokens, and sync errors reach publishers).
fn describe_error(e: &ureq::Error, url: &str) -> String {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "the receiver".into());
    match e {
        ureq::Error::Timeout(t) => format!("timeout ({t:?}) after webhooks.timeout"),
        ureq::Error::HostNotFound => format!("host not found: {host}"),
        ureq::Error::Rustls(r) => tls::describe(r, &host),
        ureq::Error::Io(io) => match tls::rustls_error(io) {
            Some(r) => tls::describe(r, &host),
            None if io.kind() == std::io::ErrorKind::PermissionDenied => io.to_string(),
            None if url.starts_with("https:")
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                format!(
                    "connection error: {io}: {host} closed the TLS connection (a receiver that requires a client certificate does this when none or an unknown one is sent)"
                )
            }
            None => format!("connection error: {io}"),
        },
        ureq::Error::ConnectProxyFailed(why) => {
            format!("proxy refused the tunnel to {host} (webhooks.http_proxy): {why}")
        }
        ureq::Error::BadUri(_) => "invalid url".into(),
        ureq::Error::LargeResponseHeader(..) => format!(
            "{host} answered with a status line and headers over {} KiB",
            MAX_ANSWER_HEAD / 1024
        ),
        other => format!("{other}"),
    }
}

/// Runs `f` with every signal blocked in the calling thread, so threads it spawns start with
/// all signals blocked: PostgreSQL's handlers must only ever run on the main thread. The mask
/// is restored however `f` ends (a panic included), and only `f` runs with it.
pub fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(libc::sigset_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
        }
    }
    let _restore = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        Restore(old)
    };
    f()
}

/// A fixed set of sender threads sharing one keep-alive connection pool. Answers go to the
/// caller's callback (false: nobody listens any more, the thread ends), which a newer pool
/// (after a reload) shares: one place to wait on.
pub struct Pool {
    jobs: Option<Sender<Job>>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    pub fn new(
        size: usize,
        settings: &ClientSettings,
        results: Arc<dyn Fn(Outcome) -> bool + Send + Sync>,
    ) -> Pool {
        let (job_tx, job_rx) = channel::<Job>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let agent = agent(settings, None);
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = with_signals_blocked(|| {
            (0..size.max(1))
                .filter_map(|i| {
                    let rx = Arc::clone(&job_rx);
                    let tx = Arc::clone(&results);
                    let agent = agent.clone();
                    let closed = Arc::clone(&closed);
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
                            if closed.load(std::sync::atomic::Ordering::Relaxed)
                                || job.not_after.is_some_and(|t| Instant::now() >= t)
                            {
                                // Not sent: said so, so that its slot is freed and its delivery
                                // given back without waiting for the lease.
                                let unsent = Outcome {
                                    tag: job.tag,
                                    error: Some(UNSENT.into()),
                                    ..Default::default()
                                };
                                if !tx(unsent) {
                                    return;
                                }
                                continue;
                            }
                            // Every job gets an answer, whatever happens in the request.
                            let tag = job.tag;
                            let outcome =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    send(&agent, &job)
                                }))
                                .unwrap_or_else(|_| Outcome {
                                    tag,
                                    error: Some("internal: the request failed unexpectedly".into()),
                                    started_at_us: now_us(),
                                    ..Default::default()
                                });
                            if !tx(outcome) {
                                return;
                            }
                        })
                        .ok()
                })
                .collect()
        });
        Pool {
            jobs: Some(job_tx),
            closed,
            threads,
        }
    }

    pub fn size(&self) -> usize {
        self.threads.len()
    }

    /// Queued requests are dropped, unstarted, from now on (requests under way finish).
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Queues a job; false when no sender thread is left to take it.
    pub fn submit(&self, job: Job) -> bool {
        self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

/// The error of an outcome whose request was never started (the pool closed, or its start
/// deadline passed): nothing reached the receiver, so it is no attempt.
pub const UNSENT: &str = "internal: not sent";

impl Drop for Pool {
    /// Closes the queue without waiting: a thread ends after the request it is making (bounded
    /// by the timeout), and queued requests are never started. Waiting here would hold a
    /// reload or a shutdown behind slow receivers.
    fn drop(&mut self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.jobs.take();
        self.threads.clear();
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
