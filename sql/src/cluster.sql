-- Citus: one configuration on every node, row events on the shard's node, views across nodes.
--
-- On a Citus cluster each node runs its own webhooks worker over its own outbox: a tracked
-- distributed table's row events are written on the node that holds the shard, in the shard's
-- transaction, and delivered from there. What those events are matched against (endpoints,
-- their signing keys, tenants, bindings, the catalogue, what tracked tables send) is made on
-- the coordinator and copied to every node in the same distributed transaction: the
-- coordinator writes each change into webhooks_cluster.config, a Citus reference table, and a
-- trigger on that table's placement on each node applies it to the node's own tables. Our
-- tables stay plain local tables (Citus would refuse them as reference tables: they have
-- triggers, and the worker's bookkeeping of an endpoint would become a two-phase commit to
-- every node). Why, at length: ARCHITECTURE.md, "Citus". Nothing here runs without Citus:
-- the triggers below return at once until webhooks.cluster_setup() has been run.

-- One row on the coordinator once webhooks.cluster_setup() ran there: changes made on this
-- node are copied to the others, and the copies sent back are not applied here.
CREATE TABLE IF NOT EXISTS webhooks_internal.cluster_coordinator (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    since timestamptz NOT NULL DEFAULT now()
);

-- What is copied, in the order a first copy writes it (a binding after its tenant, a key
-- after its endpoint).
CREATE FUNCTION webhooks_internal._cluster_kinds() RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT ARRAY['webhooks.event_types', 'webhooks.tenants', 'webhooks_internal.tenancy_in_use', 'webhooks.tenant_roles',
                   'webhooks.endpoints', 'webhooks_internal.signing_keys', 'webhooks.tracked_tables'] $$;

-- An endpoint's columns that each node keeps for itself: its worker's bookkeeping (pause,
-- failing streak, rate limit state, why its secrets cannot be opened there) and what its
-- triggers compute.
CREATE FUNCTION webhooks_internal._cluster_local_columns(kind text) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE kind
    WHEN 'webhooks.endpoints' THEN ARRAY['failing_since', 'paused_until', 'rate_next_at', 'filter_weight', 'secret_problem', 'request_bytes']
    WHEN 'webhooks.tracked_tables' THEN ARRAY['exclude_attnums', 'include_attnums', 'tenant_attnum', 'secret_attnums',
                                              'auto_excluded', 'applied', 'problem']
    ELSE '{}'::text[] END $$;

-- A row as it is copied (NULL: not copied). A tracked table is copied only when it is a Citus
-- table (the others exist on the coordinator alone), with its columns by name: attribute
-- numbers differ between a table, its shell on another node and its shards.
CREATE FUNCTION webhooks_internal._cluster_row(kind text, r jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tbl regclass;
    names jsonb;
    local_only boolean;
BEGIN
    IF kind = 'webhooks.tracked_tables' THEN
        tbl := pg_catalog.to_regclass(r OPERATOR(pg_catalog.->>) 'relid');
        IF tbl IS NULL OR pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
            RETURN NULL;
        END IF;
        EXECUTE 'SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid OPERATOR(pg_catalog.=) $1)'
            INTO STRICT local_only USING tbl;
        IF local_only THEN
            RETURN NULL;
        END IF;
        SELECT pg_catalog.jsonb_build_object(
                   'exclude_columns', coalesce(pg_catalog.jsonb_agg(a.attname ORDER BY a.attnum) FILTER (
                       WHERE a.attnum OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.jsonb_array_elements_text(r OPERATOR(pg_catalog.->) 'exclude_attnums')::int2))), '[]'),
                   'include_columns', CASE WHEN r OPERATOR(pg_catalog.->) 'include_attnums' OPERATOR(pg_catalog.<>) 'null'::jsonb
                       THEN coalesce(pg_catalog.jsonb_agg(a.attname ORDER BY a.attnum) FILTER (
                           WHERE a.attnum OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT pg_catalog.jsonb_array_elements_text(r OPERATOR(pg_catalog.->) 'include_attnums')::int2))), '[]') END,
                   'tenant_column', pg_catalog.min(a.attname::text) FILTER (
                       WHERE a.attnum OPERATOR(pg_catalog.=) (r OPERATOR(pg_catalog.->>) 'tenant_attnum')::int2))
        INTO names
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid OPERATOR(pg_catalog.=) tbl AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
        RETURN (r OPERATOR(pg_catalog.-) webhooks_internal._cluster_local_columns(kind)) OPERATOR(pg_catalog.||) names;
    END IF;
    RETURN r OPERATOR(pg_catalog.-) webhooks_internal._cluster_local_columns(kind);
