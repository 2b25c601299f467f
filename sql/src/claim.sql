-- The worker's claim: leasing due deliveries (and expanding fanouts into them first).

-- plpgsql rather than SQL: the worker calls these on every wake-up, and plpgsql keeps their
-- plans for the session where an SQL function would be parsed and planned on each call.

-- Claims up to `batch` due deliveries (and, when asked, ones whose lease expired) for this
-- transaction: SKIP LOCKED so publishers, admins and a second claimer never wait on each other.
-- Ordered endpoints release one delivery per entity at a time. Two simple steps (ids from an
-- ordered, limited walk of the due index, then an update by primary key) so that no
-- statistics, stale after a burst, can lead the planner into a join that grows with the table;
-- the timeout turns any plan that still does into a logged, retried error instead of a hang.
--
-- The rows an endpoint may have claimed (queued in the worker or in flight): the worker leases
-- ahead, up to least(max_in_flight, senders) * ahead, and itself holds each endpoint to
-- max_in_flight requests at a time (core/src/dispatch.rs), so its senders never wait on the claim.
-- Endpoints the worker names fast (their answers come back within a fraction of a second)
-- lease four times further: their rounds are short, and with only `ahead` of them leased one
-- busy receiver waited on the claim and record between rounds.
-- A batch is one request: a batched endpoint may have max_in_flight full batches claimed, not
-- leased further ahead; counted like single rows, one batch filled its allowance and batches
-- never reached batch_max. At most 1,000 rows: the worker holds their bodies in memory, and a
-- silent endpoint keeps what it leased until its requests time out.
-- With several workers, each may hold its part of the quota, counted from claimed_by, and no
-- more: counted over the table, the first to claim leased it all while it could send only its
-- part of max_in_flight at a time, and the others found no room (two workers delivered slower
-- than one). The parts add up to max_in_flight exactly (core/src/lease.rs, shared with the
-- dispatcher), and each worker's part follows its own view of the endpoint (fast or not).
-- (webhooks_internal._lease_quota and _lease_room, in Rust: core/src/lease.rs)

-- What one claim knows as it starts: the worker's view (what it asked, what it holds), and what
-- the table says now (rate allowances, what each endpoint has in flight). Made once by
-- _claim_start, read by every step.
CREATE TYPE webhooks_internal.claimer AS (
    batch int, senders int, ahead int, fast text[], workers int, rank int, active text[],
    memory bigint[], held_ids text[], held_bytes bigint[], mem_full text[],
    -- what the dispatcher lets an endpoint that is not fast have under way (see _claim_start)
    slow_cap int,
    -- rate-limited endpoints locked for this claim, and how many rows each may send now
    rl_ids text[], rl_allow int[],
    -- what each endpoint has in flight, and of that what this worker holds
    busy_ids text[], busy_n int[], mine_n int[]
);

-- This worker's quota of an endpoint's rows (core/src/lease.rs). Inlined into the statements
-- that call it (no SET clause; everything named with its schema, DESIGN rule 8).
CREATE FUNCTION webhooks_internal._claim_quota(c webhooks_internal.claimer, ep_id text, max_in_flight int, batch_max int)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT webhooks_internal._lease_quota(max_in_flight, batch_max,
               CASE WHEN ep_id OPERATOR(pg_catalog.=) ANY (c.fast) THEN c.senders ELSE c.slow_cap END,
               c.ahead, ep_id OPERATOR(pg_catalog.=) ANY (c.fast), c.workers, c.rank, ep_id)
$$;

