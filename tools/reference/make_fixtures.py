#!/usr/bin/env python3
"""HF-parity fixtures for dsv4: tiny random DeepSeek-V4 checkpoints plus transformers' logits.

Runs where torch and transformers >= 5.17 exist (our H100/H200 test machines; CPU math is used so the
numbers do not depend on TF32 settings). For every fixture config it

  1. builds `DeepseekV4ForCausalLM(config)` in float32 and randomises every parameter at unit scale
     (matrices ~ N(0, 1/fan_in) so activations stay O(1); mHC, router, sink, ape and bias parameters at a
     scale that really exercises Sinkhorn, routing and sinks), rounded to bf16-representable values so a
     bf16 GPU backend only differs by activation rounding;
  2. `save_pretrained`s it (config.json + model.safetensors);
  3. writes `expected.safetensors` with `input_ids` [T] (I64) and `logits` [T, V] (F32) from the
     **token-by-token** path (one token per forward through the cache, from the first token): the ground
     truth, because transformers' multi-token forward is not causal in CSA layers once compressed entries
     outnumber index_topk;
  4. measures and records consistency figures (full forward vs token-by-token, prefix forward vs rows of
     the full forward) in `figures.json`.

Usage: make_fixtures.py OUT_DIR [--only NAME]
       make_fixtures.py OUT_DIR --from-checkpoint models/dsv4-tiny-kjv --name kjv [--seq-len 64]
         (ground truth for a trained checkpoint: a realistic model for the bf16 parity figures)
"""

import argparse
import json
import math
import os
import sys


def fixture_configs():
    """Tiny configs of different shapes: every layer type present, compress windows that close inside
    the test sequence, index_topk below the number of compressed entries."""
    return {
        "tiny_a": dict(
            seq_len=48,
            seed=1234,
            config=dict(
                vocab_size=320,
                hidden_size=64,
                moe_intermediate_size=32,
                num_hidden_layers=5,
                num_attention_heads=4,
                head_dim=32,
                qk_rope_head_dim=8,
                q_lora_rank=32,
                o_lora_rank=16,
                o_groups=2,
                num_experts_per_tok=2,
                n_routed_experts=8,
                n_shared_experts=1,
                scoring_func="sqrtsoftplus",
                routed_scaling_factor=1.5,
                num_hash_layers=2,
                layer_types=[
                    "sliding_attention",
                    "compressed_sparse_attention",
                    "heavily_compressed_attention",
                    "compressed_sparse_attention",
                    "heavily_compressed_attention",
                ],
                compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
                sliding_window=8,
                index_n_heads=8,
                index_head_dim=16,
                index_topk=3,
                hc_mult=4,
                hc_sinkhorn_iters=20,
                hc_eps=1e-6,
                rms_norm_eps=1e-6,
                rope_theta=10000.0,
                compress_rope_theta=160000.0,
                max_position_embeddings=256,
                rope_scaling=dict(
                    type="yarn",
                    factor=4.0,
                    original_max_position_embeddings=64,
                    beta_fast=32,
                    beta_slow=1,
                ),
                swiglu_limit=10.0,
                bos_token_id=0,
                eos_token_id=1,
                tie_word_embeddings=False,
            ),
        ),
        "tiny_b": dict(
            seq_len=64,
            seed=99,
            config=dict(
                vocab_size=288,
                hidden_size=96,
                moe_intermediate_size=48,
                num_hidden_layers=6,
                num_attention_heads=2,
                head_dim=64,
                qk_rope_head_dim=16,
                q_lora_rank=48,
                o_lora_rank=24,
                o_groups=2,
                num_experts_per_tok=3,
                n_routed_experts=6,
                n_shared_experts=1,
                scoring_func="sigmoid",
                routed_scaling_factor=2.5,
                num_hash_layers=1,
                layer_types=[
                    "heavily_compressed_attention",
                    "compressed_sparse_attention",
                    "sliding_attention",
                    "compressed_sparse_attention",
                    "heavily_compressed_attention",
                    "sliding_attention",
                ],
                compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
                sliding_window=16,
                index_n_heads=12,
                index_head_dim=32,
                index_topk=4,
                hc_mult=4,
                hc_sinkhorn_iters=20,
                hc_eps=1e-6,
                rms_norm_eps=1e-6,
                rope_theta=10000.0,
                compress_rope_theta=40000.0,
                max_position_embeddings=512,
                swiglu_limit=7.0,
                bos_token_id=0,
                eos_token_id=1,
                tie_word_embeddings=False,
            ),
        ),
        "tiny_c": dict(
            seq_len=40,
            seed=7,
            config=dict(
                vocab_size=272,
                hidden_size=48,
                moe_intermediate_size=24,
                num_hidden_layers=3,
                num_attention_heads=3,
                head_dim=32,
                qk_rope_head_dim=8,
                q_lora_rank=24,
                o_lora_rank=16,
                o_groups=3,
                num_experts_per_tok=2,
                n_routed_experts=4,
                n_shared_experts=1,
                scoring_func="sqrtsoftplus",
                routed_scaling_factor=1.0,
                num_hash_layers=0,
                compress_ratios=[4, 0, 128],
                compress_rate_hca=8,
                sliding_window=8,
                index_n_heads=8,
                index_head_dim=16,
                index_topk=2,
                hc_mult=4,
                hc_sinkhorn_iters=20,
                hc_eps=1e-6,
                rms_norm_eps=1e-6,
                max_position_embeddings=128,
                swiglu_limit=10.0,
                bos_token_id=0,
                eos_token_id=1,
                tie_word_embeddings=False,
            ),
        ),
    }