END $$;

-- A copied row's key: its primary key's columns and values.
CREATE FUNCTION webhooks_internal._cluster_key(kind text, r jsonb) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_object_agg(a.attname, r OPERATOR(pg_catalog.->) a.attname::text)::text
    FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey) k(attnum), pg_catalog.pg_attribute a
    WHERE i.indrelid OPERATOR(pg_catalog.=) kind::regclass AND i.indisprimary
      AND a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) k.attnum
$$;

-- On the coordinator, after a change of what is copied: the change, into the reference table,
-- in the writer's transaction (Citus commits it on every node with it, or nowhere).
-- (a definer: the writer may be a tenant's admin, who cannot write webhooks_cluster.config)
CREATE FUNCTION webhooks_internal._cluster_publish() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    kind constant text := TG_TABLE_SCHEMA OPERATOR(pg_catalog.||) '.' OPERATOR(pg_catalog.||) TG_TABLE_NAME;
    old_row jsonb;
    new_row jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhooks_internal.cluster_coordinator) THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_row := webhooks_internal._cluster_row(kind, pg_catalog.to_jsonb(OLD));
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_row := webhooks_internal._cluster_row(kind, pg_catalog.to_jsonb(NEW));
    END IF;
    IF old_row IS NOT NULL AND (new_row IS NULL
                                OR webhooks_internal._cluster_key(kind, old_row) <> webhooks_internal._cluster_key(kind, new_row)) THEN
        EXECUTE 'DELETE FROM webhooks_cluster.config c WHERE c.kind OPERATOR(pg_catalog.=) $1 AND c.key OPERATOR(pg_catalog.=) $2'
            USING kind, webhooks_internal._cluster_key(kind, old_row);
    END IF;
    IF new_row IS NOT NULL THEN
        EXECUTE 'INSERT INTO webhooks_cluster.config AS c (kind, key, row) VALUES ($1, $2, $3) '
                'ON CONFLICT (kind, key) DO UPDATE SET row = EXCLUDED.row'
            USING kind, webhooks_internal._cluster_key(kind, new_row), new_row;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER event_types_cluster AFTER INSERT OR UPDATE OR DELETE ON webhooks.event_types
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._cluster_publish();
CREATE TRIGGER tenants_cluster AFTER INSERT OR UPDATE OR DELETE ON webhooks.tenants
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._cluster_publish();
CREATE TRIGGER tenancy_in_use_cluster AFTER INSERT OR UPDATE OR DELETE ON webhooks_internal.tenancy_in_use
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._cluster_publish();
CREATE TRIGGER tenant_roles_cluster AFTER INSERT OR UPDATE OR DELETE ON webhooks.tenant_roles
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._cluster_publish();
CREATE TRIGGER signing_keys_cluster AFTER INSERT OR UPDATE OR DELETE ON webhooks_internal.signing_keys
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._cluster_publish();
-- An endpoint's configuration, not the worker's bookkeeping (which leaves updated_at alone).
CREATE TRIGGER endpoints_cluster AFTER INSERT OR DELETE ON webhooks.endpoints
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._cluster_publish();
CREATE TRIGGER endpoints_cluster_update AFTER UPDATE ON webhooks.endpoints
    FOR EACH ROW WHEN (OLD.updated_at IS DISTINCT FROM NEW.updated_at OR OLD.secret IS DISTINCT FROM NEW.secret
                       OR OLD.previous_secret IS DISTINCT FROM NEW.previous_secret OR OLD.tls_client_key IS DISTINCT FROM NEW.tls_client_key)
    EXECUTE FUNCTION webhooks_internal._cluster_publish();
-- What a tracked table sends, not what its statements found (auto_excluded, applied, problem).
CREATE TRIGGER tracked_tables_cluster AFTER INSERT OR DELETE
    OR UPDATE OF relid, entity, exclude_attnums, include_attnums, tenant_attnum, condition, tracked_at
    ON webhooks.tracked_tables FOR EACH ROW EXECUTE FUNCTION webhooks_internal._cluster_publish();

