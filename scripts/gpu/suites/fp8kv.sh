#!/usr/bin/env bash
# One GPU call for --kv-cache-dtype fp8 on CUDA (issue 16, build point 3; first run on an H200 on 2026-12-05):
# the fp8 cache's GPU-vs-CPU tests (CudaKvFp8.*) and the bf16 tests of the kernels it touched, compute-sanitizer
# memcheck and racecheck on them, and decode of the synthetic Flash slice at 32k and 1M context with the fp8 and the
# bf16 cache (ms/step against the weights + state floor, the sequence's state bytes). A suite of scripts/gpu/run.sh
# (run from the repository root with the staged build in STAGE, default .gpu-stage).
#   PHASES: comma list of tests,cli,memcheck,racecheck,contexts (default: all); also `fixtures` (not in the default):
#   regenerate tests/fixtures/hf/*/expected_fp8_cache.safetensors with tools/reference/make_fp8_cache_fixtures.py
#   (torch + transformers, on this machine's CPU) and copy them to $OUT/fixtures/ to be committed.
set -u
. "${STAGE:-.gpu-stage}/env.sh"
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
export DSV4_SOURCE_DIR=${DSV4_SOURCE_DIR:-$PWD} PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PHASES=${PHASES:-tests,cli,memcheck,racecheck,contexts}
has() { [[ ",$PHASES," == *",$1,"* ]]; }
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/card.txt
FP8='CudaKvFp8.*'
# The bf16 paths of the kernels the fp8 cache touched (attention, split attention, indexer, compressor, ring stores)
# and the model on them.
TOUCHED='CudaOps.Attention*:CudaOps.Indexer*:CudaOps.CompressorEmitAndStore:CudaOps.*Ring*:*CudaModelParity.PrefillDecodeAndChunks*:CudaPaged*'
if has fixtures; then
  timeout ${FIXTURES_TIMEOUT:-300} python3 tools/reference/make_fp8_cache_fixtures.py > $OUT/fixtures.log 2>&1
  echo "fp8 cache fixtures rc=$?"; grep -E "kept|Error|error" $OUT/fixtures.log | head -8
  mkdir -p $OUT/fixtures
  for n in tiny_a tiny_b tiny_c; do
    cp tests/fixtures/hf/$n/expected_fp8_cache.safetensors $OUT/fixtures/$n.expected_fp8_cache.safetensors
  done
fi
if has tests; then
  timeout ${TESTS_TIMEOUT:-220} dsv4_gpu_tests --gtest_filter="${TESTS_FILTER:-$FP8:$TOUCHED}" > $OUT/gpu_tests.txt 2>&1
  echo "gpu tests rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]|near-tie|equal, rel err|fp8 cache \[|rel err" $OUT/gpu_tests.txt | head -60
  grep -E "Failure|error:" -A5 $OUT/gpu_tests.txt | head -30
fi
if has cli; then  # greedy tokens through the CLI (CUDA graphs on): CUDA f32 fp8 = CPU fp8; speculation keeps them
  gen() { timeout 60 dsv4 generate --ids 5,6,7,8,9 -n 24 --ignore-eos --kv-cache-dtype fp8 "$@" 2>>$OUT/cli.log | head -1; }
  for m in tests/fixtures/hf/tiny_a tests/fixtures/hf/tiny_b tests/fixtures/mtp/mtp_tiny; do
    cpu=$(gen -m $DSV4_SOURCE_DIR/$m --device cpu)
    f32=$(gen -m $DSV4_SOURCE_DIR/$m --device cuda --cuda-precision f32)
    bf16=$(gen -m $DSV4_SOURCE_DIR/$m --device cuda)
    echo "$m fp8 cache: cpu [$cpu] cuda-f32 [$f32] cuda-bf16 [$bf16]" >> $OUT/cli.log
    [ -n "$cpu" ] && [ "$cpu" == "$f32" ] && r=MATCH || r=DIFFER
    echo "cli $m: CUDA f32 fp8 vs CPU fp8 greedy tokens: $r; CUDA bf16: $([ "$bf16" == "$cpu" ] && echo same || echo differs)"
    if [[ $m == *mtp* ]]; then
      spec=$(gen -m $DSV4_SOURCE_DIR/$m --device cuda --cuda-precision f32 --spec-tokens 2)
      echo "cli $m: CUDA f32 fp8 speculative (K=2) vs plain: $([ -n "$spec" ] && [ "$spec" == "$f32" ] && echo MATCH || echo DIFFER)"
    fi
  done
fi
if has memcheck; then
  timeout ${SAN_TIMEOUT:-200} $SAN --tool memcheck --error-exitcode 99 dsv4_gpu_tests --gtest_filter="$FP8" > $OUT/memcheck.txt 2>&1
  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|PASSED  \]|FAILED  \]" $OUT/memcheck.txt | head -5
fi
if has racecheck; then
  timeout ${SAN_TIMEOUT:-200} $SAN --tool racecheck --error-exitcode 99 dsv4_gpu_tests \
    --gtest_filter="${RACE_FILTER:-CudaKvFp8.RoundTrip:CudaKvFp8.RingStoresPack:CudaKvFp8.CompressorEmitPacked:CudaKvFp8.IndexerTopk:CudaKvFp8.IndexerTopkFp4:CudaKvFp8.Attention}" \
    > $OUT/racecheck.txt 2>&1
  echo "racecheck rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED  \]|FAILED  \]" $OUT/racecheck.txt | head -5
fi
if has contexts; then  # decode b=1 at long contexts (random state) against weights + state floor, fp8 and bf16 cache
  for dt in fp8 auto; do
    timeout ${CTX_TIMEOUT:-200} dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto \
      --prefill 128 --batch 1 --contexts ${CONTEXTS:-32768,1048568} --decode-steps 8 --reps 3 --warmup 1 \
      --spec-tokens 0 --kv-cache-dtype $dt --kv-cache-memory 16000000000 --json > $OUT/contexts_$dt.json 2>$OUT/contexts_$dt.log
    echo "contexts bench ($dt cache) rc=$?"; grep -E "error" $OUT/contexts_$dt.log | head -3
  done
fi
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def load(p):
    try: return json.load(open(p))
    except Exception: return None
print("\n== summary")
state, read = {}, {}
for dt in ("fp8", "auto"):
    c = load(f"{out}/contexts_{dt}.json")
    if not c: continue
    for r in c["runs"]:
        for d in r.get("context_decode", []):
            state[(dt, d["context"])] = d.get("state_bytes", 0)
            read[(dt, d["context"])] = d.get("floor_state_bytes", 0)
            print("flash b=1 %s cache, context %d: %.3f ms/step (device %.3f; sampled %.3f), floor(weights+state) %.3f ms -> %.2fx; state read %.1f MB; sequence state %.1f MB; indexer %.1f us, attention %.1f us per step" % (dt, d["context"], d["ms_per_step"]["median"], d.get("device_ms_per_step", 0), d.get("sampled_ms_per_step", {}).get("median", 0), d.get("floor_ms", 0), d.get("measured_over_floor", 0), d.get("floor_state_bytes", 0) / 1e6, d.get("state_bytes", 0) / 1e6, d.get("indexer_ms_per_step", 0) * 1e3, d.get("attention_ms_per_step", 0) * 1e3))
for (dt, n), b in sorted(state.items()):
    if dt == "fp8" and state.get(("auto", n)):
        print("context %d: fp8 / bf16 sequence state (pages held) = %.4f, state read per decode step = %.4f"
              % (n, b / state[("auto", n)], read[("fp8", n)] / max(read[("auto", n)], 1)))
PY
