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
-- A generic plan cannot see the batch size (LIMIT $1) and stops walking the due index once
-- millions of rows wait; a custom plan per call keeps the claim O(batch).
SET plan_cache_mode = force_custom_plan
-- Statistics taken before a burst (all rows waiting an hour, or all delivered) put the due
-- rows at a few hundred, and the head then came from a bitmap scan of every due row and a
-- sort: 13 ms per claim with 100,000 due, half the worker's time. Every statement here reads
-- a few rows by key or in index order, which plain index scans do whatever the estimates.
SET enable_bitmapscan = off
SET search_path = pg_catalog, webhooks, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    ids bigint[];
    orphans bigint[];
    parked bigint[];
    blocked bigint[];
    waiting bigint[];
    more bigint[];
    head_n int;
    room_total int;
    win int;
    paused bigint[];
    rl_ids text[];
    rl_allow int[];
    busy_ids text[];
    busy_n int[];
    mine_n int[];
    chosen_ids bigint[];
    chosen_what text[];
    got bigint[];
    held_elsewhere boolean := false;
    -- What the dispatcher lets an endpoint that is not fast have under way: its share of the
    -- senders (core/src/dispatch.rs). Such an endpoint leases that far ahead and no further: 200
    -- silent endpoints leasing ahead on all the senders held 16,000 rows that the claim then
    -- walked past for every other endpoint's work.
    slow_cap int := CASE WHEN active IS NULL THEN senders
                         ELSE greatest(1, senders / greatest(cardinality(active), 1)) END;
