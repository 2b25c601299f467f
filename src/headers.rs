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
];

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
}
