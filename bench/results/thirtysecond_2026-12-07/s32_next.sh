#!/bin/bash
# For the next session's first call: `git apply bench/results/thirtysecond_2026-12-07/unverified_moe_fp8_scales_ahead_cuda.patch`
# (the E4M3 MoE products with their scales loaded a stage ahead, clang-format of session 32's CUDA files, the op-level
# test on quantised stacks under --activation-quant fp8, the tests' routing helper folded), build, stage
# `STAGE_LEAN=1 scripts/gpu/stage.sh build .gpu-Z`, carry [".gpu-Z"], `kind: nvidia-h200`. Land the patch if the
# two fp8 tests and the whole suite pass (else revert it). H200: then the acceptance parts by priority.
set -u
. scripts/gpu/call_prologue.sh
timeout 60 dsv4_gpu_tests --gtest_filter='CudaQuant.MoeGemmFp8*:CudaQuant.MoeExpertsOp*' > $D/fp8_test.txt 2>&1; el "fp8 tests rc=$?"
grep -E "rel err|FAILED|PASSED|Failure" $D/fp8_test.txt | head -20
timeout 60 bench_moe_gemm fp8 > $D/fp8_lab.txt 2>&1; el "fp8 lab rc=$?"; grep -E "PASS|FAIL|ms|error" $D/fp8_lab.txt | head -20
pack
P="dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1"
for sw in 1 0; do
  DSV4_MOE_FP8=$sw timeout 40 $P --cuda-weights quantized --activation-quant fp8 > $D/p.txt 2>&1
  echo "DSV4_MOE_FP8=$sw quantized --activation-quant fp8: $(grep -E 'prefill +4096' $D/p.txt)"; cat $D/p.txt >> $D/prefill.txt
done
timeout 40 $P --cuda-weights bf16 > $D/p.txt 2>&1; echo "bf16: $(grep -E 'prefill +4096' $D/p.txt)"; cat $D/p.txt >> $D/prefill.txt
el prefill; pack
timeout 150 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head
gzip -9 $D/suite.txt; pack
if [[ $CARD == *H200* ]]; then
  acc quant quant,prefill 64 45
  acc rms rms_norm 64 75
  acc contexts contexts 64 45
  acc serve64 serve 64 75
fi
