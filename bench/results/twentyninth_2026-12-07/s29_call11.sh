#!/bin/bash
# Session 29, call 11: the kernel lab after its refactor (one check-and-time routine for the bf16 and quantised
# Flash products, one hash for the fill kernels), on the final library (70e6eb60).
set -u
R=$(pwd); S=$R/.gpu-Z; (cd $S && tar xJf stage.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; md5sum $S/lib/libdsv4.so
timeout 150 bench_moe_gemm > $OUT/lab.txt 2>&1; echo "lab rc=$?"; cat $OUT/lab.txt
