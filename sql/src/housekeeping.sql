-- The worker's housekeeping (src/worker/ calls these in turn, each step in a transaction of
-- its own). Every step is bounded by `step` rows, and a row someone holds is left for the next
-- pass (SKIP LOCKED), never waited for. Attempts go with their deliveries (the cascade
-- trigger), events once no delivery refers to them.

-- History past the retention.
CREATE FUNCTION webhooks_internal._prune_succeeded(keep interval, step int) RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    WITH gone AS (DELETE FROM webhooks.deliveries WHERE id IN (
        SELECT d.id FROM webhooks.deliveries d
        WHERE d.status = 'succeeded' AND d.completed_at < now() - keep
        LIMIT step FOR UPDATE SKIP LOCKED) RETURNING 1)
    SELECT count(*) FROM gone
$$;

CREATE FUNCTION webhooks_internal._prune_dead(keep interval, step int) RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    WITH gone AS (DELETE FROM webhooks.deliveries WHERE id IN (
        SELECT d.id FROM webhooks.deliveries d
        WHERE d.status = 'dead' AND d.completed_at < now() - keep
        LIMIT step FOR UPDATE SKIP LOCKED) RETURNING 1)
    SELECT count(*) FROM gone
$$;

-- Events published before `before` (an event id: ids are ULIDs, so every event published
-- before the cutoff has a smaller one, and the primary key finds them without an index on
-- occurred_at on the publish path) that no delivery refers to, nor a fanout has yet to write
-- deliveries for.
CREATE FUNCTION webhooks_internal._prune_events(before text, step int) RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    WITH gone AS (DELETE FROM webhooks.events WHERE id IN (
        SELECT e.id FROM webhooks.events e
        WHERE e.id < before
          AND e.id < coalesce((SELECT min(f.event_ids[1]) FROM webhooks_internal.fanouts f), before)
          AND NOT EXISTS (SELECT 1 FROM webhooks.deliveries d WHERE d.event_id = e.id)
        LIMIT step FOR UPDATE SKIP LOCKED) RETURNING 1)
    SELECT count(*) FROM gone
$$;

-- A parking that raced an endpoint_enable, or an orphan whose endpoint and event exist by now
-- (a restore that finished loading): what waits for no reason is released. Through the
-- enabled endpoints' own index ranges, so a disabled endpoint's parked backlog is never
-- scanned.
CREATE FUNCTION webhooks_internal._release_parked(step int) RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    WITH released AS (
        UPDATE webhooks.deliveries d SET next_attempt_at = now(), lease_until = NULL
        WHERE d.id IN (
            SELECT x.id FROM webhooks.endpoints ep
            JOIN webhooks.deliveries x ON x.endpoint_id = ep.id AND x.status = 'pending'
             AND x.next_attempt_at = 'infinity'
             AND coalesce(x.endpoint_tenant, '') = coalesce(ep.tenant_id, '')
            WHERE ep.enabled
              AND EXISTS (SELECT 1 FROM webhooks.events e WHERE e.id = x.event_id)
            LIMIT step FOR UPDATE OF x SKIP LOCKED)
        RETURNING 1)
    SELECT count(*) FROM released
$$;

-- Orphans parked an hour ago whose endpoint (by id and tenant) or event never came (back).
CREATE FUNCTION webhooks_internal._delete_orphans(step int) RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    WITH gone AS (DELETE FROM webhooks.deliveries WHERE id IN (
        SELECT d.id FROM webhooks.deliveries d
        WHERE d.status = 'pending' AND d.lease_until IS NOT NULL
          AND d.lease_until < now() - interval '1 hour' AND d.next_attempt_at = 'infinity'
          AND (NOT EXISTS (SELECT 1 FROM webhooks.endpoints ep WHERE ep.id = d.endpoint_id
                           AND coalesce(ep.tenant_id, '') = coalesce(d.endpoint_tenant, ''))
               OR NOT EXISTS (SELECT 1 FROM webhooks.events e WHERE e.id = d.event_id))
        LIMIT step FOR UPDATE SKIP LOCKED) RETURNING 1)
    SELECT count(*) FROM gone
$$;

-- Bindings of dropped roles bind nobody (they are keyed by oid); they go.
CREATE FUNCTION webhooks_internal._forget_dropped_roles() RETURNS bigint
LANGUAGE sql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    WITH gone AS (DELETE FROM webhooks.tenant_roles t
        WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid = t.role_name::oid)
        RETURNING 1)
    SELECT count(*) FROM gone
$$;
