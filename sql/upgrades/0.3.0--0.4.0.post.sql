
-- ---------------------------------------------------------------------------------------------
-- webhooks 0.3.0 -> 0.4.0, part 2: what needs the 0.4.0 functions.
-- ---------------------------------------------------------------------------------------------

-- The row triggers of tracked tables (and their conditions) went with 0.3.0's functions: made
-- again, as tracked.
SELECT webhooks_internal._track_apply(t.relid) FROM webhooks.tracked_tables t ORDER BY t.relid::oid;

-- Filters written under 0.3.0 get their weight; one that 0.4.0 refuses (.**, a comparison of two
-- paths, $ inside a filter expression, ...) keeps a NULL weight: it is no longer evaluated and
-- its endpoint receives its subscribed events unfiltered until an admin changes it. Said here.
ALTER TABLE webhooks.endpoints DISABLE TRIGGER endpoints_before_write;
UPDATE webhooks.endpoints ep SET filter_weight = webhooks_internal._filter_weight_or_null(ep.filter::text)
WHERE ep.filter IS NOT NULL;
-- Secrets at rest: every secret, previous secret, client key and v1a private key 0.3.0 stored in
-- the clear is sealed under the key in webhooks.key_file (made in the data directory at the
-- first start if the setting is empty). Without a readable key file the upgrade stops here,
-- saying why, and nothing has changed.
UPDATE webhooks.endpoints ep
SET secret = webhooks_internal._seal(ep.secret),
    previous_secret = webhooks_internal._seal(ep.previous_secret),
    tls_client_key = webhooks_internal._seal(ep.tls_client_key);
ALTER TABLE webhooks.endpoints ENABLE TRIGGER endpoints_before_write;
UPDATE webhooks_internal.signing_keys k
SET private_key = webhooks_internal._seal(k.private_key),
    previous_private_key = webhooks_internal._seal(k.previous_private_key);
DO $$
DECLARE
    eps text;
BEGIN
    SELECT pg_catalog.string_agg(ep.id, ', ' ORDER BY ep.id) INTO eps
    FROM webhooks.endpoints ep WHERE ep.filter IS NOT NULL AND ep.filter_weight IS NULL;
    IF eps IS NOT NULL THEN
        RAISE WARNING 'webhooks 0.4.0: the filters of endpoints % use constructs whose cost is unbounded; they are not evaluated (those endpoints get their events unfiltered) until they are changed', eps
            USING HINT = 'See webhooks.endpoint_update(id, filter => ...): no .**, no $ inside ?(...), compare paths with constants.';
    END IF;
END $$;

-- Endpoints' headers are held to 32 and 8 KiB together from 0.4.0 on; those written before keep
-- theirs (each request still carries them, and the worker counts them in its memory) until
-- they are changed. Said here.
DO $$
DECLARE
    eps text;
BEGIN
    SELECT pg_catalog.string_agg(ep.id, ', ' ORDER BY ep.id) INTO eps
    FROM webhooks.endpoints ep
    WHERE (SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_object_keys(ep.headers)) > 32
       OR (SELECT coalesce(pg_catalog.sum(pg_catalog.octet_length(h.key) + pg_catalog.octet_length(h.value)), 0)
           FROM pg_catalog.jsonb_each_text(ep.headers) h) > 8192;
    IF eps IS NOT NULL THEN
        RAISE WARNING 'webhooks 0.4.0: endpoints % have more headers than 0.4.0 accepts (32, 8 KiB of names and values together); they are sent as they are until changed', eps
            USING HINT = 'See webhooks.endpoint_update(id, headers => ...).';
    END IF;
END $$;
