#!/bin/bash
# Session 31, call 2: .gpu-Z = lean stage of main with the operand-swapped MoE variant moved back into the kernel lab
# (moe.cu as before the session) and clang-format on moe_gemm_wgmma.cuh / rms_norm.cu. Whole suite (the verification
# after the last CUDA edit), bf16 / quantised prefill 4,096, an ncu stall profile of the lab's rs gated kernel; on an
# H200 then the acceptance parts.
set -u
. scripts/gpu/call_prologue.sh  # R, S, D, CARD, el, left, pack, acc; md5s
timeout 150 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head; gzip -9 $D/suite.txt; pack
for w in quantized bf16; do
  timeout 60 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1 --cuda-weights $w > $D/p_$w.txt 2>&1
  echo "$w: $(grep -E 'prefill +4096' $D/p_$w.txt)"
done
pack
if [[ $CARD == *H200* ]]; then
  acc rms rms_norm 64 75
  acc contexts contexts 64 45
  acc quant quant,prefill 64 45
  acc serve64 serve 64 75
  exit 0
fi
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 150 $NCU --clock-control none -k regex:moe_gemm_rs_kernel -s 2 -c 1 --section WarpStateStats --section SourceCounters \
  --import-source no --page source --print-source sass --csv bench_moe_gemm rs > /tmp/src.csv 2> $D/ncu_src.log
el "ncu rc=$?"; gzip -c /tmp/src.csv > $D/rs_src.csv.gz; python3 $S/tools/profile/sass_stalls.py /tmp/src.csv > $D/rs_stalls.txt 2>&1; head -40 $D/rs_stalls.txt | cut -c1-200
pack