-- Whether an endpoint may take rows now as far as the worker's memory goes
-- (webhooks.worker_memory), as the worker sees it: memory = {bytes it may still hold, of which
-- for endpoints that are not fast, the share of one endpoint, 1 when it holds nothing at all},
-- held_* = what each endpoint holds now, mem_full = those that take nothing now: they could not
-- take one more of the rows they hold, or an answer stopped them (410, Retry-After) and is not
-- recorded yet. Those, the slow ones when the slow ones hold their part, and all when the
-- worker holds all it may, take nothing now: counted as having no room, so that their rows
-- never fill a claim in place of others'. (Not asked, memory NULL: every row is taken, as in
-- 0.3.0.) Inlined, as _claim_quota.
CREATE FUNCTION webhooks_internal._claim_may_hold(c webhooks_internal.claimer, ep_id text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT c.memory IS NULL
        OR (c.memory[1] OPERATOR(pg_catalog.>) 0
            AND (c.memory[2] OPERATOR(pg_catalog.>) 0 OR ep_id OPERATOR(pg_catalog.=) ANY (c.fast)
                 OR NOT ep_id OPERATOR(pg_catalog.=) ANY (c.held_ids))
            AND NOT ep_id OPERATOR(pg_catalog.=) ANY (c.mem_full))
$$;

-- The claim's first step: the worker's view, and what the table says now.
CREATE FUNCTION webhooks_internal._claim_start(batch int, senders int, ahead int, fast text[], workers int,
                                               rank int, active text[], memory bigint[], held_ids text[],
                                               held_bytes bigint[], mem_full text[])
RETURNS webhooks_internal.claimer
LANGUAGE plpgsql VOLATILE
-- (a walk of the endpoints, joined to the claimer's arrays by hash: plans kept, as the claim's)
SET enable_seqscan = on
SET enable_hashjoin = on
SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    c webhooks_internal.claimer;
BEGIN
    c.batch := batch; c.senders := senders; c.ahead := ahead; c.fast := fast; c.workers := workers;
    c.rank := rank; c.active := active; c.memory := memory; c.held_ids := held_ids;
    c.held_bytes := held_bytes; c.mem_full := mem_full;
    -- What the dispatcher lets an endpoint that is not fast have under way: its share of the
    -- senders (core/src/dispatch.rs). Such an endpoint leases that far ahead and no further: 200
    -- silent endpoints leasing ahead on all the senders held 16,000 rows that the claim then
    -- walked past for every other endpoint's work.
    c.slow_cap := CASE WHEN active IS NULL THEN senders
                       ELSE greatest(1, senders / greatest(cardinality(active), 1)) END;
    -- Rate limits are shared by every claimer: the rows of rate-limited endpoints are locked
    -- for this claim's transaction, so a second worker reads the allowance this one leaves.
    -- One someone else holds is skipped (no allowance this time), never waited for. The
    -- allowance is a GCRA's: rate_next_at moves 1/rate_limit per send, with a second of burst.
    SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.allow), '{}') INTO c.rl_ids, c.rl_allow
    FROM (SELECT ep.id,
                 greatest(floor(extract(epoch FROM now() + interval '1 second' - greatest(ep.rate_next_at, now()))
                                * ep.rate_limit), 0)::int AS allow
          FROM webhooks.endpoints ep
          WHERE ep.rate_limit IS NOT NULL AND ep.enabled
          FOR NO KEY UPDATE SKIP LOCKED) x;
    -- What each endpoint has in flight, counted once per claim: the in-flight index holds an
    -- entry for every row claimed since the last vacuum, so each count visits thousands of
    -- rows during a burst.
    SELECT coalesce(array_agg(b.endpoint_id), '{}'), coalesce(array_agg(b.n), '{}'),
           coalesce(array_agg(b.mine), '{}') INTO c.busy_ids, c.busy_n, c.mine_n
    FROM (SELECT d.endpoint_id, count(*)::int AS n,
                 count(*) FILTER (WHERE d.claimed_by = pg_backend_pid())::int AS mine
          FROM webhooks.deliveries d
          WHERE d.status = 'in_flight' GROUP BY d.endpoint_id) b;
    RETURN c;
END $$;

-- How many rows endpoints can take now: the head looked at is sized by it, so a single busy
-- endpoint costs a claim a few dozen index entries, not thousands. Endpoints the worker has
-- seen no work for lately (not in `active`, nothing in flight) count for 64 rows together at
-- most: idle endpoints (a batched one may take 1,000) must not make every claim walk batch * 4
-- entries of a backlog the busy ones cannot take; once their work shows up the worker names them.
CREATE FUNCTION webhooks_internal._claim_room(c webhooks_internal.claimer) RETURNS int
LANGUAGE plpgsql VOLATILE
-- (a walk of the endpoints, joined to the claimer's arrays by hash: plans kept, as the claim's)
SET enable_seqscan = on
SET enable_hashjoin = on
SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    room_total int;
BEGIN
    SELECT (coalesce(sum(r.room) FILTER (WHERE r.known), 0) + least(coalesce(sum(r.room) FILTER (WHERE NOT r.known), 0), 64))::int
    INTO room_total
    FROM (SELECT greatest(least(webhooks_internal._lease_room(q.quota, b.n, b.mine, c.workers),
                                CASE WHEN ep.rate_limit IS NULL THEN q.quota
                                     ELSE coalesce(rl.allow, 0) END), 0) AS room,
                 c.active IS NULL OR ep.id = ANY (c.active) OR coalesce(b.n, 0) > 0 AS known
    FROM webhooks.endpoints ep
    CROSS JOIN LATERAL (SELECT webhooks_internal._claim_quota(c, ep.id, ep.max_in_flight, ep.batch_max) AS quota) q
    LEFT JOIN unnest(c.busy_ids, c.busy_n, c.mine_n) AS b(endpoint_id, n, mine) ON b.endpoint_id = ep.id
    LEFT JOIN unnest(c.rl_ids, c.rl_allow) AS rl(id, allow) ON rl.id = ep.id
    WHERE ep.enabled AND NOT coalesce(ep.paused_until > now(), false)
      AND webhooks_internal._claim_may_hold(c, ep.id)) r;
    RETURN room_total;
