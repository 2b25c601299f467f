-- The SQL API of the webhooks extension (loaded after the tables, tenancy and Rust functions).
--
-- Security rule, followed by every function here: a SECURITY DEFINER function takes plain values
-- (text, jsonb, ids), pins search_path = pg_catalog, webhooks, pg_temp and schema-qualifies what
-- it calls, so it evaluates nothing a caller can define (casts, operators, types, pg_temp
-- shadows). Work on a caller's rows and types runs with the caller's rights before it. Functions
-- whose names start with _ are executable by the extension owner alone (security.sql); the API
-- that needs the owner's rights (publish, send_sync, replay, status, tracking, tenancy) enters
-- through src/gate.rs, which records who called before it becomes the owner.

-- Publishing -----------------------------------------------------------------------------------

-- Checks shared by _publish and _send_sync; returns the catalogue entry. Limits
-- apply to what is sent: the JSON text of data and actor, not their stored (compressed) size.
CREATE FUNCTION webhooks_internal._check_event(p_type text, p_data jsonb, p_actor jsonb, p_entity_key text, p_sync boolean)
RETURNS webhooks.event_types
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    et webhooks.event_types;
    max_bytes int := coalesce(nullif(pg_catalog.current_setting('webhooks.max_payload', true), '')::int, 262144);
    data_bytes int;
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
    RETURN et;
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
AS $$
#variable_conflict use_column
DECLARE
    p_type text := event_type;
    p_key text := idempotency_key;
    p_tenant text := webhooks_internal._event_tenant(tenant_id);
    et webhooks.event_types;
    new_id text := webhooks_internal._new_event_id();
    got text;
    earlier webhooks.events;
    tries int := 0;
    due_now boolean;
