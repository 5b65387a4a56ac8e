#!/bin/bash
# Session 34, second call: the H200 MTP-norm bands (rms_norm.cu's automatic launch, rows of <= 512 vectors between 4
# and 20 rows per SM) — the whole suite after that CUDA edit, then on an H200 the rms_norm acceptance part (20 points
# against Triton, C-API parity); then the tiny server at concurrency 64 with and without session 33's notifier thread
# (.gpu-Z/alt/libdsv4_server.so: 244a7a2 reverted, loaded from next to a copy of dsv4), alternating, same card.
set -u
. scripts/gpu/call_prologue.sh
timeout 170 dsv4_gpu_tests >"$D/suite.txt" 2>&1
el "suite rc=$?"
grep -E "^\[  (PASSED|FAILED)|FAILED \]" "$D/suite.txt" | head
gzip -9f "$D/suite.txt"; pack
[[ $CARD == *H200* ]] && acc rms rms_norm 64 75
rm -rf /tmp/altstage && cp -r "$S" /tmp/altstage && cp "$R/.gpu-Z/alt/libdsv4_server.so" /tmp/altstage/bin/
md5sum /tmp/altstage/bin/libdsv4_server.so "$S/lib/libdsv4_server.so" | tee -a "$D/md5.txt"
for round in 1 2; do
  for v in notifier inline; do
    st=$S; [ $v = inline ] && st=/tmp/altstage
    [ "$(left)" -lt 40 ] && { el "skip serve $v r$round"; continue; }
    STAGE=$st OUT=$D/serve_${v}_r$round MODELS=tiny LEVELS=64 MAX_S=10 LOAD_ARGS="--requests-per-slot 8" BENCH_S=60 \
      timeout 90 bash "$S/scripts/gpu/suites/serve.sh" > "$D/serve_${v}_r$round.log" 2>&1
    el "serve $v r$round: $(grep -E 'concurrency 64: server' "$D/serve_${v}_r$round.log")"
    grep -E "engine:" "$D/serve_${v}_r$round.log"
    pack
  done
done
