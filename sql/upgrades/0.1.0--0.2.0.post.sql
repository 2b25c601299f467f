
-- ---------------------------------------------------------------------------------------------
-- webhooks 0.1.0 -> 0.2.0, part 2: what needs the 0.2.0 functions.
-- ---------------------------------------------------------------------------------------------

-- Track again what 0.1.0 tracked, with the same entity, exclusions and tenant column. 0.2.0
-- also keeps secret-looking columns out unless listed in include_columns: the NOTICE says
-- which ones a table now keeps to itself.
DO $$
DECLARE
    r record;
    said text;
BEGIN
    FOR r IN SELECT * FROM webhooks._upgrade_tracked ORDER BY relid::oid LOOP
        said := webhooks_internal._track_table(r.relid, r.entity, r.exclude_columns, r.tenant_column, NULL);
        RAISE NOTICE 'webhooks 0.2.0: %', said;
    END LOOP;
END $$;
DROP TABLE webhooks._upgrade_tracked;

-- 0.1.0 sent every tenant's events to an endpoint without a tenant; 0.2.0 sends it only the
-- events without a tenant ('*' is every tenant). Say so where it changes what is delivered.
DO $$
DECLARE
    eps text;
BEGIN
    IF EXISTS (SELECT 1 FROM webhooks.events WHERE tenant_id IS NOT NULL LIMIT 1) THEN
        SELECT pg_catalog.string_agg(id, ', ' ORDER BY id) INTO eps
        FROM webhooks.endpoints WHERE tenant_id IS NULL;
        IF eps IS NOT NULL THEN
            RAISE NOTICE 'webhooks 0.2.0: endpoints % have no tenant and now receive only events without a tenant', eps
                USING HINT = 'To keep sending them every tenant''s events: UPDATE webhooks.endpoints SET tenant_id = ''*'' WHERE id IN (...);';
        END IF;
    END IF;
END $$;