BEGIN
    et := webhooks_internal._check_event(p_type, data, actor, entity_key, false);
    IF p_key IS NOT NULL AND (p_key = '' OR pg_catalog.octet_length(p_key) > 255) THEN
        RAISE EXCEPTION 'idempotency_key must be 1 to 255 bytes, got %', pg_catalog.octet_length(p_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- With a key, the unique index decides: a concurrent publish of the same key waits for the
    -- first transaction; if that commits, this one gets its event back and creates nothing, if
    -- it rolls back, this one publishes. Within webhooks.ttl only: after it, the key is free.
    -- Without one, a plain insert (no speculative insertion on the hot path).
    IF p_key IS NULL THEN
        INSERT INTO webhooks.events (id, tenant_id, type, version, source, actor, data, entity_key)
        VALUES (new_id, p_tenant, p_type, et.version,
                coalesce(nullif(pg_catalog.current_setting('webhooks.source', true), ''), 'urn:webhooks'),
                actor, data, entity_key);
    END IF;
    WHILE p_key IS NOT NULL LOOP
        INSERT INTO webhooks.events AS e (id, tenant_id, type, version, source, actor, data, entity_key, idempotency_key)
        VALUES (new_id, p_tenant, p_type, et.version,
                coalesce(nullif(pg_catalog.current_setting('webhooks.source', true), ''), 'urn:webhooks'),
                actor, data, entity_key, p_key)
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
    WITH d AS (
        INSERT INTO webhooks.deliveries (event_id, endpoint_id, tenant_id, entity_key, next_attempt_at, endpoint_tenant)
        SELECT new_id, ep.id, p_tenant, _publish.entity_key, pg_catalog.now() + ep.batch_window, ep.tenant_id
        FROM webhooks.endpoints ep
        WHERE ep.enabled
          AND (ep.tenant_id IS NOT DISTINCT FROM p_tenant OR ep.tenant_id = '*')
          AND webhooks_internal._matches(ep.event_types, p_type)
        RETURNING next_attempt_at
    )
    SELECT pg_catalog.bool_or(d.next_attempt_at <= pg_catalog.now()) INTO due_now FROM d;
    -- Wake the worker on commit only for work that is due now (batched endpoints wait anyway).
    IF due_now THEN
        PERFORM webhooks_internal._wake_on_commit();
    END IF;
    RETURN new_id;
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
    n int;
BEGIN
    INSERT INTO webhooks.events (id, tenant_id, type, version, source, data)
    VALUES (new_id, tenant, p_type, '1',
            coalesce(nullif(pg_catalog.current_setting('webhooks.source', true), ''), 'urn:webhooks'), p_data);
    INSERT INTO webhooks.deliveries (event_id, endpoint_id, tenant_id, next_attempt_at, endpoint_tenant)
    SELECT new_id, ep.id, tenant, pg_catalog.now() + ep.batch_window, ep.tenant_id
    FROM webhooks.endpoints ep
    WHERE ep.enabled AND ep.id IS DISTINCT FROM p_about
      AND (ep.tenant_id IS NOT DISTINCT FROM tenant OR ep.tenant_id = '*')
      AND webhooks_internal._matches(ep.event_types, p_type);
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM webhooks_internal._wake_on_commit();
    END IF;
    -- Any role may LISTEN: the notification carries only the event's id and type, and a
    -- listener reads the event itself through row-level security.
    PERFORM pg_catalog.pg_notify('webhooks',
        pg_catalog.jsonb_build_object('id', new_id, 'type', p_type)::text);
    RETURN new_id;
END $$;

-- Used by webhook_send_sync: records the event and in-flight deliveries, returns the targets.
-- The event is recorded without its data: synchronous events carry OTP codes, magic links and
-- recipients, which are sent now and never again (no retry, no replay), so nothing of them is
-- kept for tenant admins to read. What stays: type, tenant, actor, time, and per endpoint the
-- status, duration and answer of the attempt.
CREATE FUNCTION webhooks_internal._sync_prepare(p_type text, p_data jsonb, p_tenant text, p_actor jsonb)
RETURNS TABLE (delivery_id bigint, event_id text, version text, source text, tenant_id text, actor text,
               occurred_us bigint, data text, endpoint_id text, url text, secret text,
               previous_secret text, headers text, tls_client_cert text, tls_client_key text,
               endpoint_tenant text)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    tenant text := webhooks_internal._event_tenant(p_tenant);
    et webhooks.event_types;
    new_id text := webhooks_internal._new_event_id();
    ev webhooks.events;
BEGIN
    et := webhooks_internal._check_event(p_type, p_data, p_actor, NULL, true);
    INSERT INTO webhooks.events AS e (id, tenant_id, type, version, source, actor, data)
    VALUES (new_id, tenant, p_type, et.version,
            coalesce(nullif(pg_catalog.current_setting('webhooks.source', true), ''), 'urn:webhooks'), p_actor,
            '{}'::jsonb)
    RETURNING * INTO ev;
    RETURN QUERY
    WITH d AS (
        INSERT INTO webhooks.deliveries AS dd (event_id, endpoint_id, tenant_id, sync, status, next_attempt_at, lease_until,
                                               endpoint_tenant)
        SELECT new_id, ep.id, tenant, true, 'in_flight', NULL, pg_catalog.now() + interval '1 hour', ep.tenant_id
        FROM webhooks.endpoints ep
        WHERE ep.enabled AND (ep.tenant_id IS NOT DISTINCT FROM tenant OR ep.tenant_id = '*')
          AND webhooks_internal._matches(ep.event_types, p_type)
        RETURNING dd.id, dd.endpoint_id
    )
    SELECT d.id, ev.id, ev.version, ev.source, ev.tenant_id, ev.actor::text,
           (extract(epoch FROM ev.occurred_at) * 1000000)::int8, p_data::text,
           ep.id, ep.url, ep.secret,
           CASE WHEN ep.previous_secret_expires_at > pg_catalog.now() THEN ep.previous_secret END,
           ep.headers::text, ep.tls_client_cert, ep.tls_client_key, ep.tenant_id
    FROM d JOIN webhooks.endpoints ep ON ep.id = d.endpoint_id
    ORDER BY ep.id;
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

-- Synchronous events: delivered now from the calling session. Returns the answers, or, when
-- nobody subscribes or any endpoint fails, {"error": {"code", "message", "detail", "hint"}}:
-- webhook_send_sync raises it (WH001, WH002) and so rolls back the caller's work;
-- webhook_send_sync_result hands it back. Errors name endpoint ids and the kind of failure,
-- never URLs or hosts (publishers read them, and a URL may carry a token).
CREATE FUNCTION webhooks_internal._send_sync(
    event_type text,
    data jsonb,
    tenant_id text,
    actor jsonb
) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    targets jsonb;
    answers jsonb;
    failures text;
BEGIN
    SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(t)) INTO targets
    FROM webhooks_internal._sync_prepare(event_type, data, tenant_id, actor) t;
    IF targets IS NULL THEN
        RETURN pg_catalog.jsonb_build_object('error', pg_catalog.jsonb_build_object(
            'code', 'WH002',
            'message', pg_catalog.format('no enabled endpoint subscribes to synchronous event type "%s"', event_type),
            'hint', pg_catalog.format('Create one: SELECT webhooks.endpoint_create(url, ARRAY[%L]);', event_type)));
    END IF;
    answers := webhooks_internal._sync_send(event_type, targets);
    PERFORM webhooks_internal._sync_record(answers);
    SELECT pg_catalog.string_agg(pg_catalog.format('endpoint %s: %s', a->>'endpoint_id', a->>'public_error'), '; ')
    INTO failures FROM pg_catalog.jsonb_array_elements(answers) a WHERE a->>'error' IS NOT NULL;
    IF failures IS NOT NULL THEN
        -- Rolled back with the caller, the attempts would leave no trace: the worker records
        -- them once this transaction has ended without committing (src/handoff.rs).
        PERFORM webhooks_internal._sync_failed(
            (targets -> 0) || pg_catalog.jsonb_build_object('event_type', event_type), answers);
        RETURN pg_catalog.jsonb_build_object('error', pg_catalog.jsonb_build_object(
            'code', 'WH001',
            'message', pg_catalog.format('synchronous webhook %s failed: %s', event_type, failures),
            'detail', 'event ' || (targets -> 0 ->> 'event_id')));
    END IF;
    RETURN pg_catalog.jsonb_build_object(
        'event_id', targets -> 0 ->> 'event_id',
        'responses', (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                 'endpoint_id', a->'endpoint_id', 'status', a->'status',
                                 'body', a->'body', 'duration_ms', a->'duration_ms'))
                      FROM pg_catalog.jsonb_array_elements(answers) a));
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

