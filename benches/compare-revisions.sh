#!/usr/bin/env bash
# Lockfile GET under load, this tree against an earlier revision, in one run
# on the same machine: both servers are built in release (the earlier one
# from a git worktree, sharing this target folder's compiled dependencies),
# then benches/api-load.sh loads each in turn, alternating for ROUNDS rounds
# so neither always goes first, and the ratios (this ÷ base; below 1 is
# slower) are printed per scenario.
#
# Usage: benches/compare-revisions.sh BASE_REV
#   ROUNDS=2      rounds of every scenario for each binary
#   (api-load.sh's DURATION, CONNECTIONS, SCENARIOS … apply)
# Results also go to target/bench-data/revisions-<time>.jsonl.
set -euo pipefail

base=${1:?usage: benches/compare-revisions.sh BASE_REV}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
rounds=${ROUNDS:-2}
base_sha=$(git rev-parse --short "$base")
work=$(mktemp -d)
trap 'git worktree remove --force "$work/tree" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

echo "== building $base_sha and this tree (release)" >&2
git worktree add -q --detach "$work/tree" "$base_sha"
(cd "$work/tree" && CARGO_TARGET_DIR="$here/target" cargo build --release --locked -p envstore-server --bins >&2)
cp target/release/envstore "$work/envstore-base"
cargo build --release --locked -p envstore-server --bins >&2
cp target/release/envstore "$work/envstore-this"

mkdir -p target/bench-data
results=target/bench-data/revisions-$(date -u +%Y%m%dT%H%M%SZ).jsonl
for round in $(seq "$rounds"); do
    for which in base this; do
        echo "== round $round: $which" >&2
        ENVSTORE_BIN="$work/envstore-$which" bash benches/api-load.sh |
            sed "s/^{/{\"bin\":\"$which\",\"round\":$round,/" >>"$results"
    done
done
python3 - "$results" "$base_sha" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
scenarios = list(dict.fromkeys(row["scenario"] for row in rows))
print(f"lockfile GET, this tree vs {sys.argv[2]} (mean of rounds; ratio = this / base)")
for scenario in scenarios:
    figures = {}
    for which in ("base", "this"):
        runs = [row for row in rows if row["scenario"] == scenario and row["bin"] == which]
        figures[which] = (statistics.mean(r["rps"] for r in runs), statistics.mean(r["p99_ms"] for r in runs))
    (base_rps, base_p99), (this_rps, this_p99) = figures["base"], figures["this"]
    print(f"  {scenario:20s} base {base_rps:8.0f} req/s p99 {base_p99:5.2f} ms | this {this_rps:8.0f} req/s p99 {this_p99:5.2f} ms | {this_rps / base_rps:.2f}x")
PY
