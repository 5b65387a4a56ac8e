#!/usr/bin/env python3
"""The table of scripts/gpu/suites/ab.sh: reads DIR/NAME__CASE__ROUND.json (dsv4 bench --json) and prints, per case
and library, the device ms/step of every round, their median, the floor and the median's ratio to the first library.

    ab_table.py DIR NAME [NAME ...] [--json OUT]
"""
import argparse
import glob
import json
import os
import statistics
import sys


def decode_rows(path):
    """(context, device ms/step, floor ms, sampled ms) of every decode context in one bench JSON, or an error."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        return None, f"{os.path.basename(path)}: no JSON ({e})"
    rows = []
    for run in d.get("runs", []):
        for c in run.get("context_decode", []):
            rows.append((c["context"], c["device_ms_per_step"], c["floor_ms"], c["sampled_ms_per_step"]["median"]))
    return rows, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("names", nargs="+")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    runs = {}  # (case, name) -> {context: [(round, device, floor, sampled)]}
    cases = []
    for path in sorted(glob.glob(os.path.join(a.dir, "*__*__*.json"))):
        name, case, rnd = os.path.basename(path)[: -len(".json")].split("__")
        if name not in a.names:
            continue
        if case not in cases:
            cases.append(case)
        rows, err = decode_rows(path)
        if err:
            print(err, file=sys.stderr)
            continue
        for ctx, dev, floor, sampled in rows:
            runs.setdefault((case, name), {}).setdefault(ctx, []).append((int(rnd), dev, floor, sampled))
    out = []
    for case in cases:
        contexts = sorted({ctx for (c, _), by_ctx in runs.items() if c == case for ctx in by_ctx})
        for ctx in contexts:
            print(f"{case}, context {ctx}: device ms/step (rounds | median | / floor | / {a.names[0]})")
            first = None
            for name in a.names:
                r = sorted(runs.get((case, name), {}).get(ctx, []))
                if not r:
                    print(f"  {name:<12} no runs")
                    continue
                med = statistics.median(x[1] for x in r)
                floor = statistics.median(x[2] for x in r)
                first = med if first is None else first
                print(f"  {name:<12} {' '.join(f'{x[1]:.3f}' for x in r)} | {med:.3f} | {med / floor:.2f}x | "
                      f"{med / first:.3f}")
                out.append({"case": case, "context": ctx, "lib": name, "device_ms": [x[1] for x in r],
                            "median_device_ms": med, "floor_ms": floor, "sampled_ms": [x[3] for x in r]})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if out else 1


if __name__ == "__main__":
    sys.exit(main())
