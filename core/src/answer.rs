//! What came of one request, and the one decision that turns it into what happens next: the
//! delivery's new state, and what the answer says about its endpoint (a pause it asked for, a
//! 410 that disables it). The sender thread makes the `Answer` as the response arrives; the
//! worker's main thread calls `decide` once per delivery, and `_record` (sql/src/record.sql) only
//! applies what it decided.

use crate::schedule::{self, AfterFailure, Jitter};
use std::time::Duration;

/// Statuses whose `Retry-After` is read: throttling (429) and a gateway saying the receiver is
/// overloaded or down for now (502, 503, 504).
pub const PUSHBACK: [u16; 4] = [429, 502, 503, 504];

/// One request's end, as the sender thread saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Answer {
    /// It never left: the worker stopped, its start deadline passed, a reload changed how to
    /// connect. With `busy`, no DNS helper was free: try again in a second. No attempt counts.
    NotSent { busy: bool },
    /// The receiver answered with `code`; `pause` is the `Retry-After` of a pushback status,
    /// read when the answer came (a date in the past is no pause; unreadable is none).
    Status { code: u16, pause: Option<Duration> },
    /// No answer: a timeout, a refused or broken connection, TLS, the outbound guard, an
    /// endpoint whose secret or certificate cannot be used. The words are the outcome's.
    #[default]
    Failed,
}

impl Answer {
    /// An answer from `code` and the value of its `Retry-After` header, at `now_unix_s`.
    pub fn status(code: u16, retry_after: Option<&str>, now_unix_s: i64) -> Answer {
        let pause = if PUSHBACK.contains(&code) {
            retry_after.and_then(|v| schedule::retry_after(v, now_unix_s))
        } else {
            None
        };
        Answer::Status { code, pause }
    }

    pub fn ok(&self) -> bool {
        matches!(self, Answer::Status { code, .. } if (200..300).contains(code))
    }

    pub fn code(&self) -> Option<u16> {
        match self {
            Answer::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// 410 Gone: the receiver says the endpoint is no more. It is disabled.
    pub fn gone(&self) -> bool {
        self.code() == Some(410)
    }

    /// The pause the receiver asked for, if any (zero counts as none).
    pub fn pause(&self) -> Option<Duration> {
        match self {
            Answer::Status { pause, .. } => pause.filter(|p| !p.is_zero()),
            _ => None,
        }
    }

    /// Whether the endpoint's other requests must wait from now on, before the answer is
    /// recorded: it is gone, or asked for a pause.
    pub fn stops_endpoint(&self) -> bool {
        self.gone() || self.pause().is_some()
    }
}

/// A delivery's state after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    Succeeded,
    /// Tried again this many microseconds from now.
    Pending {
        retry_in_us: i64,
    },
    /// No more attempts: the schedule ran out, or the next would come after the TTL.
    Dead {
        why: &'static str,
    },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Succeeded => "succeeded",
            State::Pending { .. } => "pending",
            State::Dead { .. } => "dead",
        }
    }
}

/// What happens after an answer: to the delivery, and to its endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Next {
    pub state: State,
    /// The endpoint pauses this long (a Retry-After, at most the TTL).
    pub pause: Option<Duration>,
    /// The endpoint is disabled (410 Gone); its deliveries wait, parked.
    pub gone: bool,
}

/// What the delivery's policy makes of an answer to attempt number `attempt` (the one that just
/// ended) of an event `age` old.
pub fn decide(
    answer: &Answer,
    attempt: i32,
    schedule: &[Duration],
    age: Duration,
    ttl: Duration,
    jitter: Jitter,
) -> Next {
    let pause = answer.pause().map(|p| p.min(ttl));
    let gone = answer.gone();
    if answer.ok() {
        return Next {
            state: State::Succeeded,
            pause,
            gone,
        };
    }
    // (a 410 is a failure like any other here: its endpoint is disabled, which parks this
    // delivery with the others while it has attempts left)
    let after = match pause {
        Some(p) => schedule::after_pushback(attempt, schedule, age, ttl, p, jitter),
        None => schedule::after_failure(attempt, schedule, age, ttl, jitter),
    };
    let state = match after {
        AfterFailure::RetryIn(us) => State::Pending { retry_in_us: us },
        AfterFailure::Dead(why) => State::Dead { why },
    };
    Next { state, pause, gone }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn sched() -> Vec<Duration> {
        schedule::parse_schedule("1m,5m").unwrap()
    }

    #[test]
    fn a_2xx_succeeds_and_changes_nothing_of_its_endpoint() {
        let n = decide(
            &Answer::status(204, None, 0),
            1,
            &sched(),
            Duration::ZERO,
            DAY,
            Jitter::NONE,
        );
        assert_eq!(n.state, State::Succeeded);
        assert_eq!((n.pause, n.gone), (None, false));
    }

    #[test]
    fn a_410_disables_its_endpoint_and_retries_on_the_schedule() {
        let a = Answer::status(410, Some("120"), 0);
        assert!(a.gone() && a.stops_endpoint());
        assert_eq!(
            a.pause(),
            None,
            "Retry-After is read on pushback statuses only"
        );
        let n = decide(&a, 1, &sched(), Duration::ZERO, DAY, Jitter::NONE);
        assert!(n.gone);
        assert_eq!(
            n.state,
            State::Pending {
                retry_in_us: 60_000_000
            }
        );
    }

    #[test]
    fn a_pushback_pauses_the_endpoint_within_the_ttl() {
        let a = Answer::status(503, Some("600"), 0);
        assert!(a.stops_endpoint());
        let n = decide(&a, 1, &sched(), Duration::ZERO, DAY, Jitter::NONE);
        assert_eq!(n.pause, Some(Duration::from_secs(600)));
        assert_eq!(
            n.state,
            State::Pending {
                retry_in_us: 600_000_000
            }
        );
        let week = Answer::status(429, Some("604800"), 0);
        let n = decide(&week, 1, &sched(), Duration::ZERO, DAY, Jitter::NONE);
        assert_eq!(n.pause, Some(DAY), "at most the TTL");
        // a date in the past, or nothing readable: no pause, the schedule applies
        let past = Answer::status(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), 2_000_000_000);
        assert!(!past.stops_endpoint());
        assert!(!Answer::status(503, Some("soon"), 0).stops_endpoint());
    }

    #[test]
    fn failures_follow_the_schedule_then_die_naming_why() {
        let n = decide(
            &Answer::Failed,
            1,
            &sched(),
            Duration::ZERO,
            DAY,
            Jitter::NONE,
        );
        assert_eq!(
            n.state,
            State::Pending {
                retry_in_us: 60_000_000
            }
        );
        let n = decide(
            &Answer::Failed,
            3,
            &sched(),
            Duration::ZERO,
            DAY,
            Jitter::NONE,
        );
        assert_eq!(
            n.state,
            State::Dead {
                why: "retry schedule exhausted"
            }
        );
        assert_eq!(n.state.name(), "dead");
        let n = decide(
            &Answer::status(500, None, 0),
            1,
            &sched(),
            DAY,
            DAY,
            Jitter::NONE,
        );
        assert_eq!(
            n.state,
            State::Dead {
                why: "event older than webhooks.ttl"
            }
        );
        assert!(!Answer::NotSent { busy: false }.ok());
    }
}