-- Cascades and wake-ups ------------------------------------------------------------------------

-- Deleting endpoints, events or deliveries removes what hangs off them, once per statement.
-- They run as the owner: an admin deleting an endpoint needs no DELETE right on deliveries.
CREATE FUNCTION webhooks_internal._cascade_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
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
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION webhooks_internal._cascade_delete();
CREATE TRIGGER events_cascade AFTER DELETE ON webhooks.events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION webhooks_internal._cascade_delete();
CREATE TRIGGER deliveries_cascade AFTER DELETE ON webhooks.deliveries
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION webhooks_internal._cascade_delete();

-- Any UPDATE of deliveries (a retry, an admin's fix) may have made work due: wake the worker
-- when it commits. Once per statement; the worker's own statements do not wake itself.
CREATE FUNCTION webhooks_internal._wake_after_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    PERFORM webhooks_internal._wake_on_commit();
    RETURN NULL;
END $$;

CREATE TRIGGER deliveries_wake AFTER UPDATE ON webhooks.deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION webhooks_internal._wake_after_update();

-- Endpoints ----------------------------------------------------------------------------------

-- Fills ids and secrets and validates every write, whether it comes through the functions
-- below or a plain INSERT/UPDATE. A new secret is generated whenever secret is set to NULL.
CREATE FUNCTION webhooks_internal._endpoint_before_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    unknown text;
    waiting bigint;
    -- pg_restore (and a plain pg_dump script) loads endpoints with these two settings off,
    -- which no application session has: then the rows come back as they were dumped (ids,
    -- timestamps, URLs checked under the dumping cluster's settings), whatever order the
    -- catalogue comes back in. Turning row_security off is refused to roles that RLS binds,
    -- so this is an owner's or superuser's path only.
    restoring boolean := TG_OP = 'INSERT'
        AND pg_catalog.current_setting('row_security') = 'off'
        AND pg_catalog.current_setting('check_function_bodies') = 'off';
BEGIN
    IF restoring THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        NEW.id := coalesce(NEW.id, webhooks_internal._new_endpoint_id());
        NEW.created_at := pg_catalog.now();
        -- The worker's bookkeeping starts empty.
        NEW.rate_next_at := NULL;
        NEW.paused_until := NULL;
        NEW.failing_since := NULL;
    END IF;
    NEW.secret := coalesce(NEW.secret, webhooks_internal._new_secret());
    -- Work waiting for an endpoint belongs to its tenant: moving the endpoint to another tenant
    -- (or another id) would hand that tenant the old one's events. Refused while any waits;
    -- work committed after the change (a publish that raced it) matches no endpoint and is
    -- parked as an orphan, never sent across.
    IF TG_OP = 'UPDATE' AND (NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.id IS DISTINCT FROM OLD.id) THEN
        SELECT pg_catalog.count(*) INTO waiting FROM webhooks.deliveries d
        WHERE d.endpoint_id = OLD.id AND d.status IN ('pending', 'in_flight')
          AND coalesce(d.endpoint_tenant, '') = coalesce(OLD.tenant_id, '');
        IF waiting > 0 THEN
            RAISE EXCEPTION 'endpoint "%" has % deliveries waiting for tenant %: its % cannot change while they wait',
                OLD.id, waiting, coalesce('"' || OLD.tenant_id || '"', 'NULL (no tenant)'),
                CASE WHEN NEW.id IS DISTINCT FROM OLD.id THEN 'id' ELSE 'tenant_id' END
                USING ERRCODE = 'object_in_use',
                      HINT = 'Let them finish, or delete the endpoint (with its deliveries) and create one for the new tenant.';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
        PERFORM webhooks_internal._check_tenant_id(NEW.tenant_id, true);
    END IF;
    -- Each check runs when its column is written (an insert, or an update that changes it): a
    -- row from an older version keeps working when the worker records its state.
    IF (TG_OP = 'INSERT' OR NEW.id IS DISTINCT FROM OLD.id) AND NEW.id !~ '^[A-Za-z0-9_-]{1,64}$' THEN
        RAISE EXCEPTION 'endpoint id "%" is not valid: 1-64 letters, digits, _ or -', NEW.id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.url IS NULL THEN
        RAISE EXCEPTION 'url must not be NULL' USING ERRCODE = 'not_null_violation';
    ELSIF (TG_OP = 'INSERT' OR NEW.url IS DISTINCT FROM OLD.url) AND pg_catalog.octet_length(NEW.url) > 2048 THEN
        RAISE EXCEPTION 'url is % bytes, over the 2048-byte limit', pg_catalog.octet_length(NEW.url)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.event_types IS DISTINCT FROM OLD.event_types) AND pg_catalog.cardinality(NEW.event_types) > 100 THEN
        RAISE EXCEPTION 'event_types lists % filters, over the limit of 100', pg_catalog.cardinality(NEW.event_types)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.tls_client_cert IS DISTINCT FROM OLD.tls_client_cert OR NEW.tls_client_key IS DISTINCT FROM OLD.tls_client_key)
       AND (pg_catalog.octet_length(NEW.tls_client_cert) > 65536 OR pg_catalog.octet_length(NEW.tls_client_key) > 65536) THEN
        RAISE EXCEPTION 'tls_client_cert and tls_client_key are limited to 64 KiB each'
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.previous_secret_expires_at IS DISTINCT FROM OLD.previous_secret_expires_at)
       AND NEW.previous_secret_expires_at > pg_catalog.now() + interval '30 days' THEN
        RAISE EXCEPTION 'previous_secret_expires_at is more than 30 days away'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A rotation grace period is at most 30 days.';
    END IF;
    IF TG_OP = 'INSERT' OR NEW.url IS DISTINCT FROM OLD.url THEN
        PERFORM webhooks_internal._check_url(NEW.url);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.event_types IS DISTINCT FROM OLD.event_types THEN
        PERFORM webhooks_internal._check_filters(NEW.event_types);
        -- A name must be in the catalogue, and a category.* must match at least one type in it.
        SELECT f INTO unknown FROM pg_catalog.unnest(NEW.event_types) f
        WHERE f <> '*' AND NOT EXISTS (
            SELECT 1 FROM webhooks.event_types t
            WHERE CASE WHEN f LIKE '%.*' THEN pg_catalog.starts_with(t.name, pg_catalog.left(f, -1))
                       ELSE t.name = f END)
        LIMIT 1;
        IF unknown IS NOT NULL THEN
            RAISE EXCEPTION 'event_types names unknown event %', CASE WHEN unknown LIKE '%.*'
                THEN pg_catalog.format('category "%s" (no event type starts with "%s")', unknown, pg_catalog.left(unknown, -1))
                ELSE pg_catalog.format('type "%s"', unknown) END
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'See webhooks.event_types, or register it with webhooks.event_type_register().';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.headers IS DISTINCT FROM OLD.headers THEN
        PERFORM webhooks_internal._check_headers(coalesce(NEW.headers, '{}'));
    END IF;
    IF TG_OP = 'INSERT' OR NEW.secret IS DISTINCT FROM OLD.secret THEN
        PERFORM webhooks_internal._check_secret(NEW.secret);
    END IF;
    IF NEW.previous_secret IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.previous_secret IS DISTINCT FROM OLD.previous_secret) THEN
        PERFORM webhooks_internal._check_secret(NEW.previous_secret);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.tls_client_cert IS DISTINCT FROM OLD.tls_client_cert
       OR NEW.tls_client_key IS DISTINCT FROM OLD.tls_client_key THEN
        IF (NEW.tls_client_cert IS NULL) <> (NEW.tls_client_key IS NULL) THEN
            RAISE EXCEPTION 'tls_client_cert and tls_client_key must be set together (or both NULL)'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF NEW.tls_client_cert IS NOT NULL THEN
            PERFORM webhooks_internal._check_client_cert(NEW.tls_client_cert, NEW.tls_client_key);
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.enabled AND NOT OLD.enabled THEN
        -- A fresh start: disable_after counts again from the next failure, no pause holds.
        NEW.failing_since := NULL;
        NEW.paused_until := NULL;
    END IF;
    NEW.headers := coalesce(NEW.headers, '{}');
    -- updated_at is about the configuration: the worker's bookkeeping (failing streak, pause,
    -- rate) does not count as an update.
    IF TG_OP = 'INSERT' OR (pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.-) '{failing_since,paused_until,rate_next_at,updated_at}'::text[])
                IS DISTINCT FROM (pg_catalog.to_jsonb(OLD) OPERATOR(pg_catalog.-) '{failing_since,paused_until,rate_next_at,updated_at}'::text[]) THEN
        NEW.updated_at := pg_catalog.now();
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER endpoints_before_write BEFORE INSERT OR UPDATE ON webhooks.endpoints
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._endpoint_before_write();

