#!/bin/bash
# For the next session's first call (`main` as left by session 31; nothing unverified pending): stage
# `STAGE_LEAN=1 scripts/gpu/stage.sh build .gpu-Z` (targets dsv4 dsv4_cli dsv4_gpu_tests dsv4_rms_norm_lab
# bench_attention bench_moe_gemm), carry [".gpu-Z"], `kind: nvidia-h200`. Any card: the whole GPU suite (on an H200 it
# is issue 20's "suite green on an H200" point). H200: then the acceptance parts by priority while LIMIT (default
# 575 s) lasts. H100: the prefill figures of the current library (bf16 / quantised / --activation-quant fp8).
set -u
. scripts/gpu/call_prologue.sh  # R, S, D, CARD, el, left, pack, acc; md5s
timeout 150 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head
gzip -9 $D/suite.txt; pack
if [[ $CARD == *H200* ]]; then
  acc rms rms_norm 64 75
  acc quant quant,prefill 64 45
  acc contexts contexts 64 45
  acc serve64 serve 64 75
  exit 0
fi
for x in "--cuda-weights bf16" "--cuda-weights quantized" "--cuda-weights quantized --activation-quant fp8"; do
  timeout 60 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1 $x > $D/p.txt 2>&1
  echo "$x: $(grep -E 'prefill +4096' $D/p.txt)"
done
pack
