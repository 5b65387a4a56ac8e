#!/usr/bin/env bash
# First GPU call of the next session: validate and time the two kernels that were written without GPU time
# and are opt-in until then — the small-T GEMV (DSV4_GEMV=1, backend/cuda/gemv.cu) and the split attention
# for any head count (DSV4_SPLIT_ATTENTION=all, backend/cuda/attention_split.cu). Runs the whole GPU suite with
# both on, their sanitizers, and same-card A/B timings (tiny model: attention; Flash slice: GEMV).
# Repository root, .gpu-stage carried. If everything passes and both win, flip their defaults
# (gemv.cu gemv_mode(), attention_split.cu split_attention_supports()). ~6 minutes.
set -u
. .gpu-stage/env.sh
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
DSV4_GEMV=1 DSV4_SPLIT_ATTENTION=all timeout 240 dsv4_gpu_tests > /tmp/suite.txt 2>&1
echo "suite (both on) rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]" /tmp/suite.txt | head -12
grep -E "Failure" -A6 /tmp/suite.txt | head -40; grep -E "FAILED|Failure|tests ran|PASSED" /tmp/suite.txt > $OUT/suite_summary.txt
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for tool in memcheck racecheck; do
  DSV4_GEMV=1 DSV4_SPLIT_ATTENTION=all timeout 90 $SAN --tool $tool --error-exitcode 9 dsv4_gpu_tests \
    --gtest_filter='CudaOps.AttentionSmallHeads:CudaGemv.*-CudaGemv.FlashShapesMatchCpu' > /tmp/$tool.txt 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY" /tmp/$tool.txt | head -2
done
timeout 120 bench_gemv --json $OUT/bench_gemv.json > $OUT/bench_gemv.txt 2>&1; echo "bench_gemv rc=$?"; tail -12 $OUT/bench_gemv.txt
for cfg in "validated 0" "all 0" "all 1"; do
  set -- $cfg
  for m in tiny flash; do
    if [ $m = tiny ]; then a="-m models/dsv4-tiny-kjv --batch 1,16"; else a="--synthetic flash --layers 3 --batch 1,16"; fi
    DSV4_SPLIT_ATTENTION=$1 DSV4_GEMV=$2 timeout 120 dsv4 bench $a --device cuda --modes auto --prefill 128 \
      --context 1024 --decode-steps 32 --reps 5 --spec-tokens 0 --json > $OUT/${m}_$1_$2.json 2>/dev/null
    python3 - "$OUT/${m}_$1_$2.json" "$m split=$1 gemv=$2" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))["runs"][0]
    for d in r["decode"]:
        f = ", %.2fx floor" % (d["device_ms_per_step"] / d["floor_ms"]) if "floor_ms" in d else ""
        print("%s b=%d: %.3f ms/step, device %.3f ms%s" % (sys.argv[2], d["batch"], d["ms_per_step"]["median"],
              d["device_ms_per_step"], f))
except Exception as e:
    print(sys.argv[2], "failed:", e)
PY
  done
done
