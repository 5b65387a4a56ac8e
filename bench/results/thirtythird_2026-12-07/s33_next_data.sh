#!/bin/bash
# Data for the next session, after s33_next.sh has landed (not run in session 33: no device time left). `git apply
# bench/results/thirtythird_2026-12-07/ablations_moe_fp8_lab.patch` (a template flag of the E4M3 MoE kernel and lab
# variants: timing only, never land it), build, `STAGE_LEAN=1 scripts/gpu/stage.sh build .gpu-Z`, run with carry
# [".gpu-Z"], then revert the patch:
# 1. bench_moe_gemm fp8 with ablations (no FP4 expansion / no promotion / no A copies / consumers not waiting for
#    `full`): which part of a stage bounds the kernel;
# 2. on an H200, for issue 20's rms_norm launch rule: every launch variant of the fused MTP input norm against the
#    published Triton kernel at H = 4096, T = 128-768 (call 5 on an H200: ours 1.08x / 1.02x / 1.04x Triton's at
#    T = 256 / 320 / 512 with the late bulk instance). Carry [".gpu-Z"].
set -u
. scripts/gpu/call_prologue.sh
timeout 60 bench_moe_gemm fp8 > $D/abl.txt 2>&1; el "fp8 ablations rc=$?"; grep -E "ms|error" $D/abl.txt | grep -v both | head -30
pack
[[ $CARD == *H200* ]] || exit 0
timeout 100 python3 bench/kernels/rms_norm/peers.py --lib $S/lib/libdsv4.so --no-compile --hidden 4096 \
  --tokens 128,192,256,320,384,512,768 --sweep 4096 --sweep-tokens 128,192,256,320,384,512,768 --rep 5 \
  --json $D/sweep.json > $D/sweep.log 2>&1
el "sweep rc=$?"
python3 - $D/sweep.json <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(j["device"])
for r in j["results"]:
    top = sorted(r.get("sweep", []), key=lambda x: x["us"])[:4]
    print(r["hidden"], r["tokens"], "ours %.2f [%s] triton %.2f best-triton %.2f" % (r["ours"], r["ours_launch"], r["triton"], r["triton_best"]))
    for t in top: print("    %.2f %s" % (t["us"], t["launch"]))
PY