-- On every other node, a copied row made the node's own: inserted or updated by its primary
-- key, with the columns the copy carries (the node's bookkeeping columns keep their values).
-- The node's own triggers run on it as on any write (an endpoint enabled again makes its
-- waiting deliveries due, a tracked table's shape is decided anew).
CREATE FUNCTION webhooks_internal._cluster_put(kind text, r jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tbl regclass := kind::regclass;
    cols text;
    sets text;
    pk text;
BEGIN
    IF kind = 'webhooks.tracked_tables' THEN
        -- (columns by name, as the shell of the table on this node numbers them)
        tbl := (r OPERATOR(pg_catalog.->>) 'relid')::regclass;
        r := r OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(
            'exclude_attnums', webhooks_internal._column_attnums(tbl,
                ARRAY(SELECT pg_catalog.jsonb_array_elements_text(r OPERATOR(pg_catalog.->) 'exclude_columns')), 'exclude_columns'),
            'include_attnums', CASE WHEN pg_catalog.jsonb_typeof(r OPERATOR(pg_catalog.->) 'include_columns') = 'array' THEN
                webhooks_internal._column_attnums(tbl,
                    ARRAY(SELECT pg_catalog.jsonb_array_elements_text(r OPERATOR(pg_catalog.->) 'include_columns')), 'include_columns') END,
            'tenant_attnum', CASE WHEN r OPERATOR(pg_catalog.->>) 'tenant_column' IS NOT NULL THEN
                (webhooks_internal._column_attnums(tbl, ARRAY[r OPERATOR(pg_catalog.->>) 'tenant_column'], 'tenant_column'))[1] END);
        tbl := 'webhooks.tracked_tables'::regclass;
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum),
           pg_catalog.string_agg('EXCLUDED.' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
    INTO cols, sets
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid OPERATOR(pg_catalog.=) tbl AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
      AND a.attgenerated = '' AND r ? a.attname::text
      AND (kind = 'webhooks.tracked_tables' OR NOT a.attname::text = ANY (webhooks_internal._cluster_local_columns(kind)));
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.o)
    INTO pk
    FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey) WITH ORDINALITY k(attnum, o), pg_catalog.pg_attribute a
    WHERE i.indrelid OPERATOR(pg_catalog.=) tbl AND i.indisprimary
      AND a.attrelid OPERATOR(pg_catalog.=) tbl AND a.attnum OPERATOR(pg_catalog.=) k.attnum;
    EXECUTE pg_catalog.format(
        'INSERT INTO %1$s AS t (%2$s) SELECT %2$s FROM pg_catalog.jsonb_populate_record(NULL::%1$s, $1) '
        'ON CONFLICT (%3$s) DO UPDATE SET (%2$s) = ROW(%4$s)', tbl, cols, pk, sets)
        USING r;
END $$;

CREATE FUNCTION webhooks_internal._cluster_remove(kind text, r jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pk text;
BEGIN
    IF kind = 'webhooks.tracked_tables' THEN
        -- (a table dropped on every node takes its row with it here too)
        DELETE FROM webhooks.tracked_tables x
        WHERE x.relid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(r OPERATOR(pg_catalog.->>) 'relid');
        RETURN;
    END IF;
    SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY k.o)
    INTO pk
    FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey) WITH ORDINALITY k(attnum, o), pg_catalog.pg_attribute a
    WHERE i.indrelid OPERATOR(pg_catalog.=) kind::regclass AND i.indisprimary
      AND a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) k.attnum;
    EXECUTE pg_catalog.format('DELETE FROM %1$s t WHERE (%2$s) IN (SELECT %2$s FROM pg_catalog.jsonb_populate_record(NULL::%1$s, $1))',
                              kind::regclass, pk)
        USING r;
END $$;

-- The trigger on webhooks_cluster.config, on each node's placement of it: runs in the
-- coordinator's distributed transaction, as the role Citus connects with.
CREATE FUNCTION webhooks_internal._cluster_apply() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhooks_internal.cluster_coordinator) THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF OLD.kind = ANY (webhooks_internal._cluster_kinds()) THEN
            PERFORM webhooks_internal._cluster_remove(OLD.kind, OLD.row);
        END IF;
    ELSIF NEW.kind = ANY (webhooks_internal._cluster_kinds()) THEN
        PERFORM webhooks_internal._cluster_put(NEW.kind, NEW.row);
    END IF;
    RETURN NULL;
END $$;

-- A shard of a Citus table: the table it is a shard of (NULL for any other relation). Its row
-- events are the table's, as the table is tracked on this node.
CREATE FUNCTION webhooks_internal._shard_parent(tbl regclass) RETURNS regclass
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard bigint;
    parent regclass;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_shard') IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT pg_catalog.substring(c.relname::text, '_([0-9]+)$')::bigint INTO shard
    FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) tbl;
    IF shard IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT s.logicalrelid FROM pg_catalog.pg_dist_shard s WHERE s.shardid OPERATOR(pg_catalog.=) $1'
        INTO parent USING shard;
    -- (the shard's name is its table's and its id, in the table's schema: nothing else is taken for one)
    IF parent IS NULL OR NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_class p, pg_catalog.pg_class c
        WHERE p.oid OPERATOR(pg_catalog.=) parent AND c.oid OPERATOR(pg_catalog.=) tbl
          AND p.relnamespace OPERATOR(pg_catalog.=) c.relnamespace
          AND c.relname::text = p.relname::text OPERATOR(pg_catalog.||) '_' OPERATOR(pg_catalog.||) shard::text) THEN
        RETURN NULL;
    END IF;
    RETURN parent;
END $$;

-- Attribute numbers of one relation as another numbers the same columns (by name).
CREATE FUNCTION webhooks_internal._attnums_as(nums int2[], from_rel regclass, to_rel regclass) RETURNS int2[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN nums IS NOT NULL THEN coalesce(pg_catalog.array_agg(b.attnum ORDER BY b.attnum), '{}') END
    FROM pg_catalog.pg_attribute a
    JOIN pg_catalog.pg_attribute b ON b.attrelid OPERATOR(pg_catalog.=) to_rel AND b.attname OPERATOR(pg_catalog.=) a.attname
                                   AND NOT b.attisdropped
    WHERE a.attrelid OPERATOR(pg_catalog.=) from_rel AND a.attnum OPERATOR(pg_catalog.=) ANY (nums)
$$;

-- Run once on the coordinator, as a superuser, after CREATE EXTENSION webhooks there (Citus
-- makes the extension on every node) and after the worker nodes are added; again after a node
-- is added later. Makes webhooks_cluster.config and its trigger, the views across nodes, and
-- copies what exists to every node.
CREATE FUNCTION webhooks.cluster_setup() RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
    -- (our triggers on webhooks_cluster.config, made here only: see ARCHITECTURE.md)
    SET citus.enable_unsafe_triggers = on
AS $$
DECLARE
    is_coordinator boolean;
    kind text;
    copied bigint := 0;
    n bigint;
    nodes int;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RAISE EXCEPTION 'webhooks.cluster_setup is for Citus clusters, and Citus is not installed in database %', pg_catalog.current_database()
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'On one PostgreSQL there is nothing to set up. For Citus: CREATE EXTENSION citus, then this.';
    END IF;
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user) THEN
        RAISE EXCEPTION 'webhooks.cluster_setup needs a superuser: it makes a Citus reference table and its trigger'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE 'SELECT pg_catalog.citus_is_coordinator()' INTO is_coordinator;
    IF NOT is_coordinator THEN
        RAISE EXCEPTION 'webhooks.cluster_setup runs on the coordinator, and this node is not the coordinator'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Every node gets its copy from the coordinator; configure endpoints there.';
    END IF;
    INSERT INTO webhooks_internal.cluster_coordinator DEFAULT VALUES ON CONFLICT DO NOTHING;
    IF pg_catalog.to_regclass('webhooks_cluster.config') IS NULL THEN
        CREATE SCHEMA IF NOT EXISTS webhooks_cluster;
        REVOKE ALL ON SCHEMA webhooks_cluster FROM PUBLIC;
        CREATE TABLE webhooks_cluster.config (
            kind text NOT NULL,
            key  text NOT NULL,
            row  jsonb NOT NULL,
            PRIMARY KEY (kind, key)
        );
        REVOKE ALL ON webhooks_cluster.config FROM PUBLIC;
        PERFORM pg_catalog.create_reference_table('webhooks_cluster.config');
        CREATE TRIGGER config_apply AFTER INSERT OR UPDATE OR DELETE ON webhooks_cluster.config
            FOR EACH ROW EXECUTE FUNCTION webhooks_internal._cluster_apply();
    ELSE
        -- (a node added since has no placement yet)
        PERFORM pg_catalog.replicate_reference_tables();
    END IF;
    PERFORM webhooks_internal._cluster_views();
    -- What exists now, to every node (again: a copy already there is written over).
    FOREACH kind IN ARRAY webhooks_internal._cluster_kinds() LOOP
        EXECUTE pg_catalog.format(
            'INSERT INTO webhooks_cluster.config AS c (kind, key, row) '
            'SELECT %1$L, webhooks_internal._cluster_key(%1$L, x.r), x.r '
            'FROM (SELECT webhooks_internal._cluster_row(%1$L, pg_catalog.to_jsonb(t)) AS r FROM %1$s t) x WHERE x.r IS NOT NULL '
            'ON CONFLICT (kind, key) DO UPDATE SET row = EXCLUDED.row', kind);
        GET DIAGNOSTICS n = ROW_COUNT;
        copied := copied + n;
    END LOOP;
    EXECUTE 'SELECT pg_catalog.count(*) FROM pg_catalog.pg_dist_node WHERE isactive AND noderole = ''primary'''
        INTO nodes;
    RETURN pg_catalog.format('webhooks on %s Citus nodes: %s rows of configuration copied to every node', nodes, copied);
