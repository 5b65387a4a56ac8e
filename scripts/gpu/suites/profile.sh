#!/usr/bin/env bash
# Per-kernel profile of one decode step (issue 6): the tiny default model and the synthetic Flash slice at
# batch 1, each as ms/step under the default graph policy and as ncu kernel durations of one eager decode
# forward (DSV4_PROFILE_DECODE), with each kernel family's DRAM bytes and its time beyond bytes / copy bandwidth
# (the "excess" column: where the step spends above its memory floor). Repository root; STAGE (default .gpu-stage)
# carried. ONLY (comma list, default tiny,flash) picks the models: tiny, flash (bf16 slice), flashq (the slice with
# --cuda-weights quantized); LAYERS (default 3) sets the Flash slice's depth, CONTEXT (default 256) its context.
# Results under $OUT (3 files per model).
set -u
. "${STAGE:-.gpu-stage}/env.sh"
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
profile() {  # name, dsv4 bench args...
  local name=$1; shift
  timeout 200 dsv4 bench "$@" --modes auto --json > $OUT/$name.json 2> /tmp/$name.log
  local rc=$?; echo "$name bench rc=$rc"; [ $rc = 0 ] || tail -5 /tmp/$name.log
  python3 - "$OUT/$name.json" "$name" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for r in j["runs"]:
    for d in r.get("decode", []):
        print("%s decode b=%d: %.3f ms/step%s" % (sys.argv[2], d["batch"], d["ms_per_step"]["median"],
              ", floor %.3f ms, %.2fx" % (d["floor_ms"], d["measured_over_floor"]) if "floor_ms" in d else ""))
PY
  local bw
  bw=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('copy_bandwidth_gbs', ''))" $OUT/$name.json 2>/dev/null)
  DSV4_PROFILE_DECODE=2 timeout 240 $NCU --profile-from-start off --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --print-units base \
    --csv --page raw dsv4 bench "$@" --modes none --reps 1 --warmup 0 --decode-steps 6 > $OUT/${name}_ncu.csv 2> /tmp/${name}_ncu.log
  rc=$?; echo "$name ncu rc=$rc"; [ $rc = 0 ] || tail -5 /tmp/${name}_ncu.log
  python3 tools/profile/ncu_summary.py $OUT/${name}_ncu.csv --json $OUT/${name}_kernels.json --top ${TOP:-22} \
    ${bw:+--bandwidth $bw}
}
only=",${ONLY:-tiny,flash},"
flash=(--synthetic flash --layers ${LAYERS:-3} --device cuda --prefill 128 --batch 1 --spec-tokens 0 --context ${CONTEXT:-256})
[[ $only == *,tiny,* ]] && profile tiny -m models/dsv4-tiny-kjv --device cuda --prefill 128 --batch 1 --spec-tokens 0 --context 64
[[ $only == *,flash,* ]] && profile flash "${flash[@]}"
[[ $only == *,flashq,* ]] && profile flashq "${flash[@]}" --cuda-weights quantized
true
