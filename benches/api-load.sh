#!/usr/bin/env bash
# Lockfile GET throughput and latency of the API under concurrent load.
#
# Starts `envstore serve --demo` on a free loopback port in a temporary data
# folder, builds one small environment, then loads the lockfile routes with
# wrk from this (second) process and prints one JSON line per scenario:
#   {"scenario":"lock-get-token","rps":…,"p50_ms":…,"p99_ms":…,"non_2xx_3xx":…,"errors":…}
#
# Usage: benches/api-load.sh
#   ENVSTORE_BIN   the binary [default: target/release/envstore]
#                  (cargo build --release --locked -p envstore-server --bins)
#   DURATION       seconds per scenario [default: 10]
#   CONNECTIONS    open connections [default: 32]
#   THREADS        wrk threads [default: 1]
#   WARMUP         seconds of unrecorded load before each scenario [default: 2]
#   SCENARIOS      space-separated subset of the scenarios below [default: all]
#   KEEP_DATA=1    keep the data folder (its path goes to stderr)
#
# Scenarios:
#   lock-get-admin     GET /api/v1/locks/{hash}/conda-lock.yml, bootstrap admin token
#   lock-get-token     the same with a viewer's API token
#   lock-get-304       the same, with If-None-Match: the lock's ETag
#   env-lockfile-token GET /api/v1/namespaces/{ns}/environments/{name}/lockfile, viewer token
#   lock-get-public    GET /api/v1/locks/… without a token, the namespace made public
#
# Needs wrk (Debian: apt-get install -y wrk), curl and jq. Traffic stays on
# 127.0.0.1; every run is bounded by DURATION.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${ENVSTORE_BIN:-$here/target/release/envstore}
duration=${DURATION:-10}
connections=${CONNECTIONS:-32}
threads=${THREADS:-1}
warmup=${WARMUP:-2}
scenarios=${SCENARIOS:-"lock-get-admin lock-get-token lock-get-304 env-lockfile-token lock-get-public"}

for tool in wrk curl jq; do
    command -v "$tool" >/dev/null || { echo "api-load: '$tool' is needed" >&2; exit 2; }
done
[[ -x $bin ]] || { echo "api-load: no envstore binary at $bin (set ENVSTORE_BIN)" >&2; exit 2; }

data=$(mktemp -d "${TMPDIR:-/tmp}/envstore-load.XXXXXX")
server_pid=
cleanup() {
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ ${KEEP_DATA:-0} == 1 ]]; then
        echo "api-load: data kept in $data" >&2
    else
        rm -rf "$data"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "api-load: failed at line $LINENO" >&2' ERR

admin_token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Port 0: the server picks a free port and prints it.
ENVSTORE_ADMIN_TOKEN=$admin_token ENVSTORE_LOG=${ENVSTORE_LOG:-warn} NO_COLOR=1 \
    "$bin" serve --demo --data-dir "$data" --bind 127.0.0.1:0 >"$data/server.out" 2>"$data/server.err" &
server_pid=$!

base=
for _ in $(seq 1 600); do
    base=$(sed -n 's/^envstore listening on \(http:\/\/127\.0\.0\.1:[0-9]*\).*/\1/p' "$data/server.out")
    [[ -n $base ]] && curl -fsS "$base/api/v1/health" >/dev/null 2>&1 && break
    kill -0 "$server_pid" 2>/dev/null || { echo "api-load: the server exited" >&2; cat "$data/server.err" >&2; exit 1; }
    base=
    sleep 0.1
done
[[ -n $base ]] || { echo "api-load: the server did not become ready" >&2; exit 1; }
echo "api-load: server at $base (pid $server_pid)" >&2

# api METHOD PATH [BODY [CONTENT-TYPE]]: an admin request; fails unless 2xx.
api() {
    local method=$1 path=$2 body=${3:-} content_type=${4:-application/json}
    local args=(-fsS -X "$method" -H "Authorization: Bearer $admin_token")
    [[ -n $body ]] && args+=(-H "Content-Type: $content_type" --data-binary "$body")
    curl "${args[@]}" "$base$path"
}

