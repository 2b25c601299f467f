-- Matching: which endpoints an event goes to. One test of subscription (_subscribes: enabled,
-- the event's tenant or '*', its type among the endpoint's filters) that publish, the set form,
-- operational events, synchronous sends and replays all use, and the content filters that a
-- tenant's admin may add (their cost bounded: core/src/filter_path.rs).

-- Whether an endpoint receives events of this tenant and type (its content filter aside). An
-- SQL function inlined into the statement that calls it, so that the tenant condition stays one
-- the endpoints' tenant index answers; for that it has no SET clause and names everything with
-- its schema (DESIGN rule 8).
CREATE FUNCTION webhooks_internal._subscribes(ep webhooks.endpoints, tenant text, type text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT ep.enabled
       AND coalesce(ep.tenant_id, '') OPERATOR(pg_catalog.=) ANY (ARRAY[coalesce(tenant, ''), '*'])
       AND webhooks_internal._matches(ep.event_types, type)
$$;

-- A filter as endpoint_create/endpoint_update take it: a SQL/JSON path, '' for none. Its errors
-- name the filter and say what one looks like. (Public: admins' calls of those functions run
-- it; it evaluates nothing.)
CREATE FUNCTION webhooks.filter_path(filter text) RETURNS jsonpath
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    IF filter IS NULL OR filter = '' THEN
        RETURN NULL;
    END IF;
    RETURN filter::jsonpath;
EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION 'filter "%" is not a SQL/JSON path: %', filter, SQLERRM
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'A filter is a predicate over the envelope, like $.data.user.email_verified == true or $.tenant_id == "acme".';
END $$;
COMMENT ON FUNCTION webhooks.filter_path(text) IS
    'The SQL/JSON path of an endpoint filter, with an error that names a bad one ('''' and NULL: none).';

-- A filter must be one whose cost is bounded (core/src/filter_path.rs: no .**, no $ inside a filter
-- expression, no comparison of two paths, at most 16 paths, 4 nested filters, a bounded
-- like_regex) and answer true or false (or unknown) for any event: tried on an envelope of the
-- shape every event has. Returns its weight, the paths it evaluates.
CREATE FUNCTION webhooks_internal._check_filter(f jsonpath) RETURNS int
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    weight int;
BEGIN
    IF pg_catalog.length(f::text) > 1024 THEN
        RAISE EXCEPTION 'filter is % characters, over the limit of 1024', pg_catalog.length(f::text)
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    weight := webhooks_internal._filter_weight(f::text);
    BEGIN
        PERFORM pg_catalog.jsonb_path_match(
            '{"id": "evt_0", "type": "user.created", "version": "1", "source": "urn:webhooks",
              "tenant_id": "acme", "actor": {"kind": "user", "id": "usr_0"}, "data": {"user": {"id": "usr_0"}}}'::jsonb, f);
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'filter "%" is not a predicate: %', f, SQLERRM
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Compare something: $.data.user.email_verified == true, exists($.data.user.phone), $.type starts with "user."';
    END;
    RETURN weight;
END $$;

-- The envelope a filter sees. An SQL function inlined where it is called (a SET clause would
-- stop that), so its body names everything with its schema instead (DESIGN rule 8).
CREATE FUNCTION webhooks_internal._filter_envelope(id text, type text, version text, source text,
                                                   tenant_id text, actor jsonb, data jsonb) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.jsonb_build_object('id', id, 'type', type, 'version', version, 'source', source,
                                         'tenant_id', tenant_id, 'actor', actor, 'data', data)
$$;

-- Whether an event goes to an endpoint as far as its filter says (no filter: it does), where
-- publish, the set form, synchronous sends and operational events all ask it. A filter whose
-- work on this event would exceed its budget (its weight times the event's size) is not
-- evaluated: the event goes to the endpoint as if it matched, and the log says so; a filter
-- errs towards sending, never towards losing. Inlined (its body names everything with its
-- schema, as _filter_envelope's).
CREATE FUNCTION webhooks_internal._filter_passes(filter jsonpath, weight int, endpoint text,
                                                 id text, type text, version text, source text,
                                                 tenant_id text, actor jsonb, data jsonb) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT filter IS NULL
        OR NOT webhooks_internal._filter_affordable(weight, data, endpoint)
        OR coalesce(pg_catalog.jsonb_path_match(
               webhooks_internal._filter_envelope(id, type, version, source, tenant_id, actor, data),
               filter, '{}', true), false)
$$;

-- Evaluated for every enabled endpoint of every publish: after the cheaper conditions.
ALTER FUNCTION webhooks_internal._matches(text[], text) COST 100;
