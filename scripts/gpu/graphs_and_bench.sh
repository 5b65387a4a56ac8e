#!/usr/bin/env bash
# GPU run for the graph runtime (issue 5) and the default model's benchmark. From the repository root on
# the GPU machine, with .gpu-stage carried (../shared/scripts/stage-gpu.sh build). Logs go to $OUT.
set -u
. .gpu-stage/env.sh
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader | tee $OUT/gpu.txt
timeout 280 dsv4_gpu_tests > $OUT/gpu_tests.txt 2>&1; echo "gpu tests rc=$?"
grep -E "tests ran|PASSED  \]|FAILED  \]" $OUT/gpu_tests.txt
grep -E "Failure" -A4 $OUT/gpu_tests.txt | head -30
grep -E "CUDA graphs:|device memory free" $OUT/gpu_tests.txt | head -4 | cut -c1-400
timeout 120 $SAN --tool memcheck dsv4_gpu_tests \
  --gtest_filter='GraphModel.BreakableCaptureBreaksAtEveryAttentionLayer:Fixtures/GraphModel.LogitsBitIdenticalAcrossModes/0' \
  > $OUT/memcheck.txt 2>&1; echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|PASSED|FAILED" $OUT/memcheck.txt | head -3
timeout 150 dsv4 bench -m models/dsv4-tiny-kjv --device cuda --prefill 128,1024 --batch 1,4,16,64 \
  --spec-tokens 0,1,2,3 --reps 5 --prompt "And God said" --json > $OUT/bench_kjv.json 2> $OUT/bench_kjv.log
echo "bench rc=$?"
python3 - "$OUT/bench_kjv.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(d["device"])
for r in d["runs"]:
    dec = " ".join(f'b{x["batch"]}={x["ms_per_step"]["median"]:.3f}ms' for x in r.get("decode", []))
    pre = " ".join(f'{x["tokens"]}:{x["tokens_per_second"]:.0f}tok/s' for x in r.get("prefill", []))
    spec = " ".join(f'K{x["spec_tokens"]}:{x["tokens_per_second"]:.0f}tok/s,acc{x["acceptance_rate"]:.2f}' for x in r.get("speculative", []))
    print(f'{r["mode"]:9s} load {r["load_seconds"]:.3f}s capture {r["capture_seconds"]:.3f}s graphs {r["graph_bytes"]/2**20:.1f}MiB | {dec} | {pre} | {spec}')
PY
