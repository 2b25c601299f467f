-- The worker's record: what came of its requests, and what it never sent.

-- plpgsql rather than SQL, as the claim.

-- The answers themselves: each delivery's new state and one attempt row, recorded only by the
-- claim that holds the row (its lease, to the microsecond, is the claim's token): a late answer
-- of an older claim changes nothing. Rows someone else holds locked are skipped, never waited
-- for, and returned (busy) to be recorded later. Returns what was recorded, with each row's
-- endpoint and new status.
CREATE FUNCTION webhooks_internal._record_answers(ids int8[], leases_us int8[], statuses text[], attempt_nos int4[],
                                                  codes int4[], errors text[], retry_in_us int8[], started_us int8[],
                                                  durations float8[], bodies text[],
                                                  OUT done_ids int8[], OUT done_eps text[], OUT done_statuses text[],
                                                  OUT busy int8[])
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    got int8[];
    live int8[];
BEGIN
    -- Locked by key; of those, the ones still in flight. (Said in the select list, where no
    -- estimate of how many rows are in flight can steer the plan: statistics from before a
    -- burst say none are, and a filter on it made the planner walk every row in flight, or
    -- every answer for each row, on each record.)
    SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.id) FILTER (WHERE x.in_flight), '{}')
    INTO got, live FROM (
        SELECT d.id, d.status = 'in_flight' AS in_flight FROM webhooks.deliveries d
        WHERE d.id = ANY (ids) FOR UPDATE SKIP LOCKED
    ) x;
    WITH r AS (
        -- (o: which answer, as one call may carry a stale answer of a row beside its current one)
        SELECT * FROM unnest(ids, leases_us, statuses, attempt_nos, codes, errors, retry_in_us, started_us, durations, bodies)
            WITH ORDINALITY AS r(id, lease_us, status, attempt, code, err, retry_in_us, started_us, duration_ms, body, o)
    ), upd AS (
        UPDATE webhooks.deliveries d
        SET status = r.status,
            attempts = r.attempt,
            next_attempt_at = CASE WHEN r.status = 'pending' THEN now() + r.retry_in_us * interval '1 microsecond' END,
            lease_until = NULL,
            last_status = r.code,
            last_error = r.err,
            completed_at = CASE WHEN r.status IN ('succeeded', 'dead') THEN now() END
        FROM r
        WHERE d.id = r.id AND d.id = ANY (live)
          AND (extract(epoch FROM d.lease_until) * 1000000)::int8 = r.lease_us
        RETURNING d.id, d.endpoint_id, d.status, r.o
    ), ins AS (
        -- (the attempt of the answer that was recorded, not of a stale one for the same row)
        INSERT INTO webhooks.attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, response_body)
        SELECT r.id, r.attempt, to_timestamp(r.started_us / 1000000.0), r.duration_ms, r.code, r.err, r.body
        FROM r JOIN upd ON upd.o = r.o
    )
    SELECT coalesce(array_agg(upd.id), '{}'), coalesce(array_agg(upd.endpoint_id), '{}'), coalesce(array_agg(upd.status), '{}')
    INTO done_ids, done_eps, done_statuses FROM upd;
    -- Busy: rows not locked above that still carry this claim's lease (someone holds them).
    -- Rows gone (endpoint deleted) or claimed again since are not kept for later. (Only looked
    -- for when a row was skipped: the common case reads nothing more.)
    busy := '{}';
    IF cardinality(got) < cardinality(ids) THEN
        -- (in flight said in the select list, as above)
        SELECT coalesce(array_agg(x.id) FILTER (WHERE x.held), '{}') INTO busy
        FROM (SELECT d.id, d.status = 'in_flight'
                           AND (extract(epoch FROM d.lease_until) * 1000000)::int8 = r.lease_us AS held
              FROM unnest(ids, leases_us) AS r(id, lease_us)
              JOIN webhooks.deliveries d ON d.id = r.id
              -- (the ids as an index condition too: the join alone let statistics that took
              -- the table for empty walk a whole index against them)
              WHERE d.id = ANY (ids) AND NOT d.id = ANY (got)) x;
    END IF;
END $$;

