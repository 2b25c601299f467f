#!/usr/bin/env bash
# Runs every test on every supported PostgreSQL major (15, 16, 17, 18), or on those named in
# PG_VERSIONS ("PG_VERSIONS=17 bash scripts/test.sh"). For each major: the Rust unit tests and
# #[pg_test]s (cargo pgrx test), the end-to-end tests against private clusters with the worker
# and a real receiver, the isolation specs, and the package built for it, installed and
# delivering over HTTPS. Then what crosses majors: a database dumped on 15 and restored into 17.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/pg.sh
# The majors asked for, each once, in PG_MAJORS' order.
read -r -a asked <<<"${PG_VERSIONS:-$PG_MAJORS}"
for v in "${asked[@]}"; do pg_check_major "$v"; done
VERSIONS=""
for v in $PG_MAJORS; do
    case " ${asked[*]} " in *" $v "*) VERSIONS+="${VERSIONS:+ }$v" ;; esac
done
bash scripts/setup.sh $VERSIONS

# PostgreSQL refuses to run as root: clusters run as the postgres user in a directory it owns.
WORK=${WEBHOOKS_TEST_DIR:-/var/tmp/webhooks-test}
mkdir -p "$WORK"
chown postgres "$WORK" 2>/dev/null || true
chmod 755 "$WORK"
rm -rf "$WORK"/pgrx-data* "$WORK"/e2e-* "$WORK"/pki-* "$WORK"/isolation* "$WORK"/package*
rm -f "$WORK"/test-*.log
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
checked=0

echo "== ARCHITECTURE.md names only what exists"
bash scripts/architecture-check.sh

echo "== the pure logic (webhooks-core): unit tests, no PostgreSQL"
cargo test -p webhooks-core 2>&1 | tee "$WORK/test-core.log"

for v in $VERSIONS; do
    LOG=$WORK/test-pg$v.log
    : > "$LOG"
    pg_config=$(pg_bin_of "$v")/pg_config
    echo "== PostgreSQL $v: unit tests and #[pg_test]s"
    cargo pgrx test "pg$v" --runas postgres --pgdata "$WORK/pgrx-data-$v" 2>&1 | tee -a "$LOG"

    echo "== PostgreSQL $v: installing the extension"
    cargo pgrx install --pg-config "$pg_config" --sudo >/dev/null
    EXT=$("$pg_config" --sharedir)/extension
    if [ $checked = 0 ]; then
        # The upgrade scripts are generated from the install script just installed: stale ones
        # fail here.
        bash scripts/upgrade-scripts.sh --check "$EXT/webhooks--$version.sql"
        checked=1
    fi
    # Old versions' install scripts, for the upgrade tests only (not shipped: upgrades start
    # from what a user has, never create it anew).
    install -m 644 sql/versions/webhooks--*.sql "$EXT/"

    echo "== PostgreSQL $v: end-to-end tests"
    # The cross-major restore runs once, below, when both its majors are installed.
    skip=(--skip a_database_dumped_on_15_and_restored_into_17)
    # 0.1.0 shipped for PostgreSQL 15 only: nobody upgrades from it on another major.
    [ "$v" = 15 ] || skip+=(--skip alter_extension_update_from_0_1_0)
    # Citus is built for PostgreSQL 15 (Debian's, whose headers it needs): the cluster test
    # runs there; cluster_setup's refusal without Citus runs on every major.
    if [ "$v" = 15 ]; then
        bash scripts/citus.sh
    else
        skip+=(--skip a_distributed_users_table_delivers_from_the_node_that_holds_it)
    fi
    WEBHOOKS_PG_MAJOR=$v WEBHOOKS_TEST_DIR="$WORK" cargo test --manifest-path pgrx-tests/Cargo.toml \
        --target-dir "$ROOT/target/e2e" -- --test-threads 2 "${skip[@]}" 2>&1 | tee -a "$LOG"

    echo "== PostgreSQL $v: isolation specs"
    WEBHOOKS_PG_MAJOR=$v bash isolation/run.sh "$WORK" 2>&1 | tee -a "$LOG"
done

cross=0
if [[ " $VERSIONS " == *" 15 "* && " $VERSIONS " == *" 17 "* ]]; then
    cross=1
    echo "== across majors: dumped on 15, restored into 17"
    WEBHOOKS_TEST_DIR="$WORK" cargo test --manifest-path pgrx-tests/Cargo.toml \
        --target-dir "$ROOT/target/e2e" --test majors -- --test-threads 2 2>&1 | tee "$WORK/test-cross.log"
fi

# The packages last: installing one removes the source build of its major.
for v in $VERSIONS; do
    echo "== PostgreSQL $v: the package, installed on a PostgreSQL without the source build"
    WEBHOOKS_TEST_DIR="$WORK" bash scripts/test-package.sh "$v" 2>&1 | tee -a "$WORK/test-pg$v.log"
done

# pipefail has stopped us on any failure above; sum what ran, per major.
count() {
    local log=$1 passed iso pkg
    passed=$(grep -oE "test result: ok\. [0-9]+ passed" "$log" | awk '{s += $4} END {print s + 0}')
    iso=$(grep -oE "All [0-9]+ tests passed" "$log" | awk '{s += $2} END {print s + 0}')
    pkg=$(grep -c "^package test: " "$log" || true)
    echo $((passed + iso + pkg))
}
total=$(count "$WORK/test-core.log")
tally="core: $total"
for v in $VERSIONS; do
    log=$WORK/test-pg$v.log
    # Every stage of a major left its mark, or the tally would count less than was claimed.
    if [ "$(grep -c "test result: ok\." "$log")" -lt 16 ] || ! grep -q "All [0-9]* tests passed" "$log" \
        || ! grep -q "^package test: " "$log"; then
        echo "test.sh: a stage of PostgreSQL $v left no result in $log" >&2
        exit 1
    fi
    n=$(count "$log"); total=$((total + n)); tally+=", PostgreSQL $v: $n"
done
if [ $cross = 1 ]; then
    n=$(count "$WORK/test-cross.log"); total=$((total + n)); tally+=", 15 -> 17: $n"
else
    tally+=", 15 -> 17: not run (needs both in PG_VERSIONS)"
fi
echo "webhooks: $total passed, 0 failed ($tally)"
