# Sourced: where each PostgreSQL major lives. 15 is Debian's package; 16-18 are the installs
# scripts/setup.sh unpacks under WEBHOOKS_PG_HOME. WEBHOOKS_PG_MAJOR picks the one scripts use
# (15 when unset: the PostgreSQL Debian 12 itself packages).
PG_MAJORS="15 16 17 18"
pg_check_major() {
    case " $PG_MAJORS " in
        *" $1 "*) ;;
        *) echo "PostgreSQL '$1' is not supported: use one of $PG_MAJORS" >&2; exit 2 ;;
    esac
}
pg_bin_of() {
    if [ "$1" = 15 ]; then echo /usr/lib/postgresql/15/bin; else echo "${WEBHOOKS_PG_HOME:-/opt/webhooks-postgresql}/$1/bin"; fi
}
PG_MAJOR=${WEBHOOKS_PG_MAJOR:-15}
pg_check_major "$PG_MAJOR"
PG_BIN=$(pg_bin_of "$PG_MAJOR")
