-- The SQL API of the webhooks extension (loaded after the Rust functions exist).

-- The session's tenant, or NULL when the session sees every tenant.
CREATE FUNCTION webhooks.current_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('webhooks.tenant_id', true), '') $$;

CREATE FUNCTION webhooks._raise(code text, message text, detail text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message, DETAIL = detail;
END $$;

-- Checks shared by webhook_publish and webhook_send_sync; returns the catalogue entry.
CREATE FUNCTION webhooks._check_event(p_type text, p_data jsonb, p_tenant text, p_actor jsonb, p_sync boolean)
RETURNS webhooks.event_types
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    et webhooks.event_types;
    session_tenant text := webhooks.current_tenant();
    max_bytes int := coalesce(nullif(current_setting('webhooks.max_payload', true), '')::int, 262144);
BEGIN
    SELECT * INTO et FROM webhooks.event_types WHERE name = p_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown event type "%"', p_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Register it first: SELECT webhooks.event_type_register(%L, ''description'');', p_type);
    END IF;
    IF et.mode = 'sync' AND NOT p_sync THEN
        RAISE EXCEPTION 'event type "%" is synchronous', p_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Deliver it with webhooks.webhook_send_sync(...), which fails the caller on a non-2xx answer.';
    ELSIF et.mode <> 'sync' AND p_sync THEN
        RAISE EXCEPTION 'event type "%" is delivered asynchronously (mode %)', p_type, et.mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use webhooks.webhook_publish(...).';
    END IF;
    IF p_data IS NULL OR jsonb_typeof(p_data) <> 'object' THEN
        RAISE EXCEPTION 'data must be a JSON object, got %', coalesce(jsonb_typeof(p_data), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_actor IS NOT NULL AND jsonb_typeof(p_actor) <> 'object' THEN
        RAISE EXCEPTION 'actor must be a JSON object, got %', jsonb_typeof(p_actor)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_column_size(p_data) > max_bytes AND octet_length(p_data::text) > max_bytes THEN
        RAISE EXCEPTION 'data is % bytes, over webhooks.max_payload (% bytes)', octet_length(p_data::text), max_bytes
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF session_tenant IS NOT NULL AND p_tenant IS DISTINCT FROM session_tenant THEN
        RAISE EXCEPTION 'tenant_id "%" does not match this session''s webhooks.tenant_id "%"', p_tenant, session_tenant
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN et;
END $$;

CREATE FUNCTION webhooks.webhook_publish(
    event_type text,
    data jsonb,
    tenant_id text DEFAULT NULL,
    actor jsonb DEFAULT NULL,
    entity_key text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks
AS $$
DECLARE
    p_type text := event_type;
    p_tenant text := coalesce(tenant_id, webhooks.current_tenant());
    et webhooks.event_types;
    new_id text := webhooks._new_event_id();
    due_now boolean;
BEGIN
    et := webhooks._check_event(p_type, data, p_tenant, actor, false);
    INSERT INTO webhooks.events (id, tenant_id, type, version, source, actor, data, entity_key)
    VALUES (new_id, p_tenant, p_type, et.version,
            coalesce(nullif(current_setting('webhooks.source', true), ''), 'urn:webhooks'),
            actor, data, entity_key);
    WITH d AS (
        INSERT INTO webhooks.deliveries (event_id, endpoint_id, tenant_id, entity_key, next_attempt_at)
        SELECT new_id, ep.id, p_tenant, webhook_publish.entity_key, now() + ep.batch_window
        FROM webhooks.endpoints ep
        WHERE ep.enabled
          AND (ep.tenant_id IS NULL OR ep.tenant_id = p_tenant)
          AND webhooks._matches(ep.event_types, p_type)
        RETURNING next_attempt_at
    )
    SELECT bool_or(d.next_attempt_at <= now()) INTO due_now FROM d;
    -- Wake the worker on commit only for work that is due now (batched endpoints wait anyway).
    IF due_now THEN
        PERFORM webhooks._wake_on_commit();
    END IF;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION webhooks.webhook_publish(text, jsonb, text, jsonb, text) IS
    'Records an event and one pending delivery per matching enabled endpoint, in the caller''s transaction.';

-- Used by webhook_send_sync (Rust, SECURITY DEFINER): records the event and in-flight deliveries.
CREATE FUNCTION webhooks._sync_prepare(p_type text, p_data jsonb, p_tenant text, p_actor jsonb)
RETURNS TABLE (delivery_id bigint, event_id text, version text, source text, tenant_id text, actor text,
               occurred_us bigint, data text, endpoint_id text, url text, secret text,
               previous_secret text, headers text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    tenant text := coalesce(p_tenant, webhooks.current_tenant());
    et webhooks.event_types;
    new_id text := webhooks._new_event_id();
    ev webhooks.events;
BEGIN
    et := webhooks._check_event(p_type, p_data, tenant, p_actor, true);
    INSERT INTO webhooks.events AS e (id, tenant_id, type, version, source, actor, data)
    VALUES (new_id, tenant, p_type, et.version,
            coalesce(nullif(current_setting('webhooks.source', true), ''), 'urn:webhooks'), p_actor, p_data)
    RETURNING * INTO ev;
    RETURN QUERY
    WITH d AS (
        INSERT INTO webhooks.deliveries AS dd (event_id, endpoint_id, tenant_id, sync, status, next_attempt_at, lease_until)
        SELECT new_id, ep.id, tenant, true, 'in_flight', NULL, now() + interval '1 hour'
        FROM webhooks.endpoints ep
        WHERE ep.enabled AND (ep.tenant_id IS NULL OR ep.tenant_id = tenant)
          AND webhooks._matches(ep.event_types, p_type)
        RETURNING dd.id, dd.endpoint_id
    )
    SELECT d.id, ev.id, ev.version, ev.source, ev.tenant_id, ev.actor::text,
           (extract(epoch FROM ev.occurred_at) * 1000000)::int8, ev.data::text,
           ep.id, ep.url, ep.secret,
           CASE WHEN ep.previous_secret_expires_at > now() THEN ep.previous_secret END,
           ep.headers::text
    FROM d JOIN webhooks.endpoints ep ON ep.id = d.endpoint_id
    ORDER BY ep.id;
END $$;

CREATE FUNCTION webhooks._sync_record(answers jsonb) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    WITH r AS (
        SELECT * FROM jsonb_to_recordset(answers)
            AS r(delivery_id bigint, status int, error text, raw_body text, started_us bigint, duration_ms float8)
    ), upd AS (
        UPDATE webhooks.deliveries d
        SET status = CASE WHEN r.error IS NULL THEN 'succeeded' ELSE 'dead' END,
            attempts = 1, lease_until = NULL, last_status = r.status, last_error = r.error, completed_at = now()
        FROM r WHERE d.id = r.delivery_id AND d.sync AND d.status = 'in_flight'
        RETURNING d.id
    )
    INSERT INTO webhooks.attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, response_body)
    SELECT r.delivery_id, 1, to_timestamp(r.started_us / 1000000.0), r.duration_ms, r.status, r.error, r.raw_body
    FROM r JOIN upd ON upd.id = r.delivery_id
$$;

-- Synchronous events: delivered now from the calling session; any non-2xx or timeout fails the
-- caller (SQLSTATE WH001), as challenge delivery and action.verify require. The attempts are
-- recorded, and roll back with the caller's transaction when it fails.
CREATE FUNCTION webhooks.webhook_send_sync(
    event_type text,
    data jsonb,
    tenant_id text DEFAULT NULL,
    actor jsonb DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks
AS $$
DECLARE
    targets jsonb;
    answers jsonb;
    failures text;
BEGIN
    SELECT jsonb_agg(to_jsonb(t)) INTO targets
    FROM webhooks._sync_prepare(event_type, data, tenant_id, actor) t;
    IF targets IS NULL THEN
        RAISE EXCEPTION 'no enabled endpoint subscribes to synchronous event type "%"', event_type
            USING ERRCODE = 'WH002', HINT = format('Create one: SELECT webhooks.endpoint_create(url, ARRAY[%L]);', event_type);
    END IF;
    answers := webhooks._sync_send(event_type, targets);
    PERFORM webhooks._sync_record(answers);
    SELECT string_agg(format('endpoint %s (%s): %s', a->>'endpoint_id', a->>'url', a->>'error'), '; ')
    INTO failures FROM jsonb_array_elements(answers) a WHERE a->>'error' IS NOT NULL;
    IF failures IS NOT NULL THEN
        RAISE EXCEPTION 'synchronous webhook % failed: %', event_type, failures
            USING ERRCODE = 'WH001', DETAIL = 'event ' || (targets -> 0 ->> 'event_id');
    END IF;
    RETURN jsonb_build_object(
        'event_id', targets -> 0 ->> 'event_id',
        'responses', (SELECT jsonb_agg(jsonb_build_object('endpoint_id', a->'endpoint_id', 'status', a->'status',
                                                          'body', a->'body', 'duration_ms', a->'duration_ms'))
                      FROM jsonb_array_elements(answers) a));
END $$;

-- Cascades -----------------------------------------------------------------------------------

-- Deleting endpoints, events or deliveries removes what hangs off them, once per statement.
-- They run as the owner: an admin deleting an endpoint needs no DELETE right on deliveries.
CREATE FUNCTION webhooks._cascade_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks
AS $$
BEGIN
    IF TG_TABLE_NAME = 'endpoints' THEN
        DELETE FROM webhooks.deliveries d USING old_rows o WHERE d.endpoint_id = o.id;
    ELSIF TG_TABLE_NAME = 'events' THEN
        DELETE FROM webhooks.deliveries d USING old_rows o WHERE d.event_id = o.id;
    ELSE
        DELETE FROM webhooks.attempts a USING old_rows o WHERE a.delivery_id = o.id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER endpoints_cascade AFTER DELETE ON webhooks.endpoints
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION webhooks._cascade_delete();
CREATE TRIGGER events_cascade AFTER DELETE ON webhooks.events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION webhooks._cascade_delete();
CREATE TRIGGER deliveries_cascade AFTER DELETE ON webhooks.deliveries
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION webhooks._cascade_delete();

-- Endpoints ----------------------------------------------------------------------------------

-- Fills ids and secrets and validates every write, whether it comes through the functions
-- below or a plain INSERT/UPDATE.
CREATE FUNCTION webhooks._endpoint_before_write() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    session_tenant text := webhooks.current_tenant();
    unknown text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.id := coalesce(NEW.id, webhooks._new_endpoint_id());
        NEW.secret := coalesce(NEW.secret, webhooks._new_secret());
        NEW.tenant_id := coalesce(NEW.tenant_id, session_tenant);
        NEW.created_at := now();
    END IF;
    IF session_tenant IS NOT NULL AND NEW.tenant_id IS DISTINCT FROM session_tenant THEN
        RAISE EXCEPTION 'endpoint tenant_id "%" does not match this session''s webhooks.tenant_id "%"',
            NEW.tenant_id, session_tenant USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.url IS NULL THEN
        RAISE EXCEPTION 'url must not be NULL' USING ERRCODE = 'not_null_violation';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.url IS DISTINCT FROM OLD.url THEN
        PERFORM webhooks._check_url(NEW.url);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.event_types IS DISTINCT FROM OLD.event_types THEN
        PERFORM webhooks._check_filters(NEW.event_types);
        SELECT f INTO unknown FROM unnest(NEW.event_types) f
        WHERE f <> '*' AND f NOT LIKE '%.*'
          AND NOT EXISTS (SELECT 1 FROM webhooks.event_types t WHERE t.name = f)
        LIMIT 1;
        IF unknown IS NOT NULL THEN
            RAISE EXCEPTION 'event_types names unknown event type "%"', unknown
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'See webhooks.event_types, or register it with webhooks.event_type_register().';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.headers IS DISTINCT FROM OLD.headers THEN
        PERFORM webhooks._check_headers(coalesce(NEW.headers, '{}'));
    END IF;
    IF TG_OP = 'INSERT' OR NEW.secret IS DISTINCT FROM OLD.secret THEN
        PERFORM webhooks._check_secret(NEW.secret);
    END IF;
    NEW.headers := coalesce(NEW.headers, '{}');
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER endpoints_before_write BEFORE INSERT OR UPDATE ON webhooks.endpoints
    FOR EACH ROW EXECUTE FUNCTION webhooks._endpoint_before_write();

CREATE FUNCTION webhooks._endpoint_or_error(p_id text) RETURNS webhooks.endpoints
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    ep webhooks.endpoints;
BEGIN
    SELECT * INTO ep FROM webhooks.endpoints WHERE id = p_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" not found', p_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN ep;
END $$;

CREATE FUNCTION webhooks.endpoint_create(
    url text,
    event_types text[] DEFAULT '{*}',
    tenant_id text DEFAULT NULL,
    description text DEFAULT NULL
) RETURNS webhooks.endpoints
LANGUAGE sql VOLATILE
AS $$
    INSERT INTO webhooks.endpoints (url, event_types, tenant_id, description)
    VALUES (url, event_types, tenant_id, description)
    RETURNING *
$$;

CREATE FUNCTION webhooks.endpoint_update(
    id text,
    url text DEFAULT NULL,
    event_types text[] DEFAULT NULL,
    description text DEFAULT NULL,
    headers jsonb DEFAULT NULL,
    ordered boolean DEFAULT NULL,
    batch_max int DEFAULT NULL,
    batch_window interval DEFAULT NULL
) RETURNS webhooks.endpoints
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ep webhooks.endpoints := webhooks._endpoint_or_error(id);
BEGIN
    UPDATE webhooks.endpoints e
    SET url = coalesce(endpoint_update.url, e.url),
        event_types = coalesce(endpoint_update.event_types, e.event_types),
        description = coalesce(endpoint_update.description, e.description),
        headers = coalesce(endpoint_update.headers, e.headers),
        ordered = coalesce(endpoint_update.ordered, e.ordered),
        batch_max = coalesce(endpoint_update.batch_max, e.batch_max),
        batch_window = coalesce(endpoint_update.batch_window, e.batch_window)
    WHERE e.id = ep.id
    RETURNING * INTO ep;
    RETURN ep;
END $$;

CREATE FUNCTION webhooks.endpoint_delete(id text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    DELETE FROM webhooks.endpoints e WHERE e.id = endpoint_delete.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" not found', id USING ERRCODE = 'no_data_found';
    END IF;
END $$;

-- While an endpoint is disabled its pending deliveries wait (due at infinity), off the due index's head.
CREATE FUNCTION webhooks.endpoint_disable(id text, reason text DEFAULT NULL) RETURNS webhooks.endpoints
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ep webhooks.endpoints := webhooks._endpoint_or_error(id);
BEGIN
    UPDATE webhooks.endpoints e SET enabled = false, disabled_reason = coalesce(reason, 'disabled by ' || current_user)
    WHERE e.id = ep.id RETURNING * INTO ep;
    UPDATE webhooks.deliveries d SET next_attempt_at = 'infinity'
    WHERE d.endpoint_id = ep.id AND d.status = 'pending';
    RETURN ep;
END $$;

CREATE FUNCTION webhooks.endpoint_enable(id text) RETURNS webhooks.endpoints
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ep webhooks.endpoints := webhooks._endpoint_or_error(id);
BEGIN
    UPDATE webhooks.endpoints e SET enabled = true, disabled_reason = NULL
    WHERE e.id = ep.id RETURNING * INTO ep;
    UPDATE webhooks.deliveries d SET next_attempt_at = now()
    WHERE d.endpoint_id = ep.id AND d.status = 'pending' AND d.next_attempt_at = 'infinity';
    IF FOUND THEN
        PERFORM webhooks._wake_on_commit();
    END IF;
    RETURN ep;
END $$;

-- A new secret; until the grace period ends requests carry a signature for both.
CREATE FUNCTION webhooks.endpoint_rotate_secret(id text, grace interval DEFAULT '24 hours') RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ep webhooks.endpoints := webhooks._endpoint_or_error(id);
    fresh text := webhooks._new_secret();
BEGIN
    IF grace < interval '0' THEN
        RAISE EXCEPTION 'grace must not be negative, got %', grace USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE webhooks.endpoints e
    SET previous_secret = e.secret, previous_secret_expires_at = now() + grace, secret = fresh
    WHERE e.id = ep.id;
    RETURN fresh;
END $$;

-- Catalogue ----------------------------------------------------------------------------------

CREATE FUNCTION webhooks.event_type_register(
    name text,
    description text DEFAULT '',
    mode text DEFAULT 'async',
    version text DEFAULT '1'
) RETURNS webhooks.event_types
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    et webhooks.event_types;
BEGIN
    PERFORM webhooks._check_event_type_name(name);
    IF mode NOT IN ('async', 'sync', 'batched') THEN
        RAISE EXCEPTION 'mode must be async, sync or batched, got "%"', mode USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO webhooks.event_types AS t (name, category, description, mode, version)
    VALUES (name, split_part(name, '.', 1), coalesce(description, ''), mode, coalesce(version, '1'))
    ON CONFLICT ON CONSTRAINT event_types_pkey DO UPDATE
        SET description = EXCLUDED.description, mode = EXCLUDED.mode, version = EXCLUDED.version
    RETURNING * INTO et;
    RETURN et;
END $$;

-- Operating from psql --------------------------------------------------------------------------

CREATE FUNCTION webhooks.delivery_retry(delivery_id bigint) RETURNS webhooks.deliveries
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    d webhooks.deliveries;
BEGIN
    SELECT * INTO d FROM webhooks.deliveries x WHERE x.id = delivery_id FOR UPDATE;
    IF NOT FOUND THEN
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
    PERFORM webhooks._wake_on_commit();
    RETURN d;
END $$;

CREATE FUNCTION webhooks.event_replay(event_id text, endpoint_id text DEFAULT NULL)
RETURNS SETOF webhooks.deliveries
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ev webhooks.events;
BEGIN
    SELECT * INTO ev FROM webhooks.events e WHERE e.id = event_replay.event_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event "%" not found', event_id USING ERRCODE = 'no_data_found';
    END IF;
    IF endpoint_id IS NOT NULL THEN
        PERFORM webhooks._endpoint_or_error(endpoint_id);
    END IF;
    RETURN QUERY
    INSERT INTO webhooks.deliveries (event_id, endpoint_id, tenant_id, entity_key)
    SELECT ev.id, ep.id, ev.tenant_id, ev.entity_key
    FROM webhooks.endpoints ep
    WHERE ep.enabled
      AND CASE WHEN event_replay.endpoint_id IS NULL
               THEN (ep.tenant_id IS NULL OR ep.tenant_id = ev.tenant_id) AND webhooks._matches(ep.event_types, ev.type)
               ELSE ep.id = event_replay.endpoint_id END
    RETURNING *;
    IF FOUND THEN
        PERFORM webhooks._wake_on_commit();
    ELSIF endpoint_id IS NOT NULL THEN
        RAISE EXCEPTION 'endpoint "%" is disabled', endpoint_id USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

CREATE VIEW webhooks.dead_letters WITH (security_invoker = true) AS
SELECT d.id AS delivery_id, d.event_id, e.type AS event_type, d.endpoint_id, ep.url, d.tenant_id,
       d.attempts, d.last_status, d.last_error, e.occurred_at, d.completed_at AS died_at, e.data
FROM webhooks.deliveries d
JOIN webhooks.events e ON e.id = d.event_id
JOIN webhooks.endpoints ep ON ep.id = d.endpoint_id
WHERE d.status = 'dead';

CREATE VIEW webhooks.endpoint_health WITH (security_invoker = true) AS
SELECT ep.id AS endpoint_id, ep.url, ep.tenant_id, ep.enabled,
       coalesce(c.pending, 0) AS pending, coalesce(c.in_flight, 0) AS in_flight,
       coalesce(c.succeeded, 0) AS succeeded, coalesce(c.dead, 0) AS dead,
       c.last_success, le.error AS last_error, le.started_at AS last_error_at,
       lat.p50_ms, lat.p99_ms
FROM webhooks.endpoints ep
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'in_flight') AS in_flight,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'dead') AS dead,
           max(completed_at) FILTER (WHERE status = 'succeeded') AS last_success
    FROM webhooks.deliveries d WHERE d.endpoint_id = ep.id
) c ON true
LEFT JOIN LATERAL (
    SELECT coalesce(a.error, 'HTTP ' || a.status_code) AS error, a.started_at
    FROM webhooks.attempts a JOIN webhooks.deliveries d ON d.id = a.delivery_id
    WHERE d.endpoint_id = ep.id AND (a.error IS NOT NULL OR a.status_code NOT BETWEEN 200 AND 299)
    ORDER BY a.started_at DESC LIMIT 1
) le ON true
LEFT JOIN LATERAL (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) AS p50_ms,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY a.duration_ms) AS p99_ms
    FROM webhooks.attempts a JOIN webhooks.deliveries d ON d.id = a.delivery_id
    WHERE d.endpoint_id = ep.id AND a.started_at > now() - interval '24 hours'
) lat ON true;

