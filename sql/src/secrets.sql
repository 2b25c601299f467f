-- Secrets at rest: endpoint secrets, previous secrets, mTLS client keys and v1a private keys
-- are stored sealed (AES-256-GCM) under the key in webhooks.key_file (src/keys.rs,
-- core/src/sealing.rs). The endpoints' trigger seals what is written; the worker and
-- webhook_send_sync open what they sign with (src/secrets.rs); what cannot be opened is held,
-- never sent unsigned nor counted as a failure; housekeeping reseals under the current key.

-- webhooks.endpoint_secret (src/gate.rs) as the owner: the caller's tenants only.
CREATE FUNCTION webhooks_internal._endpoint_secret(p_id text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    s text[] := webhooks.tenant_scope();
    ep webhooks.endpoints;
BEGIN
    SELECT * INTO ep FROM webhooks.endpoints x WHERE x.id = p_id;
    IF NOT FOUND OR (s IS NOT NULL AND NOT coalesce(ep.tenant_id, '') = ANY (s)) THEN
        RAISE EXCEPTION 'endpoint "%" not found', p_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN webhooks_internal._open(ep.secret);
END $$;

-- Requests the worker could not sign: their secrets do not open under webhooks.key_file (a
-- key missing or wrong). Given back without an attempt (nothing is lost, no retry is spent),
-- and their endpoints paused for 10 seconds with the reason, which endpoint_health and
-- status() show; the pause ends by itself, so once the key is back what waited is sent.
CREATE FUNCTION webhooks_internal._hold_unreadable(ids int8[], leases_us int8[], endpoint_ids text[], reasons text[])
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    -- (due again in 10 seconds, as the pause below: even where the pause cannot be set)
    PERFORM webhooks_internal._release(ids, leases_us, pg_catalog.array_fill(10000::int8, ARRAY[pg_catalog.cardinality(ids)]));
    -- (an endpoint someone holds locked keeps its state for the next claim: never waited for,
    -- so one admin's open transaction holds up no other endpoint's claim)
    UPDATE webhooks.endpoints ep
    SET paused_until = greatest(ep.paused_until, now() + interval '10 seconds'),
        secret_problem = x.reason
    FROM (SELECT DISTINCT ON (e) e, r AS reason FROM unnest(endpoint_ids, reasons) AS u(e, r)) x
    WHERE ep.id = x.e
      AND ep.id IN (SELECT l.id FROM webhooks.endpoints l WHERE l.id = ANY (endpoint_ids)
                    FOR NO KEY UPDATE SKIP LOCKED);
END $$;

-- Housekeeping's step: up to `step` endpoints (and v1a key pairs) whose stored secrets are plain
-- (written before 0.4.0, or restored from such a dump) or sealed under an older key the file
-- still holds, sealed again under the current one. Rows someone holds are left for the next
-- step. Returns how many rows it resealed. Definer: the worker's role may not write secrets.
CREATE FUNCTION webhooks_internal._reseal_step(step int) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    n bigint;
    m bigint;
BEGIN
    WITH todo AS (
        SELECT x.id FROM webhooks.endpoints x
        WHERE webhooks_internal._needs_reseal(x.secret) OR webhooks_internal._needs_reseal(x.previous_secret)
           OR webhooks_internal._needs_reseal(x.tls_client_key)
        LIMIT step FOR UPDATE SKIP LOCKED
    ), done AS (
        UPDATE webhooks.endpoints ep
        SET secret = webhooks_internal._reseal(ep.secret),
            previous_secret = webhooks_internal._reseal(ep.previous_secret),
            tls_client_key = webhooks_internal._reseal(ep.tls_client_key)
        FROM todo WHERE ep.id = todo.id
        RETURNING 1
    )
    SELECT count(*) INTO n FROM done;
    WITH todo AS (
        SELECT k.endpoint_id FROM webhooks_internal.signing_keys k
        WHERE webhooks_internal._needs_reseal(k.private_key) OR webhooks_internal._needs_reseal(k.previous_private_key)
        LIMIT step FOR UPDATE SKIP LOCKED
    ), done AS (
        UPDATE webhooks_internal.signing_keys k
        SET private_key = webhooks_internal._reseal(k.private_key),
            previous_private_key = webhooks_internal._reseal(k.previous_private_key)
        FROM todo WHERE k.endpoint_id = todo.endpoint_id
        RETURNING 1
    )
    SELECT count(*) INTO m FROM done;
    RETURN n + m;
END $$;

-- How the stored secrets of this database stand against the key file: one row per key (the
-- file's, and any a stored value names that the file lacks), the values sealed under it, and
-- one row for values not sealed yet. A key with no value under it in any database may be
-- removed from the file; a key the file lacks (in_key_file false) has values nothing can open.
CREATE VIEW webhooks.secret_keys AS
WITH stored AS (
    SELECT v FROM webhooks.endpoints ep, LATERAL (VALUES (ep.secret), (ep.previous_secret), (ep.tls_client_key)) s(v)
    WHERE v IS NOT NULL
    UNION ALL
    SELECT v FROM webhooks_internal.signing_keys k, LATERAL (VALUES (k.private_key), (k.previous_private_key)) s(v)
    WHERE v IS NOT NULL
), counted AS (
    SELECT CASE WHEN pg_catalog.starts_with(v, 'whenc1:') THEN pg_catalog.split_part(v, ':', 2) END AS key_id,
           count(*) AS sealed_values
    FROM stored GROUP BY 1
), file AS (
    SELECT f.key_id, f.seals, f.problem FROM webhooks_internal._key_file() f
)
SELECT coalesce(c.key_id, f.key_id) AS key_id,
       (f.key_id IS NOT NULL) AS in_key_file,
       coalesce(f.seals, false) AS seals,
       coalesce(c.sealed_values, 0) AS sealed_values,
       (SELECT p.problem FROM file p WHERE p.problem IS NOT NULL) AS key_file_problem
FROM file f FULL JOIN counted c ON c.key_id = f.key_id
WHERE coalesce(c.key_id, f.key_id) IS NOT NULL
UNION ALL
SELECT NULL, false, false, c.sealed_values, 'not sealed yet: housekeeping seals them under the current key'
FROM counted c WHERE c.key_id IS NULL
UNION ALL
SELECT NULL, false, false, 0, f.problem FROM file f WHERE f.problem IS NOT NULL;
COMMENT ON VIEW webhooks.secret_keys IS
    'Keys of webhooks.key_file (ids only) against the secrets stored in this database: how many values each seals, which key seals new ones, values not sealed yet, and a key file that cannot be read.';
