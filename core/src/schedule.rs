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

/// How far retries spread around the schedule: `fraction` of each delay either way
/// (webhooks.retry_jitter), placed by `seed` (the delivery and its attempt), so that the
/// deliveries an outage failed together do not come back in the same second, and one
/// delivery's retry lands at the same moment however often it is computed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Jitter {
    pub fraction: f64,
    pub seed: u64,
}

impl Jitter {
    pub const NONE: Jitter = Jitter {
        fraction: 0.0,
        seed: 0,
    };

    /// The seed for one delivery's attempt.
    pub fn of(fraction: f64, delivery_id: i64, attempt: i32) -> Jitter {
        Jitter {
            fraction,
            seed: (delivery_id as u64).rotate_left(20) ^ attempt as u64,
        }
    }

    /// `delay` moved by up to ±fraction of itself, uniformly.
    pub fn spread(self, delay: Duration) -> Duration {
        let f = if self.fraction.is_finite() {
            self.fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        if f == 0.0 {
            return delay;
        }
        // splitmix64: one well-mixed 64-bit value per seed, mapped to [-1, 1).
        let mut z = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        delay.mul_f64(1.0 + f * unit)
    }
}

/// `attempts_made` includes the one that just failed. The event's age decides the TTL, against
/// the retry's spread moment.
pub fn after_failure(
    attempts_made: i32,
    schedule: &[Duration],
    event_age: Duration,
    ttl: Duration,
    jitter: Jitter,
) -> AfterFailure {
    let idx = attempts_made.max(1) as usize - 1;
    match schedule.get(idx).map(|d| jitter.spread(*d)) {
        None => AfterFailure::Dead("retry schedule exhausted"),
        Some(delay) if event_age + delay > ttl => {
            AfterFailure::Dead("event older than webhooks.ttl")
        }
        Some(delay) => AfterFailure::RetryIn(delay.as_micros() as i64),
    }
}

/// After a throttling answer (429, 502, 503, 504) that asked for a pause: the schedule's
/// retry, but not before the pause is over, and never after the event's TTL runs out (a
/// receiver asking for a week does not keep an event past webhooks.ttl).
pub fn after_pushback(
    attempts_made: i32,
    schedule: &[Duration],
    event_age: Duration,
    ttl: Duration,
    pause: Duration,
    jitter: Jitter,
) -> AfterFailure {
    match after_failure(attempts_made, schedule, event_age, ttl, jitter) {
        AfterFailure::RetryIn(us) => {
            let left = ttl.saturating_sub(event_age).as_micros() as i64;
            AfterFailure::RetryIn(us.max(pause.as_micros() as i64).min(left.max(us)))
        }
        dead => dead,
    }
}

/// `Retry-After` as seconds (`120`) or as an HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`),
/// relative to `now_unix_s`. A date in the past is no pause; anything else unreadable is
/// ignored (the schedule applies).
pub fn retry_after(value: &str, now_unix_s: i64) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = http_date(v)?;
    Some(Duration::from_secs((at - now_unix_s).max(0) as u64))
}

