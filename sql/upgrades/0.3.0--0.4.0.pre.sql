-- webhooks 0.3.0 -> 0.4.0, part 1: bring what 0.3.0 left to where the 0.4.0 install script can
-- run over it. scripts/upgrade-scripts.sh glues this, the 0.4.0 install script and part 2 into
-- sql/webhooks--0.3.0--0.4.0.sql: the tables are altered in place here (no data is copied),
-- every other object (functions, views, triggers, policies, grants) is dropped here and made
-- again by the very statements that make a fresh 0.4.0, so both end as the same schema.

DO $$
DECLARE
    ext oid := (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'webhooks');
    blockers text;
    r record;
BEGIN
    -- Dropping 0.3.0's functions and views (CASCADE takes the triggers and policies 0.3.0 made
    -- with them) must not take anything of the user's: any other object built on them (a view,
    -- a function, a policy or trigger on a user's table, a column default, a check, a generated
    -- column) stops the upgrade, named, before anything changed. The one exception is the row
    -- triggers of tracked tables (webhooks.tracked_tables keeps them), made again in part 2.
    SELECT pg_catalog.string_agg(DISTINCT CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::regclass
                THEN pg_catalog.pg_describe_object('pg_catalog.pg_class'::regclass,
                         (SELECT w.ev_class FROM pg_catalog.pg_rewrite w WHERE w.oid = d.objid), 0)
                ELSE pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) END, ', ')
    INTO blockers
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_depend m
      ON m.classid = d.refclassid AND m.objid = d.refobjid
     AND m.refclassid = 'pg_catalog.pg_extension'::regclass AND m.refobjid = ext AND m.deptype = 'e'
    WHERE d.deptype IN ('n', 'a')
      AND (m.classid = 'pg_catalog.pg_proc'::regclass
           OR (m.classid = 'pg_catalog.pg_class'::regclass
               AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = m.objid) = 'v'))
      -- the object's own table (trigger, policy, rule, default, constraint), if it has one
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_depend x
          WHERE x.refobjid = ext AND x.deptype = 'e' AND x.classid = 'pg_catalog.pg_class'::regclass
            AND x.objid = CASE d.classid
                WHEN 'pg_catalog.pg_trigger'::regclass THEN (SELECT t.tgrelid FROM pg_catalog.pg_trigger t WHERE t.oid = d.objid)
                WHEN 'pg_catalog.pg_policy'::regclass THEN (SELECT p.polrelid FROM pg_catalog.pg_policy p WHERE p.oid = d.objid)
                WHEN 'pg_catalog.pg_rewrite'::regclass THEN (SELECT w.ev_class FROM pg_catalog.pg_rewrite w WHERE w.oid = d.objid)
                WHEN 'pg_catalog.pg_attrdef'::regclass THEN (SELECT a.adrelid FROM pg_catalog.pg_attrdef a WHERE a.oid = d.objid)
                WHEN 'pg_catalog.pg_constraint'::regclass THEN (SELECT c.conrelid FROM pg_catalog.pg_constraint c WHERE c.oid = d.objid)
                WHEN 'pg_catalog.pg_class'::regclass THEN d.objid
                ELSE NULL END)
      AND NOT EXISTS (
          SELECT 1 FROM pg_catalog.pg_depend x
          WHERE x.refobjid = ext AND x.deptype = 'e' AND x.classid = d.classid AND x.objid = d.objid)
      AND NOT (d.classid = 'pg_catalog.pg_trigger'::regclass
               AND EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
                           WHERE t.oid = d.objid AND t.tgfoid IN ('webhooks_internal._emit_row_events()'::regprocedure, 'webhooks_internal._condition_holder()'::regprocedure)));
    IF blockers IS NOT NULL THEN
        RAISE EXCEPTION 'webhooks 0.3.0 -> 0.4.0 would drop objects built on the extension: %', blockers
            USING HINT = 'Drop them, run ALTER EXTENSION webhooks UPDATE, then create them again.';
    END IF;

    FOR r IN
        SELECT et.evtname FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_event_trigger et ON d.classid = 'pg_catalog.pg_event_trigger'::regclass AND et.oid = d.objid
        WHERE d.refobjid = ext AND d.deptype = 'e'
    LOOP
        EXECUTE pg_catalog.format('DROP EVENT TRIGGER %I', r.evtname);
    END LOOP;
    FOR r IN
        SELECT d.objid::regclass AS v FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_class c ON d.classid = 'pg_catalog.pg_class'::regclass AND c.oid = d.objid
        WHERE d.refobjid = ext AND d.deptype = 'e' AND c.relkind = 'v'
    LOOP
        EXECUTE pg_catalog.format('DROP VIEW %s CASCADE', r.v);
    END LOOP;
    -- CASCADE takes the triggers and policies that call them, on our tables and on tracked ones.
    FOR r IN
        SELECT d.objid::regprocedure AS f FROM pg_catalog.pg_depend d
        WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.refobjid = ext AND d.deptype = 'e'
    LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION %s CASCADE', r.f);
    END LOOP;
    -- What 0.3.0 made on its tables that CASCADE did not take, by name (a user's own trigger or
    -- policy on these tables stays).
    FOR r IN
        SELECT p.polname, p.polrelid::regclass AS t FROM pg_catalog.pg_policy p
        WHERE p.polname = 'tenant_isolation'
          AND p.polrelid IN ('webhooks.endpoints'::regclass, 'webhooks.events'::regclass,
                             'webhooks.deliveries'::regclass, 'webhooks.attempts'::regclass)
        UNION ALL
        SELECT p.polname, p.polrelid::regclass FROM pg_catalog.pg_policy p
        WHERE p.polname = 'owner_only' AND p.polrelid = 'webhooks.tracked_tables'::regclass
    LOOP
        EXECUTE pg_catalog.format('DROP POLICY %I ON %s', r.polname, r.t);
    END LOOP;
    FOR r IN
        SELECT t.tgname, t.tgrelid::regclass AS t FROM pg_catalog.pg_trigger t
        WHERE NOT t.tgisinternal
          AND (t.tgname, t.tgrelid) IN (('endpoints_cascade', 'webhooks.endpoints'::regclass),
                                       ('events_cascade', 'webhooks.events'::regclass),
                                       ('deliveries_cascade', 'webhooks.deliveries'::regclass),
                                       ('endpoints_before_write', 'webhooks.endpoints'::regclass))
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', r.tgname, r.t);
    END LOOP;
