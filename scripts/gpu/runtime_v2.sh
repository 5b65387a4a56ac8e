#!/usr/bin/env bash
# One GPU call for the runtime issue (paged state, scheduler, executor): the GPU test suite, compute-sanitizer on
# the continuous-batching test, and the measurements of the issue on one card. Repository root, .gpu-stage carried
# (new build in bin/lib, the pre-change CLI in old/bin, old/lib). Prints a short table last; details under $OUT.
#   PHASES: comma list of tests,memcheck,regress,contexts,prefill,requests (default: all)
set -u
. "${STAGE_DIR:-.gpu-stage}/env.sh"  # STAGE_DIR: a stage of scripts/gpu/stage.sh (run.sh runtime_v2)
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 PYTHONUNBUFFERED=1
FINAL=${OUT:-/tmp/out}; OUT=/tmp/rt2; rm -rf $OUT; mkdir -p "$OUT" "$FINAL"  # everything in one archive at the end
PHASES=${PHASES:-tests,memcheck,regress,oldtiny,contexts,prefill,requests}
has() { [[ ",$PHASES," == *",$1,"* ]]; }
card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader); echo "$card" | tee $OUT/card.txt
if has tests; then
  timeout ${TESTS_TIMEOUT:-300} dsv4_gpu_tests ${TESTS_FILTER:+--gtest_filter=$TESTS_FILTER} > $OUT/gpu_tests.txt 2>&1
  echo "gpu tests rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]" $OUT/gpu_tests.txt | head -20
  grep -E "Failure|error:" -A5 $OUT/gpu_tests.txt | head -40
fi
if has memcheck; then
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  timeout ${MEMCHECK_TIMEOUT:-240} $SAN --tool memcheck --error-exitcode 99 dsv4_gpu_tests \
    --gtest_filter='CudaScheduler.ContinuousBatching*:CudaScheduler.Preemption*' > $OUT/memcheck.txt 2>&1
  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|PASSED|FAILED" $OUT/memcheck.txt | head -5
fi
if has regress; then  # no-regression rows: Flash slice b=1/16, tiny b=1 (default graph mode); REGRESS_MODELS picks
  [[ " ${REGRESS_MODELS:-flash tiny} " == *" flash "* ]] && timeout 200 dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto --prefill 4096 --batch 1,16 \
    --context 1024 --decode-steps 32 --reps 5 --spec-tokens 0 --kv-cache-memory 8000000000 --json > $OUT/flash.json 2>$OUT/flash.log
  echo "flash bench rc=$?"; grep -E "error" $OUT/flash.log 2>/dev/null | head -3
  [[ " ${REGRESS_MODELS:-flash tiny} " == *" tiny "* ]] && timeout 120 dsv4 bench -m models/dsv4-tiny-kjv --device cuda --modes auto --prefill 128 --batch ${TINY_BATCH:-1,16,64,256} \
    --spec-tokens 0 --reps 9 --kv-cache-memory 2000000000 --json > $OUT/tiny.json 2>$OUT/tiny.log
  echo "tiny bench rc=$?"; grep -E "error" $OUT/tiny.log | head -3
fi
if has contexts; then  # decode b=1 at long contexts (random state) against weights + state floor
  timeout 300 dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto --prefill 128 --batch 1 \
    --contexts ${CONTEXTS:-1024,32768,131072,1048576} --decode-steps 8 --reps 3 --warmup 1 --spec-tokens 0 \
    --kv-cache-memory 16000000000 --json > $OUT/contexts.json 2>$OUT/contexts.log
  echo "contexts bench rc=$?"; grep -E "error" $OUT/contexts.log | head -3
fi
if has prefill; then  # long prompts prefilled in chunks of --max-batch-tokens, one process per length
  for n in ${PREFILL:-131072 1048576}; do  # max-model-len: the prompt, the decoded tokens and the draft margin
    timeout ${PREFILL_TIMEOUT:-300} dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto \
      --prefill $n --batch 1 --decode-steps 2 --reps 1 --warmup 0 --spec-tokens 0 --max-model-len $((n + 16)) \
      --kv-cache-memory 16000000000 --json > $OUT/prefill_$n.json 2>$OUT/prefill_$n.log
    echo "prefill $n bench rc=$?"; grep -E "error" $OUT/prefill_$n.log | head -3
  done
fi
if has oldtiny; then  # the pre-change CLI on the same card: tiny decode b=1/16 (no-regression row)
  (export LD_LIBRARY_PATH=$PWD/.gpu-stage/old/lib:/usr/local/cuda/lib64
   timeout 120 .gpu-stage/old/bin/dsv4 bench -m models/dsv4-tiny-kjv --device cuda --modes auto --prefill 128 \
     --batch ${TINY_BATCH:-1,16,64,256} --spec-tokens 0 --reps 9 --json > $OUT/tiny_old.json 2>$OUT/tiny_old.log; echo "old tiny bench rc=$?")
