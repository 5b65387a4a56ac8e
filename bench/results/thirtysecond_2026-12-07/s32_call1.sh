#!/bin/bash
# Session 32, call 1: the E4M3 MoE prefill products (moe_gemm_fp8.cuh, --activation-quant fp8): their GPU test, the
# lab (`bench_moe_gemm fp8`: sampled checks, timing beside the library's quantised kernel), memcheck of the test, the
# whole GPU suite, then the engine's prefill (bf16 / quantised / quantised + fp8 activations). H200: the acceptance
# parts after. Stage: `STAGE_LEAN=1 scripts/gpu/stage.sh build .gpu-Z`.
set -u
. scripts/gpu/call_prologue.sh
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
timeout 60 dsv4_gpu_tests --gtest_filter='CudaQuant.MoeGemmFp8*' > $D/fp8_test.txt 2>&1; el "fp8 test rc=$?"
grep -E "rel err|OK|FAILED|PASSED|Failure|error" $D/fp8_test.txt | head -30
timeout 120 bench_moe_gemm fp8 > $D/fp8_lab.txt 2>&1; el "fp8 lab rc=$?"; grep -E "PASS|FAIL|ms|error" $D/fp8_lab.txt | head -20
pack
for x in "--cuda-weights bf16" "--cuda-weights quantized" "--cuda-weights quantized --activation-quant fp8"; do
  timeout 60 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1 $x > $D/p.txt 2>&1
  echo "$x: $(grep -E 'prefill +4096' $D/p.txt)"; cat $D/p.txt >> $D/prefill.txt
done
el prefill; pack
timeout 150 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head
gzip -9 $D/suite.txt; pack
timeout 90 $SAN --tool memcheck dsv4_gpu_tests --gtest_filter='CudaQuant.MoeGemmFp8*' > $D/memcheck.txt 2>&1; el "memcheck rc=$?"
grep -E "ERROR SUMMARY|PASSED|FAILED" $D/memcheck.txt | head -3; pack
if [[ $CARD == *H200* ]]; then
  acc quant quant,prefill 64 45
  acc rms rms_norm 64 75
  acc contexts contexts 64 45
fi
