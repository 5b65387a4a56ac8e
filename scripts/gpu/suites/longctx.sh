#!/usr/bin/env bash
# One GPU call for the long-context issue (indexer, sparse attention, long contexts): the indexer's GPU-vs-CPU
# tests, compute-sanitizer memcheck + racecheck on them, decode at long contexts, long prefills. A suite of
# scripts/gpu/run.sh (run from the repository root with the staged build in STAGE, default .gpu-stage).
#   PHASES: comma list of tests,prefill1m,memcheck,contexts,kernels,prefill,racecheck (default: all but prefill1m)
#   kernels: ncu (real clocks) of every indexer and split-attention launch of an eager decode run at NCU_CONTEXT
#            (default 32768); the summary's "longer than 8 us" lines are the long-context launches (the run's
#            short-context phase has idle splits of ~4 us)
#   source (opt-in): ncu SourceCounters (per-SASS-instruction stall samples, tools/profile/sass_stalls.py) of the
#            SOURCE_KERNELS launches (default: the indexer's) of one decode step at NCU_CONTEXT, the step picked by
#            DSV4_PROFILE_DECODE=PROFILE_STEP (default 16: the bench's batch phase runs ~9-12 uniform decode forwards
#            first, the context phase 12 with these settings); stage a -lineinfo build to map lines to source.
#            Picking launches by index or duration instead caught the bench's T = 128 prefill (grid (1, 128)).
set -u
. "${STAGE:-.gpu-stage}/env.sh"
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
export DSV4_SOURCE_DIR=${DSV4_SOURCE_DIR:-$PWD} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PHASES=${PHASES:-tests,memcheck,racecheck,contexts,kernels,prefill}
has() { [[ ",$PHASES," == *",$1,"* ]]; }
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
IDX='CudaOps.IndexerTopk*'
if has tests; then
  timeout ${TESTS_TIMEOUT:-200} dsv4_gpu_tests --gtest_filter="${TESTS_FILTER:-$IDX}" > $OUT/gpu_tests.txt 2>&1
  echo "gpu tests rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]|near-tie" $OUT/gpu_tests.txt | head -30
  grep -E "Failure|error:" -A5 $OUT/gpu_tests.txt | head -30
fi
if has prefill1m; then
  timeout ${PREFILL1M_TIMEOUT:-300} dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto \
    --prefill 1048576 --batch 1 --decode-steps 2 --reps 1 --warmup 0 --spec-tokens 0 --max-model-len 1048584 \
    --kv-cache-memory ${KV1M:-16000000000} --json > $OUT/prefill_1048576.json 2>$OUT/prefill_1048576.log
  echo "prefill 1048576 rc=$?"; grep -E "error" $OUT/prefill_1048576.log | head -3
fi
if has memcheck; then
  timeout ${SAN_TIMEOUT:-150} $SAN --tool memcheck --error-exitcode 99 dsv4_gpu_tests --gtest_filter="$IDX" > $OUT/memcheck.txt 2>&1
  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|PASSED  \]|FAILED  \]" $OUT/memcheck.txt | head -5
fi
if has contexts; then  # decode b=1 at long contexts (random state) against weights + state floor
  timeout ${CTX_TIMEOUT:-200} dsv4 bench --synthetic flash --layers 3 --device cuda --modes ${CTX_MODES:-auto,none} \
    --prefill 128 --batch 1 --contexts ${CONTEXTS:-1024,32768,131072,1048568} --decode-steps 8 --reps 3 --warmup 1 --spec-tokens 0 \
    --kv-cache-memory 16000000000 --json > $OUT/contexts.json 2>$OUT/contexts.log
  echo "contexts bench rc=$?"; grep -E "error" $OUT/contexts.log | head -3
fi
if has kernels; then
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  timeout ${NCU_TIMEOUT:-120} $NCU --clock-control none --kernel-name regex:'indexer|split_attention' \
    --metrics gpu__time_duration.sum --csv --page raw --print-units base \
    dsv4 bench --synthetic flash --layers 3 --device cuda --modes none --prefill 128 --batch 1 \
    --contexts ${NCU_CONTEXT:-32768} --decode-steps 4 --reps 2 --warmup 1 --spec-tokens 0 \
    --kv-cache-memory 16000000000 > $OUT/kernels_ncu.csv 2> $OUT/kernels_ncu.log
  echo "kernels ncu rc=$?"
  python3 tools/profile/ncu_summary.py $OUT/kernels_ncu.csv --above 8 --json $OUT/kernels.json | tail -4
