//! Durations, the retry schedule and what happens after a failed attempt.

use std::time::Duration;

/// `500ms`, `10s`, `1m`, `2h`, `1d`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration (try 30s, 5m, 2h)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" | "sec" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        u => {
            return Err(format!(
                "\"{s}\" has unknown unit \"{u}\" (use ms, s, m, h or d)"
            ))
        }
    };
    if !secs.is_finite() || !(0.0..=365.0 * 86_400.0).contains(&secs) {
        return Err(format!("\"{s}\" is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Comma-separated delays between attempts; empty means a single attempt.
pub fn parse_schedule(s: &str) -> Result<Vec<Duration>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(parse_duration).collect()
}

#[derive(Debug, PartialEq)]
pub enum AfterFailure {
    /// Try again this many microseconds from now.
    RetryIn(i64),
    Dead(&'static str),
}

/// `attempts_made` includes the one that just failed. The event's age decides the TTL.
pub fn after_failure(
    attempts_made: i32,
    schedule: &[Duration],
    event_age: Duration,
    ttl: Duration,
) -> AfterFailure {
    let idx = attempts_made.max(1) as usize - 1;
    match schedule.get(idx) {
        None => AfterFailure::Dead("retry schedule exhausted"),
        Some(delay) if event_age + *delay > ttl => {
            AfterFailure::Dead("event older than webhooks.ttl")
        }
        Some(delay) => AfterFailure::RetryIn(delay.as_micros() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_rejects_garbage() {
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn default_schedule_is_six_attempts() {
        let s = parse_schedule("1m,5m,30m,2h,12h").unwrap();
        let day = Duration::from_secs(86_400);
        let young = Duration::from_secs(0);
        assert_eq!(
            after_failure(1, &s, young, day),
            AfterFailure::RetryIn(60_000_000)
        );
        assert_eq!(
            after_failure(5, &s, young, day),
            AfterFailure::RetryIn(43_200_000_000)
        );
        assert_eq!(
            after_failure(6, &s, young, day),
            AfterFailure::Dead("retry schedule exhausted")
        );
        // the 12h retry would land after the 24h TTL for an event that is already 13h old
        let old = Duration::from_secs(13 * 3600);
        assert!(matches!(
            after_failure(5, &s, old, day),
            AfterFailure::Dead(_)
        ));
        assert!(parse_schedule("").unwrap().is_empty());
        assert!(parse_schedule("1m,,5m").is_err());
    }
}
