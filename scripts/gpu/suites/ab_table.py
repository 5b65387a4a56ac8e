#!/usr/bin/env python3
"""The table of scripts/gpu/suites/ab.sh: reads DIR/NAME__CASE__ROUND.json (dsv4 bench --json) and prints, per case,
decode row and library, the device ms/step of every round, their median, the floor, the median's ratio to the
first library, the median wall ms/step of the live steps and, for a context row, of its pipelined steps (generate's
decode: each step queued before the previous token is read back; a change to the step's launches around the graph
shows there, not in the device step). Decode rows: each context of `context_decode` (b = 1 whatever --batch says;
wall: the sampled steps) and each batch of `decode` (--batch B; the device step where CUDA
measured one, else the wall step). The device step of a batch row replays the graph on the last uploaded batch,
which can do less work than the live steps did (b = 64 on the Flash slice: 13.6 against 23.8 ms of MoE, H100,
bench/RESULTS.md eighteenth entry): compare the wall column too.

    ab_table.py DIR NAME [NAME ...] [--json OUT]
"""
import argparse
import glob
import json
import os
import statistics
import sys


def decode_rows(path):
    """(row label, device ms/step, floor ms or None, wall ms or None, pipelined ms or None) of every decode row in one
    bench JSON, or an error. Labels: "context N" (b = 1) and "batch B"."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        return None, f"{os.path.basename(path)}: no JSON ({e})"
    rows = []
    for run in d.get("runs", []):
        for c in run.get("context_decode", []):
            pipelined = c.get("pipelined_ms_per_step", {}).get("median")
            rows.append((f"context {c['context']}", c["device_ms_per_step"], c.get("floor_ms"),
                         c["sampled_ms_per_step"]["median"], pipelined))
        for b in run.get("decode", []):
            wall = b["ms_per_step"]["median"]
            rows.append((f"batch {b['batch']}", b.get("device_ms_per_step", wall), b.get("floor_ms"), wall, None))
    return rows, None


def row_key(label):
    """("context" | "batch", N) of a row label."""
    kind, n = label.split()
    return kind, int(n)


def row_order(label):
    kind, n = row_key(label)
    return kind != "context", n  # contexts first, then batches, each ascending


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("names", nargs="+")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    runs = {}  # (case, name) -> {row label: [(round, device, floor, wall, pipelined)]}
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
        for label, dev, floor, wall, pipelined in rows:
            runs.setdefault((case, name), {}).setdefault(label, []).append((int(rnd), dev, floor, wall, pipelined))
    out = []
    for case in cases:
        labels = sorted({lb for (c, _), by_row in runs.items() if c == case for lb in by_row}, key=row_order)
        for label in labels:
            print(f"{case}, {label}: device ms/step (rounds | median | / floor | / {a.names[0]} | wall median"
                  + (" | pipelined median)" if label.startswith("context") else ")"))
            first = None
            for name in a.names:
                r = sorted(runs.get((case, name), {}).get(label, []))
                if not r:
                    print(f"  {name:<12} no runs")
                    continue
                med = statistics.median(x[1] for x in r)
                floors = [x[2] for x in r if x[2] is not None]
                floor = statistics.median(floors) if floors else None
                first = med if first is None else first
                over = f"{med / floor:.2f}x" if floor else "n/a"
                walls = [x[3] for x in r if x[3] is not None]
                wall = statistics.median(walls) if walls else None
                pipes = [x[4] for x in r if x[4] is not None]
                pipelined = statistics.median(pipes) if pipes else None
                print(f"  {name:<12} {' '.join(f'{x[1]:.3f}' for x in r)} | {med:.3f} | {over} | {med / first:.3f} | "
                      + (f"{wall:.3f}" if wall is not None else "n/a")
                      + (f" | {pipelined:.3f}" if pipelined is not None else ""))
                row = {"case": case, "row": label, "lib": name, "device_ms": [x[1] for x in r],
                       "median_device_ms": med, "floor_ms": floor, "wall_ms": [x[3] for x in r],
                       "median_wall_ms": wall, "median_pipelined_ms": pipelined}
                kind, n = row_key(label)
                row[kind] = n
                out.append(row)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if out else 1


if __name__ == "__main__":
    sys.exit(main())
