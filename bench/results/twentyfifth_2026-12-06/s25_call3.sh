#!/bin/bash
# Session 25, call 3: stage = main 5f2ca51 + the pipelined decode tests restarting from the prompt (lib md5 0ae1d7dc, as
# call 2's); .gpu-C = the same + mhc weights before the PDL wait (fn's first pass, the norm's weights by cp.async,
# pre's scale/base) and reduce_partials' unconditional unrolled loads.
# H200: acceptance on the stage, then the candidate's tests + A/B. H100: suite on the candidate, sanitizers, A/B, timeline.
set -u
R=$(pwd); S=$R/.gpu-Y; (cd $S && tar xJf stage.tar.xz); tar xJf .gpu-C/lib.tar.xz -C .gpu-C
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf all.tgz --exclude=all.tgz --exclude='*.csv' --exclude='*.tgz' --exclude='*.ncu-rep' . 2>/dev/null); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so .gpu-C/lib/libdsv4.so | tee $D/md5.txt
C="env LD_LIBRARY_PATH=$R/.gpu-C/lib:$LD_LIBRARY_PATH"
timeout 60 dsv4_gpu_tests --gtest_filter='CudaSampleTokens.Pipelined*' > $D/sample_tests.txt 2>&1; el "pipelined tests rc=$?"; grep -E "^\[  (PASSED|FAILED)|Failure|Which is" $D/sample_tests.txt | head; pack
ab() { OUT=$D/ab AB_LIBS="head=.gpu-Y/lib new=.gpu-C/lib" AB_BATCH="$1" AB_CASES="b16:--contexts 1024,32768;q:--contexts 1024 --cuda-weights quantized" AB_ROUNDS=$2 AB_TIMEOUT=60 STAGE=$S bash $S/scripts/gpu/suites/ab.sh > $D/ab.txt 2>&1; el "ab"; tail -20 $D/ab.txt; pack; }
san() { $C timeout 40 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaOps.HcPre*' > $D/memcheck.txt 2>&1; el "memcheck rc=$?"; tail -1 $D/memcheck.txt
  $C timeout 60 compute-sanitizer --tool racecheck dsv4_gpu_tests --gtest_filter='CudaOps.HcPreAndHeadWithNorm' > $D/racecheck.txt 2>&1; el "racecheck rc=$?"; tail -1 $D/racecheck.txt; pack; }
if [[ $CARD == *H200* ]]; then
  STAGE=$S OUT=$D/acc ACC_SERVE_LEVELS=64 ACC_BUDGET=270 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "acceptance"; pack
  grep -hE "^\[  FAILED" $D/acc/tests/*.log 2>/dev/null | head; tail -32 $D/acc.txt
  LEFT=$(( 560 - ($(date +%s)-T0) - 60 )); [ $LEFT -gt 30 ] && { $C timeout $LEFT dsv4_gpu_tests > $D/suite.txt 2>&1; el "candidate suite rc=$?"; grep -E "^\[  (PASSED|FAILED)" $D/suite.txt | head -8; pack; }
  ab 1 1; exit 0
fi
# run.sh's env.sh puts the stage's lib first: the candidate's suite runs the binary directly.
$C timeout 150 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite (candidate lib) rc=$?"; grep -E "^\[  (PASSED|FAILED)" $D/suite.txt | head -8; pack
san
ab "1,16" 2
