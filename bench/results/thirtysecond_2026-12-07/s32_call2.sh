#!/bin/bash
# Session 32, call 2 (after call 1's fp8 test failed only on the FP8-routed act bound: tolerance per format now, and
# the DSV4_MOE_FP8 switch): the fp8 test, the engine's prefill A/B (DSV4_MOE_FP8=1 / 0 under --activation-quant fp8,
# two rounds, plus quantised and bf16), ncu stall profile of the lab's E4M3 gated kernel, the whole GPU suite.
set -u
. scripts/gpu/call_prologue.sh
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 60 dsv4_gpu_tests --gtest_filter='CudaQuant.MoeGemmFp8*' > $D/fp8_test.txt 2>&1; el "fp8 test rc=$?"
grep -E "rel err|FAILED|PASSED|Failure" $D/fp8_test.txt | head -20
P="dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1"
for round in 1 2; do
  for x in "1 --cuda-weights quantized --activation-quant fp8" "0 --cuda-weights quantized --activation-quant fp8" "1 --cuda-weights quantized" "1 --cuda-weights bf16"; do
    set -- $x; sw=$1; shift
    DSV4_MOE_FP8=$sw timeout 60 $P "$@" > $D/p.txt 2>&1
    echo "r$round DSV4_MOE_FP8=$sw $*: $(grep -E 'prefill +4096' $D/p.txt)"; cat $D/p.txt >> $D/prefill.txt
  done
done
el prefill; pack
timeout 120 $NCU --clock-control none -k regex:moe_gemm_fp8_kernel -s 2 -c 1 --section WarpStateStats --section SourceCounters --section SpeedOfLight --import-source no --page source --print-source sass --csv bench_moe_gemm fp8 > $D/ncu_src.csv 2> $D/ncu_err.txt
el "ncu rc=$?"; python3 $S/tools/profile/sass_stalls.py $D/ncu_src.csv > $D/stalls.txt 2>&1; head -40 $D/stalls.txt
gzip -9 $D/ncu_src.csv; pack
timeout 150 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head
gzip -9 $D/suite.txt; pack
