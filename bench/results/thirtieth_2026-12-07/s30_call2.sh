#!/bin/bash
# Session 30, call 2: the 64-head prefill attention (attention_prefill.cu) — attention tests, memcheck / racecheck on
# its test, then bf16 Flash-slice prefill 4,096 / 32,768 tokens with it off (DSV4_PREFILL_ATTENTION=0) and on.
set -u
R=$(pwd); S=$R/.gpu-Z; (cd $S && tar xJf stage.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf /tmp/all.tmp.$BASHPID --exclude='*.csv' --exclude='*.tgz' . 2>/dev/null; mv /tmp/all.tmp.$BASHPID all.tgz); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so | tee $D/md5.txt
timeout 150 dsv4_gpu_tests --gtest_filter='CudaOps.Attention*:CudaKvFp8.Attention' > $D/attn.txt 2>&1; el "attention tests rc=$?"
grep -E "^\[  (PASSED|FAILED)|OK \]|FAILED \]|Failure|mismatch|max" $D/attn.txt | head -20; pack
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
timeout 100 $SAN --tool memcheck dsv4_gpu_tests --gtest_filter='CudaOps.AttentionFlashPrefill' > $D/memcheck.txt 2>&1; el "memcheck rc=$?"; grep -E "ERROR SUMMARY|PASSED|FAILED" $D/memcheck.txt | head -3
for T in 4096 32768; do
  for P in 0 1; do
    DSV4_PREFILL_ATTENTION=$P timeout 100 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill $T --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1 > $D/p_${T}_$P.txt 2>&1
    el "T=$T P=$P rc=$?"; grep -E "^prefill" $D/p_${T}_$P.txt
  done
done
pack
LD_PRELOAD=$S/lib/libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=/tmp/t.csv timeout 100 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1 > $D/trace.txt 2>&1
python3 $S/tools/profile/kernel_timeline.py /tmp/t.csv --where "moe_gemm_wgmma_kernel>300" --steps 3 > $D/tl_4096.txt 2>&1; head -8 $D/tl_4096.txt
timeout 120 $SAN --tool racecheck dsv4_gpu_tests --gtest_filter='CudaOps.AttentionFlashPrefill' > $D/racecheck.txt 2>&1; el "racecheck rc=$?"; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|PASSED|FAILED" $D/racecheck.txt | head -3
pack
