#!/usr/bin/env bash
# Runs every benchmark in one go on the same data and machine, and prints
# envstore's figures beside its peers' as ratios (envstore ÷ peer; below 1
# is faster than the peer):
#   solve  envstore vs py-rattler (rattler's own solve, from Python) and
#          vs libsolv with conda support (benches/libsolv);
#   link   envstore vs py-rattler's install vs `cp -al`;
#   build  submit → succeeded (new lock, warm cache; built lock);
#   api    lockfile GET under load (benches/api-load.sh, wrk);
#   scale  solve time and peak memory from 26k to 1M records.
#
# Usage: benches/compare.sh [all|solve|link|build|api|scale]...
#   REPEAT=5            runs per figure (medians are printed)
#   SCALE_FACTORS="1 4 12 38"
#   ENVSTORE_REPODATA   the real repodata [default: ../shared/fixtures/repodata]
# Results also go to target/bench-data/compare-<time>.jsonl.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
repeat=${REPEAT:-5}
parts=("${@:-all}")
want() { [[ " ${parts[*]} " == *" all "* || " ${parts[*]} " == *" $1 "* ]]; }

mkdir -p target/bench-data
results=target/bench-data/compare-$(date -u +%Y%m%dT%H%M%SZ).jsonl
: >"$results"
record() { tee -a "$results"; }

echo "== building (release)" >&2
cargo build --release --locked -p envstore-benches -p envstore-server --bins >&2
bench=target/release/envstore-bench
root=${ENVSTORE_REPODATA:-$(cd "$here/../shared/fixtures/repodata" 2>/dev/null && pwd || true)}
[[ -n $root && -f $root/SOURCES.md ]] || { echo "compare: no repodata at ../shared/fixtures/repodata (set ENVSTORE_REPODATA)" >&2; exit 2; }
export ENVSTORE_REPODATA=$root

python3 -c 'import rattler' 2>/dev/null || pip install --quiet 'py-rattler==0.28.0' >&2
if want api; then
    missing=()
    for tool in wrk jq curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    if ((${#missing[@]})); then
        echo "== installing ${missing[*]} (Debian)" >&2
        apt-get install -y -qq "${missing[@]}" >&2
    fi
fi

if want solve; then
    echo "== solve" >&2
    "$bench" --repeat "$repeat" solve | record
    python3 benches/py/rattler_peer.py --repeat "$repeat" solve --repodata "$root" | record
    driver=$(bash benches/libsolv/build.sh 2>/dev/null | tail -n 1)
    python3 benches/libsolv/run_cases.py "$driver" --repeat "$repeat" --root "$root" | record
fi
if want link || want build; then
    export_dir=target/bench-data/link-export
    echo "== link" >&2
    "$bench" --repeat "$repeat" link --export "$export_dir" | record
    python3 benches/py/rattler_peer.py --repeat "$repeat" install "$export_dir" | record
fi
if want build; then
    echo "== build" >&2
    "$bench" --repeat "$repeat" build | record
fi
if want api; then
    echo "== api" >&2
    ENVSTORE_BIN=target/release/envstore bash benches/api-load.sh | sed 's/^{/{"bench":"api",/' | record
fi
if want scale; then
    echo "== scale" >&2
    for factor in ${SCALE_FACTORS:-1 4 12 38}; do
        "$bench" scale --factor "$factor" | record
    done
fi
echo "== summary ($results)" >&2
python3 benches/py/summarize.py "$results"
