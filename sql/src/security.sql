-- Roles, grants and tenant isolation. Loaded last.
--
-- webhooks_publisher: publish, send synchronously, sign/verify, track tables it owns. It never
--   reads endpoints (URLs, secrets, headers, client keys live there) or deliveries.
-- webhooks_admin: manage endpoints, the catalogue, retries and replays of its tenants, and read
--   what was sent. Both get exactly the documented API: the helpers live in webhooks_internal,
--   which only the extension owner may use.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'webhooks_admin') THEN
        CREATE ROLE webhooks_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'webhooks_publisher') THEN
        CREATE ROLE webhooks_publisher NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'webhooks_worker') THEN
        CREATE ROLE webhooks_worker NOLOGIN;
    END IF;
END $$;

-- PUBLIC gets nothing: not the functions, not the tables.
REVOKE ALL ON ALL TABLES IN SCHEMA webhooks FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA webhooks FROM PUBLIC;
REVOKE ALL ON SCHEMA webhooks FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA webhooks_internal FROM PUBLIC;
REVOKE ALL ON SCHEMA webhooks_internal FROM PUBLIC;

GRANT USAGE ON SCHEMA webhooks TO webhooks_admin, webhooks_publisher;

GRANT SELECT ON webhooks.event_types TO webhooks_publisher;
GRANT EXECUTE ON FUNCTION
    webhooks.webhook_publish(text, jsonb, text, jsonb, text, text),
    webhooks.webhook_publish_many(text, jsonb[], text[], jsonb, text[], text[]),
    webhooks.webhook_send_sync(text, jsonb, text, jsonb),
    webhooks.webhook_send_sync_result(text, jsonb, text, jsonb),
    webhooks.webhook_sign(text, text, bigint, text),
    webhooks.webhook_verify(text, text, bigint, text, text, int),
    webhooks.webhook_verify(text, jsonb, text, int),
    webhooks.track_table(regclass, text, text[], text, text[], text),
    webhooks.untrack_table(regclass),
    webhooks.current_tenant(),
    webhooks.tenant_scope(),
    webhooks.tracked_columns(regclass)
TO webhooks_publisher;

GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks.event_types TO webhooks_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks.tenants TO webhooks_admin;
-- Endpoints: the configuration, not the worker's bookkeeping (rate_next_at, paused_until,
-- failing_since), which a tenant's admin could otherwise set to stall every claim.
GRANT SELECT, DELETE ON webhooks.endpoints TO webhooks_admin;
GRANT INSERT (id, tenant_id, url, description, event_types, secret, previous_secret, previous_secret_expires_at,
              headers, enabled, disabled_reason, ordered, batch_max, batch_window, max_in_flight,
              tls_client_cert, tls_client_key, rate_limit, format, header_prefix, signature, filter)
    ON webhooks.endpoints TO webhooks_admin;
GRANT UPDATE (tenant_id, url, description, event_types, secret, previous_secret, previous_secret_expires_at,
              headers, enabled, disabled_reason, ordered, batch_max, batch_window, max_in_flight,
              tls_client_cert, tls_client_key, rate_limit, format, header_prefix, signature, filter)
    ON webhooks.endpoints TO webhooks_admin;
-- Deliveries are read, never written: delivery_retry, endpoint_recover and event_replay change
-- them (as the owner, after their checks), so an admin can neither put an in-flight delivery
-- back to pending (sent twice) nor replay what is not theirs.
GRANT SELECT ON webhooks.deliveries TO webhooks_admin;
GRANT SELECT ON webhooks.events, webhooks.attempts, webhooks.dead_letters, webhooks.endpoint_health,
    webhooks.tracked_tables, webhooks.metrics TO webhooks_admin;
GRANT EXECUTE ON FUNCTION
    webhooks.endpoint_create(text, text[], text, text, text, text, text, text),
    webhooks.filter_path(text),
    webhooks.endpoint_update(text, text, text[], text, jsonb, boolean, int, interval, text, text, int, int, text, text, text, text),
    webhooks.endpoint_recover(text, timestamptz),
    webhooks.endpoint_test(text, text),
    webhooks.endpoint_delete(text),
    webhooks.endpoint_enable(text),
    webhooks.endpoint_disable(text, text),
    webhooks.endpoint_rotate_secret(text, interval),
    webhooks.endpoint_secret(text),
    webhooks.event_type_register(text, text, text, text),
    webhooks.delivery_retry(bigint),
    webhooks.event_replay(text, text),
    webhooks.status(),
    webhooks.tenant_grant(text, text),
    webhooks.tenant_revoke(text, text)
