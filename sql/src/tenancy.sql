-- Tenancy: roles are bound to tenants, and a role sees, changes and publishes only for its
-- tenants, whatever its session sets. Loaded after the tables, before the API.
--
-- A role's scope, from webhooks.tenant_roles (bindings count through role membership):
--   superuser                  every tenant
--   bound to '*'               every tenant (the platform's own admins and publishers)
--   bound to tenants           those tenants ('' stands for rows without a tenant)
--   unbound, no binding was ever made   rows without a tenant (a single-tenant install)
--   unbound, tenants in use             nothing
-- Closed by default: once tenants are in use, a role sees only what it was bound to, and
-- revoking a binding never widens a scope. A membership counts only when granted by someone
-- other than the member role itself (PostgreSQL 15 lets a login role grant itself to others).
-- SET webhooks.tenant_id narrows the scope to one of those tenants, never more.
-- Endpoints follow the same rule, with tenant_id '*' for a platform endpoint that receives the
-- events of every tenant (only a role of scope '*' can see or create one); an endpoint without
-- a tenant receives only events without a tenant.
-- The role is the one that called the API (webhooks_internal._caller(), see src/gate.rs), not the
-- session's: someone else's code running in a session acts with its own rights.

-- NULL means every tenant; '' in the array stands for rows without a tenant.
CREATE FUNCTION webhooks_internal._scope_of(r oid) RETURNS text[]
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    s text[];
    want text := nullif(pg_catalog.current_setting('webhooks.tenant_id', true), '');
BEGIN
    IF (SELECT a.rolsuper FROM pg_catalog.pg_authid a WHERE a.oid = r) THEN
        s := NULL;
    ELSE
        WITH RECURSIVE roles(oid) AS (
            SELECT r
            UNION
            SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN roles ON m.member = roles.oid
            WHERE m.grantor <> m.roleid
        )
        SELECT pg_catalog.array_agg(DISTINCT t.tenant_id) INTO s
        FROM webhooks.tenant_roles t
        JOIN roles ON roles.oid = t.role_name::oid;
        IF s IS NULL THEN
            s := CASE WHEN EXISTS (SELECT 1 FROM webhooks_internal.tenancy_in_use)
                        OR EXISTS (SELECT 1 FROM webhooks.tenant_roles)
                      THEN '{}'::text[] ELSE ARRAY[''] END;
        ELSIF '*' = ANY (s) THEN
            s := NULL;
        END IF;
    END IF;
    IF want IS NOT NULL THEN
        IF s IS NOT NULL AND NOT want = ANY (s) THEN
            RAISE EXCEPTION 'webhooks.tenant_id "%" is not a tenant of role %', want, r::regrole
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'A platform admin binds roles to tenants with webhooks.tenant_grant(role, tenant_id).';
        END IF;
        s := ARRAY[want];
    END IF;
    RETURN s;
END $$;

-- Tenant ids go into envelopes, logs and policies: short printable text. '*' is reserved for
-- bindings and platform endpoints (allow_star).
CREATE FUNCTION webhooks_internal._check_tenant_id(t text, allow_star boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    IF t IS NULL OR (allow_star AND t = '*') THEN
        RETURN;
    END IF;
    IF t = '' OR t = '*' OR pg_catalog.octet_length(t) > 128 OR t ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'tenant_id "%" is not valid: 1-128 bytes, no control characters, not "*"', t
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END $$;

-- Raises unless the caller is a platform admin: a superuser, or a webhooks_admin whose scope
-- is every tenant.
CREATE FUNCTION webhooks_internal._require_platform_admin(action text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    r oid := webhooks_internal._caller();
BEGIN
    IF webhooks_internal._scope_of(r) IS NOT NULL
       OR NOT ((SELECT a.rolsuper FROM pg_catalog.pg_authid a WHERE a.oid = r)
               OR pg_catalog.pg_has_role(r, 'webhooks_admin', 'MEMBER')) THEN
        RAISE EXCEPTION 'only a platform admin (a superuser, or a webhooks_admin bound to "*") can %', action
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

CREATE FUNCTION webhooks_internal._tenant_grant(role_name text, tenant_id text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    r oid;
BEGIN
    PERFORM webhooks_internal._require_platform_admin('bind roles to tenants');
    SELECT x.oid INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = _tenant_grant.role_name;
    IF r IS NULL THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name USING ERRCODE = 'undefined_object';
    END IF;
    IF tenant_id IS NULL THEN
        RAISE EXCEPTION 'tenant_id must not be NULL (use ''*'' for every tenant)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF tenant_id <> '' THEN
        PERFORM webhooks_internal._check_tenant_id(tenant_id, true);
        PERFORM webhooks_internal._check_tenant_not_a_slug(tenant_id);
    END IF;
    INSERT INTO webhooks_internal.tenancy_in_use DEFAULT VALUES ON CONFLICT DO NOTHING;
    INSERT INTO webhooks.tenant_roles AS t (role_name, tenant_id, granted_by)
    VALUES (r::regrole, _tenant_grant.tenant_id, webhooks_internal._caller()::regrole::text)
    ON CONFLICT DO NOTHING;
END $$;

CREATE FUNCTION webhooks_internal._tenant_revoke(role_name text, tenant_id text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    PERFORM webhooks_internal._require_platform_admin('unbind roles');
    DELETE FROM webhooks.tenant_roles t
    WHERE t.role_name::oid = (SELECT x.oid FROM pg_catalog.pg_roles x WHERE x.rolname = _tenant_revoke.role_name)
      AND t.tenant_id = _tenant_revoke.tenant_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role "%" is not bound to tenant "%"', role_name, tenant_id USING ERRCODE = 'no_data_found';
    END IF;
END $$;

-- A tenant's slug names it to hmac-hex receivers (a tenant without a row is named by its id):
-- no tenant may take a name another tenant goes by. The slug column is unique; this refuses
-- another tenant's id as well (a tenant's admin named its tenant as another one, 0.3.0), and
-- the binding of a tenant id that another tenant already uses as its slug.
CREATE FUNCTION webhooks_internal._slug_owner(name text, except_tenant text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
    SELECT x.t FROM (
        SELECT t.id AS t FROM webhooks.tenants t WHERE t.id = name OR t.slug = name
        UNION ALL
        SELECT r.tenant_id FROM webhooks.tenant_roles r WHERE r.tenant_id = name
        UNION ALL
        SELECT e.tenant_id FROM webhooks.endpoints e WHERE coalesce(e.tenant_id, '') = name
    ) x
    WHERE x.t IS DISTINCT FROM except_tenant
    LIMIT 1
$$;

CREATE FUNCTION webhooks_internal._tenant_before_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    other text;
BEGIN
    IF NEW.slug IS DISTINCT FROM NEW.id THEN
        other := webhooks_internal._slug_owner(NEW.slug, NEW.id);
        -- A tenant may exist only through its events (the platform published for it before
        -- onboarding it): a tenant's admin may not take its name either. (A scan of the events,
        -- paid by the admin's rare rename; the platform's own writes are trusted.)
        IF other IS NULL AND (TG_OP = 'INSERT' OR OLD.slug IS DISTINCT FROM NEW.slug)
           AND webhooks_internal._outer_scope() IS NOT NULL THEN
            SELECT e.tenant_id INTO other FROM webhooks.events e
            WHERE e.tenant_id = NEW.slug AND e.tenant_id IS DISTINCT FROM NEW.id LIMIT 1;
        END IF;
        IF other IS NOT NULL THEN
            RAISE EXCEPTION 'slug "%" is already the name of tenant "%": tenant "%" cannot take it', NEW.slug, other, NEW.id
                USING ERRCODE = 'unique_violation',
                      HINT = 'Choose another slug (a tenant without one is named by its id).';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tenants_before_write BEFORE INSERT OR UPDATE ON webhooks.tenants
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._tenant_before_write();

-- (a tenant id that is another tenant's slug, for bindings and endpoints)
CREATE FUNCTION webhooks_internal._check_tenant_not_a_slug(t text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    other text;
BEGIN
    IF t IS NULL OR t IN ('', '*') THEN
        RETURN;
    END IF;
    SELECT x.id INTO other FROM webhooks.tenants x WHERE x.slug = t AND x.id <> t;
    IF other IS NOT NULL THEN
        RAISE EXCEPTION 'tenant_id "%" is the slug of tenant "%": hmac-hex receivers could not tell them apart', t, other
            USING ERRCODE = 'unique_violation',
                  HINT = 'Use another tenant id, or give that tenant another slug first.';
    END IF;
END $$;
