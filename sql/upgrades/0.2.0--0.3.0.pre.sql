-- webhooks 0.2.0 -> 0.3.0, part 1: bring what 0.2.0 left to where the 0.3.0 install script can
-- run over it. scripts/upgrade-scripts.sh glues this, the 0.3.0 install script and part 2 into
-- sql/webhooks--0.2.0--0.3.0.sql: the tables are altered in place here (no data is copied),
-- every other object (functions, views, triggers, policies, grants) is dropped here and made
-- again by the very statements that make a fresh 0.3.0, so both end as the same schema.

DO $$
DECLARE
    ext oid := (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'webhooks');
    blockers text;
    r record;
BEGIN
    -- Dropping 0.2.0's functions and views (CASCADE takes the triggers and policies 0.2.0 made
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
                           WHERE t.oid = d.objid AND t.tgfoid = 'webhooks_internal._emit_row_event()'::regprocedure));
    IF blockers IS NOT NULL THEN
        RAISE EXCEPTION 'webhooks 0.2.0 -> 0.3.0 would drop objects built on the extension: %', blockers
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
    -- What 0.2.0 made on its tables that CASCADE did not take, by name (a user's own trigger or
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

-- Privileges are granted again, exactly, by the install script (admins lose their UPDATE on
-- deliveries: delivery_retry, endpoint_recover and event_replay change them as the owner).
REVOKE ALL ON ALL TABLES IN SCHEMA webhooks FROM PUBLIC, webhooks_admin, webhooks_publisher;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA webhooks FROM PUBLIC, webhooks_admin, webhooks_publisher;
REVOKE ALL ON SCHEMA webhooks FROM PUBLIC, webhooks_admin, webhooks_publisher;

-- The tables, in place. New columns go last, as in sql/schema.sql.
--
-- A delivery records its endpoint's tenant; the claim matches the endpoint by id and tenant.
-- Every row gets it from its endpoint as it is now (a retried or recovered row is matched too).
-- Not the endpoint's tenant as it is now: 0.2.0 let an endpoint change tenant while work
-- waited, and that work belongs to the tenant it was made for. A non-platform endpoint only
-- ever received its own tenant's events, so the event's tenant is the endpoint's tenant of the
-- time; work that now matches no endpoint by id and tenant is parked, never sent across.
ALTER TABLE webhooks.deliveries ADD COLUMN endpoint_tenant text;
-- The worker that claimed it (several workers each lease their part of an endpoint's allowance).
ALTER TABLE webhooks.deliveries ADD COLUMN claimed_by int;
-- The check of the deliveries' states is a function call in 0.3.0 (sql/states.sql makes it).
ALTER TABLE webhooks.deliveries DROP CONSTRAINT deliveries_state;
-- The publishing session's trace context (webhooks.traceparent), sent with every attempt.
ALTER TABLE webhooks.events ADD COLUMN traceparent text;
-- Per endpoint, what receivers get (the Standard Webhooks envelope, or seed 004's hmac-hex).
ALTER TABLE webhooks.endpoints ADD COLUMN format text NOT NULL DEFAULT 'standard-webhooks'
    CHECK (format IN ('standard-webhooks', 'hmac-hex'));
ALTER TABLE webhooks.endpoints ADD COLUMN header_prefix text;
-- v1a (ed25519) signatures per endpoint.
ALTER TABLE webhooks.endpoints ADD COLUMN signature text NOT NULL DEFAULT 'v1' CHECK (signature IN ('v1', 'v1a'));
ALTER TABLE webhooks.endpoints ADD COLUMN public_key text;
-- Filters on content.
ALTER TABLE webhooks.endpoints ADD COLUMN filter jsonpath;
-- track_table's condition.
ALTER TABLE webhooks.tracked_tables ADD COLUMN condition text;
UPDATE webhooks.deliveries d
SET endpoint_tenant = CASE WHEN EXISTS (SELECT 1 FROM webhooks.endpoints ep
                                        WHERE ep.id = d.endpoint_id AND ep.tenant_id = '*')
                           THEN '*' ELSE d.tenant_id END
WHERE d.tenant_id IS NOT NULL
   OR EXISTS (SELECT 1 FROM webhooks.endpoints ep WHERE ep.id = d.endpoint_id AND ep.tenant_id = '*');

-- Operational events about platform endpoints were published as the tenant's (or as no
-- tenant's): they are the platform's.
UPDATE webhooks.events e SET tenant_id = '*'
WHERE starts_with(e.type, 'webhook.') AND e.tenant_id IS DISTINCT FROM '*'
  AND EXISTS (SELECT 1 FROM webhooks.endpoints ep WHERE ep.id = e.data ->> 'endpoint_id' AND ep.tenant_id = '*');

-- Tenant bindings by role, not by name. A binding whose role no longer exists would have
-- bound the next role created with that name: it goes, and says so. Whether tenants were in
-- use is remembered first (part 2 keeps it): removing bindings must never widen a scope.
CREATE TABLE webhooks._upgrade_tenancy AS
SELECT EXISTS (SELECT 1 FROM webhooks.tenant_roles) AS in_use;
DO $$
DECLARE
    gone text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('%s -> %s', t.role_name, t.tenant_id), ', ') INTO gone
    FROM webhooks.tenant_roles t
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = t.role_name);
    IF gone IS NOT NULL THEN
        DELETE FROM webhooks.tenant_roles t
        WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = t.role_name);
        RAISE NOTICE 'webhooks 0.3.0: tenant bindings of roles that no longer exist were removed: %', gone;
    END IF;
END $$;
-- quote_ident: the name exactly as stored (regrole's input would fold case, split on dots and
-- read digits as an oid).
ALTER TABLE webhooks.tenant_roles ALTER COLUMN role_name TYPE regrole USING quote_ident(role_name)::regrole;

-- Synchronous events carried OTP codes and magic links; 0.3.0 keeps none of their data.
UPDATE webhooks.events e SET data = '{}'
WHERE e.data <> '{}'
  AND (EXISTS (SELECT 1 FROM webhooks.deliveries d WHERE d.event_id = e.id AND d.sync)
       OR e.type IN (SELECT t.name FROM webhooks.event_types t WHERE t.mode = 'sync'));

-- Endpoints are matched by coalesce(tenant_id, '') (publishing and RLS): the index is made again
-- on that expression by the install script.
DROP INDEX IF EXISTS webhooks.endpoints_tenant;

-- ---------------------------------------------------------------------------------------------
-- The 0.3.0 install script follows.
-- ---------------------------------------------------------------------------------------------
