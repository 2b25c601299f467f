//! Which URLs an endpoint may point at. Checked when an endpoint is written and again on every
//! resolved address at delivery time (a DNS answer can change between the two).

use std::net::{IpAddr, Ipv4Addr};
use url::{Host, Url};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub allow_private: bool,
    pub require_https: bool,
}

/// Validates an endpoint URL; the error names what is wrong.
pub fn check_url(raw: &str, policy: Policy) -> Result<Url, String> {
    let url = Url::parse(raw.trim())
        .map_err(|e| format!("url \"{raw}\" is not a valid absolute URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.require_https => {
            return Err(format!(
                "url \"{raw}\" uses http:// but webhooks.require_https is on; use https://"
            ))
        }
        "http" => {}
        s => {
            return Err(format!(
                "url \"{raw}\" has scheme \"{s}\"; only http and https are allowed"
            ))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "url \"{raw}\" must not contain a user name or password"
        ));
    }
    if url.fragment().is_some() {
        return Err(format!("url \"{raw}\" must not contain a #fragment"));
    }
    let host = url
        .host()
        .ok_or_else(|| format!("url \"{raw}\" has no host"))?;
    if !policy.allow_private {
        let refused = match host {
            Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                (d == "localhost" || d.ends_with(".localhost")).then(|| "localhost".to_string())
            }
            Host::Ipv4(ip) => forbidden_reason(IpAddr::V4(ip)).map(str::to_string),
            Host::Ipv6(ip) => forbidden_reason(IpAddr::V6(ip)).map(str::to_string),
        };
        if let Some(why) = refused {
            return Err(format!(
                "url \"{raw}\" points at a {why} address; set webhooks.allow_private_targets = on to allow it"
            ));
        }
    }
    Ok(url)
}

/// Address blocks that are no delivery target: the entries of IANA's IPv4 and IPv6
/// Special-Purpose Address Registries whose "Globally Reachable" is False (or N/A, as for
/// Teredo and 6to4, whose embedded IPv4 addresses are checked on their own below), plus the
/// multicast, reserved and deprecated site-local blocks of the address architectures. One line
/// per registry row, so the table can be read against the registry line by line.
/// (prefix, reason named in errors, source)
const V4_BLOCKED: &[(&str, &str, &str)] = &[
    ("0.0.0.0/8", "unspecified (\"this network\")", "RFC 791"),
    ("10.0.0.0/8", "private", "RFC 1918"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)", "RFC 6598"),
    ("127.0.0.0/8", "loopback", "RFC 1122"),
    ("169.254.0.0/16", "link-local (cloud metadata)", "RFC 3927"),
    ("172.16.0.0/12", "private", "RFC 1918"),
    ("192.0.0.0/24", "IETF protocol", "RFC 6890"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)", "RFC 5737"),
    (
        "192.88.99.0/24",
        "deprecated 6to4 relay anycast",
        "RFC 7526",
    ),
    ("192.168.0.0/16", "private", "RFC 1918"),
    ("198.18.0.0/15", "benchmarking (198.18.0.0/15)", "RFC 2544"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)", "RFC 5737"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)", "RFC 5737"),
    ("224.0.0.0/4", "multicast or reserved", "RFC 5771"),
    ("240.0.0.0/4", "multicast or reserved", "RFC 1112"),
    ("255.255.255.255/32", "broadcast", "RFC 919"),
];

/// Rows of the registries inside a blocked prefix that are globally reachable (anycast
/// services): allowed.
const V4_GLOBAL: &[&str] = &["192.0.0.9/32", "192.0.0.10/32"];

const V6_BLOCKED: &[(&str, &str, &str)] = &[
    ("::1/128", "loopback", "RFC 4291"),
    ("::/128", "unspecified", "RFC 4291"),
    ("100::/64", "discard-only", "RFC 6666"),
    ("100:0:0:1::/64", "dummy prefix", "RFC 9780"),
    ("2001::/23", "IETF protocol", "RFC 2928"),
    ("2001::/32", "Teredo", "RFC 4380"),
    ("2001:2::/48", "benchmarking", "RFC 5180"),
    ("2001:db8::/32", "documentation", "RFC 3849"),
    ("2001:10::/28", "deprecated ORCHID", "RFC 4843"),
    ("3fff::/20", "documentation", "RFC 9637"),
    ("5f00::/16", "segment routing (SRv6 SIDs)", "RFC 9602"),
    ("64:ff9b:1::/48", "local-use NAT64", "RFC 8215"),
    ("fc00::/7", "private (unique local)", "RFC 4193"),
    ("fe80::/10", "link-local", "RFC 4291"),
    ("fec0::/10", "site-local (deprecated)", "RFC 3879"),
    ("ff00::/8", "multicast", "RFC 4291"),
];

const V6_GLOBAL: &[&str] = &[
    "2001:1::1/128",
    "2001:1::2/128",
    "2001:1::3/128",
    "2001:3::/32",
    "2001:4:112::/48",
    "2001:20::/28",
    "2001:30::/28",
];

/// A prefix of the tables above as (address bits, length).
fn prefix(cidr: &str) -> (u128, u32, bool) {
    let (addr, len) = cidr.split_once('/').unwrap_or((cidr, "128"));
    let len: u32 = len.parse().unwrap_or(128);
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => (u128::from(u32::from(a)) << 96, len, true),
        Ok(IpAddr::V6(a)) => (u128::from(a), len, false),
        // The tables are constants checked by a unit test; an unparsable row matches nothing.
        Err(_) => (0, 0, false),
    }
}

