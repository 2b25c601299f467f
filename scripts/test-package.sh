#!/usr/bin/env bash
# The Debian package on a PostgreSQL that has never seen the source tree: whatever a build
# installed is removed first, the package is installed with apt-get, and a fresh cluster
# creates the extension and delivers one signed event over HTTPS. The package is removed at the
# end (scripts/test.sh installs the working tree again when it runs next).
#
#   bash scripts/test-package.sh [DEB]      (default: builds it with scripts/package.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
deb=${1:-$(bash scripts/package.sh | tail -1)}
LIB=$(/usr/lib/postgresql/15/bin/pg_config --pkglibdir)
EXT=$(/usr/lib/postgresql/15/bin/pg_config --sharedir)/extension
WORK=${WEBHOOKS_TEST_DIR:-/var/tmp/webhooks-test}/package

echo "== removing every trace of source builds from the system PostgreSQL"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq postgresql-15-webhooks >/dev/null 2>&1 || true
rm -f "$LIB/webhooks.so" "$EXT/webhooks.control" "$EXT"/webhooks--*.sql

echo "== apt-get install $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null
dpkg -S "$LIB/webhooks.so" "$EXT/webhooks.control" | sed 's/^/   /'
for f in "$EXT"/webhooks--*.sql; do dpkg -S "$f" >/dev/null; done

. scripts/cluster.sh
RX_PORT=$(free_port)
cleanup() {
    kill "${RX_PID:-0}" 2>/dev/null || true
    cluster_stop
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq postgresql-15-webhooks >/dev/null 2>&1 || true
}
trap cleanup EXIT
private_ca "$WORK.tls"
cluster_start "$WORK" "webhooks.database = 'postgres'" "webhooks.allow_private_targets = on" \
    "webhooks.tls_ca_file = '$WORK.tls/ca.pem'" "webhooks.retry_schedule = '1s,1s,2s'"
python3 scripts/receiver.py "$RX_PORT" "$WORK/secret" "$WORK.tls/server.pem" "$WORK.tls/server.key" > "$WORK/receiver.log" 2>&1 &
RX_PID=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$RX_PORT") 2>/dev/null && break
    sleep 0.1
done
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
q -c "CREATE EXTENSION webhooks"
q -c "SELECT secret FROM webhooks.endpoint_create('https://localhost:$RX_PORT/hook', '{user.*}')" > "$WORK/secret"
event=$(q -c "SELECT webhooks.webhook_publish('user.created', '{\"email\": \"a@example.com\"}')")
for _ in $(seq 1 150); do
    [ "$(q -c "SELECT status FROM webhooks.deliveries")" = succeeded ] && break
    sleep 0.2
done
status=$(q -c "SELECT concat_ws(' ', status, last_status, last_error) FROM webhooks.deliveries WHERE event_id = '$event'")
version=$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'webhooks'")
if [ "$status" != "succeeded 200" ] || ! grep -q "$event  signature OK" "$WORK/receiver.log"; then
    echo "package test FAILED: delivery is '$status'" >&2
    cat "$WORK/receiver.log" "$CLUSTER_DIR/server.log" >&2
    exit 1
fi
echo "package test: webhooks $version from $(basename "$deb") delivered $event, signature verified"
