-- Synchronous delivery (webhook_send_sync): an OTP, a magic link, a verdict the caller waits for.

-- Used by webhook_send_sync: records the event and in-flight deliveries, returns their requests
-- (webhooks_internal.request, as the claim returns them).
-- The event is recorded without its data: synchronous events carry OTP codes, magic links and
-- recipients, which are sent now and never again (no retry, no replay), so nothing of them is
-- kept for tenant admins to read. What stays: type, tenant, actor, time, and per endpoint the
-- status, duration and answer of the attempt.
CREATE FUNCTION webhooks_internal._sync_prepare(p_type text, p_data jsonb, p_tenant text, p_actor jsonb)
RETURNS SETOF webhooks_internal.request
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    tenant text := webhooks_internal._event_tenant(p_tenant);
    et webhooks.event_types;
    new_id text := webhooks_internal._new_event_id();
    ev webhooks.events;
BEGIN
    et := (webhooks_internal._check_event(p_type, p_data, p_actor, NULL, true)).et;
    INSERT INTO webhooks.events AS e (id, tenant_id, type, version, source, actor, data, traceparent)
    VALUES (new_id, tenant, p_type, et.version,
            webhooks_internal._source(), p_actor,
            '{}'::jsonb, nullif(pg_catalog.current_setting('webhooks.traceparent', true), ''))
    RETURNING * INTO ev;
    RETURN QUERY
    WITH d AS (
        INSERT INTO webhooks.deliveries AS dd (event_id, endpoint_id, tenant_id, sync, status, next_attempt_at, lease_until,
                                               endpoint_tenant)
        SELECT new_id, ep.id, tenant, true, 'in_flight', NULL, pg_catalog.now() + interval '1 hour', ep.tenant_id
        FROM webhooks.endpoints ep
        WHERE webhooks_internal._subscribes(ep, tenant, p_type)
          AND webhooks_internal._filter_passes(ep.filter, ep.filter_weight, ep.id,
                   new_id, p_type, et.version, ev.source, tenant, p_actor, p_data)
        RETURNING dd AS row, dd.endpoint_id
    )
    SELECT (x.r).* FROM (
        SELECT webhooks_internal._request(d.row, ev, ep, k, t, p_data::text) AS r
        FROM d JOIN webhooks.endpoints ep ON ep.id = d.endpoint_id
        LEFT JOIN webhooks_internal.signing_keys k ON k.endpoint_id = ep.id AND ep.signature = 'v1a'
        LEFT JOIN webhooks.tenants t ON t.id = ev.tenant_id AND ep.format = 'hmac-hex'
        ORDER BY ep.id OFFSET 0) x;
END $$;

CREATE FUNCTION webhooks_internal._sync_record(answers jsonb) RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    WITH r AS (
        SELECT * FROM pg_catalog.jsonb_to_recordset(answers)
            AS r(delivery_id bigint, status int, error text, raw_body text, started_us bigint, duration_ms float8)
    ), upd AS (
        UPDATE webhooks.deliveries d
        SET status = CASE WHEN r.error IS NULL THEN 'succeeded' ELSE 'dead' END,
            attempts = 1, lease_until = NULL, last_status = r.status, last_error = r.error, completed_at = pg_catalog.now()
        FROM r WHERE d.id = r.delivery_id AND d.sync AND d.status = 'in_flight'
        RETURNING d.id
    )
    INSERT INTO webhooks.attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, response_body)
    SELECT r.delivery_id, 1, pg_catalog.to_timestamp(r.started_us / 1000000.0), r.duration_ms, r.status, r.error, r.raw_body
    FROM r JOIN upd ON upd.id = r.delivery_id
$$;

