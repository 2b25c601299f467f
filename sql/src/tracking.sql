-- Row events: a tracked table publishes <entity>.created/.updated/.deleted for every row written.
--
-- The triggers run with the rights of the role writing the table (SECURITY INVOKER): they
-- turn the rows into jsonb there (to_jsonb runs the table's own casts and types, which that role
-- may define) and hand plain jsonb and text to webhook_publish_many, an entry point that
-- evaluates nothing user-defined. So writers of a tracked table need webhooks_publisher, and
-- publish for the tenants their role acts for.
--
-- What a row event carries is decided when the statement runs, from the catalog as it stands
-- then (webhooks.tracked_columns, cached per backend until the table's definition changes):
-- columns are kept out by attribute number, so exclusions follow a column through RENAME COLUMN;
-- an allow-list (include_columns) sends nothing new; a column whose name looks secret is never
-- sent unless it is listed in include_columns, and stays out once seen (by attribute number)
-- whatever it is renamed to. No DDL path changes that: not pg_dump's session settings, not a
-- restore, not event triggers that did not fire. The DDL event triggers only say, as WARNINGs
-- and in webhooks.tracked_tables, what a command changed; they never make a command fail.
--
-- The triggers are per statement: a bulk INSERT, UPDATE or DELETE turns its transition table into
-- payloads with set-based statements and publishes them with one webhook_publish_many call.

-- Names that are never sent unless listed in include_columns.
CREATE FUNCTION webhooks_internal._looks_secret(col text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$ SELECT col ~* '(password|passwd|secret|totp|otp_seed|recovery|hash|token|private_key|api_key|salt)' $$;

-- One call per statement (AFTER ... FOR EACH STATEMENT, with the statement's transition table):
-- the rows become jsonb here, with the writer's rights, and their events are published by one
-- webhook_publish_many call, in the order the statement wrote the rows. What they carry comes
-- from webhooks.tracked_columns, as the table is now (the triggers' arguments, which 0.3.0's
-- triggers still carry after a restore, are not read).
CREATE FUNCTION webhooks_internal._emit_row_events() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shape record;
    entity text;
    excluded text[];
    tenant_col text;
    key_cols text[];
    nkeys int;
    actor jsonb := nullif(pg_catalog.current_setting('webhooks.actor', true), '')::jsonb;
    payloads jsonb[];
    tenants text[];
    keys text[];
    compared text;
    differs text;
    same text;
    -- track_table's condition: rows it is not true for publish nothing
    cond text;
    -- the entity key in the dynamic statements below, %1$s standing for the row's jsonb
    key_sql constant text := $k$CASE
        WHEN $5 OPERATOR(pg_catalog.=) 1 THEN $1 OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) (%1$s OPERATOR(pg_catalog.->>) $4[1])
        WHEN $5 OPERATOR(pg_catalog.>) 1 THEN $1 OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) (
            SELECT pg_catalog.string_agg(%1$s OPERATOR(pg_catalog.->>) c, ':' ORDER BY o)
            FROM pg_catalog.unnest($4) WITH ORDINALITY u(c, o)) END$k$;
BEGIN
    SELECT * INTO shape FROM webhooks.tracked_columns(TG_RELID);
    IF NOT FOUND THEN
        -- (untracking drops the triggers: these are left over, and the writer must know)
        RAISE EXCEPTION 'row events of %: the table has webhooks'' row triggers but is not tracked', TG_RELID::regclass
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = pg_catalog.format('Track it again with webhooks.track_table(%L, ...), or webhooks.untrack_table(%L) to drop the triggers.',
                                           TG_RELID::regclass::text, TG_RELID::regclass::text);
    END IF;
    IF shape.problem IS NOT NULL THEN
        -- No row commits without its event: the write fails, saying why and how to go on.
        RAISE EXCEPTION 'row events of % cannot be made: %', TG_RELID::regclass, shape.problem
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = pg_catalog.format('Track it again with webhooks.track_table(%L, ...), or stop its row events with webhooks.untrack_table(%L).',
                                           TG_RELID::regclass::text, TG_RELID::regclass::text);
    END IF;
    entity := shape.entity;
    excluded := shape.excluded;
    tenant_col := shape.tenant_column;
    key_cols := shape.key_columns;
    nkeys := pg_catalog.cardinality(key_cols);
    cond := shape.condition;
    IF TG_OP = 'UPDATE' THEN
        -- The transition tables hold the old and the new version of each row at the same
        -- position. Which sent columns changed is one comparison per column, written out for
        -- the columns it sends (shape.sent): no per-row subquery. Rows where only
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
        FROM pg_catalog.unnest(shape.sent) WITH ORDINALITY u(c, o);
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
-- statement triggers read it back from there and evaluate it with the writer's rights. The
-- table's owner makes it (_as_owner_of), so its function must be one every role may name:
-- suppress_redundant_updates_trigger, which, were the holder ever enabled (ALTER TABLE ...
-- ENABLE TRIGGER ALL, as a data-only pg_restore --disable-triggers runs), only skips updates
-- that change nothing; _on_ddl says so and track_table disables it again. 0.3.0's holders, made with
-- _condition_holder (which does nothing), are read as well.
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
                 'CREATE TRIGGER webhooks_row_condition ' || w.timing || ' UPDATE ON ' || pg_catalog.quote_ident(n.nspname) || '.'
                     || pg_catalog.quote_ident(c.relname) || ' FOR EACH ROW WHEN (' AS p,
                 ') EXECUTE FUNCTION ' || w.fn || '()' AS s
          FROM pg_catalog.pg_trigger g
          JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          JOIN (VALUES ('pg_catalog.suppress_redundant_updates_trigger()'::pg_catalog.regprocedure, 'BEFORE', 'suppress_redundant_updates_trigger'),
                       ('webhooks_internal._condition_holder()'::pg_catalog.regprocedure, 'AFTER', 'webhooks_internal._condition_holder'))
               AS w (f, timing, fn) ON w.f = g.tgfoid
          WHERE g.tgrelid = tbl AND g.tgname = 'webhooks_row_condition') x