TO webhooks_admin;
GRANT webhooks_publisher TO webhooks_admin;

-- webhooks_worker: what the delivery worker does, for a DBA who runs it as a role of its own
-- (webhooks.worker_role: a LOGIN role with BYPASSRLS, a member of this one) instead of the
-- bootstrap superuser. Claim, record, give back, fan out, prune and tidy, publish the
-- operational events, record failed synchronous sends; read the endpoints' secrets and keys to
-- sign; nothing else (no catalogue, tenancy or tracking changes, no definer helper).
GRANT USAGE ON SCHEMA webhooks, webhooks_internal TO webhooks_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks.deliveries TO webhooks_worker;
-- (UPDATE on events: pruning locks the rows it deletes)
GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks.events TO webhooks_worker;
GRANT SELECT, INSERT, DELETE ON webhooks.attempts TO webhooks_worker;
GRANT SELECT ON webhooks.endpoints, webhooks.event_types, webhooks.tenants TO webhooks_worker;
GRANT UPDATE (enabled, disabled_reason, paused_until, failing_since, rate_next_at, secret_problem) ON webhooks.endpoints TO webhooks_worker;
GRANT SELECT, DELETE ON webhooks.tenant_roles TO webhooks_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks_internal.fanouts TO webhooks_worker;
GRANT SELECT, UPDATE ON webhooks_internal.fanout_writer TO webhooks_worker;
GRANT SELECT ON webhooks_internal.signing_keys, webhooks_internal.tenancy_in_use TO webhooks_worker;
GRANT USAGE ON SEQUENCE webhooks.deliveries_id_seq, webhooks.attempts_id_seq TO webhooks_worker;
GRANT EXECUTE ON FUNCTION
    webhooks_internal._claim(int, interval, boolean, int, int, text[], int, int, text[], bigint[], text[], bigint[], text[]),
    webhooks_internal._claim_start(int, int, int, text[], int, int, text[], bigint[], text[], bigint[], text[]),
    webhooks_internal._claim_quota(webhooks_internal.claimer, text, int, int),
    webhooks_internal._claim_may_hold(webhooks_internal.claimer, text),
    webhooks_internal._claim_room(webhooks_internal.claimer),
    webhooks_internal._claim_head(webhooks_internal.claimer, int),
    webhooks_internal._claim_lock(bigint[]),
    webhooks_internal._claim_eventless(bigint[]),
    webhooks_internal._claim_set_aside(bigint[], bigint[], bigint[], bigint[]),
    webhooks_internal._claim_step_back(bigint[]),
    webhooks_internal._claim_elsewhere(webhooks_internal.claimer, bigint[], int),
    webhooks_internal._claim_fit_memory(webhooks_internal.claimer, bigint[]),
    webhooks_internal._claim_expired(int),
    webhooks_internal._claim_charge_rates(webhooks_internal.claimer, bigint[]),
    webhooks_internal._lease_quota(int, int, int, int, boolean, int, int, text),
    webhooks_internal._lease_room(int, int, int, int),
    webhooks_internal._record(int8[], int8[], text[], int4[], int4[], text[], int8[], int8[], float8[], text[], int8[], interval, boolean[]),
    webhooks_internal._record_answers(int8[], int8[], text[], int4[], int4[], text[], int8[], int8[], float8[], text[]),
    webhooks_internal._record_endpoints(int8[], text[], int8[], text[], boolean[], int8[], int8[], interval),
    webhooks_internal._announce_dead(int8[]),
    webhooks_internal._release(int8[], int8[], int8[]),
    webhooks_internal._hold_unreadable(int8[], int8[], text[], text[]),
    webhooks_internal._reseal_step(int),
    webhooks_internal._expand(int),
    webhooks_internal._prune_succeeded(interval, int),
    webhooks_internal._prune_dead(interval, int),
    webhooks_internal._prune_events(text, int),
    webhooks_internal._release_parked(int),
    webhooks_internal._delete_orphans(int),
    webhooks_internal._forget_dropped_roles(),
    webhooks_internal._sync_failure_record(jsonb),
    webhooks_internal._publish_operational(text, jsonb, text, text),
    webhooks_internal._new_event_id(),
    webhooks_internal._matches(text[], text),
    webhooks_internal._subscribes(webhooks.endpoints, text, text),
    webhooks_internal._source(),
    webhooks_internal._request(webhooks.deliveries, webhooks.events, webhooks.endpoints, webhooks_internal.signing_keys, webhooks.tenants, text),
    webhooks_internal._filter_passes(jsonpath, int, text, text, text, text, text, text, jsonb, jsonb),
    webhooks_internal._filter_envelope(text, text, text, text, text, jsonb, jsonb),
    webhooks_internal._filter_affordable(int, jsonb, text),
    webhooks_internal._wake_on_commit(),
    webhooks_internal._delivery_state_ok(text, int, timestamptz, timestamptz, timestamptz),
    webhooks.tenant_scope(),
    webhooks.current_tenant()
