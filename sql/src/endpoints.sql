-- Endpoints: validation of every write, cascades, parking and releasing on disable/enable,
-- and the functions that manage them.


-- Deleting endpoints, events or deliveries removes what hangs off them, once per statement.
-- They run as the owner: an admin deleting an endpoint needs no DELETE right on deliveries.
CREATE FUNCTION webhooks_internal._cascade_delete() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME = 'endpoints' THEN
        DELETE FROM webhooks.deliveries d USING old_rows o WHERE d.endpoint_id = o.id;
        DELETE FROM webhooks_internal.signing_keys k USING old_rows o WHERE k.endpoint_id = o.id;
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
    -- endpoint_rotate_secret sets secret to NULL
    rotating boolean := TG_OP = 'UPDATE' AND NEW.secret IS NULL;
    pair text[];
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
        PERFORM webhooks_internal._check_tenant_not_a_slug(NEW.tenant_id);
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
    IF NEW.signature IS NULL OR NEW.signature NOT IN ('v1', 'v1a') THEN
        RAISE EXCEPTION 'signature "%" is not known: v1 (HMAC) or v1a (ed25519)', NEW.signature
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.format IS NULL OR NEW.format NOT IN ('standard-webhooks', 'hmac-hex') THEN
        RAISE EXCEPTION 'format "%" is not known: standard-webhooks or hmac-hex', NEW.format
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- v1a: a key pair made here, the private half kept where only the owner reads it. A new
    -- pair on every rotation (secret set to NULL), the old one signing until the grace ends.
    IF NEW.signature = 'v1a' THEN
        IF NEW.format <> 'standard-webhooks' THEN
            RAISE EXCEPTION 'signature v1a applies to the standard-webhooks format only' USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF TG_OP = 'UPDATE' AND NEW.id IS DISTINCT FROM OLD.id THEN
            UPDATE webhooks_internal.signing_keys k SET endpoint_id = NEW.id WHERE k.endpoint_id = OLD.id;
        END IF;
        -- (an INSERT of an id that exists will fail or do nothing, ON CONFLICT: its keys stay)
        IF TG_OP = 'INSERT' AND EXISTS (SELECT 1 FROM webhooks.endpoints x WHERE x.id = NEW.id) THEN
            NULL;
        ELSIF TG_OP = 'INSERT' OR OLD.signature <> 'v1a' OR rotating
           OR NOT EXISTS (SELECT 1 FROM webhooks_internal.signing_keys k WHERE k.endpoint_id = NEW.id) THEN
            pair := webhooks_internal._new_key_pair();
            NEW.public_key := pair[2];
            INSERT INTO webhooks_internal.signing_keys AS k (endpoint_id, private_key)
            VALUES (NEW.id, webhooks_internal._seal(pair[1]))
            ON CONFLICT (endpoint_id) DO UPDATE
                SET previous_private_key = CASE WHEN rotating THEN k.private_key END, private_key = EXCLUDED.private_key;
        END IF;
    ELSIF TG_OP = 'UPDATE' AND OLD.signature = 'v1a' THEN
        NEW.public_key := NULL;
        DELETE FROM webhooks_internal.signing_keys k WHERE k.endpoint_id = OLD.id;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.filter::text IS DISTINCT FROM OLD.filter::text THEN
        NEW.filter_weight := CASE WHEN NEW.filter IS NOT NULL THEN webhooks_internal._check_filter(NEW.filter) END;
    ELSE
        NEW.filter_weight := OLD.filter_weight;
    END IF;
    -- hmac-hex names its own headers with the prefix: an endpoint header must not shadow them.
    IF NEW.format = 'hmac-hex' AND EXISTS (
        SELECT 1 FROM pg_catalog.jsonb_object_keys(NEW.headers) k
        WHERE pg_catalog.starts_with(pg_catalog.lower(k), pg_catalog.lower(coalesce(NEW.header_prefix, 'X-Webhook-')))) THEN
        RAISE EXCEPTION 'header names starting with % are the hmac-hex format''s own', coalesce(NEW.header_prefix, 'X-Webhook-')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.header_prefix IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.header_prefix IS DISTINCT FROM OLD.header_prefix) THEN
        IF NEW.format <> 'hmac-hex' THEN
            RAISE EXCEPTION 'header_prefix applies to the hmac-hex format only' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Set format => ''hmac-hex'' with it; standard-webhooks headers are named by the spec.';
        END IF;
        PERFORM webhooks_internal._check_header_prefix(NEW.header_prefix);
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
    -- Secrets are checked as written (a sealed value, one copied from a row or restored, must
    -- open) and stored sealed under webhooks.key_file's key: dumps, replicas and SELECTs carry
    -- no secret. Sealed only when written: the worker's updates of its bookkeeping seal nothing.
    IF TG_OP = 'INSERT' OR NEW.secret IS DISTINCT FROM OLD.secret THEN
        PERFORM webhooks_internal._check_secret(webhooks_internal._open(NEW.secret));
        NEW.secret := webhooks_internal._seal(NEW.secret);
    END IF;
    IF NEW.previous_secret IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.previous_secret IS DISTINCT FROM OLD.previous_secret) THEN
        PERFORM webhooks_internal._check_secret(webhooks_internal._open(NEW.previous_secret));
        NEW.previous_secret := webhooks_internal._seal(NEW.previous_secret);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.tls_client_cert IS DISTINCT FROM OLD.tls_client_cert
       OR NEW.tls_client_key IS DISTINCT FROM OLD.tls_client_key THEN
        IF (NEW.tls_client_cert IS NULL) <> (NEW.tls_client_key IS NULL) THEN
            RAISE EXCEPTION 'tls_client_cert and tls_client_key must be set together (or both NULL)'
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF NEW.tls_client_cert IS NOT NULL THEN
            PERFORM webhooks_internal._check_client_cert(NEW.tls_client_cert, webhooks_internal._open(NEW.tls_client_key));
            NEW.tls_client_key := webhooks_internal._seal(NEW.tls_client_key);
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.enabled AND NOT OLD.enabled THEN
        -- A fresh start: disable_after counts again from the next failure, no pause holds.
        NEW.failing_since := NULL;
        NEW.paused_until := NULL;
    END IF;
    NEW.headers := coalesce(NEW.headers, '{}');
    -- updated_at is about the configuration: the worker's bookkeeping (failing streak, pause,
    -- rate, a secret it cannot open) does not count as an update.
    IF TG_OP = 'INSERT' OR (pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.-) '{failing_since,paused_until,rate_next_at,updated_at,filter_weight,secret_problem,request_bytes}'::text[])
                IS DISTINCT FROM (pg_catalog.to_jsonb(OLD) OPERATOR(pg_catalog.-) '{failing_since,paused_until,rate_next_at,updated_at,filter_weight,secret_problem,request_bytes}'::text[]) THEN
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
    -- A sealed value opens under the cluster's key whichever row it came from, so a caller may
    -- bring one only from this row (rotation moves secret to previous_secret): one taken from a
    -- dump or another tenant's row would be opened by endpoint_secret and sign with someone
    -- else's secret. Superusers (who may read the key file anyway) and restores may.
    IF NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false) THEN
        IF (pg_catalog.starts_with(NEW.secret, 'whenc1:') AND (TG_OP = 'INSERT' OR NEW.secret IS DISTINCT FROM OLD.secret)
                AND (TG_OP = 'INSERT' OR NEW.secret IS DISTINCT FROM OLD.previous_secret))
           OR (pg_catalog.starts_with(NEW.previous_secret, 'whenc1:') AND (TG_OP = 'INSERT' OR NEW.previous_secret IS DISTINCT FROM OLD.previous_secret)
                AND (TG_OP = 'INSERT' OR NEW.previous_secret IS DISTINCT FROM OLD.secret))
           OR (pg_catalog.starts_with(NEW.tls_client_key, 'whenc1:') AND (TG_OP = 'INSERT' OR NEW.tls_client_key IS DISTINCT FROM OLD.tls_client_key)) THEN
            RAISE EXCEPTION 'a sealed secret (whenc1:...) may not be written into endpoint "%" by role %: it is not this endpoint''s', NEW.id, current_user
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Write the secret itself (whsec_...), or NULL for a new one; it is stored sealed.';
        END IF;
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
        -- (leased ones count: a worker gives back what it had not sent to a disabled endpoint)
        SELECT pg_catalog.count(*) INTO waiting FROM (
            SELECT 1 FROM webhooks.deliveries x
            WHERE x.endpoint_id = NEW.id AND x.status IN ('pending', 'in_flight') LIMIT 100000) x;
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
    description text DEFAULT NULL,
    format text DEFAULT NULL,
    header_prefix text DEFAULT NULL,
    signature text DEFAULT NULL,
    filter text DEFAULT NULL
) RETURNS webhooks.endpoints
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    ep webhooks.endpoints;
BEGIN
    INSERT INTO webhooks.endpoints AS e (url, event_types, tenant_id, description, format, header_prefix, signature, filter)
    VALUES (endpoint_create.url, endpoint_create.event_types, endpoint_create.tenant_id, endpoint_create.description,
            coalesce(endpoint_create.format, 'standard-webhooks'), endpoint_create.header_prefix,
            coalesce(endpoint_create.signature, 'v1'), webhooks.filter_path(endpoint_create.filter))
    RETURNING * INTO ep;
    -- (stored sealed; the one who made it gets it in the clear, once)
    ep.secret := webhooks.endpoint_secret(ep.id);
    RETURN ep;
