
-- ---------------------------------------------------------------------------------------------
-- webhooks 0.3.0 -> 0.4.0, part 2: what needs the 0.4.0 functions.
-- ---------------------------------------------------------------------------------------------

-- The row triggers of tracked tables (and their conditions) went with 0.3.0's functions: made
-- again, as tracked.
SELECT webhooks_internal._track_apply(t.relid) FROM webhooks.tracked_tables t ORDER BY t.relid::oid;
