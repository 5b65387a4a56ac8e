#!/usr/bin/env python3
"""Per-kernel costs inside replayed decode steps, from a kernel_trace.cc CSV (LD_PRELOAD tracer; no nsys needed).

A step starts at each launch of --marker (default embedding_kernel: every forward starts with it). For the last
--steps steps, each kernel's *increment* is the time from the latest end of the kernels before it to its own end:
what it adds to the step's critical path, gaps included. (Its start is no guide under PDL: a dependent kernel is
launched early and waits on the device, so its duration and start-to-next-start include its predecessor's tail.)
Prints, per kernel family, the launches per step and the median over steps of the summed durations and increments,
and the step time (first start to the next step's first start); then the step's idle time (no kernel running, the
gap before the next step's first kernel included) and the launches outside CUDA graphs with their increments (a
pipelined decode step's upload, sampling and token copies); --json writes the same."""
import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict

from ncu_summary import family  # one kernel-family naming for ncu and CUPTI names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace_csv")
    ap.add_argument("--marker", default="embedding_kernel", help="kernel family that starts every step")
    ap.add_argument("--steps", type=int, default=8, help="analyse the last N complete steps")
    ap.add_argument("--skip-last", type=int, default=0, help="ignore the last N steps (e.g. a different phase)")
    ap.add_argument("--where", default=None,
                    help="FAMILY>US: only steps where that family's summed duration exceeds US (picks a phase, e.g. "
                         "the long-context steps by indexer_merge_kernel>10)")
    ap.add_argument("--eager", type=int, default=None,
                    help="only steps with exactly N launches outside CUDA graphs (a pipelined decode step: the upload, "
                         "the sampling and the token copy, 3; a replayed device step: 0)")
    ap.add_argument("--json")
    ap.add_argument("--launches", action="store_true",
                    help="also list every launch of the last analysed step: family, grid, duration, increment")
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.trace_csv)))
    if not rows:
        sys.exit("no kernels in " + args.trace_csv)
    ks = sorted(((int(r["start_ns"]), int(r["end_ns"]), family(r["name"]), int(r["graph"]),
                 f'{r["grid_x"]}x{r["grid_y"]}x{r["grid_z"]}') for r in rows))
    starts = [i for i, k in enumerate(ks) if k[2] == args.marker]
    if len(starts) < 2:
        sys.exit(f"fewer than two '{args.marker}' launches: no complete step")
    bounds = list(zip(starts[:-1], starts[1:]))
    if args.where:
        fam, us = args.where.split(">")
        bounds = [(b, e) for b, e in bounds if sum((ks[i][1] - ks[i][0]) / 1e3 for i in range(b, e)
                                                   if ks[i][2] == fam) > float(us)]
        if not bounds:
            sys.exit(f"no step with {args.where}")
    if args.eager is not None:
        bounds = [(b, e) for b, e in bounds if sum(1 for i in range(b, e) if ks[i][3] == 0) == args.eager]
        if not bounds:
            sys.exit(f"no step with {args.eager} launches outside graphs")
    if args.skip_last:
        bounds = bounds[: -args.skip_last]
    bounds = bounds[-args.steps:]
    per_step = []
    for b, e in bounds:
        fams = defaultdict(lambda: [0, 0.0, 0.0])  # launches, duration us, increment us
        done = ks[b][0]  # the latest end so far (the step's first start before any kernel ends)
        idle = eager = 0.0
        for i in range(b, e):
            s, end, f, graph = ks[i][:4]
            incr = max(0, end - done) / 1e3
            fams[f][0] += 1
            fams[f][1] += (end - s) / 1e3
            fams[f][2] += incr
            idle += max(0, s - done) / 1e3
            if graph == 0:
                eager += incr
            done = max(done, end)
        idle += max(0, ks[e][0] - done) / 1e3  # before the next step's first kernel
        per_step.append({"step_us": (ks[e][0] - ks[b][0]) / 1e3, "kernels": e - b,
                         "in_graph": sum(1 for i in range(b, e) if ks[i][3] != 0), "families": fams,
                         "idle_us": idle, "eager_increment_us": eager})
    names = sorted({f for st in per_step for f in st["families"]},
                   key=lambda f: -statistics.median(st["families"][f][2] if f in st["families"] else 0.0
                                                    for st in per_step))
    step_us = statistics.median(st["step_us"] for st in per_step)
    print(f"{len(per_step)} steps: median {step_us:.1f} us, {per_step[-1]['kernels']} kernels "
          f"({per_step[-1]['in_graph']} in graphs)")
    print(f"{'kernel family':44s} {'per step':>8s} {'dur us':>8s} {'incr us':>8s} {'share':>6s}")
    out = []
    for f in names:
        cnt = statistics.median(st["families"][f][0] if f in st["families"] else 0 for st in per_step)
        dur = statistics.median(st["families"][f][1] if f in st["families"] else 0.0 for st in per_step)
        slot = statistics.median(st["families"][f][2] if f in st["families"] else 0.0 for st in per_step)
        out.append({"name": f, "per_step": cnt, "duration_us": dur, "increment_us": slot})
        print(f"{f[:44]:44s} {cnt:8g} {dur:8.1f} {slot:8.1f} {100 * slot / step_us:5.1f}%")
    idle_us = statistics.median(st["idle_us"] for st in per_step)
    eager_us = statistics.median(st["eager_increment_us"] for st in per_step)
    eager_n = statistics.median(st["kernels"] - st["in_graph"] for st in per_step)
    print(f"idle (no kernel running): {idle_us:.1f} us a step; {eager_n:g} launches outside graphs: "
          f"{eager_us:.1f} us of increments")
    if args.launches:
        b, e = bounds[-1]
        print(f"\nlaunches of the last step: {'kernel family':40s} {'grid':>14s} {'dur us':>8s} {'incr us':>8s} "
              f"{'idle us':>8s}  (e: outside graphs)")
        done = ks[b][0]
        for i in range(b, e):
            s, end, f, graph, grid = ks[i]
            print(f"{'':26s}{'e ' if graph == 0 else '  '}{f[:40]:40s} {grid:>14s} {(end - s) / 1e3:8.1f} "
                  f"{max(0, end - done) / 1e3:8.1f} {max(0, s - done) / 1e3:8.1f}")
            done = max(done, end)
    if args.json:
        json.dump({"steps": len(per_step), "step_us": step_us, "idle_us": idle_us, "eager_launches": eager_n,
                   "eager_increment_us": eager_us, "families": out}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
