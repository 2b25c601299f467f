-- Row events: a tracked table publishes <entity>.created/.updated/.deleted for every row written.
--
-- The triggers run with the rights of the role writing the table (SECURITY INVOKER): they
-- turn the rows into jsonb there (to_jsonb runs the table's own casts and types, which that role
-- may define) and hand plain jsonb and text to webhook_publish_many, an entry point that
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
-- The triggers are per statement: a bulk INSERT, UPDATE or DELETE turns its transition table into
-- payloads with set-based statements and publishes them with one webhook_publish_many call.

CREATE TABLE IF NOT EXISTS webhooks.tracked_tables (
    relid           regclass PRIMARY KEY,
    entity          text NOT NULL,
    exclude_attnums int2[] NOT NULL DEFAULT '{}',
    include_attnums int2[],                -- NULL: every column not excluded
    tenant_attnum   int2,
    auto_excluded   text[] NOT NULL DEFAULT '{}',
    applied         text[],                -- the trigger arguments last applied
    tracked_at      timestamptz NOT NULL DEFAULT now(),
    -- Added in 0.3.0: SQL over OLD and NEW; rows it is not true for publish nothing.
    condition       text
);
COMMENT ON TABLE webhooks.tracked_tables IS
    'Tables that publish row events, with the columns kept out (by attribute number, so renames are followed).';
SELECT pg_catalog.pg_extension_config_dump('webhooks.tracked_tables', '');

