#!/usr/bin/env bash
# Builds and installs Citus into PostgreSQL 15 for the Citus test (pgrx-tests/tests/citus.rs),
# skipping it when it is there. Citus is a choice of a user's deployment, not a dependency of
# webhooks: nothing else needs it. No registry reachable here ships it, so its source comes from
# WEBHOOKS_CITUS_SOURCE (default: ../shared/citus beside the clone): the unmodified v13.2.2
# tarball and a one-line patch for PostgreSQL 15.20's headers (they export
# have_createdb_privilege, which Citus 13.2.2 defines again). The build tree is kept outside
# the clone (WEBHOOKS_BUILD_DIR) and made again when it is gone: a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=13.2.2
SRC=${WEBHOOKS_CITUS_SOURCE:-$PWD/../shared/citus}
BUILD=${WEBHOOKS_BUILD_DIR:-/var/tmp/webhooks-build}/citus-$VERSION-pg15
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ext=$("$PG_CONFIG" --sharedir)/extension
lib=$("$PG_CONFIG" --pkglibdir)
if [ -f "$ext/citus--$VERSION.sql" ] || { [ -f "$lib/citus.so" ] && grep -q "default_version = '13.2" "$ext/citus.control" 2>/dev/null; }; then
    exit 0
fi
if [ ! -f "$SRC/citus-$VERSION.tar.gz" ]; then
    echo "citus: no source at $SRC/citus-$VERSION.tar.gz (set WEBHOOKS_CITUS_SOURCE to the folder holding it)" >&2
    exit 1
fi
need=()
for pkg in libkrb5-dev libcurl4-openssl-dev liblz4-dev libzstd-dev libselinux1-dev libxslt1-dev libpam0g-dev make gcc; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "citus: installing ${need[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -f "$BUILD/.built" ]; then
    echo "citus: building $VERSION for PostgreSQL 15 in $BUILD"
    rm -rf "$BUILD"
    mkdir -p "$BUILD"
    tar xzf "$SRC/citus-$VERSION.tar.gz" -C "$BUILD" --strip-components 1
    # (the patch is only for headers that export the function; older 15.x builds without it)
    if grep -q "have_createdb_privilege" "$("$PG_CONFIG" --includedir-server)/commands/dbcommands.h"; then
        patch -s -d "$BUILD" -p1 < "$SRC/citus-$VERSION-pg15.20.patch"
    fi
    (cd "$BUILD" && ./configure -q PG_CONFIG="$PG_CONFIG" >/dev/null && make -s -j"$(nproc)" >/dev/null)
    touch "$BUILD/.built"
fi
(cd "$BUILD" && as_root make -s install >/dev/null)
echo "citus: installed $VERSION into PostgreSQL 15"
