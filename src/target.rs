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

/// Why an address must not be a delivery target, or None when it is a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_reason(v4);
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private (unique local)")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                // 64:ff9b:1::/48 is NAT64 for local use (RFC 8215): it leads into a private net.
                Some("local-use NAT64")
            } else if s[0..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
                // ::ffff:0:a.b.c.d, IPv4-translated (RFC 2765), embeds an IPv4 address.
                v4_reason(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ))
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64 embeds an IPv4 address in the last 32 bits.
                v4_reason(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ))
            } else if s[0] == 0x2002 {
                // 6to4 embeds an IPv4 address in bits 16..48.
                v4_reason(Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                ))
            } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
                Some("IPv4-compatible")
            } else {
                None
            }
        }
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() || o[0] >= 240 {
        Some("multicast or reserved")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (carrier-grade NAT)")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking (198.18.0.0/15)")
    } else {
        None
    }
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
        ] {
            let err = check_url(bad, STRICT).unwrap_err();
            assert!(err.contains("allow_private_targets"), "{bad}: {err}");
        }
        assert!(check_url("https://hooks.example.com/in", STRICT).is_ok());
        assert!(check_url("https://93.184.215.14/in", STRICT).is_ok());
        assert!(check_url("http://127.0.0.1:8080/in", LAX).is_ok());
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