$$;

-- The triggers of a tracked table, 0.2.0's row trigger included.
CREATE FUNCTION webhooks_internal._drop_row_triggers(tbl regclass, with_condition boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
    -- Citus refuses triggers on its tables unless this is on; ours only write this node's own
    -- outbox tables (ARCHITECTURE.md, "Citus"), so it is on here, for these statements alone.
    SET citus.enable_unsafe_triggers = on
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

-- What a tracked table's row events carry, from webhooks.tracked_tables and the catalog as they
-- are now: the entity, the columns kept out (by attribute number, as the columns are named
-- now), the tenant column, the entity key's columns, the columns sent, the condition (as
-- PostgreSQL prints it from its holder trigger), and the problem that stops them, if any; then
-- what an operator reads of it in webhooks.tracked_tables (auto_excluded, applied, problem),
-- the secret-looking columns seen for the first time (remembered by attribute number, so that
-- a later rename does not send them), and whether any of that differs from what is recorded.
-- It only reads: webhooks.tracked_columns runs it with the latest snapshot (the table a
-- statement writes is the table as it is now, whatever the transaction's snapshot) and caches
-- it; _row_shape_save records what changed.
CREATE FUNCTION webhooks_internal._row_shape(tbl regclass)
RETURNS TABLE (entity text, excluded text[], tenant_column text, key_columns text[], sent text[],
               condition text, problem text, auto_excluded text[], seen int2[], applied text[], changed boolean)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    t webhooks.tracked_tables;
    v_tenant text;
    v_keys text[];
    v_excluded text[];
    v_sent text[];
    v_auto text[];
    v_seen int2[];
    v_cond text;
    v_problem text;
    v_applied text[];
    parent regclass;
BEGIN
    SELECT * INTO t FROM webhooks.tracked_tables x WHERE x.relid = tbl;
    IF NOT FOUND THEN
        -- A shard of a tracked Citus table, on the node that holds it, sends the table's row
        -- events (sql/src/cluster.sql), its columns known by name: a shard may number them
        -- otherwise.
        parent := webhooks_internal._shard_parent(tbl);
        IF parent IS NULL THEN
            RETURN;
        END IF;
        SELECT * INTO t FROM webhooks.tracked_tables x WHERE x.relid = parent;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        t.exclude_attnums := webhooks_internal._attnums_as(t.exclude_attnums, parent, tbl);
        t.include_attnums := webhooks_internal._attnums_as(t.include_attnums, parent, tbl);
        t.secret_attnums := webhooks_internal._attnums_as(t.secret_attnums, parent, tbl);
        t.tenant_attnum := (webhooks_internal._attnums_as(ARRAY[t.tenant_attnum], parent, tbl))[1];
    END IF;
    IF t.tenant_attnum IS NOT NULL THEN
        SELECT a.attname INTO v_tenant FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = tbl AND a.attnum = t.tenant_attnum AND NOT a.attisdropped;
        IF v_tenant IS NULL THEN
            v_problem := 'its tenant column was dropped';
        END IF;
    END IF;
    SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.o) INTO v_keys
    FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey) WITH ORDINALITY k(attnum, o), pg_catalog.pg_attribute a
    WHERE i.indrelid = tbl AND i.indisprimary AND a.attrelid = tbl AND a.attnum = k.attnum;
    SELECT pg_catalog.array_agg(c.attname::text ORDER BY c.attnum) FILTER (WHERE c.kept_out),
           pg_catalog.array_agg(c.attname::text ORDER BY c.attname::text) FILTER (WHERE NOT c.kept_out),
           pg_catalog.array_agg(c.attname::text ORDER BY c.attnum) FILTER (WHERE c.secret),
           pg_catalog.array_agg(c.attnum ORDER BY c.attnum) FILTER (WHERE c.secret AND NOT c.attnum = ANY (t.secret_attnums))
    INTO v_excluded, v_sent, v_auto, v_seen
    FROM (SELECT a.attname, a.attnum,
                 CASE WHEN t.include_attnums IS NOT NULL THEN NOT a.attnum = ANY (t.include_attnums)
                      ELSE a.attnum = ANY (t.exclude_attnums) OR a.attnum = ANY (t.secret_attnums)
                           OR webhooks_internal._looks_secret(a.attname) END AS kept_out,
                 -- (kept out for its name, now or when it was seen, not because it was listed)
                 t.include_attnums IS NULL AND NOT a.attnum = ANY (t.exclude_attnums)
                     AND (a.attnum = ANY (t.secret_attnums) OR webhooks_internal._looks_secret(a.attname)) AS secret
          FROM pg_catalog.pg_attribute a
          WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped) c;
    -- The entity key goes into events and deliveries: never from a column kept out.
    IF v_keys && v_excluded THEN
        v_keys := NULL;
    END IF;
    -- (a shard's condition is its table's: the same columns by name)
    v_cond := webhooks_internal._condition_of(coalesce(parent, tbl));
    IF t.condition IS NOT NULL AND v_cond IS NULL THEN
        v_problem := pg_catalog.concat_ws('; ', v_problem,
            pg_catalog.format('its condition (%s) is gone: an object it used was dropped', t.condition));
    END IF;
    v_applied := ARRAY[t.entity, coalesce(v_excluded, '{}')::text, coalesce(v_tenant, ''), coalesce(v_keys, '{}')::text,
                       coalesce(v_sent, '{}')::text, coalesce(v_cond, '')];
    RETURN QUERY SELECT t.entity, coalesce(v_excluded, '{}'), v_tenant, coalesce(v_keys, '{}'), coalesce(v_sent, '{}'),
                        v_cond, v_problem, coalesce(v_auto, '{}'), coalesce(v_seen, '{}'), v_applied,
                        v_seen IS NOT NULL OR t.auto_excluded IS DISTINCT FROM coalesce(v_auto, '{}')
                            OR t.applied IS DISTINCT FROM v_applied OR t.problem IS DISTINCT FROM v_problem;
