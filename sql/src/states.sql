-- One check for the whole state machine of a delivery: each status has exactly the timestamps
-- it needs (core/src/state.rs). A call of a compiled function, not a CASE: PostgreSQL reads a
-- check's expression tree again for every statement that writes the table, and a one-row
-- publish is such a statement.
ALTER TABLE webhooks.deliveries ADD CONSTRAINT deliveries_state
    CHECK (webhooks_internal._delivery_state_ok(status, attempts, next_attempt_at, lease_until, completed_at));
