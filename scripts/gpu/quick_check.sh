#!/usr/bin/env bash
# A mid-session GPU check (~2 min): the whole GPU suite, tiny + Flash-slice decode timings (b=1, 16) and an
# ncu kernel profile of one Flash b=1 decode step. Repository root, .gpu-stage carried; details under $OUT.
set -u
. .gpu-stage/env.sh
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
timeout 240 dsv4_gpu_tests ${FILTER:+--gtest_filter=$FILTER} > $OUT/suite.txt 2>&1
echo "suite rc=$?"; grep -E "tests ran|PASSED  \]|FAILED  \]" $OUT/suite.txt | head -12
grep -E "Failure" -A8 $OUT/suite.txt | head -60
for m in tiny flash; do
  if [ $m = tiny ]; then a="-m models/dsv4-tiny-kjv --batch 1,16"; else a="--synthetic flash --layers 3 --batch 1,16"; fi
  timeout 120 dsv4 bench $a --device cuda --modes auto --prefill 128 --context 1024 --decode-steps 32 --reps 5 \
    --spec-tokens 0 --json > $OUT/${m}.json 2>$OUT/${m}.log || tail -3 $OUT/${m}.log
  python3 - "$OUT/${m}.json" "$m" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))["runs"][0]
    for d in r["decode"]:
        f = ", floor %.3f: %.2fx (device %.2fx)" % (d["floor_ms"], d["ms_per_step"]["median"] / d["floor_ms"],
             d["device_ms_per_step"] / d["floor_ms"]) if "floor_ms" in d else ""
        print("%s b=%d: %.3f ms/step, device %.3f ms%s" % (sys.argv[2], d["batch"], d["ms_per_step"]["median"],
              d["device_ms_per_step"], f))
except Exception as e:
    print(sys.argv[2], "failed:", e)
PY
done
if [ "${PROFILE:-1}" = 1 ]; then
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  DSV4_PROFILE_DECODE=2 timeout 120 $NCU --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
    --csv --page raw dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 128 --batch 1 --spec-tokens 0 \
    --context 256 --modes none --reps 1 --warmup 0 --decode-steps 6 > $OUT/flash_ncu.csv 2> $OUT/flash_ncu.log
  python3 tools/profile/ncu_summary.py $OUT/flash_ncu.csv --json $OUT/flash_kernels.json --top ${TOP:-24}
fi