-- The tenant of a write is the writing role's business, so this part runs as that role (a
-- definer trigger would see the owner): the default tenant, and a refusal that names the
-- role's tenants before row-level security refuses with less to say. Fires first (by name).
CREATE FUNCTION webhooks_internal._endpoint_tenant() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s text[] := webhooks.tenant_scope();
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.tenant_id := coalesce(NEW.tenant_id, webhooks.current_tenant());
    END IF;
    IF (TG_OP = 'INSERT' OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id)
       AND s IS NOT NULL AND NOT coalesce(NEW.tenant_id, '') = ANY (s) THEN
        RAISE EXCEPTION 'endpoint tenant_id % is outside the tenants of role % (%)',
            coalesce('"' || NEW.tenant_id || '"', 'NULL (no tenant)'), current_user,
            coalesce(nullif(pg_catalog.array_to_string(s, ', '), ''), 'no tenant')
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A platform admin binds roles to tenants with webhooks.tenant_grant(role, tenant_id).';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER endpoints_0_tenant BEFORE INSERT OR UPDATE ON webhooks.endpoints
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._endpoint_tenant();

-- While an endpoint is disabled its pending deliveries wait (due at infinity), off the due
-- index's head; enabling makes them due now. A trigger, so a plain UPDATE of enabled behaves
-- exactly like endpoint_disable/endpoint_enable.
CREATE FUNCTION webhooks_internal._endpoint_after_enable() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    waiting bigint;
BEGIN
    -- Rows someone holds are skipped, never waited for (the worker disables endpoints too, and
    -- must not stall on an admin's lock): the claim parks or releases them later.
    IF NEW.enabled THEN
        UPDATE webhooks.deliveries d SET next_attempt_at = pg_catalog.now(), lease_until = NULL
        WHERE d.id IN (SELECT x.id FROM webhooks.deliveries x
                       WHERE x.endpoint_id = NEW.id AND x.status = 'pending' AND x.next_attempt_at = 'infinity'
                         AND coalesce(x.endpoint_tenant, '') = coalesce(NEW.tenant_id, '')
                         AND EXISTS (SELECT 1 FROM webhooks.events e WHERE e.id = x.event_id)
                       FOR UPDATE SKIP LOCKED);
    ELSE
        -- Parked in a bounded step: a disable in the worker's record transaction (410,
        -- disable_after) must not rewrite a million-row backlog there. What is left is parked
        -- by the claim as it meets it, a few hundred rows at a time.
        UPDATE webhooks.deliveries d SET next_attempt_at = 'infinity'
        WHERE d.id IN (SELECT x.id FROM webhooks.deliveries x
                       WHERE x.endpoint_id = NEW.id AND x.status = 'pending'
                         AND x.next_attempt_at <> 'infinity'
                         AND coalesce(x.endpoint_tenant, '') = coalesce(NEW.tenant_id, '')
                       LIMIT 10000
                       FOR UPDATE SKIP LOCKED);
        SELECT pg_catalog.count(*) INTO waiting FROM (
            SELECT 1 FROM webhooks.deliveries x
            WHERE x.endpoint_id = NEW.id AND x.status = 'pending' LIMIT 100000) x;
        PERFORM webhooks_internal._publish_operational('webhook.endpoint.disabled',
            pg_catalog.jsonb_build_object('endpoint_id', NEW.id, 'reason', NEW.disabled_reason,
                                          'failing_since', NEW.failing_since, 'pending_deliveries', waiting),
            NEW.id, NEW.tenant_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER endpoints_after_enable AFTER UPDATE OF enabled ON webhooks.endpoints
    FOR EACH ROW WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled)
    EXECUTE FUNCTION webhooks_internal._endpoint_after_enable();

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
COMMENT ON FUNCTION webhooks.endpoint_create(text, text[], text, text) IS
    'Registers a receiver: url, event type filters (name, category.* or *), tenant (''*'' = every tenant). A signing secret is generated.';

