#!/usr/bin/env python3
"""Kernel lab: dsv4's fused MTP norms vs their peers, in one process on one card.

    python3 bench/kernels/rms_norm/peers.py [--lib build/libdsv4.so] [--json out.json]
                                            [--hidden 4096,7168,2568] [--tokens 1,4,...] [--hc 4]

Peers, all timed with triton.testing.do_bench_cudagraph (graph-replayed, median), bf16, same inputs:
  ours       dsv4_fused_mtp_input_rms_norm through ctypes (separate outputs), and the eh layout variant
  triton     a Triton kernel written from the published algorithm (vLLM PR #43746): grid (T, hc+1),
             program (t, 0) zeroes row t if positions[t] == 0 and RMS-norms it with enorm_w, program
             (t, k+1) norms prev[t, k]; BLOCK = next_pow2(H); fp32 math. Timed at num_warps 4 (Triton's
             default, "triton") and at the best of 4/8/16 ("triton best").
  eager      the PyTorch sequence it replaces: where / enorm / view / hnorm
  compile    torch.compile of that sequence
and the same four for the shared-head norm (one row per program), plus the roofline of each shape: a copy
of the same bytes ((1+hc)*T*H elements in and out), hot, the best of torch's copy_ and a few Triton copy
launch shapes. Prints a table (time, fraction of the measured copy bandwidth, ratios ours/Triton and
ours/compile) and writes JSON.

PDL: our launches use programmatic dependent launch unless DSV4_PDL=0 (the library reads it once); the
script checks that a torch graph capture of two of our calls holds a programmatic edge and records it.
--only-ours times just our kernels (for an A/B run with DSV4_PDL=0).
"""
import ctypes
import os
import argparse
import datetime
import json
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl
from triton.testing import do_bench_cudagraph

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools" / "reference"))
from dsv4_capi import Dsv4Error, Dsv4Lib  # noqa: E402

EPS = 1e-6

# Our launch variants for --sweep, as set_launch arguments (kernel, vecs_per_thread, rows_per_block, max_blocks,
# plain_loads, late_weights[, trigger, blocks_per_sm]): the register kernel (1) with one block per tile (-1) or one
# resident wave (-2), with plain loads, with late weights; the bulk kernel (3), one block per row, and its resident
# grid of 1-4 blocks per SM streaming rows through a shared-memory ring.
REG_SHAPES = [(1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1)]
VARIANTS = ([(1, v, r, g, 0, 0) for v, r in REG_SHAPES for g in (-1, -2)]
            + [(1, v, 1, g, 1, 0) for v in (1, 2, 4, 8) for g in (-1, -2)]  # plain loads, not .nc/no-L1/L2 prefetch
            + [(1, v, 1, g, 0, 1) for v in (1, 2, 4) for g in (-1, -2)]  # weights read after the reduction
            + [(1, v, 1, g, 1, 1) for v in (2, 4, 8) for g in (-1, -2)]  # both: the Triton kernel's shape
            + [(3, v, 0, 0, 0, 0) for v in (1, 2, 4, 8)]
            + [(3, v, 1, 0, 0, 0, 0, b) for v in (2, 4, 8) for b in (1, 2, 3, 4)]
            # the bulk kernel's late instances: the row read twice from shared memory, <= 128 threads
            + [(3, v, 0, 0, 0, 1) for v in (4, 8)]
            # the PDL trigger after the wait (2) or before it (3) instead of after the loads, on the bandwidth shapes
            + [(1, 4, 1, -1, 1, 0, tr) for tr in (2, 3)] + [(1, 2, 1, -1, 0, 1, tr) for tr in (2, 3)])


