#!/usr/bin/env bash
# Issue 15's GPU run (speculative decoding on the device), a suite of scripts/gpu/run.sh (run from the repository
# root with the staged build in STAGE, default .gpu-stage): the speculative GPU tests, then `dsv4 bench` in the default graph mode on the Flash
# slice (3 layers + MTP: K = 0, 1, 3 at b = 1, each step against one drafter forward and one (K + 1)-token target
# forward timed in the same run) and on the default model (K = 0, 2 at b = 1 and 16). Details under $OUT; a short
# table last.
set -u
. "${STAGE:-.gpu-stage}/env.sh"
root=$PWD
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
export DSV4_SOURCE_DIR=$root PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
cd "$root"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee $OUT/card.txt
if [ "${TESTS:-1}" = 1 ]; then
  timeout ${TESTS_TIMEOUT:-130} dsv4_gpu_tests --gtest_filter="${FILTER:-CudaSpec.*:CudaMtp.GreedySpec*:CudaScheduler.Spec*:GraphModelSpeculative.*:GraphModel.DefaultPolicy*:CudaSample*}" \
    > $OUT/gpu_tests.txt 2>&1
  echo "gpu tests rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]|CUDA K=|identical|GPU sampled|joint|MTP fixture|sampled K=2" $OUT/gpu_tests.txt | head -40
  grep -E "Failure|error" -A6 $OUT/gpu_tests.txt | head -50
fi
if [ "${MEMCHECK:-1}" = 1 ]; then  # the new kernels and the speculative engine under compute-sanitizer
  SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  timeout ${MEMCHECK_TIMEOUT:-120} $SAN --tool memcheck --error-exitcode 99 dsv4_gpu_tests \
    --gtest_filter='CudaSpec.GreedyVerdicts:CudaSpec.AcceptanceEqualsTheCpuReference:CudaSpec.SampledIsDeterministic*' \
    > $OUT/memcheck.txt 2>&1
  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|PASSED|FAILED" $OUT/memcheck.txt | head -5
fi
prompt="In the beginning God created the heaven and the earth. And the earth was without form, and void"
timeout ${FLASH_TIMEOUT:-100} dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto --prefill 16 --batch 1 \
  --context 16 --decode-steps 32 --reps 5 --spec-tokens 0,1,3 --spec-batch 1 --capture-sizes 1,2,4,8,16 \
  --kv-cache-memory 4000000000 --json > $OUT/flash.json 2>$OUT/flash.log
echo "flash bench rc=$?"; grep -iE "error" $OUT/flash.log | head -3
# The default model: 64 and 256 generated tokens with the text prompt (256 = the CPU acceptance run's length), and
# 256 with the bench's random prompts.
for v in tiny:64:text tiny256:256:text tiny256r:256:random; do
  IFS=: read name steps kind <<< "$v"
  args=(--prompt "$prompt"); [ $kind = random ] && args=()
  timeout ${TINY_TIMEOUT:-60} dsv4 bench -m models/dsv4-tiny-kjv --device cuda --modes auto --prefill 16 --batch 1,16 \
    --decode-steps $steps --reps 7 --spec-tokens 0,1,2,3 --spec-batch 1,16 "${args[@]}" \
    --capture-sizes 1,2,4,8,16,24,32,48,64 --kv-cache-memory 2000000000 --json > $OUT/$name.json 2>$OUT/$name.log
  echo "$name bench rc=$?"; grep -iE "error" $OUT/$name.log | head -3
done
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
for name in ("flash", "tiny", "tiny256", "tiny256r"):
    try:
        run = json.load(open(os.path.join(out, name + ".json")))["runs"][0]
    except Exception as e:
        print(name, "failed:", e); continue
    base = {}
    for s in run.get("speculative", []):
        if s["spec_tokens"] == 0: base[s["batch"]] = s["tokens_per_second"]
    for s in run.get("speculative", []):
        line = "%s b=%d K=%d: %.1f tok/s (x%.2f of K=0), %.3f ms/step" % (name, s["batch"], s["spec_tokens"],
            s["tokens_per_second"], s["tokens_per_second"] / base.get(s["batch"], float("nan")), s["ms_per_step"])
        if "device_ms_per_step" in s: line += ", device %.3f ms" % s["device_ms_per_step"]
        line += ", acceptance %.3f, mean accepted length %.2f" % (s["acceptance_rate"], s["mean_accepted_length"])
        if "reference_ms" in s:
            line += "; drafter %.3f + target(%d tok) %.3f -> ref %.3f ms, step/ref %.2f (device %.2f)" % (
                s["drafter_forward_ms"], s["spec_tokens"] + 1, s["target_forward_ms"], s["reference_ms"],
                s["step_over_reference"], s["device_step_over_reference"])
        print(line)
    for d in run.get("decode", []):
        print("%s decode b=%d: %.3f ms/step, device %.3f ms" % (name, d["batch"], d["ms_per_step"]["median"],
              d.get("device_ms_per_step", 0)))
PY
