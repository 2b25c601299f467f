-- Tables of the webhooks extension. Loaded first (bootstrap): nothing here calls Rust code.
--
-- IF NOT EXISTS and ON CONFLICT: an upgrade script brings the existing tables to this shape
-- first (sql/upgrades/<from>--<to>.pre.sql) and then runs this whole install script, so that
-- an upgraded database and a fresh one are built by the same statements.

-- The helpers behind the API (checks, the worker's statements, triggers' functions) live in
-- their own schema, the owner's alone: \df webhooks.* lists the documented API only.
CREATE SCHEMA IF NOT EXISTS webhooks_internal;
COMMENT ON SCHEMA webhooks_internal IS 'Internals of the webhooks extension: not an API, owner only.';

CREATE TABLE IF NOT EXISTS webhooks.event_types (
    name        text PRIMARY KEY,
    category    text NOT NULL,
    description text NOT NULL DEFAULT '',
    mode        text NOT NULL DEFAULT 'async' CHECK (mode IN ('async', 'sync', 'batched')),
    version     text NOT NULL DEFAULT '1',
    builtin     boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE webhooks.event_types IS
    'Catalogue of event types. mode: async (worker, retried), sync (webhook_send_sync), batched (log events).';

CREATE TABLE IF NOT EXISTS webhooks.endpoints (
    id                         text PRIMARY KEY,
    tenant_id                  text,
    url                        text NOT NULL,
    description                text,
    event_types                text[] NOT NULL DEFAULT '{*}',
    secret                     text NOT NULL,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    headers                    jsonb NOT NULL DEFAULT '{}',
    enabled                    boolean NOT NULL DEFAULT true,
    disabled_reason            text,
    ordered                    boolean NOT NULL DEFAULT false,
    batch_max                  int NOT NULL DEFAULT 1 CHECK (batch_max BETWEEN 1 AND 1000),
    batch_window               interval NOT NULL DEFAULT '0'
                               CHECK (batch_window BETWEEN interval '0' AND interval '1 hour'),
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    -- Columns added after 0.1.0 go last, where ALTER TABLE ... ADD COLUMN puts them on upgrade,
    -- so an upgraded table and a fresh one are the same table.
    --
    -- Requests to this endpoint under way at once (a batch is one), at most: half the default
    -- sender threads, so a slow receiver cannot take every thread from the others.
    max_in_flight              int NOT NULL DEFAULT 32 CHECK (max_in_flight BETWEEN 1 AND 1000),
    -- Presented to receivers that demand a client certificate (mTLS); hidden like the secret.
    tls_client_cert            text,
    tls_client_key             text,
    -- Deliveries per second at most (NULL: no limit), shared by every worker through rate_next_at:
    -- the time the next send is due under the limit (a GCRA, with one second of burst).
    rate_limit                 int CHECK (rate_limit BETWEEN 1 AND 10000),
    rate_next_at               timestamptz,
    -- The receiver asked for a pause (429/502/503/504 with Retry-After): nothing is sent before.
    paused_until               timestamptz,
    -- The first failed attempt since the last success: webhooks.disable_after counts from here.
    failing_since              timestamptz,
    -- Added in 0.3.0. What receivers get: 'standard-webhooks' (the envelope and webhook-*
    -- headers of the Standard Webhooks spec) or 'hmac-hex' (the layout that identity platforms such as IntelliAuth document: a flat body
    -- with tenant and delivery, a hex HMAC-SHA256 of the body in <header_prefix>Signature).
    format                     text NOT NULL DEFAULT 'standard-webhooks'
                               CHECK (format IN ('standard-webhooks', 'hmac-hex')),
    -- hmac-hex only: the prefix of its headers (NULL: 'X-Webhook-').
    header_prefix              text,
    -- Standard Webhooks signatures: 'v1' (HMAC with the secret) or 'v1a' (ed25519: the
    -- extension keeps the private key in webhooks_internal.signing_keys; receivers get
    -- public_key, which verifies but cannot sign).
    signature                  text NOT NULL DEFAULT 'v1' CHECK (signature IN ('v1', 'v1a')),
    public_key                 text,
    -- A SQL/JSON path predicate over the event's envelope ({id, type, version, source,
    -- tenant_id, actor, data}): an event it does not match makes no delivery (NULL: all).
    filter                     jsonpath,
    -- Added in 0.4.0. The paths the filter evaluates, set by the endpoints' trigger: its work on
    -- an event is bounded by this times the event's size (core/src/filter_path.rs). NULL with a
    -- filter: one written before 0.4.0's checks that they refuse, never evaluated.
    filter_weight              int,
    -- Added in 0.4.0. What each claimed request of this endpoint carries besides its event (URL,
    -- headers, secrets, client certificate and key): counted in webhooks.worker_memory with
    -- every row the worker holds, as the row carries them.
    request_bytes              int GENERATED ALWAYS AS (
        pg_catalog.octet_length(url) + pg_catalog.octet_length(headers::text) + pg_catalog.octet_length(secret)
        + coalesce(pg_catalog.octet_length(previous_secret), 0) + coalesce(pg_catalog.octet_length(tls_client_cert), 0)
        + coalesce(pg_catalog.octet_length(tls_client_key), 0)) STORED,
    -- Added in 0.4.0. secret, previous_secret and tls_client_key are stored sealed under the
    -- key in webhooks.key_file (sql/src/secrets.sql). Set by the worker when it cannot open
    -- them (the key missing or wrong): why nothing is sent; cleared by the next answer.
    secret_problem             text
);
-- Publishing matches endpoints by tenant (its own and the platform's, '*'), as RLS does.
CREATE INDEX IF NOT EXISTS endpoints_tenant ON webhooks.endpoints ((coalesce(tenant_id, '')));

-- Tenants as receivers of the hmac-hex format see them: {"id": ..., "slug": ...}. Optional: a
-- tenant without a row is sent with its id as slug.
CREATE TABLE IF NOT EXISTS webhooks.tenants (
    id         text PRIMARY KEY,
    -- unique: a tenant's admin names its own tenant, never as another one
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The outbox: an event row exists if and only if its transaction committed.
CREATE TABLE IF NOT EXISTS webhooks.events (
    id          text PRIMARY KEY,      -- evt_ + ULID: sorts by publish time
    tenant_id   text,
    type        text NOT NULL,
    version     text NOT NULL DEFAULT '1',
    source      text NOT NULL,
    actor       jsonb,
    data        jsonb NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    entity_key  text,
    -- A publisher's retry of the same transaction gets the first event back (per tenant).
    idempotency_key text,
    -- Added in 0.3.0: the publishing session's webhooks.traceparent, sent with every attempt.
    traceparent text,
    -- Added in 0.4.0: the size of data as sent (its JSON text), measured when published: what a
    -- claimed delivery of it costs the worker's memory (webhooks.worker_memory).
    data_bytes  int
);
CREATE UNIQUE INDEX IF NOT EXISTS events_idempotency ON webhooks.events ((coalesce(tenant_id, '')), idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS webhooks.deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- No foreign keys on the hot path: their per-row checks (and KEY SHARE locks on the
    -- endpoint row, shared by every publisher) cost more than the rest of a publish. Deletes
    -- cascade through statement triggers in endpoints.sql instead.
    event_id        text NOT NULL,
    endpoint_id     text NOT NULL,
    tenant_id       text,
    entity_key      text,
    sync            boolean NOT NULL DEFAULT false,
    status          text NOT NULL DEFAULT 'pending',
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz DEFAULT now(),
    lease_until     timestamptz,
    last_status     int,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    -- Added in 0.3.0 (last, as ALTER TABLE puts it). The tenant of the endpoint when the delivery
    -- was made: the claim and housekeeping match the endpoint by id and this, so work left for a
    -- deleted endpoint never reaches another one that later takes its id in another tenant.
    endpoint_tenant text,
    -- The worker process that claimed it last (its pid): with several workers, each leases an
    -- endpoint's rows up to its own part of the allowance, counted from this.
    claimed_by      int,
    -- Added in 0.4.0: its event's data_bytes, where the claim reads it (NULL: written before
    -- 0.4.0, looked up then).
    data_bytes      int
    -- (the check of its states is in sql/states.sql)
);
-- Claiming due work walks this index from the oldest due row: O(batch) whatever waits behind.
CREATE INDEX IF NOT EXISTS deliveries_due ON webhooks.deliveries (next_attempt_at) WHERE status = 'pending';
-- The claim's second look, per endpoint, when the head of the due index is full of rows of
-- endpoints at their max_in_flight.
CREATE INDEX IF NOT EXISTS deliveries_endpoint_due ON webhooks.deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_leased ON webhooks.deliveries (lease_until) WHERE status = 'in_flight';
-- Orphans (parked with the time in lease_until), for housekeeping to find without walking
-- every parked row of a disabled endpoint.
CREATE INDEX IF NOT EXISTS deliveries_orphaned ON webhooks.deliveries (lease_until)
    WHERE status = 'pending' AND lease_until IS NOT NULL;
CREATE INDEX IF NOT EXISTS deliveries_event ON webhooks.deliveries (event_id);
-- Per-entity ordering looks up earlier unfinished deliveries of the same entity.
CREATE INDEX IF NOT EXISTS deliveries_entity ON webhooks.deliveries (endpoint_id, entity_key, id)
    WHERE entity_key IS NOT NULL AND status IN ('pending', 'in_flight');
CREATE INDEX IF NOT EXISTS deliveries_succeeded ON webhooks.deliveries (completed_at) WHERE status = 'succeeded';
CREATE INDEX IF NOT EXISTS deliveries_dead ON webhooks.deliveries (completed_at) WHERE status = 'dead';

-- Deliveries still to be made: a statement that publishes many events records here, per
-- tenant, which events go to which endpoints (matched when it publishes, so fixed when it
-- commits), and the worker writes the delivery rows from it, in order, a slice per claim. The
-- user's write is one events row per event, whatever the number of endpoints.
CREATE TABLE IF NOT EXISTS webhooks_internal.fanouts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_ids        text[] NOT NULL,       -- in publish order
    entity_keys      text[],                -- NULL: none of them has one
    tenant_id        text,
    endpoints        text[] NOT NULL,
    endpoint_tenants text[] NOT NULL,
    delays           interval[] NOT NULL,   -- each endpoint's batch_window
    published_at     timestamptz NOT NULL DEFAULT now(),
    done             int NOT NULL DEFAULT 0, -- events whose deliveries are written
    data_bytes       int[],                 -- added in 0.4.0: each event's data_bytes
    -- added in 0.4.0: each endpoint's filter is evaluated as the deliveries are written (an
    -- operational event's filtered endpoints, so that the statement recording outcomes never
    -- evaluates what a tenant's admin wrote)
    filtered         boolean NOT NULL DEFAULT false
);

