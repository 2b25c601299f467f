# Sourced by the demo, the isolation runner and the benchmarks: a private PostgreSQL cluster
# (15, or WEBHOOKS_PG_MAJOR) run as the postgres user (PostgreSQL refuses root), with webhooks
# preloaded.
#   cluster_start DIR [extra postgresql.conf lines...]   sets PGPORT, PGHOST, CLUSTER_DIR
#   cluster_stop
#   private_ca DIR     a CA (DIR/ca.pem) and a server certificate for localhost/127.0.0.1
#                      (DIR/server.pem, DIR/server.key), as a company's private CA would issue
. "$(dirname "${BASH_SOURCE[0]}")/pg.sh"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cluster_start() {
    CLUSTER_DIR=$1; shift
    rm -rf "$CLUSTER_DIR"; mkdir -p "$CLUSTER_DIR"; chown postgres "$CLUSTER_DIR"
    PGPORT=$(free_port); PGHOST=127.0.0.1
    export PGPORT PGHOST PGUSER=postgres
    sudo -u postgres "$PG_BIN/initdb" -D "$CLUSTER_DIR/data" -A trust -U postgres --no-sync >/dev/null
    {
        echo "port = $PGPORT"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$CLUSTER_DIR'"
        echo "shared_preload_libraries = 'webhooks'"
        for line in "$@"; do echo "$line"; done
    } >> "$CLUSTER_DIR/data/postgresql.auto.conf"
    sudo -u postgres "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" start -w >/dev/null
}

cluster_stop() {
    [ -n "${CLUSTER_DIR:-}" ] && sudo -u postgres "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" stop -m fast >/dev/null 2>&1 || true
}

private_ca() {
    local dir=$1
    rm -rf "$dir"; mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=webhooks demo CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$dir/ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
        -extfile "$dir/ext" -out "$dir/server.pem" 2>/dev/null
    chmod 755 "$dir"; chmod 644 "$dir/ca.pem"
}
