#!/bin/bash
# Session 23, call 6: split attention's packed fp8 key rows fetched 4 vectors a thread before decoding (session 16's v2,
# ported to attend_tile), __launch_bounds__(256, 2). Suite, memcheck, A/B vs 60cc5cc (fp8 cache 32k / 1M, bf16 32k).
set -u
R=$(pwd); S=$R/.gpu-X; (cd $S && tar xJf stage.tar.xz); tar xJf .gpu-H/lib.tar.xz -C .gpu-H
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1 | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf all.tgz --exclude=all.tgz --exclude='*.csv' --exclude='*.tgz' . 2>/dev/null); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so | tee $D/md5.txt
TESTS_S=150 OUT=$D/suite bash $S/scripts/gpu/run.sh tests > $D/suite.txt 2>&1; el "suite"; tail -2 $D/suite.txt; grep -hE "^\[  FAILED" $D/suite/*.log 2>/dev/null | head; pack
timeout 60 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaKvFp8.Attention:CudaPaged.Attention*:CudaOps.AttentionSmallHeadsPrefill' > $D/memcheck.txt 2>&1; el "memcheck"; tail -2 $D/memcheck.txt; pack
OUT=$D/ab AB_LIBS="head=.gpu-H/lib new=.gpu-X/lib" AB_CASES="f8:--contexts 32768,1048575 --kv-cache-dtype fp8;b16:--contexts 32768" AB_ROUNDS=1 AB_TIMEOUT=90 STAGE=$S bash $S/scripts/gpu/suites/ab.sh > $D/ab.txt 2>&1; el "ab"; tail -16 $D/ab.txt; pack
