-- Operating from psql: retry, recover, test, replay, status.


-- delivery_retry and endpoint_recover (src/gate.rs) run these as the owner for an admin, who
-- has no write right on deliveries: what the caller may not see is "not found".
CREATE FUNCTION webhooks_internal._delivery_retry(delivery_id bigint) RETURNS webhooks.deliveries
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    s text[] := webhooks.tenant_scope();
    d webhooks.deliveries;
BEGIN
    SELECT * INTO d FROM webhooks.deliveries x WHERE x.id = delivery_id FOR UPDATE;
    IF FOUND AND s IS NOT NULL AND NOT (
        coalesce(d.tenant_id, '') = ANY (s)
        AND EXISTS (SELECT 1 FROM webhooks.endpoints ep
                    WHERE ep.id = d.endpoint_id AND coalesce(ep.tenant_id, '') = coalesce(d.endpoint_tenant, '')
                      AND coalesce(ep.tenant_id, '') = ANY (s))) THEN
        d := NULL;
    END IF;
    IF d.id IS NULL THEN
        RAISE EXCEPTION 'delivery % not found', delivery_id USING ERRCODE = 'no_data_found';
    ELSIF d.status = 'succeeded' THEN
        RAISE EXCEPTION 'delivery % already succeeded', delivery_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use webhooks.event_replay(event_id) to send it again.';
    ELSIF d.status = 'in_flight' THEN
        RAISE EXCEPTION 'delivery % is being sent right now', delivery_id USING ERRCODE = 'object_in_use';
    ELSIF d.sync THEN
        RAISE EXCEPTION 'delivery % belongs to a synchronous event and cannot be retried', delivery_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE webhooks.deliveries x SET status = 'pending', next_attempt_at = now(), completed_at = NULL
    WHERE x.id = d.id RETURNING * INTO d;
    RETURN d;
END $$;

-- The day a receiver comes back after an outage: everything that died meanwhile goes again.
CREATE FUNCTION webhooks_internal._endpoint_recover(endpoint_id text, since timestamptz) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    s text[] := webhooks.tenant_scope();
    ep webhooks.endpoints;
    n bigint;