@triton.jit
def mtp_input_rmsnorm_program(e_ptr, pos_ptr, prev_ptr, ew_ptr, hw_ptr, eo_ptr, ho_ptr, H, eps,
                              HC: tl.constexpr, BLOCK: tl.constexpr):
    """Program (t, k) of the published algorithm: k = 0 normalises the (masked) embedding row, k > 0 the
    hidden stream k - 1."""
    t = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1)
    offs = tl.arange(0, BLOCK)
    mask = offs < H
    if k == 0:
        x = tl.load(e_ptr + t * H + offs, mask=mask, other=0.0).to(tl.float32)
        pos = tl.load(pos_ptr + t)
        x = tl.where(pos == 0, 0.0, x)
        w_ptr = ew_ptr
        out_ptr = eo_ptr + t * H
    else:
        row = t * HC + (k - 1)
        x = tl.load(prev_ptr + row * H + offs, mask=mask, other=0.0).to(tl.float32)
        w_ptr = hw_ptr
        out_ptr = ho_ptr + row * H
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / H + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (x * rstd * w).to(eo_ptr.dtype.element_ty), mask=mask)


@triton.jit
def mtp_input_rmsnorm_kernel(e_ptr, pos_ptr, prev_ptr, ew_ptr, hw_ptr, eo_ptr, ho_ptr, H, eps,
                             HC: tl.constexpr, BLOCK: tl.constexpr):
    mtp_input_rmsnorm_program(e_ptr, pos_ptr, prev_ptr, ew_ptr, hw_ptr, eo_ptr, ho_ptr, H, eps, HC, BLOCK)


try:  # Triton's programmatic-dependent-launch intrinsics (Hopper); the "triton pdl" column needs them
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
    HAVE_GDC = True
except ImportError:
    HAVE_GDC = False


@triton.jit
def mtp_input_rmsnorm_pdl_kernel(e_ptr, pos_ptr, prev_ptr, ew_ptr, hw_ptr, eo_ptr, ho_ptr, H, eps,
                                 HC: tl.constexpr, BLOCK: tl.constexpr):
    """The same kernel launched with PDL: wait for the previous grid, then let the next one launch."""
    gdc_wait()
    gdc_launch_dependents()
    mtp_input_rmsnorm_program(e_ptr, pos_ptr, prev_ptr, ew_ptr, hw_ptr, eo_ptr, ho_ptr, H, eps, HC, BLOCK)


def triton_mtp_pdl(e, pos, prev, ew, hw, eo, ho, eps, num_warps):
    T, H = e.shape
    hc = ho.shape[1]
    mtp_input_rmsnorm_pdl_kernel[(T, hc + 1)](e, pos, prev, ew, hw, eo, ho, H, eps, HC=hc,
                                              BLOCK=triton.next_power_of_2(H), num_warps=num_warps,
                                              launch_pdl=True)


@triton.jit
def copy_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)


