//! The states of a delivery and the timestamps each one needs: the invariant that
//! `webhooks.deliveries` checks on every row written.

/// Whether a delivery row is consistent: `pending` waits for `next_attempt_at`, `in_flight`
/// holds a lease, `succeeded` and `dead` are completed (a success after at least one attempt),
/// and neither waiting state is completed.
pub fn consistent(
    status: &str,
    attempts: i32,
    next_attempt: bool,
    leased: bool,
    completed: bool,
) -> bool {
    attempts >= 0
        && match status {
            "pending" => next_attempt && !completed,
            "in_flight" => leased && !completed,
            "succeeded" => completed && attempts >= 1,
            "dead" => completed,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::consistent;

    #[test]
    fn each_state_needs_its_own_timestamps() {
        assert!(consistent("pending", 0, true, false, false));
        assert!(!consistent("pending", 0, false, false, false));
        assert!(!consistent("pending", 2, true, false, true));
        assert!(consistent("in_flight", 1, false, true, false));
        assert!(!consistent("in_flight", 1, true, false, false));
        assert!(consistent("succeeded", 1, false, false, true));
        assert!(!consistent("succeeded", 0, false, false, true));
        assert!(!consistent("succeeded", 3, false, false, false));
        assert!(consistent("dead", 0, false, false, true));
        assert!(!consistent("dead", 5, true, false, false));
    }

    #[test]
    fn unknown_states_and_negative_attempts_are_refused() {
        assert!(!consistent("done", 1, false, false, true));
        assert!(!consistent("pending", -1, true, false, false));
    }
}
