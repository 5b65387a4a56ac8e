#!/usr/bin/env bash
# Why one kernel runs below its memory floor: Nsight Compute counters of the kernels a command launches, for one or
# several libdsv4.so builds (the ab suite's AB_LIBS), side by side: time, DRAM bytes and throughput, achieved
# occupancy, the L2 requests the loads make, and the share of cycles warps stall on long scoreboards (global memory),
# LSU / MIO throttles and barriers. A suite of scripts/gpu/run.sh (ncu needs the Firecracker runtime: KINDS.md).
#   NCU_KERNELS  ncu's kernel-name filter (default regex:moe_decode_quant|quant_gemv)
#   NCU_CMD      the command to profile (default: the quantised kernel lab at T = 1, b = 1)
#   NCU_COUNT    launches profiled per kernel name (default 6: past the lab's warm-up)
#   AB_LIBS      NAME=DIR pairs as in ab.sh (default: the stage's library)
# Output: $OUT/NAME.csv per library and a table (median per kernel and library) in $OUT/ncu.txt.
set -u
. "${STAGE:-.gpu-stage}/env.sh"
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
kernels=${NCU_KERNELS:-regex:moe_decode_quant|quant_gemv}
cmd=${NCU_CMD:-bench_quant_gemv --tokens 1 --batches 1}
metrics=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,sm__warps_active.avg.pct_of_peak_sustained_active,lts__t_requests_srcunit_tex_op_read.sum
metrics+=,lts__t_sectors_srcunit_tex_op_read.sum,smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct
metrics+=,smsp__warp_issue_stalled_lg_throttle_per_warp_active.pct,smsp__warp_issue_stalled_mio_throttle_per_warp_active.pct
metrics+=,smsp__warp_issue_stalled_barrier_per_warp_active.pct,smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/card.txt"
names=()
for spec in ${AB_LIBS:-stage=$STAGE/lib}; do
  name=${spec%%=*} dir=${spec#*=}
  if [ ! -f "$dir/libdsv4.so" ] && [ -f "$dir/lib.tar.xz" ]; then tar xJf "$dir/lib.tar.xz" -C "$dir" && dir=$dir/lib; fi
  [ -f "$dir/libdsv4.so" ] || { echo "ncu: $name: no libdsv4.so in $dir" >&2; exit 2; }
  # shellcheck disable=SC2086
  LD_LIBRARY_PATH="$(cd "$dir" && pwd -P):$LD_LIBRARY_PATH" timeout "${NCU_TIMEOUT:-240}" $NCU --clock-control none \
    -k "$kernels" -c "${NCU_COUNT:-6}" --metrics "$metrics" --csv --page raw --print-units base $cmd \
    > "$OUT/$name.csv" 2> "$OUT/$name.log"
  echo "ncu $name rc=$?"
  names+=("$name")
done
python3 "$(dirname "${BASH_SOURCE[0]}")/ncu_table.py" "$OUT" "${names[@]}" | tee "$OUT/ncu.txt"
