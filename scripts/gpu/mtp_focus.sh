#!/usr/bin/env bash
# Issue 8 focus run (~3-4 min): the MTP-norm GPU tests, the C-API parity check, then mtp_norm_focus.py (our
# launch variants vs the Triton baseline at the shapes still short of the target). Repository root,
# .gpu-stage carried; details under $OUT. Knobs: FOCUS_ARGS (extra mtp_norm_focus.py arguments).
set -u
. .gpu-stage/env.sh
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LIB=$(cd .gpu-stage/lib && pwd)/libdsv4.so
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/card.txt"
timeout 150 dsv4_gpu_tests --gtest_filter="${FILTER:-*MtpNorm*}" >"$OUT/tests.txt" 2>&1
echo "tests rc=$?"; grep -E "tests ran|PASSED  \]|FAILED" "$OUT/tests.txt" | head -12
grep -E "Failure" -A8 "$OUT/tests.txt" | head -40
timeout 90 python3 tools/reference/check_kernels.py --lib "$LIB" --json "$OUT/check_kernels.json" \
  >"$OUT/check.txt" 2>&1; echo "check rc=$?"; tail -2 "$OUT/check.txt"
timeout "${FOCUS_S:-330}" python3 bench/kernels/mtp_norm_focus.py --lib "$LIB" --json "$OUT/focus.json" \
  ${FOCUS_ARGS:-} >"$OUT/focus.txt" 2>&1
echo "focus rc=$?"
grep -E "^H=" "$OUT/focus.txt"
sed -n '/^summary/,$p' "$OUT/focus.txt"
tail -3 "$OUT/focus.txt" | grep -iE "error|Traceback" && tail -15 "$OUT/focus.txt"