CREATE FUNCTION webhooks.endpoint_update(
    id text,
    url text DEFAULT NULL,
    event_types text[] DEFAULT NULL,
    description text DEFAULT NULL,
    headers jsonb DEFAULT NULL,
    ordered boolean DEFAULT NULL,
    batch_max int DEFAULT NULL,
    batch_window interval DEFAULT NULL,
    tls_client_cert text DEFAULT NULL,
    tls_client_key text DEFAULT NULL,
    max_in_flight int DEFAULT NULL,
    rate_limit int DEFAULT NULL
) RETURNS webhooks.endpoints
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ep webhooks.endpoints;
BEGIN
    UPDATE webhooks.endpoints e
    SET url = coalesce(endpoint_update.url, e.url),
        event_types = coalesce(endpoint_update.event_types, e.event_types),
        description = coalesce(endpoint_update.description, e.description),
        headers = coalesce(endpoint_update.headers, e.headers),
        ordered = coalesce(endpoint_update.ordered, e.ordered),
        batch_max = coalesce(endpoint_update.batch_max, e.batch_max),
        batch_window = coalesce(endpoint_update.batch_window, e.batch_window),
        tls_client_cert = coalesce(endpoint_update.tls_client_cert, e.tls_client_cert),
        tls_client_key = coalesce(endpoint_update.tls_client_key, e.tls_client_key),
        max_in_flight = coalesce(endpoint_update.max_in_flight, e.max_in_flight),
        -- 0 lifts the limit (NULL, as for every field here, keeps it)
        rate_limit = CASE WHEN endpoint_update.rate_limit = 0 THEN NULL
                          ELSE coalesce(endpoint_update.rate_limit, e.rate_limit) END
    WHERE e.id = endpoint_update.id
    RETURNING * INTO ep;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" not found', id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN ep;