BEGIN
    IF since IS NULL THEN
        RAISE EXCEPTION 'since must be a time: the dead deliveries completed from then on are sent again'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO ep FROM webhooks.endpoints e WHERE e.id = _endpoint_recover.endpoint_id;
    IF NOT FOUND OR (s IS NOT NULL AND NOT coalesce(ep.tenant_id, '') = ANY (s)) THEN
        RAISE EXCEPTION 'endpoint "%" not found', endpoint_id USING ERRCODE = 'no_data_found';
    END IF;
    -- (a disabled endpoint's deliveries wait, parked, until it is enabled)
    UPDATE webhooks.deliveries d
    SET status = 'pending', completed_at = NULL,
        next_attempt_at = CASE WHEN ep.enabled THEN pg_catalog.now() ELSE 'infinity' END
    WHERE d.endpoint_id = ep.id AND d.status = 'dead' AND d.completed_at >= since AND NOT d.sync
      AND coalesce(d.endpoint_tenant, '') = coalesce(ep.tenant_id, '')
      AND (s IS NULL OR coalesce(d.tenant_id, '') = ANY (s));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- endpoint_test (src/gate.rs) runs this as the owner for an admin: the endpoint must be one the
-- caller may see. Nothing is recorded: it is a probe, answered now.
CREATE FUNCTION webhooks_internal._endpoint_test(p_endpoint text, p_type text)
RETURNS TABLE (endpoint_id text, event_id text, status int, ok boolean, duration_ms float8,
               error text, response jsonb)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    s text[] := webhooks.tenant_scope();
    ep webhooks.endpoints;
    k webhooks_internal.signing_keys;
    tn webhooks.tenants;
    ev webhooks.events;
    new_id text := webhooks_internal._new_event_id();
    answer jsonb;
BEGIN
    SELECT * INTO ep FROM webhooks.endpoints e WHERE e.id = p_endpoint;
    IF NOT FOUND OR (s IS NOT NULL AND NOT coalesce(ep.tenant_id, '') = ANY (s)) THEN
        RAISE EXCEPTION 'endpoint "%" not found', p_endpoint USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM webhooks.event_types t WHERE t.name = p_type) THEN
        RAISE EXCEPTION 'unknown event type "%"', p_type USING ERRCODE = 'invalid_parameter_value',
            HINT = 'See webhooks.event_types; the default, webhook.test, is meant for this.';
    END IF;
    SELECT * INTO k FROM webhooks_internal.signing_keys x WHERE x.endpoint_id = ep.id AND ep.signature = 'v1a';
    SELECT * INTO tn FROM webhooks.tenants x WHERE x.id = nullif(ep.tenant_id, '*') AND ep.format = 'hmac-hex';
    -- (the event as a publish would make it, never stored; the request as the claim makes it)
    ev.id := new_id;
    ev.type := p_type;
    ev.version := '1';
    ev.source := webhooks_internal._source();
    ev.tenant_id := nullif(ep.tenant_id, '*');
    ev.occurred_at := pg_catalog.now();
    answer := webhooks_internal._sync_send(p_type, pg_catalog.jsonb_build_array(pg_catalog.to_jsonb(
        webhooks_internal._request(NULL, ev, ep, k, tn,
            pg_catalog.jsonb_build_object('test', true, 'endpoint_id', ep.id)::text))))
        OPERATOR(pg_catalog.->) 0;
    RETURN QUERY SELECT ep.id, new_id, (answer OPERATOR(pg_catalog.->>) 'status')::int,
        answer OPERATOR(pg_catalog.->>) 'error' IS NULL,
        (answer OPERATOR(pg_catalog.->>) 'duration_ms')::float8,
        answer OPERATOR(pg_catalog.->>) 'error',
        answer OPERATOR(pg_catalog.->) 'body';
END $$;