@triton.jit
def rmsnorm_row_kernel(x_ptr, w_ptr, out_ptr, H, eps, BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < H
    x = tl.load(x_ptr + t * H + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / H + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + t * H + offs, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


def triton_mtp(e, pos, prev, ew, hw, eo, ho, eps, num_warps):
    T, H = e.shape
    hc = ho.shape[1]
    mtp_input_rmsnorm_kernel[(T, hc + 1)](e, pos, prev, ew, hw, eo, ho, H, eps, HC=hc,
                                          BLOCK=triton.next_power_of_2(H), num_warps=num_warps)


def triton_head(x, w, out, eps, num_warps):
    T, H = x.shape
    rmsnorm_row_kernel[(T,)](x, w, out, H, eps, BLOCK=triton.next_power_of_2(H), num_warps=num_warps)


def rms(x, w, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def eager_mtp(e, pos, prev, ew, hw, eps, hc):
    e = torch.where(pos.unsqueeze(-1) == 0, 0.0, e)
    return rms(e, ew, eps), rms(prev.view(-1, hc, e.shape[-1]), hw, eps)


def eager_head(x, w, eps):
    return rms(x, w, eps)


def mtp_inputs(T, H, hc, dt):
    """The lab's inputs of one shape (seeded by the shape): embeddings, positions (1 in 7 rows masked),
    previous hidden streams, both weights, and the two outputs."""
    gen = torch.Generator(device="cuda").manual_seed(T * 131 + H)
    e = torch.randn(T, H, device="cuda", dtype=dt, generator=gen)
    prev = torch.randn(T, hc, H, device="cuda", dtype=dt, generator=gen)
    ew = (1 + 0.5 * torch.randn(H, device="cuda", generator=gen)).to(dt)
    hw = (1 + 0.5 * torch.randn(H, device="cuda", generator=gen)).to(dt)
    pos = torch.arange(T, device="cuda", dtype=torch.int64) % 7
    eo, ho = torch.empty(T, H, device="cuda", dtype=dt), torch.empty(T, hc, H, device="cuda", dtype=dt)
    return e, pos, prev, ew, hw, eo, ho


_STREAM = None


def bench(fn, rep):
    """Median microseconds per call, graph-replayed; captured on a side stream (graphs cannot capture the
    legacy default stream), after the default stream's setup work has finished."""
    global _STREAM
    if _STREAM is None:
        _STREAM = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(_STREAM):
        return do_bench_cudagraph(fn, rep=rep, return_mode="median") * 1e3


def programmatic_edges(fn):
    """Captures fn() twice into a torch CUDA graph and counts the graph's programmatic edges (the form a
    PDL launch takes under stream capture); None when the CUDA runtime's edge query is unavailable."""
    g = torch.cuda.CUDAGraph(keep_graph=True)
    s = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.graph(g, stream=s):
        fn()
        fn()
    try:
        rt = ctypes.CDLL("libcudart.so.13")  # torch's runtime, already loaded; CUDA 13 signature with edge data
    except OSError:
        return None
    graph = ctypes.c_void_p(g.raw_cuda_graph())
    n = ctypes.c_size_t(0)
    if rt.cudaGraphGetEdges(graph, None, None, None, ctypes.byref(n)) != 0:
        return None
    frm, to = (ctypes.c_void_p * n.value)(), (ctypes.c_void_p * n.value)()
    data = (ctypes.c_uint8 * (8 * n.value))()  # cudaGraphEdgeData: from_port, to_port, type, reserved[5]
    if rt.cudaGraphGetEdges(graph, frm, to, data, ctypes.byref(n)) != 0:
        return None
    return {"edges": n.value, "programmatic": sum(1 for i in range(n.value) if data[8 * i + 2] == 1)}


def copy_roofline(n_elems, dt, rep):
    """Best graph-replayed, hot time (us) of copying n_elems elements: torch copy_ and Triton copy shapes."""
    src = torch.randn(n_elems, device="cuda", dtype=torch.float32).to(dt)
    dst = torch.empty_like(src)
    times = {"torch_copy_": bench(lambda: dst.copy_(src), rep)}
    for block, warps in ((1024, 4), (2048, 8), (4096, 8), (8192, 16)):
        times[f"triton_{block}_{warps}w"] = bench(
            lambda: copy_kernel[(triton.cdiv(n_elems, block),)](src, dst, n_elems, BLOCK=block, num_warps=warps), rep)
    best = min(times, key=times.get)
    del src, dst
    return times[best], best, times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--hidden", default="4096,7168,2568")
    ap.add_argument("--tokens", default="1,4,16,64,256,1024,4096,16384")
    ap.add_argument("--hc", type=int, default=4)
    ap.add_argument("--rep", type=int, default=10, help="do_bench_cudagraph rep (ms)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--only-ours", action="store_true", help="time only our kernels (no peers, no roofline)")
    ap.add_argument("--sweep-tokens", default="16,64,256,1024,4096",
                    help="token counts at which --sweep times every variant")
    ap.add_argument("--sweep", default="4096,7168",
                    help="hidden sizes at which to time every launch variant of ours ('' = none)")
    args = ap.parse_args()
    hiddens = [int(v) for v in args.hidden.split(",")]
    tokens = [int(v) for v in args.tokens.split(",")]
    hc, dt = args.hc, torch.bfloat16
    lib = Dsv4Lib(args.lib, lab=True)
    torch._dynamo.config.cache_size_limit = 256
    if hasattr(torch._dynamo.config, "recompile_limit"):
        torch._dynamo.config.recompile_limit = 256
    compiled_mtp = torch.compile(eager_mtp)
    compiled_head = torch.compile(eager_head)

    # Copy bandwidth (bytes read + written) of a 1 GiB device-to-device copy, this card, this run.
    src = torch.randn(1 << 29, device="cuda", dtype=dt)
    dst = torch.empty_like(src)
    for _ in range(400):  # let the clocks leave their idle state first
        dst.copy_(src)
    torch.cuda.synchronize()
    n = src.numel()
    t_copy = bench(lambda: dst.copy_(src), 50)
    t_triton_copy = bench(lambda: copy_kernel[(triton.cdiv(n, 8192),)](src, dst, n, BLOCK=8192, num_warps=8), 50)
    copy_bw = 2 * n * 2 / (min(t_copy, t_triton_copy) * 1e-6)  # the better of torch's copy_ and a plain kernel
    print(f"copy: torch copy_ {2 * n * 2 / t_copy / 1e3:.0f} GB/s, Triton copy {2 * n * 2 / t_triton_copy / 1e3:.0f} GB/s")
    del src, dst
    device = torch.cuda.get_device_name()
    print(f"device: {device}; torch {torch.__version__}, triton {triton.__version__}; "
          f"copy bandwidth {copy_bw / 1e9:.0f} GB/s (read+write)", flush=True)

    pdl_env = os.environ.get("DSV4_PDL", "(unset: on)")
    results = []
    edge_check = None

    def dump():  # after every shape, so a run cut short still leaves its numbers
        if args.json:
            Path(args.json).write_text(json.dumps({
                "device": device, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "torch": torch.__version__, "triton": triton.__version__, "copy_bw_bytes_per_s": copy_bw,
                "DSV4_PDL": pdl_env, "graph_edges_two_calls": edge_check,
                "command": " ".join(sys.argv), "results": results}, indent=1))

    for H in hiddens:
        for T in tokens:
            e, pos, prev, ew, hw, eo, ho = mtp_inputs(T, H, hc, dt)
            eh = torch.empty(T, hc, 2 * H, device="cuda", dtype=dt)
            x = e  # shared-head input [T, H]
            head_out = torch.empty(T, H, device="cuda", dtype=dt)

            # Sanity: ours and the Triton peer agree (bf16: at most a rounding apart).
            lib.fused_mtp_input_rms_norm(e, pos, prev, ew, hw, eo, ho, EPS)
            eo2, ho2 = torch.empty_like(eo), torch.empty_like(ho)
            triton_mtp(e, pos, prev, ew, hw, eo2, ho2, EPS, 4)
            torch.cuda.synchronize()
            assert torch.allclose(eo.float(), eo2.float(), rtol=1e-2, atol=1e-2), "ours vs triton: enorm differs"
            assert torch.allclose(ho.float(), ho2.float(), rtol=1e-2, atol=1e-2), "ours vs triton: hnorm differs"

            if edge_check is None:
                edge_check = programmatic_edges(lambda: lib.fused_mtp_input_rms_norm(e, pos, prev, ew, hw, eo, ho, EPS))
                print(f"DSV4_PDL={pdl_env}: torch graph of two calls of ours: {edge_check}", flush=True)
            r = {"hidden": H, "tokens": T, "hc": hc}
            r["ours_launch"] = lib.last_launch()
            r["ours"] = bench(lambda: lib.fused_mtp_input_rms_norm(e, pos, prev, ew, hw, eo, ho, EPS), args.rep)
            if args.only_ours:
                r["ours_eh"] = bench(lambda: lib.fused_mtp_input_rms_norm_eh(e, pos, prev, ew, hw, eh, EPS), args.rep)
                r["head_ours"] = bench(lambda: lib.mtp_shared_head_rms_norm(x, hw, head_out, EPS), args.rep)
                results.append(r)
                print(f"H={H} T={T}: ours {r['ours']:.2f} us [{r['ours_launch']}], eh {r['ours_eh']:.2f}, "
                      f"head {r['head_ours']:.2f}", flush=True)
                dump()
                del e, prev, eo, ho, eh, eo2, ho2, head_out
                torch.cuda.empty_cache()
                continue
            if T <= 4096:
                r["copy_us"], r["copy_best"], r["copy_all"] = copy_roofline((1 + hc) * T * H, dt, args.rep)
            if str(H) in args.sweep.split(",") and str(T) in args.sweep_tokens.split(","):
                sweep = []
                for var in VARIANTS:
                    lib.set_launch(*var)
                    try:
                        lib.fused_mtp_input_rms_norm(e, pos, prev, ew, hw, eo, ho, EPS)
                    except Dsv4Error:
                        continue  # this variant does not fit H
                    desc = lib.last_launch()
                    t = bench(lambda: lib.fused_mtp_input_rms_norm(e, pos, prev, ew, hw, eo, ho, EPS), args.rep)
                    sweep.append({"variant": list(var), "launch": desc, "us": t})
                lib.set_launch(0)
                best = min(sweep, key=lambda x: x["us"])
                r["sweep"] = sweep
                r["sweep_best_us"], r["sweep_best_launch"] = best["us"], best["launch"]
            r["ours_eh"] = bench(lambda: lib.fused_mtp_input_rms_norm_eh(e, pos, prev, ew, hw, eh, EPS), args.rep)
            tw = {}
            for nw in (4, 8, 16):
                tw[nw] = bench(lambda: triton_mtp(e, pos, prev, ew, hw, eo2, ho2, EPS, nw), args.rep)
            r["triton"] = tw[4]
            if HAVE_GDC and T <= 4096:  # context: the Triton kernel with PDL too (not the acceptance baseline)
                try:
                    r["triton_pdl"] = bench(lambda: triton_mtp_pdl(e, pos, prev, ew, hw, eo2, ho2, EPS, 4), args.rep)
                    r["triton_pdl_16w"] = bench(lambda: triton_mtp_pdl(e, pos, prev, ew, hw, eo2, ho2, EPS, 16),
                                                args.rep)
                except Exception as exc:  # noqa: BLE001 - an older Triton without launch_pdl
                    r["triton_pdl_error"] = str(exc)[:200]
            r["triton_best"] = min(tw.values())
            r["triton_best_warps"] = min(tw, key=tw.get)
            r["eager"] = bench(lambda: eager_mtp(e, pos, prev, ew, hw, EPS, hc), args.rep)
            if not args.no_compile:
                compiled_mtp(e, pos, prev, ew, hw, EPS, hc)
                r["compile"] = bench(lambda: compiled_mtp(e, pos, prev, ew, hw, EPS, hc), args.rep)
            # shared head
            r["head_ours"] = bench(lambda: lib.mtp_shared_head_rms_norm(x, hw, head_out, EPS), args.rep)
            hw_t = {nw: bench(lambda: triton_head(x, hw, head_out, EPS, nw), args.rep) for nw in (4, 8, 16)}
            r["head_triton"] = hw_t[4]
            r["head_triton_best"] = min(hw_t.values())
            r["head_eager"] = bench(lambda: eager_head(x, hw, EPS), args.rep)
            if not args.no_compile:
                compiled_head(x, hw, EPS)
                r["head_compile"] = bench(lambda: compiled_head(x, hw, EPS), args.rep)

            r["bytes"] = 2 * (2 * (1 + hc) * T * H + 2 * H) + 8 * T
            r["head_bytes"] = 2 * (2 * T * H + H)
            r["ours_frac_copy_bw"] = r["bytes"] / (r["ours"] * 1e-6) / copy_bw
            r["triton_frac_copy_bw"] = r["bytes"] / (r["triton"] * 1e-6) / copy_bw
            r["ratio_ours_triton"] = r["ours"] / r["triton"]
            r["ratio_ours_triton_best"] = r["ours"] / r["triton_best"]
            r["head_ratio_ours_triton_best"] = r["head_ours"] / r["head_triton_best"]
            if "compile" in r:
                r["ratio_ours_compile"] = r["ours"] / r["compile"]
            results.append(r)
            if "sweep_best_us" in r:
                print(f"H={H} T={T}: sweep best {r['sweep_best_us']:.2f} us [{r['sweep_best_launch']}]", flush=True)
            print(f"H={H} T={T}: ours {r['ours']:.2f} us [{r['ours_launch']}], triton {r['triton']:.2f} (best {r['triton_best']:.2f} "
                  f"@{r['triton_best_warps']}w), compile {r.get('compile', float('nan')):.2f}, "
                  f"eager {r['eager']:.2f}, triton+PDL 4w/16w {r.get('triton_pdl', float('nan')):.2f}/"
                  f"{r.get('triton_pdl_16w', float('nan')):.2f}{' ' + r['triton_pdl_error'] if 'triton_pdl_error' in r else ''}, "
                  f"copy of the same bytes {r.get('copy_us', float('nan')):.2f} "
                  f"[{r.get('copy_best', '-')}]", flush=True)
            dump()
            del e, prev, eo, ho, eh, eo2, ho2, head_out
            torch.cuda.empty_cache()

    # Acceptance (issue 20): ours <= 0.8x the published Triton kernel (Triton's default 4 warps) at T <= 16 and
    # never slower at any T, H in {4096, 7168}; the best Triton warp count is reported beside it.
    def target(T):
        return 0.8 if T <= 16 else 1.0

    if args.only_ours:
        dump()
        return 0
    verdicts = []
    for r in results:
        lim = target(r["tokens"])
        if r["hidden"] in (4096, 7168) and lim is not None:
            r["target"] = lim
            r["meets_target_vs_triton"] = r["ratio_ours_triton"] <= lim
            r["meets_target_vs_triton_best"] = r["ratio_ours_triton_best"] <= lim
            verdicts.append(r["meets_target_vs_triton"])

    print(f"\nfused MTP input RMSNorm, bf16, hc={hc}, {device}; times in us (do_bench_cudagraph median); "
          f"%bw = fraction of copy bandwidth ({copy_bw / 1e9:.0f} GB/s)")
    print(f"{'H':>5} {'T':>5} | {'ours':>8} {'%bw':>4} {'eh':>8} | {'triton':>8} {'best':>8} {'%bw':>4} | "
          f"{'compile':>8} {'eager':>8} | {'o/tri':>5} {'o/best':>6} {'o/comp':>6} | {'head':>7} {'h-tri*':>7} "
          f"{'h-comp':>7} {'h o/t*':>6} | {'sweep':>8} {'s/best':>6} | {'copy':>7} {'goal':>7}")
    for r in results:
        ok = {True: "", False: " MISS"}.get(r.get("meets_target_vs_triton"), "")
        print(f"{r['hidden']:5d} {r['tokens']:5d} | {r['ours']:8.2f} {100 * r['ours_frac_copy_bw']:3.0f}% "
              f"{r['ours_eh']:8.2f} | {r['triton']:8.2f} {r['triton_best']:8.2f} "
              f"{100 * r['triton_frac_copy_bw']:3.0f}% | {r.get('compile', float('nan')):8.2f} {r['eager']:8.2f} | "
              f"{r['ratio_ours_triton']:5.2f} {r['ratio_ours_triton_best']:6.2f} "
              f"{r.get('ratio_ours_compile', float('nan')):6.2f} | {r['head_ours']:7.2f} "
              f"{r['head_triton_best']:7.2f} {r.get('head_compile', float('nan')):7.2f} "
              f"{r['head_ratio_ours_triton_best']:6.2f} | {r.get('sweep_best_us', float('nan')):8.2f} "
              f"{r.get('sweep_best_us', float('nan')) / r['triton_best']:6.2f} | "
              f"{r.get('copy_us', float('nan')):7.2f} {target(r['tokens']) * r['triton']:7.2f}{ok}")
    print(f"acceptance (vs Triton 4 warps, H 4096/7168): {sum(verdicts)}/{len(verdicts)} points met")
    dump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