CREATE FUNCTION webhooks.status()
RETURNS TABLE (preloaded boolean, worker_pid int, worker_running boolean, last_loop timestamptz,
               database text, pending bigint, due bigint, in_flight bigint, dead bigint,
               oldest_due timestamptz)
LANGUAGE sql VOLATILE
AS $$
    SELECT w.preloaded, w.pid,
           EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.pid AND a.backend_type LIKE '%webhooks%'),
           to_timestamp(w.last_loop_us / 1000000.0),
           current_setting('webhooks.database', true),
           (SELECT count(*) FROM webhooks.deliveries WHERE status = 'pending'),
           (SELECT count(*) FROM webhooks.deliveries WHERE status = 'pending' AND next_attempt_at <= now()),
           (SELECT count(*) FROM webhooks.deliveries WHERE status = 'in_flight'),
           (SELECT count(*) FROM webhooks.deliveries WHERE status = 'dead'),
           (SELECT min(next_attempt_at) FROM webhooks.deliveries WHERE status = 'pending' AND next_attempt_at <= now())
    FROM webhooks._worker_state() w
$$;

-- Row events ---------------------------------------------------------------------------------

-- Trigger arguments: entity, excluded columns, tenant column ('' for none), key columns.
CREATE FUNCTION webhooks.emit_row_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks
AS $$
DECLARE
    entity text := TG_ARGV[0];
    excluded text[] := TG_ARGV[1]::text[];
    tenant_col text := nullif(TG_ARGV[2], '');
    key_cols text[] := TG_ARGV[3]::text[];
    row_j jsonb;
    old_j jsonb;
    changed text[];
    payload jsonb;
    key text;
    actor jsonb := nullif(current_setting('webhooks.actor', true), '')::jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_j := to_jsonb(OLD);
    ELSE
        row_j := to_jsonb(NEW);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        old_j := to_jsonb(OLD);
        SELECT array_agg(k ORDER BY k) INTO changed
        FROM jsonb_object_keys(row_j) k
        WHERE row_j -> k IS DISTINCT FROM old_j -> k AND k <> ALL (excluded);
        IF changed IS NULL THEN
            RETURN NULL;  -- only excluded columns changed: nothing leaves the database
        END IF;
        payload := jsonb_build_object(entity, row_j - excluded, 'changed', to_jsonb(changed),
                                      'previous', (SELECT jsonb_object_agg(c, old_j -> c) FROM unnest(changed) c));
    ELSE
        payload := jsonb_build_object(entity, row_j - excluded);
    END IF;
    IF array_length(key_cols, 1) > 0 THEN
        key := entity || ':' || (SELECT string_agg(row_j ->> c, ':' ORDER BY o) FROM unnest(key_cols) WITH ORDINALITY u(c, o));
    END IF;
    PERFORM webhooks.webhook_publish(
        entity || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END,
        payload,
        CASE WHEN tenant_col IS NOT NULL THEN row_j ->> tenant_col END,
        actor,
        key);
    RETURN NULL;