END $$;
COMMENT ON FUNCTION webhooks.endpoint_update(text, text, text[], text, jsonb, boolean, int, interval, text, text, int, int) IS
    'Changes the given fields of an endpoint (NULL keeps a field): url, filters, headers, ordering, batching, client certificate, deliveries in flight at once, deliveries per second (rate_limit; 0 lifts it).';

CREATE FUNCTION webhooks.endpoint_delete(id text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    DELETE FROM webhooks.endpoints e WHERE e.id = endpoint_delete.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" not found', id USING ERRCODE = 'no_data_found';
    END IF;
END $$;
COMMENT ON FUNCTION webhooks.endpoint_delete(text) IS 'Deletes an endpoint with its deliveries and attempts.';

CREATE FUNCTION webhooks.endpoint_disable(id text, reason text DEFAULT NULL) RETURNS webhooks.endpoints
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ep webhooks.endpoints;
BEGIN
    UPDATE webhooks.endpoints e
    SET enabled = false, disabled_reason = coalesce(reason, 'disabled by ' || current_user)
    WHERE e.id = endpoint_disable.id RETURNING * INTO ep;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" not found', id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN ep;
END $$;
COMMENT ON FUNCTION webhooks.endpoint_disable(text, text) IS
    'Stops deliveries to an endpoint; its pending deliveries wait until it is enabled again.';

CREATE FUNCTION webhooks.endpoint_enable(id text) RETURNS webhooks.endpoints
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    ep webhooks.endpoints;
BEGIN
    UPDATE webhooks.endpoints e SET enabled = true, disabled_reason = NULL
    WHERE e.id = endpoint_enable.id RETURNING * INTO ep;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" not found', id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN ep;
END $$;
COMMENT ON FUNCTION webhooks.endpoint_enable(text) IS 'Resumes deliveries to an endpoint; what waited is due now.';

-- A new secret; until the grace period ends requests carry a signature for both.
CREATE FUNCTION webhooks.endpoint_rotate_secret(id text, grace interval DEFAULT '24 hours') RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    fresh text;
BEGIN
    IF grace < interval '0' THEN
        RAISE EXCEPTION 'grace must not be negative, got %', grace USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- secret = NULL: the endpoint trigger generates the new one.
    UPDATE webhooks.endpoints e
    SET previous_secret = e.secret, previous_secret_expires_at = now() + grace, secret = NULL
    WHERE e.id = endpoint_rotate_secret.id
    RETURNING e.secret INTO fresh;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" not found', id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN fresh;
END $$;
COMMENT ON FUNCTION webhooks.endpoint_rotate_secret(text, interval) IS
    'Replaces the signing secret and returns it; the old one also signs until the grace period ends.';

-- Catalogue ----------------------------------------------------------------------------------

-- The catalogue is shared by every tenant: only a platform admin changes it, and the types
-- shipped with the extension are never deleted.
CREATE FUNCTION webhooks_internal._event_type_before_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.builtin THEN
            RAISE EXCEPTION 'event type "%" ships with the extension and cannot be deleted', OLD.name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN OLD;
    END IF;
    PERFORM webhooks_internal._check_event_type_name(NEW.name);
    IF pg_catalog.starts_with(NEW.name, 'webhook.') AND NOT NEW.builtin THEN
        RAISE EXCEPTION 'event type "%": the webhook.* category is reserved for the extension''s operational events', NEW.name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.mode NOT IN ('async', 'sync', 'batched') THEN
        RAISE EXCEPTION 'mode must be async, sync or batched, got "%"', NEW.mode USING ERRCODE = 'invalid_parameter_value';
    END IF;
    NEW.category := pg_catalog.split_part(NEW.name, '.', 1);
    RETURN NEW;
END $$;

CREATE TRIGGER event_types_before_write BEFORE INSERT OR UPDATE OR DELETE ON webhooks.event_types
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._event_type_before_write();

-- Who is writing is the writing role: checked as that role, before the definer trigger.
CREATE FUNCTION webhooks_internal._event_type_admin() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF webhooks.tenant_scope() IS NOT NULL
       OR NOT (pg_catalog.pg_has_role(current_user, 'webhooks_admin', 'MEMBER')
               OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)) THEN
        RAISE EXCEPTION 'only a platform admin (a superuser, or a webhooks_admin bound to "*") can change the event type catalogue'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER event_types_0_admin BEFORE INSERT OR UPDATE OR DELETE ON webhooks.event_types
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._event_type_admin();

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
    INSERT INTO webhooks.event_types AS t (name, category, description, mode, version)
    VALUES (name, '', coalesce(description, ''), mode, coalesce(version, '1'))
    ON CONFLICT ON CONSTRAINT event_types_pkey DO UPDATE
        SET description = EXCLUDED.description, mode = EXCLUDED.mode, version = EXCLUDED.version
    RETURNING * INTO et;
    RETURN et;
