#!/usr/bin/env bash
# Runs every test: Rust unit tests and #[pg_test]s (cargo pgrx test), the end-to-end tests
# against private clusters with the worker and a real receiver, the isolation specs, and the
# Debian package installed with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh

# PostgreSQL refuses to run as root: clusters run as the postgres user in a directory it owns.
WORK=${WEBHOOKS_TEST_DIR:-/var/tmp/webhooks-test}
mkdir -p "$WORK"
chown postgres "$WORK" 2>/dev/null || true
chmod 755 "$WORK"
rm -rf "$WORK/pgrx-data" "$WORK"/e2e-* "$WORK"/pki-* "$WORK/isolation"
LOG="$WORK/test-output.log"
: > "$LOG"

echo "== unit tests and #[pg_test]s"
cargo pgrx test pg15 --runas postgres --pgdata "$WORK/pgrx-data" 2>&1 | tee -a "$LOG"

echo "== installing the extension into the system PostgreSQL 15"
cargo pgrx install --pg-config /usr/lib/postgresql/15/bin/pg_config --sudo >/dev/null
# The upgrade scripts are generated from the install script just installed: stale ones fail here.
EXT=$(/usr/lib/postgresql/15/bin/pg_config --sharedir)/extension
bash scripts/upgrade-scripts.sh --check "$EXT/webhooks--$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1).sql"
# Old versions' install scripts, for the upgrade tests only (not shipped: upgrades start from
# what a user has, never create it anew).
install -m 644 sql/versions/webhooks--*.sql "$EXT/"

echo "== end-to-end tests"
WEBHOOKS_TEST_DIR="$WORK" cargo test --manifest-path pgrx-tests/Cargo.toml --target-dir "$ROOT/target/e2e" \
    -- --test-threads 2 2>&1 | tee -a "$LOG"

echo "== isolation specs"
bash isolation/run.sh "$WORK" 2>&1 | tee -a "$LOG"

echo "== the Debian package, installed with apt-get on a PostgreSQL without the source build"
WEBHOOKS_TEST_DIR="$WORK" bash scripts/test-package.sh 2>&1 | tee -a "$LOG"

# pipefail has stopped us on any failure above; sum what ran.
passed=$(grep -oE "test result: ok\. [0-9]+ passed" "$LOG" | awk '{s += $4} END {print s + 0}')
iso=$(grep -oE "All [0-9]+ tests passed" "$LOG" | awk '{s += $2} END {print s + 0}')
pkg=$(grep -c "^package test: " "$LOG" || true)
echo "webhooks: $((passed + iso + pkg)) passed, 0 failed"
