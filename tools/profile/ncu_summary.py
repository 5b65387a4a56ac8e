#!/usr/bin/env python3
"""Sum one profiled step's kernel durations from `ncu --csv --page raw --metrics gpu__time_duration.sum`.

Prints the total kernel time, the kernel count and a table of kernel families (name up to the first '<'
or '('), largest first; --json writes the same. Used with DSV4_PROFILE_DECODE=N (one decode forward).
--above US adds, per family, the launches longer than US microseconds (count, median, max): a whole `bench
--contexts` run profiled launch by launch mixes its short-context phase (idle indexer splits, ~4 us) with the
long-context one, and the threshold keeps the latter.
When the CSV also has dram__bytes_read.sum / dram__bytes_write.sum, each family gets its DRAM bytes, its achieved
bandwidth and, with --bandwidth GB/s (the card's copy bandwidth), its excess: time beyond bytes / bandwidth — what
a decode step spends above its memory floor, kernel by kernel."""
import argparse
import csv
import io
import json
import re
import statistics
import sys
from collections import defaultdict


def unmangle(name):
    """The innermost name of an Itanium-mangled function (CUPTI reports mangled names): _ZN4dsv44cuda..11gemv_kernelI..
    -> gemv_kernel; anything else unchanged."""
    if not name.startswith("_Z"):
        return name
    i = 3 if name.startswith("_ZN") else 2
    last = name
    while i < len(name) and name[i].isdigit():
        j = i
        while j < len(name) and name[j].isdigit():
            j += 1
        n = int(name[i:j])
        last = name[j:j + n]
        i = j + n
    return last


def family(name):
    name = unmangle(name)
    name = re.sub(r"^void\s+", "", name).replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    name = name.split("(")[0].split("<")[0]
    return name.split("::")[-1] or name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv_file")
    ap.add_argument("--json")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--above", type=float, default=None, help="also summarise launches longer than this (us)")
    ap.add_argument("--bandwidth", type=float, default=None, help="copy bandwidth in GB/s for the excess column")
    args = ap.parse_args()
    text = open(args.csv_file, errors="replace").read()
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if '"Kernel Name"' in l or "Kernel Name" in l.split(",")[:8]), None)
    if start is None:
        sys.exit("no ncu CSV header in " + args.csv_file)
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
    fams = defaultdict(lambda: [0, 0.0, 0.0])  # count, ns, DRAM bytes
    launches = defaultdict(list)  # family -> durations in us
    total = 0.0
    n = 0
    # The units row (ncu scales units unless run with --print-units base): nanoseconds per unit of the column.
    scale = {"nsecond": 1.0, "usecond": 1e3, "msecond": 1e6, "second": 1e9}
    unit = next((scale.get(r.get("gpu__time_duration.sum", ""), None) for r in rows if not r.get("Kernel Name")), None)
    bytes_scale = {"byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    units_row = next((r for r in rows if not r.get("Kernel Name")), {})
    byte_cols = [c for c in ("dram__bytes_read.sum", "dram__bytes_write.sum") if c in units_row]

    def dram_bytes(r):
        total_bytes = 0.0
        for c in byte_cols:
            try:
                total_bytes += float(r.get(c, "").replace(",", "")) * bytes_scale.get(units_row.get(c, "byte"), 1.0)
            except ValueError:
                pass
        return total_bytes

    for r in rows:
        v = r.get("gpu__time_duration.sum", "")
        try:
            ns = float(v.replace(",", "")) * (unit or 1.0)
        except ValueError:
            continue  # the units row
        f = family(r.get("Kernel Name", "?"))
        fams[f][0] += 1
        fams[f][1] += ns
        fams[f][2] += dram_bytes(r)
        launches[f].append(ns / 1e3)
        total += ns
        n += 1
    order = sorted(fams.items(), key=lambda kv: -kv[1][1])
    print(f"kernels: {n}, sum of kernel durations: {total / 1e3:.1f} us")
    bw = args.bandwidth * 1e9 if args.bandwidth and byte_cols else None
    header = f"{'kernel family':48s} {'count':>5s} {'total us':>9s} {'share':>6s}"
    if byte_cols:
        header += f" {'MB':>8s} {'GB/s':>6s}" + (f" {'excess us':>9s}" if bw else "")
    print(header)
    excess_total = 0.0
    for f, (c, ns, b) in order[: args.top]:
        line = f"{f[:48]:48s} {c:5d} {ns / 1e3:9.1f} {100 * ns / max(total, 1):5.1f}%"
        if byte_cols:
            line += f" {b / 1e6:8.2f} {b / max(ns, 1):6.0f}"
            if bw:
                line += f" {ns / 1e3 - b / bw * 1e6:9.1f}"
        print(line)
    if bw:
        excess_total = sum(ns / 1e3 - b / bw * 1e6 for _, (c, ns, b) in order)
        all_bytes = sum(b for _, (c, ns, b) in order)
        print(f"DRAM bytes {all_bytes / 1e6:.1f} MB = {all_bytes / bw * 1e6:.1f} us at {args.bandwidth:.0f} GB/s; "
              f"excess over it {excess_total:.1f} us")
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
                   "families": [{"name": f, "count": c, "us": ns / 1e3, "dram_bytes": b} for f, (c, ns, b) in order],
                   "above": above}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
