#!/bin/bash
# The next session's first call (not run in session 33: no device time left). Before it, from the repository root:
#   git apply bench/results/thirtythird_2026-12-07/unverified_fp8_products_cuda.patch \
#             bench/results/thirtythird_2026-12-07/unverified_quant_act_model_test.patch
#   build; STAGE_LEAN=1 scripts/gpu/stage.sh build .gpu-Z; carry [".gpu-Z"], kind nvidia-h200.
# Land both if these tests and the whole suite pass (the first is CUDA code: the suite after it is its proof):
# - the block-scaled FP8 product straight into out where T % 16 == 0 (no ~380 MB copy a Flash layer at a 4,096-token
#   prefill), and x's codes made once in ops::linears for all its FP8 products (wq_a + wkv, wq_b + the indexer's);
#   CudaQuant.Fp8Block* cover T = 17 / 40 / 64 / 128 / 200, padded and direct, shared codes bit-identical to one each;
# - CudaQuantActModel: the whole CUDA engine under --activation-quant fp8 at the FP8 products' shapes vs the CPU.
# Prefill: quantised with bf16 activations is the unchanged control; compare the fp8 / control ratio with session 33's
# (H100 call 4: 1.05x; H200 call 5: 1.10x) on the same card kind.
set -u
. scripts/gpu/call_prologue.sh
timeout 150 dsv4_gpu_tests --gtest_filter='CudaQuantActModel.*:CudaQuant.Fp8Block*:CudaQuant.ActivationFp8Codes*:QuantizedFixtures/CudaQuantizedWeights.*' > $D/tests.txt 2>&1
el "tests rc=$?"; grep -E "wide random model|^\[  (PASSED|FAILED)|FAILED \]|Failure|Expected|Which is|nothing to compare" $D/tests.txt | head -16
pack
prefill_ab
el prefill; pack
suite_and_h200_acceptance
