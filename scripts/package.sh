#!/usr/bin/env bash
# Builds a Debian package of the extension for one PostgreSQL major, for teams that install
# PostgreSQL from Debian or PGDG (apt.postgresql.org) packages and have no Rust toolchain on
# their servers:
#
#   bash scripts/package.sh [MAJOR]   # 15 (default), 16, 17 or 18
#       -> target/debian/postgresql-MAJOR-webhooks_<version>-1_<arch>.deb
#   apt-get install ./target/debian/postgresql-17-webhooks_*.deb
#
# The files sit where Debian's and PGDG's postgresql-MAJOR packages look for them
# (/usr/lib/postgresql/MAJOR/lib, /usr/share/postgresql/MAJOR/extension), whichever install the
# library was built against. The package holds the library, the control file, the install
# script and the upgrade scripts (ALTER EXTENSION webhooks UPDATE from every earlier version).
set -euo pipefail
cd "$(dirname "$0")/.."
major=${1:-15}
case $major in 15|16|17|18) ;; *) echo "package.sh: PostgreSQL $major is not supported (15, 16, 17 or 18)" >&2; exit 2 ;; esac
bash scripts/setup.sh "$major"
. scripts/pg.sh
PG_CONFIG=$(pg_bin_of "$major")/pg_config
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
name=postgresql-$major-webhooks

echo "== building the release library for PostgreSQL $major (cargo pgrx package)" >&2
stage=target/release/webhooks-pg$major
rm -rf "$stage"   # cargo pgrx package adds to what an earlier build left there
cargo pgrx package --pg-config "$PG_CONFIG" >/dev/null

root=target/debian/$name
lib=$root/usr/lib/postgresql/$major/lib
ext=$root/usr/share/postgresql/$major/extension
rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$name" "$lib" "$ext"
cp "$stage$("$PG_CONFIG" --pkglibdir)/webhooks.so" "$lib/"
cp "$stage$("$PG_CONFIG" --sharedir)"/extension/webhooks* "$ext/"
cp README.md "$root/usr/share/doc/$name/"
# where the key that seals secrets at rest goes, and its permissions
cp scripts/package/README.Debian "$root/usr/share/doc/$name/"
cp monitoring/queries.yaml "$root/usr/share/doc/$name/prometheus-postgres-exporter-queries.yaml"
for f in "$ext"/webhooks--*.sql; do
    case $f in */webhooks--$version.sql|*--*--*.sql) ;; *) echo "unexpected file in package: $f" >&2; exit 1 ;; esac
done
[ -e "$ext/webhooks--$version.sql" ] && [ -e "$ext/webhooks.control" ]
size=$(du -sk "$root/usr" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version-1
Architecture: $arch
Maintainer: webhooks maintainers <webhooks@localhost>
Installed-Size: $size
Depends: postgresql-$major, ca-certificates, libc6 (>= 2.34), libgcc-s1
Section: database
Priority: optional
Homepage: https://github.com/webhooks/webhooks
Description: signed, reliable, transactional webhooks sent from inside PostgreSQL $major
 A PostgreSQL extension that turns rows and webhook_publish() calls into signed HTTP POSTs
 (Standard Webhooks), retried on a schedule, dead-lettered when they cannot get through, and
 visible from psql. Add webhooks to shared_preload_libraries, restart, then
 CREATE EXTENSION webhooks (or ALTER EXTENSION webhooks UPDATE after an upgrade).
 Endpoint secrets are stored sealed under a key file (webhooks.key in the data directory,
 mode 0600, made at the first start; see README.Debian for where else it may go).
CONTROL
out=target/debian/${name}_${version}-1_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
