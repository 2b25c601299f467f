-- Views for operators: dead letters and per-endpoint health.

CREATE VIEW webhooks.dead_letters WITH (security_invoker = true) AS
SELECT d.id AS delivery_id, d.event_id, e.type AS event_type, d.endpoint_id, ep.url, d.tenant_id,
       d.attempts, d.last_status, d.last_error, e.occurred_at, d.completed_at AS died_at, e.data
FROM webhooks.deliveries d
JOIN webhooks.events e ON e.id = d.event_id
JOIN webhooks.endpoints ep ON ep.id = d.endpoint_id
WHERE d.status = 'dead';
COMMENT ON VIEW webhooks.dead_letters IS 'Deliveries that will not be retried, with their last error and the event data.';

CREATE VIEW webhooks.endpoint_health WITH (security_invoker = true) AS
SELECT ep.id AS endpoint_id, ep.url, ep.tenant_id, ep.enabled,
       coalesce(c.pending, 0) AS pending, coalesce(c.in_flight, 0) AS in_flight,
       coalesce(c.succeeded, 0) AS succeeded, coalesce(c.dead, 0) AS dead,
       c.last_success, le.error AS last_error, le.started_at AS last_error_at,
       lat.p50_ms, lat.p99_ms
FROM webhooks.endpoints ep
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
           count(*) FILTER (WHERE status = 'in_flight') AS in_flight,
           count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'dead') AS dead,
           max(completed_at) FILTER (WHERE status = 'succeeded') AS last_success
    FROM webhooks.deliveries d WHERE d.endpoint_id = ep.id
) c ON true
LEFT JOIN LATERAL (
    SELECT coalesce(a.error, 'HTTP ' || a.status_code) AS error, a.started_at
    FROM webhooks.attempts a JOIN webhooks.deliveries d ON d.id = a.delivery_id
    WHERE d.endpoint_id = ep.id AND (a.error IS NOT NULL OR a.status_code NOT BETWEEN 200 AND 299)
    ORDER BY a.started_at DESC LIMIT 1
) le ON true
LEFT JOIN LATERAL (
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) AS p50_ms,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY a.duration_ms) AS p99_ms
    FROM webhooks.attempts a JOIN webhooks.deliveries d ON d.id = a.delivery_id
    WHERE d.endpoint_id = ep.id AND a.started_at > now() - interval '24 hours'
) lat ON true;
COMMENT ON VIEW webhooks.endpoint_health IS 'Per endpoint: deliveries by status, last success, last error, latency over 24 hours.';
