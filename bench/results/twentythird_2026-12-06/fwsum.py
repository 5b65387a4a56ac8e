#!/usr/bin/env python3
# Mean kernel time per prefill forward (forwards split at the embedding kernel; only those with the packed attention).
import collections, csv, re, subprocess, sys
rows = sorted((r for r in csv.DictReader(open(sys.argv[1])) if r.get("end_ns") and r.get("start_ns") and r.get("name")),
              key=lambda r: int(r["start_ns"]))
fw, cur = [], []
for r in rows:
    if "embedding" in r["name"] and cur:
        fw.append(cur); cur = []
    cur.append(r)
fw.append(cur)
pf = [f for f in fw if any("split_attention_packed" in r["name"] for r in f)]
tot = collections.defaultdict(float)
for f in pf:
    for r in f:
        tot[r["name"]] += (int(r["end_ns"]) - int(r["start_ns"])) / 1e3 / len(pf)
span = sum((int(f[-1]["end_ns"]) - int(f[0]["start_ns"])) / 1e3 for f in pf) / max(1, len(pf))
print(f"{len(pf)} prefill forwards: kernels {sum(tot.values()):.0f} us, span {span:.0f} us")
names = list(tot)
try:
    dem = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.split("\n")
except OSError:
    dem = names
short = collections.defaultdict(float)
for n, d in zip(names, dem):
    d = re.sub(r"\(.*$", "", d.replace("(anonymous namespace)::", ""))
    d = re.sub(r"^void ", "", d)
    d = re.split(r"<", d)[0].split("::")[-1] + ("<" + d.split("<", 1)[1][:30] if "<" in d else "")
    short[d] += tot[n]
for k, v in sorted(short.items(), key=lambda x: -x[1])[:26]:
    print(f"  {k[:70]:70s} {v:8.1f} us")
