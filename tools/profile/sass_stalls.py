#!/usr/bin/env python3
"""Where a kernel's warps stall, per SASS instruction, from `ncu -i REP --page source --csv --print-source sass`
(a report collected with `--section SourceCounters`).

For every profiled launch in the file: the total warp-stall samples and warp instructions, the share of samples on
each opcode, and the TOP instructions by samples (in program order, with their stall reasons), so that a question such
as "how much of this kernel waits on its q loads" has a number. ncu prints each launch's table once per source view;
repeated identical tables are shown once."""
import argparse
import csv
import re
import sys
from collections import Counter


def sections(rows):
    """Yields (kernel name, header, instruction rows) per launch table."""
    cur = None
    for r in rows:
        if not r:
            continue
        if r[0] == "Kernel Name":
            if cur and cur[1]:
                yield cur
            cur = [r[1] if len(r) > 1 else "?", None, []]
        elif r[0] == "Address" and cur is not None:
            cur[1] = r
        elif cur is not None and cur[1] is not None:
            cur[2].append(r)
    if cur and cur[1]:
        yield cur


def as_int(v):
    try:
        return int(str(v).replace(",", ""))
    except ValueError:
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv_file")
    ap.add_argument("--top", type=int, default=25, help="instructions listed per launch")
    args = ap.parse_args()
    try:
        rows = list(csv.reader(open(args.csv_file, newline="")))
    except OSError as e:
        sys.exit(f"sass_stalls: {e}")
    seen = set()
    found = False
    for name, hdr, body in sections(rows):
        if "Warp Stall Sampling (All Samples)" not in hdr or "Source" not in hdr:
            continue
        si, src = hdr.index("Warp Stall Sampling (All Samples)"), hdr.index("Source")
        ie = hdr.index("Instructions Executed") if "Instructions Executed" in hdr else None
        reasons = [(j, h[len("stall_"):]) for j, h in enumerate(hdr) if h.startswith("stall_") and "(" not in h]
        key = (name, tuple(tuple(r) for r in body))
        if key in seen:
            continue
        seen.add(key)
        found = True
        total = sum(as_int(r[si]) for r in body)
        executed = sum(as_int(r[ie]) for r in body) if ie is not None else 0
        print(f"== {name}\n   {len(body)} instructions, {total} stall samples, {executed} warp instructions executed")
        if total == 0:
            continue
        by_op = Counter()
        for r in body:
            op = re.sub(r"^@!?U?P\w+\s+", "", r[src].strip()).split(" ")[0].split(".")[0]
            by_op[op] += as_int(r[si])
        print("   samples by opcode: " + ", ".join(f"{op} {100 * n / total:.0f}%" for op, n in by_op.most_common(8)))
        top = sorted(range(len(body)), key=lambda i: -as_int(body[i][si]))[: args.top]
        for i in sorted(top):
            r = body[i]
            why = {h: as_int(r[j]) for j, h in reasons if as_int(r[j]) > 0}
            why_s = ", ".join(f"{h} {n}" for h, n in sorted(why.items(), key=lambda x: -x[1]))
            print(f"   {i:5d} {as_int(r[si]):6d} {100 * as_int(r[si]) / total:5.1f}%  {r[src].strip()[:56]:56s} {why_s}")
    if not found:
        sys.exit("sass_stalls: no launch table with 'Warp Stall Sampling' columns (collect with --section SourceCounters)")


if __name__ == "__main__":
    main()