END $$;

CREATE FUNCTION webhooks.track_table(
    tbl regclass,
    entity text,
    exclude_columns text[] DEFAULT '{}',
    tenant_column text DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks
AS $$
DECLARE
    missing text;
    key_cols text[];
    risky text[];
    op text;
BEGIN
    IF NOT pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = tbl), 'USAGE') THEN
        RAISE EXCEPTION 'only the owner of % can track it', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM webhooks._check_event_type_name(entity);
    FOREACH op IN ARRAY ARRAY['created', 'updated', 'deleted'] LOOP
        IF NOT EXISTS (SELECT 1 FROM webhooks.event_types WHERE name = entity || '.' || op) THEN
            RAISE EXCEPTION 'event type "%.%" is not in the catalogue', entity, op
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Register it: SELECT webhooks.event_type_register(%L);', entity || '.' || op);
        END IF;
    END LOOP;
    SELECT c INTO missing FROM unnest(exclude_columns || tenant_column) c
    WHERE c IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped)
    LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'column "%" does not exist in %', missing, tbl USING ERRCODE = 'undefined_column';
    END IF;
    SELECT array_agg(a.attname::text ORDER BY k.o) INTO key_cols
    FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, o), pg_attribute a
    WHERE i.indrelid = tbl AND i.indisprimary AND a.attrelid = tbl AND a.attnum = k.attnum;
    SELECT array_agg(a.attname::text) INTO risky FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attname ~* '(password|passwd|secret|totp|otp_seed|recovery|hash|token|private_key)'
      AND a.attname::text <> ALL (exclude_columns);
    IF risky IS NOT NULL THEN
        RAISE WARNING 'columns % of % look secret and will be sent in webhooks', risky, tbl
            USING HINT = 'Pass them in exclude_columns to keep them in the database.';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS webhooks_row_event ON %s', tbl);
    EXECUTE format(
        'CREATE TRIGGER webhooks_row_event AFTER INSERT OR UPDATE OR DELETE ON %s '
        'FOR EACH ROW EXECUTE FUNCTION webhooks.emit_row_event(%L, %L, %L, %L)',
        tbl, entity, exclude_columns::text, coalesce(tenant_column, ''), coalesce(key_cols, '{}')::text);
    RETURN format('%s publishes %s.created, %s.updated and %s.deleted', tbl, entity, entity, entity);