END $$;
COMMENT ON FUNCTION webhooks.endpoint_create(text, text[], text, text, text, text, text, text) IS
    'Registers a receiver: url, event type filters (name, category.* or *), tenant (''*'' = every tenant), format (standard-webhooks or hmac-hex, with its header_prefix), signature (v1, or v1a: ed25519, public_key for the receiver), filter (a SQL/JSON path predicate over the envelope). A signing secret is generated.';

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
    rate_limit int DEFAULT NULL,
    format text DEFAULT NULL,
    header_prefix text DEFAULT NULL,
    signature text DEFAULT NULL,
    filter text DEFAULT NULL
) RETURNS webhooks.endpoints
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
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
                          ELSE coalesce(endpoint_update.rate_limit, e.rate_limit) END,
        format = coalesce(endpoint_update.format, e.format),
        signature = coalesce(endpoint_update.signature, e.signature),
        -- '' removes the filter
        filter = CASE WHEN endpoint_update.filter IS NULL THEN e.filter
                      ELSE webhooks.filter_path(endpoint_update.filter) END,
        -- '' goes back to the format's default prefix
        header_prefix = CASE WHEN endpoint_update.header_prefix = '' THEN NULL
                             ELSE coalesce(endpoint_update.header_prefix, e.header_prefix) END
    WHERE e.id = endpoint_update.id
    RETURNING * INTO ep;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" not found', id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN ep;
