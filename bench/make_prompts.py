#!/usr/bin/env python3
"""Writes N prompts, one per line, of random whole-word tokens of a model's tokenizer.json, each about L tokens
long with L uniform in [--min, --max] (standard library only; deterministic per --seed). For throughput runs of
`dsv4 generate --prompts FILE` (the JSON output reports the exact prompt token count)."""
import argparse
import json
import random

ap = argparse.ArgumentParser()
ap.add_argument("--tokenizer", required=True)
ap.add_argument("--count", type=int, default=256)
ap.add_argument("--min", type=int, default=16)
ap.add_argument("--max", type=int, default=512)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--out", required=True)
a = ap.parse_args()
vocab = json.load(open(a.tokenizer, encoding="utf-8"))["model"]["vocab"]
words = sorted(t[1:] for t in vocab if t.startswith("\u0120") and t[1:].isalpha() and t[1:].islower())
rng = random.Random(a.seed)
with open(a.out, "w", encoding="utf-8") as f:
    for _ in range(a.count):
        n = rng.randint(a.min, a.max)
        f.write(" ".join(rng.choice(words) for _ in range(n)).capitalize() + "\n")
print(f"{a.count} prompts of {a.min}-{a.max} words from {len(words)} vocabulary words -> {a.out}")
