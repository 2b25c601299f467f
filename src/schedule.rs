//! Durations, the retry schedule and what happens after a failed attempt.

use std::time::Duration;

/// Seconds in one of a unit, in the compact form (`30s`, `5m`) or PostgreSQL's interval words
/// (`30 seconds`, `1 day`, `2 hours`).
fn unit_seconds(u: &str) -> Option<f64> {
    Some(match u.to_ascii_lowercase().as_str() {
        "ms" | "msec" | "msecs" | "millisecond" | "milliseconds" => 0.001,
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 7.0 * 86_400.0,
        _ => return None,
    })
}

/// `500ms`, `10s`, `1m`, `2h`, `1d`, or PostgreSQL's `30 seconds`, `1 day 2 hours`; parts add
/// up (`1h30m`); a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("an empty string is not a duration (try 30s, 5m, 2h or '1 day')".into());
    }
    let mut rest = t;
    let mut secs = 0.0f64;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let n: f64 = rest[..n_end]
            .parse()
            .map_err(|_| format!("\"{s}\" is not a duration (try 30s, 5m, 2h or '1 day')"))?;
        rest = rest[n_end..].trim_start();
        let u_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..u_end];
        let per = unit_seconds(unit).ok_or_else(|| {
            format!("\"{s}\" has unknown unit \"{unit}\" (use ms, s, m, h, d or seconds, minutes, hours, days)")
        })?;
        secs += n * per;
        rest = rest[u_end..].trim_start();
    }
    if !secs.is_finite() || !(0.0..=365.0 * 86_400.0).contains(&secs) {
        return Err(format!("\"{s}\" is out of range (0 to 365 days)"));
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
    fn durations_in_both_notations() {
        let d = |x: &str| parse_duration(x).unwrap();
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("30 seconds"), Duration::from_secs(30));
        assert_eq!(d("1 day"), Duration::from_secs(86_400));
        assert_eq!(d("1 day 2 hours"), Duration::from_secs(93_600));
        assert_eq!(d("1h30m"), Duration::from_secs(5_400));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("2 Minutes"), Duration::from_secs(120));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("400 days")
            .unwrap_err()
            .contains("out of range"));
    }

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
