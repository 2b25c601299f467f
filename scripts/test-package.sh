#!/usr/bin/env bash
# The package for one PostgreSQL major on a PostgreSQL that has never seen the source tree:
# whatever a build installed is removed first, the package is installed, and a fresh cluster
# creates the extension and delivers one signed event over HTTPS. The package is removed at the
# end (scripts/test.sh installs the working tree again when it runs next).
#
#   bash scripts/test-package.sh [MAJOR [DEB]]   (default: 15, built with scripts/package.sh)
#
# 15 is installed with apt-get into Debian's PostgreSQL. 16-18 have no Debian package here
# (their postgresql-MAJOR comes from PGDG on a real server), so their package's files are
# unpacked with dpkg-deb and placed as apt-get would place them, the package's
# /usr/lib/postgresql/MAJOR/lib and /usr/share/postgresql/MAJOR/extension being the
# registry-provided install's library and extension directories.
set -euo pipefail
cd "$(dirname "$0")/.."
export WEBHOOKS_PG_MAJOR=${1:-15}
deb=${2:-$(bash scripts/package.sh "$WEBHOOKS_PG_MAJOR" | tail -1)}
. scripts/cluster.sh
major=$PG_MAJOR
LIB=$("$PG_BIN/pg_config" --pkglibdir)
EXT=$("$PG_BIN/pg_config" --sharedir)/extension
WORK=${WEBHOOKS_TEST_DIR:-/var/tmp/webhooks-test}/package-$major
name=postgresql-$major-webhooks

uninstall() {
    if [ "$major" = 15 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq "$name" >/dev/null 2>&1 || true
    fi
    rm -f "$LIB/webhooks.so" "$EXT/webhooks.control" "$EXT"/webhooks--*.sql
}
echo "== PostgreSQL $major: removing every trace of source builds"
uninstall

if [ "$major" = 15 ]; then
    echo "== apt-get install $deb"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null
    dpkg -S "$LIB/webhooks.so" "$EXT/webhooks.control" | sed 's/^/   /'
    for f in "$EXT"/webhooks--*.sql; do dpkg -S "$f" >/dev/null; done
else
    echo "== unpacking $deb into PostgreSQL $major's directories"
    unpacked=$WORK.deb
    rm -rf "$unpacked"
    dpkg-deb -x "$deb" "$unpacked"
    install -m 755 "$unpacked/usr/lib/postgresql/$major/lib/webhooks.so" "$LIB/"
    install -m 644 "$unpacked/usr/share/postgresql/$major/extension"/webhooks* "$EXT/"
    dpkg-deb -f "$deb" Package Version Depends | sed 's/^/   /'
fi

RX_PORT=$(free_port)
cleanup() {
    kill "${RX_PID:-0}" 2>/dev/null || true
    cluster_stop
    uninstall
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
q() { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 "$@"; }
q -c "CREATE EXTENSION webhooks"
q -c "SELECT secret FROM webhooks.endpoint_create('https://localhost:$RX_PORT/hook', '{user.*}')" > "$WORK/secret"
event=$(q -c "SELECT webhooks.webhook_publish('user.created', '{\"email\": \"a@example.com\"}')")
for _ in $(seq 1 150); do
    [ "$(q -c "SELECT status FROM webhooks.deliveries")" = succeeded ] && break
    sleep 0.2
done
status=$(q -c "SELECT concat_ws(' ', status, last_status, last_error) FROM webhooks.deliveries WHERE event_id = '$event'")
version=$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'webhooks'")
server=$(q -c "SHOW server_version")
if [ "$status" != "succeeded 200" ] || ! grep -q "$event  signature OK" "$WORK/receiver.log"; then
    echo "package test FAILED on PostgreSQL $major: delivery is '$status'" >&2
    cat "$WORK/receiver.log" "$CLUSTER_DIR/server.log" >&2
    exit 1
fi
# secrets at rest: the first start made the key file, the server user's alone; the package
# says where it goes; no secret is stored in the clear
key=$CLUSTER_DIR/data/webhooks.key
if [ "$(stat -c '%a %U' "$key" 2>/dev/null)" != "600 postgres" ] \
   || [ "$(q -c "SELECT count(*) FROM webhooks.endpoints WHERE secret NOT LIKE 'whenc1:%'")" != 0 ]; then
    echo "package test FAILED on PostgreSQL $major: the key file or the sealed secrets are not as documented" >&2
    ls -l "$key" >&2 || true
    exit 1
fi
if [ "$major" = 15 ]; then
    dpkg -S "/usr/share/doc/$name/README.Debian" >/dev/null
else
    test -s "$unpacked/usr/share/doc/$name/README.Debian"
fi
echo "package test: webhooks $version from $(basename "$deb") on PostgreSQL $server delivered $event over HTTPS, signature verified"