/// Whether `bits` (an IPv6 address, or an IPv4 address in the top 32 bits) is inside `cidr`.
fn within(bits: u128, v4: bool, cidr: &str) -> bool {
    let (p, len, p_v4) = prefix(cidr);
    if p_v4 != v4 || (p == 0 && len == 0) {
        return false;
    }
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    bits & mask == p & mask
}

/// The most specific blocked row covering the address, unless a globally reachable row does.
fn lookup(bits: u128, v4: bool) -> Option<&'static str> {
    let (blocked, global) = if v4 {
        (V4_BLOCKED, V4_GLOBAL)
    } else {
        (V6_BLOCKED, V6_GLOBAL)
    };
    if global.iter().any(|c| within(bits, v4, c)) {
        return None;
    }
    blocked
        .iter()
        .filter(|(c, _, _)| within(bits, v4, c))
        .max_by_key(|(c, _, _)| prefix(c).1)
        .map(|(_, why, _)| *why)
}

/// Why an address must not be a delivery target, or None when it is a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_reason(v4);
            }
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                v4_reason(Ipv4Addr::new(
                    (hi >> 8) as u8,
                    hi as u8,
                    (lo >> 8) as u8,
                    lo as u8,
                ))
            };
            if let Some(why) = lookup(u128::from(v6), false) {
                Some(why)
            } else if s[0..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
                // ::ffff:0:a.b.c.d, IPv4-translated (RFC 2765), embeds an IPv4 address.
                embedded(s[6], s[7])
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64 (64:ff9b::/96, RFC 6052) embeds an IPv4 address in the last 32 bits.
                embedded(s[6], s[7])
            } else if s[0] == 0x2002 {
                // 6to4 (2002::/16, RFC 3056) embeds an IPv4 address in bits 16..48.
                embedded(s[1], s[2])
            } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
                Some("IPv4-compatible")
            } else {
                None
            }
        }
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    lookup(u128::from(u32::from(ip)) << 96, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy {
        allow_private: false,
        require_https: true,
    };
    const LAX: Policy = Policy {
        allow_private: true,
        require_https: false,
    };

    #[test]
    fn refuses_forbidden_targets() {
        for bad in [
            "https://127.0.0.1/x",
            "https://localhost/x",
            "https://api.localhost/x",
            "https://10.1.2.3/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://0.0.0.0/",
            "https://2130706433/", // decimal 127.0.0.1
            "https://0177.0.0.1/", // octal
            "https://0x7f.1/",     // hex, short form
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://255.255.255.255/",
            "https://224.0.0.1/",
            "https://100.64.0.1/",
            "https://[64:ff9b:1::a00:1]/",
            "https://[64:ff9b:1::808:808]/",
            "https://[::ffff:0:7f00:1]/",
            "https://[::ffff:0:a00:1]/",
            "https://198.18.0.1/",
            "https://198.19.255.254/",
            "https://192.0.2.10/",
            "https://203.0.113.1/",
            "https://[fec0::1]/",
            "https://[2001::1]/",
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "https://[2001:db8::1]/",
            "https://[3fff::1]/",
            "https://[100::1]/",
            "https://[ff02::1]/",
            "https://[2002:7f00:1::]/",
        ] {
            let err = check_url(bad, STRICT).unwrap_err();
            assert!(err.contains("allow_private_targets"), "{bad}: {err}");
        }
        assert!(check_url("https://hooks.example.com/in", STRICT).is_ok());
        assert!(check_url("https://93.184.215.14/in", STRICT).is_ok());
        assert!(check_url("http://127.0.0.1:8080/in", LAX).is_ok());
        // Globally reachable rows inside blocked prefixes, and ordinary public addresses.
        for good in [
            "https://192.0.0.9/",
            "https://[2001:4:112::1]/",
            "https://[2001:4860:4860::8888]/",
            "https://[2606:4700::1111]/",
            "https://[64:ff9b::808:808]/",
        ] {
            assert!(check_url(good, STRICT).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_tables_parse_and_name_their_source() {
        for (cidr, why, rfc) in V4_BLOCKED.iter().chain(V6_BLOCKED) {
            let (_, len, v4) = prefix(cidr);
            let max = if v4 { 32 } else { 128 };
            assert!(cidr.parse::<IpAddr>().is_err() && len <= max, "{cidr}");
            assert!(
                cidr.split('/').next().unwrap().parse::<IpAddr>().is_ok(),
                "{cidr}"
            );
            assert!(!why.is_empty() && rfc.starts_with("RFC "), "{cidr}");
        }
        for cidr in V4_GLOBAL.iter().chain(V6_GLOBAL) {
            assert!(
                cidr.split('/').next().unwrap().parse::<IpAddr>().is_ok(),
                "{cidr}"
            );
        }
        assert_eq!(
            forbidden_reason("2001:0:4136:e378:8000:63bf:3fff:fdd2".parse().unwrap()),
            Some("Teredo")
        );
        assert_eq!(
            forbidden_reason("fec0::1".parse().unwrap()),
            Some("site-local (deprecated)")
        );
    }

    #[test]
    fn refuses_malformed_urls_with_a_named_reason() {
        assert!(check_url("http://hooks.example.com", STRICT)
            .unwrap_err()
            .contains("require_https"));
        assert!(check_url("ftp://hooks.example.com", LAX)
            .unwrap_err()
            .contains("scheme"));
        assert!(check_url("https://u:p@hooks.example.com", LAX)
            .unwrap_err()
            .contains("password"));
        assert!(check_url("not a url", LAX)
            .unwrap_err()
            .contains("not a valid absolute URL"));
        assert!(check_url("/relative", LAX).is_err());
    }
}
