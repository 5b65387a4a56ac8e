#!/bin/bash
# Session 36 moved the whole suite out of the H200-only branch: it verifies 2113913 (launch.cc) on any card.
# The next session's first call, on `main` as session 35 left it (last CUDA change 1fc42b7, lib 4675d945 stripped):
# build, `scripts/gpu/stage.sh build .gpu-T` (the full stage: the kernel tracer is needed), delete the unpacked dirs
# (`cd .gpu-T && rm -rf bench bin env.sh lib scripts tools`), carry [".gpu-T"], kind nvidia-h200, STAGE_DIR=.gpu-T.
# On an H200: the whole suite (issue 20: green after the last CUDA change), the MTP norms' 20 points (issue 20), the
# serve table at 1 / 16 / 64 / 256 (issue 18), contexts (issue 16), the indexer's launches at 32k by ncu (issue 16),
# then on any card: where the pipelined decode step's ~30 us above the replayed step go (CUPTI timeline of the
# pipelined steps at 32k: the upload, sample and publish launches and the gaps between them), quant if time is left.
set -u
STAGE_DIR=.gpu-T . scripts/gpu/call_prologue.sh
TR=$S/lib/libdsv4_kernel_trace.so
pipelined_trace() {
  # bench's context row: logits steps, sampled steps, pipelined steps (decode_greedy), then one step + 10 replays
  # (device_decode_step_ms): --skip-last 11 leaves the last pipelined steps.
  LD_PRELOAD=$TR DSV4_KERNEL_TRACE=$D/pipe.csv timeout 90 dsv4 bench --synthetic flash --layers 3 --device cuda \
    --modes auto --spec-tokens 0 --kv-cache-memory 16000000000 --prefill 128 --batch 1 --contexts 32768 \
    --decode-steps 32 --reps 2 --warmup 1 > "$D/pipe.txt" 2>&1
  el "pipelined trace rc=$?: $(grep -E '^decode at context' "$D/pipe.txt")"
  python3 $S/tools/profile/kernel_timeline.py "$D/pipe.csv" --steps 16 --skip-last 11 --launches \
    --json "$D/pipe.json" > "$D/pipe_tl.txt" 2>&1
  head -40 "$D/pipe_tl.txt"; gzip -9 "$D/pipe.csv"; pack
}
timeout 150 dsv4_gpu_tests >"$D/suite.txt" 2>&1
el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" "$D/suite.txt" | head; gzip -9f "$D/suite.txt"; pack
if [[ $CARD == *H200* ]]; then
  acc rms rms_norm 64 55
  if [ "$(left)" -ge 110 ]; then acc serve serve 1,16,64,256 110; else acc serve64 serve 64 45; fi
  acc contexts contexts 64 45
  if [ "$(left)" -gt 60 ]; then
    STAGE=$S OUT=$D/longctx PHASES=kernels NCU_TIMEOUT=$(( $(left) - 10 )) timeout $(( $(left) - 5 )) \
      bash "$S/scripts/gpu/suites/longctx.sh" > "$D/longctx.log" 2>&1
    el "indexer launches at 32k (ncu):"; sed -n '/^launches longer than/,$p' "$D/longctx.log"; pack
  fi
fi
[ "$(left)" -gt 100 ] && pipelined_trace
acc quant quant 64 40
