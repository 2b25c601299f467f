#!/usr/bin/env bash
# Runs the isolation specs with PostgreSQL's pg_isolation_regress against a private cluster
# (as the postgres user) that preloads webhooks. The worker is pointed at another database so
# that only the specs' sessions touch the queue.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${1:-/var/tmp/webhooks-test}
. "$HERE/../scripts/cluster.sh"
REGRESS=$("$PG_BIN/pg_config" --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress
trap cluster_stop EXIT
cluster_start "$WORK/isolation" "webhooks.database = 'postgres'" "fsync = off"
DIR=$CLUSTER_DIR
sudo -u postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$PGPORT" webhooks_isolation
tests=$(cd "$HERE/specs" && ls *.spec | sed 's/\.spec$//')
cp -r "$HERE/specs" "$HERE/expected" "$DIR/"
chown -R postgres "$DIR"
status=0
sudo -u postgres "$REGRESS" --use-existing --host 127.0.0.1 --port "$PGPORT" \
    --inputdir "$DIR" --outputdir "$DIR/out" --dbname webhooks_isolation $tests || status=$?
if [ $status -ne 0 ]; then
    cat "$DIR/out/regression.diffs" 2>/dev/null || true
fi
exit $status
