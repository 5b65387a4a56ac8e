#!/usr/bin/env python3
"""Bounded load generator for `dsv4 serve` (Python standard library only).

For each concurrency level, keeps that many streaming /v1/completions requests in flight until a fixed number
of requests has finished (or --max-seconds passes), each with a random token-id prompt of --min-prompt to
--max-prompt tokens and exactly --max-tokens new tokens (ignore_eos), and reports requests/s, output tokens/s,
time to first token and time per output token (p50/p99, measured at the client from the SSE stream).

    python3 bench/serve_load.py --url http://127.0.0.1:8000 --concurrency 1,16,64,256 --json out.json

The clients of a level run in --processes worker processes (threads within each), taking requests in order from one
shared counter: one Python process parsing ~60k SSE events a second holds its interpreter lock most of the time, and a
client that reads and resubmits late leaves the server's batch short (fewer sequences a step, more steps for the same
tokens). Each level reports the busiest worker's CPU time over the wall time (client_cpu_fraction): near 1 the load
generator, not the server, set the pace.
"""
import argparse
import http.client
import json
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
import urllib.parse


def percentile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def one_request(host, port, body, headers):
    """Returns (ttft, tpot, output_tokens, latency) of one streamed completion; raises on any error."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=3600)
    conn.request("POST", "/v1/completions", body=body, headers=headers)
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
    t_first = t_last = None
    usage = None
    for raw in r:
        if not raw.startswith(b"data: "):
            continue
        now = time.perf_counter()
        if raw.startswith(b"data: [DONE]"):
            break
        if b'"usage":{' in raw and b'"choices":[]' in raw:
            usage = json.loads(raw[6:])["usage"]
            continue
        if b'"text":""' in raw:  # the final chunk (finish_reason) carries no text
            continue
        if t_first is None:
            t_first = now
        t_last = now
    conn.close()
    end = time.perf_counter()
    if usage is None or t_first is None:
        raise RuntimeError("the stream ended without text or usage")
    n = usage["completion_tokens"]
    tpot = (t_last - t_first) / (n - 1) if n > 1 else 0.0
    return t_first - t0, tpot, n, end - t0


SCHEDULER_COUNTERS = {  # /metrics lines whose change over a level splits its wall time (engine vs the rest)
    "steps": "dsv4_scheduler_steps_total ",
    "prefill_steps": "dsv4_scheduler_prefill_steps_total ",
    "prompt_steps_fitted": "dsv4_scheduler_prompt_steps_fitted_total ",
    "prefill_seconds": 'dsv4_scheduler_step_seconds_total{kind="prefill"} ',
    "decode_seconds": 'dsv4_scheduler_step_seconds_total{kind="decode"} ',
    "prefill_wait_seconds": "dsv4_scheduler_prefill_wait_seconds_total ",
    "prompt_tokens": "dsv4_prompt_tokens_total ",
    "generation_tokens": "dsv4_generation_tokens_total ",
}


def scheduler_counters(host, port, headers):
    """The server's scheduler counters (SCHEDULER_COUNTERS) from /metrics; {} when it does not report them."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/metrics", headers=headers)
    r = conn.getresponse()
    text = r.read().decode() if r.status == 200 else ""
    conn.close()
    out = {}
    for line in text.splitlines():
        for key, prefix in SCHEDULER_COUNTERS.items():
            if line.startswith(prefix):
                out[key] = float(line[len(prefix):])
    return out


def make_bodies(args, vocab, concurrency):
    """The level's request bodies, in the order the clients take them (seeded: the same for every --processes)."""
    rng = random.Random(args.seed * 1000003 + concurrency)
    total = max(args.min_requests, args.requests_per_slot * concurrency)
    bodies = []
    for _ in range(total):
        n = rng.randint(args.min_prompt, args.max_prompt)
        prompt = [rng.randrange(args.min_token_id, vocab) for _ in range(n)]
        bodies.append(json.dumps({"model": args.model, "prompt": prompt, "max_tokens": args.max_tokens,
                                  "temperature": args.temperature, "ignore_eos": True, "stream": True,
                                  "stream_options": {"include_usage": True}}))
    return bodies


def client_process(host, port, bodies, headers, threads, next_index, deadline, start, out):
    """One worker process: `threads` clients taking the next body from the shared counter until all are taken or the
    deadline passes; puts (results, errors, cpu seconds) on `out`."""
    results, errors = [], []
    lock = threading.Lock()
    start.wait()  # every process starts its clients together, after the level's counters were read
    cpu0 = time.process_time()

    def worker():
        while True:
            with next_index.get_lock():
                if next_index.value >= len(bodies) or time.perf_counter() > deadline:
                    return
                i = next_index.value
                next_index.value += 1
            try:
                res = one_request(host, port, bodies[i], headers)
                with lock:
                    results.append(res)
            except Exception as e:  # noqa: BLE001 — every failure is counted and reported
                with lock:
                    errors.append(repr(e))

    try:
        pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    except BaseException as e:  # noqa: BLE001 — the parent waits for this process's answer: always send one
        errors.append(f"client process: {e!r}")
    finally:
        out.put((results, errors, time.process_time() - cpu0))


