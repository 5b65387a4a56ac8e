#!/bin/bash
# Session 35 call 2: the indexer's bitonic sort with its j < 32 stages in registers and select_topk's alternating
# histograms (uncommitted; .gpu-Z = its lean stage, .gpu-A = main's libdsv4.so as a thin lib). Carry [".gpu-Z",
# ".gpu-A"], kind nvidia-h200. The indexer tests + memcheck + racecheck, the whole suite on the candidate, then on an
# H200 the MTP norms' acceptance; ncu of the indexer at 32k on both libraries; the contexts A/B (ab suite); on an
# H200 the serve table at 1, 16, 64, 256.
set -u
export THIN_LIBS=.gpu-A
. scripts/gpu/call_prologue.sh
OLD=$R/.gpu-A/lib
STAGE=$S OUT=$D/idx PHASES=tests,memcheck,racecheck TESTS_TIMEOUT=90 SAN_TIMEOUT=90 \
  timeout 200 bash "$S/scripts/gpu/suites/longctx.sh" > "$D/idx.log" 2>&1
el "indexer tests (candidate):"; cat "$D/idx.log" | grep -v "^$" | head -20
timeout 150 dsv4_gpu_tests >"$D/suite.txt" 2>&1
el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" "$D/suite.txt" | head; gzip -9f "$D/suite.txt"; pack
if [[ $CARD == *H200* ]]; then acc rms rms_norm 64 75; fi
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for lib in new old; do
  pre=$S/lib; [ $lib = old ] && pre=$OLD
  LD_LIBRARY_PATH=$pre:$LD_LIBRARY_PATH timeout 80 $NCU --clock-control none --kernel-name regex:'indexer' \
    --metrics gpu__time_duration.sum --csv --page raw --print-units base \
    dsv4 bench --synthetic flash --layers 3 --device cuda --modes none --prefill 128 --batch 1 \
    --contexts 32768 --decode-steps 4 --reps 2 --warmup 1 --spec-tokens 0 \
    --kv-cache-memory 16000000000 > "$D/ncu_$lib.csv" 2> "$D/ncu_$lib.log"
  el "ncu indexer at 32k, $lib lib rc=$?:"
  python3 tools/profile/ncu_summary.py "$D/ncu_$lib.csv" --above 8 | tail -4
done
pack
[ "$(left)" -gt 150 ] && { STAGE=$S OUT=$D/ab AB_LIBS="main=.gpu-A new=$S/lib" AB_CASES="ctx:--contexts 1024,32768,1048575" \
  AB_ROUNDS=2 AB_TIMEOUT=45 timeout $(( $(left) - 10 )) bash "$S/scripts/gpu/suites/ab.sh" > "$D/ab.log" 2>&1
  el "contexts A/B:"; tail -12 "$D/ab.log"; pack; }
[[ $CARD == *H200* ]] || exit 0
acc serve serve 1,16,64,256 120
acc contexts contexts 64 45
acc longctx longctx 64 95
