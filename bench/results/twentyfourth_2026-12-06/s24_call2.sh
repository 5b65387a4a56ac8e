#!/bin/bash
# Session 24, call 2: split attention: first tile from zeros (no O zeroing / rescale / reload), Q·Kᵀ split over warps at
# nks <= 4, softmax over the
# tile's key steps only (.gpu-N lib). Attention tests + memcheck/racecheck on the new lib, A/B vs the stage (db258f6),
# tiny prefill, the bf16 timeline.
set -u
R=$(pwd); S=$R/.gpu-X; [ -f $S/env.sh ] || (cd $S && tar xJf stage.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf all.tgz --exclude=all.tgz --exclude='*.csv' --exclude='*.tgz' --exclude='*.ncu-rep' . 2>/dev/null); }
rm -rf .gpu-N/lib; tar xJf .gpu-N/lib.tar.xz -C .gpu-N; md5sum .gpu-N/lib/libdsv4.so | tee $D/md5_new.txt
NL=$R/.gpu-N/lib
F='*Attention*:CudaKvFp8.*:CudaPaged.*:CudaGraph*:*Logits*'
LD_LIBRARY_PATH=$NL:$LD_LIBRARY_PATH timeout 150 dsv4_gpu_tests --gtest_filter="$F" > $D/new_attn_tests.txt 2>&1; el "new attention tests rc=$?"; grep -E "PASSED|FAILED" $D/new_attn_tests.txt | head; pack
LD_LIBRARY_PATH=$NL:$LD_LIBRARY_PATH timeout 100 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaOps.Attention*:CudaKvFp8.Attention' > $D/memcheck.txt 2>&1; el "memcheck rc=$?"; tail -2 $D/memcheck.txt; pack
LD_LIBRARY_PATH=$NL:$LD_LIBRARY_PATH timeout 100 compute-sanitizer --tool racecheck dsv4_gpu_tests --gtest_filter='CudaOps.AttentionSmallHeadsPrefill:CudaOps.AttentionFlashShapes' > $D/racecheck.txt 2>&1; el "racecheck rc=$?"; tail -2 $D/racecheck.txt; pack
OUT=$D/ab AB_LIBS="head=.gpu-X/lib new=.gpu-N/lib" AB_BATCH="1" AB_CASES="b16:--contexts 1024,32768;f8:--contexts 32768,1048575 --kv-cache-dtype fp8;q:--contexts 1024 --cuda-weights quantized" AB_ROUNDS=2 AB_TIMEOUT=90 STAGE=$S bash $S/scripts/gpu/suites/ab.sh > $D/ab.txt 2>&1; el "ab"; tail -24 $D/ab.txt; pack
for lib in head new head new; do L=$S/lib; [ $lib = new ] && L=$NL
  LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH timeout 60 dsv4 bench -m models/dsv4-tiny-kjv --device cuda --modes auto --prefill 8192 --batch 1 --decode-steps 2 --reps 10 --warmup 1 --spec-tokens 0 > $D/tiny_prefill_$lib.txt 2>&1
  echo "$lib $(grep -E '^prefill' $D/tiny_prefill_$lib.txt)"
done; el "tiny prefill"; pack
P=$R/tools/profile
LD_LIBRARY_PATH=$NL:$LD_LIBRARY_PATH LD_PRELOAD=$S/lib/libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=$D/t_new.csv timeout 90 dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto --prefill 128 --batch 1 --decode-steps 16 --reps 2 --warmup 1 --spec-tokens 0 --kv-cache-memory 16000000000 --context 1024 > $D/t_new.txt 2>&1
python3 $P/kernel_timeline.py $D/t_new.csv --steps 16 > $D/timeline_new.txt 2>&1; head -12 $D/timeline_new.txt; el "timeline"; pack