END $$;

-- Records what _row_shape found, where it differs. A row another transaction holds is skipped
-- (that one is recording the same): a writer of the table never waits here.
-- (condition: as PostgreSQL prints it now, renamed columns included, while its holder exists)
CREATE FUNCTION webhooks_internal._row_shape_save(tbl regclass, auto text[], seen int2[], p_applied text[], p_problem text)
RETURNS void
LANGUAGE sql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    UPDATE webhooks.tracked_tables x
    SET secret_attnums = coalesce((SELECT pg_catalog.array_agg(DISTINCT a ORDER BY a)
                                   FROM pg_catalog.unnest(x.secret_attnums OPERATOR(pg_catalog.||) seen) a), '{}'),
        auto_excluded = auto, applied = p_applied, problem = p_problem,
        condition = coalesce(nullif(p_applied[6], ''), x.condition)
    WHERE x.relid = tbl
      AND x.relid IN (SELECT y.relid FROM webhooks.tracked_tables y WHERE y.relid = tbl FOR UPDATE SKIP LOCKED)
$$;

-- _row_shape and what it found saved: for the DDL triggers and track_table (webhooks.tracked_columns
-- does the same in Rust, around its cache).
CREATE FUNCTION webhooks_internal._row_shape_now(tbl regclass)
RETURNS TABLE (excluded text[], problem text, auto_excluded text[])
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
#variable_conflict use_variable
DECLARE
    s record;
