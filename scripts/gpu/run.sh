#!/usr/bin/env bash
# The GPU runner: named suites over a staged build (scripts/gpu/stage.sh), one call, logs and JSON under $OUT.
#   cd STAGE && tar xJf stage.tar.xz && bash scripts/gpu/run.sh SUITE[,SUITE...]
# Suites:
#   tests       the whole GPU test suite (dsv4_gpu_tests)
#   rms_norm    the RMSNorm family: its GPU tests, C-API parity (check_kernels.py) and the peer timing
#               (bench/kernels/rms_norm/peers.py; PEERS_ARGS adds arguments, e.g. "--sweep ''" for no sweep)
#   bench       the opt-in CUDA benchmark test (CudaBench)
#   cli         info / generate on the test fixture, CUDA and CPU
#   san         compute-sanitizer memcheck on the op, model, engine and scheduler tests and on whole generate runs
#               (speculative; batched sampled), racecheck on the op tests (attention, indexer, MoE, sampling)
#   attention   the attention lab (bench/kernels/attention: bench_attention at the Flash prefill shapes, ATTN_T tokens,
#               default 4,096) with the 64-head prefill kernel, then with DSV4_PREFILL_ATTENTION=0 (the split kernel)
#   runtime_v2  scripts/gpu/runtime_v2.sh (the runtime issue's measurements; PHASES selects its parts)
#   profile, gemv, quant, checkpoints, hf_compare, flash, longctx, spec, fp8kv, serve, ab, ncu, acceptance
#               scripts/gpu/suites/NAME.sh (their headers say what they measure and which variables they take), run
#               from the checkout with the stage's programs; ab times the decode step of several libdsv4.so builds in
#               alternation (thin stages of scripts/gpu/stage-lib.sh)
# Fixtures and models come from DSV4_SOURCE_DIR (default: the checkout the call runs in, the stage's parent).
# DSV4_LIB=DIR runs every suite on DIR/libdsv4.so (a candidate's thin stage) instead of the stage's (env.sh).
# Prints a short summary last; every log is also in $OUT/logs.tgz.
set -u
STAGE=$(cd "$(dirname "$0")/../.." && pwd)
. "$STAGE/env.sh"
export DSV4_SOURCE_DIR=${DSV4_SOURCE_DIR:-$(cd "$STAGE/.." && pwd)} PYTHONUNBUFFERED=1
FINAL=${OUT:-$STAGE/out}
LOGS=$(mktemp -d)
mkdir -p "$FINAL"
suites=",${1:-tests},"
has() { [[ $suites == *",$1,"* ]]; }
summary() { echo "$*" | tee -a "$LOGS/summary.txt"; }
step() {  # step NAME SECONDS CMD...: runs with a time limit, log in $LOGS/NAME.log
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  summary "== $name: rc=$rc in $((SECONDS - t0)) s"
  return $rc
}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used,memory.total --format=csv \
  >"$LOGS/card.csv" 2>&1
