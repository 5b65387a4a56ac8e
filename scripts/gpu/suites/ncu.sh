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
python3 - "$OUT" "${names[@]}" <<'PY' | tee "$OUT/ncu.txt"
import csv, io, statistics, sys
out, names = sys.argv[1], sys.argv[2:]
cols = [("gpu__time_duration.sum", "us", 1e-3), ("dram__bytes_read.sum", "MB", 1e-6),
        ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "dram%", 1),
        ("sm__warps_active.avg.pct_of_peak_sustained_active", "occ%", 1),
        ("lts__t_requests_srcunit_tex_op_read.sum", "L2req k", 1e-3),
        ("lts__t_sectors_srcunit_tex_op_read.sum", "sect/req", None),
        ("smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct", "long_sb%", 1),
        ("smsp__warp_issue_stalled_lg_throttle_per_warp_active.pct", "lg_thr%", 1),
        ("smsp__warp_issue_stalled_mio_throttle_per_warp_active.pct", "mio_thr%", 1),
        ("smsp__warp_issue_stalled_barrier_per_warp_active.pct", "bar%", 1),
        ("smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct", "short_sb%", 1)]
print("%-10s %-44s" % ("lib", "kernel") + "".join("%10s" % c[1] for c in cols))
for name in names:
    text = open(f"{out}/{name}.csv").read()
    start = text.find('"ID"')
    if start < 0:
        print(name, "no ncu rows (see", name + ".log)")
        continue
    rows = [r for r in csv.DictReader(io.StringIO(text[start:])) if r.get("Kernel Name")]
    rows = [r for r in rows if r.get("gpu__time_duration.sum", "").replace(".", "", 1).isdigit()]
    by = {}
    for r in rows:
        by.setdefault(r["Kernel Name"].split("(")[0][-44:], []).append(r)
    def num(r, k):
        try:
            return float(r[k].replace(",", ""))
        except (KeyError, ValueError):
            return float("nan")
    for kernel, rs in sorted(by.items()):
        cells = []
        for key, _, scale in cols:
            if scale is None:
                v = statistics.median(num(r, key) / max(num(r, "lts__t_requests_srcunit_tex_op_read.sum"), 1) for r in rs)
                cells.append("%10.2f" % v)
            else:
                cells.append("%10.2f" % (statistics.median(num(r, key) for r in rs) * scale))
        print("%-10s %-44s" % (name, kernel) + "".join(cells))
PY