-- Synchronous events: delivered now from the calling session (src/sync.rs sends what
-- _sync_prepare returned, then calls this with the answers). Returns them, or, when nobody
-- subscribes or any endpoint fails, {"error": {"code", "message", "detail", "hint"}}:
-- webhook_send_sync raises it (WH001, WH002) and so rolls back the caller's work;
-- webhook_send_sync_result hands it back. Errors name endpoint ids and the kind of failure,
-- never URLs or hosts (publishers read them, and a URL may carry a token). The caller sees the
-- answers of the endpoints it may see, no others: a tenant's publisher learns nothing of a
-- platform endpoint ('*') that also received the event (its failure still fails the call,
-- unnamed); the attempts are recorded for those who may see them.
-- event: the event's id, version, source, tenant and type (NULL when nothing was sent).
CREATE FUNCTION webhooks_internal._sync_finish(event_type text, event jsonb, answers jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    shown jsonb;
    failures text;
    hidden int;
    s text[] := webhooks.tenant_scope();
BEGIN
    IF event IS NULL OR pg_catalog.jsonb_array_length(answers) = 0 THEN
        RETURN pg_catalog.jsonb_build_object('error', pg_catalog.jsonb_build_object(
            'code', 'WH002',
            'message', pg_catalog.format('no enabled endpoint subscribes to synchronous event type "%s"', event_type),
            'hint', pg_catalog.format('Create one: SELECT webhooks.endpoint_create(url, ARRAY[%L]);', event_type)));
    END IF;
    PERFORM webhooks_internal._sync_record(answers);
    -- (an endpoint the caller may see: of one of its tenants, '*' only for a platform role)
    SELECT coalesce(pg_catalog.jsonb_agg(a ORDER BY a->>'endpoint_id')
                        FILTER (WHERE s IS NULL OR coalesce(a->>'endpoint_tenant', '') = ANY (s)), '[]'),
           pg_catalog.count(*) FILTER (WHERE a->>'error' IS NOT NULL
                                        AND NOT (s IS NULL OR coalesce(a->>'endpoint_tenant', '') = ANY (s)))
    INTO shown, hidden FROM pg_catalog.jsonb_array_elements(answers) a;
    SELECT pg_catalog.string_agg(pg_catalog.format('endpoint %s: %s', a->>'endpoint_id', a->>'public_error'), '; ')
    INTO failures FROM pg_catalog.jsonb_array_elements(shown) a WHERE a->>'error' IS NOT NULL;
    IF hidden > 0 THEN
        failures := pg_catalog.concat_ws('; ', failures,
            CASE WHEN hidden = 1 THEN 'a platform endpoint failed' ELSE hidden || ' platform endpoints failed' END);
    END IF;
    IF failures IS NOT NULL THEN
        -- Rolled back with the caller, the attempts would leave no trace: the worker records
        -- them once this transaction has ended without committing (src/handoff.rs).
        PERFORM webhooks_internal._sync_failed(event, answers);
        RETURN pg_catalog.jsonb_build_object('error', pg_catalog.jsonb_build_object(
            'code', 'WH001',
            'message', pg_catalog.format('synchronous webhook %s failed: %s', event_type, failures),
            'detail', 'event ' || (event ->> 'event_id')));
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'event_id', event ->> 'event_id',
        'responses', (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                 'endpoint_id', a->'endpoint_id', 'status', a->'status',
                                 'body', a->'body', 'duration_ms', a->'duration_ms')), '[]')
                      FROM pg_catalog.jsonb_array_elements(shown) a));
END $$;

-- The worker's record of a synchronous send that failed in a transaction that then rolled
-- back: the event (without its data, which the caller withdrew), a dead delivery and its
-- attempt, so that attempts, dead_letters and endpoint_health show why challenges fail. Once
-- only, whatever the caller's transaction did.
CREATE FUNCTION webhooks_internal._sync_failure_record(note jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    started timestamptz := pg_catalog.to_timestamp((note ->> 'started_us')::float8 / 1000000.0);
    delivery bigint;
BEGIN
    INSERT INTO webhooks.events (id, tenant_id, type, version, source, data, occurred_at)
    VALUES (note ->> 'event_id', note ->> 'tenant_id', note ->> 'event_type', coalesce(note ->> 'version', '1'),
            coalesce(note ->> 'source', ''), '{}', started)
    ON CONFLICT (id) DO NOTHING;
    IF EXISTS (SELECT 1 FROM webhooks.deliveries d
               WHERE d.event_id = note ->> 'event_id' AND d.endpoint_id = note ->> 'endpoint_id') THEN
        RETURN;
    END IF;
    INSERT INTO webhooks.deliveries (event_id, endpoint_id, tenant_id, sync, status, attempts, next_attempt_at,
                                     last_status, last_error, created_at, completed_at, endpoint_tenant)
    VALUES (note ->> 'event_id', note ->> 'endpoint_id', note ->> 'tenant_id', true, 'dead', 1, NULL,
            (note ->> 'status')::int, note ->> 'error', started, pg_catalog.now(),
            note ->> 'endpoint_tenant')
    RETURNING id INTO delivery;
    INSERT INTO webhooks.attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, response_body)
    VALUES (delivery, 1, started, (note ->> 'duration_ms')::float8, (note ->> 'status')::int,
            note ->> 'error', note ->> 'body');
EXCEPTION WHEN OTHERS THEN
    -- One note that cannot be recorded must not take the others with it.
    RAISE WARNING 'webhooks: a failed synchronous send of event % could not be recorded: %', note ->> 'event_id', SQLERRM;
END $$;

-- Raises what webhook_send_sync_result reports (an invoker function: the SQLSTATEs WH001 and
-- WH002 survive only when raised from SQL).
CREATE FUNCTION webhooks.webhook_send_sync(
    event_type text,
    data jsonb,
    tenant_id text DEFAULT NULL,
    actor jsonb DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r jsonb := webhooks.webhook_send_sync_result(event_type, data, tenant_id, actor);
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING ERRCODE = r #>> '{error,code}', MESSAGE = r #>> '{error,message}',
            DETAIL = coalesce(r #>> '{error,detail}', ''), HINT = coalesce(r #>> '{error,hint}', '');
    END IF;
    RETURN r;
END $$;
COMMENT ON FUNCTION webhooks.webhook_send_sync(text, jsonb, text, jsonb) IS
    'Delivers a synchronous event now to every subscribed endpoint; raises WH001 on any failure, WH002 when nobody subscribes.';
