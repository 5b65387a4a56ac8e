#!/usr/bin/env python3
"""The table of the GPU runner's `ncu` suite: for each library NAME, DIR/NAME.csv (ncu --csv --page raw
--print-units base) holds one row per profiled launch; print the median of each counter per kernel (the name before
its return type, namespaces and argument list) and library, side by side.

    ncu_table.py DIR NAME [NAME ...]
"""
import csv
import io
import math
import statistics
import sys

REQUESTS = "lts__t_requests_srcunit_tex_op_read.sum"
# (metric, column, scale); scale None: sectors per L2 request.
COLUMNS = [("gpu__time_duration.sum", "us", 1e-3), ("dram__bytes_read.sum", "MB", 1e-6),
           ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "dram%", 1),
           ("sm__warps_active.avg.pct_of_peak_sustained_active", "occ%", 1),
           (REQUESTS, "L2req k", 1e-3),
           ("lts__t_sectors_srcunit_tex_op_read.sum", "sect/req", None),
           ("smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct", "long_sb%", 1),
           ("smsp__warp_issue_stalled_lg_throttle_per_warp_active.pct", "lg_thr%", 1),
           ("smsp__warp_issue_stalled_mio_throttle_per_warp_active.pct", "mio_thr%", 1),
           ("smsp__warp_issue_stalled_barrier_per_warp_active.pct", "bar%", 1),
           ("smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct", "short_sb%", 1)]


def number(row, key):
    try:
        return float(row[key].replace(",", ""))
    except (KeyError, ValueError, AttributeError):
        return math.nan


def launches(text):
    """The launch rows of one ncu CSV (messages before the header and the units row dropped)."""
    start = text.find('"ID"')
    if start < 0:
        return []
    rows = [r for r in csv.DictReader(io.StringIO(text[start:])) if r.get("Kernel Name")]
    return [r for r in rows if not math.isnan(number(r, "gpu__time_duration.sum"))]


def kernel_key(name):
    """The kernel's unqualified name with its template arguments: no return type, namespaces or argument list (the
    first '(' outside template arguments: casts such as `(dsv4::WeightFormat)1` sit inside them), at most 48
    characters."""
    name = name.replace("(anonymous namespace)::", "")
    depth, start = 0, 0
    for i, ch in enumerate(name):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0 and ch == " ":
            start = i + 1  # past the return type
        elif depth == 0 and ch == ":" and name[i - 1 : i] == ":":
            start = i + 1  # past a namespace
        elif ch == "(" and depth == 0:
            name = name[:i]
            break
    return name[start:][:48]


def main(argv):
    if len(argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out, names = argv[1], argv[2:]
    print("%-10s %-48s" % ("lib", "kernel") + "".join("%10s" % c[1] for c in COLUMNS))
    for name in names:
        try:
            text = open(f"{out}/{name}.csv").read()
        except OSError as e:
            print(f"{name}: no ncu output ({e.strerror})")
            continue
        rows = launches(text)
        if not rows:
            print(f"{name}: no ncu rows (see {name}.log)")
            continue
        by_kernel = {}
        for r in rows:
            by_kernel.setdefault(kernel_key(r["Kernel Name"]), []).append(r)
        for kernel, rs in sorted(by_kernel.items()):
            cells = []
            for key, _, scale in COLUMNS:
                if scale is None:
                    v = statistics.median(number(r, key) / max(number(r, REQUESTS), 1.0) for r in rs)
                else:
                    v = statistics.median(number(r, key) for r in rs) * scale
                cells.append("%10.2f" % v)
            print("%-10s %-48s" % (name, kernel) + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
