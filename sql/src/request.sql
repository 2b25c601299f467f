-- The contract between SQL and Rust for a request to send.

-- One request to send: what the claim (_claim) and a synchronous send's preparation
-- (_sync_prepare) both return, and what the worker and webhook_send_sync read, by column name,
-- into one struct (src/request.rs). bytes: what it costs the worker's memory while claimed.
CREATE TYPE webhooks_internal.request AS (
    delivery_id     bigint,
    attempts        int,
    lease_us        bigint,
    bytes           bigint,
    event_id        text,
    event_type      text,
    version         text,
    source          text,
    occurred_us     bigint,
    tenant_id       text,
    actor           text,
    data            text,
    traceparent     text,
    endpoint_id     text,
    endpoint_tenant text,
    url             text,
    secret          text,
    previous_secret text,
    headers         text,
    batch_max       int,
    max_in_flight   int,
    tls_client_cert text,
    tls_client_key  text,
    format          text,
    header_prefix   text,
    signature       text,
    tenant_slug     text
);

-- A delivery's request, from its rows: the secrets that sign it (v1a: the private keys, k),
-- the previous one during a rotation's grace period, the tenant's slug for hmac-hex (t), and
-- what it costs the worker's memory (its event's data as sent, 1 KiB for the envelope, and
-- what it carries of its endpoint). k and t are the caller's outer joins, so that the function
-- holds no subquery and is inlined into the statement that calls it; for the same reason it
-- has no SET clause, and every operator and type in it is named with its schema.
CREATE FUNCTION webhooks_internal._request(d webhooks.deliveries, e webhooks.events, ep webhooks.endpoints,
                                           k webhooks_internal.signing_keys, t webhooks.tenants, data text)
RETURNS webhooks_internal.request
LANGUAGE sql STABLE
AS $$
    SELECT ROW(d.id, d.attempts,
               (extract(epoch FROM d.lease_until) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
               coalesce(d.data_bytes::pg_catalog.int8, pg_catalog.octet_length(data)::pg_catalog.int8, 0)
                   OPERATOR(pg_catalog.+) 1024 OPERATOR(pg_catalog.+) ep.request_bytes,
               e.id, e.type, e.version, e.source,
               (extract(epoch FROM e.occurred_at) OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8,
               e.tenant_id, e.actor::pg_catalog.text, data, e.traceparent,
               ep.id, d.endpoint_tenant, ep.url,
               CASE WHEN ep.signature OPERATOR(pg_catalog.=) 'v1a' THEN k.private_key ELSE ep.secret END,
               CASE WHEN ep.previous_secret_expires_at OPERATOR(pg_catalog.>) pg_catalog.now() THEN
                    CASE WHEN ep.signature OPERATOR(pg_catalog.=) 'v1a' THEN k.previous_private_key
                         ELSE ep.previous_secret END END,
               ep.headers::pg_catalog.text, ep.batch_max, ep.max_in_flight, ep.tls_client_cert, ep.tls_client_key,
               ep.format, ep.header_prefix, ep.signature,
               CASE WHEN ep.format OPERATOR(pg_catalog.=) 'hmac-hex' THEN t.slug END)::webhooks_internal.request
$$;
