#!/usr/bin/env python3
"""CPU check of scripts/gpu/suites/ncu_table.py (the table of the GPU runner's `ncu` suite) on synthetic ncu CSVs:
messages before the header and the units row skipped, medians per kernel, sectors per request, numbers with
thousands separators, two libraries side by side, a library without rows and a missing file."""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "gpu", "suites", "ncu_table.py")
METRICS = ["gpu__time_duration.sum", "dram__bytes_read.sum", "dram__throughput.avg.pct_of_peak_sustained_elapsed",
           "sm__warps_active.avg.pct_of_peak_sustained_active", "lts__t_requests_srcunit_tex_op_read.sum",
           "lts__t_sectors_srcunit_tex_op_read.sum",
           "smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct",
           "smsp__warp_issue_stalled_lg_throttle_per_warp_active.pct",
           "smsp__warp_issue_stalled_mio_throttle_per_warp_active.pct",
           "smsp__warp_issue_stalled_barrier_per_warp_active.pct",
           "smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct"]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def csv_text(rows):
    head = ['"ID"', '"Kernel Name"'] + [f'"{m}"' for m in METRICS]
    units = ['""', '""', '"nsecond"', '"byte"'] + ['""'] * (len(METRICS) - 2)
    lines = ["==PROF== Connected to process 1", ",".join(head), ",".join(units)]
    for i, (kernel, values) in enumerate(rows):
        lines.append(",".join([f'"{i}"', f'"{kernel}"'] + [f'"{v}"' for v in values]))
    return "\n".join(lines) + "\n"


def values(us, requests, sectors):
    return [us * 1000, "50,000,000", 70, 40, requests, sectors, 60, 1, 2, 3, 4]


moe = "void dsv4::cuda::(anonymous namespace)::moe_decode_quant_kernel<true, 1, __nv_bfloat16>(a, b)"
gemv = "void dsv4::cuda::(anonymous namespace)::quant_gemv_kernel<(dsv4::WeightFormat)1, 1>(p)"
with tempfile.TemporaryDirectory() as tmp:
    with open(os.path.join(tmp, "new.csv"), "w") as f:
        f.write(csv_text([(moe, values(30, 1000, 4000)), (moe, values(32, 1000, 4000)), (moe, values(31, 2000, 4000)),
                          (gemv, values(10, 500, 2000))]))
    with open(os.path.join(tmp, "old.csv"), "w") as f:
        f.write(csv_text([(moe, values(40, 1000, 2000))]))
    with open(os.path.join(tmp, "empty.csv"), "w") as f:
        f.write("==ERROR== the profiler could not be initialised\n")
    r = subprocess.run([sys.executable, SCRIPT, tmp, "new", "old", "empty", "gone"], capture_output=True, text=True)
    check(r.returncode == 0, f"rc {r.returncode}: {r.stderr}")
    lines = r.stdout.splitlines()
    print(r.stdout)
    check(lines and lines[0].split()[:2] == ["lib", "kernel"], "header")
    new_moe = [l for l in lines if l.startswith("new") and "moe_decode_quant_kernel" in l]
    check(len(new_moe) == 1, "one row for the three launches of one kernel")
    if new_moe:
        cells = new_moe[0].split()[-11:]
        check(cells[0] == "31.00", f"median time {cells[0]}")
        check(cells[1] == "50.00", f"MB with thousands separators {cells[1]}")
        check(cells[4] == "1.00", f"median requests (k) {cells[4]}")
        check(cells[5] == "4.00", f"median sectors per request {cells[5]}")
    check(any(l.startswith("new") and "quant_gemv_kernel" in l for l in lines), "second kernel of a library")
    old = [l for l in lines if l.startswith("old")]
    check(len(old) == 1 and old[0].split()[-11] == "40.00", "second library")
    check(any(l.startswith("empty: no ncu rows") for l in lines), "a library without rows is named")
    check(any(l.startswith("gone: no ncu output") for l in lines), "a missing file is named")
    r = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True)
    check(r.returncode == 2, "usage without arguments")

if failures:
    print(f"{len(failures)} check(s) failed")
    sys.exit(1)
print("ncu_table: all checks passed")
