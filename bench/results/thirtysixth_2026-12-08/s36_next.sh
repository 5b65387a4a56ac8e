#!/bin/bash
# The next session's first call (session 36 got one H100 call and no more device time; its call 2 never started).
# Before it, here: `git apply bench/results/thirtysixth_2026-12-08/unverified_decode_step_launches_cuda.patch` (the
# embedding writes the n hyper-connection streams itself, a uniform decode's logits skip the row gather, a uniform
# decode forward samples + publishes inside its graph: three launches a pipelined step, ~20 us in call 1's trace),
# build, then
#   STAGE_LEAN=1 scripts/gpu/stage.sh build .gpu-Z && (cd .gpu-Z && rm -rf bench bin env.sh lib scripts tools)
#   and main's library thin: scripts/gpu/stage-lib.sh <main's build> .gpu-A   (main = the commit before the patch)
# carry [".gpu-Z", ".gpu-A"], kind nvidia-h200. Land the patch only if the suite passes (md5 of the lib printed).
# On an H200 the issues' acceptance parts follow (issue 20: suite + MTP-norm points; 18: the serve table; 16: contexts
# and the indexer's launches at 32k); on any card the decode-step A/B main vs the patch at 1k / 32k, both orders.
# Judge the patch by the A/B's pipelined column (generate's step): the patch's device step (graph replays) now
# includes the sampling and the publish, which main's does not.
set -u
STAGE_DIR=.gpu-Z THIN_LIBS=.gpu-A . scripts/gpu/call_prologue.sh
timeout 150 dsv4_gpu_tests >"$D/suite.txt" 2>&1
el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" "$D/suite.txt" | head; gzip -9f "$D/suite.txt"; pack
ab() {  # ab ORDER ROUNDS
  STAGE=$S OUT=$D/ab_$1 AB_LIBS="$2" AB_CASES="ctx:--contexts 1024,32768" AB_ROUNDS=$3 AB_TIMEOUT=60 \
    timeout $(( $(left) - 3 )) bash $S/scripts/gpu/suites/ab.sh > "$D/ab_$1.log" 2>&1
  el "ab $1 rc=$?"; tail -8 "$D/ab_$1.log"; pack
}
if [[ $CARD == *H200* ]]; then
  acc rms rms_norm 64 55
  if [ "$(left)" -ge 250 ]; then acc serve serve 1,16,64,256 110; else acc serve64 serve 64 45; fi
  acc contexts contexts 64 45
  [ "$(left)" -gt 150 ] && ab fwd "main=.gpu-A new=$S/lib" 1
  if [ "$(left)" -gt 60 ]; then
    STAGE=$S OUT=$D/longctx PHASES=kernels NCU_TIMEOUT=$(( $(left) - 10 )) timeout $(( $(left) - 5 )) \
      bash "$S/scripts/gpu/suites/longctx.sh" > "$D/longctx.log" 2>&1
    el "indexer launches at 32k (ncu):"; sed -n '/^launches longer than/,$p' "$D/longctx.log"; pack
  fi
else
  ab fwd "main=.gpu-A new=$S/lib" 2
  [ "$(left)" -gt 150 ] && ab rev "new=$S/lib main=.gpu-A" 2
  acc quant quant 64 40
fi
