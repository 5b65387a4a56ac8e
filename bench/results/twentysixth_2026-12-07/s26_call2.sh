#!/bin/bash
# Session 26, call 2: stage = main be8d3c5 (the mHC weights-before-wait patch landed).
# H200: every acceptance figure (issues 16/17/18/20), then the MTP-norm sweep at the H200's miss points.
# H100: the contexts and quant parts only (current H100 figures), short.
set -u
R=$(pwd); S=$R/.gpu-Y; (cd $S && tar xJf stage.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }; LIM=${LIMIT:-575}; left() { echo $(( LIM - ($(date +%s)-T0) )); }
pack() { (cd $D && tar czf /tmp/all.tmp.$BASHPID --exclude='*.csv' --exclude='*.tgz' --exclude='*.ncu-rep' . 2>/dev/null; mv /tmp/all.tmp.$BASHPID all.tgz); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so | tee $D/md5.txt
( while sleep 25; do pack; done ) & PACKER=$!
if [[ $CARD == *H200* ]]; then
  STAGE=$S OUT=$D/acc ACC_PARTS=${PARTS:-tests,rms_norm,contexts,quant,prefill,serve} ACC_SERVE_LEVELS=1,16,64,256 ACC_BUDGET=$(( LIM - 40 < 440 ? LIM - 40 : 440 )) bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "acceptance"; pack
  grep -hE "^\[  FAILED" $D/acc/tests/*.log 2>/dev/null | head; tail -40 $D/acc.txt
  L=$(( $(left) - 100 )); if [ $L -gt 60 ]; then
    PEERS_ARGS="--hidden 4096,7168 --tokens 256,320,512 --sweep 4096,7168 --sweep-tokens 256,320,512" RMS_TESTS_S=1 PEERS_S=$((L-10)) \
      OUT=$D/sweep timeout $((L-5)) bash $S/scripts/gpu/run.sh rms_norm > $D/sweep.log 2>&1; el "mtp norm sweep"; grep -E "sweep best|MISS" $D/sweep.log | head -20; pack
  fi
  kill $PACKER 2>/dev/null; pack; exit 0
fi
echo "not an H200: nothing to run (the H100 figures of this code are call 1's)"
kill $PACKER 2>/dev/null; pack
