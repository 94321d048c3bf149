"""py-rattler, the peer envstore's solve and link are compared with.

`solve`: every case of benches/cases.json through `rattler.solve` with a
gateway, cold (a new gateway: repodata read) and warm (the same gateway
again). `install`: the link benchmark's pixi.lock installed by
`rattler.install` from the same warm package cache into fresh prefixes.
Prints one JSON line per result, medians in milliseconds.
"""

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import rattler
from rattler import (
    BuildString,
    Channel,
    ChannelPriority,
    GenericVirtualPackage,
    LockFile,
    PackageName,
    Platform,
    Version,
)

HERE = Path(__file__).resolve().parent


def virtual_packages(texts):
    packages = []
    for text in texts:
        name, version, build = text.split("=")
        packages.append(GenericVirtualPackage(PackageName(name), Version(version), BuildString(build)))
    return packages


async def solve_case(case, root, vps, gateway):
    channels = [Channel(str(root / name)) for name in case["channels"]]
    return await rattler.solve(
        channels,
        case["specs"],
        gateway=gateway,
        platforms=[case["platform"], "noarch"],
        virtual_packages=vps,
        channel_priority=ChannelPriority.Strict,
        strategy="highest",
    )


async def solve(args):
    cases = json.loads((HERE.parent / "cases.json").read_text())
    root = Path(args.repodata)
    for case in cases["cases"]:
        if args.case and case["name"] not in args.case:
            continue
        vps = virtual_packages(cases["virtual_packages"][case["platform"]])
        cold = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as cache:
                gateway = rattler.Gateway(cache_dir=cache)
                started = time.perf_counter()
                records = await solve_case(case, root, vps, gateway)
                cold.append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as cache:
            gateway = rattler.Gateway(cache_dir=cache)
            await solve_case(case, root, vps, gateway)
            warm = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                await solve_case(case, root, vps, gateway)
                warm.append(time.perf_counter() - started)
        print(json.dumps({
            "tool": "py-rattler", "bench": "solve", "case": case["name"],
            "cold_ms": statistics.median(cold) * 1000, "warm_ms": statistics.median(warm) * 1000,
            "packages": len(records),
        }), flush=True)


async def install(args):
    info = json.loads((Path(args.export) / "link.json").read_text())
    environment = LockFile.from_path(info["lock"]).default_environment()
    lock_platform = next(p for p in environment.platforms() if p.name == info["platform"])
    records = environment.conda_repodata_records_for_platform(lock_platform)
    platform = Platform(info["platform"])
    work = Path(info["prefix_root"]) / "py-rattler"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    times = []
    for iteration in range(args.repeat):
        prefix = work / str(iteration)
        started = time.perf_counter()
        await rattler.install(
            records,
            prefix,
            cache_dir=Path(info["package_cache"]),
            platform=platform,
            execute_link_scripts=False,
            show_progress=False,
        )
        times.append(time.perf_counter() - started)
        shutil.rmtree(prefix)
    print(json.dumps({
        "tool": "py-rattler", "bench": "link", "packages": len(records),
        "link_ms": statistics.median(times) * 1000,
    }), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    commands = parser.add_subparsers(dest="command", required=True)
    solve_parser = commands.add_parser("solve")
    solve_parser.add_argument("--repodata", required=True)
    solve_parser.add_argument("--case", action="append")
    install_parser = commands.add_parser("install")
    install_parser.add_argument("export", help="the folder `envstore-bench link --export` wrote")
    args = parser.parse_args()
    asyncio.run(solve(args) if args.command == "solve" else install(args))


if __name__ == "__main__":
    sys.exit(main())
