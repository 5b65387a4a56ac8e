#!/bin/bash
# Session 32, call 3: the E4M3 products with their scales loaded a stage ahead (call 2's ncu: 13% of the stall samples
# on the first multiply by a stage's scales; the producers waited for free slots — consumer-bound): the fp8 test and
# its memcheck, the lab (`bench_moe_gemm fp8`, beside the library's quantised kernel), the engine's prefill A/B, the
# whole GPU suite.
set -u
. scripts/gpu/call_prologue.sh
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
timeout 60 dsv4_gpu_tests --gtest_filter='CudaQuant.MoeGemmFp8*' > $D/fp8_test.txt 2>&1; el "fp8 test rc=$?"
grep -E "rel err|FAILED|PASSED|Failure" $D/fp8_test.txt | head -20
timeout 90 $SAN --tool memcheck dsv4_gpu_tests --gtest_filter='CudaQuant.MoeGemmFp8*' > $D/memcheck.txt 2>&1; el "memcheck rc=$?"
grep -E "ERROR SUMMARY|PASSED|FAILED" $D/memcheck.txt | head -3
timeout 120 bench_moe_gemm fp8 > $D/fp8_lab.txt 2>&1; el "fp8 lab rc=$?"; grep -E "PASS|FAIL|ms|error" $D/fp8_lab.txt | head -20
pack
P="dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1"
for round in 1 2; do
  for x in "1 --cuda-weights quantized --activation-quant fp8" "0 --cuda-weights quantized --activation-quant fp8" "1 --cuda-weights bf16"; do
    set -- $x; sw=$1; shift
    DSV4_MOE_FP8=$sw timeout 60 $P "$@" > $D/p.txt 2>&1
    echo "r$round DSV4_MOE_FP8=$sw $*: $(grep -E 'prefill +4096' $D/p.txt)"; cat $D/p.txt >> $D/prefill.txt
  done
done
el prefill; pack
timeout 150 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head
gzip -9 $D/suite.txt; pack
