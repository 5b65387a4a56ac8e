#!/usr/bin/env bash
# GPU checks of the small-T GEMV of linear / grouped_linear (backend/cuda/gemv.cu): its tests, compute-sanitizer
# on its kernels, the kernel lab (GEMV vs cuBLASLt on Flash's decode shapes against the copy bandwidth), the
# Flash slice decode A/B (DSV4_GEMV=0 = cuBLASLt only, 1 = the default policy, 2 = the GEMV wherever it can) and,
# as a second call, the whole GPU suite. Use it when the GEMV or its policy (gemv.h) changes.
# Repository root, .gpu-stage carried (scripts/gpu/stage.sh; scripts/gpu/run.sh gemv). Details under $OUT.
#   bash scripts/gpu/suites/gemv.sh          GEMV tests, sanitizers, bench_gemv, Flash A/B   (~5 min)
#   bash scripts/gpu/suites/gemv.sh suite    the whole GPU test suite with the GEMV on       (~3 min)
set -u
. "${STAGE:-.gpu-stage}/env.sh"
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
if [ "${1:-}" = suite ]; then  # model parity, graphs, MTP, speculative decoding, with the GEMV dispatched
  DSV4_GEMV=1 timeout 300 dsv4_gpu_tests > $OUT/gpu_tests.txt 2>&1
  echo "gpu tests rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]" $OUT/gpu_tests.txt | head -12
  grep -E "Failure" -A6 $OUT/gpu_tests.txt | head -30
  exit 0
fi
# 1. the GEMV's own tests and the dense op tests (values, determinism, graph replay, fallbacks)
timeout 120 dsv4_gpu_tests --gtest_filter='CudaGemv.*:CudaOps.Linear:CudaOps.GroupedLinear' > $OUT/gemv_tests.txt 2>&1
echo "gemv tests rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]|Failure" -A3 $OUT/gemv_tests.txt | head -30
# 2. kernel lab: GEMV vs cuBLASLt, T = 1, 2, 4, 8
timeout 150 bench_gemv --json $OUT/bench_gemv.json > $OUT/bench_gemv.txt 2>&1; echo "bench_gemv rc=$?"
cat $OUT/bench_gemv.txt
# 3. compute-sanitizer on the GEMV (small shapes; the Flash shapes only add CPU reference time)
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
F='CudaGemv.*-CudaGemv.FlashShapesMatchCpu'
for tool in memcheck racecheck; do
  timeout 60 $SAN --tool $tool --error-exitcode 9 dsv4_gpu_tests --gtest_filter="$F" > $OUT/$tool.txt 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED  \]|FAILED  \]" $OUT/$tool.txt | head -3
done
# 4. Flash slice decode: cuBLASLt (DSV4_GEMV=0), the default policy (1), the GEMV wherever it can (2)
for mode in 0 1 2; do
  DSV4_GEMV=$mode timeout 120 dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto --prefill 128 \
    --batch 1,4 --context 1024 --decode-steps 32 --reps 5 --spec-tokens 0 --json > $OUT/flash_gemv$mode.json \
    2> $OUT/flash_gemv$mode.log
  echo "flash DSV4_GEMV=$mode rc=$?"
  python3 - "$OUT/flash_gemv$mode.json" "$mode" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))["runs"][0]
except Exception as e:
    print("  no result:", e); sys.exit(0)
for d in r["decode"]:
    dev = d.get("device_ms_per_step", 0)
    print("  DSV4_GEMV=%s decode b=%d: %.3f ms/step (device %.3f), floor %.3f ms -> %.2fx (device %.2fx)" % (
        sys.argv[2], d["batch"], d["ms_per_step"]["median"], dev, d["floor_ms"], d["measured_over_floor"],
        dev / d["floor_ms"]))
PY
done
