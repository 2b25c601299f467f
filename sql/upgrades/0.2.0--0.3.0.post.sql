
-- ---------------------------------------------------------------------------------------------
-- webhooks 0.2.0 -> 0.3.0, part 2: what needs the 0.3.0 functions.
-- ---------------------------------------------------------------------------------------------

-- The row triggers of tracked tables went with 0.2.0's functions: made again, as tracked.
SELECT webhooks_internal._track_apply(t.relid) FROM webhooks.tracked_tables t ORDER BY t.relid::oid;

INSERT INTO webhooks_internal.tenancy_in_use SELECT FROM webhooks._upgrade_tenancy WHERE in_use
ON CONFLICT DO NOTHING;
DROP TABLE webhooks._upgrade_tenancy;

DO $$
BEGIN
    RAISE NOTICE 'webhooks 0.3.0: webhooks_admin can no longer UPDATE webhooks.deliveries; use delivery_retry, endpoint_recover or event_replay';
END $$;