def bf16_round_(t):
    import torch

    with torch.no_grad():
        t.copy_(t.to(torch.bfloat16).to(t.dtype))


def randomise(model, cfg, gen):
    """Unit-scale random parameters (see module docstring)."""
    import torch

    n_exp = cfg.n_routed_experts
    for name, p in model.named_parameters():
        with torch.no_grad():
            leaf = name.split(".")[-1]
            if name.endswith("hc_fn") or leaf == "fn":
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]), generator=gen)
            elif leaf in ("base", "hc_base"):
                p.normal_(0.0, 1.0, generator=gen)
            elif leaf in ("scale", "hc_scale"):
                p.normal_(1.0, 0.3, generator=gen)
            elif leaf == "sinks":
                p.normal_(0.0, 1.0, generator=gen)
            elif leaf == "position_bias":
                p.normal_(0.0, 1.0, generator=gen)
            elif "norm" in name and p.dim() == 1:
                p.normal_(1.0, 0.2, generator=gen)
            elif p.dim() == 3:  # stacked experts [E, out, in]
                p.normal_(0.0, 1.0 / math.sqrt(p.shape[2]), generator=gen)
            elif p.dim() == 2:
                if name.endswith("gate.weight"):  # router: logits O(1..3) so top-k choices are distinct
                    p.normal_(0.0, 2.0 / math.sqrt(p.shape[1]), generator=gen)
                else:
                    p.normal_(0.0, 1.0 / math.sqrt(p.shape[1]), generator=gen)
            elif p.dim() == 1:
                p.normal_(0.0, 1.0, generator=gen)
            else:
                raise RuntimeError(f"no randomisation rule for {name} {tuple(p.shape)}")
            bf16_round_(p)
    for name, b in model.named_buffers():
        with torch.no_grad():
            if name.endswith("e_score_correction_bias"):
                b.normal_(0.0, 0.5, generator=gen)
                bf16_round_(b)
            elif name.endswith("tid2eid"):
                k = b.shape[1]
                rows = [torch.randperm(n_exp, generator=gen)[:k] for _ in range(b.shape[0])]
                b.copy_(torch.stack(rows).to(b.dtype))


