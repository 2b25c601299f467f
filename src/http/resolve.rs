//! Name resolution for deliveries: every address checked by the outbound guard, one lookup
//! per name at a time, each within the request's time.

use super::*;
use crate::target;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// Resolves with the system resolver within the attempt's time budget, then refuses the whole
/// answer when any address is one the outbound guard forbids: the check is on the address
/// actually connected to, directly or through the proxy (see `CheckedTunnel`).
#[derive(Debug)]
pub(crate) struct GuardedResolver {
    pub(crate) allow_private: bool,
}

pub(crate) fn default_port(uri: &Uri) -> u16 {
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
pub(crate) const DNS_HELPERS_MAX: usize = 256;

/// A lookup under way and what it found (addresses without their port).
pub(crate) struct Lookup {
    pub(crate) answer: Mutex<Option<Result<Vec<std::net::IpAddr>, String>>>,
    pub(crate) done: std::sync::Condvar,
}

pub(crate) static LOOKUPS: Mutex<Option<std::collections::HashMap<String, Arc<Lookup>>>> =
    Mutex::new(None);

/// A lookup that could not start for want of a helper: the request is given back, unsent, to
/// be tried a second later (no attempt counted).
pub const UNSENT_BUSY: &str = "internal: not sent (every DNS helper is waiting on a nameserver)";

/// The lookup of `name` to wait for: the one under way, or a new one (true: the caller starts
/// it), or none when every helper is taken.
pub(crate) fn join_lookup(
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

pub(crate) fn resolve_within(
    host: &str,
    port: u16,
    budget: Duration,
) -> Result<Vec<SocketAddr>, ureq::Error> {
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