END $$;

-- Step A, the head of the due index (`win` rows), in one statement: each row is to be taken
-- ('take', within its endpoint's room, rate, memory and the batch), or set aside:
--  * 'orphan': its endpoint is gone (a publish that raced endpoint_delete: the cascade could
--    not see it);
--  * 'parked': its endpoint is disabled (a publish that raced a disable);
--  * 'paused': the receiver asked for a pause (Retry-After);
--  * 'blocked': an ordered endpoint holds it back behind an earlier row of its entity that
--    waits for a retry; 'waiting' while that row is due or in flight.
-- Returns the ids chosen with what to do with each, the waiting ones, and how many rows the
-- head held (a full head means more is due than this look saw).
CREATE FUNCTION webhooks_internal._claim_head(c webhooks_internal.claimer, win int,
                                              OUT chosen_ids bigint[], OUT chosen_what text[],
                                              OUT waiting bigint[], OUT head_n int)
LANGUAGE plpgsql VOLATILE
-- (its plan kept too: with no scan of the table and no bitmap, the head can only come from the
-- due index in its order, however many rows wait, and a generic plan's guess at LIMIT win no
-- longer matters; what it joins the head to, by hash where that pays)
SET enable_hashjoin = on
SET enable_mergejoin = on
SET search_path = pg_catalog, webhooks, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    WITH head AS (
        SELECT x.id, x.endpoint_id, x.endpoint_tenant, x.next_attempt_at, x.entity_key,
               coalesce(x.data_bytes, 0)::int8 + 1024 AS bytes
        FROM webhooks.deliveries x
        WHERE x.status = 'pending' AND x.next_attempt_at <= now()
        ORDER BY x.next_attempt_at
        LIMIT win
    ), cand AS (
        SELECT h.id, h.endpoint_id, h.next_attempt_at, h.bytes + coalesce(ep.request_bytes, 0) AS bytes,
               CASE WHEN ep.id IS NULL THEN 'orphan'
                    WHEN NOT ep.enabled THEN 'parked'
                    WHEN ep.paused_until > now() THEN 'paused'
                    WHEN ep.ordered AND h.entity_key IS NOT NULL THEN (
                         -- (decided by the first unfinished row of the entity)
                         SELECT coalesce((
                             SELECT CASE WHEN p.status = 'in_flight' OR p.next_attempt_at <= now()
                                         THEN 'waiting' ELSE 'blocked' END
                             FROM webhooks.deliveries p
                             WHERE p.endpoint_id = h.endpoint_id AND p.entity_key = h.entity_key
                               AND p.status IN ('pending', 'in_flight') AND p.id < h.id
                             ORDER BY p.id LIMIT 1), 'take'))
                    ELSE 'take' END AS what,
               -- (what it may have leased)
               webhooks_internal._claim_quota(c, ep.id, ep.max_in_flight, ep.batch_max) AS max_in_flight,
               CASE WHEN ep.rate_limit IS NULL THEN c.batch ELSE coalesce(rl.allow, 0) END AS allow
        -- The endpoint by id and tenant: one that took the id of a deleted one in another tenant
        -- (or moved tenant) leaves the row an orphan.
        FROM head h LEFT JOIN webhooks.endpoints ep
            ON ep.id = h.endpoint_id AND coalesce(ep.tenant_id, '') = coalesce(h.endpoint_tenant, '')
        LEFT JOIN unnest(c.rl_ids, c.rl_allow) AS rl(id, allow) ON rl.id = ep.id
    ), ranked AS (
        -- (partitioned byte-wise: in the database's collation this sort of a few thousand ids
        -- was most of the claim's time)
        SELECT r.*, row_number() OVER (PARTITION BY r.endpoint_id COLLATE "C", r.what COLLATE "C"
                                          ORDER BY r.next_attempt_at, r.id) AS rn,
               sum(r.bytes) OVER (PARTITION BY r.endpoint_id COLLATE "C", r.what COLLATE "C"
                                  ORDER BY r.next_attempt_at, r.id) AS ep_bytes
        FROM cand r
    ), chosen AS (
        (SELECT r.id, r.what FROM ranked r LEFT JOIN unnest(c.busy_ids, c.busy_n, c.mine_n) AS b(endpoint_id, n, mine)
                                                ON b.endpoint_id = r.endpoint_id
                                           LEFT JOIN unnest(c.held_ids, c.held_bytes) AS h(endpoint_id, bytes)
                                                ON h.endpoint_id = r.endpoint_id
         WHERE r.what = 'take' AND r.rn <= r.allow AND NOT r.endpoint_id = ANY (c.mem_full)
           AND r.rn <= webhooks_internal._lease_room(r.max_in_flight, b.n, b.mine, c.workers)
           -- (within the endpoint's share of the worker's memory: one that holds nothing may take one)
           AND (c.memory IS NULL OR ((c.memory[1] > 0 AND (c.memory[2] > 0 OR r.endpoint_id = ANY (c.fast) OR NOT r.endpoint_id = ANY (c.held_ids)))
                                     AND (r.ep_bytes + coalesce(h.bytes, 0) <= c.memory[3]
                                          OR (r.rn = 1 AND coalesce(h.bytes, 0) = 0))))
         ORDER BY r.next_attempt_at
         LIMIT c.batch)
        UNION ALL
        SELECT r.id, r.what FROM ranked r WHERE r.what IN ('orphan', 'parked', 'blocked', 'paused')
    )
    SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.what), '{}'),
           (SELECT array_agg(r.id) FROM ranked r WHERE r.what = 'waiting'),
           (SELECT count(*) FROM head)
    INTO chosen_ids, chosen_what, waiting, head_n
    FROM chosen x;