namespace=bench
environment=analysis
api POST /api/v1/namespaces "{\"name\": \"$namespace\"}" >/dev/null
spec=$'name: analysis\nchannels: [demo]\ndependencies:\n  - python 3.11.*\n'
build_id=$(api PUT "/api/v1/namespaces/$namespace/environments/$environment" "$spec" application/yaml | jq -r .build_id)
status=
for _ in $(seq 1 1800); do
    status=$(api GET "/api/v1/builds/$build_id" | jq -r .status)
    [[ $status == succeeded || $status == failed || $status == cancelled ]] && break
    sleep 0.1
done
if [[ $status != succeeded ]]; then
    echo "api-load: build $build_id ended '$status'" >&2
    api GET "/api/v1/builds/$build_id" >&2 || true
    exit 1
fi
lock_hash=$(api GET "/api/v1/builds/$build_id" | jq -r .lock_hash)
echo "api-load: build $build_id succeeded, lock $lock_hash" >&2

api PUT "/api/v1/namespaces/$namespace/members/vera" '{"role": "viewer"}' >/dev/null
viewer_token=$(api POST /api/v1/tokens '{"name": "load", "subject": "vera", "expires_in_days": 1}' | jq -r .token)

lock_url="$base/api/v1/locks/$lock_hash/conda-lock.yml"
env_url="$base/api/v1/namespaces/$namespace/environments/$environment/lockfile?format=conda-lock"

# wrk_json SCENARIO URL [HEADER...]: checks one request answers 200 (or 304),
# loads the URL and prints the scenario's JSON line.
wrk_json() {
    local scenario=$1 url=$2
    shift 2
    local curl_headers=() wrk_headers=() header
    for header in "$@"; do
        curl_headers+=(-H "$header")
        wrk_headers+=(-H "$header")
    done
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' "${curl_headers[@]}" "$url")
    if [[ $code != 200 && $code != 304 ]]; then
        echo "api-load: $scenario: $url answered $code" >&2
        exit 1
    fi
    if (( warmup > 0 )); then
        wrk -t"$threads" -c"$connections" -d"${warmup}s" "${wrk_headers[@]}" "$url" >/dev/null
    fi
    local out
    out=$(wrk -t"$threads" -c"$connections" -d"${duration}s" --latency "${wrk_headers[@]}" "$url")
    echo "$out" >"$data/wrk-$scenario.txt"
    echo "$out" | awk -v scenario="$scenario" -v code="$code" '
        # wrk prints latencies as 812.00us, 1.23ms or 1.01s.
        function ms(value) {
            if (value ~ /us$/) return substr(value, 1, length(value) - 2) / 1000
            if (value ~ /ms$/) return substr(value, 1, length(value) - 2) + 0
            if (value ~ /s$/) return substr(value, 1, length(value) - 1) * 1000
            return value + 0
        }
        /^ +50%/ { p50 = ms($2) }
        /^ +90%/ { p90 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /^Requests\/sec:/ { rps = $2 }
        /Non-2xx or 3xx responses:/ { non_ok = $NF }
        /Socket errors:/ {
            gsub(/,/, "")
            errors = $4 + $6 + $8 + $10
        }
        END {
            printf "{\"scenario\":\"%s\",\"status\":%d,\"rps\":%.0f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"non_2xx_3xx\":%d,\"errors\":%d}\n",
                scenario, code, rps, p50, p90, p99, non_ok + 0, errors + 0
        }'
}

etag=$(curl -fsS -o /dev/null -D - -H "Authorization: Bearer $viewer_token" "$lock_url" \
    | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p')

for scenario in $scenarios; do
    case $scenario in
        lock-get-admin) wrk_json "$scenario" "$lock_url" "Authorization: Bearer $admin_token" ;;
        lock-get-token) wrk_json "$scenario" "$lock_url" "Authorization: Bearer $viewer_token" ;;
        lock-get-304)
            wrk_json "$scenario" "$lock_url" "Authorization: Bearer $viewer_token" "If-None-Match: $etag" ;;
        env-lockfile-token) wrk_json "$scenario" "$env_url" "Authorization: Bearer $viewer_token" ;;
        lock-get-public)
            api PUT "/api/v1/namespaces/$namespace/visibility" '{"public_read": true}' >/dev/null
            wrk_json "$scenario" "$lock_url"
            api PUT "/api/v1/namespaces/$namespace/visibility" '{"public_read": false}' >/dev/null
            ;;
        *) echo "api-load: unknown scenario '$scenario'" >&2; exit 2 ;;
    esac
done
