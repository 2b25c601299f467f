-- Publishing: checks, the tenant of an event, webhook_publish and webhook_publish_many (one
-- event or a set of them, the row events of tracked tables included), the extension's own events.
--
-- Security rule, followed by every function here: a SECURITY DEFINER function takes plain values
-- (text, jsonb, ids), pins search_path = pg_catalog, webhooks, pg_temp and schema-qualifies what
-- it calls, so it evaluates nothing a caller can define (casts, operators, types, pg_temp
-- shadows). Work on a caller's rows and types runs with the caller's rights before it. Functions
-- whose names start with _ are executable by the extension owner alone (security.sql); the API
-- that needs the owner's rights (publish, send_sync, replay, status, tracking, tenancy) enters
-- through src/gate.rs, which records who called before it becomes the owner.

-- Checks shared by _publish and _send_sync; returns the catalogue entry. Limits
-- apply to what is sent: the JSON text of data and actor, not their stored (compressed) size.
CREATE FUNCTION webhooks_internal._check_event(p_type text, p_data jsonb, p_actor jsonb, p_entity_key text, p_sync boolean,
                                               OUT et webhooks.event_types, OUT data_bytes int)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    max_bytes int := coalesce(nullif(pg_catalog.current_setting('webhooks.max_payload', true), '')::int, 262144);
    biggest text;
    biggest_bytes int;
