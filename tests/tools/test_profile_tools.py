#!/usr/bin/env python3
"""CPU checks of the profiling summarisers on small synthetic inputs (their real inputs come from the GPU machine):
tools/profile/kernel_timeline.py (CUPTI trace -> per-family critical-path increments) and ncu_summary.py (ncu CSV
-> durations, DRAM bytes and the excess over bytes / bandwidth)."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools", "profile")
sys.path.insert(0, TOOLS)
import kernel_timeline  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(TOOLS, script), *args], capture_output=True, text=True)


# Mangled names as CUPTI reports them, and plain ones.
check(kernel_timeline.family("_ZN4dsv44cuda39_GLOBAL__N__0ba57074_7_gemv_cu_6ad7fd6311gemv_kernelILi1EEEvNS1_10GemvParamsE")
      == "gemv_kernel", "unmangle a nested kernel name")
check(kernel_timeline.family("nvjet_sm90_tss_384x8_64x4_2x1_v_bz_TNT") == "nvjet_sm90_tss_384x8_64x4_2x1_v_bz_TNT",
      "plain names unchanged")
check(kernel_timeline.family("void dsv4::(anonymous namespace)::rms_norm_kernel<8>(float*)") == "rms_norm_kernel",
      "demangled names reduced to the function")

with tempfile.TemporaryDirectory() as tmp:
    # Three steps: embedding 0-2 us; gemv starts early (PDL) at 1 us and ends at 12; rms_norm 12.5-14; a second gemv
    # phase step has a long merge so --where can pick it.
    header = "start_ns,end_ns,stream,graph,node,correlation,grid_x,grid_y,grid_z,block_x,name\n"
    rows = []
    t0 = 0
    for step in range(3):
        merge = 30000 if step == 2 else 1000
        rows += [(t0, t0 + 2000, "_ZN4dsv44cuda12_GLOBAL__N_116embedding_kernelEv", 1),
                 (t0 + 1000, t0 + 12000, "gemv_kernel", 1),
                 (t0 + 12500, t0 + 14000, "rms_norm_kernel", 1),
                 # the merge launched outside any graph (graph id 0), as an eager kernel, from step 1 on
                 (t0 + 14000, t0 + 14000 + merge, "indexer_merge_kernel", 0 if step > 0 else 1)]
        t0 += 20000 + merge
    rows.append((t0, t0 + 2000, "_ZN4dsv44cuda12_GLOBAL__N_116embedding_kernelEv", 1))
    trace = os.path.join(tmp, "trace.csv")
    with open(trace, "w") as f:
        f.write(header)
        for s, e, name, graph in rows:
            f.write(f'{s},{e},7,{graph},0,0,1,1,1,256,"{name}"\n')
    out_json = os.path.join(tmp, "timeline.json")
    r = run("kernel_timeline.py", trace, "--steps", "2", "--where", "indexer_merge_kernel>10", "--json", out_json)
    check(r.returncode == 0, f"kernel_timeline.py ran: {r.stderr}")
    if r.returncode == 0:
        d = json.load(open(out_json))
        fam = {x["name"]: x for x in d["families"]}
        check(d["steps"] == 1, "--where keeps only the long-merge step")
        check(abs(d["step_us"] - 50.0) < 1e-6, f"step time first start to next first start (got {d['step_us']})")
        # Increments: embedding 2 us (from the step's start), gemv 12 - 2 = 10, rms 14 - 12 = 2, merge 30.
        check(abs(fam["embedding_kernel"]["increment_us"] - 2.0) < 1e-6, "embedding increment")
        check(abs(fam["gemv_kernel"]["increment_us"] - 10.0) < 1e-6, "a PDL-early kernel counts from the last end")
        check(abs(fam["gemv_kernel"]["duration_us"] - 11.0) < 1e-6, "its duration includes the early start")
        check(abs(fam["rms_norm_kernel"]["increment_us"] - 2.0) < 1e-6, "a gap before a kernel counts as its time")
        check(abs(fam["indexer_merge_kernel"]["increment_us"] - 30.0) < 1e-6, "merge increment")
        # Idle: 0.5 us before rms_norm, 6 us after the merge before the next step's embedding.
        check(abs(d["idle_us"] - 6.5) < 1e-6, f"idle time inside the step and before the next (got {d['idle_us']})")
        check(d["eager_launches"] == 1 and abs(d["eager_increment_us"] - 30.0) < 1e-6,
              f"launches outside graphs and their increments (got {d['eager_launches']}, {d['eager_increment_us']})")
    r = run("kernel_timeline.py", trace, "--steps", "1", "--launches")
    check(r.returncode == 0 and "e indexer_merge_kernel" in r.stdout and "idle (no kernel running): 6.5 us" in r.stdout,
          f"--launches marks the eager launch and the summary prints the idle time: {r.stdout}")
    for eager, steps in ((0, 1), (1, 2)):
        r = run("kernel_timeline.py", trace, "--eager", str(eager), "--json", out_json)
        check(r.returncode == 0 and json.load(open(out_json))["steps"] == steps,
              f"--eager {eager} keeps the {steps} step(s) with {eager} launches outside graphs: {r.stderr}")
    r = run("kernel_timeline.py", trace, "--eager", "3")
    check(r.returncode != 0 and "no step" in (r.stderr + r.stdout), "an unmatched --eager is an error")
    r = run("kernel_timeline.py", trace, "--where", "indexer_merge_kernel>100")
    check(r.returncode != 0 and "no step" in (r.stderr + r.stdout), "an unmatched --where is an error")

    # ncu raw CSV with base units: a 3 MB kernel at 3000 GB/s is 1 us of bytes.
    ncu = os.path.join(tmp, "ncu.csv")
    with open(ncu, "w") as f:
        f.write('"ID","Kernel Name","dram__bytes_read.sum","dram__bytes_write.sum","gpu__time_duration.sum"\n')
        f.write('"","","byte","byte","nsecond"\n')
        f.write('"0","gemv_kernel(float)","3000000","0","1100"\n')
        f.write('"1","rms_norm_kernel<8>(x)","16000","16000","2500"\n')
    ncu_json = os.path.join(tmp, "ncu.json")
    r = run("ncu_summary.py", ncu, "--bandwidth", "3000", "--json", ncu_json)
    check(r.returncode == 0, f"ncu_summary.py ran: {r.stderr}")
    if r.returncode == 0:
        d = json.load(open(ncu_json))
        fam = {x["name"]: x for x in d["families"]}
        check(d["kernels"] == 2 and abs(d["sum_us"] - 3.6) < 1e-9, "kernel count and duration sum")
        check(fam["gemv_kernel"]["dram_bytes"] == 3000000, "DRAM bytes per family")
        check("excess over it 2.6 us" in r.stdout, f"excess over bytes / bandwidth printed: {r.stdout}")

print("profile tools:", "FAILED " + ", ".join(failures) if failures else "ok")
sys.exit(1 if failures else 0)
