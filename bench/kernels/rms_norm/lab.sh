#!/bin/bash
# One-shot GPU session for the MTP norm kernels: GPU tests, C-API parity check, C++ kernel lab (with the
# launch-variant sweep; PDL is on by default, then an A/B run with DSV4_PDL=0), then the peer comparison
# (Triton / eager / torch.compile / copy roofline) and ours alone with DSV4_PDL=0.
#
# Knobs (environment): LAB_BENCH_ARGS (extra bench_rms_norm arguments, e.g. "--hidden 4096,7168"),
# LAB_PEERS_ARGS (extra peers.py arguments, e.g. "--no-compile"), LAB_*_S (step time limits).
#
#   bench/kernels/rms_norm/lab.sh STAGE_DIR OUT_DIR
#
# STAGE_DIR holds libdsv4.so, dsv4_gpu_tests, bench_rms_norm and the tree's tools/reference/*.py and
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
step bench_sweep "${LAB_SWEEP_S:-80}" ./bench_rms_norm ${LAB_SWEEP_FLAG---sweep} ${LAB_BENCH_ARGS:-} \
  --json "$LOGS/bench.json"
step bench_nopdl "${LAB_PDL_S:-25}" env DSV4_PDL=0 ./bench_rms_norm ${LAB_BENCH_ARGS:-} \
  --json "$LOGS/bench_nopdl.json"
step peers "${LAB_PEERS_S:-200}" python3 bench/kernels/rms_norm/peers.py --lib "$STAGE/libdsv4.so" \
  ${LAB_PEERS_ARGS:-} --json "$LOGS/peers.json"
step peers_nopdl "${LAB_PEERS_NOPDL_S:-60}" env DSV4_PDL=0 python3 bench/kernels/rms_norm/peers.py \
  --lib "$STAGE/libdsv4.so" ${LAB_PEERS_ARGS:-} --only-ours --json "$LOGS/peers_nopdl.json"
# Kernel-only durations at small T (Nsight Compute, clocks left alone); skipped when ncu is absent or
# LAB_NCU_S=0.
if [ "${LAB_NCU_S:-90}" != 0 ] && command -v ncu >/dev/null; then
  step ncu "${LAB_NCU_S:-90}" ncu --clock-control none -k regex:rms_norm --metrics gpu__time_duration.sum \
    python3 bench/kernels/rms_norm/ncu.py --lib "$STAGE/libdsv4.so"
fi
cp "$LOGS/peers.log" "$LOGS/peers_nopdl.log" "$LOGS/bench_sweep.log" "$OUT_DIR/" 2>/dev/null
tar -czf "$OUT_DIR/lab.tgz" -C "$LOGS" .
echo "---- gpu tests";  grep -E "^\[  (PASSED|FAILED)|tests? ran|FAILED" "$LOGS/gpu_tests.log" | head -20
echo "---- check";      tail -3 "$LOGS/check_kernels.log"
echo "---- bench (default: PDL on, sweep)"; grep -v "^wrote" "$LOGS/bench_sweep.log"
echo "---- bench (DSV4_PDL=0)"; grep -v "^wrote" "$LOGS/bench_nopdl.log" | tail -27
echo "---- peers";      grep -E "^(copy|device|DSV4_PDL)" "$LOGS/peers.log"; sed -n '/^fused MTP input/,$p' "$LOGS/peers.log"
tail -3 "$LOGS/peers.log"
echo "---- peers, ours with DSV4_PDL=0"; grep -E "^(H=|DSV4_PDL)" "$LOGS/peers_nopdl.log"; tail -2 "$LOGS/peers_nopdl.log"
echo "---- ncu"; [ -f "$LOGS/ncu.log" ] && python3 bench/kernels/rms_norm/ncu.py --summarize "$LOGS/ncu.log"
cat "$LOGS/summary.txt"