BEGIN
    SELECT * INTO s FROM webhooks_internal._row_shape(tbl);
    IF s.changed THEN
        PERFORM webhooks_internal._row_shape_save(tbl, s.auto_excluded, s.seen, s.applied, s.problem);
    END IF;
    RETURN QUERY SELECT s.excluded, s.problem, s.auto_excluded;
END $$;

-- (Re)creates the triggers of a tracked table: three statement triggers that publish its row
-- events, and the disabled holder of its condition. Returns the columns kept out because their
-- names look secret.
CREATE FUNCTION webhooks_internal._track_apply(tbl regclass) RETURNS text[]
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
    -- Citus refuses triggers on its tables unless this is on; ours only write this node's own
    -- outbox tables (ARCHITECTURE.md, "Citus"), so it is on here, for these statements alone.
    SET citus.enable_unsafe_triggers = on
AS $$
DECLARE
    t webhooks.tracked_tables;
    op text;
BEGIN
    SELECT * INTO t FROM webhooks.tracked_tables x WHERE x.relid = tbl;
    PERFORM pg_catalog.set_config('webhooks_internal.retracking', tbl::oid::text, true);
    IF t.condition IS NOT NULL AND webhooks_internal._condition_of(tbl) IS NULL THEN
        -- A row trigger on UPDATE may name OLD and NEW: PostgreSQL checks the condition here,
        -- once it is known to be one expression and nothing more, as the table's owner.
        PERFORM webhooks_internal._check_condition(t.condition);
        PERFORM webhooks_internal._as_owner_of(tbl, pg_catalog.format(
            'CREATE TRIGGER webhooks_row_condition BEFORE UPDATE ON %s FOR EACH ROW WHEN (%s' || E'\n'
            ') EXECUTE FUNCTION pg_catalog.suppress_redundant_updates_trigger()', tbl, t.condition));
    ELSIF t.condition IS NULL AND webhooks_internal._condition_of(tbl) IS NOT NULL THEN
        EXECUTE pg_catalog.format('DROP TRIGGER webhooks_row_condition ON %s', tbl);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
               WHERE g.tgrelid = tbl AND g.tgname = 'webhooks_row_condition' AND g.tgenabled <> 'D') THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE TRIGGER webhooks_row_condition', tbl);
    END IF;
    -- One statement trigger per operation: a trigger with transition tables serves one event.
    IF (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger g
        WHERE g.tgrelid = tbl AND g.tgname IN ('webhooks_row_insert', 'webhooks_row_update', 'webhooks_row_delete')
          AND g.tgenabled <> 'D' AND g.tgnargs = 0) <> 3 THEN
        PERFORM webhooks_internal._drop_row_triggers(tbl);
        FOREACH op IN ARRAY ARRAY['insert', 'update', 'delete'] LOOP
            EXECUTE pg_catalog.format(
                'CREATE TRIGGER webhooks_row_%s AFTER %s ON %s REFERENCING %s '
                'FOR EACH STATEMENT EXECUTE FUNCTION webhooks_internal._emit_row_events()',
                op, pg_catalog.upper(op), tbl,
                CASE op WHEN 'insert' THEN 'NEW TABLE AS new_rows' WHEN 'update' THEN 'OLD TABLE AS old_rows NEW TABLE AS new_rows'
                        ELSE 'OLD TABLE AS old_rows' END);
        END LOOP;
    END IF;
    PERFORM pg_catalog.set_config('webhooks_internal.retracking', '', true);
    PERFORM webhooks_internal._row_shape_now(tbl);
    RETURN (SELECT x.auto_excluded FROM webhooks.tracked_tables x WHERE x.relid = tbl);
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
    -- (as in _track_apply: it drops a condition's trigger)
    SET citus.enable_unsafe_triggers = on
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
    -- (the triggers it drops and makes again are no news for the DDL triggers)
    PERFORM pg_catalog.set_config('webhooks_internal.retracking', tbl::oid::text, true);
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
            condition = EXCLUDED.condition, tracked_at = pg_catalog.now(),
            -- (decided anew from the columns as they are named now)
            secret_attnums = '{}', problem = NULL;
    auto := webhooks_internal._track_apply(tbl);
    PERFORM pg_catalog.set_config('webhooks_internal.retracking', '', true);
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

-- After a DDL command, for the tracked tables it touched (directly, as a parent, or through a
-- typed table's type): what its row events carry now, said as WARNINGs where it changed (a new
-- secret-looking column kept out, a problem that makes the table's writes fail, triggers
-- disabled or gone) and written to webhooks.tracked_tables. Never an error: nothing a tracked
-- table's owner did may make anyone's command fail (a condition whose function was dropped
-- made every CREATE TABLE in the database fail in 0.3.0). What row events carry does not
-- depend on this running (pg_restore, session_replication_role and pg_dump's session
-- settings all keep it from firing): webhooks.tracked_columns decides at each statement.
CREATE FUNCTION webhooks_internal._on_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF pg_catalog.to_regclass('webhooks.tracked_tables') IS NULL OR NOT EXISTS (SELECT 1 FROM webhooks.tracked_tables) THEN
        RETURN;
    END IF;
    FOR r IN
        WITH RECURSIVE touched(oid) AS (
            SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c
            WHERE c.classid IN ('pg_catalog.pg_class'::regclass, 'pg_catalog.pg_type'::regclass)
            UNION
            SELECT x.oid FROM touched
            CROSS JOIN LATERAL (SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = touched.oid
                                UNION ALL
                                SELECT k.oid FROM pg_catalog.pg_class k WHERE k.reloftype = touched.oid) x(oid)
        )
        SELECT t.relid, t.auto_excluded, t.problem FROM webhooks.tracked_tables t
        WHERE t.relid::oid IN (SELECT touched.oid FROM touched)
          AND t.relid::oid::text IS DISTINCT FROM pg_catalog.current_setting('webhooks_internal.retracking', true)
        ORDER BY t.relid::oid
    LOOP
        PERFORM webhooks_internal._warn_about(r.relid, r.auto_excluded, r.problem);
    END LOOP;
END $$;

-- What _on_ddl and _on_drop say about one tracked table, given what it was before.
CREATE FUNCTION webhooks_internal._warn_about(tbl regclass, auto_before text[], problem_before text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    s record;
    fresh text[];
BEGIN
    SELECT * INTO s FROM webhooks_internal._row_shape_now(tbl);
    SELECT pg_catalog.array_agg(x ORDER BY x) INTO fresh
    FROM pg_catalog.unnest(s.auto_excluded) x WHERE NOT x = ANY (coalesce(auto_before, '{}'));
    IF fresh IS NOT NULL THEN
        RAISE WARNING 'columns % of tracked table % look secret and are not sent in row events', fresh, tbl
            USING HINT = 'List a column in track_table(..., include_columns => ...) to send it anyway.';
    END IF;
    IF s.problem IS NOT NULL AND s.problem IS DISTINCT FROM problem_before THEN
        RAISE WARNING 'row events of tracked table % cannot be made: %; its INSERT, UPDATE and DELETE fail until then', tbl, s.problem
            USING HINT = pg_catalog.format('Track it again with webhooks.track_table(%L, ...), or stop its row events with webhooks.untrack_table(%L).',
                                           tbl::text, tbl::text);
    END IF;
    IF (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger g
        WHERE g.tgrelid = tbl AND g.tgname IN ('webhooks_row_insert', 'webhooks_row_update', 'webhooks_row_delete')
          AND g.tgenabled <> 'D') < 3 THEN
        RAISE WARNING 'the row triggers of tracked table % are disabled or gone: its writes publish no events', tbl
            USING HINT = pg_catalog.format('Track it again with webhooks.track_table(%L, ...) to make them again.', tbl::text);
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
               WHERE g.tgrelid = tbl AND g.tgname = 'webhooks_row_condition' AND g.tgenabled <> 'D'
                 AND g.tgfoid = 'pg_catalog.suppress_redundant_updates_trigger()'::pg_catalog.regprocedure) THEN
        RAISE WARNING 'webhooks_row_condition, the holder of tracked table %''s condition, is enabled: updates of % that change nothing are skipped', tbl, tbl
            USING HINT = pg_catalog.format('ALTER TABLE %s DISABLE TRIGGER webhooks_row_condition, or track it again.', tbl::text);
    END IF;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'webhooks: tracked table % could not be checked after this command: %', tbl, SQLERRM;
END $$;

CREATE EVENT TRIGGER webhooks_track_ddl ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE',
                 'ALTER TYPE', 'ALTER DOMAIN', 'CREATE TABLE', 'ALTER INDEX')
    EXECUTE FUNCTION webhooks_internal._on_ddl();

