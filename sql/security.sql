-- Roles, grants and tenant isolation. Loaded last.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'webhooks_admin') THEN
        CREATE ROLE webhooks_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'webhooks_publisher') THEN
        CREATE ROLE webhooks_publisher NOLOGIN;
    END IF;
END $$;

-- PUBLIC gets nothing: not the functions, not the tables.
REVOKE ALL ON ALL TABLES IN SCHEMA webhooks FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA webhooks FROM PUBLIC;
REVOKE ALL ON SCHEMA webhooks FROM PUBLIC;

GRANT USAGE ON SCHEMA webhooks TO webhooks_admin, webhooks_publisher;

-- Publishers write events only through SECURITY DEFINER functions and never read endpoints
-- (secrets live there).
GRANT SELECT ON webhooks.event_types TO webhooks_publisher;
GRANT EXECUTE ON FUNCTION
    webhooks.webhook_publish(text, jsonb, text, jsonb, text),
    webhooks.webhook_send_sync(text, jsonb, text, jsonb),
    webhooks.webhook_sign(text, text, bigint, text),
    webhooks.webhook_verify(text, text, bigint, text, text, int),
    webhooks.webhook_verify(text, jsonb, text, int),
    webhooks.track_table(regclass, text, text[], text),
    webhooks.untrack_table(regclass),
    webhooks.current_tenant()
TO webhooks_publisher;

-- Admins manage endpoints (and see their secrets), the catalogue, retries and replays.
GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks.endpoints, webhooks.event_types TO webhooks_admin;
GRANT SELECT, INSERT, UPDATE ON webhooks.deliveries TO webhooks_admin;
GRANT SELECT ON webhooks.events, webhooks.attempts, webhooks.dead_letters, webhooks.endpoint_health TO webhooks_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA webhooks TO webhooks_admin;
GRANT webhooks_publisher TO webhooks_admin;

-- Tenant isolation. A session with webhooks.tenant_id set sees and changes only that tenant's
-- rows; without it, every row. Superusers and the extension owner (the worker, SECURITY
-- DEFINER functions) bypass these policies.
ALTER TABLE webhooks.endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhooks.attempts ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON webhooks.endpoints
    USING (webhooks.current_tenant() IS NULL OR tenant_id = webhooks.current_tenant())
    WITH CHECK (webhooks.current_tenant() IS NULL OR tenant_id = webhooks.current_tenant());
CREATE POLICY tenant_isolation ON webhooks.events
    USING (webhooks.current_tenant() IS NULL OR tenant_id = webhooks.current_tenant())
    WITH CHECK (webhooks.current_tenant() IS NULL OR tenant_id = webhooks.current_tenant());
CREATE POLICY tenant_isolation ON webhooks.deliveries
    USING (webhooks.current_tenant() IS NULL OR tenant_id = webhooks.current_tenant())
    WITH CHECK (webhooks.current_tenant() IS NULL OR tenant_id = webhooks.current_tenant());
-- An attempt is visible when its delivery is (the subquery obeys the deliveries policy).
CREATE POLICY tenant_isolation ON webhooks.attempts
    USING (EXISTS (SELECT 1 FROM webhooks.deliveries d WHERE d.id = delivery_id));