-- Names that are never sent unless listed in include_columns.
CREATE FUNCTION webhooks_internal._looks_secret(col text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$ SELECT col ~* '(password|passwd|secret|totp|otp_seed|recovery|hash|token|private_key|api_key|salt)' $$;

-- Trigger arguments: entity, excluded column names, tenant column ('' for none), key columns (the
-- entity key is entity:value of each primary key column, joined by ':'), the columns sent.
-- One call per statement (AFTER ... FOR EACH STATEMENT, with the statement's transition table):
-- the rows become jsonb here, with the writer's rights, and their events are published by one
-- webhook_publish_many call, in the order the statement wrote the rows.
CREATE FUNCTION webhooks_internal._emit_row_events() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entity text := TG_ARGV[0];
    excluded text[] := TG_ARGV[1]::text[];
    tenant_col text := nullif(TG_ARGV[2], '');
    key_cols text[] := TG_ARGV[3]::text[];
    nkeys int := pg_catalog.cardinality(TG_ARGV[3]::text[]);
    actor jsonb := nullif(pg_catalog.current_setting('webhooks.actor', true), '')::jsonb;
    payloads jsonb[];
    tenants text[];
    keys text[];
    compared text;
    differs text;
    same text;
    -- track_table's condition: rows it is not true for publish nothing
    cond text := nullif(TG_ARGV[5], '');
    -- the entity key in the dynamic statements below, %1$s standing for the row's jsonb
    key_sql constant text := $k$CASE
        WHEN $5 OPERATOR(pg_catalog.=) 1 THEN $1 OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) (%1$s OPERATOR(pg_catalog.->>) $4[1])
        WHEN $5 OPERATOR(pg_catalog.>) 1 THEN $1 OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) (
            SELECT pg_catalog.string_agg(%1$s OPERATOR(pg_catalog.->>) c, ':' ORDER BY o)
            FROM pg_catalog.unnest($4) WITH ORDINALITY u(c, o)) END$k$;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- The transition tables hold the old and the new version of each row at the same
        -- position. Which sent columns changed is one comparison per column, written out for
        -- this table's columns (the last trigger argument): no per-row subquery. Rows where only
        -- excluded columns changed send nothing.
        -- (a row moved to a partition whose trigger dropped it has no new version: refuse
        -- rather than pair rows wrongly)
        IF (SELECT pg_catalog.count(*) FROM old_rows) <> (SELECT pg_catalog.count(*) FROM new_rows) THEN
            RAISE EXCEPTION 'row events of %: the statement changed % rows but kept %', TG_TABLE_NAME,
                (SELECT pg_catalog.count(*) FROM old_rows), (SELECT pg_catalog.count(*) FROM new_rows)
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
        -- c1, c2, ...: whether each sent column differs, compared once per row as sent (jsonb).
        SELECT pg_catalog.string_agg(pg_catalog.format(
                   '(p.nj OPERATOR(pg_catalog.->) %L) IS DISTINCT FROM (p.oj OPERATOR(pg_catalog.->) %L) AS c%s', c, c, o), ', '),
               pg_catalog.string_agg(pg_catalog.format('CASE WHEN b.c%s THEN %L END', o, c), ', '),
               pg_catalog.string_agg(pg_catalog.format('CASE WHEN NOT b.c%s THEN %L END', o, c), ', ')
        INTO compared, differs, same
        FROM pg_catalog.unnest(TG_ARGV[4]::text[]) WITH ORDINALITY u(c, o);
        -- Without a condition, the two versions are zipped by position: no join and no sort.
        -- The aggregates read the zipped rows as they come, in the statement's order (one
        -- function scan, no join, no grouping, nothing parallel: transition tables are not
        -- shared with workers); a join on row numbers and an ordered aggregate per array made
        -- a 50,000-row UPDATE's trigger take twice as long. A condition names OLD and NEW by
        -- their columns, which needs the rows themselves: joined by position, then sorted back
        -- into the statement's order.
        EXECUTE pg_catalog.format($q$
            SELECT pg_catalog.array_agg(pg_catalog.jsonb_build_object(
                       $1, p.nj OPERATOR(pg_catalog.-) $2,
                       'changed', pg_catalog.to_jsonb(p.ch),
                       'previous', p.oj OPERATOR(pg_catalog.-) ($2 OPERATOR(pg_catalog.||) p.unchanged)) %1$s),
                   pg_catalog.array_agg(p.nj OPERATOR(pg_catalog.->>) $3 %1$s),
                   pg_catalog.array_agg(%2$s %1$s)
            FROM (SELECT b.i, b.nj, b.oj,
                         pg_catalog.array_remove(ARRAY[%3$s]::text[], NULL) AS ch,
                         pg_catalog.array_remove(ARRAY[%4$s]::text[], NULL) AS unchanged
                  FROM (SELECT p.i, p.nj, p.oj, %5$s FROM (%6$s) p OFFSET 0) b) p
            WHERE pg_catalog.cardinality(p.ch) OPERATOR(pg_catalog.>) 0 $q$,
            CASE WHEN cond IS NOT NULL THEN 'ORDER BY p.i' ELSE '' END,
            pg_catalog.format(key_sql, 'p.nj'),
            coalesce(differs, 'NULL'), coalesce(same, 'NULL'), coalesce(compared, 'true AS c0'),
            CASE WHEN cond IS NULL THEN
                -- (the versions held in memory without the columns kept out, the tenant's aside:
                -- a 1 MB document excluded from each row would otherwise fill them)
                'SELECT u.i, u.nj, u.oj FROM ROWS FROM ('
                'pg_catalog.unnest(ARRAY(SELECT pg_catalog.to_jsonb(x) OPERATOR(pg_catalog.-) $6 FROM old_rows x)), '
                'pg_catalog.unnest(ARRAY(SELECT pg_catalog.to_jsonb(x) OPERATOR(pg_catalog.-) $6 FROM new_rows x))) WITH ORDINALITY u(oj, nj, i)'
            ELSE pg_catalog.format(
                'SELECT n.i, pg_catalog.to_jsonb(n.x) AS nj, pg_catalog.to_jsonb(o.x) AS oj '
                'FROM (SELECT x, pg_catalog.row_number() OVER () AS i FROM new_rows x) n '
                'JOIN (SELECT x, pg_catalog.row_number() OVER () AS i FROM old_rows x) o ON o.i OPERATOR(pg_catalog.=) n.i, '
                'LATERAL (SELECT (n.x).*) AS new, LATERAL (SELECT (o.x).*) AS old WHERE (%s)', cond) END)
        INTO payloads, tenants, keys
        USING entity, excluded, tenant_col, key_cols, nkeys, pg_catalog.array_remove(excluded, tenant_col);
    ELSIF cond IS NOT NULL THEN
        -- INSERT or DELETE under a condition: the other side's columns are NULL.
        EXECUTE pg_catalog.format($q$
            SELECT pg_catalog.array_agg(pg_catalog.jsonb_build_object($1, r.j OPERATOR(pg_catalog.-) $2)),
                   pg_catalog.array_agg(r.j OPERATOR(pg_catalog.->>) $3) FILTER (WHERE $3 IS NOT NULL),
                   pg_catalog.array_agg(%s) FILTER (WHERE $5 OPERATOR(pg_catalog.>) 0)
            FROM (SELECT pg_catalog.to_jsonb(%s) AS j FROM %s AS %s CROSS JOIN LATERAL (SELECT (NULL::%s).*) AS %s
                  WHERE (%s)) r $q$,
            pg_catalog.format(key_sql, 'r.j'),
            CASE TG_OP WHEN 'INSERT' THEN 'new' ELSE 'old' END,
            CASE TG_OP WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END,
            CASE TG_OP WHEN 'INSERT' THEN 'new' ELSE 'old' END,
            TG_RELID::regclass,
            CASE TG_OP WHEN 'INSERT' THEN 'old' ELSE 'new' END,
            cond)
        INTO payloads, tenants, keys
        USING entity, excluded, tenant_col, key_cols, nkeys;
    ELSIF TG_OP = 'INSERT' THEN
        -- (INSERT and DELETE are spelled out, not built as text: their plans are kept between
        -- statements, which a one-row INSERT per transaction feels)
        SELECT pg_catalog.array_agg(pg_catalog.jsonb_build_object(entity, r.j OPERATOR(pg_catalog.-) excluded)),
               pg_catalog.array_agg(r.j OPERATOR(pg_catalog.->>) tenant_col) FILTER (WHERE tenant_col IS NOT NULL),
               pg_catalog.array_agg(CASE WHEN nkeys OPERATOR(pg_catalog.=) 1 THEN entity OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) (r.j OPERATOR(pg_catalog.->>) key_cols[1])
                        WHEN nkeys OPERATOR(pg_catalog.>) 1 THEN entity OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) (
                            SELECT pg_catalog.string_agg(r.j OPERATOR(pg_catalog.->>) c, ':' ORDER BY o)
                            FROM pg_catalog.unnest(key_cols) WITH ORDINALITY u(c, o)) END)
                   FILTER (WHERE nkeys OPERATOR(pg_catalog.>) 0)
        INTO payloads, tenants, keys
        FROM (SELECT pg_catalog.to_jsonb(x) AS j FROM new_rows x) r;
    ELSE
        SELECT pg_catalog.array_agg(pg_catalog.jsonb_build_object(entity, r.j OPERATOR(pg_catalog.-) excluded)),
               pg_catalog.array_agg(r.j OPERATOR(pg_catalog.->>) tenant_col) FILTER (WHERE tenant_col IS NOT NULL),
               pg_catalog.array_agg(CASE WHEN nkeys OPERATOR(pg_catalog.=) 1 THEN entity OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) (r.j OPERATOR(pg_catalog.->>) key_cols[1])
                        WHEN nkeys OPERATOR(pg_catalog.>) 1 THEN entity OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) (
                            SELECT pg_catalog.string_agg(r.j OPERATOR(pg_catalog.->>) c, ':' ORDER BY o)
                            FROM pg_catalog.unnest(key_cols) WITH ORDINALITY u(c, o)) END)
                   FILTER (WHERE nkeys OPERATOR(pg_catalog.>) 0)
        INTO payloads, tenants, keys
        FROM (SELECT pg_catalog.to_jsonb(x) AS j FROM old_rows x) r;
    END IF;
    -- One row (most writes of an application): the single form, which does less for one event.
    IF pg_catalog.cardinality(payloads) OPERATOR(pg_catalog.=) 1 THEN
        PERFORM webhooks.webhook_publish(
            entity || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END,
            payloads[1], tenants[1], actor, keys[1]);
    ELSIF payloads IS NOT NULL THEN
        PERFORM webhooks.webhook_publish_many(
            entity || CASE TG_OP WHEN 'INSERT' THEN '.created' WHEN 'UPDATE' THEN '.updated' ELSE '.deleted' END,
            payloads,
            CASE WHEN tenant_col IS NOT NULL THEN tenants END,
            actor,
            CASE WHEN nkeys OPERATOR(pg_catalog.>) 0 THEN keys END);
    END IF;
    RETURN NULL;
