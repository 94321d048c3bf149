#!/usr/bin/env bash
# Runs every benchmark in one go on the same data and machine, and prints
# envstore's figures beside its peers' as ratios (envstore ÷ peer; below 1
# is faster than the peer):
#   solve  envstore vs py-rattler (rattler's own solve, from Python) and
#          vs libsolv with conda support (benches/libsolv);
#   link   envstore vs py-rattler's install vs `cp -al`;
#   build  submit → succeeded (new lock, warm cache; built lock);
#   cold   the cold build (archives over loopback HTTP, empty cache) as a
#          ratio of its floor with ordinary tools (benches/floor.sh);
#   throughput  builds per minute with 1, 2 and 4 workers on a queue of
#          distinct environments sharing their packages (ratios to 1 worker);
#   api    lockfile GET under load (benches/api-load.sh, wrk);
#   scale  solve time and peak memory from 26k to 1M records;
#   forge  the first solve on a channel of conda-forge's size (1.3M records,
#          30k names) over loopback HTTP, sharded vs monolithic, cold vs
#          warm, against the 26k-record base it is grown from;
#   pypi   PyPI resolution of ipykernel (its real wheels, on loopback) vs
#          the `uv pip compile` CLI (uv from PyPI, pinned) on the same index.
#
# Usage: benches/compare.sh [all|solve|link|build|cold|throughput|api|scale|forge|pypi]...
#   REPEAT=5            runs per figure (medians are printed)
#   SCALE_FACTORS="1 4 12 38"
#   FORGE_CLUSTERS=16 FORGE_VERSIONS=3   the forge channel's growth
#   THROUGHPUT_WORKERS=1,2,4 THROUGHPUT_BUILDS=16
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

# Every part but pypi works on the conda repodata.
conda_parts() { want solve || want link || want build || want cold || want throughput || want api || want scale || want forge; }

echo "== building (release)" >&2
packages=(-p envstore-benches)
if want api; then packages+=(-p envstore-server); fi
cargo build --release --locked "${packages[@]}" --bins >&2
bench=target/release/envstore-bench
if conda_parts; then
    root=${ENVSTORE_REPODATA:-$(cd "$here/../shared/fixtures/repodata" 2>/dev/null && pwd || true)}
    [[ -n $root && -f $root/SOURCES.md ]] || { echo "compare: no repodata at ../shared/fixtures/repodata (set ENVSTORE_REPODATA)" >&2; exit 2; }
    export ENVSTORE_REPODATA=$root
    python3 -c 'import rattler' 2>/dev/null || pip install --quiet 'py-rattler==0.28.0' >&2
fi
if want api || want cold; then
    missing=()
    tools=()
    if want api; then tools+=(wrk jq curl); fi
    if want cold; then tools+=(curl unzip zstd bzip2); fi
    for tool in "${tools[@]}"; do command -v "$tool" >/dev/null || missing+=("$tool"); done
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
if want cold; then
    echo "== cold build" >&2
    "$bench" --repeat "$repeat" cold-build | record
fi
if want throughput; then
    echo "== throughput" >&2
    "$bench" --repeat "$repeat" throughput --workers "${THROUGHPUT_WORKERS:-1,2,4}" --builds "${THROUGHPUT_BUILDS:-16}" | record
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
if want forge; then
    echo "== forge" >&2
    "$bench" --repeat "$repeat" forge --clusters "${FORGE_CLUSTERS:-16}" --versions "${FORGE_VERSIONS:-3}" | record
fi
if want pypi; then
    echo "== pypi" >&2
    # The same download as scripts/test, into the same folder.
    wheels=target/test-wheels/ipykernel
    if ! compgen -G "$wheels/*.whl" >/dev/null; then
        python3 -m pip download --quiet --only-binary=:all: --python-version 3.11 \
            --platform manylinux_2_28_x86_64 -d "$wheels" ipykernel >&2
    fi
    # uv 0.12.5 is the release of the uv crates (0.0.72) envstore-pypi uses.
    uv_version=0.12.5
    uv_venv=target/bench-data/uv-$uv_version
    if [[ ! -x $uv_venv/bin/uv ]]; then
        python3 -m venv "$uv_venv"
        "$uv_venv/bin/pip" install --quiet "uv==$uv_version" >&2
    fi
    "$bench" --repeat "$repeat" pypi --wheels "$wheels" \
        --uv "$uv_venv/bin/uv" --uv-python "$uv_venv/bin/python" | record
fi
echo "== summary ($results)" >&2
python3 benches/py/summarize.py "$results"
if want pypi; then
    python3 - "$results" <<'EOF'
import json, sys
def ratio(ours, theirs):
    return f"{ours / theirs:.2f}x" if ours and theirs else "n/a"
for row in map(json.loads, filter(str.strip, open(sys.argv[1]))):
    if row.get("bench") == "pypi":
        print(
            f"pypi {row['case']} ({row['packages']} pkgs, CPython {row['python']} {row['platform']}): "
            f"envstore cold {row['cold_ms']:.1f} ms, warm {row['warm_ms']:.1f} ms | "
            f"{row['uv_version'].split(' (')[0]} pip compile cold {row['uv_cold_ms']:.1f} ms, warm {row['uv_warm_ms']:.1f} ms | "
            f"envstore/uv cold {ratio(row['cold_ms'], row['uv_cold_ms'])}, warm {ratio(row['warm_ms'], row['uv_warm_ms'])}"
        )
EOF
fi
