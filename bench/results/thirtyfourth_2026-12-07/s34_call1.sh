#!/bin/bash
# Session 34, first call: session 33's s33_next.sh (the FP8 product straight into out; x's codes once per input; the
# whole-engine fp8-activation test), the plain-loads late-weight MTP-norm instance (the Triton kernel's shape), the
# kF8MaxSpan / wgmma_rs / MoE-oracle folds — tests, then the whole suite (the landing proof) first; then, on an H200,
# the MTP-norm sweep; issue 17's quality part (its first GPU run); the E4M3 MoE ablations from a separately built lab binary (.gpu-Z/bench_moe_gemm_abl.xz:
# ablations_moe_fp8_lab.patch applied, timing only); the prefill A/B; the serve part at concurrency 64.
set -u
. scripts/gpu/call_prologue.sh
timeout 150 dsv4_gpu_tests --gtest_filter='DTypes/MtpNormCuda.*:CudaQuantActModel.*:CudaQuant.Fp8Block*:CudaQuant.ActivationFp8Codes*:CudaQuant.Moe*:QuantizedFixtures/CudaQuantizedWeights.*' > $D/tests.txt 2>&1
el "tests rc=$?"; grep -E "wide random model|^\[  (PASSED|FAILED)|FAILED \]|Failure|Expected|Which is|nothing to compare" $D/tests.txt | head -16
pack
timeout 150 dsv4_gpu_tests --gtest_filter='-DTypes/MtpNormCuda.*:CudaQuantActModel.*:CudaQuant.Fp8Block*:CudaQuant.ActivationFp8Codes*:CudaQuant.Moe*:QuantizedFixtures/CudaQuantizedWeights.*' >"$D/suite.txt" 2>&1
el "rest of the suite rc=$?"
grep -E "^\[  (PASSED|FAILED)|FAILED \]" "$D/suite.txt" | head
gzip -9f "$D/suite.txt"; pack
if [[ $CARD == *H200* ]]; then
  timeout 130 python3 bench/kernels/rms_norm/peers.py --lib $S/lib/libdsv4.so --no-compile --hidden 4096 \
    --tokens 128,192,256,320,384,512,768 --sweep 4096 --sweep-tokens 128,192,256,320,384,512,768 --rep 5 \
    --json $D/sweep.json > $D/sweep.log 2>&1
  el "sweep rc=$?"
  python3 - $D/sweep.json <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
print(j["device"])
for r in j["results"]:
    top = sorted(r.get("sweep", []), key=lambda x: x["us"])[:4]
    print(r["hidden"], r["tokens"], "ours %.2f [%s] triton %.2f best-triton %.2f" % (r["ours"], r["ours_launch"], r["triton"], r["triton_best"]))
    for t in top: print("    %.2f %s" % (t["us"], t["launch"]))
PY
  pack
fi
xz -dc $S/bench_moe_gemm_abl.xz > /tmp/bench_moe_gemm_abl && chmod +x /tmp/bench_moe_gemm_abl
timeout 60 /tmp/bench_moe_gemm_abl fp8 > $D/abl.txt 2>&1; el "fp8 ablations rc=$?"; grep -E "ms|error" $D/abl.txt | grep -v both | head -30
pack
prefill_ab
el prefill; pack
acc quality quality 64 70
[[ $CARD == *H200* ]] && acc serve64 serve 64 75