BEGIN
    SELECT * INTO et FROM webhooks.event_types t WHERE t.name = p_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event type "%"', p_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = pg_catalog.format('Register it first: SELECT webhooks.event_type_register(%L, ''description'');', p_type);
    END IF;
    IF pg_catalog.starts_with(p_type, 'webhook.') THEN
        RAISE EXCEPTION 'event type "%" is one of the extension''s operational events: only the extension publishes it', p_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF et.mode = 'sync' AND NOT p_sync THEN
        RAISE EXCEPTION 'event type "%" is synchronous', p_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Deliver it with webhooks.webhook_send_sync(...), which fails the caller on a non-2xx answer.';
    ELSIF et.mode <> 'sync' AND p_sync THEN
        RAISE EXCEPTION 'event type "%" is delivered asynchronously (mode %)', p_type, et.mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use webhooks.webhook_publish(...).';
    END IF;
    IF p_data IS NULL OR pg_catalog.jsonb_typeof(p_data) <> 'object' THEN
        RAISE EXCEPTION 'data must be a JSON object, got %', coalesce(pg_catalog.jsonb_typeof(p_data), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_actor IS NOT NULL AND pg_catalog.jsonb_typeof(p_actor) <> 'object' THEN
        RAISE EXCEPTION 'actor must be a JSON object, got %', pg_catalog.jsonb_typeof(p_actor)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    data_bytes := pg_catalog.octet_length(p_data::text);
    IF data_bytes > max_bytes THEN
        -- Name the field to leave out: for a row event ({"<entity>": row}) that is a column.
        SELECT x.p, x.n INTO biggest, biggest_bytes FROM (
            SELECT t.key AS p, pg_catalog.octet_length(t.value::text) AS n, false AS deep
            FROM pg_catalog.jsonb_each(p_data) t
            UNION ALL
            SELECT t.key || '.' || u.key, pg_catalog.octet_length(u.value::text), true
            FROM pg_catalog.jsonb_each(p_data) t,
                 pg_catalog.jsonb_each(CASE WHEN pg_catalog.jsonb_typeof(t.value) = 'object' THEN t.value ELSE '{}' END) u
        ) x ORDER BY x.deep DESC, x.n DESC LIMIT 1;
        RAISE EXCEPTION 'data is % bytes as sent, over webhooks.max_payload (% bytes)', data_bytes, max_bytes
            USING ERRCODE = 'program_limit_exceeded',
                  DETAIL = pg_catalog.format('Its largest field is %s (%s bytes).', biggest, biggest_bytes),
                  HINT = 'Leave that field out (for a tracked table: track_table(..., exclude_columns => ''{column}'')), or raise webhooks.max_payload.';
    END IF;
    IF p_actor IS NOT NULL AND pg_catalog.octet_length(p_actor::text) > 8192 THEN
        RAISE EXCEPTION 'actor is % bytes as sent, over the 8192-byte limit', pg_catalog.octet_length(p_actor::text)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF pg_catalog.octet_length(p_entity_key) > 512 THEN
        RAISE EXCEPTION 'entity_key is % bytes, over the 512-byte limit', pg_catalog.octet_length(p_entity_key)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    RETURN;
END $$;

-- The tenant an event is published for: the one named, else the session's default; refused
-- unless the session's role may act for it.
CREATE FUNCTION webhooks_internal._event_tenant(p_tenant text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    s text[] := webhooks.tenant_scope();
    t text := p_tenant;
BEGIN
    IF t IS NULL AND pg_catalog.cardinality(s) = 1 AND s[1] <> '' THEN
        t := s[1];
    END IF;
    PERFORM webhooks_internal._check_tenant_id(t);
    IF s IS NOT NULL AND NOT coalesce(t, '') = ANY (s) THEN
        RAISE EXCEPTION 'cannot publish for tenant_id %: role % acts for %',
            coalesce('"' || t || '"', 'NULL (no tenant)'), webhooks_internal._caller()::regrole,
            coalesce(nullif(pg_catalog.array_to_string(s, ', '), ''), 'events without a tenant only')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A platform admin binds roles to tenants with webhooks.tenant_grant(role, tenant_id).';
    END IF;
    RETURN t;
END $$;

CREATE FUNCTION webhooks_internal._publish(
    event_type text,
    data jsonb,
    tenant_id text,
    actor jsonb,
    entity_key text,
    idempotency_key text
) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
-- Generic plans, made once per session: with the call's values as constants the planner folds
-- the filter's envelope into the matching statement, finds that cheaper than a generic plan,
-- and so planned it again on every call: with 1,000 endpoints registered a publish took 160 us
-- instead of 50 us. The statements here read by key or through the endpoints' tenant index.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    p_type text := event_type;
    p_key text := idempotency_key;
    p_tenant text := webhooks_internal._event_tenant(tenant_id);
    et webhooks.event_types;
    new_id text := webhooks_internal._new_event_id();
    src text := webhooks_internal._source();
    got text;
    earlier webhooks.events;
    tries int := 0;
    due_now boolean;
    chk record;
    nbytes int;
BEGIN
    chk := webhooks_internal._check_event(p_type, data, actor, entity_key, false);
    et := chk.et;
    nbytes := chk.data_bytes;
    IF p_key IS NOT NULL AND (p_key = '' OR pg_catalog.octet_length(p_key) > 255) THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 bytes, got %', pg_catalog.octet_length(p_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- With a key, the unique index decides: a concurrent publish of the same key waits for the
    -- first transaction; if that commits, this one gets its event back and creates nothing, if
    -- it rolls back, this one publishes. Within webhooks.ttl only: after it, the key is free.
    -- Without one, a plain insert (no speculative insertion on the hot path).
    IF p_key IS NULL THEN
        INSERT INTO webhooks.events (id, tenant_id, type, version, source, actor, data, entity_key, traceparent, data_bytes)
        VALUES (new_id, p_tenant, p_type, et.version, src,
                actor, data, entity_key, nullif(pg_catalog.current_setting('webhooks.traceparent', true), ''), nbytes);
    END IF;
    WHILE p_key IS NOT NULL LOOP
        INSERT INTO webhooks.events AS e (id, tenant_id, type, version, source, actor, data, entity_key, idempotency_key, traceparent, data_bytes)
        VALUES (new_id, p_tenant, p_type, et.version, src,
                actor, data, entity_key, p_key, nullif(pg_catalog.current_setting('webhooks.traceparent', true), ''), nbytes)
        ON CONFLICT ((coalesce(tenant_id, '')), idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING e.id INTO got;
        EXIT WHEN got IS NOT NULL;
        SELECT * INTO earlier FROM webhooks.events e
        WHERE coalesce(e.tenant_id, '') = coalesce(p_tenant, '') AND e.idempotency_key = p_key;
        IF FOUND AND earlier.occurred_at > pg_catalog.now() - webhooks_internal._ttl() THEN
            RETURN earlier.id;
        END IF;
        UPDATE webhooks.events e SET idempotency_key = NULL WHERE e.id = earlier.id;
        tries := tries + 1;
        IF tries > 3 THEN
            RAISE EXCEPTION 'idempotency_key "%" is being used concurrently; try again', p_key
                USING ERRCODE = 'serialization_failure';
        END IF;
    END LOOP;
    -- An event of an entity goes behind that entity's earlier events: while a fanout waits
    -- (a bulk publish whose deliveries the worker has yet to write), through a fanout too.
    IF _publish.entity_key IS NOT NULL AND EXISTS (SELECT 1 FROM webhooks_internal.fanouts) THEN
        INSERT INTO webhooks_internal.fanouts (event_ids, entity_keys, tenant_id, endpoints, endpoint_tenants, delays, data_bytes)
        SELECT ARRAY[new_id], ARRAY[_publish.entity_key], p_tenant, pg_catalog.array_agg(ep.id ORDER BY ep.id),
               pg_catalog.array_agg(ep.tenant_id ORDER BY ep.id), pg_catalog.array_agg(ep.batch_window ORDER BY ep.id),
               ARRAY[nbytes]
        FROM webhooks.endpoints ep
        WHERE webhooks_internal._subscribes(ep, p_tenant, p_type)
          AND webhooks_internal._filter_passes(ep.filter, ep.filter_weight, ep.id,
                   new_id, p_type, et.version, src, p_tenant, actor, data)
        HAVING pg_catalog.count(*) > 0
        RETURNING true INTO due_now;
    ELSE
        WITH d AS (
            INSERT INTO webhooks.deliveries (event_id, endpoint_id, tenant_id, entity_key, next_attempt_at, endpoint_tenant, data_bytes)
            SELECT new_id, ep.id, p_tenant, _publish.entity_key, pg_catalog.now() + ep.batch_window, ep.tenant_id, nbytes
            FROM webhooks.endpoints ep
            WHERE webhooks_internal._subscribes(ep, p_tenant, p_type)
              -- (an endpoint's filter sees the envelope; one that errors on it matches nothing)
              AND webhooks_internal._filter_passes(ep.filter, ep.filter_weight, ep.id,
                       new_id, p_type, et.version, src, p_tenant, actor, data)
            RETURNING next_attempt_at
        )
        SELECT pg_catalog.bool_or(d.next_attempt_at <= pg_catalog.now()) INTO due_now FROM d;
    END IF;
    -- Wake the worker on commit only for work that is due now (batched endpoints wait anyway).
    IF due_now THEN
        PERFORM webhooks_internal._wake_on_commit();
    END IF;
    RETURN new_id;
END $$;

-- The set form of _publish (webhook_publish_many and the row events of tracked tables): the
-- events of one statement, of one type, in one call. Every check of the single form holds for
-- every element, and a failing element is named; the tenant of each distinct tenant_id is
-- resolved once; endpoints are matched once per tenant; events and deliveries are written by
-- one statement each. Ids are handed out in the order of the arrays (monotonic per backend), so
-- deliveries of one entity keep that order.
CREATE FUNCTION webhooks_internal._publish_many(
    event_type text,
    data jsonb[],
    tenant_ids text[],
    actor jsonb,
    entity_keys text[],
    idempotency_keys text[]
) RETURNS text[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    p_type text := event_type;
    p_actor jsonb := actor;
    n int := coalesce(pg_catalog.cardinality(data), 0);
    max_bytes int := coalesce(nullif(pg_catalog.current_setting('webhooks.max_payload', true), '')::int, 262144);
    src text := webhooks_internal._source();
    trace text := nullif(pg_catalog.current_setting('webhooks.traceparent', true), '');
    et webhooks.event_types;
    ids text[];
    bad bigint;
    arg record;
    tkey text;
    tin text[] := '{}';        -- '=' || tenant_id as given, '' for NULL (no valid tenant is '')
    tout text[] := '{}';       -- the tenant its events are published for
    rt text[];                 -- per element, when tenant_ids is given
    t0 text;                   -- for every element, when it is not
    per_row boolean := tenant_ids IS NOT NULL;
    m_for text[];              -- the endpoints matched: for which tenant's events,
    m_id text[];               -- which endpoint, of which tenant, after which batch window
    m_tenant text[];
    m_delay interval[];
    m_filter jsonpath[];       -- and its filter (NULL: none), with its weight
    m_weight int[];
    direct boolean;
    result text[];
    stale bigint[];            -- elements whose key is held by an event past webhooks.ttl
    due_now boolean;
    sizes int[];
    m text; st text; dt text; h text;
BEGIN
    IF data IS NULL THEN
        RAISE EXCEPTION 'data must be an array of JSON objects, got NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.array_ndims(data) > 1 THEN
        RAISE EXCEPTION 'data must be a one-dimensional array, got % dimensions', pg_catalog.array_ndims(data)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.array_lower(data, 1) <> 1 THEN
        RAISE EXCEPTION 'data must start at index 1, got %', pg_catalog.array_lower(data, 1) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR arg IN SELECT * FROM (VALUES ('tenant_ids', tenant_ids), ('entity_keys', entity_keys),
                                     ('idempotency_keys', idempotency_keys)) a(name, val)
               WHERE a.val IS NOT NULL AND (pg_catalog.cardinality(a.val) <> n OR pg_catalog.array_ndims(a.val) > 1
                                            OR pg_catalog.array_lower(a.val, 1) <> 1)
    LOOP
        RAISE EXCEPTION '% has % elements from index %, data has % from 1: give one per event, or NULL', arg.name,
            pg_catalog.cardinality(arg.val), coalesce(pg_catalog.array_lower(arg.val, 1), 1), n
            USING ERRCODE = 'invalid_parameter_value';
    END LOOP;
    et := (webhooks_internal._check_event(p_type, '{}', p_actor, NULL, false)).et;
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    -- Each element's size as sent, measured once: checked here, recorded with its event.
    sizes := ARRAY(SELECT pg_catalog.octet_length(u.d::text) FROM unnest(data) WITH ORDINALITY u(d, o) ORDER BY u.o);
    -- The first element that fails a check of the single form; that form then raises its error.
    SELECT u.o INTO bad
    FROM unnest(data, entity_keys, idempotency_keys, sizes) WITH ORDINALITY u(d, k, i, b, o)
    WHERE u.d IS NULL OR pg_catalog.jsonb_typeof(u.d) <> 'object'
       OR u.b > max_bytes
       OR pg_catalog.octet_length(u.k) > 512
       OR u.i = '' OR pg_catalog.octet_length(u.i) > 255
    ORDER BY u.o LIMIT 1;
    IF bad IS NOT NULL THEN
        BEGIN
            PERFORM webhooks_internal._check_event(p_type, data[bad], p_actor, entity_keys[bad], false);
            RAISE EXCEPTION 'idempotency_key must be 1 to 255 bytes, got %', pg_catalog.octet_length(idempotency_keys[bad])
                USING ERRCODE = 'invalid_parameter_value';
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, st = RETURNED_SQLSTATE, dt = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
            m := pg_catalog.format('element %s of %s: %s', bad, 'data', m);
            IF h <> '' THEN
                RAISE EXCEPTION USING MESSAGE = m, ERRCODE = st, DETAIL = dt, HINT = h;
            END IF;
            RAISE EXCEPTION USING MESSAGE = m, ERRCODE = st, DETAIL = dt;
        END;
    END IF;
    -- Tenants: each distinct one checked against the caller's scope once.
    IF per_row THEN
        FOR tkey IN SELECT DISTINCT coalesce('=' || x, '') FROM unnest(tenant_ids) x LOOP
            tin := tin || tkey;
            tout := tout || webhooks_internal._event_tenant(CASE WHEN tkey <> '' THEN pg_catalog.substr(tkey, 2) END);
        END LOOP;
        SELECT pg_catalog.array_agg(mt.t ORDER BY u.o) INTO rt
        FROM unnest(tenant_ids) WITH ORDINALITY u(t, o)
        JOIN unnest(tin, tout) mt(k, t) ON mt.k = coalesce('=' || u.t, '');
    ELSE
        t0 := webhooks_internal._event_tenant(NULL);
        tout := ARRAY[t0];
    END IF;
    ids := webhooks_internal._new_event_ids(n);
    -- The endpoints of each tenant, matched once (an index on the endpoint's tenant, then the
    -- filters of those endpoints only).
    SELECT pg_catalog.array_agg(mt.t ORDER BY ep.id), pg_catalog.array_agg(ep.id ORDER BY ep.id),
           pg_catalog.array_agg(ep.tenant_id ORDER BY ep.id), pg_catalog.array_agg(ep.batch_window ORDER BY ep.id),
           pg_catalog.array_agg(ep.filter ORDER BY ep.id), pg_catalog.array_agg(ep.filter_weight ORDER BY ep.id)
    INTO m_for, m_id, m_tenant, m_delay, m_filter, m_weight
    FROM (SELECT DISTINCT x AS t FROM unnest(tout) x) mt
    JOIN webhooks.endpoints ep ON webhooks_internal._subscribes(ep, mt.t, p_type);
    -- A few deliveries are written now, as webhook_publish does; more go to the worker as one
    -- fanouts row per tenant, so that the user's write does not grow with the endpoints. Events
    -- of an entity keep their order: none is written directly while a fanout waits.
    direct := n * coalesce(pg_catalog.cardinality(m_id), 0) <= 100
              AND (entity_keys IS NULL OR NOT EXISTS (SELECT 1 FROM webhooks_internal.fanouts));
    -- The common burst (a tracked table's statement, a backfill): one tenant, no keys, no
    -- filters. Every element becomes an event, so the fanouts are slices of the arrays, whose
    -- ids are already in order: no event is read back, sorted or grouped (a 50,000-event call
    -- took 0.44-0.52 s that way, 0.33 s this way, on 2 cores).
    -- (with no endpoint matched there is no fanout to write: the general form below)
    IF NOT direct AND NOT per_row AND idempotency_keys IS NULL AND m_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM unnest(m_filter) f WHERE f IS NOT NULL) THEN
        INSERT INTO webhooks.events (id, tenant_id, type, version, source, actor, data, entity_key, traceparent, data_bytes)
        SELECT u.id, t0, p_type, et.version, src, p_actor, u.d, u.k, trace, u.b
        FROM unnest(ids, data, entity_keys, sizes) u(id, d, k, b);
        -- (m_id is in endpoint order, as the general form's rows list them)
        INSERT INTO webhooks_internal.fanouts (event_ids, entity_keys, tenant_id, endpoints, endpoint_tenants, delays, data_bytes)
        SELECT ids[s.i:s.i + 999], entity_keys[s.i:s.i + 999], t0, m_id, m_tenant, m_delay, sizes[s.i:s.i + 999]
        FROM pg_catalog.generate_series(1, n, 1000) s(i)
        ORDER BY s.i;
        PERFORM webhooks_internal._wake_on_commit();
        RETURN ids;
    END IF;
    WITH ev AS (
        INSERT INTO webhooks.events AS e (id, tenant_id, type, version, source, actor, data, entity_key, idempotency_key, traceparent, data_bytes)
        SELECT u.id, CASE WHEN per_row THEN u.t ELSE t0 END, p_type, et.version, src, p_actor, u.d, u.k, u.i, trace, u.b
        FROM unnest(ids, data, rt, entity_keys, idempotency_keys, sizes) u(id, d, t, k, i, b)
        ON CONFLICT ((coalesce(tenant_id, '')), idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING e.id, e.tenant_id, e.entity_key, e.data, e.data_bytes
    ), matched AS (
        SELECT * FROM unnest(m_for, m_id, m_tenant, m_delay, m_filter, m_weight) mx(for_tenant, id, tenant_id, batch_window, filter, weight)
    ), fpairs AS (
        -- each event with the filtered endpoints of its tenant whose filter it passes
        SELECT ev.id AS event_id, ev.tenant_id, ev.entity_key, mx.id AS endpoint_id, mx.tenant_id AS endpoint_tenant,
               mx.batch_window, ev.data_bytes
        FROM ev JOIN matched mx ON coalesce(mx.for_tenant, '') = coalesce(ev.tenant_id, '')
        WHERE mx.filter IS NOT NULL
          AND webhooks_internal._filter_passes(mx.filter, mx.weight, mx.id,
                  ev.id, p_type, et.version, src, ev.tenant_id, p_actor, ev.data)
    ), d AS (
        INSERT INTO webhooks.deliveries (event_id, endpoint_id, tenant_id, entity_key, next_attempt_at, endpoint_tenant, data_bytes)
        SELECT pr.event_id, pr.endpoint_id, pr.tenant_id, pr.entity_key, pg_catalog.now() + pr.batch_window, pr.endpoint_tenant,
               pr.data_bytes
        FROM (SELECT ev.id AS event_id, mx.id AS endpoint_id, ev.tenant_id, ev.entity_key, mx.batch_window,
                     mx.tenant_id AS endpoint_tenant, ev.data_bytes
              FROM ev JOIN matched mx ON coalesce(mx.for_tenant, '') = coalesce(ev.tenant_id, '')
              WHERE mx.filter IS NULL
              UNION ALL
              SELECT fp.event_id, fp.endpoint_id, fp.tenant_id, fp.entity_key, fp.batch_window, fp.endpoint_tenant,
                     fp.data_bytes
              FROM fpairs fp) pr
        WHERE direct
        ORDER BY pr.event_id, pr.endpoint_id
        RETURNING next_attempt_at <= pg_catalog.now() AS due
    ), f AS (
        -- One chain of rows per tenant for the endpoints without a filter (the tenant's events,
        -- with the endpoints listed once per row), one per filtered endpoint (the events its
        -- filter let through); at most 1,000 events a row: the worker reads a row whole for
        -- each slice it writes.
        INSERT INTO webhooks_internal.fanouts (event_ids, entity_keys, tenant_id, endpoints, endpoint_tenants, delays, data_bytes)
        SELECT x.event_ids, CASE WHEN entity_keys IS NOT NULL THEN x.entity_keys END, x.tenant_id,
               x.endpoints, x.endpoint_tenants, x.delays, x.sizes
        FROM (SELECT e.tenant_id, e.event_ids, e.entity_keys, e.first, m.endpoints, m.endpoint_tenants, m.delays, e.sizes
              FROM (SELECT c.tenant_id, pg_catalog.array_agg(c.id ORDER BY c.id) AS event_ids,
                           pg_catalog.array_agg(c.entity_key ORDER BY c.id) AS entity_keys, pg_catalog.min(c.id) AS first,
                           pg_catalog.array_agg(c.data_bytes ORDER BY c.id) AS sizes
                    FROM (SELECT ev.id, ev.tenant_id, ev.entity_key, ev.data_bytes,
                                 (pg_catalog.row_number() OVER (PARTITION BY ev.tenant_id ORDER BY ev.id) - 1) / 1000 AS chunk
                          FROM ev WHERE NOT direct) c
                    GROUP BY c.tenant_id, c.chunk) e
              JOIN (SELECT mx.for_tenant, pg_catalog.array_agg(mx.id ORDER BY mx.id) AS endpoints,
                           pg_catalog.array_agg(mx.tenant_id ORDER BY mx.id) AS endpoint_tenants,
                           pg_catalog.array_agg(mx.batch_window ORDER BY mx.id) AS delays
                    FROM matched mx WHERE mx.filter IS NULL GROUP BY mx.for_tenant) m
                ON coalesce(m.for_tenant, '') = coalesce(e.tenant_id, '')
              UNION ALL
              SELECT c.tenant_id, pg_catalog.array_agg(c.event_id ORDER BY c.event_id),
                     pg_catalog.array_agg(c.entity_key ORDER BY c.event_id), pg_catalog.min(c.event_id),
                     ARRAY[c.endpoint_id], ARRAY[c.endpoint_tenant], ARRAY[c.batch_window],
                     pg_catalog.array_agg(c.data_bytes ORDER BY c.event_id)
              FROM (SELECT fp.*, (pg_catalog.row_number() OVER (PARTITION BY fp.endpoint_id ORDER BY fp.event_id) - 1) / 1000 AS chunk
                    FROM fpairs fp WHERE NOT direct) c
              GROUP BY c.tenant_id, c.endpoint_id, c.endpoint_tenant, c.batch_window, c.chunk) x
        ORDER BY x.first
        RETURNING true AS due
    )
    SELECT pg_catalog.bool_or(x.due) INTO due_now FROM (SELECT due FROM d UNION ALL SELECT due FROM f) x;
    -- Wake the worker on commit for work due now, and for fanouts (it writes their deliveries).
    IF due_now THEN
        PERFORM webhooks_internal._wake_on_commit();
    END IF;
    IF idempotency_keys IS NULL THEN
        RETURN ids;
    END IF;
    -- Elements whose key was taken (earlier, or by an element before them): within
    -- webhooks.ttl the earlier event is the answer; after it, the key is free again and the
    -- single form publishes the element anew.
    SELECT pg_catalog.array_agg(coalesce(mine.id, earlier.id) ORDER BY u.o),
           pg_catalog.array_agg(u.o) FILTER (WHERE mine.id IS NULL
                                            AND (earlier.id IS NULL  -- (pruned since the insert saw it)
                                                 OR earlier.occurred_at <= pg_catalog.now() - webhooks_internal._ttl()))
    INTO result, stale
    FROM unnest(ids, rt, idempotency_keys) WITH ORDINALITY u(id, t, i, o)
    LEFT JOIN webhooks.events mine ON mine.id = u.id
    LEFT JOIN webhooks.events earlier
      ON u.i IS NOT NULL AND mine.id IS NULL AND earlier.idempotency_key = u.i
     AND coalesce(earlier.tenant_id, '') = coalesce(CASE WHEN per_row THEN u.t ELSE t0 END, '');
    FOR bad IN SELECT x FROM unnest(stale) x LOOP
        result[bad] := webhooks_internal._publish(p_type, data[bad],
            CASE WHEN per_row THEN tenant_ids[bad] END, p_actor, entity_keys[bad], idempotency_keys[bad]);
    END LOOP;
    RETURN result;
END $$;

-- The extension's own events (category webhook): an endpoint disabled or recovered, a delivery
-- dead. Delivered like any event to the endpoints that name them, except the endpoint they are
-- about (a failing receiver would feed on its own failures), and sent as NOTIFY on channel
-- "webhooks" for applications that LISTEN. Published in the transaction that made the change.
-- p_tenant is the tenant of the endpoint they are about: an event about a platform endpoint
-- ('*') is the platform's (tenant_id '*', seen by platform roles, sent to '*' endpoints only),
-- never the tenant whose event it was, who must not learn a platform endpoint's errors.
CREATE FUNCTION webhooks_internal._publish_operational(p_type text, p_data jsonb, p_about text, p_tenant text)
RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    new_id text := webhooks_internal._new_event_id();
    tenant text := p_tenant;
    size int := pg_catalog.octet_length(p_data::text);
    n int;
BEGIN
    INSERT INTO webhooks.events (id, tenant_id, type, version, source, data, data_bytes)
    VALUES (new_id, tenant, p_type, '1',
            webhooks_internal._source(), p_data, size);
    -- Endpoints without a filter get their deliveries now; those with one, through a fanout
    -- whose filters the worker's expansion evaluates: this runs in the statement that records
    -- every tenant's outcomes, where no tenant's filter may be evaluated.
    WITH matched AS (
        SELECT ep.id, ep.tenant_id, ep.batch_window, ep.filter IS NOT NULL AS filtered
        FROM webhooks.endpoints ep
        WHERE webhooks_internal._subscribes(ep, tenant, p_type) AND ep.id IS DISTINCT FROM p_about
    ), d AS (
        INSERT INTO webhooks.deliveries (event_id, endpoint_id, tenant_id, next_attempt_at, endpoint_tenant, data_bytes)
        SELECT new_id, m.id, tenant, pg_catalog.now() + m.batch_window, m.tenant_id, size
        FROM matched m WHERE NOT m.filtered
        RETURNING 1
    ), f AS (
        INSERT INTO webhooks_internal.fanouts (event_ids, tenant_id, endpoints, endpoint_tenants, delays, data_bytes, filtered)
        SELECT ARRAY[new_id], tenant, pg_catalog.array_agg(m.id ORDER BY m.id), pg_catalog.array_agg(m.tenant_id ORDER BY m.id),
               pg_catalog.array_agg(m.batch_window ORDER BY m.id), ARRAY[size], true
        FROM matched m WHERE m.filtered
        HAVING pg_catalog.count(*) > 0
        RETURNING 1
    )
    SELECT (SELECT pg_catalog.count(*) FROM d) + (SELECT pg_catalog.count(*) FROM f) INTO n;
    IF n > 0 THEN
        PERFORM webhooks_internal._wake_on_commit();
    END IF;
    -- Any role may LISTEN: the notification carries only the event's id and type, and a
    -- listener reads the event itself through row-level security.
    PERFORM pg_catalog.pg_notify('webhooks',
        pg_catalog.jsonb_build_object('id', new_id, 'type', p_type)::text);
    RETURN new_id;
END $$;