class TieMonitor:
    """Records how close every discrete choice on the token-by-token path came to a tie: the indexer's
    top-k boundary (over each query's visible entries) and the MoE router's top-k boundary. A near-tie
    makes the ground truth depend on torch's tie-breaking (e.g. several indexer scores exactly 0 after the
    ReLU), so fixtures with one are rejected and rebuilt with another seed."""

    def __init__(self):
        import transformers.models.deepseek_v4.modeling_deepseek_v4 as m

        self.m = m
        self.min_index_margin = float("inf")
        self.min_router_margin = float("inf")
        self._saved = []

    def __enter__(self):
        import torch

        m = self.m
        mon = self
        orig_indexer_forward = m.DeepseekV4Indexer.forward
        orig_scorer_forward = m.DeepseekV4IndexerScorer.forward
        orig_router_forward = m.DeepseekV4TopKRouter.forward
        state = {}

        def scorer_forward(self_, q, compressed_kv, hidden_states):
            out = orig_scorer_forward(self_, q, compressed_kv, hidden_states)
            state["scores"] = out.detach()
            return out

        def indexer_forward(self_, hidden_states, q_residual, position_ids, past_key_values, layer_idx):
            out = orig_indexer_forward(self_, hidden_states, q_residual, position_ids, past_key_values, layer_idx)
            scores = state.pop("scores", None)
            if scores is not None and scores.shape[-1] > self_.index_topk:
                k = self_.index_topk
                for b in range(scores.shape[0]):
                    for t in range(scores.shape[1]):
                        visible = int((position_ids[b, t] + 1) // self_.compress_rate)
                        if visible <= k:
                            continue
                        v = scores[b, t, :visible].double().sort(descending=True).values
                        scale = max(1.0, float(v.abs().max()))
                        mon.min_index_margin = min(mon.min_index_margin, float(v[k - 1] - v[k]) / scale)
            return out

        def router_forward(self_, hidden_states):
            out = orig_router_forward(self_, hidden_states)
            flat = hidden_states.reshape(-1, self_.hidden_dim)
            scores = self_.score_fn(torch.nn.functional.linear(flat, self_.weight)) + self_.e_score_correction_bias
            v = scores.double().sort(dim=-1, descending=True).values
            k = self_.top_k
            if v.shape[-1] > k:
                mon.min_router_margin = min(mon.min_router_margin, float((v[:, k - 1] - v[:, k]).min()))
            return out

        self._saved = [
            (m.DeepseekV4Indexer, "forward", orig_indexer_forward),
            (m.DeepseekV4IndexerScorer, "forward", orig_scorer_forward),
            (m.DeepseekV4TopKRouter, "forward", orig_router_forward),
        ]
        m.DeepseekV4Indexer.forward = indexer_forward
        m.DeepseekV4IndexerScorer.forward = scorer_forward
        m.DeepseekV4TopKRouter.forward = router_forward
        return self

    def __exit__(self, *exc):
        for cls, attr, fn in self._saved:
            setattr(cls, attr, fn)
        return False


# Rejection thresholds: a relative indexer margin and an absolute router-score margin well above fp32
# (and bf16-activation) noise.
MIN_INDEX_MARGIN = 1e-3
MIN_ROUTER_MARGIN = 1e-3


def token_by_token_logits(model, ids):
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    rows = []
    with torch.no_grad():
        for t in range(ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            rows.append(out.logits[0, -1].clone())
    return torch.stack(rows)


def full_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[0]


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def build_one(name, spec, out_dir, max_attempts=40):
    last = None
    for attempt in range(max_attempts):
        figures = build_attempt(name, spec, out_dir, spec["seed"] + 1000 * attempt)
        last = figures
        if (figures["min_index_margin"] >= MIN_INDEX_MARGIN
                and figures["min_router_margin"] >= MIN_ROUTER_MARGIN):
            return figures
        print(f"{name}: seed {figures['seed']} rejected (index margin {figures['min_index_margin']:.2e}, "
              f"router margin {figures['min_router_margin']:.2e})", flush=True)
    raise RuntimeError(f"{name}: no tie-free seed in {max_attempts} attempts: {last}")


def build_attempt(name, spec, out_dir, seed):
    import torch
    from safetensors.torch import save_file
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    raw = dict(spec["config"])
    raw["architectures"] = ["DeepseekV4ForCausalLM"]
    config = DeepseekV4Config(**raw)
    config._attn_implementation = "eager"
    model = DeepseekV4ForCausalLM(config).float().eval()
    randomise(model, config, gen)

    fdir = os.path.join(out_dir, name)
    os.makedirs(fdir, exist_ok=True)
    model.save_pretrained(fdir, safe_serialization=True)
    # The raw (legacy-style) config we constructed from, for the config-parsing tests.
    with open(os.path.join(fdir, "config.source.json"), "w") as f:
        json.dump(raw, f, indent=1, sort_keys=True)

    T = spec["seq_len"]
    ids = torch.randint(2, config.vocab_size, (1, T), generator=gen)
    with TieMonitor() as monitor:
        tbt = token_by_token_logits(model, ids)
    full = full_logits(model, ids)
    prefix_len = T // 2
    prefix = full_logits(model, ids[:, :prefix_len])
    # Reload from disk to make sure what we committed is what produced the logits.
    reloaded = DeepseekV4ForCausalLM.from_pretrained(fdir, torch_dtype=torch.float32).eval()
    reloaded.config._attn_implementation = "eager"
    tbt_reloaded = token_by_token_logits(reloaded, ids)

    figures = {
        "seed": seed,
        "min_index_margin": monitor.min_index_margin,
        "min_router_margin": monitor.min_router_margin,
        "seq_len": T,
        "vocab_size": config.vocab_size,
        "layer_types": list(config.layer_types),
        "mlp_layer_types": list(config.mlp_layer_types),
        "compress_rates": dict(config.compress_rates),
        "index_topk": config.index_topk,
        "rope_parameters": config.rope_parameters,
        "full_vs_token_by_token_rel": rel(full, tbt),
        "prefix_vs_full_rows_rel": rel(prefix, full[:prefix_len]),
        "prefix_vs_token_by_token_rel": rel(prefix, tbt[:prefix_len]),
        "reloaded_vs_original_rel": rel(tbt_reloaded, tbt),
        "logits_absmax": float(tbt.abs().max()),
    }
    save_file(
        {"input_ids": ids[0].to(torch.int64).contiguous(), "logits": tbt.float().contiguous(),
         "logits_full_forward": full.float().contiguous()},
        os.path.join(fdir, "expected.safetensors"),
    )
    with open(os.path.join(fdir, "figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    names = {k: list(v.shape) for k, v in model.state_dict().items()}
    with open(os.path.join(fdir, "state_dict_names.json"), "w") as f:
        json.dump(names, f, indent=1)
    return figures


def build_from_checkpoint(checkpoint, name, seq_len, seed, out_dir):
    """Ground truth for an existing checkpoint (e.g. the trained models/dsv4-tiny-kjv, whose parity figures
    reflect a real model rather than unit-scale random weights): token-by-token logits of `seq_len` random
    ids, written as OUT_DIR/NAME/{expected.safetensors, figures.json} plus `checkpoint.txt` naming the model
    directory (not copied). Near-ties are measured and reported, not rejected: the weights are given."""
    import torch
    from safetensors.torch import save_file
    from transformers import DeepseekV4ForCausalLM

    model = DeepseekV4ForCausalLM.from_pretrained(checkpoint, torch_dtype=torch.float32).eval()
    model.config._attn_implementation = "eager"
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, model.config.vocab_size, (1, seq_len), generator=gen)
    with TieMonitor() as monitor:
        tbt = token_by_token_logits(model, ids)
    full = full_logits(model, ids)
    top2 = tbt.double().topk(2, dim=-1).values
    figures = {
        "checkpoint": checkpoint,
        "seed": seed,
        "seq_len": seq_len,
        "min_index_margin": monitor.min_index_margin,
        "min_router_margin": monitor.min_router_margin,
        "min_greedy_top2_gap": float((top2[:, 0] - top2[:, 1]).min()),
        "full_vs_token_by_token_rel": rel(full, tbt),
        "logits_absmax": float(tbt.abs().max()),
    }
    fdir = os.path.join(out_dir, name)
    os.makedirs(fdir, exist_ok=True)
    save_file({"input_ids": ids[0].to(torch.int64).contiguous(), "logits": tbt.float().contiguous(),
               "logits_full_forward": full.float().contiguous()}, os.path.join(fdir, "expected.safetensors"))
    with open(os.path.join(fdir, "figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    with open(os.path.join(fdir, "checkpoint.txt"), "w") as f:
        f.write(checkpoint + "\n")
    return figures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--only", default=None)
    ap.add_argument("--from-checkpoint", default=None,
                    help="write ground truth for this existing checkpoint directory instead of random fixtures")
    ap.add_argument("--name", default="trained", help="fixture name with --from-checkpoint")
    ap.add_argument("--seq-len", type=int, default=64, help="ids with --from-checkpoint")
    ap.add_argument("--seed", type=int, default=1234, help="seed of the ids with --from-checkpoint")
    args = ap.parse_args()
    import torch
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    if args.from_checkpoint:
        figures = build_from_checkpoint(args.from_checkpoint, args.name, args.seq_len, args.seed, args.out_dir)
        print(args.name, json.dumps(figures), flush=True)
        return 0
    results = {}
    failed = False
    for name, spec in fixture_configs().items():
        if args.only and name != args.only:
            continue
        try:
            results[name] = build_one(name, spec, args.out_dir)
            print(name, json.dumps(results[name]), flush=True)
        except Exception as e:  # keep going: one bad config must not hide the others
            import traceback

            traceback.print_exc()
            results[name] = {"error": repr(e)}
            failed = True
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__,
                   "fixtures": results}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
