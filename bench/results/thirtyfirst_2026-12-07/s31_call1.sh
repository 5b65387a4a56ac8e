#!/bin/bash
# Session 31, call 1: .gpu-Z = lean stage of main + the three s30 patches + moe_gemm_rs.cuh moved into src behind
# DSV4_MOE_GEMM_RS (default 0). Whole suite (default), the quant tests + memcheck with DSV4_MOE_GEMM_RS=1, the MoE lab
# (rs beside current), the attention lab, quantised / bf16 prefill 4,096 with RS off / on; H200: acceptance parts.
set -u
. scripts/gpu/call_prologue.sh  # R, S, D, CARD, el, left, pack; md5s
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
timeout 150 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head; pack
DSV4_MOE_GEMM_RS=1 timeout 60 dsv4_gpu_tests --gtest_filter='CudaQuant.*:*Moe*:*Quant*' > $D/suite_rs.txt 2>&1; el "quant tests RS rc=$?"
grep -E "^\[  (PASSED|FAILED)|FAILED \]|Failure|rel err" $D/suite_rs.txt | head -12
timeout 120 bench_moe_gemm rs > $D/moe_rs.txt 2>&1; el "bench_moe_gemm rs rc=$?"; grep -E "error|PASS|FAIL|ms|us" $D/moe_rs.txt | head -24; pack
for RS in 0 1; do for w in quantized bf16; do
  [ $w = bf16 ] && [ $RS = 1 ] && continue
  DSV4_MOE_GEMM_RS=$RS timeout 60 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1 --cuda-weights $w > $D/p_${w}_rs$RS.txt 2>&1
  echo "RS=$RS $w: $(grep -E 'prefill +4096' $D/p_${w}_rs$RS.txt)"
done; done
pack
DSV4_MOE_GEMM_RS=1 timeout 120 $SAN --tool memcheck dsv4_gpu_tests --gtest_filter='CudaQuant.MoeDecodeOddShapesMatchCpu' > $D/memcheck_rs.txt 2>&1; el "memcheck RS rc=$?"; grep -E "ERROR SUMMARY|PASSED|FAILED" $D/memcheck_rs.txt | head -4
DSV4_MOE_GEMM_RS=1 timeout 120 $SAN --tool racecheck dsv4_gpu_tests --gtest_filter='CudaQuant.MoeDecodeOddShapesMatchCpu' > $D/racecheck_rs.txt 2>&1; el "racecheck RS rc=$?"; grep -E "HAZARD|RACECHECK SUMMARY|PASSED|FAILED" $D/racecheck_rs.txt | head -4
pack
for P in 1 0; do
  DSV4_PREFILL_ATTENTION=$P timeout 60 bench_attention 4096 --json $D/attention_lab_$P.json > $D/attention_lab_$P.txt 2>&1
  el "attention lab DSV4_PREFILL_ATTENTION=$P rc=$?"; tail -3 $D/attention_lab_$P.txt
done
pack
[[ $CARD == *H200* ]] || exit 0
acc rms rms_norm 64 75
acc contexts contexts 64 45
acc quant quant,prefill 64 45
acc serve64 serve 64 75
pack