fi
if has source; then
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  DSV4_PROFILE_DECODE=${PROFILE_STEP:-16} timeout ${NCU_TIMEOUT:-180} $NCU --profile-from-start off --clock-control none \
    --kernel-name regex:"${SOURCE_KERNELS:-indexer}" --section SourceCounters --section WarpStateStats \
    --section SchedulerStats --section LaunchStats -o $OUT/source -f \
    dsv4 bench --synthetic flash --layers 3 --device cuda --modes none --prefill 128 --batch 1 \
    --contexts ${NCU_CONTEXT:-32768} --decode-steps 4 --reps 2 --warmup 1 --spec-tokens 0 \
    --kv-cache-memory 16000000000 > $OUT/source.log 2>&1
  echo "source ncu rc=$?"
  $NCU -i $OUT/source.ncu-rep --page details > $OUT/source_details.txt 2>&1
  $NCU -i $OUT/source.ncu-rep --page source --csv --print-source sass > $OUT/source_sass.csv 2>&1
  grep -E "^  [a-z_<>:() ]*kernel|Duration|Grid Size|Registers Per Thread" $OUT/source_details.txt | sed 's/  */ /g' | head -20
  python3 tools/profile/sass_stalls.py $OUT/source_sass.csv --top 20
  rm -f $OUT/source.ncu-rep  # the CSV and the details keep what the summary needs; the report is large
fi
if has prefill; then  # prompts prefilled in chunks of --max-batch-tokens, one process each
  for n in ${PREFILLS:-4096 131072}; do
    timeout ${PREFILL_TIMEOUT:-150} dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto \
      --prefill $n --batch 1 --decode-steps 2 --reps 1 --warmup 0 --spec-tokens 0 \
      --kv-cache-memory 16000000000 --json > $OUT/prefill_$n.json 2>$OUT/prefill_$n.log
    echo "prefill $n rc=$?"; grep -E "error" $OUT/prefill_$n.log | head -3
  done
fi
if has racecheck; then
  timeout ${SAN_TIMEOUT:-150} $SAN --tool racecheck --error-exitcode 99 dsv4_gpu_tests \
    --gtest_filter="${RACE_FILTER:-CudaOps.IndexerTopk:CudaOps.IndexerTopkLong}" > $OUT/racecheck.txt 2>&1
  echo "racecheck rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED  \]|FAILED  \]" $OUT/racecheck.txt | head -5
fi
python3 - "$OUT" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
def load(p):
    try: return json.load(open(p))
    except Exception: return None
print("\n== summary")
c = load(f"{out}/contexts.json")
if c:
    for r in c["runs"]:
        for d in r.get("context_decode", []):
            print("flash b=1 %s context %d: %.3f ms/step (device %.3f; sampled on the engine's path %.3f -> %.2fx; pipelined as in generate %.3f -> %.2fx), floor(weights+state) %.3f ms -> %.2fx; indexer %.1f us, attention %.1f us per step" % (r["mode"], d["context"], d["ms_per_step"]["median"], d.get("device_ms_per_step", 0), d.get("sampled_ms_per_step", {}).get("median", 0), d.get("sampled_over_floor", 0), d.get("pipelined_ms_per_step", {}).get("median", 0), d.get("pipelined_over_floor", 0), d.get("floor_ms", 0), d.get("measured_over_floor", 0), d.get("indexer_ms_per_step", 0) * 1e3, d.get("attention_ms_per_step", 0) * 1e3))
for f in sorted(glob.glob(f"{out}/prefill_*.json"), key=lambda p: int(p.split("_")[-1][:-5])):
    p = load(f)
    if not p: continue
    r = p["runs"][0]
    for q in r.get("prefill", []):
        print("flash prefill %d tokens: %.2f s, %.0f tok/s %s" % (q["tokens"], q["seconds"]["median"], q["tokens_per_second"], json.dumps(q.get("split", {}))))
    m = r.get("memory", {})
    print("  memory: device in use %.2f GiB, peak %.2f GiB (weights %.2f, activations %.2f, state pool %.2f GiB)" % tuple(m.get(k, 0) / 2**30 for k in ("device_in_use_bytes", "device_peak_bytes", "weights_bytes", "activations_bytes", "state_pool_bytes")))
PY