-- Dropped tables leave no row behind (any command: DROP TABLE, DROP SCHEMA ... CASCADE,
-- DROP OWNED), so that no later table that gets the same oid inherits a tracking. A row
-- trigger or condition of a table still tracked that went (DROP TRIGGER, or DROP FUNCTION
-- ... CASCADE of a function its condition calls) is said, as _on_ddl says it.
CREATE FUNCTION webhooks_internal._on_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    IF pg_catalog.to_regclass('webhooks.tracked_tables') IS NULL THEN
        RETURN;
    END IF;
    DELETE FROM webhooks.tracked_tables t
    USING pg_catalog.pg_event_trigger_dropped_objects() o
    WHERE o.classid = 'pg_catalog.pg_class'::regclass AND o.objsubid = 0 AND o.objid = t.relid::oid;
    FOR r IN
        SELECT DISTINCT t.relid, t.auto_excluded, t.problem
        FROM pg_catalog.pg_event_trigger_dropped_objects() o
        JOIN webhooks.tracked_tables t
          ON o.classid = 'pg_catalog.pg_trigger'::regclass AND pg_catalog.cardinality(o.address_names) = 3
         AND o.address_names[3] IN ('webhooks_row_insert', 'webhooks_row_update', 'webhooks_row_delete', 'webhooks_row_condition')
         AND t.relid::oid = (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                             WHERE n.nspname = o.address_names[1] AND c.relname = o.address_names[2])
        WHERE t.relid::oid::text IS DISTINCT FROM pg_catalog.current_setting('webhooks_internal.retracking', true)
    LOOP
        PERFORM webhooks_internal._warn_about(r.relid, r.auto_excluded, r.problem);
    END LOOP;
END $$;

CREATE EVENT TRIGGER webhooks_track_drop ON sql_drop
    EXECUTE FUNCTION webhooks_internal._on_drop();

-- What a statement's row events carry is cached per backend (webhooks.tracked_columns) until
-- the table's definition changes: a change of the tracking itself, however it is made
-- (track_table, a restore, an UPDATE by hand), tells every backend once it commits.
CREATE FUNCTION webhooks_internal._tracking_changed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM webhooks_internal._forget_row_shape(OLD.relid::oid);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        PERFORM webhooks_internal._forget_row_shape(NEW.relid::oid);
    END IF;
    RETURN NULL;
END $$;

-- (what _row_shape writes back, the state an operator reads, changes nothing of what is sent;
-- the condition sent is its holder trigger's, whose changes invalidate the table themselves,
-- and track_table sets tracked_at)
CREATE TRIGGER tracked_tables_changed
    AFTER INSERT OR DELETE OR UPDATE OF relid, entity, exclude_attnums, include_attnums, tenant_attnum, tracked_at
    ON webhooks.tracked_tables FOR EACH ROW EXECUTE FUNCTION webhooks_internal._tracking_changed();