summary "card: $(tail -1 "$LOGS/card.csv")"
cd "$STAGE"
if has tests; then
  step gpu_tests "${TESTS_S:-300}" dsv4_gpu_tests ${TESTS_FILTER:+--gtest_filter=$TESTS_FILTER}
  summary "$(grep -E "tests? ran|^\[  PASSED|^\[  FAILED" "$LOGS/gpu_tests.log" | head -20)"
fi
if has rms_norm; then
  step rms_norm_tests "${RMS_TESTS_S:-90}" dsv4_gpu_tests --gtest_filter='*MtpNorm*:*RmsNorm*'
  summary "$(grep -E "tests? ran|^\[  PASSED|^\[  FAILED" "$LOGS/rms_norm_tests.log" | head -8)"
  step check_kernels "${CHECK_S:-90}" python3 tools/reference/check_kernels.py --lib "$STAGE/lib/libdsv4.so" \
    --json "$LOGS/check_kernels.json"
  summary "$(tail -2 "$LOGS/check_kernels.log")"
  step peers "${PEERS_S:-240}" python3 bench/kernels/rms_norm/peers.py --lib "$STAGE/lib/libdsv4.so" --no-compile \
    ${PEERS_ARGS:-} --json "$LOGS/peers.json"
  sed -n '/^fused MTP input/,$p' "$LOGS/peers.log" | tee -a "$LOGS/summary.txt"
  python3 - "$LOGS/peers.json" <<'PY' | tee -a "$LOGS/summary.txt"
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"no peers JSON: {e}")
for r in d["results"]:
    if "sweep" in r:
        top = sorted(r["sweep"], key=lambda s: s["us"])[:4]
        print(f"H={r['hidden']} T={r['tokens']}: ours {r['ours']:.2f} [{r['ours_launch']}], triton {r['triton']:.2f}; "
              + "; ".join(f"{s['us']:.2f} {s['launch']}" for s in top))
PY
fi
if has bench; then
  DSV4_BENCH=1 step cuda_bench 120 dsv4_gpu_tests --gtest_filter='CudaBench.*'
  summary "$(grep -E "bench model|prefill chunk|decode batch|FAILED|Failure" "$LOGS/cuda_bench.log")"
fi
if has cli; then
  fx=$DSV4_SOURCE_DIR/tests/fixtures/hf/tiny_a
  step cli_cuda 60 dsv4 generate -m "$fx" --ids 5,6,7,8,9 -n 16 --device cuda --ignore-eos
  step cli_cpu 60 dsv4 generate -m "$fx" --ids 5,6,7,8,9 -n 16 --device cpu --ignore-eos
  summary "cuda: $(tail -1 "$LOGS/cli_cuda.log")"
  summary "cpu:  $(tail -1 "$LOGS/cli_cpu.log")"
fi
if has san; then  # SAN_PARTS (default all; each part up to ~5-7 min, so split them over calls): tests,generate,racecheck
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  part() { [[ ",${SAN_PARTS:-tests,generate,racecheck}," == *",$1,"* ]]; }
  part tests && step memcheck 200 "$SAN" --tool memcheck --error-exitcode 9 dsv4_gpu_tests \
    --gtest_filter='CudaOps.*:*CudaModelParity*:CudaEngine.*:CudaScheduler.ContinuousBatching*:CudaScheduler.Preemption*:CudaMtp.*:*MtpNorm*:CudaSampleTokens.NonFinite*'
  # Whole runs of the CLI (issue 21): a generation with speculative decoding and a batched sampled one, each with
  # its CUDA graphs captured and replayed.
  fx=$DSV4_SOURCE_DIR/models/dsv4-tiny-kjv
  printf '%s\n' "In the beginning" "And God said" "The LORD is my shepherd" "Blessed are the" >"$LOGS/prompts.txt"
  part generate && step memcheck_spec 200 "$SAN" --tool memcheck --error-exitcode 9 dsv4 generate -m "$fx" --device cuda \
    --prompt "In the beginning God created" -n 48 --spec-tokens 2 --ignore-eos
  part generate && step memcheck_sampled 200 "$SAN" --tool memcheck --error-exitcode 9 dsv4 generate -m "$fx" --device cuda \
    --prompts "$LOGS/prompts.txt" -n 32 --temperature 0.8 --top-p 0.9 --seed 7 --ignore-eos
  # Racecheck is slow: the sampling kernel first, then the ops (the whole CudaOps.MoeExperts list does not finish in
  # 300 s, its small shapes do; the MTP drafter test took all 300 s without finishing on 2026-12-04: run those with
  # RACECHECK_SLOW=1).
  part racecheck && step racecheck_sampling 120 "$SAN" --tool racecheck --error-exitcode 9 dsv4_gpu_tests \
    --gtest_filter='CudaSampleTokens.GreedyIsHostArgmax:CudaSampleTokens.DrawsMatchTheCpuReference:CudaSampleTokens.NonFiniteRowsAreFlaggedLikeTheCpu'
  part racecheck && step racecheck 300 "$SAN" --tool racecheck --error-exitcode 9 dsv4_gpu_tests \
    --gtest_filter='CudaOps.*:*EachBlock*:*GraphReplay*/2-CudaOps.MoeExperts'
  [ -n "${RACECHECK_SLOW:-}" ] && step racecheck_slow 500 "$SAN" --tool racecheck --error-exitcode 9 dsv4_gpu_tests \
    --gtest_filter='CudaOps.MoeExperts:CudaMtp.Drafter*'
  summary "$(grep -E "^\[       OK|Race|hazard" "$LOGS"/racecheck*.log 2>/dev/null | sed 's/ (.*//' | tr '\n' ' ')"
  summary "$(grep -H "ERROR SUMMARY" "$LOGS"/memcheck*.log "$LOGS"/racecheck*.log 2>/dev/null | sed "s|$LOGS/||")"
fi
if has attention; then  # the attention lab at the Flash prefill shapes: the 64-head kernel, then the split kernel
  step attention_lab "${ATTN_S:-120}" bench_attention "${ATTN_T:-4096}" --json "$LOGS/attention_lab.json"
  summary "$(tail -4 "$LOGS/attention_lab.log")"
  DSV4_PREFILL_ATTENTION=0 step attention_lab_split "${ATTN_S:-120}" bench_attention "${ATTN_T:-4096}" \
    --json "$LOGS/attention_lab_split.json"
  summary "$(tail -4 "$LOGS/attention_lab_split.log")"
fi
if has runtime_v2; then
  (cd "$DSV4_SOURCE_DIR" && STAGE_DIR=$STAGE OUT=$LOGS/runtime_v2 bash "$STAGE/scripts/gpu/runtime_v2.sh") \
    >"$LOGS/runtime_v2.log" 2>&1
  summary "$(sed -n '/== summary/,$p' "$LOGS/runtime_v2.log")"
fi
for suite in profile gemv quant checkpoints hf_compare flash longctx spec fp8kv serve ab ncu acceptance; do
  if has $suite; then
    (cd "$DSV4_SOURCE_DIR" && STAGE=$STAGE OUT=$LOGS/$suite bash "$STAGE/scripts/gpu/suites/$suite.sh") \
      >"$LOGS/$suite.log" 2>&1
    summary "== $suite: rc=$?"
    summary "$(tail -25 "$LOGS/$suite.log")"
  fi
done
cp "$LOGS"/*.json "$FINAL/" 2>/dev/null
tar -czf "$FINAL/logs.tgz" -C "$LOGS" .
echo "---- summary"
cat "$LOGS/summary.txt"