fi
if has requests; then  # 256 requests of 16-512 prompt tokens, 128 new tokens each: scheduler vs the old wave loop
  python3 bench/make_prompts.py --tokenizer models/dsv4-tiny-kjv/tokenizer.json --count 256 --out /tmp/p256.txt
  /usr/bin/time -f "%e" -o $OUT/new_wall.txt timeout 200 dsv4 generate -m models/dsv4-tiny-kjv --device cuda \
    --prompts /tmp/p256.txt -n 128 --ignore-eos --json > $OUT/requests_new.json 2>$OUT/requests_new.log
  echo "requests new rc=$?"
  (export LD_LIBRARY_PATH=$PWD/.gpu-stage/old/lib:/usr/local/cuda/lib64
   /usr/bin/time -f "%e" -o $OUT/old_wall.txt timeout 300 .gpu-stage/old/bin/dsv4 generate -m models/dsv4-tiny-kjv \
     --device cuda --prompts /tmp/p256.txt -n 128 --ignore-eos --json > $OUT/requests_old.json 2>$OUT/requests_old.log
   echo "requests old rc=$?")
fi
python3 - "$OUT" <<'PY' | tee $OUT/summary.txt
import json, sys
out = sys.argv[1]
def load(n):
    try: return json.load(open(f"{out}/{n}"))
    except Exception: return None
print("\n== summary")
f = load("flash.json")
if f:
    r = f["runs"][0]
    for d in r["decode"]:
        print("flash decode b=%d: %.3f ms/step (device %.3f), floor %.3f -> %.2fx" % (d["batch"], d["ms_per_step"]["median"], d.get("device_ms_per_step", 0), d.get("floor_ms", 0), d.get("measured_over_floor", 0)))
    for p in r.get("prefill", []): print("flash prefill %d: %.0f tok/s" % (p["tokens"], p["tokens_per_second"]))
for name in ("tiny.json", "tiny_old.json"):
    t = load(name)
    if t:
        for d in t["runs"][0]["decode"]:
            print("%s decode b=%d: %.3f ms/step (device %.3f)" % (name[:-5], d["batch"], d["ms_per_step"]["median"], d.get("device_ms_per_step", 0)))
c = load("contexts.json")
if c:
    for d in c["runs"][0].get("context_decode", []):
        print("flash b=1 context %d: %.3f ms/step (device %.3f), floor(weights+state) %.3f ms -> %.2fx" % (d["context"], d["ms_per_step"]["median"], d.get("device_ms_per_step", 0), d.get("floor_ms", 0), d.get("measured_over_floor", 0)))
import glob
for name in sorted(glob.glob(f"{out}/prefill_*.json")):
    p = load(name.split("/")[-1])
    if not p: continue
    r = p["runs"][0]
    for q in r.get("prefill", []): print("flash prefill %d tokens: %.1f s, %.0f tok/s" % (q["tokens"], q["seconds"]["median"], q["tokens_per_second"]))
    m = r.get("memory", {})
    print("  memory: device in use (peak: all allocated up front) %.2f GiB (weights %.2f, activations %.2f, state pool %.2f GiB)" % tuple(m.get(k, 0) / 2**30 for k in ("device_in_use_bytes", "weights_bytes", "activations_bytes", "state_pool_bytes")))
n, o = load("requests_new.json"), load("requests_old.json")
def wall(name):
    try: return float(open(f"{out}/{name}").read().split()[-1])
    except Exception: return 0
if n:
    print("scheduler split: prefill %.3f s, decode %.3f s, %d steps" % (n["prefill_seconds"], n["decode_seconds"], n["scheduler_steps"]))
    print("256 requests, scheduler: %d output tokens in %.2f s -> %.0f tok/s; latency p50 %.2f s p99 %.2f s; TTFT p50 %.2f s; process %.1f s" % (n["generated_tokens"], n["total_seconds"], n["output_tokens_per_second"], n["latency_seconds"]["p50"], n["latency_seconds"]["p99"], n["first_token_seconds"]["p50"], wall("new_wall.txt")))
if o:
    t = o["prefill_seconds"] + o["decode_seconds"]
    print("256 requests, old waves: %d output tokens in %.2f s -> %.0f tok/s; process %.1f s" % (o["generated_tokens"], t, o["generated_tokens"] / t, wall("old_wall.txt")))
    if n: print("throughput ratio (scheduler / waves): %.2fx" % (n["output_tokens_per_second"] / (o["generated_tokens"] / t)))
PY
cp $OUT/summary.txt $FINAL/; tar czf $FINAL/details.tgz -C $OUT .
