-- Observability: what operators read (dead letters, endpoint health, metrics).

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
       lat.p50_ms, lat.p99_ms, ep.secret_problem
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
COMMENT ON VIEW webhooks.endpoint_health IS 'Per endpoint: deliveries by status, last success, last error, latency over 24 hours, and why its secrets cannot be opened (secret_problem: nothing is sent meanwhile).';

-- Metrics: what monitoring reads (monitoring/queries.yaml for prometheus-postgres-exporter).

-- What Prometheus (or psql) watches: one row per endpoint and one for everything
-- (endpoint_id NULL). Deliveries are counted as they are in the table (succeeded and dead ones
-- until pruned: webhooks.retention, webhooks.dead_retention); attempts, failures and latency
-- over the last five minutes. Invoker rights: an admin sees the endpoints of its tenants.
CREATE VIEW webhooks.metrics WITH (security_invoker = true) AS
WITH d AS (
    SELECT d.endpoint_id, GROUPING(d.endpoint_id) AS overall,
           count(*) FILTER (WHERE d.status = 'pending') AS pending,
           count(*) FILTER (WHERE d.status = 'pending' AND d.next_attempt_at <= now()) AS due,
           count(*) FILTER (WHERE d.status = 'in_flight') AS in_flight,
           count(*) FILTER (WHERE d.status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE d.status = 'dead') AS dead,
           coalesce(extract(epoch FROM now() - min(d.next_attempt_at)
                            FILTER (WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                                      AND isfinite(d.next_attempt_at))), 0) AS oldest_due_seconds
    FROM webhooks.deliveries d
    GROUP BY GROUPING SETS ((d.endpoint_id), ())
), a AS (
    SELECT d.endpoint_id, GROUPING(d.endpoint_id) AS overall,
           count(*) AS attempts_5m,
           count(*) FILTER (WHERE a.status_code BETWEEN 200 AND 299) AS answered_2xx_5m,
           count(*) FILTER (WHERE a.status_code BETWEEN 300 AND 399) AS answered_3xx_5m,
           count(*) FILTER (WHERE a.status_code BETWEEN 400 AND 499) AS answered_4xx_5m,
           count(*) FILTER (WHERE a.status_code >= 500) AS answered_5xx_5m,
           count(*) FILTER (WHERE a.status_code IS NULL) AS unanswered_5m,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) AS latency_p50_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) AS latency_p95_ms,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY a.duration_ms) AS latency_p99_ms
    FROM webhooks.attempts a JOIN webhooks.deliveries d ON d.id = a.delivery_id
    WHERE a.started_at > now() - interval '5 minutes'
    GROUP BY GROUPING SETS ((d.endpoint_id), ())
), w AS (
    SELECT s.worker_running, extract(epoch FROM now() - s.last_loop) AS worker_last_loop_seconds
    FROM webhooks.status() s
), rows AS (
    SELECT ep.id AS endpoint_id, ep.tenant_id, ep.enabled,
           coalesce(ep.paused_until > now(), false) AS paused, ep.failing_since
    FROM webhooks.endpoints ep
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL
)
SELECT r.endpoint_id, r.tenant_id, r.enabled, r.paused, r.failing_since,
       coalesce(d.pending, 0) AS pending, coalesce(d.due, 0) AS due,
       coalesce(d.in_flight, 0) AS in_flight, coalesce(d.succeeded, 0) AS succeeded,
       coalesce(d.dead, 0) AS dead, coalesce(d.oldest_due_seconds, 0) AS oldest_due_seconds,
       coalesce(a.attempts_5m, 0) AS attempts_5m, coalesce(a.answered_2xx_5m, 0) AS answered_2xx_5m,
       coalesce(a.answered_3xx_5m, 0) AS answered_3xx_5m, coalesce(a.answered_4xx_5m, 0) AS answered_4xx_5m,
       coalesce(a.answered_5xx_5m, 0) AS answered_5xx_5m, coalesce(a.unanswered_5m, 0) AS unanswered_5m,
       a.latency_p50_ms, a.latency_p95_ms, a.latency_p99_ms,
       w.worker_running, w.worker_last_loop_seconds
FROM rows r
LEFT JOIN d ON (r.endpoint_id IS NULL AND d.overall = 1) OR (d.overall = 0 AND d.endpoint_id = r.endpoint_id)
LEFT JOIN a ON (r.endpoint_id IS NULL AND a.overall = 1) OR (a.overall = 0 AND a.endpoint_id = r.endpoint_id)
CROSS JOIN w;
COMMENT ON VIEW webhooks.metrics IS
    'Per endpoint, and overall (endpoint_id NULL): deliveries by status, backlog and how late the oldest due one is, attempts and answers by HTTP class and latency over the last 5 minutes, the worker. Read by monitoring/queries.yaml (prometheus-postgres-exporter).';
