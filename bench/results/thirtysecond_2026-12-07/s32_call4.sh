#!/bin/bash
# Session 32, call 4 (call 3's script, leaner: the budget was down to ~300 s): the E4M3 products with their scales
# loaded a stage ahead, clang-formatted: the fp8 test, the lab, the engine's prefill A/B (one round), the whole suite.
set -u
. scripts/gpu/call_prologue.sh
timeout 60 dsv4_gpu_tests --gtest_filter='CudaQuant.MoeGemmFp8*' > $D/fp8_test.txt 2>&1; el "fp8 test rc=$?"
grep -E "rel err|FAILED|PASSED|Failure" $D/fp8_test.txt | head -20
timeout 60 bench_moe_gemm fp8 > $D/fp8_lab.txt 2>&1; el "fp8 lab rc=$?"; grep -E "PASS|FAIL|ms|error" $D/fp8_lab.txt | head -20
pack
P="dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1"
for sw in 1 0; do
  DSV4_MOE_FP8=$sw timeout 40 $P --cuda-weights quantized --activation-quant fp8 > $D/p.txt 2>&1
  echo "DSV4_MOE_FP8=$sw quantized --activation-quant fp8: $(grep -E 'prefill +4096' $D/p.txt)"; cat $D/p.txt >> $D/prefill.txt
done
el prefill; pack
timeout 120 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head
gzip -9 $D/suite.txt; pack
