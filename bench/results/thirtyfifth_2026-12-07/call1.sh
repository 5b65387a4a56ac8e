#!/bin/bash
# Session 35 call 1 (was session 34's s34_next.sh, reordered: on an H200 the MTP norms' acceptance right after the suite).
# The next session's first call, on `main` as session 34 left it: build, `STAGE_LEAN=1 scripts/gpu/stage.sh build
# .gpu-Z`, carry [".gpu-Z"], kind nvidia-h200. No .cu / .cuh edit since 2149c2d (whole suite 137 passed on an H100),
# but libdsv4's runtime gained the prompt-step trimming after it (host code, off by default): the whole suite runs
# first, on any card.
# 1. the tiny server at concurrency 64 with the load generator in 4 worker processes and in 1 (b34e1fc), alternating:
#    whether the single Python process set the pace (client_cpu_fraction near 1) and what the ratio is without it;
#    then DSV4_PROMPT_STEP_GRAPHS=1 against 0 (prompt steps trimmed to sizes that replay a graph) and the debug split;
# 2. on an H200: the MTP norms' acceptance (20 points against Triton on 2149c2d's bands), the
#    contexts / quant / serve (Flash + tiny, levels 1,16,64,256) / longctx parts.
set -u
. scripts/gpu/call_prologue.sh
timeout 170 dsv4_gpu_tests >"$D/suite.txt" 2>&1
el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" "$D/suite.txt" | head; gzip -9f "$D/suite.txt"; pack
if [[ $CARD == *H200* ]]; then acc rms rms_norm 64 75; fi
serve_part() {
for round in 1; do
  for p in 4 1; do
    STAGE=$S OUT=$D/serve_p${p}_r$round MODELS=tiny LEVELS=64 MAX_S=10 LOAD_ARGS="--requests-per-slot 8 --processes $p" \
      BENCH_S=60 timeout 60 bash "$S/scripts/gpu/suites/serve.sh" > "$D/serve_p${p}_r$round.log" 2>&1
    el "tiny serve, $p client process(es), round $round: $(grep -E 'concurrency 64: server' "$D/serve_p${p}_r$round.log")"
    grep -E "client:|engine:" "$D/serve_p${p}_r$round.log"
    pack
  done
done
# The per-step token budget: fewer, larger prompt steps (each carries ~1.4 ms of host work on the H100) or smaller ones.
STAGE=$S OUT=$D/serve_mbt MODELS=tiny LEVELS=64 MAX_S=10 MBT="4096 16384" \
  LOAD_ARGS="--requests-per-slot 8 --processes 4" BENCH_S=60 timeout 90 bash "$S/scripts/gpu/suites/serve.sh" \
  > "$D/serve_mbt.log" 2>&1
el "tiny serve, --max-batch-tokens 8192 (default) / 4096 / 16384:"; grep -E "concurrency 64: server|engine:" "$D/serve_mbt.log"
pack
# Prompt steps trimmed to sizes that replay a graph (DSV4_PROMPT_STEP_GRAPHS=1, off by default) against the default,
# 4 client processes, alternating.
for round in 1; do
  for g in 1 0; do
    DSV4_PROMPT_STEP_GRAPHS=$g STAGE=$S OUT=$D/serve_g${g}_r$round MODELS=tiny LEVELS=64 MAX_S=10 \
      LOAD_ARGS="--requests-per-slot 8 --processes 4" BENCH_S=60 timeout 60 bash "$S/scripts/gpu/suites/serve.sh" \
      > "$D/serve_g${g}_r$round.log" 2>&1
    el "tiny serve, DSV4_PROMPT_STEP_GRAPHS=$g, round $round: $(grep -E 'concurrency 64: server' "$D/serve_g${g}_r$round.log")"
    grep -E "engine:" "$D/serve_g${g}_r$round.log"
  done
done
pack
# Where a prompt step's host time goes (scheduler.cc's debug line: plan / start / wait / emit ms; session 34's H100
# calls: prompt steps 2.8 ms of which 1.4 device wait).
DSV4_LOG_LEVEL=debug STAGE=$S OUT=$D/serve_debug MODELS=tiny LEVELS=64 MAX_S=10 LOAD_ARGS="--requests-per-slot 8" \
  BENCH_S=60 timeout 60 bash "$S/scripts/gpu/suites/serve.sh" > "$D/serve_debug.log" 2>&1
python3 - "$D/serve_debug/serve_tiny.log" <<'PY'
import re, statistics, sys
rows = [tuple(map(float, m.groups())) for m in re.finditer(
    r"prefill step \d+: (\d+) tokens, (\d+) chunks; ms: plan ([\d.]+), start ([\d.]+), wait ([\d.]+), emit ([\d.]+)",
    open(sys.argv[1]).read())]
if rows:
    cols = list(zip(*rows))
    print(len(rows), "prompt steps, medians: tokens %.0f chunks %.0f | plan %.3f start %.3f wait %.3f emit %.3f ms"
          % tuple(statistics.median(c) for c in cols))
# run_target's line: whether each forward above the decode sizes replayed a prefill bucket or ran eager, and its launch
fw = re.findall(r"target forward of (\d+) tokens (eager|replayed) at (\d+); host ms: upload ([\d.]+), launch ([\d.]+)",
                open(sys.argv[1]).read())
for kind in ("eager", "replayed"):
    launch = [float(f[4]) for f in fw if f[1] == kind]
    if launch:
        print("%d %s forwards above the decode sizes: launch median %.3f ms, total %.3f s"
              % (len(launch), kind, statistics.median(launch), sum(launch) / 1e3))
PY
pack
}
[ "$(left)" -gt 200 ] && serve_part
[[ $CARD == *H200* ]] || exit 0
acc contexts contexts 64 45
acc quant quant 64 60
acc serve serve 1,16,64,256 120
acc longctx longctx 64 95