BEGIN
    -- What the bodies cost the worker's memory (webhooks.worker_memory), as it sees it:
    -- memory = {bytes it may still hold, of which for endpoints that are not fast, the share of
    -- one endpoint, 1 when it holds nothing at all}, held_* = what each endpoint holds now,
    -- mem_full = those that take nothing now: they could not take one more of the rows they
    -- hold, or an answer stopped them (410, Retry-After) and is not recorded yet. Those, the slow ones
    -- when the slow ones hold their part, and all when the worker holds all it may, take nothing
    -- now: counted as having no room, so that their rows never fill a claim in place of
    -- others'. (Not asked: every row is taken, as in 0.3.0.)
    -- Rate limits are shared by every claimer: the rows of rate-limited endpoints are locked
    -- for this claim's transaction, so a second worker reads the allowance this one leaves.
    -- One someone else holds is skipped (no allowance this time), never waited for. The
    -- allowance is a GCRA's: rate_next_at moves 1/rate_limit per send, with a second of burst.
    SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.allow), '{}') INTO rl_ids, rl_allow
    FROM (SELECT ep.id,
                 greatest(floor(extract(epoch FROM now() + interval '1 second' - greatest(ep.rate_next_at, now()))
                                * ep.rate_limit), 0)::int AS allow
          FROM webhooks.endpoints ep
          WHERE ep.rate_limit IS NOT NULL AND ep.enabled
          FOR NO KEY UPDATE SKIP LOCKED) x;
    -- Step A, the head of the due index (up to batch * 4 rows), in one statement:
    --  * rows whose endpoint is gone (a publish that raced endpoint_delete: the cascade could
    --    not see them) are deleted; rows of a disabled endpoint (a publish that raced a
    --    disable) are parked; rows an ordered endpoint holds back behind an earlier row of their
    --    entity that waits for a retry are deferred to that retry. No row the claim cannot take
    --    stays at the head for long.
    --  * the rest is claimed, each endpoint getting at most max_in_flight minus what it has in
    --    flight.
    -- What each endpoint has in flight, counted once per claim: the in-flight index holds an
    -- entry for every row claimed since the last vacuum, so each count visits thousands of
    -- rows during a burst.
    SELECT coalesce(array_agg(b.endpoint_id), '{}'), coalesce(array_agg(b.n), '{}'),
           coalesce(array_agg(b.mine), '{}') INTO busy_ids, busy_n, mine_n
    FROM (SELECT d.endpoint_id, count(*)::int AS n,
                 count(*) FILTER (WHERE d.claimed_by = pg_backend_pid())::int AS mine
          FROM webhooks.deliveries d
          WHERE d.status = 'in_flight' GROUP BY d.endpoint_id) b;
    -- How many rows endpoints can take now: the head looked at is sized by it, so a single
    -- busy endpoint costs a claim a few dozen index entries, not thousands. Endpoints the
    -- worker has seen no work for lately (not in `active`, nothing in flight) count for 64 rows
    -- together at most: idle endpoints (a batched one may take 1,000) must not make every claim
    -- walk batch * 4 entries of a backlog the busy ones cannot take; once their work shows up
    -- the worker names them.
    SELECT (coalesce(sum(r.room) FILTER (WHERE r.known), 0) + least(coalesce(sum(r.room) FILTER (WHERE NOT r.known), 0), 64))::int
    INTO room_total
    FROM (SELECT greatest(least(webhooks_internal._lease_room(q.quota, b.n, b.mine, workers),
                                CASE WHEN ep.rate_limit IS NULL THEN q.quota
                                     ELSE coalesce(rl.allow, 0) END), 0) AS room,
                 active IS NULL OR ep.id = ANY (active) OR coalesce(b.n, 0) > 0 AS known
    FROM webhooks.endpoints ep
    CROSS JOIN LATERAL (SELECT (webhooks_internal._lease_quota(ep.max_in_flight, ep.batch_max, CASE WHEN ep.id = ANY (fast) THEN senders ELSE slow_cap END, ahead, ep.id = ANY (fast), workers, rank, ep.id)) AS quota) q
    LEFT JOIN unnest(busy_ids, busy_n, mine_n) AS b(endpoint_id, n, mine) ON b.endpoint_id = ep.id
    LEFT JOIN unnest(rl_ids, rl_allow) AS rl(id, allow) ON rl.id = ep.id
    WHERE ep.enabled AND NOT coalesce(ep.paused_until > now(), false)
      AND (memory IS NULL OR (memory[1] > 0 AND (memory[2] > 0 OR ep.id = ANY (fast) OR NOT ep.id = ANY (held_ids)) AND NOT ep.id = ANY (mem_full)))) r;
    win := least(batch * 4, greatest(room_total * 2, 32));
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
                    -- the receiver asked for a pause (Retry-After): deferred to its end
                    WHEN ep.paused_until > now() THEN 'paused'
                    WHEN ep.ordered AND h.entity_key IS NOT NULL THEN (
                         -- behind an earlier unfinished row of its entity: 'waiting' while that
                         -- row is due or in flight, 'blocked' while it waits for a retry
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
               (webhooks_internal._lease_quota(ep.max_in_flight, ep.batch_max, CASE WHEN ep.id = ANY (fast) THEN senders ELSE slow_cap END, ahead, ep.id = ANY (fast), workers, rank, ep.id)) AS max_in_flight,
               CASE WHEN ep.rate_limit IS NULL THEN batch ELSE coalesce(rl.allow, 0) END AS allow
        -- The endpoint by id and tenant: one that took the id of a deleted one in another tenant
        -- (or moved tenant) leaves the row an orphan.
        FROM head h LEFT JOIN webhooks.endpoints ep
            ON ep.id = h.endpoint_id AND coalesce(ep.tenant_id, '') = coalesce(h.endpoint_tenant, '')
        LEFT JOIN unnest(rl_ids, rl_allow) AS rl(id, allow) ON rl.id = ep.id
    ), ranked AS (
        -- (partitioned byte-wise: in the database's collation this sort of a few thousand ids
        -- was most of the claim's time)
        SELECT c.*, row_number() OVER (PARTITION BY c.endpoint_id COLLATE "C", c.what COLLATE "C"
                                          ORDER BY c.next_attempt_at, c.id) AS rn,
               sum(c.bytes) OVER (PARTITION BY c.endpoint_id COLLATE "C", c.what COLLATE "C"
                                  ORDER BY c.next_attempt_at, c.id) AS ep_bytes
        FROM cand c
    ), chosen AS (
        (SELECT r.id, r.what FROM ranked r LEFT JOIN unnest(busy_ids, busy_n, mine_n) AS b(endpoint_id, n, mine)
                                                ON b.endpoint_id = r.endpoint_id
                                           LEFT JOIN unnest(held_ids, held_bytes) AS h(endpoint_id, bytes)
                                                ON h.endpoint_id = r.endpoint_id
         WHERE r.what = 'take' AND r.rn <= r.allow AND NOT r.endpoint_id = ANY (mem_full)
           AND r.rn <= webhooks_internal._lease_room(r.max_in_flight, b.n, b.mine, workers)
           -- (within the endpoint's share of the worker's memory: one that holds nothing may take one)
           AND (memory IS NULL OR ((memory[1] > 0 AND (memory[2] > 0 OR r.endpoint_id = ANY (fast) OR NOT r.endpoint_id = ANY (held_ids)))
                                   AND (r.ep_bytes + coalesce(h.bytes, 0) <= memory[3]
                                        OR (r.rn = 1 AND coalesce(h.bytes, 0) = 0))))
         ORDER BY r.next_attempt_at
         LIMIT batch)
        UNION ALL
        SELECT r.id, r.what FROM ranked r WHERE r.what IN ('orphan', 'parked', 'blocked', 'paused')
    )
    SELECT coalesce(array_agg(c.id), '{}'), coalesce(array_agg(c.what), '{}'),
           (SELECT array_agg(r.id) FROM ranked r WHERE r.what = 'waiting'),
           (SELECT count(*) FROM head)
    INTO chosen_ids, chosen_what, waiting, head_n
    FROM chosen c;
    -- Another claimer may have taken a candidate since: lock by key, one table, the ids as
    -- constants, and keep what is still pending (said in the select list: as a condition it
    -- matches the due index's predicate). Joined to the candidates instead, statistics that
    -- took the table for empty (a vacuum of a table whose rows were all deleted, or from
    -- before a burst) made the planner walk a whole index against each of them: 6-7 s per
    -- claim with 100,000 due.
    SELECT coalesce(array_agg(x.id) FILTER (WHERE x.pending), '{}') INTO got FROM (
        SELECT d.id, d.status = 'pending' AS pending FROM webhooks.deliveries d
        WHERE d.id = ANY (chosen_ids)
        FOR UPDATE SKIP LOCKED) x;
    -- Candidates another claimer holds (a second worker claiming at the same moment, both woken
    -- by one commit) are skipped: the worker is told (contended), and claims again a few
    -- milliseconds later, once that claim has committed, or what it left would wait for this
    -- worker's next wake.
    held_elsewhere := cardinality(got) < cardinality(chosen_ids);
    SELECT array_agg(c.id) FILTER (WHERE c.what = 'take'),
           array_agg(c.id) FILTER (WHERE c.what = 'orphan'),
           array_agg(c.id) FILTER (WHERE c.what = 'parked'),
           array_agg(c.id) FILTER (WHERE c.what = 'blocked'),
           array_agg(c.id) FILTER (WHERE c.what = 'paused')
    INTO ids, orphans, parked, blocked, paused
    FROM unnest(chosen_ids, chosen_what) AS c(id, what)
    WHERE c.id = ANY (got);
    -- Orphans: deliveries whose endpoint or event is missing. A publish that raced
    -- endpoint_delete, a replay that raced pruning, or a pg_restore still loading (table data
    -- comes back deliveries first, then endpoints, then events). Parked, off the due index's
    -- head, with the time in lease_until (unused while pending): the worker's housekeeping
    -- sends them once endpoint and event exist, and deletes them an hour later if they don't.
    IF ids IS NOT NULL THEN
        SELECT array_agg(d.id) INTO more FROM webhooks.deliveries d
        -- (a scalar subquery, probed through the events' key per row: as NOT EXISTS the
        -- planner may hash-join the claim against every event, a full scan on each claim)
        WHERE d.id = ANY (ids) AND (SELECT e.id FROM webhooks.events e WHERE e.id = d.event_id) IS NULL;
        IF more IS NOT NULL THEN
            orphans := coalesce(orphans, '{}') || more;
            ids := ARRAY(SELECT unnest(ids) EXCEPT SELECT unnest(more));
            more := NULL;
        END IF;
    END IF;
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
    ids := coalesce(ids, '{}');
    -- Rows waiting behind a row of their entity that is due or in flight stay where they are,
    -- unless they crowd the head: then they step back a second.
    IF waiting IS NOT NULL AND cardinality(ids) < batch AND head_n >= win THEN
        -- (locked by key, pending said in the select list: see the head's lock above)
        SELECT array_agg(x.id) FILTER (WHERE x.pending) INTO more
        FROM (SELECT x.id, x.status = 'pending' AS pending FROM webhooks.deliveries x
              WHERE x.id = ANY (waiting) FOR UPDATE SKIP LOCKED) x;
        UPDATE webhooks.deliveries d SET next_attempt_at = now() + interval '1 second'
        WHERE d.id = ANY (more);
        more := NULL;
    END IF;
    -- Step B, only when the head was full of rows that could not be taken (endpoints at their
    -- max_in_flight): the oldest due rows of every other endpoint with room, through the
    -- per-endpoint index, so a backlog on one endpoint never starves the others.
    IF cardinality(ids) < batch AND head_n >= win AND room_total > cardinality(ids) THEN
        -- (what step A took counts as in flight too)
        WITH taken AS MATERIALIZED (
            SELECT d.endpoint_id, count(*) AS n FROM webhooks.deliveries d WHERE d.id = ANY (ids)
            GROUP BY d.endpoint_id
        ), room AS (
            SELECT ep.id, ep.tenant_id,
                   least(webhooks_internal._lease_room(q.quota, b.n, b.mine, workers) - coalesce(t.n, 0),
                         CASE WHEN ep.rate_limit IS NULL THEN batch
                              ELSE coalesce(rl.allow, 0) - coalesce(t.n, 0) END) AS n
            FROM webhooks.endpoints ep
            CROSS JOIN LATERAL (SELECT (webhooks_internal._lease_quota(ep.max_in_flight, ep.batch_max, CASE WHEN ep.id = ANY (fast) THEN senders ELSE slow_cap END, ahead, ep.id = ANY (fast), workers, rank, ep.id)) AS quota) q
            LEFT JOIN unnest(busy_ids, busy_n, mine_n) AS b(endpoint_id, n, mine) ON b.endpoint_id = ep.id
            LEFT JOIN taken t ON t.endpoint_id = ep.id
            LEFT JOIN unnest(rl_ids, rl_allow) AS rl(id, allow) ON rl.id = ep.id
            WHERE ep.enabled AND NOT ep.ordered
              AND webhooks_internal._lease_room(q.quota, b.n, b.mine, workers) > coalesce(t.n, 0)
              AND NOT coalesce(ep.paused_until > now(), false)
              AND (memory IS NULL OR (memory[1] > 0 AND (memory[2] > 0 OR ep.id = ANY (fast) OR NOT ep.id = ANY (held_ids)) AND NOT ep.id = ANY (mem_full)))
        ), pick AS (
            SELECT y.id FROM room CROSS JOIN
                LATERAL (SELECT x.id, x.next_attempt_at FROM webhooks.deliveries x
                         WHERE x.endpoint_id = room.id AND x.status = 'pending' AND x.next_attempt_at <= now()
                           AND coalesce(x.endpoint_tenant, '') = coalesce(room.tenant_id, '')
                         ORDER BY x.next_attempt_at
                         LIMIT least(greatest(room.n, 0), batch)) y
            ORDER BY y.next_attempt_at
            LIMIT batch - cardinality(ids)
        )
        SELECT coalesce(array_agg(p.id), '{}') INTO more FROM pick p;
        -- (locked by key, as step A's candidates are)
        SELECT array_agg(d.id) FILTER (WHERE d.pending) INTO more FROM (
            SELECT d.id, d.status = 'pending' AS pending FROM webhooks.deliveries d
            WHERE d.id = ANY (more)
            FOR UPDATE SKIP LOCKED
        ) d;
        ids := ids || coalesce(more, '{}');
    END IF;
    -- What is taken, held to the worker's memory exactly, in due order: each endpoint within its
    -- share, the slow ones (silent receivers among them) together within theirs, all within
    -- what the worker may still hold; an endpoint that holds nothing may always take a row, and
    -- a worker that holds nothing its first. (Rows from before 0.4.0 are measured here.)
    IF memory IS NOT NULL AND cardinality(ids) > 0 THEN
        SELECT coalesce(array_agg(z.id), '{}') INTO ids FROM (
            SELECT y.id, y.rk, sum(y.bytes) OVER (ORDER BY y.rk) AS run
            FROM (SELECT x.id, x.rk, x.bytes, x.slow, x.ep_rk, x.held,
                         sum(x.bytes) FILTER (WHERE x.slow) OVER (ORDER BY x.rk) AS slow_run
                  FROM (SELECT d.id, d.bytes, NOT d.endpoint_id = ANY (fast) AS slow,
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
                        LEFT JOIN unnest(held_ids, held_bytes) AS h(endpoint_id, bytes) ON h.endpoint_id = d.endpoint_id) x
                  WHERE x.ep_run <= memory[3] OR (x.ep_rk = 1 AND x.held = 0)) y
            WHERE NOT y.slow OR y.slow_run <= memory[2] OR (y.ep_rk = 1 AND y.held = 0)) z
        WHERE z.run <= memory[1] OR (memory[4] = 1 AND z.rk = 1);
    END IF;
    -- Expired leases (a worker that died or stopped with requests unanswered) go back to
    -- pending, due now: the next claims take them through every rule above (disabled, paused,
    -- rate, cap, order, endpoint by id and tenant) instead of around them. The attempt they made
    -- is unknown: it is sent again under the same attempt number (at least once).
    IF scan_leases THEN
        UPDATE webhooks.deliveries d SET status = 'pending', next_attempt_at = now(), lease_until = NULL
        WHERE d.id IN (SELECT x.id FROM webhooks.deliveries x
                       WHERE x.status = 'in_flight' AND NOT x.sync AND x.lease_until < now()
                       ORDER BY x.lease_until
                       LIMIT batch
                       FOR UPDATE SKIP LOCKED);
    END IF;
    IF cardinality(ids) = 0 THEN
        IF held_elsewhere THEN
            RETURN QUERY SELECT NULL::webhooks_internal.request, true;
        END IF;
        RETURN;
    END IF;
    IF cardinality(rl_ids) > 0 THEN
        UPDATE webhooks.endpoints ep
        SET rate_next_at = greatest(ep.rate_next_at, now()) + t.n * interval '1 second' / ep.rate_limit
        FROM (SELECT d.endpoint_id, count(*) AS n FROM webhooks.deliveries d WHERE d.id = ANY (ids)
              GROUP BY d.endpoint_id) t
        WHERE ep.id = t.endpoint_id AND ep.id = ANY (rl_ids);
    END IF;
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
