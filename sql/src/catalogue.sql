-- The catalogue of event types.


-- The catalogue is shared by every tenant: only a platform admin changes it, and the types
-- shipped with the extension are never deleted.
CREATE FUNCTION webhooks_internal._event_type_before_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, webhooks, pg_temp
AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.builtin THEN
            RAISE EXCEPTION 'event type "%" ships with the extension and cannot be deleted', OLD.name
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN OLD;
    END IF;
    PERFORM webhooks_internal._check_event_type_name(NEW.name);
    IF pg_catalog.starts_with(NEW.name, 'webhook.') AND NOT NEW.builtin THEN
        RAISE EXCEPTION 'event type "%": the webhook.* category is reserved for the extension''s operational events', NEW.name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NEW.mode NOT IN ('async', 'sync', 'batched') THEN
        RAISE EXCEPTION 'mode must be async, sync or batched, got "%"', NEW.mode USING ERRCODE = 'invalid_parameter_value';
    END IF;
    NEW.category := pg_catalog.split_part(NEW.name, '.', 1);
    RETURN NEW;
END $$;

CREATE TRIGGER event_types_before_write BEFORE INSERT OR UPDATE OR DELETE ON webhooks.event_types
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._event_type_before_write();

-- Who is writing is the writing role: checked as that role, before the definer trigger.
CREATE FUNCTION webhooks_internal._event_type_admin() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF webhooks.tenant_scope() IS NOT NULL
       OR NOT (pg_catalog.pg_has_role(current_user, 'webhooks_admin', 'MEMBER')
               OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)) THEN
        RAISE EXCEPTION 'only a platform admin (a superuser, or a webhooks_admin bound to "*") can change the event type catalogue'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER event_types_0_admin BEFORE INSERT OR UPDATE OR DELETE ON webhooks.event_types
    FOR EACH ROW EXECUTE FUNCTION webhooks_internal._event_type_admin();

CREATE FUNCTION webhooks.event_type_register(
    name text,
    description text DEFAULT '',
    mode text DEFAULT 'async',
    version text DEFAULT '1'
) RETURNS webhooks.event_types
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, webhooks, pg_temp
AS $$
DECLARE
    et webhooks.event_types;
BEGIN
    INSERT INTO webhooks.event_types AS t (name, category, description, mode, version)
    VALUES (name, '', coalesce(description, ''), mode, coalesce(version, '1'))
    ON CONFLICT ON CONSTRAINT event_types_pkey DO UPDATE
        SET description = EXCLUDED.description, mode = EXCLUDED.mode, version = EXCLUDED.version
    RETURNING * INTO et;
    RETURN et;
END $$;
COMMENT ON FUNCTION webhooks.event_type_register(text, text, text, text) IS
    'Adds an event type to the catalogue (or updates its description, mode and version).';
