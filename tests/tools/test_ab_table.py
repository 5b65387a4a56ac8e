#!/usr/bin/env python3
"""CPU check of scripts/gpu/suites/ab_table.py (the table of the GPU runner's `ab` suite) on synthetic `dsv4 bench
--json` files: context rows (with their pipelined steps) and batch rows, medians over rounds, ratios to the first library, a missing floor, a
library without runs and an unreadable file."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "gpu", "suites", "ab_table.py")
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def bench_json(ctx_ms, batch_ms, floor=0.5):
    return {"runs": [{
        "context_decode": [{"context": 1024, "device_ms_per_step": ctx_ms, "floor_ms": floor,
                            "sampled_ms_per_step": {"median": ctx_ms + 0.01},
                            "pipelined_ms_per_step": {"median": ctx_ms + 0.005}}],
        "decode": [{"batch": 16, "ms_per_step": {"median": batch_ms + 0.1, "min": 0, "max": 0},
                    "device_ms_per_step": batch_ms},
                   {"batch": 4, "ms_per_step": {"median": batch_ms / 2, "min": 0, "max": 0}}],  # no device step
    }]}


with tempfile.TemporaryDirectory() as tmp:
    runs = {("new", 1): (1.0, 2.0), ("new", 2): (1.2, 2.2), ("new", 3): (1.1, 2.1),
            ("old", 1): (2.0, 4.0), ("old", 2): (2.2, 4.4), ("old", 3): (2.1, 4.2)}
    for (name, rnd), (c, b) in runs.items():
        with open(os.path.join(tmp, f"{name}__q__{rnd}.json"), "w") as f:
            json.dump(bench_json(c, b), f)
    with open(os.path.join(tmp, "old__broken__1.json"), "w") as f:
        f.write("{not json")
    out_json = os.path.join(tmp, "ab.json")
    p = subprocess.run([sys.executable, SCRIPT, tmp, "new", "old", "gone", "--json", out_json],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"exit 0 (got {p.returncode}: {p.stderr})")
    text = p.stdout
    check("q, context 1024: device ms/step" in text, "a context row")
    check("q, batch 4:" in text and "q, batch 16:" in text, "batch rows")
    check(text.index("context 1024") < text.index("batch 4") < text.index("batch 16"),
          "contexts first, then batches in numeric order")
    check("new          1.000 1.200 1.100 | 1.100 | 2.20x | 1.000 | 1.110 | 1.105" in text,
          "rounds in order, median, / floor, ratio 1, the sampled (wall) and the pipelined medians")
    check("old          2.000 2.200 2.100 | 2.100 | 4.20x | 1.909 | 2.110 | 2.105" in text,
          "the second library's ratio to the first")
    check("new          2.000 2.200 2.100 | 2.100 | n/a | 1.000 | 2.200" in text, "batch 16: the wall median beside the device")
    check("gone         no runs" in text, "a library without runs")
    check("| n/a |" in text, "a batch row without a floor")
    check("broken" in p.stderr, "an unreadable file named on stderr")
    rows = json.load(open(out_json))
    b16 = [r for r in rows if r.get("batch") == 16 and r["lib"] == "old"]
    check(len(b16) == 1 and b16[0]["median_device_ms"] == 4.2, "JSON: batch 16 median of the device steps")
    check(len(b16) == 1 and abs(b16[0]["median_wall_ms"] - 4.3) < 1e-9, "JSON: batch 16 median of the wall steps")
    check(any(r.get("context") == 1024 and r["lib"] == "new" and r["floor_ms"] == 0.5 for r in rows),
          "JSON: context row with its floor")
    check(any(r.get("context") == 1024 and r["lib"] == "new" and abs(r["median_pipelined_ms"] - 1.105) < 1e-9
              for r in rows), "JSON: context row with its pipelined median")
    check(all(r["median_pipelined_ms"] is None for r in rows if "batch" in r), "JSON: batch rows have no pipelined")
    p = subprocess.run([sys.executable, SCRIPT, tmp, "nobody"], capture_output=True, text=True)
    check(p.returncode == 1, "exit 1 when no library has runs")

print(f"{'FAILED' if failures else 'passed'}: ab_table ({len(failures)} failures)")
sys.exit(1 if failures else 0)
