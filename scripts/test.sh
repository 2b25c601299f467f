#!/usr/bin/env bash
# Runs every test: Rust unit tests and #[pg_test]s (cargo pgrx test), then the end-to-end
# tests against private clusters with the worker and a real receiver, then the isolation specs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh

# PostgreSQL refuses to run as root: clusters run as the postgres user in a directory it owns.
WORK=${WEBHOOKS_TEST_DIR:-/var/tmp/webhooks-test}
mkdir -p "$WORK"
chown postgres "$WORK" 2>/dev/null || true
chmod 755 "$WORK"
rm -rf "$WORK/pgrx-data"

echo "== unit tests and #[pg_test]s"
cargo pgrx test pg15 --runas postgres --pgdata "$WORK/pgrx-data"

echo "== installing the extension into the system PostgreSQL 15"
cargo pgrx install --pg-config /usr/lib/postgresql/15/bin/pg_config --sudo >/dev/null

echo "== end-to-end tests"
WEBHOOKS_TEST_DIR="$WORK" cargo test --manifest-path pgrx-tests/Cargo.toml --target-dir "$ROOT/target/e2e" -- --test-threads 2

echo "== isolation specs"
bash isolation/run.sh "$WORK"
