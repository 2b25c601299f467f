//! One client (ureq agent) and one request: sending a signed webhook and reading its answer.

use super::*;
use crate::answer::Answer;
use crate::signing;
use crate::tls;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ureq::tls::{ClientCert, RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::transport::{Connector, RustlsConnector, TcpConnector};
use ureq::Agent;

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

/// A ureq agent with its timeout.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) agent: Agent,
}

/// Idle connections per host a client with a certificate keeps, at most.
pub(crate) const MTLS_IDLE: usize = 4;

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
            // a receiver checks either (one hex value per header, as hmac-hex receivers such as IntelliAuth's expect it).
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
            // (Retry-After read once, here, as the answer arrives: a pause counts from now)
            let retry_after: Option<String> = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(64).collect());
            out.answer = Answer::status(
                resp.status().as_u16(),
                retry_after.as_deref(),
                now_us() / 1_000_000,
            );
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
            out.answer = Answer::NotSent { busy: true }
        }
        Err(e) => out.error = Some(describe_error(&e, &job.url)),
    }
    out.duration_ms = t0.elapsed().as_secs_f64() * 1000.0;
    out
}

/// An answer's status line and headers, at most (bytes).
pub(crate) const MAX_ANSWER_HEAD: usize = 48 * 1024;

/// A failure in words, naming the host but never the URL's path or query (they may carry
/// tokens, and sync errors reach publishers).
pub(crate) fn describe_error(e: &ureq::Error, url: &str) -> String {
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