-- Definer: it inserts deliveries, which admins may not do directly; every check the fan-out of
-- a publish makes is made here too, for the calling role.
CREATE FUNCTION webhooks_internal._event_replay(event_id text, endpoint_id text)
RETURNS TABLE (new_delivery_id bigint, to_endpoint_id text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    s text[] := webhooks.tenant_scope();
    ev webhooks.events;
    ep webhooks.endpoints;
    mode text;
BEGIN
    SELECT * INTO ev FROM webhooks.events e WHERE e.id = _event_replay.event_id;
    -- (a type no longer in the catalogue is treated like a synchronous one: never replayed)
    IF NOT FOUND OR (s IS NOT NULL AND NOT coalesce(ev.tenant_id, '') = ANY (s)) THEN
        RAISE EXCEPTION 'event "%" not found', event_id USING ERRCODE = 'no_data_found';
    END IF;
    SELECT t.mode INTO mode FROM webhooks.event_types t WHERE t.name = ev.type;
    IF mode IS NULL OR mode = 'sync' THEN
        RAISE EXCEPTION 'event "%" is of synchronous type "%" and cannot be replayed', event_id, ev.type
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Synchronous events are sent once, by webhook_send_sync.';
    END IF;
    IF _event_replay.endpoint_id IS NOT NULL THEN
        SELECT * INTO ep FROM webhooks.endpoints x WHERE x.id = _event_replay.endpoint_id;
        IF NOT FOUND OR (s IS NOT NULL AND NOT coalesce(ep.tenant_id, '') = ANY (s)) THEN
            RAISE EXCEPTION 'endpoint "%" not found', endpoint_id USING ERRCODE = 'no_data_found';
        ELSIF NOT ep.enabled THEN
            RAISE EXCEPTION 'endpoint "%" is disabled', endpoint_id USING ERRCODE = 'invalid_parameter_value';
        ELSIF NOT (ep.tenant_id IS NOT DISTINCT FROM ev.tenant_id OR ep.tenant_id = '*') THEN
            RAISE EXCEPTION 'endpoint "%" does not receive events of tenant %', endpoint_id,
                coalesce('"' || ev.tenant_id || '"', 'NULL') USING ERRCODE = 'invalid_parameter_value';
        ELSIF NOT webhooks_internal._matches(ep.event_types, ev.type) THEN
            RAISE EXCEPTION 'endpoint "%" does not subscribe to "%"', endpoint_id, ev.type
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    RETURN QUERY
    INSERT INTO webhooks.deliveries AS d (event_id, endpoint_id, tenant_id, entity_key, endpoint_tenant, data_bytes)
    SELECT ev.id, x.id, ev.tenant_id, ev.entity_key, x.tenant_id,
           coalesce(ev.data_bytes, pg_catalog.octet_length(ev.data::text))
    FROM webhooks.endpoints x
    WHERE webhooks_internal._subscribes(x, ev.tenant_id, ev.type)
      AND (s IS NULL OR coalesce(x.tenant_id, '') = ANY (s))
      AND (_event_replay.endpoint_id IS NULL OR x.id = _event_replay.endpoint_id)
    RETURNING d.id, d.endpoint_id;
    IF FOUND THEN
        PERFORM webhooks_internal._wake_on_commit();
    END IF;
END $$;

-- Definer so that it can see the worker in pg_stat_activity (hidden from non-superusers); the
-- counts cover the caller's tenants only.
CREATE FUNCTION webhooks_internal._status()
RETURNS TABLE (preloaded boolean, worker_pid int, worker_running boolean, last_loop timestamptz,
               database text, serves_this_database boolean, pending bigint, due bigint,
               in_flight bigint, dead bigint, oldest_due timestamptz, secrets_unreadable bigint)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    WITH s AS (SELECT webhooks.tenant_scope() AS s),
    d AS (
        SELECT d.status, d.next_attempt_at FROM webhooks.deliveries d, s
        WHERE s.s IS NULL OR (coalesce(d.tenant_id, '') = ANY (s.s)
                              AND coalesce(d.endpoint_tenant, '') = ANY (s.s))
    ),
    -- deliveries of bulk publishes the worker has yet to write (counted as pending and due)
    f AS (
        SELECT coalesce(sum((pg_catalog.cardinality(f.event_ids) - f.done) * pg_catalog.cardinality(f.endpoints)), 0)::bigint AS n
        FROM webhooks_internal.fanouts f, s
        WHERE s.s IS NULL OR coalesce(f.tenant_id, '') = ANY (s.s)
    )
    SELECT w.preloaded, w.pid,
           EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                   WHERE a.pid = w.pid AND a.backend_type = 'webhooks worker'),
           pg_catalog.to_timestamp(w.last_loop_us / 1000000.0),
           coalesce(nullif(pg_catalog.current_setting('webhooks.database', true), ''), pg_catalog.current_database()),
           coalesce(nullif(pg_catalog.current_setting('webhooks.database', true), ''), pg_catalog.current_database())
               = pg_catalog.current_database(),
           (SELECT count(*) FROM d WHERE d.status = 'pending') + (SELECT f.n FROM f),
           (SELECT count(*) FROM d WHERE d.status = 'pending' AND d.next_attempt_at <= pg_catalog.now()) + (SELECT f.n FROM f),
           (SELECT count(*) FROM d WHERE d.status = 'in_flight'),
           (SELECT count(*) FROM d WHERE d.status = 'dead'),
           (SELECT min(d.next_attempt_at) FROM d WHERE d.status = 'pending' AND d.next_attempt_at <= pg_catalog.now()),
           -- endpoints whose secrets the worker could not open (webhooks.endpoint_health says why)
           (SELECT count(*) FROM webhooks.endpoints ep, s
            WHERE ep.secret_problem IS NOT NULL AND (s.s IS NULL OR coalesce(ep.tenant_id, '') = ANY (s.s)))
    FROM webhooks_internal._worker_state() w
$$;
