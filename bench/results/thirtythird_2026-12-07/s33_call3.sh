#!/bin/bash
# Session 33 calls 3 and 4 (call 4 on the next build: act_quant on the hardware conversion, 4 stages, lab 3 / 4 / 5):
# call 3: act_quant's kernels vectorised (4 consecutive values a lane, 4 blocks' loads in flight a warp),
# the E4M3 MoE lab at ring depths 4 / 5 / 6, the prefill A/B and timeline, the whole suite; H200: acceptance parts.
# Carry [".gpu-T"] (full stage: the tracer).
set -u
STAGE_DIR=.gpu-T . scripts/gpu/call_prologue.sh
timeout 90 dsv4_gpu_tests --gtest_filter='CudaQuant.ActivationFp8Codes*:CudaOps.ActivationRoundTrip*:CudaQuant.MoeGemmFp8*:CudaQuant.MoeExpertsOp*:CudaOps.MoeExpertsActivationQuant:CudaQuant.Fp8BlockProduct*' > $D/aq_tests.txt 2>&1
el "act quant tests rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]|Failure" $D/aq_tests.txt | head
timeout 90 bench_moe_gemm fp8 > $D/fp8_lab.txt 2>&1; el "fp8 lab rc=$?"; grep -E "FAIL|ms|error" $D/fp8_lab.txt | head -24
pack
TR=$S/lib/libdsv4_kernel_trace.so
prefill_ab
el prefill
LD_PRELOAD=$TR DSV4_KERNEL_TRACE=$D/pf_q8.csv timeout 60 ${P/--reps 3/--reps 2} --cuda-weights quantized --activation-quant fp8 > $D/pf_q8.txt 2>&1
python3 $S/tools/profile/kernel_timeline.py $D/pf_q8.csv --steps 2 --where 'prefill_attention_kernel>100' > $D/pf_q8_tl.txt 2>&1
grep -E "steps:|moe_gemm|act|round_trip|nvjet" $D/pf_q8_tl.txt | head -12; gzip -9 $D/pf_q8.csv
pack
suite_and_h200_acceptance
