#!/usr/bin/env bash
# GPU checks of the kernels on weights kept quantised in GPU memory (issue 17; backend/cuda/quant_matrix.h):
# first run on an H200 on 2026-12-05 (bench/RESULTS.md). In order: the parity tests against the host
# dequantiser (CudaQuant.*: FP8-block / FP4 decode GEMV at T = 1..16 on Flash and odd shapes, the dequantise
# fallback bit-exact, MoE decode on FP4 routed + FP8 shared stacks, determinism), compute-sanitizer memcheck and
# racecheck on them, the bf16 GEMV's tests, then the kernel lab: FP8 dense projections at T = 1, 2, 4, 8, 16 (all
# quant_gemv since the seventeenth session), one Flash MoE layer's decode at b = 1 and b = 16 and the CSA layer
# totals, each against the HBM floor of the quantised bytes and against the bf16 kernels.
# Repository root, .gpu-stage carried (scripts/gpu/stage.sh; scripts/gpu/run.sh quant). Details under $OUT. ~3 min;
# the step limits add up to 590 s, inside one 600 s call.
set -u
. "${STAGE:-.gpu-stage}/env.sh"
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
# 1. parity and determinism (the only check of the kernels' values)
timeout 120 dsv4_gpu_tests --gtest_filter='CudaQuant.*' > $OUT/quant_tests.txt 2>&1
echo "quant tests rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]|SKIPPED \] [0-9]" $OUT/quant_tests.txt | head -12
grep -E "Failure" -A6 $OUT/quant_tests.txt | head -40
echo "largest relative errors:"; grep -E "rel err" $OUT/quant_tests.txt | awk '{print $NF "\t" $0}' | sort -g -r | cut -f2- | head -5
# 1b. the engine on quantised weights (--cuda-weights quantized): qtiny_* logits vs the same checkpoint as bf16
#     weights, a greedy generate under CUDA graphs (CudaQuantizedWeights.*), and the CLI path with its JSON
timeout 40 dsv4_gpu_tests --gtest_filter='*CudaQuantizedWeights.*' > $OUT/quant_model_tests.txt 2>&1
echo "quant model tests rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]|SKIPPED \] [0-9]|quantised vs bf16|greedy generate" $OUT/quant_model_tests.txt | head -12
grep -E "Failure" -A6 $OUT/quant_model_tests.txt | head -30
for w in bf16 quantized; do
  timeout 25 dsv4 generate -m tests/fixtures/quantized/qtiny_a --device cuda --cuda-weights $w --ids 1,2,3,4,5,6,7,8 \
    -n 8 --ignore-eos --json > $OUT/generate_$w.json 2> $OUT/generate_$w.err
  echo "generate --cuda-weights $w rc=$? $(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(j['tokens'], 'weights_bytes', j['weights_bytes'])" $OUT/generate_$w.json 2>&1 | tail -1)"
done
# 2. sanitizers on the small shapes (the Flash shapes only add CPU oracle time)
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
F='CudaQuant.GemvOddShapesMatchCpu:CudaQuant.DequantizeMatchesHost:CudaQuant.MoeDecodeOddShapesMatchCpu'
for tool in memcheck racecheck; do
  timeout $([ $tool = memcheck ] && echo 100 || echo 90) $SAN --tool $tool --error-exitcode 9 dsv4_gpu_tests --gtest_filter="$F" > $OUT/$tool.txt 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|PASSED  \]|FAILED  \]" $OUT/$tool.txt | head -3
done
# 3. the bf16 GEMV's tests (quant_gemv shared its reduce-scatter, gemv_reduce.cuh, until the seventeenth session)
timeout 60 dsv4_gpu_tests --gtest_filter='CudaGemv.*' > $OUT/gemv_tests.txt 2>&1
echo "bf16 gemv tests rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]" $OUT/gemv_tests.txt | head -3
# 4. kernel lab: quantised vs floor vs bf16
timeout 130 bench_quant_gemv --tokens 1,2,4,8,16 --json $OUT/bench_quant_gemv.json > $OUT/bench_quant_gemv.txt 2>&1
echo "bench_quant_gemv rc=$?"
cat $OUT/bench_quant_gemv.txt
