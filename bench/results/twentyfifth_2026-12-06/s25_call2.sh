#!/bin/bash
# Session 25, call 2: stage = main 88fec02 + Engine::decode_greedy / bench's pipelined context rows (host only);
# .gpu-C = the same + the Sinkhorn's fast divisions (mhc.cu). H200: acceptance first. Then: whole suite on the
# candidate lib, A/B stage vs candidate, contexts (pipelined figures), timelines.
set -u
R=$(pwd); S=$R/.gpu-Y; (cd $S && tar xJf stage.tar.xz); tar xJf .gpu-C/lib.tar.xz -C .gpu-C
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf all.tgz --exclude=all.tgz --exclude='*.csv' --exclude='*.tgz' --exclude='*.ncu-rep' . 2>/dev/null); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so .gpu-C/lib/libdsv4.so | tee $D/md5.txt
if [[ $CARD == *H200* ]]; then
  STAGE=$S OUT=$D/acc ACC_SERVE_LEVELS=1,16,64,256 ACC_BUDGET=430 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "acceptance"; pack
  grep -hE "^\[  FAILED" $D/acc/tests/*.log 2>/dev/null | head; tail -32 $D/acc.txt
  LD_LIBRARY_PATH=$R/.gpu-C/lib:$LD_LIBRARY_PATH timeout 60 dsv4_gpu_tests --gtest_filter='CudaOps.Hc*:CudaModel*' > $D/cand_tests.txt 2>&1; el "candidate hc tests rc=$?"; tail -1 $D/cand_tests.txt
  OUT=$D/ab AB_LIBS="head=.gpu-Y/lib new=.gpu-C/lib" AB_BATCH="1" AB_CASES="b16:--contexts 1024;q:--contexts 1024 --cuda-weights quantized" AB_ROUNDS=1 AB_TIMEOUT=60 STAGE=$S bash $S/scripts/gpu/suites/ab.sh > $D/ab.txt 2>&1; el "ab"; tail -8 $D/ab.txt; pack
  exit 0
fi
LD_LIBRARY_PATH=$R/.gpu-C/lib:$LD_LIBRARY_PATH TESTS_S=110 OUT=$D/suite bash $S/scripts/gpu/run.sh tests > $D/suite.txt 2>&1; el "suite (candidate lib)"; tail -2 $D/suite.txt; grep -hE "^\[  FAILED" $D/suite/*.log 2>/dev/null | head; grep -h "PipelinedDecodeGreedy" $D/suite/*.log | head -3; pack
OUT=$D/ab AB_LIBS="head=.gpu-Y/lib new=.gpu-C/lib" AB_BATCH="1,16" AB_CASES="b16:--contexts 1024,32768;q:--contexts 1024 --cuda-weights quantized" AB_ROUNDS=2 AB_TIMEOUT=60 STAGE=$S bash $S/scripts/gpu/suites/ab.sh > $D/ab.txt 2>&1; el "ab"; tail -20 $D/ab.txt; pack
STAGE=$S OUT=$D/acc ACC_PARTS=contexts ACC_BUDGET=100 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "contexts"; tail -10 $D/acc.txt; pack
F=(--synthetic flash --layers 3 --device cuda --modes auto --prefill 128 --batch 1 --decode-steps 16 --reps 2 --warmup 1 --spec-tokens 0 --kv-cache-memory 16000000000)
for L in Y C; do [ $(( $(date +%s)-T0 )) -gt 420 ] && break
  LD_LIBRARY_PATH=$R/.gpu-$L/lib:$LD_LIBRARY_PATH LD_PRELOAD=$S/lib/libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=$D/t_$L.csv timeout 90 dsv4 bench "${F[@]}" --context 1024 > $D/t_$L.txt 2>&1
  python3 $R/tools/profile/kernel_timeline.py $D/t_$L.csv --steps 16 > $D/timeline_$L.txt 2>&1; head -12 $D/timeline_$L.txt; gzip $D/t_$L.csv
done; el "timelines"; pack