END $$;
COMMENT ON FUNCTION webhooks.endpoint_update(text, text, text[], text, jsonb, boolean, int, interval, text, text, int, int, text, text, text, text) IS
    'Changes the given fields of an endpoint (NULL keeps a field): url, filters, headers, ordering, batching, client certificate, deliveries in flight at once, deliveries per second (rate_limit; 0 lifts it), format and header_prefix ('''' for the default), signature (v1 or v1a), filter (a SQL/JSON path predicate; '''' removes it).';

CREATE FUNCTION webhooks.endpoint_delete(id text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    DELETE FROM webhooks.endpoints e WHERE e.id = endpoint_delete.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" not found', id USING ERRCODE = 'no_data_found';
    END IF;
END $$;
COMMENT ON FUNCTION webhooks.endpoint_delete(text) IS 'Deletes an endpoint with its deliveries and attempts.';

CREATE FUNCTION webhooks.endpoint_disable(id text, reason text DEFAULT NULL) RETURNS webhooks.endpoints
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
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
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
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
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
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
    RETURNING CASE WHEN e.signature = 'v1a' THEN e.public_key END INTO fresh;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'endpoint "%" not found', id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN coalesce(fresh, webhooks.endpoint_secret(id));
END $$;
COMMENT ON FUNCTION webhooks.endpoint_rotate_secret(text, interval) IS
    'Replaces the signing secret (v1a: the key pair) and returns it (v1a: the new public key); the old one also signs until the grace period ends.';
