#!/usr/bin/env bash
# Installs what building and testing webhooks needs, skipping whatever is already there:
# PostgreSQL 15 with its server headers, clang, sudo, ca-certificates (the trust store delivery
# uses), openssl (the demo's CA), prometheus-postgres-exporter (the metrics test),
# python3-cryptography (an independent ed25519 verifier for the v1a test), nginx
# (benchmarks), cargo-pgrx 0.18.0,
# and pgrx's registration of the system PostgreSQL 15.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
for pkg in postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo pkg-config ca-certificates openssl prometheus-postgres-exporter python3-cryptography; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${WEBHOOKS_BENCH:-0}" = 1 ]; then
    for pkg in nginx-light python3-matplotlib; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    as_root apt-get update -qq
    # The Debian package would start a cluster of its own on 5432; the tests start their own.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo is missing; install Rust 1.95 (rustup) first" >&2
    exit 1
fi
if ! cargo pgrx --version 2>/dev/null | grep -q "0.18.0"; then
    echo "setup: installing cargo-pgrx 0.18.0 (about 7 minutes)"
    cargo install cargo-pgrx --version 0.18.0 --locked --quiet
fi
if ! grep -q "^pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
    echo "setup: registering PostgreSQL 15 with pgrx"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi
