#!/bin/bash
# Session 33 call 5: under --activation-quant fp8 the products that read only FP8 codes take x itself (no copy, no
# round trip), the others an out-of-place round trip (no copy). Tests, prefill (quantised with bf16 activations is the
# unchanged control), q8 decode, the whole suite; H200: acceptance parts. Carry [".gpu-Z"] (lean stage).
set -u
. scripts/gpu/call_prologue.sh
timeout 120 dsv4_gpu_tests --gtest_filter='CudaQuant.Fp8Block*:CudaQuant.ActivationFp8Codes*:CudaOps.ActivationRoundTrip*:CudaQuant.MoeGemmFp8*:QuantizedFixtures/CudaQuantizedWeights.*' > $D/tests.txt 2>&1
el "tests rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]|Failure|nothing to compare" $D/tests.txt | head
pack
prefill_ab
Q="dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto --prefill 128 --batch 1 --decode-steps 16 --reps 3 --warmup 1 --spec-tokens 0 --context 1024 --cuda-weights quantized"
for a in "--activation-quant fp8" ""; do
  timeout 40 $Q $a > $D/d.txt 2>&1; echo "decode quantised ${a:-bf16 activations}: $(grep -E 'decode batch' $D/d.txt)"; cat $D/d.txt >> $D/decode.txt
done
el bench; pack
suite_and_h200_acceptance
