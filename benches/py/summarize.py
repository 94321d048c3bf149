"""Prints the comparison table of a benches/compare.sh run (a JSONL file)."""

import json
import sys
from collections import defaultdict


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}x" if ours and theirs else "n/a"


def main(path):
    rows = [json.loads(line) for line in open(path) if line.strip().startswith("{")]
    solves = defaultdict(dict)
    for row in rows:
        if row.get("bench") == "solve" or row.get("tool") == "libsolv":
            solves[row["case"]][row["tool"]] = row
    if solves:
        print("solve (ms, median)            envstore: cold / warm / cached | rattler (Rust, bare): cold / warm | py-rattler: cold / warm | libsolv: load+solve / solve")
        for case, tools in solves.items():
            ours, rattler, libsolv = tools.get("envstore", {}), tools.get("py-rattler", {}), tools.get("libsolv", {})
            libsolv_cold = (libsolv.get("load_ms") or 0) + (libsolv.get("solve_ms") or 0)
            print(
                f"  {case:20} {ours.get('packages', '?'):>3} pkgs  "
                f"{ours.get('cold_ms', 0):8.1f} {ours.get('warm_ms', 0):8.1f} {ours.get('cached_ms', 0):7.3f} | "
                f"{ours.get('rattler_cold_ms', 0):8.1f} {ours.get('rattler_warm_ms', 0):8.1f} | "
                f"{rattler.get('cold_ms', 0):8.1f} {rattler.get('warm_ms', 0):8.1f} | "
                f"{libsolv_cold:8.1f} {libsolv.get('solve_ms', 0):8.1f}"
            )
            print(
                f"  {'':20} ratios: vs rattler cold {ratio(ours.get('cold_ms'), ours.get('rattler_cold_ms'))} "
                f"warm {ratio(ours.get('warm_ms'), ours.get('rattler_warm_ms'))}; "
                f"vs py-rattler cold {ratio(ours.get('cold_ms'), rattler.get('cold_ms'))} warm {ratio(ours.get('warm_ms'), rattler.get('warm_ms'))}; "
                f"vs libsolv cold {ratio(ours.get('cold_ms'), libsolv_cold)} warm {ratio(ours.get('warm_ms'), libsolv.get('solve_ms'))}"
            )
    links = {row["tool"]: row for row in rows if row.get("bench") == "link"}
    if links:
        ours = links.get("envstore", {})
        rattler = links.get("py-rattler", {})
        print(
            f"link ({ours.get('packages')} pkgs, {ours.get('files')} files): envstore {ours.get('link_ms', 0):.1f} ms, "
            f"py-rattler {rattler.get('link_ms', 0):.1f} ms, cp -al {ours.get('cp_al_ms', 0):.1f} ms | "
            f"envstore/cp -al {ratio(ours.get('link_ms'), ours.get('cp_al_ms'))}, "
            f"envstore/py-rattler {ratio(ours.get('link_ms'), rattler.get('link_ms'))}"
        )
    for row in rows:
        if row.get("bench") == "build":
            print(
                f"build ({row['packages']} pkgs): submit -> succeeded, new lock {row['new_lock_ms']:.1f} ms, "
                f"built lock {row['built_lock_ms']:.1f} ms"
            )
        if row.get("bench") == "api":
            print(
                f"api {row.get('scenario')}: {row.get('rps', 0):.0f} req/s, p50 {row.get('p50_ms')} ms, p99 {row.get('p99_ms')} ms"
            )
    scale = [row for row in rows if row.get("bench") == "scale"]
    if scale:
        base = scale[0]
        for row in scale:
            print(
                f"scale x{row['factor']:<3} {row['records']:>8} records: cold {row['cold_ms']:9.1f} ms "
                f"({ratio(row['cold_ms'], base['cold_ms'])}), warm {row['warm_ms']:8.1f} ms, "
                f"peak {row['peak_mib']:.0f} MiB ({ratio(row['peak_mib'], base['peak_mib'])})"
            )
    for row in rows:
        if row.get("bench") == "cold_build":
            print(
                f"cold build ({row['packages']} pkgs, archives over loopback HTTP, empty cache): envstore {row['total_ms']:.1f} ms "
                f"(fetch+check+extract {row['fetch_ms']:.1f}, link+check {row['link_ms']:.1f}) | floor {row['floor_ms']:.1f} ms "
                f"(curl+extract pipelined {row['floor_pipelined_ms']:.1f}, cp -al {row['floor_link_ms']:.1f}; "
                f"curl alone {row['floor_fetch_ms']:.1f}, extract alone {row['floor_extract_ms']:.1f}) | "
                f"envstore/floor {ratio(row['total_ms'], row['floor_ms'])} (target <= 1.3x)"
            )
    for row in rows:
        if row.get("bench") == "throughput":
            rates = row["builds_per_minute"]
            one = rates.get("workers_1")
            shown = ", ".join(
                f"{key.split('_')[1]} worker(s) {rate:.1f}/min"
                + (f" ({ratio(rate, one)} of 1)" if one else "")
                for key, rate in sorted(rates.items(), key=lambda item: int(item[0].split("_")[1]))
            )
            print(f"throughput ({row['builds']} distinct environments of {row['packages']} packages, queued at once, warm cache): {shown}")
    forge = {(row["clusters"], row["mode"]): row for row in rows if row.get("bench") == "forge"}
    if forge:
        small = min(clusters for clusters, _ in forge)
        large = max(clusters for clusters, _ in forge)
        print("forge (first solve over loopback HTTP, median; cold: empty cache, warm: cache on disk, new process)")
        for (clusters, mode), row in sorted(forge.items()):
            for state in ("cold", "warm"):
                figures = row[state]
                print(
                    f"  {row['records']:>8} records {row['names']:>6} names {mode:10} {state}: "
                    f"{figures['ms']:9.1f} ms, {figures['bytes'] / 1e6:8.2f} MB in {figures['requests']:.0f} requests, "
                    f"peak {figures['peak_mib']:6.0f} MiB"
                    + (f" (runs {', '.join(f'{ms:.0f}' for ms in figures['runs_ms'])})" if "runs_ms" in figures else "")
                )
        def get(clusters, mode, state, key):
            return forge.get((clusters, mode), {}).get(state, {}).get(key)
        if large != small:
            for state in ("cold", "warm"):
                print(
                    f"  {state}: sharded/monolithic (large) {ratio(get(large, 'sharded', state, 'ms'), get(large, 'monolithic', state, 'ms'))} time, "
                    f"{ratio(get(large, 'sharded', state, 'bytes'), get(large, 'monolithic', state, 'bytes'))} bytes, "
                    f"{ratio(get(large, 'sharded', state, 'peak_mib'), get(large, 'monolithic', state, 'peak_mib'))} memory; "
                    f"large sharded/small monolithic {ratio(get(large, 'sharded', state, 'ms'), get(small, 'monolithic', state, 'ms'))} time "
                    f"(target <= 1.5x cold), {ratio(get(large, 'sharded', state, 'peak_mib'), get(small, 'monolithic', state, 'peak_mib'))} memory; "
                    f"large sharded/small sharded {ratio(get(large, 'sharded', state, 'ms'), get(small, 'sharded', state, 'ms'))} time"
                )


if __name__ == "__main__":
    main(sys.argv[1])
