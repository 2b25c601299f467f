-- Row events: a tracked table publishes <entity>.created/.updated/.deleted for every row written.
--
-- The row trigger runs with the rights of the role writing the table (SECURITY INVOKER): it
-- turns the row into jsonb there (to_jsonb runs the table's own casts and types, which that role
-- may define) and hands plain jsonb and text to webhook_publish, a definer function that
-- evaluates nothing user-defined. So writers of a tracked table need webhooks_publisher, and
-- publish for the tenants their role acts for.
--
-- What is sent is decided by attribute number, not name, and recomputed by an event trigger
-- after any DDL that touches a tracked table (ALTER TABLE, but also ALTER VIEW/TYPE ... RENAME
-- COLUMN, a parent's rename reaching a child, a typed table's type gaining an attribute):
-- exclusions follow a column through RENAME COLUMN,
-- an allow-list (include_columns) sends nothing new, and a column whose name looks secret is
-- never sent unless it is listed in include_columns (ADD COLUMN reset_token included).
--
-- The trigger is per row today; the payload is built from the row alone so that a statement-
-- level trigger over transition tables can build the same payloads set-based later.

CREATE TABLE IF NOT EXISTS webhooks.tracked_tables (
    relid           regclass PRIMARY KEY,
    entity          text NOT NULL,
    exclude_attnums int2[] NOT NULL DEFAULT '{}',
    include_attnums int2[],                -- NULL: every column not excluded
    tenant_attnum   int2,
    auto_excluded   text[] NOT NULL DEFAULT '{}',
    applied         text[],                -- the trigger arguments last applied
    tracked_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE webhooks.tracked_tables IS
    'Tables that publish row events, with the columns kept out (by attribute number, so renames are followed).';
SELECT pg_catalog.pg_extension_config_dump('webhooks.tracked_tables', '');

-- Names that are never sent unless listed in include_columns.
CREATE FUNCTION webhooks_internal._looks_secret(col text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$ SELECT col ~* '(password|passwd|secret|totp|otp_seed|recovery|hash|token|private_key|api_key|salt)' $$;

-- Trigger arguments: entity, excluded column names, tenant column ('' for none), key columns.
CREATE FUNCTION webhooks_internal._emit_row_event() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER
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
    actor jsonb := nullif(pg_catalog.current_setting('webhooks.actor', true), '')::jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_j := pg_catalog.to_jsonb(OLD);
    ELSE
        row_j := pg_catalog.to_jsonb(NEW);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        old_j := pg_catalog.to_jsonb(OLD);
        SELECT pg_catalog.array_agg(k ORDER BY k) INTO changed
        FROM pg_catalog.jsonb_object_keys(row_j) k
        WHERE row_j OPERATOR(pg_catalog.->) k IS DISTINCT FROM old_j OPERATOR(pg_catalog.->) k
          AND k OPERATOR(pg_catalog.<>) ALL (excluded);
        IF changed IS NULL THEN
            RETURN NULL;  -- only excluded columns changed: nothing leaves the database
        END IF;
        payload := pg_catalog.jsonb_build_object(entity, row_j OPERATOR(pg_catalog.-) excluded,
            'changed', pg_catalog.to_jsonb(changed),
            'previous', (SELECT pg_catalog.jsonb_object_agg(c, old_j OPERATOR(pg_catalog.->) c) FROM pg_catalog.unnest(changed) c));
    ELSE
        payload := pg_catalog.jsonb_build_object(entity, row_j OPERATOR(pg_catalog.-) excluded);
    END IF;
    IF pg_catalog.array_length(key_cols, 1) > 0 THEN
        key := entity || ':' || (SELECT pg_catalog.string_agg(row_j OPERATOR(pg_catalog.->>) c, ':' ORDER BY o)
                                 FROM pg_catalog.unnest(key_cols) WITH ORDINALITY u(c, o));
    END IF;
    PERFORM webhooks.webhook_publish(
        entity || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END,
        payload,
        CASE WHEN tenant_col IS NOT NULL THEN row_j OPERATOR(pg_catalog.->>) tenant_col END,
        actor,
        key);
    RETURN NULL;
END $$;

-- (Re)creates the row trigger of a tracked table from its attribute numbers and the table's
-- columns as they are now. Returns the columns kept out because their names look secret.
CREATE FUNCTION webhooks_internal._track_apply(tbl regclass) RETURNS text[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    t webhooks.tracked_tables;
    tenant_col text;
    key_cols text[];
    excluded text[];
    auto text[];
    args text[];
BEGIN
    SELECT * INTO t FROM webhooks.tracked_tables x WHERE x.relid = tbl;
    IF t.tenant_attnum IS NOT NULL THEN
        SELECT a.attname INTO tenant_col FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = tbl AND a.attnum = t.tenant_attnum AND NOT a.attisdropped;
        IF tenant_col IS NULL THEN
            RAISE EXCEPTION 'the tenant column of tracked table % was dropped', tbl
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = pg_catalog.format('Untrack it first: SELECT webhooks.untrack_table(%L);', tbl::text);
        END IF;
    END IF;
    SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.o) INTO key_cols
    FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey) WITH ORDINALITY k(attnum, o), pg_catalog.pg_attribute a
    WHERE i.indrelid = tbl AND i.indisprimary AND a.attrelid = tbl AND a.attnum = k.attnum;
    SELECT pg_catalog.array_agg(a.attname::text ORDER BY a.attnum) FILTER (
               WHERE CASE WHEN t.include_attnums IS NOT NULL THEN NOT a.attnum = ANY (t.include_attnums)
                          ELSE a.attnum = ANY (t.exclude_attnums) OR webhooks_internal._looks_secret(a.attname) END),
           pg_catalog.array_agg(a.attname::text ORDER BY a.attnum) FILTER (
               WHERE t.include_attnums IS NULL AND NOT a.attnum = ANY (t.exclude_attnums)
                 AND webhooks_internal._looks_secret(a.attname))
    INTO excluded, auto
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped;
    -- The entity key goes into events and deliveries: never from a column kept out.
    IF key_cols && excluded THEN
        key_cols := NULL;
    END IF;
    args := ARRAY[t.entity, coalesce(excluded, '{}')::text, coalesce(tenant_col, ''), coalesce(key_cols, '{}')::text];
    -- Unchanged: leave the trigger alone (this runs after every DDL touching the table).
    IF t.applied IS DISTINCT FROM args OR NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = tbl AND g.tgname = 'webhooks_row_event'
    ) THEN
        EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS webhooks_row_event ON %s', tbl);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER webhooks_row_event AFTER INSERT OR UPDATE OR DELETE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION webhooks_internal._emit_row_event(%L, %L, %L, %L)',
            tbl, args[1], args[2], args[3], args[4]);
    END IF;
    UPDATE webhooks.tracked_tables x SET auto_excluded = coalesce(auto, '{}'), applied = args
    WHERE x.relid = tbl;
    RETURN coalesce(auto, '{}');