END $$;

-- Privileges are granted again, exactly, by the install script.
REVOKE ALL ON ALL TABLES IN SCHEMA webhooks FROM PUBLIC, webhooks_admin, webhooks_publisher;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA webhooks FROM PUBLIC, webhooks_admin, webhooks_publisher;
REVOKE ALL ON SCHEMA webhooks FROM PUBLIC, webhooks_admin, webhooks_publisher;

-- The tables, in place. New columns go last, as in sql/schema.sql.

-- What a claimed delivery costs the worker's memory: its event's data as sent, recorded with
-- the event, each delivery and each fanout (rows from before 0.4.0 are measured when claimed).
ALTER TABLE webhooks.events ADD COLUMN data_bytes int;
ALTER TABLE webhooks.deliveries ADD COLUMN data_bytes int;
ALTER TABLE webhooks_internal.fanouts ADD COLUMN data_bytes int[];

-- An operational event's filtered endpoints are matched by the worker's expansion, not by the
-- statement that records outcomes (a tenant's filter must not hold up everyone's recording).
ALTER TABLE webhooks_internal.fanouts ADD COLUMN filtered boolean NOT NULL DEFAULT false;

-- Endpoint filters are held to a bounded cost; each records its weight (part 2 computes it).
ALTER TABLE webhooks.endpoints ADD COLUMN filter_weight int;

-- What a claimed request carries of its endpoint is counted in the worker's memory.
ALTER TABLE webhooks.endpoints ADD COLUMN request_bytes int GENERATED ALWAYS AS (
    pg_catalog.octet_length(url) + pg_catalog.octet_length(headers::text) + pg_catalog.octet_length(secret)
    + coalesce(pg_catalog.octet_length(previous_secret), 0) + coalesce(pg_catalog.octet_length(tls_client_cert), 0)
    + coalesce(pg_catalog.octet_length(tls_client_key), 0)) STORED;

-- Secrets are stored sealed from 0.4.0 on (part 2 seals those already there); why the worker
-- cannot open an endpoint's is noted here.
ALTER TABLE webhooks.endpoints ADD COLUMN secret_problem text;

-- Tracked tables: what their row events carry is decided at each statement from the catalog
-- (webhooks.tracked_columns). Secret-looking columns stay out by attribute number once seen:
-- those 0.3.0 kept out by name are remembered as they are now.
ALTER TABLE webhooks.tracked_tables ADD COLUMN secret_attnums int2[] NOT NULL DEFAULT '{}';
ALTER TABLE webhooks.tracked_tables ADD COLUMN problem text;
UPDATE webhooks.tracked_tables t
SET secret_attnums = coalesce((SELECT pg_catalog.array_agg(a.attnum ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
                               WHERE a.attrelid = t.relid AND a.attnum > 0 AND NOT a.attisdropped
                                 AND a.attname::text = ANY (t.auto_excluded)), '{}');

-- ---------------------------------------------------------------------------------------------
-- The 0.4.0 install script follows.
-- ---------------------------------------------------------------------------------------------
