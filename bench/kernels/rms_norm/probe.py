#!/usr/bin/env python3
"""Memory-side probe of the fused MTP input norm at mid T, for Nsight Compute with hot caches:

    ncu --cache-control none --clock-control none -k regex:"mtp|copy" \\
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct \\
        python3 bench/kernels/rms_norm/probe.py --lib build/libdsv4.so

Per shape (--shapes, hc = 4, bf16), --launches launches each of: ours (heuristic), the Triton peer at
--warps warps, and a Triton copy of the same bytes. With hot caches (the state the graph-replayed
benchmarks see), DRAM bytes and the L2 hit rate show how much of each kernel's traffic L2 absorbs.
"""
import argparse
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import EPS, Dsv4Lib, copy_kernel, mtp_inputs, triton_mtp  # noqa: E402



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=None)
    ap.add_argument("--shapes", default="4096x256,7168x256,7168x64", help="HxT,...")
    ap.add_argument("--warps", type=int, default=4, help="the Triton peer's num_warps")
    ap.add_argument("--launches", type=int, default=3, help="launches of each kernel per shape")
    args = ap.parse_args()
    lib = Dsv4Lib(args.lib, lab=True)
    hc, dt = 4, torch.bfloat16
    for H, T in (tuple(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")):
        e, pos, prev, ew, hw, eo, ho = mtp_inputs(T, H, hc, dt)
        n = (1 + hc) * T * H
        src, dst = torch.randn(n, device="cuda", dtype=dt), torch.empty(n, device="cuda", dtype=dt)
        runs = [("ours", lambda: lib.fused_mtp_input_rms_norm(e, pos, prev, ew, hw, eo, ho, EPS)),
                (f"triton {args.warps}w", lambda: triton_mtp(e, pos, prev, ew, hw, eo, ho, EPS, args.warps)),
                ("copy", lambda: copy_kernel[(triton.cdiv(n, 4096),)](src, dst, n, BLOCK=4096, num_warps=8))]
        for name, fn in runs:
            for _ in range(args.launches):
                fn()
            torch.cuda.synchronize()
            print(f"H={H} T={T} {name}: {lib.last_launch() if name == 'ours' else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
