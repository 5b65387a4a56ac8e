#!/usr/bin/env python3
"""Sum one profiled step's kernel durations from `ncu --csv --page raw --metrics gpu__time_duration.sum`.

Prints the total kernel time, the kernel count and a table of kernel families (name up to the first '<'
or '('), largest first; --json writes the same. Used with DSV4_PROFILE_DECODE=N (one decode forward).
--above US adds, per family, the launches longer than US microseconds (count, median, max): a whole `bench
--contexts` run profiled launch by launch mixes its short-context phase (idle indexer splits, ~4 us) with the
long-context one, and the threshold keeps the latter."""
import argparse
import csv
import io
import json
import re
import statistics
import sys
from collections import defaultdict


def family(name):
    name = re.sub(r"^void\s+", "", name).replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    name = name.split("(")[0].split("<")[0]
    return name.split("::")[-1] or name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv_file")
    ap.add_argument("--json")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--above", type=float, default=None, help="also summarise launches longer than this (us)")
    args = ap.parse_args()
    text = open(args.csv_file, errors="replace").read()
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if '"Kernel Name"' in l or "Kernel Name" in l.split(",")[:8]), None)
    if start is None:
        sys.exit("no ncu CSV header in " + args.csv_file)
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
    fams = defaultdict(lambda: [0, 0.0])
    launches = defaultdict(list)  # family -> durations in us
    total = 0.0
    n = 0
    # The units row (ncu scales units unless run with --print-units base): nanoseconds per unit of the column.
    scale = {"nsecond": 1.0, "usecond": 1e3, "msecond": 1e6, "second": 1e9}
    unit = next((scale.get(r.get("gpu__time_duration.sum", ""), None) for r in rows if not r.get("Kernel Name")), None)
    for r in rows:
        v = r.get("gpu__time_duration.sum", "")
        try:
            ns = float(v.replace(",", "")) * (unit or 1.0)
        except ValueError:
            continue  # the units row
        f = family(r.get("Kernel Name", "?"))
        fams[f][0] += 1
        fams[f][1] += ns
        launches[f].append(ns / 1e3)
        total += ns
        n += 1
    order = sorted(fams.items(), key=lambda kv: -kv[1][1])
    print(f"kernels: {n}, sum of kernel durations: {total / 1e3:.1f} us")
    print(f"{'kernel family':48s} {'count':>5s} {'total us':>9s} {'share':>6s}")
    for f, (c, ns) in order[: args.top]:
        print(f"{f[:48]:48s} {c:5d} {ns / 1e3:9.1f} {100 * ns / max(total, 1):5.1f}%")
    above = {}
    if args.above is not None:
        print(f"launches longer than {args.above:g} us:")
        for f, _ in order[: args.top]:
            long_ones = [us for us in launches[f] if us > args.above]
            if not long_ones:
                continue
            above[f] = {"count": len(long_ones), "median_us": statistics.median(long_ones), "max_us": max(long_ones)}
            print(f"{f[:48]:48s} {len(long_ones):5d} median {above[f]['median_us']:8.1f} us, max {max(long_ones):8.1f}")
    if args.json:
        json.dump({"kernels": n, "sum_us": total / 1e3,
                   "families": [{"name": f, "count": c, "us": ns / 1e3} for f, (c, ns) in order],
                   "above": above}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
