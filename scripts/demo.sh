#!/usr/bin/env bash
# The demo: a local cluster with webhooks, a receiver on 127.0.0.1, a tracked users table;
# inserts, updates and deletes users and shows the signed events arriving and their records.
# On PostgreSQL 15 (Debian's own, what `apt-get install postgresql` gives on Debian 12), or on
# another major: WEBHOOKS_PG_MAJOR=17 bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cluster.sh
bash scripts/setup.sh "$PG_MAJOR"
echo "== building and installing the extension into PostgreSQL $PG_MAJOR"
cargo pgrx install --release --pg-config "$PG_BIN/pg_config" --sudo >/dev/null

WORK=${WEBHOOKS_DEMO_DIR:-/var/tmp/webhooks-demo}
RX_PORT=$(free_port)
cleanup() { kill "${RX_PID:-0}" 2>/dev/null || true; cluster_stop; }
trap cleanup EXIT
# The production path: HTTPS with a verified certificate. The demo's receiver has its own CA,
# trusted through webhooks.tls_ca_file as a company's private CA would be.
TLS="$WORK.tls"
private_ca "$TLS"
# Defaults a user gets (require_https on), except that the receiver is on 127.0.0.1.
# (track_commit_timestamp: the timings below start at each commit, not at its transaction's
# start, which in a fresh session includes planning the first tracked statement)
cluster_start "$WORK" "webhooks.database = 'postgres'" \
    "webhooks.allow_private_targets = on" "webhooks.tls_ca_file = '$TLS/ca.pem'" \
    "webhooks.source = 'https://id.example.com'" "track_commit_timestamp = on"
python3 scripts/receiver.py "$RX_PORT" "$WORK/secret" "$TLS/server.pem" "$TLS/server.key" &
RX_PID=$!
# The first delivery must not race the receiver's start (an attempt refused waits a minute).
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$RX_PORT") 2>/dev/null && break
    sleep 0.1
done
psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -v VERBOSITY=terse "$@" 2>&1 | grep -v "does not exist, skipping" || true; }

echo "== setting up: extension, users table, endpoint"
psql <<SQL
CREATE EXTENSION webhooks;
CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    name text,
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT webhooks.track_table('users', 'user', exclude_columns => '{password_hash}');
SELECT id AS endpoint_id FROM webhooks.endpoint_create('https://127.0.0.1:$RX_PORT/hook', '{user.*}');
SQL
psql -At -c "SELECT webhooks.endpoint_secret(id) FROM webhooks.endpoints" > "$WORK/secret"

echo "== INSERT, UPDATE, DELETE on users (each commit wakes the worker)"
psql <<'SQL'
INSERT INTO users (email, name, password_hash) VALUES ('anita@example.com', 'Anita Singh', 'argon2id$...');
UPDATE users SET name = 'Anita S.' WHERE email = 'anita@example.com';
UPDATE users SET password_hash = 'argon2id$new' WHERE email = 'anita@example.com';  -- excluded column only: no event
BEGIN;
INSERT INTO users (email, name, password_hash) VALUES ('rolled@example.com', 'Never Sent', 'x');
ROLLBACK;
DELETE FROM users WHERE email = 'anita@example.com';
SQL

for _ in $(seq 1 50); do
    n=$(psql -At -c "SELECT count(*) FROM webhooks.deliveries WHERE status = 'succeeded'")
    [ "$n" -ge 3 ] && break
    sleep 0.2
done
sleep 0.3
echo "== what psql shows"
psql <<'SQL'
\echo deliveries:
-- From each commit: to the request's start (the worker's part), the receiver's answer (this
-- demo's Python receiver verifies and prints each event; the first request also makes the TLS
-- handshake), and the recorded outcome.
SELECT e.type, d.status, d.attempts, d.last_status,
       round(extract(epoch FROM a.started_at - pg_xact_commit_timestamp(e.xmin)) * 1000, 1) AS ms_commit_to_sent,
       round(a.duration_ms::numeric, 1) AS receiver_ms,
       round(extract(epoch FROM d.completed_at - pg_xact_commit_timestamp(e.xmin)) * 1000, 1) AS ms_commit_to_done
FROM webhooks.deliveries d JOIN webhooks.events e ON e.id = d.event_id
JOIN webhooks.attempts a ON a.delivery_id = d.id AND a.attempt = d.attempts ORDER BY e.id;
\echo endpoint_health:
SELECT endpoint_id, url, pending, succeeded, dead, round(p50_ms::numeric, 2) AS p50_ms FROM webhooks.endpoint_health;
\echo status:
SELECT worker_running, pending, in_flight, dead FROM webhooks.status();
SQL