END $$;

-- The views across nodes (made by cluster_setup: they call Citus). Each node answers as the
-- role reading the view, so row-level security there shows a tenant's admin its own tenants.
CREATE FUNCTION webhooks_internal._cluster_views() RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT * FROM (VALUES
        ('deliveries', 'webhooks.deliveries', 'Deliveries on every node of the Citus cluster (node_id: the node that holds and sends them).'),
        ('dead_letters', 'webhooks.dead_letters', 'Dead letters on every node of the Citus cluster.'),
        ('endpoint_health', 'webhooks.endpoint_health', 'Endpoint health on every node of the Citus cluster: one row per endpoint and node.')) x(name, source, about)
    LOOP
        EXECUTE pg_catalog.format(
            'CREATE OR REPLACE VIEW webhooks_cluster.%1$I AS '
            'SELECT n.nodeid AS node_id, d.* '
            'FROM pg_catalog.run_command_on_all_nodes(%2$L) n, '
            'LATERAL pg_catalog.json_populate_recordset(NULL::%3$s, n.result::json) d '
            'WHERE n.success',
            v.name,
            pg_catalog.format('SELECT coalesce(pg_catalog.json_agg(d), ''[]'') FROM %s d', v.source),
            v.source);
        EXECUTE pg_catalog.format('COMMENT ON VIEW webhooks_cluster.%I IS %L', v.name, v.about);
    END LOOP;
    -- Each node's webhooks.status(), or why it did not answer.
    CREATE OR REPLACE VIEW webhooks_cluster.nodes AS
    SELECT n.nodeid AS node_id, p.nodename AS node_name, p.nodeport AS node_port, n.success AS answered,
           CASE WHEN n.success THEN n.result::jsonb END AS status,
           CASE WHEN NOT n.success THEN n.result END AS error
    FROM pg_catalog.run_command_on_all_nodes('SELECT pg_catalog.row_to_json(s) FROM webhooks.status() s') n
    LEFT JOIN pg_catalog.pg_dist_node p ON p.nodeid = n.nodeid;
    COMMENT ON VIEW webhooks_cluster.nodes IS 'Each node of the Citus cluster: its webhooks.status(), or the error that kept it from answering.';
    GRANT USAGE ON SCHEMA webhooks_cluster TO webhooks_admin;
    GRANT SELECT ON webhooks_cluster.deliveries, webhooks_cluster.dead_letters, webhooks_cluster.endpoint_health,
                    webhooks_cluster.nodes TO webhooks_admin;
END $$;