END $$;
COMMENT ON FUNCTION webhooks.event_type_register(text, text, text, text) IS
    'Adds an event type to the catalogue (or updates its description, mode and version).';

-- Operating from psql --------------------------------------------------------------------------

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
    answer := webhooks_internal._sync_send(p_type, pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'event_id', new_id, 'version', '1',
        'source', coalesce(nullif(pg_catalog.current_setting('webhooks.source', true), ''), 'urn:webhooks'),
        'tenant_id', nullif(ep.tenant_id, '*'),
        'occurred_us', (extract(epoch FROM pg_catalog.now()) * 1000000)::int8,
        'data', pg_catalog.jsonb_build_object('test', true, 'endpoint_id', ep.id)::text,
        'endpoint_id', ep.id, 'url', ep.url, 'secret', ep.secret,
        'previous_secret', CASE WHEN ep.previous_secret_expires_at > pg_catalog.now() THEN ep.previous_secret END,
        'headers', ep.headers::text, 'tls_client_cert', ep.tls_client_cert, 'tls_client_key', ep.tls_client_key)))
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
    INSERT INTO webhooks.deliveries AS d (event_id, endpoint_id, tenant_id, entity_key, endpoint_tenant)
    SELECT ev.id, x.id, ev.tenant_id, ev.entity_key, x.tenant_id
    FROM webhooks.endpoints x
    WHERE x.enabled
      AND (x.tenant_id IS NOT DISTINCT FROM ev.tenant_id OR x.tenant_id = '*')
      AND (s IS NULL OR coalesce(x.tenant_id, '') = ANY (s))
      AND webhooks_internal._matches(x.event_types, ev.type)
      AND (_event_replay.endpoint_id IS NULL OR x.id = _event_replay.endpoint_id)
    RETURNING d.id, d.endpoint_id;
    IF FOUND THEN
        PERFORM webhooks_internal._wake_on_commit();
    END IF;
