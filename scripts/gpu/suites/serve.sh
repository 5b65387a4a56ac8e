#!/usr/bin/env bash
# `dsv4 serve` under load on the GPU (issue 18): for each model, `dsv4 bench`'s decode at b = 64 (context 1,024), then
# the server on the same card under bench/serve_load.py (random token-id prompts of 128-2,048 tokens, 256 new tokens,
# greedy, streamed; the server's scheduler counters split each level's wall time) at concurrency LEVELS, and the
# ratio the issue asks for: the server's output tok/s at concurrency 64 over bench's b = 64 decode. Then the same
# concurrency-64 load with each --max-batch-tokens of MBT (the per-step token budget: smaller steps interleave the
# arriving prompts' chunks with the running decodes).
# Repository root, STAGE (default .gpu-stage) carried. MODELS: comma list of tiny (models/dsv4-tiny-kjv) and flash
# (the synthetic Flash slice, LAYERS layers + MTP). MAX_S bounds each level's request starts.
set -u
. "${STAGE:-.gpu-stage}/env.sh"
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
port=8311
# serve_level NAME LEVELS MODEL_ARGS... : one server, the load at LEVELS, the server stopped; prints the table.
serve_level() {
  local name=$1 levels=$2
  shift 2
  port=$((port + 1))
  dsv4 serve "$@" --device ${DEVICE:-cuda} --port $port --max-model-len 4096 --max-num-seqs 256 > "$OUT/serve_$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 240); do  # the Flash slice builds ~50 GB of random weights first
    curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
    kill -0 $pid 2> /dev/null || break
    sleep 0.5
  done
  timeout ${LOAD_S:-200} python3 bench/serve_load.py --url "http://127.0.0.1:$port" --concurrency "$levels" \
    --max-seconds ${MAX_S:-30} ${LOAD_ARGS:-} --json "$OUT/load_$name.json" > "$OUT/load_$name.txt" 2>&1
  echo "$name load rc=$?"
  curl -s "http://127.0.0.1:$port/metrics" > "$OUT/metrics_$name.txt"
  kill -TERM $pid; wait $pid
  echo "$name serve rc=$?"
  cat "$OUT/load_$name.txt"
}
ratio() {  # ratio LOAD_JSON BENCH_JSON
  python3 - "$1" "$2" << 'PY'
import json, sys
try:
    load, bench = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
    b64 = [d for r in bench["runs"] for d in r.get("decode", []) if d.get("batch") == 64][0]
    tps = b64["tokens_per_second"]
    c64 = [l for l in load["levels"] if l["concurrency"] == 64][0]
    print(f"  concurrency 64: server {c64['output_tokens_per_s']:.0f} out tok/s / bench decode b=64 {tps:.0f} tok/s "
          f"(context 1024) = {c64['output_tokens_per_s'] / tps:.2f}x (target >= 0.8x)")
except Exception as e:
    print("  no ratio:", repr(e))
PY
}
for model in ${MODELS//,/ }; do
  case $model in
    tiny) args=(-m models/dsv4-tiny-kjv) ;;
    flash) args=(--synthetic flash --layers ${LAYERS:-3}) ;;
    *) echo "unknown model $model"; continue ;;
  esac
  timeout ${BENCH_S:-200} dsv4 bench "${args[@]}" --device ${DEVICE:-cuda} --modes auto --prefill 128 --batch 64 --context 1024 \
    --decode-steps 256 --reps 3 --spec-tokens 0 --json > "$OUT/bench_$model.json" 2> "$OUT/bench_$model.log"
  echo "$model bench rc=$?"
  serve_level "$model" "${LEVELS:-1,16,64,256}" "${args[@]}" ${SERVE_ARGS:-}
  ratio "$OUT/load_$model.json" "$OUT/bench_$model.json"
  for mbt in ${MBT:-}; do
    serve_level "${model}_mbt$mbt" 64 "${args[@]}" --max-batch-tokens $mbt ${SERVE_ARGS:-}
    ratio "$OUT/load_${model}_mbt$mbt.json" "$OUT/bench_$model.json"
  done
done
