#!/usr/bin/env python3
"""Kernel-only durations (no launch or graph overhead) of ours vs the Triton peer at small T, for Nsight
Compute:

    ncu --clock-control none -k regex:mtp --metrics gpu__time_duration.sum \\
        python3 bench/kernels/rms_norm/ncu.py --lib build/libdsv4.so

Each kernel runs 5 times per shape after a warm-up (T = 1 and 16, H = 4096 and 7168, hc = 4, bf16):
ours (heuristic), then Triton at 4 and at 16 warps. Comparing these with the graph-replayed times of
peers.py separates what a kernel costs on the SM from what its launch costs.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "reference"))
from dsv4_capi import Dsv4Lib  # noqa: E402
from peers import EPS, triton_mtp  # noqa: E402


SHAPES = [(4096, 1), (4096, 16), (7168, 1), (7168, 16)]
KINDS = ["ours", "triton 4 warps", "triton 16 warps"]
WARMUP_KERNELS = 3 * len(SHAPES)


def summarize(log):
    """Median gpu__time_duration per (shape, kernel) from an ncu log of this script's 60 kernels, in order."""
    import re
    import statistics

    durations = []
    for line in open(log):
        m = re.search(r"gpu__time_duration\.sum\s+(\S+)\s+([\d.]+)", line)
        if m:
            scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}.get(
                m.group(1), float("nan"))
            durations.append(float(m.group(2)) * scale)
    print(f"ncu kernel durations (median of 5, us), {len(durations)} kernels profiled")
    durations = durations[WARMUP_KERNELS:]
    for i, (H, T) in enumerate(SHAPES):
        row = []
        for k, kind in enumerate(KINDS):
            chunk = durations[(i * 3 + k) * 5:(i * 3 + k + 1) * 5]
            row.append(f"{kind} {statistics.median(chunk):.2f}" if chunk else f"{kind} -")
        print(f"  H={H} T={T}: " + ", ".join(row))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=None)
    ap.add_argument("--summarize", default=None, help="print medians from an ncu log of this script and exit")
    args = ap.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    lib = Dsv4Lib(args.lib, lab=True)
    hc, dt = 4, torch.bfloat16
    cases = []
    for H, T in SHAPES:
        e = torch.randn(T, H, device="cuda", dtype=dt)
        prev = torch.randn(T, hc, H, device="cuda", dtype=dt)
        ew, hw = torch.randn(H, device="cuda", dtype=dt), torch.randn(H, device="cuda", dtype=dt)
        pos = torch.arange(T, device="cuda", dtype=torch.int64) % 7
        eo, ho = torch.empty(T, H, device="cuda", dtype=dt), torch.empty(T, hc, H, device="cuda", dtype=dt)
        cases.append((H, T, (e, pos, prev, ew, hw, eo, ho)))
    # Warm-up (Triton compiles here): the first WARMUP_KERNELS profiled kernels, skipped by summarize().
    for _, _, a in cases:
        lib.fused_mtp_input_rms_norm(*a, EPS)
        for nw in (4, 16):
            triton_mtp(*a, EPS, nw)
    torch.cuda.synchronize()
    for H, T, a in cases:
        print(f"H={H} T={T}: ours [{lib.last_launch()}] x5, triton 4 warps x5, 16 warps x5", flush=True)
        for _ in range(5):
            lib.fused_mtp_input_rms_norm(*a, EPS)
        for nw in (4, 16):
            for _ in range(5):
                triton_mtp(*a, EPS, nw)
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
