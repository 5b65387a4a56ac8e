#!/bin/bash
set -u
R=$(pwd); S=$R/.gpu-X; (cd $S && tar xJf stage.tar.xz); tar xJf .gpu-Q/lib.tar.xz -C .gpu-Q
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT
for lib in new c19d2af; do
  L=$S/lib; [ $lib = c19d2af ] && L=$R/.gpu-Q/lib
  LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH LD_PRELOAD=$S/lib/libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=/tmp/p_$lib.csv timeout 60 dsv4 bench -m models/dsv4-tiny-kjv --device cuda --modes auto --prefill 8192 --batch 1 --decode-steps 2 --reps 10 --warmup 1 --spec-tokens 0 > $D/p_$lib.txt 2>&1
  echo "== $lib"; grep -E "^prefill" $D/p_$lib.txt; python3 $S/fwsum.py /tmp/p_$lib.csv | tee $D/fwsum_$lib.txt
done
