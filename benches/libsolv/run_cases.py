#!/usr/bin/env python3
"""Run conda_solve (libsolv) on every case of benches/cases.json.

Usage: run_cases.py DRIVER [--repeat N] [--root REPODATA_ROOT] [--cases FILE]
                    [--only NAME]... [--print-commands]

DRIVER is the path printed on the last line of build.sh.  Prints one JSON
line per case: the driver's own line plus "case" and "reference_packages".
Exit status is non-zero if any case fails to run or is unsolvable.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("driver")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cases", default=os.path.join(HERE, "..", "cases.json"))
    ap.add_argument(
        "--root",
        default=os.path.join(HERE, "..", "..", "..", "shared", "fixtures", "repodata"),
        help="directory holding the channel directories",
    )
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--print-commands", action="store_true")
    args = ap.parse_args()

    with open(args.cases) as f:
        spec = json.load(f)
    root = os.path.normpath(args.root)
    rc = 0
    for case in spec["cases"]:
        if args.only and case["name"] not in args.only:
            continue
        platform = case["platform"]
        cmd = [args.driver, "--subdir", platform]
        for ch in case["channels"]:
            for sub in (platform, "noarch"):
                path = os.path.join(root, ch, sub, "repodata.json")
                if os.path.exists(path):
                    cmd += ["--repodata", path]
        for v in spec["virtual_packages"].get(platform, []):
            cmd += ["--virtual", v]
        cmd += ["--repeat", str(args.repeat), "--"] + case["specs"]
        if args.print_commands:
            print("# " + shlex.join(cmd), file=sys.stderr)
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.stderr:
            sys.stderr.write(p.stderr)
        lines = p.stdout.strip().splitlines()
        if not lines:
            print(json.dumps({"case": case["name"], "error": f"exit {p.returncode}, no output"}))
            rc = 1
            continue
        out = json.loads(lines[-1])
        if p.returncode != 0:
            rc = 1
        out = {"case": case["name"], "reference_packages": case.get("reference_packages"), **out}
        print(json.dumps(out))
    return rc


if __name__ == "__main__":
    sys.exit(main())