END $$;

CREATE FUNCTION webhooks_internal._column_attnums(tbl regclass, cols text[], what text) RETURNS int2[]
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    missing text;
    nums int2[];
BEGIN
    SELECT c INTO missing FROM pg_catalog.unnest(cols) c
    WHERE c IS NULL OR NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = tbl AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION '%: column "%" does not exist in %', what, missing, tbl USING ERRCODE = 'undefined_column';
    END IF;
    SELECT coalesce(pg_catalog.array_agg(a.attnum ORDER BY a.attnum), '{}') INTO nums
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = ANY (cols) AND a.attnum > 0 AND NOT a.attisdropped;
    RETURN nums;
END $$;

CREATE FUNCTION webhooks_internal._track_table(
    tbl regclass,
    entity text,
    exclude_columns text[],
    tenant_column text,
    include_columns text[]
) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    rel pg_catalog.pg_class;
    op text;
    auto text[];
BEGIN
    SELECT * INTO rel FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'relation % does not exist', coalesce(tbl::oid::text, 'NULL') USING ERRCODE = 'undefined_table';
    END IF;
    IF NOT pg_catalog.pg_has_role(webhooks_internal._caller(), rel.relowner, 'USAGE') THEN
        RAISE EXCEPTION 'only the owner of % can track it', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF rel.relkind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', tbl USING ERRCODE = 'wrong_object_type';
    END IF;
    IF rel.relpersistence = 't' THEN
        RAISE EXCEPTION '% is a temporary table and cannot be tracked', tbl USING ERRCODE = 'wrong_object_type';
    END IF;
    IF rel.relnamespace IN ('webhooks'::regnamespace, 'pg_catalog'::regnamespace, 'information_schema'::regnamespace)
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = tbl AND d.deptype = 'e') THEN
        RAISE EXCEPTION '% belongs to an extension or the system and cannot be tracked', tbl
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM webhooks_internal._check_event_type_name(entity);
    FOREACH op IN ARRAY ARRAY['created', 'updated', 'deleted'] LOOP
        IF NOT EXISTS (SELECT 1 FROM webhooks.event_types t WHERE t.name = entity || '.' || op) THEN
            RAISE EXCEPTION 'event type "%.%" is not in the catalogue', entity, op
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = pg_catalog.format('Register it: SELECT webhooks.event_type_register(%L);', entity || '.' || op);
        END IF;
    END LOOP;
    -- Rows of tables dropped since they were tracked.
    DELETE FROM webhooks.tracked_tables x
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = x.relid::oid);
    INSERT INTO webhooks.tracked_tables AS x (relid, entity, exclude_attnums, include_attnums, tenant_attnum)
    VALUES (tbl, entity,
            webhooks_internal._column_attnums(tbl, coalesce(exclude_columns, '{}'), 'exclude_columns'),
            CASE WHEN include_columns IS NOT NULL
                 THEN webhooks_internal._column_attnums(tbl, include_columns, 'include_columns') END,
            CASE WHEN tenant_column IS NOT NULL
                 THEN (webhooks_internal._column_attnums(tbl, ARRAY[tenant_column], 'tenant_column'))[1] END)
    ON CONFLICT (relid) DO UPDATE
        SET entity = EXCLUDED.entity, exclude_attnums = EXCLUDED.exclude_attnums,
            include_attnums = EXCLUDED.include_attnums, tenant_attnum = EXCLUDED.tenant_attnum,
            tracked_at = pg_catalog.now();
    auto := webhooks_internal._track_apply(tbl);
    IF pg_catalog.cardinality(auto) > 0 THEN
        RAISE NOTICE 'columns % of % look secret and are not sent', auto, tbl
            USING HINT = 'List a column in include_columns to send it anyway.';
    END IF;
    RETURN pg_catalog.format('%s publishes %s.created, %s.updated and %s.deleted', tbl, entity, entity, entity);
