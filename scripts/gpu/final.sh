#!/usr/bin/env bash
# Final GPU run: full suite, the CUDA tests again with PDL on, benchmark (PDL off/on), ncu breakdown of a decode step.
cd "$(dirname "$0")"
export LD_LIBRARY_PATH=$PWD:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
export DSV4_SOURCE_DIR=$PWD
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $OUT/gpu.txt
timeout 150 ./dsv4_gpu_tests > $OUT/tests.txt 2>&1; echo "suite rc=$?"
grep -E "tests ran|PASSED  \]|FAILED  \]" $OUT/tests.txt | head -12
DSV4_PDL=1 timeout 100 ./dsv4_gpu_tests --gtest_filter='CudaOps.*:*CudaModelParity*:CudaEngine.*:CudaMtp.*' > $OUT/tests_pdl.txt 2>&1; echo "PDL suite rc=$?"
grep -E "tests ran|PASSED  \]|FAILED  \]" $OUT/tests_pdl.txt | head -6
./dsv4 generate -m tests/fixtures/hf/tiny_a --ids 5,6,7,8,9 -n 24 --device cuda --cuda-precision f32 --ignore-eos 2>&1 | tail -2 | head -1 | tee $OUT/gen.txt
./dsv4 generate -m tests/fixtures/hf/tiny_a --ids 5,6,7,8,9 -n 24 --device cpu --ignore-eos 2>&1 | tail -2 | head -1 | tee -a $OUT/gen.txt
./dsv4 generate -m tests/fixtures/mtp/mtp_tiny --ids 5,6,7,8,9 -n 24 --device cuda --cuda-precision f32 --spec-tokens 2 --ignore-eos 2>&1 | tail -3 | tee -a $OUT/gen.txt
for pdl in 0 1; do
  DSV4_PDL=$pdl DSV4_BENCH=1 timeout 90 ./dsv4_gpu_tests --gtest_filter='CudaBench.*' > $OUT/bench_pdl$pdl.txt 2>&1; echo "bench PDL=$pdl rc=$?"
  grep -E "bench model|prefill chunk|decode batch" $OUT/bench_pdl$pdl.txt
done
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1 || echo /usr/local/cuda/bin/ncu)
DSV4_BENCH=1 DSV4_BENCH_PROFILE=1 timeout 150 $NCU --profile-from-start off --clock-control none --metrics gpu__time_duration.sum --csv --log-file $OUT/ncu.csv ./dsv4_gpu_tests --gtest_filter='CudaBench.*' > $OUT/ncu_run.txt 2>&1; echo "ncu rc=$?"
python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys, re, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
hdr = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
h = rows[hdr]; ki = h.index("Kernel Name"); vi = h.index("Metric Value"); ui = h.index("Metric Unit")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[hdr + 1:]:
    if len(r) <= vi: continue
    v = float(r[vi].replace(",", "")); v = v / 1000.0 if r[ui] == "nsecond" else (v if r[ui] == "usecond" else v * 1000.0)
    name = re.sub(r"\(.*", "", r[ki]); name = re.sub(r"<.*", "", name).split("::")[-1][:60]
    tot[name] += v; cnt[name] += 1
s = sum(tot.values())
print(f"ncu: one decode step (B=8): {sum(cnt.values())} kernels, {s:.1f} us of kernel time")
for n, v in sorted(tot.items(), key=lambda x: -x[1])[:22]:
    print(f"  {v:9.1f} us {100*v/s:5.1f}%  x{cnt[n]:<4d} {n}")
PY