END $$;

-- Of these rows, the ones still pending, locked for this transaction; rows another claimer
-- holds are skipped, never waited for. By key, one table, the ids as constants, pending said
-- in the select list (as a condition it matches the due index's predicate): joined to the
-- candidates instead, statistics that took the table for empty (a vacuum of a table whose rows
-- were all deleted, or from before a burst) made the planner walk a whole index against each of
-- them: 6-7 s per claim with 100,000 due.
CREATE FUNCTION webhooks_internal._claim_lock(ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    got bigint[];
BEGIN
    IF ids IS NULL OR cardinality(ids) = 0 THEN
        RETURN '{}';
    END IF;
    SELECT coalesce(array_agg(x.id) FILTER (WHERE x.pending), '{}') INTO got FROM (
        SELECT d.id, d.status = 'pending' AS pending FROM webhooks.deliveries d
        WHERE d.id = ANY (ids)
        FOR UPDATE SKIP LOCKED) x;
    RETURN got;
END $$;

-- Of the rows to take, those whose event is missing (a replay that raced pruning, or a
-- pg_restore still loading): orphans too.
CREATE FUNCTION webhooks_internal._claim_eventless(ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    missing bigint[];
BEGIN
    SELECT array_agg(d.id) INTO missing FROM webhooks.deliveries d
    -- (a scalar subquery, probed through the events' key per row: as NOT EXISTS the planner may
    -- hash-join the claim against every event, a full scan on each claim)
    WHERE d.id = ANY (ids) AND (SELECT e.id FROM webhooks.events e WHERE e.id = d.event_id) IS NULL;
    RETURN missing;
END $$;

-- The rows of the head the claim cannot take, moved off it so that none stays there for long.
-- Orphans (endpoint or event missing: a publish that raced endpoint_delete, a replay that raced
-- pruning, a pg_restore still loading, whose table data comes back deliveries first, then
-- endpoints, then events) are parked with the time in lease_until (unused while pending): the
-- housekeeping sends them once endpoint and event exist, and deletes them an hour later if they
-- don't. Rows of a disabled endpoint are parked; blocked rows are deferred to the retry they
-- wait behind, paused ones to the pause's end.
CREATE FUNCTION webhooks_internal._claim_set_aside(orphans bigint[], parked bigint[], blocked bigint[], paused bigint[])
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    IF orphans IS NOT NULL THEN
        UPDATE webhooks.deliveries d SET next_attempt_at = 'infinity', lease_until = coalesce(d.lease_until, now())
        WHERE d.id = ANY (orphans);
    END IF;
    IF parked IS NOT NULL THEN
        -- (an endpoint enabled since the look above keeps its rows; one enabled right after is
        -- caught by the worker's housekeeping, which releases parked rows of enabled endpoints)
        UPDATE webhooks.deliveries d SET next_attempt_at = 'infinity'
        WHERE d.id = ANY (parked)
          AND NOT EXISTS (SELECT 1 FROM webhooks.endpoints ep WHERE ep.id = d.endpoint_id AND ep.enabled
                            AND coalesce(ep.tenant_id, '') = coalesce(d.endpoint_tenant, ''));
    END IF;
    IF blocked IS NOT NULL THEN
        UPDATE webhooks.deliveries d
        -- (just after it: rows that tie with it in the due index never sort before it)
        SET next_attempt_at = greatest(now() + interval '1 second', interval '1 microsecond' + (
                SELECT p.next_attempt_at FROM webhooks.deliveries p
                WHERE p.endpoint_id = d.endpoint_id AND p.entity_key = d.entity_key
                  AND p.status IN ('pending', 'in_flight') AND p.id < d.id
                ORDER BY p.id LIMIT 1))
        WHERE d.id = ANY (blocked);
    END IF;
    IF paused IS NOT NULL THEN
        UPDATE webhooks.deliveries d
        SET next_attempt_at = greatest(d.next_attempt_at, (
                SELECT ep.paused_until FROM webhooks.endpoints ep WHERE ep.id = d.endpoint_id
                  AND coalesce(ep.tenant_id, '') = coalesce(d.endpoint_tenant, '')))
        WHERE d.id = ANY (paused);
    END IF;
END $$;

-- Rows waiting behind a row of their entity that is due or in flight, when they crowd the
-- head: they step back a second.
CREATE FUNCTION webhooks_internal._claim_step_back(waiting bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    UPDATE webhooks.deliveries d SET next_attempt_at = now() + interval '1 second'
    WHERE d.id = ANY (webhooks_internal._claim_lock(waiting));
END $$;

-- Step B, when the head was full of rows that could not be taken (endpoints at their
-- max_in_flight): up to `want` of the oldest due rows of every other endpoint with room,
-- through the per-endpoint index, so a backlog on one endpoint never starves the others.
-- (taken: what step A took, which counts as in flight too.) Returns them locked.
CREATE FUNCTION webhooks_internal._claim_elsewhere(c webhooks_internal.claimer, taken_ids bigint[], want int)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
-- (planned per call, as the whole claim was before 0.4.0: how many endpoints it walks and how
-- far depends on how much is due; hash joins where they pay)
SET plan_cache_mode = force_custom_plan
SET enable_seqscan = on
SET enable_hashjoin = on
SET enable_mergejoin = on
SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    picked bigint[];
BEGIN
    WITH taken AS MATERIALIZED (
        SELECT d.endpoint_id, count(*) AS n FROM webhooks.deliveries d WHERE d.id = ANY (taken_ids)
        GROUP BY d.endpoint_id
    ), room AS (
        SELECT ep.id, ep.tenant_id,
               least(webhooks_internal._lease_room(q.quota, b.n, b.mine, c.workers) - coalesce(t.n, 0),
                     CASE WHEN ep.rate_limit IS NULL THEN c.batch
                          ELSE coalesce(rl.allow, 0) - coalesce(t.n, 0) END) AS n
        FROM webhooks.endpoints ep
        CROSS JOIN LATERAL (SELECT webhooks_internal._claim_quota(c, ep.id, ep.max_in_flight, ep.batch_max) AS quota) q
        LEFT JOIN unnest(c.busy_ids, c.busy_n, c.mine_n) AS b(endpoint_id, n, mine) ON b.endpoint_id = ep.id
        LEFT JOIN taken t ON t.endpoint_id = ep.id
        LEFT JOIN unnest(c.rl_ids, c.rl_allow) AS rl(id, allow) ON rl.id = ep.id
        WHERE ep.enabled AND NOT ep.ordered
          AND webhooks_internal._lease_room(q.quota, b.n, b.mine, c.workers) > coalesce(t.n, 0)
          AND NOT coalesce(ep.paused_until > now(), false)
          AND webhooks_internal._claim_may_hold(c, ep.id)
    ), pick AS (
        SELECT y.id FROM room CROSS JOIN
            LATERAL (SELECT x.id, x.next_attempt_at FROM webhooks.deliveries x
                     WHERE x.endpoint_id = room.id AND x.status = 'pending' AND x.next_attempt_at <= now()
                       AND coalesce(x.endpoint_tenant, '') = coalesce(room.tenant_id, '')
                     ORDER BY x.next_attempt_at
                     LIMIT least(greatest(room.n, 0), c.batch)) y
        ORDER BY y.next_attempt_at
        LIMIT want
    )
    SELECT coalesce(array_agg(p.id), '{}') INTO picked FROM pick p;
    RETURN webhooks_internal._claim_lock(picked);
END $$;

-- What is taken, held to the worker's memory exactly, in due order: each endpoint within its
-- share, the slow ones (silent receivers among them) together within theirs, all within what
-- the worker may still hold; an endpoint that holds nothing may always take a row, and a worker
-- that holds nothing its first.
CREATE FUNCTION webhooks_internal._claim_fit_memory(c webhooks_internal.claimer, ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
-- (the rows to the endpoints' holdings by hash: as nested loops, hundreds of rows against
-- hundreds of endpoints)
SET enable_hashjoin = on
SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    kept bigint[];
BEGIN
    SELECT coalesce(array_agg(z.id), '{}') INTO kept FROM (
        SELECT y.id, y.rk, sum(y.bytes) OVER (ORDER BY y.rk) AS run
        FROM (SELECT x.id, x.rk, x.bytes, x.slow, x.ep_rk, x.held,
                     sum(x.bytes) FILTER (WHERE x.slow) OVER (ORDER BY x.rk) AS slow_run
              FROM (SELECT d.id, d.bytes, NOT d.endpoint_id = ANY (c.fast) AS slow,
                           row_number() OVER (ORDER BY d.next_attempt_at, d.id) AS rk,
                           row_number() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS ep_rk,
                           coalesce(h.bytes, 0) AS held,
                           coalesce(h.bytes, 0) + sum(d.bytes) OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS ep_run
                    FROM (SELECT d.id, d.endpoint_id, d.next_attempt_at,
                                 -- (its event's data as sent, 1 KiB for the envelope, and what its
                                 -- endpoint's part of the row carries: URL, headers, secrets, client
                                 -- certificate; rows from before 0.4.0 measured here)
                                 coalesce(d.data_bytes::int8, (SELECT octet_length(e.data::text) FROM webhooks.events e WHERE e.id = d.event_id), 0) + 1024
                                 + coalesce((SELECT ep.request_bytes FROM webhooks.endpoints ep WHERE ep.id = d.endpoint_id), 0) AS bytes
                          FROM webhooks.deliveries d WHERE d.id = ANY (ids)) d
                    LEFT JOIN unnest(c.held_ids, c.held_bytes) AS h(endpoint_id, bytes) ON h.endpoint_id = d.endpoint_id) x
              WHERE x.ep_run <= c.memory[3] OR (x.ep_rk = 1 AND x.held = 0)) y
        WHERE NOT y.slow OR y.slow_run <= c.memory[2] OR (y.ep_rk = 1 AND y.held = 0)) z
    WHERE z.run <= c.memory[1] OR (c.memory[4] = 1 AND z.rk = 1);
    RETURN kept;
END $$;

-- Expired leases (a worker that died or stopped with requests unanswered) go back to pending,
-- due now: the next claims take them through every rule of the claim (disabled, paused, rate,
-- cap, order, endpoint by id and tenant) instead of around them. The attempt they made is
-- unknown: it is sent again under the same attempt number (at least once).
CREATE FUNCTION webhooks_internal._claim_expired(batch int) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    UPDATE webhooks.deliveries d SET status = 'pending', next_attempt_at = now(), lease_until = NULL
    WHERE d.id IN (SELECT x.id FROM webhooks.deliveries x
                   WHERE x.status = 'in_flight' AND NOT x.sync AND x.lease_until < now()
                   ORDER BY x.lease_until
                   LIMIT batch
                   FOR UPDATE SKIP LOCKED);
END $$;

-- What the rows taken cost their rate-limited endpoints' allowance.
CREATE FUNCTION webhooks_internal._claim_charge_rates(c webhooks_internal.claimer, ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    UPDATE webhooks.endpoints ep
    SET rate_next_at = greatest(ep.rate_next_at, now()) + t.n * interval '1 second' / ep.rate_limit
    FROM (SELECT d.endpoint_id, count(*) AS n FROM webhooks.deliveries d WHERE d.id = ANY (ids)
          GROUP BY d.endpoint_id) t
    WHERE ep.id = t.endpoint_id AND ep.id = ANY (c.rl_ids);
END $$;

-- The claim: up to `batch` due deliveries (and, when asked, ones whose lease expired) leased
-- to this worker, each returned as the request to send. The steps above, in order: what the
-- table says (_claim_start), how far to look (_claim_room), the head of the due index
-- (_claim_head), locking what it chose (_claim_lock), setting aside what it cannot take
-- (_claim_set_aside, _claim_step_back), the other endpoints' rows when the head was full
-- (_claim_elsewhere), the worker's memory (_claim_fit_memory), expired leases
-- (_claim_expired); then the lease, here.
CREATE FUNCTION webhooks_internal._claim(batch int, lease interval, scan_leases boolean,
                                         senders int DEFAULT 1000, ahead int DEFAULT 1,
                                         fast text[] DEFAULT '{}', workers int DEFAULT 1, rank int DEFAULT 0,
                                         active text[] DEFAULT NULL, memory bigint[] DEFAULT NULL,
                                         held_ids text[] DEFAULT '{}', held_bytes bigint[] DEFAULT '{}',
                                         mem_full text[] DEFAULT '{}')
-- (contended: some candidates were held by another claimer, see below; said on every row, and
-- on a row without a request when nothing was claimed)
RETURNS TABLE (request webhooks_internal.request, contended boolean)
LANGUAGE plpgsql VOLATILE
-- Plans are kept for the session (generic), here and in the steps that read rows by key (lock,
-- eventless, set-aside, step-back, memory, expired leases, rates: a function's settings hold
-- for the functions it calls). Planned on every call, as until 0.4.0, they were half of a
-- one-row claim (2.4 ms of 4.4 at 10 events/s here), before the first byte of every event. A
-- plan kept across a burst must not depend on estimates, so these never scan a table and join
-- only by nested loops over index lookups: a plan made while the table looked empty is still
-- the right one at a million rows. The step whose plan depends on how much is due (the other
-- endpoints' rows, when the head was full) is planned per call, with its own settings.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
-- Statistics taken before a burst (all rows waiting an hour, or all delivered) put the due
-- rows at a few hundred, and the head then came from a bitmap scan of every due row and a
-- sort: 13 ms per claim with 100,000 due, half the worker's time. Every statement here reads
-- a few rows by key or in index order, which plain index scans do whatever the estimates.
SET enable_bitmapscan = off
SET search_path = pg_catalog, webhooks, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    c webhooks_internal.claimer;
    room_total int;
    win int;
    chosen_ids bigint[];
    chosen_what text[];
    waiting bigint[];
    head_n int;
    got bigint[];
    ids bigint[];
    orphans bigint[];
    parked bigint[];
    blocked bigint[];
    paused bigint[];
    missing bigint[];
    held_elsewhere boolean;
BEGIN
    c := webhooks_internal._claim_start(batch, senders, ahead, fast, workers, rank, active, memory,
                                        held_ids, held_bytes, mem_full);
    room_total := webhooks_internal._claim_room(c);
    win := least(batch * 4, greatest(room_total * 2, 32));
    SELECT * INTO chosen_ids, chosen_what, waiting, head_n FROM webhooks_internal._claim_head(c, win);
    got := webhooks_internal._claim_lock(chosen_ids);
    -- Candidates another claimer holds (a second worker claiming at the same moment, both woken
    -- by one commit) are skipped: the worker is told (contended), and claims again a few
    -- milliseconds later, once that claim has committed, or what it left would wait for this
    -- worker's next wake.
    held_elsewhere := cardinality(got) < cardinality(chosen_ids);
    SELECT array_agg(x.id) FILTER (WHERE x.what = 'take'),
           array_agg(x.id) FILTER (WHERE x.what = 'orphan'),
           array_agg(x.id) FILTER (WHERE x.what = 'parked'),
           array_agg(x.id) FILTER (WHERE x.what = 'blocked'),
           array_agg(x.id) FILTER (WHERE x.what = 'paused')
    INTO ids, orphans, parked, blocked, paused
    FROM unnest(chosen_ids, chosen_what) AS x(id, what)
    WHERE x.id = ANY (got);
    IF ids IS NOT NULL THEN
        missing := webhooks_internal._claim_eventless(ids);
        IF missing IS NOT NULL THEN
            orphans := coalesce(orphans, '{}') || missing;
            ids := ARRAY(SELECT unnest(ids) EXCEPT SELECT unnest(missing));
        END IF;
    END IF;
    IF coalesce(orphans, parked, blocked, paused) IS NOT NULL THEN
        PERFORM webhooks_internal._claim_set_aside(orphans, parked, blocked, paused);
    END IF;
    ids := coalesce(ids, '{}');
    -- The head was full: more is due than it showed.
    IF cardinality(ids) < batch AND head_n >= win THEN
        IF waiting IS NOT NULL THEN
            PERFORM webhooks_internal._claim_step_back(waiting);
        END IF;
        IF room_total > cardinality(ids) THEN
            ids := ids || webhooks_internal._claim_elsewhere(c, ids, batch - cardinality(ids));
        END IF;
    END IF;
    IF memory IS NOT NULL AND cardinality(ids) > 0 THEN
        ids := webhooks_internal._claim_fit_memory(c, ids);
    END IF;
    IF scan_leases THEN
        PERFORM webhooks_internal._claim_expired(batch);
    END IF;
    IF cardinality(ids) = 0 THEN
        IF held_elsewhere THEN
            RETURN QUERY SELECT NULL::webhooks_internal.request, true;
        END IF;
        RETURN;
    END IF;
    IF cardinality(c.rl_ids) > 0 THEN
        PERFORM webhooks_internal._claim_charge_rates(c, ids);
    END IF;
    -- The lease: in flight for this worker until `lease` from now, its token the lease's time to
    -- the microsecond (what _record and _release match).
    RETURN QUERY
    UPDATE webhooks.deliveries d
    SET status = 'in_flight', lease_until = now() + lease, next_attempt_at = NULL, claimed_by = pg_backend_pid()
    FROM webhooks.events e
    JOIN webhooks.endpoints ep ON true
    LEFT JOIN webhooks_internal.signing_keys k ON k.endpoint_id = ep.id AND ep.signature = 'v1a'
    LEFT JOIN webhooks.tenants t ON t.id = e.tenant_id AND ep.format = 'hmac-hex'
    WHERE d.id = ANY (ids) AND e.id = d.event_id AND ep.id = d.endpoint_id
      AND coalesce(ep.tenant_id, '') = coalesce(d.endpoint_tenant, '')
    RETURNING webhooks_internal._request(d, e, ep, k, t, e.data::text), held_elsewhere;
END $$;

-- Writes the deliveries that fanouts describe, oldest fanout first, at most about max_rows per
-- call (a slice of a large fanout; the rest on the next call), and returns how many it wrote.
-- One writer at a time (other workers skip it: fanout_writer's row), so deliveries of an entity are written in the
-- order their events were published. Rows are written as a publish would have written them;
-- an endpoint gone, disabled or moved to another tenant by now, or an event deleted (or not yet
-- restored), is the claim's to handle, as for a publish that raced them.
CREATE FUNCTION webhooks_internal._expand(max_rows int) RETURNS int
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    f webhooks_internal.fanouts;
    k int;
    made int := 0;
    n int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhooks_internal.fanouts)
       OR NOT EXISTS (SELECT 1 FROM webhooks_internal.fanout_writer w FOR UPDATE SKIP LOCKED) THEN
        RETURN 0;
    END IF;
    LOOP
        SELECT * INTO f FROM webhooks_internal.fanouts x ORDER BY x.id LIMIT 1 FOR UPDATE;
        EXIT WHEN NOT FOUND;
        k := least(greatest((max_rows - made) / greatest(cardinality(f.endpoints), 1), 1),
                   cardinality(f.event_ids) - f.done);
        INSERT INTO webhooks.deliveries (event_id, endpoint_id, tenant_id, entity_key, next_attempt_at, endpoint_tenant, data_bytes)
        SELECT e.id, ep.id, f.tenant_id, e.k, f.published_at + ep.delay, ep.tenant, e.b
        FROM unnest(f.event_ids[f.done + 1 : f.done + k], f.entity_keys[f.done + 1 : f.done + k],
                    f.data_bytes[f.done + 1 : f.done + k]) WITH ORDINALITY e(id, k, b, o)
        CROSS JOIN unnest(f.endpoints, f.endpoint_tenants, f.delays) WITH ORDINALITY ep(id, tenant, delay, p)
        WHERE NOT f.filtered
           OR EXISTS (SELECT 1 FROM webhooks.endpoints x JOIN webhooks.events v ON v.id = e.id
                      WHERE x.id = ep.id
                        AND webhooks_internal._filter_passes(x.filter, x.filter_weight, x.id, v.id, v.type,
                                v.version, v.source, v.tenant_id, v.actor, v.data))
        ORDER BY e.o, ep.p;
        GET DIAGNOSTICS n = ROW_COUNT;
        made := made + n;
        IF f.done + k >= cardinality(f.event_ids) THEN
            DELETE FROM webhooks_internal.fanouts x WHERE x.id = f.id;
        ELSE
            UPDATE webhooks_internal.fanouts x SET done = f.done + k WHERE x.id = f.id;
        END IF;
        EXIT WHEN made >= max_rows;
    END LOOP;
    RETURN made;
END $$;