END $$;

CREATE FUNCTION webhooks_internal._untrack_table(tbl regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    IF NOT pg_catalog.pg_has_role(webhooks_internal._caller(), (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE') THEN
        RAISE EXCEPTION 'only the owner of % can untrack it', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM webhooks.tracked_tables x WHERE x.relid = tbl;
    EXECUTE pg_catalog.format('DROP TRIGGER IF EXISTS webhooks_row_event ON %s', tbl);
END $$;

-- After any DDL command that touches a tracked table, directly or through a parent, a view
-- name (ALTER VIEW ... RENAME COLUMN reaches tables too) or a typed table's type: the trigger is
-- rebuilt in the same transaction, so no row is ever written under stale column names. Tables
-- whose trigger is already right are left alone.
CREATE FUNCTION webhooks_internal._on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    r record;
    before text[];
    auto text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhooks.tracked_tables) THEN
        RETURN;
    END IF;
    FOR r IN SELECT t.relid, t.auto_excluded FROM webhooks.tracked_tables t
             WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.relid::oid)
    LOOP
        before := r.auto_excluded;
        auto := webhooks_internal._track_apply(r.relid);
        IF EXISTS (SELECT 1 FROM pg_catalog.unnest(auto) a WHERE NOT a = ANY (before)) THEN
            RAISE WARNING 'columns % of tracked table % look secret and are not sent in row events', auto, r.relid
                USING HINT = 'List a column in track_table(..., include_columns => ...) to send it anyway.';
        END IF;
    END LOOP;
END $$;

CREATE EVENT TRIGGER webhooks_track_ddl ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE',
                 'ALTER TYPE', 'ALTER DOMAIN', 'CREATE TABLE', 'ALTER INDEX')
    EXECUTE FUNCTION webhooks_internal._on_ddl();

-- Dropped tables leave no row behind (any command: DROP TABLE, DROP SCHEMA ... CASCADE,
-- DROP OWNED), so that no later table that gets the same oid inherits a tracking.
CREATE FUNCTION webhooks_internal._on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    IF pg_catalog.to_regclass('webhooks.tracked_tables') IS NULL THEN
        RETURN;
    END IF;
    DELETE FROM webhooks.tracked_tables t
    USING pg_catalog.pg_event_trigger_dropped_objects() o
    WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objsubid = 0 AND o.objid = t.relid::oid;
END $$;

CREATE EVENT TRIGGER webhooks_track_drop ON sql_drop
    EXECUTE FUNCTION webhooks_internal._on_drop();