def run_level(args, host, port, vocab, concurrency):
    bodies = make_bodies(args, vocab, concurrency)
    headers = {"Content-Type": "application/json"}
    if args.api_key:
        headers["Authorization"] = "Bearer " + args.api_key
    processes = max(1, min(concurrency, args.processes if args.processes > 0 else (os.cpu_count() or 2) // 4))
    ctx = multiprocessing.get_context("fork")  # the workers share the bodies without pickling them
    next_index, start, out = ctx.Value("q", 0), ctx.Event(), ctx.Queue()
    before = scheduler_counters(host, port, headers)
    deadline = time.perf_counter() + args.max_seconds
    workers = [ctx.Process(target=client_process, daemon=True,
                           args=(host, port, bodies, headers, concurrency // processes + (p < concurrency % processes),
                                 next_index, deadline, start, out)) for p in range(processes)]
    for w in workers:
        w.start()
    t0 = time.perf_counter()
    start.set()
    results, errors, cpu = [], [], []
    for _ in workers:
        r, e, c = out.get()
        results += r
        errors += e
        cpu.append(c)
    wall = time.perf_counter() - t0
    for w in workers:
        w.join()
    after = scheduler_counters(host, port, headers)
    engine = {k: after[k] - before[k] for k in after if k in before}
    if "prefill_seconds" in engine and "decode_seconds" in engine:
        # The engine loop's share of the wall time; the rest is the engine idle (waiting for requests) or the
        # client and HTTP side.
        engine["busy_fraction"] = (engine["prefill_seconds"] + engine["decode_seconds"]) / wall if wall > 0 else 0.0
    ttft = [r[0] for r in results]
    tpot = [r[1] for r in results]
    out_tokens = sum(r[2] for r in results)
    return {
        "concurrency": concurrency, "requests": len(results), "errors": len(errors),
        "first_errors": errors[:3], "seconds": wall,
        "requests_per_s": len(results) / wall if wall > 0 else 0.0,
        "output_tokens_per_s": out_tokens / wall if wall > 0 else 0.0,
        "ttft_p50_ms": 1e3 * percentile(ttft, 50), "ttft_p99_ms": 1e3 * percentile(ttft, 99),
        "tpot_p50_ms": 1e3 * percentile(tpot, 50), "tpot_p99_ms": 1e3 * percentile(tpot, 99),
        "mean_latency_s": statistics.fmean(r[3] for r in results) if results else float("nan"),
        "client_processes": processes,
        "client_cpu_fraction": max(cpu) / wall if wall > 0 and cpu else 0.0,
        "engine": engine,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--model", default="", help="model id (default: the server's)")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--concurrency", default="1,16,64,256", help="comma-separated levels")
    ap.add_argument("--requests-per-slot", type=int, default=2, help="requests per level = this × concurrency")
    ap.add_argument("--min-requests", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=600, help="stop starting requests after this long per level")
    ap.add_argument("--min-prompt", type=int, default=128)
    ap.add_argument("--max-prompt", type=int, default=2048)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--min-token-id", type=int, default=3, help="random prompt ids start here (skip BOS/EOS/pad)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--processes", type=int, default=0,
                    help="client worker processes a level (default: a quarter of the CPUs, at most the concurrency)")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args = ap.parse_args()
    if args.processes < 0:
        sys.exit("--processes must be >= 0 (0: a quarter of the CPUs)")
    url = urllib.parse.urlparse(args.url)
    host, port = url.hostname, url.port or 80
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Authorization": "Bearer " + args.api_key} if args.api_key else {}
    conn.request("GET", "/v1/models", headers=headers)
    r = conn.getresponse()
    if r.status != 200:
        sys.exit(f"GET /v1/models: HTTP {r.status}")
    card = json.loads(r.read())["data"][0]
    conn.close()
    args.model = args.model or card["id"]
    vocab = int(card.get("vocab_size", 0))
    if vocab <= args.min_token_id:
        sys.exit("the server did not report vocab_size in /v1/models")
    if args.max_prompt + args.max_tokens > int(card.get("max_model_len", 1 << 62)):
        sys.exit("--max-prompt + --max-tokens exceed the server's max_model_len")
    levels = [int(c) for c in args.concurrency.split(",") if c]
    rows = []
    print(f"model {args.model}, prompts {args.min_prompt}-{args.max_prompt} tokens, {args.max_tokens} new tokens")
    print(f"{'conc':>5} {'reqs':>5} {'err':>4} {'req/s':>8} {'out tok/s':>10} {'TTFT p50':>9} {'p99':>8} "
          f"{'TPOT p50':>9} {'p99':>7}  (ms)")
    for c in levels:
        row = run_level(args, host, port, vocab, c)
        rows.append(row)
        print(f"{c:>5} {row['requests']:>5} {row['errors']:>4} {row['requests_per_s']:>8.2f} "
              f"{row['output_tokens_per_s']:>10.1f} {row['ttft_p50_ms']:>9.1f} {row['ttft_p99_ms']:>8.1f} "
              f"{row['tpot_p50_ms']:>9.2f} {row['tpot_p99_ms']:>7.2f}", flush=True)
        print(f"      client: {row['client_processes']} process(es), the busiest at "
              f"{100 * row['client_cpu_fraction']:.0f}% of a CPU", flush=True)
        e = row["engine"]
        if "busy_fraction" in e:
            fitted = f", {e['prompt_steps_fitted']:.0f} fitted to a graph" if e.get("prompt_steps_fitted") else ""
            print(f"      engine: {e['steps']:.0f} steps ({e['prefill_steps']:.0f} with prompt chunks{fitted}), prefill "
                  f"{e['prefill_seconds']:.3f} s (device wait {e['prefill_wait_seconds']:.3f}), decode "
                  f"{e['decode_seconds']:.3f} s, busy {100 * e['busy_fraction']:.0f}% of {row['seconds']:.2f} s",
                  flush=True)
        for e in row["first_errors"]:
            print("   error:", e)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "levels": rows, "args": vars(args)}, f, indent=1)
    sys.exit(1 if any(r["errors"] for r in rows) else 0)


if __name__ == "__main__":
    main()