/// IMF-fixdate, the form RFC 9110 requires senders to use: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(v: &str) -> Option<i64> {
    let rest = v.split_once(", ")?.1;
    let p: Vec<&str> = rest.split(' ').collect();
    if p.len() != 5 || p[4] != "GMT" {
        return None;
    }
    let day: i64 = p[0].parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == p[1])? as i64 + 1;
    let year: i64 = p[2].parse().ok().filter(|y| (1970..=9999).contains(y))?;
    let hms: Vec<i64> = p[3].split(':').filter_map(|n| n.parse().ok()).collect();
    if hms.len() != 3 || !(1..=31).contains(&day) || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        // 2015-10-21T07:28:00Z is 1445412480.
        let now = 1_445_412_480 - 90;
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now + 1000),
            Some(Duration::ZERO),
            "a date in the past is no pause"
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 PST", now), None);
        assert_eq!(
            retry_after("Wed, 21 Oct 9999999999999999 07:28:00 GMT", now),
            None,
            "a year that would overflow is ignored"
        );
        assert_eq!(retry_after("99999999999999999999999", now), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn a_pushback_waits_for_the_pause_but_not_past_the_ttl() {
        let sched = [Duration::from_secs(60), Duration::from_secs(300)];
        let ttl = Duration::from_secs(3600);
        let young = Duration::from_secs(10);
        assert_eq!(
            after_pushback(
                1,
                &sched,
                young,
                ttl,
                Duration::from_secs(600),
                Jitter::NONE
            ),
            AfterFailure::RetryIn(600_000_000)
        );
        assert_eq!(
            after_pushback(1, &sched, young, ttl, Duration::from_secs(5), Jitter::NONE),
            AfterFailure::RetryIn(60_000_000),
            "a shorter pause than the schedule's changes nothing"
        );
        assert_eq!(
            after_pushback(
                1,
                &sched,
                young,
                ttl,
                Duration::from_secs(86_400),
                Jitter::NONE
            ),
            AfterFailure::RetryIn(3_590_000_000),
            "capped where the TTL ends"
        );
        assert!(matches!(
            after_pushback(3, &sched, young, ttl, Duration::from_secs(1), Jitter::NONE),
            AfterFailure::Dead(_)
        ));
    }

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
            after_failure(1, &s, young, day, Jitter::NONE),
            AfterFailure::RetryIn(60_000_000)
        );
        assert_eq!(
            after_failure(5, &s, young, day, Jitter::NONE),
            AfterFailure::RetryIn(43_200_000_000)
        );
        assert_eq!(
            after_failure(6, &s, young, day, Jitter::NONE),
            AfterFailure::Dead("retry schedule exhausted")
        );
        // the 12h retry would land after the 24h TTL for an event that is already 13h old
        let old = Duration::from_secs(13 * 3600);
        assert!(matches!(
            after_failure(5, &s, old, day, Jitter::NONE),
            AfterFailure::Dead(_)
        ));
        assert!(parse_schedule("").unwrap().is_empty());
        assert!(parse_schedule("1m,,5m").is_err());
    }

    #[test]
    fn retries_spread_around_the_schedule_and_stay_put() {
        let s = parse_schedule("1m,5m,30m,2h,12h").unwrap();
        let day = Duration::from_secs(86_400);
        let young = Duration::ZERO;
        let at = |id: i64, attempt: i32| match after_failure(
            attempt,
            &s,
            young,
            day,
            Jitter::of(0.1, id, attempt),
        ) {
            AfterFailure::RetryIn(us) => us,
            dead => panic!("{dead:?}"),
        };
        // 10,000 deliveries failed by one outage: their first retries fill 54-66 s evenly
        // instead of all landing at 60 s.
        let mut per_second = [0u32; 13];
        for id in 1..=10_000 {
            let us = at(id, 1);
            assert!((54_000_000..=66_000_000).contains(&us), "{us}");
            per_second[((us - 54_000_000) / 1_000_000) as usize] += 1;
        }
        assert!(
            per_second[..12].iter().all(|n| (650..1000).contains(n)),
            "{per_second:?}"
        );
        assert_eq!(
            at(42, 3),
            at(42, 3),
            "the same delivery's retry is the same moment"
        );
        let offset = |us: i64, centre: i64| (us - centre) as f64 / centre as f64;
        assert_ne!(
            offset(at(42, 1), 60_000_000),
            offset(at(42, 2), 300_000_000),
            "each attempt draws anew"
        );
        let twelve = at(7, 5);
        assert!(
            (38_880_000_000..=47_520_000_000).contains(&twelve),
            "{twelve}"
        );
        assert_eq!(
            Jitter::of(0.0, 7, 5).spread(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(
            Jitter::of(f64::NAN, 7, 5).spread(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }
}