TO webhooks_worker;

-- Tenant isolation on every table a role can read: a row is visible, and may be written, only
-- for a tenant in the session's scope (tenancy.sql). Superusers and the extension owner (the
-- worker, SECURITY DEFINER functions, which check the scope themselves) bypass these policies.
-- The scope is computed once per statement (an initplan), not once per row.
ALTER TABLE webhooks.endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.tracked_tables ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.tenants ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON webhooks.endpoints
    USING ((SELECT webhooks.tenant_scope()) IS NULL OR coalesce(tenant_id, '') = ANY ((SELECT webhooks.tenant_scope())::text[]))
    WITH CHECK ((SELECT webhooks.tenant_scope()) IS NULL OR coalesce(tenant_id, '') = ANY ((SELECT webhooks.tenant_scope())::text[]));
-- A tenant's admin names its own tenant's slug; a platform admin any.
CREATE POLICY tenant_isolation ON webhooks.tenants
    USING ((SELECT webhooks.tenant_scope()) IS NULL OR id = ANY ((SELECT webhooks.tenant_scope())::text[]))
    WITH CHECK ((SELECT webhooks.tenant_scope()) IS NULL OR id = ANY ((SELECT webhooks.tenant_scope())::text[]));
CREATE POLICY tenant_isolation ON webhooks.events
    USING ((SELECT webhooks.tenant_scope()) IS NULL OR coalesce(tenant_id, '') = ANY ((SELECT webhooks.tenant_scope())::text[]));
-- A delivery belongs to its endpoint as well as to its event: visible only when both are. A
-- tenant's admin never sees what a platform endpoint ('*') answered, its errors or its host,
-- though the event was the tenant's. The endpoint is matched by id and tenant: an endpoint moved
-- to another tenant does not show that tenant its history. (The subquery obeys the endpoints
-- policy; it is one hashed look at the visible endpoints per statement, not a probe per row.)
CREATE POLICY tenant_isolation ON webhooks.deliveries
    USING (((SELECT webhooks.tenant_scope()) IS NULL OR coalesce(tenant_id, '') = ANY ((SELECT webhooks.tenant_scope())::text[]))
           AND (endpoint_id, coalesce(endpoint_tenant, '')) IN (SELECT ep.id, coalesce(ep.tenant_id, '') FROM webhooks.endpoints ep));
-- An attempt is visible when its delivery is (the subquery obeys the deliveries policy).
CREATE POLICY tenant_isolation ON webhooks.attempts
    USING (EXISTS (SELECT 1 FROM webhooks.deliveries d WHERE d.id = delivery_id));
-- Tracked tables have no tenant: the tables of the roles one is a member of.
CREATE POLICY owner_only ON webhooks.tracked_tables
    USING (pg_catalog.pg_has_role((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = relid), 'USAGE'));

-- The entry points written in Rust (src/gate.rs) document themselves here.
COMMENT ON FUNCTION webhooks.endpoint_secret(text) IS
    'An endpoint''s signing secret (whsec_...) opened from its sealed form, for a caller who may see the endpoint; the only way back to a stored secret.';
COMMENT ON FUNCTION webhooks.key_rotate() IS
    'Adds a fresh key to webhooks.key_file, which seals from then on; the worker reseals every database''s secrets under it in small steps while it keeps sending (webhooks.secret_keys). Returns its id. The extension owner''s only.';
COMMENT ON FUNCTION webhooks.webhook_publish(text, jsonb, text, jsonb, text, text) IS
    'Records an event and one pending delivery per matching enabled endpoint, in the caller''s transaction. Returns the event id; with an idempotency_key already used (same tenant, within webhooks.ttl), returns that event''s id and records nothing.';
COMMENT ON FUNCTION webhooks.webhook_publish_many(text, jsonb[], text[], jsonb, text[], text[]) IS
    'Publishes one event of the type per element of data (element i of tenant_ids, entity_keys and idempotency_keys goes with it) in one call, with every check of webhook_publish. Returns the ids in the order of data.';
