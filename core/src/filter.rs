//! Endpoint event filters: exact names, `category.*` prefixes, and `*`.

/// The category of the extension's own operational events (an endpoint disabled, a delivery
/// dead). `*` does not reach it: those go to receivers that ask for them by name or by
/// `webhook.*` (an operator's alerting), never to every customer endpoint, and never in a loop
/// through the very endpoint that is failing.
pub const OPERATIONAL: &str = "webhook.";

pub fn matches(filters: &[impl AsRef<str>], event_type: &str) -> bool {
    filters.iter().any(|f| {
        let f = f.as_ref();
        (f == "*" && !event_type.starts_with(OPERATIONAL))
            || f == event_type
            || f.strip_suffix('*')
                .is_some_and(|p| p.ends_with('.') && event_type.starts_with(p))
    })
}

pub fn validate(filter: &str) -> Result<(), String> {
    if filter == "*" {
        return Ok(());
    }
    let name = filter.strip_suffix(".*").unwrap_or(filter);
    validate_type_name(name).map_err(|e| format!("event filter \"{filter}\": {e}"))
}

/// Lower-case dotted names: `user.created`, `user.registration.completed`, `security.2fa_enabled`.
pub fn validate_type_name(name: &str) -> Result<(), String> {
    let ok_segment = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    };
    if name.is_empty() || name.len() > 128 || !name.split('.').all(ok_segment) {
        return Err(format!(
            "\"{name}\" is not a valid event type name (lower-case words separated by dots)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_documented() {
        assert!(matches(&["*"], "user.created"));
        assert!(matches(&["user.created"], "user.created"));
        assert!(!matches(&["user.created"], "user.updated"));
        assert!(matches(&["user.*"], "user.registration.completed"));
        assert!(!matches(&["user.*"], "users.created"));
        assert!(!matches(&["user*"], "users.created"));
        assert!(!matches(&["*"], "webhook.endpoint.disabled"));
        assert!(matches(&["webhook.*"], "webhook.endpoint.disabled"));
        assert!(matches(
            &["*", "webhook.delivery.dead"],
            "webhook.delivery.dead"
        ));
        let none: [&str; 0] = [];
        assert!(!matches(&none, "user.created"));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(validate("user.*").is_ok());
        assert!(validate("security.2fa_enabled").is_ok());
        assert!(validate("User.Created")
            .unwrap_err()
            .contains("User.Created"));
        assert!(validate("user..created").is_err());
        assert!(validate("user.*.x").is_err());
    }
}
