#!/usr/bin/env python3
"""transformers' DeepseekV4ForCausalLM on the same checkpoint as dsv4, timed on the same card.

Measures (batch 1, bf16, CUDA):
  - eager decode ms/step: prefill a prompt through a DynamicCache, then one token per forward; each step
    timed with CUDA events after warm-up; median and spread;
  - torch.compile: latency of the first compiled call (a decode step), and ms/step of later steps when the
    whole run finishes within --compile-budget seconds (default 300).

Prints one JSON object (and a short table on stderr). Usage:
  python3 bench/hf_compare.py --model models/dsv4-tiny-kjv [--steps 64] [--no-compile]
"""

import argparse
import json
import signal
import statistics
import sys
import time


class Timeout(Exception):
    pass


def decode_times(model, cache, token, steps, warmup):
    import torch

    times = []
    tok = token
    for i in range(warmup + steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = model(input_ids=tok, past_key_values=cache, use_cache=True)
        end.record()
        torch.cuda.synchronize()
        cache = out.past_key_values
        tok = out.logits[:, -1:].argmax(-1)
        if i >= warmup:
            times.append(start.elapsed_time(end))
    return times, cache, tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--prompt-ids", default="0,1035,509,456")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--compile-budget", type=float, default=300.0)
    args = ap.parse_args()

    import contextlib

    import torch
    import transformers
    from transformers import DeepseekV4ForCausalLM, DynamicCache

    t0 = time.time()
    model = DeepseekV4ForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).cuda().eval()
    model.config._attn_implementation = "eager"
    load_s = time.time() - t0
    ids = torch.tensor([[int(x) for x in args.prompt_ids.split(",")]], device="cuda")
    result = {"card": torch.cuda.get_device_name(), "torch": torch.__version__,
              "transformers": transformers.__version__, "model": args.model, "load_seconds": load_s,
              "steps": args.steps}
    # transformers keeps norms and mHC modules in fp32 (_keep_in_fp32_modules_strict): q_a_norm's fp32 output
    # then meets a bf16 q_b_proj, so bf16 inference needs autocast, as transformers' own bf16 users run it.
    def ctx():
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        return stack

    with ctx():
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        tok = out.logits[:, -1:].argmax(-1)
        times, _, _ = decode_times(model, out.past_key_values, tok, args.steps, args.warmup)
    result["eager_ms_per_step"] = {"median": statistics.median(times), "min": min(times), "max": max(times)}

    if not args.no_compile:
        compiled = torch.compile(model)

        def on_alarm(signum, frame):
            raise Timeout()

        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(int(args.compile_budget))
        try:
            with ctx():
                cache = DynamicCache(config=model.config)
                out = model(input_ids=ids, past_key_values=cache, use_cache=True)
                tok = out.logits[:, -1:].argmax(-1)
                t1 = time.time()
                out = compiled(input_ids=tok, past_key_values=out.past_key_values, use_cache=True)
                torch.cuda.synchronize()
                result["compile_first_call_seconds"] = time.time() - t1
                tok = out.logits[:, -1:].argmax(-1)
                times, _, _ = decode_times(compiled, out.past_key_values, tok, args.steps, args.warmup)
                result["compile_ms_per_step"] = {"median": statistics.median(times), "min": min(times),
                                                 "max": max(times)}
        except Timeout:
            result["compile_note"] = f"did not finish within {args.compile_budget:.0f} s"
        except Exception as e:  # torch.compile failures are results too
            result["compile_note"] = f"failed: {type(e).__name__}: {str(e)[:300]}"
        finally:
            signal.alarm(0)
    print(json.dumps(result))
    e = result["eager_ms_per_step"]
    print(f"HF eager decode b=1: {e['median']:.2f} ms/step [{e['min']:.2f}, {e['max']:.2f}] on {result['card']}",
          file=sys.stderr)
    if "compile_first_call_seconds" in result:
        print(f"torch.compile first call {result['compile_first_call_seconds']:.1f} s", file=sys.stderr)
    if "compile_ms_per_step" in result:
        print(f"torch.compile decode: {result['compile_ms_per_step']['median']:.2f} ms/step", file=sys.stderr)
    if "compile_note" in result:
        print(f"torch.compile: {result['compile_note'].splitlines()[0]}", file=sys.stderr)


if __name__ == "__main__":
    main()