END $$;

CREATE FUNCTION webhooks.untrack_table(tbl regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks
AS $$
BEGIN
    IF NOT pg_has_role(session_user, (SELECT relowner FROM pg_class WHERE oid = tbl), 'USAGE') THEN
        RAISE EXCEPTION 'only the owner of % can untrack it', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS webhooks_row_event ON %s', tbl);
END $$;


-- The worker's statements ----------------------------------------------------------------------

-- plpgsql rather than SQL: the worker calls these on every wake-up, and plpgsql keeps their
-- plans for the session where an SQL function would be parsed and planned on each call.
--
-- Claims up to `batch` due deliveries (and, when asked, ones whose lease expired) for this
-- transaction: SKIP LOCKED so publishers, admins and a second claimer never wait on each other.
-- Ordered endpoints release one delivery per entity at a time. Two simple steps (ids from an
-- ordered, limited walk of the due index, then an update by primary key) so that no
-- statistics, stale after a burst, can lead the planner into a join that grows with the table;
-- the timeout turns any plan that still does into a logged, retried error instead of a hang.
CREATE FUNCTION webhooks._claim(batch int, lease interval, scan_leases boolean)
RETURNS TABLE (delivery_id bigint, attempts int, event_id text, event_type text, version text, source text,
               occurred_us bigint, tenant_id text, actor text, data text, endpoint_id text, url text,
               secret text, previous_secret text, headers text, batch_max int)
LANGUAGE plpgsql VOLATILE
-- A generic plan cannot see the batch size (LIMIT $1) and stops walking the due index once
-- millions of rows wait; a custom plan per call keeps the claim O(batch).
SET plan_cache_mode = force_custom_plan
SET statement_timeout = '60s'
AS $$
#variable_conflict use_column
DECLARE
    ids bigint[];
    stale bigint[];
BEGIN
    SELECT array_agg(s.id) INTO ids FROM (
        SELECT d.id
        FROM webhooks.deliveries d
        JOIN webhooks.endpoints ep ON ep.id = d.endpoint_id
        WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND ep.enabled
          AND (NOT ep.ordered OR d.entity_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM webhooks.deliveries p
                WHERE p.endpoint_id = d.endpoint_id AND p.entity_key = d.entity_key
                  AND p.status IN ('pending', 'in_flight') AND p.id < d.id))
        ORDER BY d.next_attempt_at
        LIMIT batch
        FOR UPDATE OF d SKIP LOCKED
    ) s;
    IF scan_leases THEN
        SELECT array_agg(s.id) INTO stale FROM (
            SELECT d.id FROM webhooks.deliveries d
            WHERE d.status = 'in_flight' AND NOT d.sync AND d.lease_until < now()
            ORDER BY d.lease_until
            LIMIT batch
            FOR UPDATE SKIP LOCKED
        ) s;
        ids := coalesce(ids, '{}') || coalesce(stale, '{}');
    END IF;
    IF ids IS NULL OR cardinality(ids) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE webhooks.deliveries d
    SET status = 'in_flight', lease_until = now() + lease, next_attempt_at = NULL
    FROM webhooks.events e, webhooks.endpoints ep
    WHERE d.id = ANY (ids) AND e.id = d.event_id AND ep.id = d.endpoint_id
    RETURNING d.id, d.attempts, e.id, e.type, e.version, e.source,
              (extract(epoch FROM e.occurred_at) * 1000000)::int8, e.tenant_id,
              e.actor::text, e.data::text, ep.id, ep.url, ep.secret,
              CASE WHEN ep.previous_secret_expires_at > now() THEN ep.previous_secret END,
              ep.headers::text, ep.batch_max;
END $$;

-- Records a batch of outcomes in one statement: the delivery's new state and one attempt row each.
CREATE FUNCTION webhooks._record(ids int8[], statuses text[], attempt_nos int4[], codes int4[], errors text[],
                                 retry_in_us int8[], started_us int8[], durations float8[], bodies text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET statement_timeout = '60s'
AS $$
BEGIN
WITH r AS (
    SELECT * FROM unnest(ids, statuses, attempt_nos, codes, errors, retry_in_us, started_us, durations, bodies)
        AS r(id, status, attempt, code, err, retry_in_us, started_us, duration_ms, body)
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
    WHERE d.id = r.id AND d.status = 'in_flight'
    RETURNING d.id
)
INSERT INTO webhooks.attempts (delivery_id, attempt, started_at, duration_ms, status_code, error, response_body)
SELECT r.id, r.attempt, to_timestamp(r.started_us / 1000000.0), r.duration_ms, r.code, r.err, r.body
FROM r JOIN upd ON upd.id = r.id;
END $$;
