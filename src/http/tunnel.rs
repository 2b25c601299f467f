//! webhooks.http_proxy: a CONNECT tunnel to an address the guard checked, never to a name.

use super::*;
use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;
use ureq::http::Uri;
use ureq::unversioned::transport::{
    ConnectionDetails, Connector, Either, TcpConnector, Transport, TransportAdapter,
};

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

/// `webhooks.http_proxy`: ureq is given no proxy, so it resolves the target itself through the
/// `GuardedResolver` and the addresses it hands the connectors passed the guard. This
/// connector, first in the chain, then opens the TCP connection to the proxy instead and asks
/// it to CONNECT to the first checked address, never to the name: the proxy makes no lookup of
/// its own that a rebinding name could answer differently. TLS runs through the tunnel with the
/// name as SNI and for the certificate check (the next connectors see the target's URI).
/// The proxy itself is exempt from the guard (it usually is a private address).
#[derive(Debug)]
pub(crate) struct CheckedTunnel {
    pub(crate) proxy: Option<(String, u16)>,
}

/// The head of a proxy's answer to CONNECT, at most.
pub(crate) const PROXY_HEAD_MAX: usize = 8 * 1024;

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
    pub(crate) fn tunnel(
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