END $$;

CREATE VIEW webhooks.dead_letters WITH (security_invoker = true) AS
SELECT d.id AS delivery_id, d.event_id, e.type AS event_type, d.endpoint_id, ep.url, d.tenant_id,
       d.attempts, d.last_status, d.last_error, e.occurred_at, d.completed_at AS died_at, e.data
FROM webhooks.deliveries d
JOIN webhooks.events e ON e.id = d.event_id
JOIN webhooks.endpoints ep ON ep.id = d.endpoint_id
WHERE d.status = 'dead';
COMMENT ON VIEW webhooks.dead_letters IS 'Deliveries that will not be retried, with their last error and the event data.';

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
COMMENT ON VIEW webhooks.endpoint_health IS 'Per endpoint: deliveries by status, last success, last error, latency over 24 hours.';

-- Definer so that it can see the worker in pg_stat_activity (hidden from non-superusers); the
-- counts cover the caller's tenants only.
CREATE FUNCTION webhooks_internal._status()
RETURNS TABLE (preloaded boolean, worker_pid int, worker_running boolean, last_loop timestamptz,
               database text, serves_this_database boolean, pending bigint, due bigint,
               in_flight bigint, dead bigint, oldest_due timestamptz)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    WITH s AS (SELECT webhooks.tenant_scope() AS s),
    d AS (
        SELECT d.status, d.next_attempt_at FROM webhooks.deliveries d, s
        WHERE s.s IS NULL OR (coalesce(d.tenant_id, '') = ANY (s.s)
                              AND coalesce(d.endpoint_tenant, '') = ANY (s.s))
    )
    SELECT w.preloaded, w.pid,
           EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a
                   WHERE a.pid = w.pid AND a.backend_type = 'webhooks worker'),
           pg_catalog.to_timestamp(w.last_loop_us / 1000000.0),
           coalesce(nullif(pg_catalog.current_setting('webhooks.database', true), ''), pg_catalog.current_database()),
           coalesce(nullif(pg_catalog.current_setting('webhooks.database', true), ''), pg_catalog.current_database())
               = pg_catalog.current_database(),
           (SELECT count(*) FROM d WHERE d.status = 'pending'),
           (SELECT count(*) FROM d WHERE d.status = 'pending' AND d.next_attempt_at <= pg_catalog.now()),
           (SELECT count(*) FROM d WHERE d.status = 'in_flight'),
           (SELECT count(*) FROM d WHERE d.status = 'dead'),
           (SELECT min(d.next_attempt_at) FROM d WHERE d.status = 'pending' AND d.next_attempt_at <= pg_catalog.now())
    FROM webhooks_internal._worker_state() w
$$;

-- Evaluated for every enabled endpoint of every publish: after the cheaper conditions.
ALTER FUNCTION webhooks_internal._matches(text[], text) COST 100;
