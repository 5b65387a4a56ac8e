#!/usr/bin/env bash
# Issue 8 acceptance run (~8-9 min): the whole GPU suite (the MTP layer uses these kernels), then the kernel
# lab without its variant sweep (MTP-norm tests, C-API parity, C++ bench, peers incl. Triton / torch.compile
# / copy, ours with DSV4_PDL=0). Repository root, .gpu-stage carried; details under $OUT.
set -u
. .gpu-stage/env.sh
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee "$OUT/card.txt"
timeout "${SUITE_S:-150}" dsv4_gpu_tests --gtest_filter='-*MtpNorm*' >"$OUT/suite.txt" 2>&1
echo "suite rc=$?"; grep -E "tests ran|PASSED  \]|FAILED" "$OUT/suite.txt" | head -12
STAGE=$(mktemp -d)
cp .gpu-stage/lib/libdsv4.so .gpu-stage/bin/dsv4_gpu_tests .gpu-stage/bin/bench_mtp_norm "$STAGE/"
mkdir -p "$STAGE/tools/reference" "$STAGE/bench/kernels"
cp tools/reference/*.py "$STAGE/tools/reference/"; cp bench/kernels/*.py "$STAGE/bench/kernels/"
LAB_SWEEP_FLAG= LAB_NCU_S=0 LAB_PEERS_ARGS="--sweep 0" LAB_BENCH_ARGS="--hidden 4096,7168" \
  bench/kernels/mtp_norm_lab.sh "$STAGE" "$OUT"
