#!/usr/bin/env bash
# Starts the real servers the distributed-mode tests need, on loopback:
# PostgreSQL (Debian's package) and an S3-compatible server (moto's server).
# Idempotent. Prints the environment the tests read, for `eval`:
#
#   eval "$(scripts/test-services.sh start)"
#   scripts/test-services.sh stop
#   scripts/test-services.sh status   # exits 0 when both answer
set -euo pipefail

root=${ENVSTORE_SERVICES_DIR:-/tmp/envstore-test-services}
pg_port=${ENVSTORE_PG_PORT:-55432}
s3_port=${ENVSTORE_S3_PORT:-59000}
bucket=envstore-test

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 1; }
    echo "$dir"
}

# PostgreSQL refuses to run as root: run it as Debian's postgres user then.
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
    mkdir -p "$root"
    local bin
    bin=$(pg_bin)
    if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; then
        if [ ! -f "$root/pg/PG_VERSION" ]; then
            mkdir -p "$root/pg"
            [ "$(id -u)" = 0 ] && chown postgres "$root" "$root/pg"
            as_pg "$bin/initdb" -D "$root/pg" -A trust -U envstore >"$root/initdb.log"
        fi
        as_pg "$bin/pg_ctl" -D "$root/pg" -l "$root/pg.log" -w \
            -o "-p $pg_port -k $root -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >&2
    fi
    if ! curl -fs "http://127.0.0.1:$s3_port/" >/dev/null 2>&1; then
        nohup python3 -m moto.server -H 127.0.0.1 -p "$s3_port" >"$root/s3.log" 2>&1 &
        for _ in $(seq 1 100); do
            curl -fs "http://127.0.0.1:$s3_port/" >/dev/null 2>&1 && break
            sleep 0.2
        done
    fi
    curl -fs -X PUT "http://127.0.0.1:$s3_port/$bucket" >/dev/null
    cat <<ENV
export ENVSTORE_TEST_DATABASE=postgres://envstore@127.0.0.1:$pg_port/postgres
export ENVSTORE_TEST_STORE=s3://$bucket
export AWS_ENDPOINT=http://127.0.0.1:$s3_port
export AWS_ALLOW_HTTP=true
export AWS_ACCESS_KEY_ID=envstore
export AWS_SECRET_ACCESS_KEY=envstore
export AWS_REGION=us-east-1
ENV
}

# Exits 0 when both servers answer (scripts/test then leaves them running).
status() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$bin" ] && "$bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" \
        && curl -fs "http://127.0.0.1:$s3_port/" >/dev/null 2>&1
}

stop() {
    local bin
    bin=$(pg_bin)
    [ -f "$root/pg/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$root/pg" -m fast stop >&2 || true
    pkill -f "moto.server -H 127.0.0.1 -p $s3_port" || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
