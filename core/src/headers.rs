//! Custom headers an endpoint may add to every request.

/// Headers the sender owns; letting an endpoint override them would break signing or routing.
const RESERVED: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
    "te",
    "upgrade",
    "expect",
    "keep-alive",
    "proxy-authorization",
    "traceparent",
];

/// A W3C Trace Context `traceparent` (version 00): `00-<32 hex trace id>-<16 hex parent id>-<2
/// hex flags>`, lower case, ids not all zeros. Empty means none.
pub fn check_traceparent(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let parts: Vec<&str> = v.split('-').collect();
    let ok = parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{v}\" is not a W3C traceparent: expected 00-<32 hex digits>-<16 hex digits>-<2 hex digits>, lower case, ids not all zeros"
        ))
    }
}

pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let lower = name.to_ascii_lowercase();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!(
            "header name \"{name}\" is not a valid HTTP header name"
        ));
    }
    if lower.starts_with("webhook-") || RESERVED.contains(&lower.as_str()) {
        return Err(format!(
            "header \"{name}\" is set by webhooks and cannot be overridden"
        ));
    }
    // HTTP field values are visible ASCII, spaces and tabs (RFC 9110 5.5); a control byte would
    // pass here and then make every request fail in the HTTP client.
    if value.chars().any(|c| c == '\r' || c == '\n') {
        return Err(format!("header \"{name}\" has a value with line breaks"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| (c.is_control() && *c != '\t') || *c == '\u{7f}')
    {
        return Err(format!(
            "header \"{name}\" has a value with control character U+{:04X}",
            c as u32
        ));
    }
    if !value.is_ascii() {
        return Err(format!(
            "header \"{name}\" has a value with non-ASCII characters"
        ));
    }
    if value.len() > 4096 {
        return Err(format!("header \"{name}\" has a value over 4096 bytes"));
    }
    Ok(())
}

/// Headers one endpoint may add, at most, and their names and values together, in bytes: every
/// request carries them, and every claimed row holds them in the worker's memory (2 MB of
/// headers on a few silent endpoints took a worker to 1.9 GB in 0.4.0's first review).
pub const MAX_HEADERS: usize = 32;
pub const MAX_HEADER_BYTES: usize = 8192;

/// An endpoint's headers as a whole: each as `validate` wants it, and no more of them than
/// `MAX_HEADERS` and `MAX_HEADER_BYTES` allow.
pub fn validate_all<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), String> {
    let (mut n, mut bytes) = (0usize, 0usize);
    for (name, value) in pairs {
        validate(name, value)?;
        n += 1;
        bytes += name.len() + value.len();
    }
    if n > MAX_HEADERS {
        return Err(format!(
            "an endpoint has at most {MAX_HEADERS} headers (these are {n})"
        ));
    }
    if bytes > MAX_HEADER_BYTES {
        return Err(format!(
            "an endpoint's headers are at most {MAX_HEADER_BYTES} bytes of names and values together (these are {bytes})"
        ));
    }
    Ok(())
}

/// The endpoint's `headers` column (JSON text) as name/value pairs; non-string values are skipped
/// (the endpoint trigger refuses them on write).
pub fn parse_object(json_text: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(text) = json_text else {
        return Ok(Vec::new());
    };
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| format!("endpoint headers unusable: {e}"))?;
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_w3c_version_00() {
        assert!(
            check_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_ok()
        );
        assert!(check_traceparent("").is_ok());
        for bad in [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
        ] {
            assert!(check_traceparent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_and_malformed_headers_are_refused() {
        assert!(validate("X-Api-Key", "abc").is_ok());
        assert!(validate("Webhook-Signature", "v1,x")
            .unwrap_err()
            .contains("cannot be overridden"));
        assert!(validate("Content-Type", "text/plain").is_err());
        assert!(validate("Host", "evil").is_err());
        assert!(validate("X Bad", "a").unwrap_err().contains("not a valid"));
        assert!(validate("X-Ok", "a\r\nInjected: 1")
            .unwrap_err()
            .contains("line breaks"));
        assert!(validate("X-Ok", "a\u{1}b")
            .unwrap_err()
            .contains("control character U+0001"));
        assert!(validate("X-Ok", "a\u{7f}").is_err());
        assert!(validate("X-Ok", "caf\u{e9}")
            .unwrap_err()
            .contains("non-ASCII"));
        assert!(validate("X-Ok", "tab\tok").is_ok());
    }

    #[test]
    fn an_endpoint_s_headers_are_bounded_together() {
        let names: Vec<String> = (0..33).map(|i| format!("X-H{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        assert!(validate_all(many[..32].iter().copied()).is_ok());
        assert!(validate_all(many.iter().copied())
            .unwrap_err()
            .contains("at most 32 headers"));
        let big = "x".repeat(4000);
        assert!(validate_all([("X-A", big.as_str()), ("X-B", big.as_str())]).is_ok());
        assert!(validate_all([
            ("X-A", big.as_str()),
            ("X-B", big.as_str()),
            ("X-C", big.as_str())
        ])
        .unwrap_err()
        .contains("8192 bytes"));
        assert!(validate_all([("Host", "x")])
            .unwrap_err()
            .contains("cannot be overridden"));
    }
}
