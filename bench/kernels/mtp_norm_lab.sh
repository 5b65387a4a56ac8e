#!/bin/bash
# One-shot GPU session for the MTP norm kernels: GPU tests, C-API parity check, C++ kernel lab (with the
# launch-variant sweep, then PDL on), then the peer comparison (Triton / eager / torch.compile).
#
#   bench/kernels/mtp_norm_lab.sh STAGE_DIR OUT_DIR
#
# STAGE_DIR holds libdsv4.so, dsv4_gpu_tests, bench_mtp_norm and the tree's tools/reference/*.py and
# bench/kernels/*.py (a build dir plus the sources work too). Every step has its own time limit so the
# summary and the logs survive a slow step; logs and JSON land in OUT_DIR/lab.tgz.
set -u
STAGE=$(cd "$1" && pwd)
OUT_DIR=$2
LOGS=$(mktemp -d)
export LD_LIBRARY_PATH="$STAGE${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYTHONUNBUFFERED=1
cd "$STAGE" || exit 1
step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOGS/summary.txt"
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,power.draw \
  --format=csv >"$LOGS/nvidia-smi.csv" 2>&1
step gpu_tests "${LAB_TESTS_S:-70}" ./dsv4_gpu_tests --gtest_filter='*MtpNorm*:CudaDevice*'
step check_kernels "${LAB_CHECK_S:-50}" python3 tools/reference/check_kernels.py --lib "$STAGE/libdsv4.so" \
  --json "$LOGS/check_kernels.json"
step bench_sweep "${LAB_SWEEP_S:-80}" ./bench_mtp_norm ${LAB_SWEEP_FLAG---sweep} --json "$LOGS/bench.json"
step bench_pdl "${LAB_PDL_S:-25}" env DSV4_PDL=1 ./bench_mtp_norm --json "$LOGS/bench_pdl.json"
step peers "${LAB_PEERS_S:-200}" python3 bench/kernels/mtp_norm_peers.py --lib "$STAGE/libdsv4.so" \
  --json "$LOGS/peers.json"
# Kernel-only durations at small T (Nsight Compute, clocks left alone); skipped when ncu is absent.
if command -v ncu >/dev/null; then
  step ncu "${LAB_NCU_S:-90}" ncu --clock-control none -k regex:mtp --metrics gpu__time_duration.sum \
    python3 bench/kernels/mtp_norm_ncu.py --lib "$STAGE/libdsv4.so"
fi
cp "$LOGS/peers.log" "$LOGS/bench_sweep.log" "$OUT_DIR/" 2>/dev/null
tar -czf "$OUT_DIR/lab.tgz" -C "$LOGS" .
echo "---- gpu tests";  grep -E "^\[  (PASSED|FAILED)|tests? ran|FAILED" "$LOGS/gpu_tests.log" | head -20
echo "---- check";      tail -3 "$LOGS/check_kernels.log"
echo "---- bench (PDL off, sweep)"; cat "$LOGS/bench_sweep.log"
echo "---- bench (PDL on)"; tail -27 "$LOGS/bench_pdl.log"
echo "---- peers";      sed -n '/^fused MTP input/,$p' "$LOGS/peers.log"; tail -3 "$LOGS/peers.log"
echo "---- ncu"; [ -f "$LOGS/ncu.log" ] && python3 bench/kernels/mtp_norm_ncu.py --summarize "$LOGS/ncu.log"
cat "$LOGS/summary.txt"
