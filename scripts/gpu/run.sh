#!/usr/bin/env bash
# GPU checks of the CUDA backend from a staged folder (scripts/gpu/stage.sh): tests, CLI, sanitizers; logs to $OUT.
# Usage: run.sh [all|tests|bench|cli|san]
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=$PWD:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
export DSV4_SOURCE_DIR=$PWD
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
mode=${1:-all}
SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader | tee $OUT/gpu.txt
if [[ $mode == all || $mode == tests ]]; then
  timeout 200 ./dsv4_gpu_tests > $OUT/tests.txt 2>&1; echo "tests rc=$?"
  grep -E "tests ran|PASSED|FAILED  \]" $OUT/tests.txt | head -30
  grep -E "Failure" -A3 $OUT/tests.txt | grep -v mtp_norm | head -30
  grep -E "logit error|greedy|graph of|memory \[|MTP|seed" $OUT/tests.txt | grep -vE "prefill\+decode|chunks" | sed -E 's/(flipped choice\(s\)): .*/\1/' | cut -c1-220 | head -70
  grep -E "\[(F32|BF16)\] block" $OUT/tests.txt | awk '{print $1, $2, $3, $4, $NF}' | paste -sd' ' | head -c 1500; echo
fi
if [[ $mode == all || $mode == bench ]]; then
  DSV4_BENCH=1 timeout 120 ./dsv4_gpu_tests --gtest_filter='CudaBench.*' > $OUT/bench.txt 2>&1; echo "bench rc=$?"
  grep -E "bench model|prefill chunk|decode batch|FAILED|Failure" $OUT/bench.txt
fi
if [[ $mode == all || $mode == cli ]]; then
  ./dsv4 info -m tests/fixtures/hf/tiny_a --device cuda 2>&1 | grep -E "memory|error"; ./dsv4 info -m tests/fixtures/hf/tiny_a --device cuda --json 2>/dev/null | head -c 300 | tee $OUT/info.txt
  ./dsv4 generate -m tests/fixtures/hf/tiny_a --ids 5,6,7,8,9 -n 16 --device cuda --ignore-eos 2>&1 | tail -2 | tee $OUT/gen_cuda.txt
  ./dsv4 generate -m tests/fixtures/hf/tiny_a --ids 5,6,7,8,9 -n 16 --device cpu --ignore-eos 2>&1 | tail -2 | tee $OUT/gen_cpu.txt
fi
if [[ $mode == all || $mode == san ]]; then
  timeout 150 $SAN --tool memcheck --error-exitcode 9 ./dsv4_gpu_tests --gtest_filter='CudaOps.*:*CudaModelParity*:CudaEngine.*:CudaMtp.*' > $OUT/san_memcheck.txt 2>&1
  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|tests ran|PASSED|FAILED" $OUT/san_memcheck.txt | head -12
  timeout 150 $SAN --tool racecheck --error-exitcode 9 ./dsv4_gpu_tests --gtest_filter='CudaOps.*:*EachBlock*:*GraphReplay*/2:CudaMtp.Drafter*' > $OUT/san_racecheck.txt 2>&1
  echo "racecheck rc=$?"; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|tests ran|PASSED|FAILED" $OUT/san_racecheck.txt | head -12
fi