-- What the recorded answers say about their endpoints, per endpoint:
--  * a throttling answer with Retry-After pauses the endpoint (paused_until, pauses_us);
--  * 410 Gone disables it (its pending deliveries are kept, parked; gone);
--  * a success ends a failing streak (webhook.endpoint.recovered); a failure starts one, and
--    one that lasted disable_after disables the endpoint;
--  * an answer to a request sent after a secret problem's pause clears it (its secrets opened).
-- (A worker's own writes to endpoints are state changes only: they never wait for an admin's
-- lock, SKIP LOCKED leaves that row's state for its next answers.)
CREATE FUNCTION webhooks_internal._record_endpoints(done_ids int8[], done_eps text[], ids int8[], statuses text[],
                                                    gone boolean[], started_us int8[], pauses_us int8[],
                                                    disable_after interval)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    o record;
    tenant text;
    since timestamptz;
BEGIN
    FOR o IN
        WITH answers AS (
            SELECT x.endpoint_id, a.status, a.gone, a.started_us, a.pause_us
            FROM unnest(done_ids, done_eps) AS x(id, endpoint_id)
            JOIN unnest(ids, statuses, gone, started_us, pauses_us) AS a(id, status, gone, started_us, pause_us)
              ON a.id = x.id
        )
        SELECT w.endpoint_id,
               bool_or(w.status = 'succeeded') AS ok,
               coalesce(bool_or(w.gone), false) AS gone,
               min(to_timestamp(w.started_us / 1000000.0)) FILTER (WHERE w.status <> 'succeeded') AS first_failure,
               max(to_timestamp(w.started_us / 1000000.0)) AS last_start,
               max(now() + w.pause_us * interval '1 microsecond') AS pause_until
        FROM answers w GROUP BY w.endpoint_id
    LOOP
        -- The common case, successes of an endpoint that was not failing, changes nothing: no
        -- lock, no write on the hot path.
        CONTINUE WHEN o.ok AND NOT o.gone AND o.pause_until IS NULL
            AND (SELECT ep.failing_since IS NULL AND ep.secret_problem IS NULL
                 FROM webhooks.endpoints ep WHERE ep.id = o.endpoint_id);
        PERFORM 1 FROM webhooks.endpoints ep WHERE ep.id = o.endpoint_id FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        -- Sent after the pause a secret problem set (claimed then, so its secrets opened: a key
        -- put back): the problem is over. (An answer to a request sent before it says nothing.)
        UPDATE webhooks.endpoints ep SET secret_problem = NULL
        WHERE ep.id = o.endpoint_id AND ep.secret_problem IS NOT NULL
          AND (ep.paused_until IS NULL OR ep.paused_until <= o.last_start);
        IF o.pause_until IS NOT NULL THEN
            UPDATE webhooks.endpoints ep SET paused_until = o.pause_until
            WHERE ep.id = o.endpoint_id AND (ep.paused_until IS NULL OR ep.paused_until < o.pause_until);
        END IF;
        IF o.gone THEN
            UPDATE webhooks.endpoints ep
            SET enabled = false,
                disabled_reason = format('the receiver answered 410 Gone at %s', now())
            WHERE ep.id = o.endpoint_id AND ep.enabled;
        ELSIF o.ok THEN
            WITH before AS (SELECT ep.failing_since FROM webhooks.endpoints ep WHERE ep.id = o.endpoint_id)
            UPDATE webhooks.endpoints ep SET failing_since = NULL
            FROM before WHERE ep.id = o.endpoint_id AND ep.failing_since IS NOT NULL
            RETURNING ep.tenant_id, before.failing_since INTO tenant, since;
            IF FOUND THEN
                PERFORM webhooks_internal._publish_operational('webhook.endpoint.recovered',
                    jsonb_build_object('endpoint_id', o.endpoint_id, 'failing_since', since,
                                       'recovered_at', now()),
                    o.endpoint_id, tenant);
            END IF;
        ELSE
            UPDATE webhooks.endpoints ep SET failing_since = o.first_failure
            WHERE ep.id = o.endpoint_id AND ep.failing_since IS NULL;
            IF disable_after > interval '0' THEN
                UPDATE webhooks.endpoints ep
                SET enabled = false,
                    disabled_reason = format('every attempt has failed since %s (webhooks.disable_after = %s)',
                                             ep.failing_since, disable_after)
                WHERE ep.id = o.endpoint_id AND ep.enabled AND ep.failing_since <= now() - disable_after;
            END IF;
        END IF;
    END LOOP;
END $$;

-- Dead letters, announced as webhook.delivery.dead (except those of operational events: no
-- event about an event about an event).
CREATE FUNCTION webhooks_internal._announce_dead(dead_ids int8[]) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    PERFORM webhooks_internal._publish_operational('webhook.delivery.dead',
                jsonb_build_object('delivery_id', d.id, 'event_id', d.event_id, 'event_type', d.type,
                                   'endpoint_id', d.endpoint_id, 'attempts', d.attempts,
                                   'last_status', d.last_status, 'last_error', d.last_error),
                -- (about a platform endpoint: the platform's event, not the tenant's)
                d.endpoint_id, CASE WHEN d.endpoint_tenant = '*' THEN '*' ELSE d.tenant_id END)
    -- (by key, one table, each event's type looked up by its key: a condition on the row's
    -- status would match the dead-letter index's predicate, and a join let statistics that took
    -- the table for empty walk a whole index)
    FROM (SELECT d.*, (SELECT e.type FROM webhooks.events e WHERE e.id = d.event_id) AS type
          FROM webhooks.deliveries d
          WHERE d.id = ANY (dead_ids)) d
    WHERE NOT starts_with(d.type, 'webhook.');
END $$;

-- Records a batch of outcomes of this worker's requests, in one transaction: the answers
-- (_record_answers), what they say about their endpoints (_record_endpoints), the dead letters
-- they made (_announce_dead). What each answer means was decided by the worker
-- (core/src/answer.rs: state, retry, pause, gone); these apply it. Returns the rows it could
-- not record now (someone holds them locked) for the worker to record later.
CREATE FUNCTION webhooks_internal._record(ids int8[], leases_us int8[], statuses text[], attempt_nos int4[],
                                 codes int4[], errors text[], retry_in_us int8[], started_us int8[],
                                 durations float8[], bodies text[], pauses_us int8[],
                                 disable_after interval, gone boolean[] DEFAULT NULL)
RETURNS int8[]
LANGUAGE plpgsql VOLATILE
-- A generic plan guesses ten rows for the arrays and one for the rows they name, and joins
-- them in a nested loop: quadratic in the answers recorded at once (hundreds in a burst). A
-- custom plan sees the arrays' lengths. (Set for the steps too.)
SET plan_cache_mode = force_custom_plan
SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    r record;
    dead int8[];
BEGIN
    SELECT * INTO r FROM webhooks_internal._record_answers(ids, leases_us, statuses, attempt_nos, codes, errors,
                                                           retry_in_us, started_us, durations, bodies);
    IF cardinality(r.done_ids) = 0 THEN
        RETURN r.busy;
    END IF;
    PERFORM webhooks_internal._record_endpoints(r.done_ids, r.done_eps, ids, statuses, gone, started_us,
                                                pauses_us, disable_after);
    dead := ARRAY(SELECT x.id FROM unnest(r.done_ids, r.done_statuses) AS x(id, status) WHERE x.status = 'dead');
    IF cardinality(dead) > 0 THEN
        PERFORM webhooks_internal._announce_dead(dead);
    END IF;
    RETURN r.busy;
END $$;

-- Claimed deliveries the worker never sent (it stopped, their endpoint asked for a pause or
-- answered 410, their start deadline passed, a reload changed how to connect, no DNS helper
-- was free): pending again, no attempt counted. Only while the row still carries that claim's lease.
-- (after_ms: when to be due again, in milliseconds from now; none but for a lookup that found
-- no DNS helper free, src/http/)
CREATE FUNCTION webhooks_internal._release(ids int8[], leases_us int8[], after_ms int8[] DEFAULT NULL) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    UPDATE webhooks.deliveries d
    SET status = 'pending', next_attempt_at = pg_catalog.now() + coalesce(r.after_ms, 0) * interval '1 millisecond',
        lease_until = NULL
    FROM unnest(ids, leases_us, after_ms) AS r(id, lease_us, after_ms)
    -- (in flight tested inside a CASE: as a plain condition it matches the in-flight index's
    -- predicate, and statistics saying nothing is in flight could make the planner walk every
    -- leased row against the ids)
    WHERE d.id = r.id AND d.id = ANY (ids)
      AND CASE WHEN d.status = 'in_flight' THEN (extract(epoch FROM d.lease_until) * 1000000)::int8 = r.lease_us END
$$;