COMMENT ON FUNCTION webhooks.webhook_send_sync_result(text, jsonb, text, jsonb) IS
    'As webhook_send_sync, but a failure is returned as {"error": {"code", "message", "detail", "hint"}} instead of raised.';
COMMENT ON FUNCTION webhooks.track_table(regclass, text, text[], text, text[], text) IS
    'Publishes <entity>.created/.updated/.deleted for every row written to a table you own, without excluded or secret-looking columns; condition (SQL over OLD and NEW) leaves out rows it is not true for.';
COMMENT ON FUNCTION webhooks.untrack_table(regclass) IS 'Stops row events of a tracked table.';
COMMENT ON FUNCTION webhooks.cluster_setup() IS
    'On a Citus coordinator (superuser): copies endpoints, keys, tenants, bindings, the catalogue and tracked tables to every node, from now on in each change''s transaction; makes the views across nodes in webhooks_cluster. Run again after adding a node.';
COMMENT ON FUNCTION webhooks.tracked_columns(regclass) IS
    'What the row events of a tracked table carry as it is now: entity, columns kept out and sent, tenant and key columns, condition, and the problem that makes its writes fail, if any. For roles that may write the table.';
COMMENT ON FUNCTION webhooks.tenant_scope() IS
    'Tenants the calling role may see and publish for: NULL = every tenant; the empty string = rows without a tenant.';
COMMENT ON FUNCTION webhooks.current_tenant() IS
    'The tenant this session acts for by default (webhooks.tenant_id, or the role''s only tenant), or NULL.';
COMMENT ON FUNCTION webhooks.tenant_grant(text, text) IS
    'Binds a role to a tenant (''*'' = every tenant, the empty string = rows without a tenant).';
COMMENT ON FUNCTION webhooks.tenant_revoke(text, text) IS 'Removes a binding made by tenant_grant.';
COMMENT ON FUNCTION webhooks.delivery_retry(bigint) IS
    'Sends a dead (or waiting) delivery again now; refuses one in flight. Returns its id, event, endpoint, status, attempts and next attempt.';
COMMENT ON FUNCTION webhooks.endpoint_recover(text, timestamptz) IS
    'Sends again every dead delivery of an endpoint that died since the given time; returns how many.';
COMMENT ON FUNCTION webhooks.event_replay(text, text) IS
    'Sends an event again as new deliveries: to one endpoint, or to every enabled endpoint that subscribes to it.';
COMMENT ON FUNCTION webhooks.webhook_sign(text, text, bigint, text) IS
    'The Standard Webhooks webhook-signature value (v1,<base64 HMAC-SHA256>) of a message: secret, webhook-id, webhook-timestamp, body.';
COMMENT ON FUNCTION webhooks.webhook_verify(text, text, bigint, text, text, int) IS
    'True when a v1 signature of the message matches the secret and the timestamp is within the tolerance (seconds).';
COMMENT ON FUNCTION webhooks.webhook_verify(text, jsonb, text, int) IS
    'Verifies a received request from its headers (a JSON object, names in any case) and body.';
COMMENT ON FUNCTION webhooks.endpoint_test(text, text) IS
    'Sends a signed test event (webhook.test, or the type given) to the endpoint now and returns what it answered. Nothing is recorded.';
COMMENT ON FUNCTION webhooks.status() IS
    'The worker (running, last loop, database served) and the queue of the caller''s tenants.';

-- Said once, where it is created: events recorded in a database the worker does not serve are
-- never delivered (webhooks.status() says so too).
DO $$
BEGIN
    IF coalesce(pg_catalog.current_setting('webhooks.database', true), '') NOT IN ('', pg_catalog.current_database()) THEN
        RAISE NOTICE 'the webhooks worker serves database "%" (webhooks.database), not "%": events published here will not be delivered',
            pg_catalog.current_setting('webhooks.database', true), pg_catalog.current_database()
            USING HINT = pg_catalog.format('Set webhooks.database = %L in postgresql.conf and restart, or create the extension in %I.',
                pg_catalog.current_database(), pg_catalog.current_setting('webhooks.database', true));
    END IF;
END $$;

-- Every-database mode (webhooks.database empty): once this commits, the launcher starts this
-- database's workers.
SELECT webhooks_internal._installed();

-- Registered last, after every table registered by an earlier version, so that an upgraded
-- database lists its dumped tables in the same order as a fresh one: the deliveries that bulk
-- publishes have yet to make.
SELECT pg_catalog.pg_extension_config_dump('webhooks_internal.fanouts', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks_internal.signing_keys', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks_internal.fanouts_id_seq', '');