END $$;

-- A tracked table's condition is kept by PostgreSQL itself, as the WHEN clause of a disabled
-- row trigger (webhooks_row_condition): checked when made, and it follows renamed columns. The
-- statement triggers read it back from there and evaluate it with the writer's rights.
CREATE FUNCTION webhooks_internal._condition_holder() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$ BEGIN RETURN NULL; END $$;

-- The condition as PostgreSQL prints it now: what lies between the definition's known
-- beginning and end (no pattern that a table name could fool), every name outside pg_catalog
-- qualified (so the writer's search_path cannot change what it calls).
CREATE FUNCTION webhooks_internal._condition_of(tbl regclass) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$
    SELECT CASE WHEN pg_catalog.starts_with(x.d, x.p) AND pg_catalog.right(x.d, pg_catalog.length(x.s)) = x.s
                THEN pg_catalog.substr(x.d, pg_catalog.length(x.p) + 1,
                                       pg_catalog.length(x.d) - pg_catalog.length(x.p) - pg_catalog.length(x.s)) END
    FROM (SELECT pg_catalog.pg_get_triggerdef(g.oid) AS d,
                 'CREATE TRIGGER webhooks_row_condition AFTER UPDATE ON ' || pg_catalog.quote_ident(n.nspname) || '.'
                     || pg_catalog.quote_ident(c.relname) || ' FOR EACH ROW WHEN (' AS p,
                 ') EXECUTE FUNCTION webhooks_internal._condition_holder()' AS s
          FROM pg_catalog.pg_trigger g
          JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE g.tgrelid = tbl AND g.tgname = 'webhooks_row_condition') x
$$;

-- The triggers of a tracked table, 0.2.0's row trigger included.
CREATE FUNCTION webhooks_internal._drop_row_triggers(tbl regclass, with_condition boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    g text;
BEGIN
    FOR g IN SELECT x.tgname FROM pg_catalog.pg_trigger x
             WHERE x.tgrelid = tbl AND NOT x.tgisinternal
               AND (x.tgname IN ('webhooks_row_event', 'webhooks_row_insert', 'webhooks_row_update', 'webhooks_row_delete')
                    OR (with_condition AND x.tgname = 'webhooks_row_condition'))
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', g, tbl);
    END LOOP;
END $$;

-- (Re)creates the row triggers of a tracked table from its attribute numbers and the table's
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
    sent text[];
    args text[];
BEGIN
    SELECT * INTO t FROM webhooks.tracked_tables x WHERE x.relid = tbl;
    -- (the ALTER TABLE below calls this function again through the event trigger: that call
    -- finds the condition trigger made and makes nothing more)
    IF t.condition IS NOT NULL AND webhooks_internal._condition_of(tbl) IS NULL THEN
        -- A row trigger on UPDATE may name OLD and NEW: PostgreSQL checks the condition here,
        -- once it is known to be one expression and nothing more (this runs as the owner).
        PERFORM webhooks_internal._check_condition(t.condition);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER webhooks_row_condition AFTER UPDATE ON %s FOR EACH ROW WHEN (%s' || E'\n'
            ') EXECUTE FUNCTION webhooks_internal._condition_holder()', tbl, t.condition);
        EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE TRIGGER webhooks_row_condition', tbl);
    ELSIF t.condition IS NULL AND webhooks_internal._condition_of(tbl) IS NOT NULL THEN
        EXECUTE pg_catalog.format('DROP TRIGGER webhooks_row_condition ON %s', tbl);
    END IF;
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
    SELECT pg_catalog.array_agg(a.attname::text ORDER BY a.attname::text) INTO sent
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped
      AND NOT a.attname::text = ANY (coalesce(excluded, '{}'));
    args := ARRAY[t.entity, coalesce(excluded, '{}')::text, coalesce(tenant_col, ''), coalesce(key_cols, '{}')::text,
                  coalesce(sent, '{}')::text, coalesce(webhooks_internal._condition_of(tbl), '')];
    -- Unchanged: leave the trigger alone (this runs after every DDL touching the table).
    -- One statement trigger per operation: a trigger with transition tables serves one event.
    IF t.applied IS DISTINCT FROM args OR (
        SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger g
        WHERE g.tgrelid = tbl AND g.tgname IN ('webhooks_row_insert', 'webhooks_row_update', 'webhooks_row_delete')
    ) <> 3 THEN
        PERFORM webhooks_internal._drop_row_triggers(tbl);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER webhooks_row_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION webhooks_internal._emit_row_events(%L, %L, %L, %L, %L, %L)',
            tbl, args[1], args[2], args[3], args[4], args[5], args[6]);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER webhooks_row_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION webhooks_internal._emit_row_events(%L, %L, %L, %L, %L, %L)',
            tbl, args[1], args[2], args[3], args[4], args[5], args[6]);
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER webhooks_row_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION webhooks_internal._emit_row_events(%L, %L, %L, %L, %L, %L)',
            tbl, args[1], args[2], args[3], args[4], args[5], args[6]);
    END IF;
    UPDATE webhooks.tracked_tables x SET auto_excluded = coalesce(auto, '{}'), applied = args,
        condition = nullif(args[6], '')
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
    include_columns text[],
    condition text
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
    -- A new condition replaces the old one (made again from the text given).
    IF webhooks_internal._condition_of(tbl) IS NOT NULL THEN
        EXECUTE pg_catalog.format('DROP TRIGGER webhooks_row_condition ON %s', tbl);
    END IF;
    IF nullif(condition, '') IS NOT NULL THEN
        PERFORM webhooks_internal._check_condition(condition);
    END IF;
    INSERT INTO webhooks.tracked_tables AS x (relid, entity, exclude_attnums, include_attnums, tenant_attnum, condition)
    VALUES (tbl, entity,
            webhooks_internal._column_attnums(tbl, coalesce(exclude_columns, '{}'), 'exclude_columns'),
            CASE WHEN include_columns IS NOT NULL
                 THEN webhooks_internal._column_attnums(tbl, include_columns, 'include_columns') END,
            CASE WHEN tenant_column IS NOT NULL
                 THEN (webhooks_internal._column_attnums(tbl, ARRAY[tenant_column], 'tenant_column'))[1] END,
            nullif(condition, ''))
    ON CONFLICT (relid) DO UPDATE
        SET entity = EXCLUDED.entity, exclude_attnums = EXCLUDED.exclude_attnums,
            include_attnums = EXCLUDED.include_attnums, tenant_attnum = EXCLUDED.tenant_attnum,
            condition = EXCLUDED.condition, tracked_at = pg_catalog.now();
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
    PERFORM webhooks_internal._drop_row_triggers(tbl, true);
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
    -- pg_restore (these two settings off, as no application session has them) brings the
    -- triggers back itself, after the DDL that would fire this: it must not make them first.
    IF NOT EXISTS (SELECT 1 FROM webhooks.tracked_tables)
       OR (pg_catalog.current_setting('row_security') = 'off'
           AND pg_catalog.current_setting('check_function_bodies') = 'off') THEN
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