-- The private keys of v1a endpoints: the owner's alone (admins read endpoints, never these).
-- previous_private_key signs too until the endpoint's previous_secret_expires_at.
CREATE TABLE IF NOT EXISTS webhooks_internal.signing_keys (
    endpoint_id          text PRIMARY KEY,
    private_key          text NOT NULL,
    previous_private_key text
);

-- One row, locked by the worker that writes fanouts (one writer at a time keeps entity order).
-- A table of the owner's, not an advisory lock: any role may take any advisory lock.
CREATE TABLE IF NOT EXISTS webhooks_internal.fanout_writer (one boolean PRIMARY KEY DEFAULT true CHECK (one));
INSERT INTO webhooks_internal.fanout_writer DEFAULT VALUES ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS webhooks.attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   bigint NOT NULL,
    attempt       int NOT NULL CHECK (attempt >= 1),
    started_at    timestamptz NOT NULL,
    duration_ms   double precision,
    status_code   int,
    error         text,
    response_body text
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON webhooks.attempts (delivery_id);
CREATE INDEX IF NOT EXISTS attempts_started ON webhooks.attempts (started_at);

-- pg_dump keeps endpoints, the catalogue entries users added and the work still to do: events
-- with a delivery pending or in flight, and those deliveries (with the sequence behind their
-- ids, so that new deliveries after a restore don't collide with restored ones). History
-- (succeeded and dead deliveries, attempts) stays behind.
SELECT pg_catalog.pg_extension_config_dump('webhooks.endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('webhooks.event_types', 'WHERE NOT builtin');
SELECT pg_catalog.pg_extension_config_dump('webhooks.events',
    'WHERE id IN (SELECT d.event_id FROM webhooks.deliveries d WHERE d.status IN (''pending'', ''in_flight''))
        OR id IN (SELECT pg_catalog.unnest(f.event_ids) FROM webhooks_internal.fanouts f)');
-- (webhooks_internal.fanouts is dumped too: registered last, in security.sql)
SELECT pg_catalog.pg_extension_config_dump('webhooks.deliveries', 'WHERE status IN (''pending'', ''in_flight'')');
SELECT pg_catalog.pg_extension_config_dump('webhooks.deliveries_id_seq', '');

-- The identity events that identity platforms' webhook pages name (Authsignal's challenge and
-- authenticator events, an IDaaS catalogue of user, password, passkey and magic-link events, ...).
INSERT INTO webhooks.event_types (name, category, description, mode, builtin)
SELECT name, split_part(name, '.', 1), description, mode, true
FROM (VALUES
    ('email.created', 'An email OTP or magic link needs to be sent.', 'sync'),
    ('sms.created', 'An SMS OTP needs to be sent.', 'sync'),
    ('push.created', 'A push notification needs to be delivered.', 'sync'),
    ('action.verify', 'A challenge is about to succeed; the receiver can block it.', 'sync'),
    ('authenticator.created', 'A user enrolled a new authenticator.', 'async'),
    ('authenticator.updated', 'An authenticator on a user was updated.', 'async'),
    ('authenticator.deleted', 'An authenticator was removed from a user.', 'async'),
    ('action.log_created', 'A snapshot of an action that reached a terminal state.', 'batched'),
    ('challenge.log_created', 'A challenge-related event, such as an OTP sent or verified.', 'batched'),
    ('authentication.succeeded', 'A sign-in attempt succeeded.', 'async'),
    ('authentication.failed', 'A sign-in attempt failed.', 'async'),
    ('user.created', 'A user was created.', 'async'),
    ('user.updated', 'A user profile was updated.', 'async'),
    ('user.deleted', 'A user was deleted.', 'async'),
    ('user.registration.completed', 'A user completed registration.', 'async'),
    ('user.email_verified', 'A user verified an email address.', 'async'),
    ('user.signed_in', 'A user signed in.', 'async'),
    ('user.signed_out', 'A user signed out.', 'async'),
    ('user.sign_in_failed', 'A sign-in failed.', 'async'),
    ('user.mfa_required', 'A sign-in requires a second factor.', 'async'),
    ('user.mfa_succeeded', 'A second factor was verified.', 'async'),
    ('user.mfa_failed', 'A second factor failed.', 'async'),
    ('user.signed_up', 'A user signed up.', 'async'),
    ('user.disabled', 'A user was disabled.', 'async'),
    ('user.enabled', 'A user was enabled.', 'async'),
    ('password.updated', 'A password was changed or reset.', 'async'),
    ('kba.question.created', 'A knowledge-based question was created.', 'async'),
    ('grid.created', 'A grid card was issued.', 'async'),
    ('grid.email.sent', 'A grid card email was sent.', 'async'),
    ('grid.password.email.sent', 'A grid card password email was sent.', 'async'),
    ('passkey.created', 'A passkey was created.', 'async'),
    ('passkey.updated', 'A passkey was updated.', 'async'),
    ('passkey.deleted', 'A passkey was deleted.', 'async'),
    ('magiclink.email.sent', 'A magic link email was sent.', 'async'),
    ('face.biometric.created', 'A face biometric enrollment was created.', 'async'),
    ('organization.created', 'An organization was created.', 'async'),
    ('organization.updated', 'An organization was updated.', 'async'),
    ('organization.deleted', 'An organization was deleted.', 'async'),
    ('organization.member_added', 'A member joined an organization.', 'async'),
    ('organization.member_removed', 'A member left an organization.', 'async'),
    ('subscription.created', 'A subscription was created.', 'async'),
    ('subscription.updated', 'A subscription changed.', 'async'),
    ('subscription.canceled', 'A subscription was canceled.', 'async'),
    ('subscription.renewed', 'A subscription was renewed.', 'async'),
    ('security.account_locked', 'An account was locked.', 'async'),
    ('security.suspicious_login', 'Suspicious sign-in activity was detected.', 'async'),
    ('security.2fa_enabled', 'Two-factor authentication was enabled.', 'async'),
    ('security.2fa_disabled', 'Two-factor authentication was disabled.', 'async'),
    ('security.brute_force_detected', 'A brute-force attack was detected.', 'async'),
    ('security.token_reuse_detected', 'A refresh token was reused.', 'async'),
    ('security.breach_incident_opened', 'A breach incident was opened.', 'async'),
    ('mfa.factor_added', 'An MFA factor was added.', 'async'),
    ('mfa.factor_removed', 'An MFA factor was removed.', 'async'),
    ('mfa.backup_codes_regenerated', 'MFA backup codes were regenerated.', 'async'),
    ('application.created', 'An application was created.', 'async'),
    ('application.updated', 'An application was updated.', 'async'),
    ('application.secret_rotated', 'An application secret was rotated.', 'async'),
    ('application.disabled', 'An application was disabled.', 'async'),
    ('application.deleted', 'An application was deleted.', 'async'),
    ('federation.connection_added', 'A federation connection was added.', 'async'),
    ('federation.sso_completed', 'A federated sign-in completed.', 'async'),
    ('federation.sso_failed', 'A federated sign-in failed.', 'async'),
    -- Operational events, published by the extension itself for an operator's alerting
    -- receiver. Only endpoints that name them (webhook.* or the exact name) receive them.
    ('webhook.test', 'A test event sent by webhooks.endpoint_test().', 'async'),
    ('webhook.endpoint.disabled', 'An endpoint was disabled: by an admin, by a 410 Gone, or after failing for webhooks.disable_after.', 'async'),
    ('webhook.endpoint.recovered', 'An endpoint that was failing answered with success again.', 'async'),
    ('webhook.delivery.dead', 'A delivery exhausted its retries (or its time to live) and was dead-lettered.', 'async')
) AS t(name, description, mode)
ON CONFLICT (name) DO UPDATE
    SET category = excluded.category, description = excluded.description, mode = excluded.mode, builtin = true;

-- What psql's \d+ shows users.
COMMENT ON TABLE webhooks.tenants IS 'Tenants as hmac-hex receivers see them ({"id", "slug"}); a tenant without a row is sent with its id as slug.';
COMMENT ON COLUMN webhooks.tenants.id IS 'The tenant_id of events and endpoints.';
COMMENT ON COLUMN webhooks.tenants.slug IS 'Its short name for receivers: lower-case letters, digits and -.';
COMMENT ON COLUMN webhooks.tenants.created_at IS 'When the row was added.';
COMMENT ON TABLE webhooks.endpoints IS
    'Receivers: where events go, which types, for which tenant, signed with which secret.';
COMMENT ON COLUMN webhooks.endpoints.id IS 'ep_ + ULID; what publishers and error messages name.';
COMMENT ON COLUMN webhooks.endpoints.tenant_id IS 'The tenant whose events it receives; ''*'' = every tenant; NULL = events without a tenant.';
COMMENT ON COLUMN webhooks.endpoints.url IS 'https:// URL the events are POSTed to (may carry a token: never shown to publishers).';
COMMENT ON COLUMN webhooks.endpoints.event_types IS 'Filters: exact type names, category.* or *.';
COMMENT ON COLUMN webhooks.endpoints.secret IS 'whsec_ signing secret (Standard Webhooks), stored sealed under webhooks.key_file: webhooks.endpoint_secret(id) opens it.';
COMMENT ON COLUMN webhooks.endpoints.previous_secret IS 'The secret before the last rotation; also signs until previous_secret_expires_at.';
COMMENT ON COLUMN webhooks.endpoints.headers IS 'Extra request headers, a JSON object of name to string value.';
COMMENT ON COLUMN webhooks.endpoints.enabled IS 'Disabled endpoints get no new deliveries; their pending ones wait.';
COMMENT ON COLUMN webhooks.endpoints.ordered IS 'One delivery per entity key at a time, in publish order.';
COMMENT ON COLUMN webhooks.endpoints.batch_max IS 'Events per request (JSON array) when above 1.';
COMMENT ON COLUMN webhooks.endpoints.batch_window IS 'How long events wait to be batched.';
COMMENT ON COLUMN webhooks.endpoints.tls_client_cert IS 'PEM chain presented to receivers that require a client certificate.';
COMMENT ON COLUMN webhooks.endpoints.tls_client_key IS 'PEM private key of tls_client_cert, stored sealed under webhooks.key_file.';
COMMENT ON COLUMN webhooks.endpoints.secret_problem IS 'Why the worker cannot open this endpoint''s secrets (a key of webhooks.key_file missing or wrong): nothing is sent until it can; NULL when it can.';
COMMENT ON COLUMN webhooks.endpoints.max_in_flight IS 'Requests to this endpoint under way at once, at most (a batch is one request).';
COMMENT ON COLUMN webhooks.endpoints.rate_limit IS 'Deliveries per second at most, shared by every worker (NULL: no limit).';
COMMENT ON COLUMN webhooks.endpoints.rate_next_at IS 'The worker''s rate-limit clock: when the next send is due under rate_limit.';
COMMENT ON COLUMN webhooks.endpoints.paused_until IS 'The receiver asked to wait (429/502/503/504 with Retry-After): nothing is sent before.';
COMMENT ON COLUMN webhooks.endpoints.format IS 'What receivers get: standard-webhooks (default) or hmac-hex (a flat body with event_id, event_type, tenant, actor, data, delivery, and an X-...-Signature hex HMAC of the body, as IntelliAuth documents it).';
COMMENT ON COLUMN webhooks.endpoints.header_prefix IS 'hmac-hex: prefix of the headers, e.g. X-IntelliAuth- (NULL: X-Webhook-).';
COMMENT ON COLUMN webhooks.endpoints.signature IS 'v1 (HMAC-SHA256 with the secret, the default) or v1a (ed25519: receivers verify with public_key).';
COMMENT ON COLUMN webhooks.endpoints.public_key IS 'v1a: the whpk_ public key to hand to the receiver (the private key never leaves the extension).';
COMMENT ON COLUMN webhooks.endpoints.filter IS 'SQL/JSON path predicate over the envelope ($.data.user.email_verified == true): events it does not match make no delivery.';
COMMENT ON COLUMN webhooks.endpoints.filter_weight IS 'Paths the filter evaluates (set by the extension): it is not evaluated on an event whose size in bytes times this exceeds 4 MiB, and the event goes to the endpoint as if it matched.';
COMMENT ON COLUMN webhooks.endpoints.request_bytes IS 'What each claimed request of this endpoint carries besides its event (URL, headers, secrets, client certificate and key), in bytes: counted in webhooks.worker_memory with every row the worker holds.';
COMMENT ON COLUMN webhooks.endpoints.failing_since IS 'First failed attempt since the last success; after webhooks.disable_after the endpoint is disabled.';
COMMENT ON TABLE webhooks.events IS 'The outbox: one row per published event, written by the publishing transaction.';
COMMENT ON COLUMN webhooks.events.id IS 'evt_ + ULID: the webhook-id receivers dedupe on; sorts by publish order.';
COMMENT ON COLUMN webhooks.events.data IS 'The envelope''s data.';
COMMENT ON COLUMN webhooks.events.data_bytes IS 'Size of data as sent (JSON text), counted against webhooks.worker_memory while a delivery of it is claimed.';
COMMENT ON COLUMN webhooks.events.actor IS 'Who did it (JSON object), from the publish call or webhooks.actor.';
COMMENT ON COLUMN webhooks.events.traceparent IS 'W3C trace context of the publishing session (webhooks.traceparent), sent as the traceparent header of every attempt.';
COMMENT ON COLUMN webhooks.events.idempotency_key IS 'The publisher''s key: a second publish with it (same tenant, within webhooks.ttl) returns this event.';
COMMENT ON COLUMN webhooks.events.entity_key IS 'Orders deliveries on ordered endpoints (row events: <entity>:<primary key>).';
COMMENT ON TABLE webhooks.deliveries IS 'One row per event and endpoint: its state, attempts and next try.';
COMMENT ON COLUMN webhooks.deliveries.status IS 'pending, in_flight, succeeded or dead.';
COMMENT ON COLUMN webhooks.deliveries.attempts IS 'Attempts made so far.';
COMMENT ON COLUMN webhooks.deliveries.next_attempt_at IS 'When a pending delivery is due (infinity: its endpoint is disabled).';
COMMENT ON COLUMN webhooks.deliveries.lease_until IS 'While in flight: when the claim lapses and the delivery may be claimed again.';
COMMENT ON COLUMN webhooks.deliveries.last_status IS 'HTTP status of the last attempt.';
COMMENT ON COLUMN webhooks.deliveries.last_error IS 'What went wrong in the last attempt, in words.';
COMMENT ON COLUMN webhooks.deliveries.data_bytes IS 'Its event''s data_bytes: what a claim of it counts against webhooks.worker_memory.';
COMMENT ON COLUMN webhooks.deliveries.claimed_by IS 'Process id of the worker that claimed the delivery last (several workers share the queue).';
COMMENT ON COLUMN webhooks.deliveries.endpoint_tenant IS 'The endpoint''s tenant_id when the delivery was made; only that endpoint, in that tenant, receives it.';
COMMENT ON TABLE webhooks.attempts IS 'One row per HTTP attempt: when, how long, status, error, the first 4 KiB of the answer.';

-- Tenancy (sql/src/tenancy.sql): which roles act for which tenants.
-- Keyed by the role itself (regrole: its oid, shown and dumped by name), not by its name: a
-- renamed role keeps its bindings, a dropped role's bindings bind nobody (housekeeping deletes
-- them, pg_dump leaves them out), and a new role that takes the name inherits nothing.
CREATE TABLE IF NOT EXISTS webhooks.tenant_roles (
    role_name  regrole NOT NULL,
    tenant_id  text NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    granted_by text NOT NULL DEFAULT current_user,
    PRIMARY KEY (role_name, tenant_id)
);
COMMENT ON TABLE webhooks.tenant_roles IS
    'Which roles act for which tenants (''*'' = every tenant). Managed with tenant_grant/tenant_revoke.';
SELECT pg_catalog.pg_extension_config_dump('webhooks.tenant_roles',
    'WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.oid OPERATOR(pg_catalog.=) role_name::pg_catalog.oid)');

-- Tenants are in use once a role was bound to one, and stay so: unbinding every role, dropping
-- the bound roles or restoring into a cluster without them must close scopes, never open the
-- rows without a tenant to every role (the single-tenant rule below). One row, or none.
CREATE TABLE IF NOT EXISTS webhooks_internal.tenancy_in_use (
    in_use boolean PRIMARY KEY DEFAULT true CHECK (in_use),
    since  timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('webhooks_internal.tenancy_in_use', '');

-- Row events (sql/src/tracking.sql): the tracked tables.
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
    condition       text,
    -- Added in 0.4.0. Columns kept out because their names looked secret when they were seen,
    -- by attribute number: a rename does not send them.
    secret_attnums  int2[] NOT NULL DEFAULT '{}',
    -- Why the table's row events cannot be made (its writes fail until it is tracked again or
    -- untracked); NULL when they can.
    problem         text
);
COMMENT ON TABLE webhooks.tracked_tables IS
    'Tables that publish row events, with the columns kept out (by attribute number, so renames are followed).';
COMMENT ON COLUMN webhooks.tracked_tables.applied IS
    'What its row events carried when last made: entity, columns kept out, tenant column, key columns, columns sent, condition.';
COMMENT ON COLUMN webhooks.tracked_tables.secret_attnums IS
    'Columns (attribute numbers) kept out because their names looked secret when seen: a rename does not send them.';
COMMENT ON COLUMN webhooks.tracked_tables.problem IS
    'Why its row events cannot be made (a dropped tenant column or condition): its writes fail until it is tracked again; NULL when they can.';
SELECT pg_catalog.pg_extension_config_dump('webhooks.tracked_tables', '');
