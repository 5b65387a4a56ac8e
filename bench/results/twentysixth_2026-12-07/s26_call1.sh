#!/bin/bash
# Session 26, call 1: stage = main 740ed9d (lib md5 4ba7d453 unstripped); .gpu-C = the same + the mHC
# weights-before-wait patch (session 25's unverified_mhc_weights_before_wait_cuda.patch).
# H200: acceptance on the stage (all issue figures), then the candidate's suite, sanitizers, A/B as time allows.
# H100: the candidate's suite, sanitizers, A/B at b=1,16, and the stage's pipelined test.
set -u
R=$(pwd); S=$R/.gpu-Y; (cd $S && tar xJf stage.tar.xz); tar xJf .gpu-C/lib.tar.xz -C .gpu-C
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }; left() { echo $(( 575 - ($(date +%s)-T0) )); }
pack() { (cd $D && tar czf all.tgz --exclude=all.tgz --exclude='*.csv' --exclude='*.tgz' --exclude='*.ncu-rep' . 2>/dev/null); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so .gpu-C/lib/libdsv4.so | tee $D/md5.txt
C="env LD_LIBRARY_PATH=$R/.gpu-C/lib:$LD_LIBRARY_PATH"
suite() { $C timeout $1 dsv4_gpu_tests > $D/suite_candidate.txt 2>&1; el "candidate suite rc=$?"; grep -E "^\[  (PASSED|FAILED)" $D/suite_candidate.txt | head -8; pack; }
san() { $C timeout 40 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaOps.HcPre*' > $D/memcheck.txt 2>&1; el "memcheck rc=$?"; tail -1 $D/memcheck.txt
  $C timeout 60 compute-sanitizer --tool racecheck dsv4_gpu_tests --gtest_filter='CudaOps.HcPreAndHeadWithNorm' > $D/racecheck.txt 2>&1; el "racecheck rc=$?"; tail -1 $D/racecheck.txt; pack; }
ab() { OUT=$D/ab AB_LIBS="head=.gpu-Y/lib new=.gpu-C/lib" AB_BATCH="$1" AB_CASES="b16:--contexts 1024,32768;q:--contexts 1024 --cuda-weights quantized" AB_ROUNDS=$2 AB_TIMEOUT=60 STAGE=$S timeout $3 bash $S/scripts/gpu/suites/ab.sh > $D/ab.txt 2>&1; el "ab"; tail -14 $D/ab.txt; pack; }
if [[ $CARD == *H200* ]]; then
  STAGE=$S OUT=$D/acc ACC_SERVE_LEVELS=1,16,64,256 ACC_BUDGET=420 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "acceptance"; pack
  grep -hE "^\[  FAILED" $D/acc/tests/*.log 2>/dev/null | head; tail -34 $D/acc.txt
  L=$(left); [ $L -gt 100 ] && suite $(( L < 150 ? L-10 : 140 ))
  L=$(left); [ $L -gt 110 ] && san
  L=$(left); [ $L -gt 50 ] && ab 1 1 $(( L-5 ))
  exit 0
fi
timeout 60 dsv4_gpu_tests --gtest_filter='CudaSampleTokens.Pipelined*' > $D/pipelined_stage.txt 2>&1; el "stage pipelined test rc=$?"; grep -E "^\[  (PASSED|FAILED)|Failure" $D/pipelined_stage.txt | head -4
suite 150
san
L=$(( $(left) - 260 )); [ $L -gt 60 ] && ab "1,16" 2 $(( L ))
