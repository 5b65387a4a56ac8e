#!/bin/bash
# Session 35 call 4, on `main` at c4260fc (libdsv4.so = call 2's verified 4675d945; dsv4 gains the bench context-row
# bound): carry [".gpu-Z"], kind nvidia-h200. On an H200: the whole suite (issue 20: after the last CUDA change,
# 1fc42b7), the MTP norms' 20 points, the serve table at 1 / 16 / 64 / 256 (issue 18), the contexts part (64 steps a
# row) and an 8-step bf16 run beside it, the indexer's launches at 32k by ncu (issue 16), the quant part if time is
# left. On an H100: only the 8- vs 64-step contexts comparison (bf16), then out.
set -u
. scripts/gpu/call_prologue.sh
F="dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto --spec-tokens 0 --kv-cache-memory 16000000000 --prefill 128 --batch 1 --reps 3 --warmup 1"
steps_ab() {
  for n in 8 64; do
    timeout 90 $F --contexts 1024,32768 --decode-steps $n > "$D/ctx_steps$n.log" 2>&1
    el "contexts bf16, --decode-steps $n:"; grep -E '^decode at context' "$D/ctx_steps$n.log"
  done
  pack
}
if [[ $CARD != *H200* ]]; then steps_ab; exit 0; fi
timeout 150 dsv4_gpu_tests >"$D/suite.txt" 2>&1
el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" "$D/suite.txt" | head; gzip -9f "$D/suite.txt"; pack
acc rms rms_norm 64 55
if [ "$(left)" -ge 110 ]; then acc serve serve 1,16,64,256 110; else acc serve64 serve 64 45; fi
acc contexts contexts 64 45
[ "$(left)" -gt 100 ] && steps_ab
if [ "$(left)" -gt 60 ]; then
  STAGE=$S OUT=$D/longctx PHASES=kernels NCU_TIMEOUT=$(( $(left) - 10 )) timeout $(( $(left) - 5 )) \
    bash "$S/scripts/gpu/suites/longctx.sh" > "$D/longctx.log" 2>&1
  el "indexer launches at 32k (ncu):"; sed -n '/^launches longer than/,$p' "$D/longctx.log"; pack
fi
acc quant quant 64 40
