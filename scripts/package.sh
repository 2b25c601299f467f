#!/usr/bin/env bash
# Builds a Debian package of the extension for the system PostgreSQL 15, for teams that install
# PostgreSQL from Debian packages and have no Rust toolchain on their servers:
#
#   bash scripts/package.sh     # -> target/debian/postgresql-15-webhooks_<version>-1_<arch>.deb
#   apt-get install ./target/debian/postgresql-15-webhooks_*.deb
#
# The package holds the library, the control file, the install script and the upgrade scripts
# (ALTER EXTENSION webhooks UPDATE from every earlier version).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
name=postgresql-15-webhooks

echo "== building the release library (cargo pgrx package)"
stage=target/release/webhooks-pg15
rm -rf "$stage"   # cargo pgrx package adds to what an earlier build left there
cargo pgrx package --pg-config "$PG_CONFIG" >/dev/null

root=target/debian/$name
rm -rf "$root"
mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$name"
cp -a "$stage/usr" "$root/"
cp README.md "$root/usr/share/doc/$name/"
cp monitoring/queries.yaml "$root/usr/share/doc/$name/prometheus-postgres-exporter-queries.yaml"
for f in "$root"/usr/share/postgresql/15/extension/webhooks--*.sql; do
    case $f in */webhooks--$version.sql|*--*--*.sql) ;; *) echo "unexpected file in package: $f" >&2; exit 1 ;; esac
done
[ -e "$root/usr/share/postgresql/15/extension/webhooks--$version.sql" ]
size=$(du -sk "$root/usr" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version-1
Architecture: $arch
Maintainer: webhooks maintainers <webhooks@localhost>
Installed-Size: $size
Depends: postgresql-15, ca-certificates, libc6 (>= 2.34), libgcc-s1
Section: database
Priority: optional
Homepage: https://github.com/webhooks/webhooks
Description: signed, reliable, transactional webhooks sent from inside PostgreSQL
 A PostgreSQL extension that turns rows and webhook_publish() calls into signed HTTP POSTs
 (Standard Webhooks), retried on a schedule, dead-lettered when they cannot get through, and
 visible from psql. Add webhooks to shared_preload_libraries, restart, then
 CREATE EXTENSION webhooks (or ALTER EXTENSION webhooks UPDATE after an upgrade).
CONTROL
out=target/debian/${name}_${version}-1_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
