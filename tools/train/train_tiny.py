#!/usr/bin/env python3
"""Trains dsv4's default model: a ~15M-parameter DeepSeek-V4 with its MTP layer, on the King James Bible.

Pipeline (one H100, under 10 minutes; --smoke: a tiny end-to-end run in under a minute):
  1. trains a byte-level BPE tokenizer with DeepSeek-V3/V4's pre-tokenizer (tools/train/dsv4_tokenizer.py);
  2. builds transformers' DeepseekV4ForCausalLM (all three attention layer types, hash and routed MoE,
     hc_mult 4) plus an MTP layer written from shared/reference/dsv4-architecture.md §2 out of
     transformers' own modules (decoder layer, RMSNorm, hyper-connection head);
  3. trains both jointly (next-token loss + 0.3 x MTP loss on the token after next), bf16 autocast,
     AdamW, cosine LR, auxiliary-loss-free router bias balancing, keeping the best held-out checkpoint;
  4. reports held-out perplexity and greedy MTP acceptance rates for K = 1, 2, 3 (the MTP drafting
     recursively as in §5, each draft accepted while it equals the target's argmax);
  5. exports bf16 safetensors in DeepSeek's official tensor naming (incl. mtp.0.*), config.json,
     tokenizer.json and MODEL_CARD.md, then reloads the file into fresh modules and checks the logits
     are identical.

Usage (see tools/train/README.md):
  python3 tools/train/train_tiny.py --corpus kjv.txt --out models/dsv4-tiny-kjv
  python3 tools/train/train_tiny.py --corpus kjv.txt --out /tmp/smoke --smoke
"""

import argparse
import copy
import json
import math
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import dsv4_tokenizer  # noqa: E402

CORPUS_NOTE = ("King James Version of the Bible (1611; public domain), from Debian's bible-kjv-text "
               "package (source package bible-kjv 4.38), extracted by tools/train/prepare_corpus.sh")


# ------------------------------------------------------------------------------------------------
# Configuration


def model_spec(smoke: bool) -> dict:
    """Architecture and training hyper-parameters. transformers' spelling of the config fields."""
    if smoke:
        return dict(
            vocab_size=512, hidden_size=64, moe_intermediate_size=64, num_attention_heads=2, head_dim=32,
            qk_rope_head_dim=8, q_lora_rank=32, o_lora_rank=16, o_groups=2, n_routed_experts=4,
            num_experts_per_tok=2,
            layer_types=["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"],
            mlp_layer_types=["hash_moe", "moe", "moe"],
            compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
            sliding_window=16, index_n_heads=2, index_head_dim=16, index_topk=4,
            seq_len=64, batch_size=4, lr=2e-3, train_seconds=15, max_steps=60, eval_every=20,
            eval_windows=8, accept_prompts=4, accept_prompt_len=16, accept_gen_len=16, corpus_lines=3000,
        )
    return dict(
        vocab_size=6144, hidden_size=256, moe_intermediate_size=192, num_attention_heads=4, head_dim=64,
        qk_rope_head_dim=16, q_lora_rank=128, o_lora_rank=64, o_groups=2, n_routed_experts=8,
        num_experts_per_tok=2,
        layer_types=["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
                     "compressed_sparse_attention", "heavily_compressed_attention", "compressed_sparse_attention"],
        mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe", "moe", "moe"],
        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 16},
        sliding_window=64, index_n_heads=4, index_head_dim=32, index_topk=16,
        seq_len=256, batch_size=32, lr=2e-3, train_seconds=330, max_steps=20000, eval_every=250,
        eval_windows=48, accept_prompts=32, accept_prompt_len=64, accept_gen_len=64, corpus_lines=None,
    )


ARCH_KEYS = ("vocab_size", "hidden_size", "moe_intermediate_size", "num_attention_heads", "head_dim",
             "qk_rope_head_dim", "q_lora_rank", "o_lora_rank", "o_groups", "n_routed_experts",
             "num_experts_per_tok", "layer_types", "mlp_layer_types", "compress_rates", "sliding_window",
             "index_n_heads", "index_head_dim", "index_topk")

FIXED_ARCH = dict(
    num_key_value_heads=1, n_shared_experts=1, scoring_func="sqrtsoftplus", norm_topk_prob=True,
    routed_scaling_factor=1.5, hc_mult=4, hc_sinkhorn_iters=20, hc_eps=1e-6, rms_norm_eps=1e-6,
    rope_theta=10000.0, compress_rope_theta=160000.0, max_position_embeddings=1048576,
    # Both spellings of the type key: older configs say "type", transformers' rope code reads "rope_type".
    rope_scaling=dict(type="yarn", rope_type="yarn", factor=16.0, original_max_position_embeddings=65536,
                      beta_fast=32, beta_slow=1),
    swiglu_limit=10.0, hidden_act="silu", bos_token_id=0, eos_token_id=1, tie_word_embeddings=False,
    num_nextn_predict_layers=1, attention_dropout=0.0,
)


def hf_config_kwargs(spec: dict, extra_mtp_layer: bool = False) -> dict:
    kw = {k: copy.deepcopy(spec[k]) for k in ARCH_KEYS}
    kw.update(copy.deepcopy(FIXED_ARCH))
    kw["num_hidden_layers"] = len(kw["layer_types"])
    # transformers 5 reads YaRN from `rope_parameters` (flat; DeepseekV4Config nests it under
    # "compress" and gives sliding layers plain RoPE); config.json keeps DeepSeek's `rope_scaling`.
    kw["rope_parameters"] = {k: v for k, v in kw.pop("rope_scaling").items() if k != "type"}
    if extra_mtp_layer:
        # The MTP block is decoder layer index num_hidden_layers: sliding attention only (no compressor
        # or indexer) and a non-hash MoE, as in DeepSeek's checkpoints (§2 of the reference).
        kw["layer_types"] = kw["layer_types"] + ["sliding_attention"]
        kw["mlp_layer_types"] = kw["mlp_layer_types"] + ["moe"]
        kw["num_hidden_layers"] += 1
    return kw


def official_config(spec: dict) -> dict:
    """config.json in DeepSeek's official style, plus transformers' own fields so that
    DeepseekV4Config(**config) also reproduces the model (compress_ratios of 16 are not in its
    legacy 0/4/128 table, layer_types takes precedence)."""
    kw = hf_config_kwargs(spec)
    rates = kw["compress_rates"]
    ratio = {"sliding_attention": 0, "compressed_sparse_attention": rates["compressed_sparse_attention"],
             "heavily_compressed_attention": rates["heavily_compressed_attention"]}
    n_hash = sum(1 for t in kw["mlp_layer_types"] if t == "hash_moe")
    assert kw["mlp_layer_types"] == ["hash_moe"] * n_hash + ["moe"] * (len(kw["mlp_layer_types"]) - n_hash)
    cfg = {
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        "vocab_size": kw["vocab_size"],
        "hidden_size": kw["hidden_size"],
        "num_hidden_layers": kw["num_hidden_layers"],
        "num_attention_heads": kw["num_attention_heads"],
        "num_key_value_heads": kw["num_key_value_heads"],
        "head_dim": kw["head_dim"],
        "qk_rope_head_dim": kw["qk_rope_head_dim"],
        "q_lora_rank": kw["q_lora_rank"],
        "o_lora_rank": kw["o_lora_rank"],
        "o_groups": kw["o_groups"],
        "n_routed_experts": kw["n_routed_experts"],
        "n_shared_experts": kw["n_shared_experts"],
        "num_experts_per_tok": kw["num_experts_per_tok"],
        "moe_intermediate_size": kw["moe_intermediate_size"],
        "scoring_func": kw["scoring_func"],
        "topk_method": "noaux_tc",
        "norm_topk_prob": kw["norm_topk_prob"],
        "routed_scaling_factor": kw["routed_scaling_factor"],
        "num_hash_layers": n_hash,
        # One entry per layer plus one for the MTP layer (sliding window only), as DeepSeek ships it.
        "compress_ratios": [ratio[t] for t in kw["layer_types"]] + [0],
        "sliding_window": kw["sliding_window"],
        "index_n_heads": kw["index_n_heads"],
        "index_head_dim": kw["index_head_dim"],
        "index_topk": kw["index_topk"],
        "hc_mult": kw["hc_mult"],
        "hc_sinkhorn_iters": kw["hc_sinkhorn_iters"],
        "hc_eps": kw["hc_eps"],
        "rms_norm_eps": kw["rms_norm_eps"],
        "rope_theta": kw["rope_theta"],
        "compress_rope_theta": kw["compress_rope_theta"],
        "rope_scaling": dict(FIXED_ARCH["rope_scaling"]),
        "max_position_embeddings": kw["max_position_embeddings"],
        "swiglu_limit": kw["swiglu_limit"],
        "hidden_act": kw["hidden_act"],
        "num_nextn_predict_layers": 1,
        "bos_token_id": kw["bos_token_id"],
        "eos_token_id": kw["eos_token_id"],
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "expert_dtype": "bf16",
        # transformers' spelling of the same schedule:
        "layer_types": kw["layer_types"],
        "mlp_layer_types": kw["mlp_layer_types"],
        "compress_rates": rates,
    }
    return cfg


# ------------------------------------------------------------------------------------------------
# Official naming (DeepSeek's checkpoint) <-> transformers' module names

# Per-layer suffixes, transformers -> official, most specific first. Alternatives in (...|...) cover
# spellings seen across transformers releases.
LAYER_RENAMES = [
    (r"self_attn\.compressor\.indexer\.position_bias", "attn.indexer.compressor.ape"),
    (r"self_attn\.compressor\.indexer\.kv_proj\.weight", "attn.indexer.compressor.wkv.weight"),
    (r"self_attn\.compressor\.indexer\.gate_proj\.weight", "attn.indexer.compressor.wgate.weight"),
    (r"self_attn\.compressor\.indexer\.kv_norm\.weight", "attn.indexer.compressor.norm.weight"),
    (r"self_attn\.compressor\.indexer\.q_b_proj\.weight", "attn.indexer.wq_b.weight"),
    (r"self_attn\.compressor\.indexer\.scorer\.weights_proj\.weight", "attn.indexer.weights_proj.weight"),
    (r"self_attn\.compressor\.indexer\.weights_proj\.weight", "attn.indexer.weights_proj.weight"),
    (r"self_attn\.compressor\.position_bias", "attn.compressor.ape"),
    (r"self_attn\.compressor\.kv_proj\.weight", "attn.compressor.wkv.weight"),
    (r"self_attn\.compressor\.gate_proj\.weight", "attn.compressor.wgate.weight"),
    (r"self_attn\.compressor\.kv_norm\.weight", "attn.compressor.norm.weight"),
    (r"self_attn\.sinks", "attn.attn_sink"),
    (r"self_attn\.q_a_proj\.weight", "attn.wq_a.weight"),
    (r"self_attn\.q_a_norm\.weight", "attn.q_norm.weight"),
    (r"self_attn\.q_b_proj\.weight", "attn.wq_b.weight"),
    (r"self_attn\.kv_proj\.weight", "attn.wkv.weight"),
    (r"self_attn\.kv_norm\.weight", "attn.kv_norm.weight"),
    (r"self_attn\.o_a_proj\.weight", "attn.wo_a.weight"),
    (r"self_attn\.o_b_proj\.weight", "attn.wo_b.weight"),
    (r"input_layernorm\.weight", "attn_norm.weight"),
    (r"post_attention_layernorm\.weight", "ffn_norm.weight"),
    (r"attn_hc\.fn", "hc_attn_fn"),
    (r"attn_hc\.base", "hc_attn_base"),
    (r"attn_hc\.scale", "hc_attn_scale"),
    (r"ffn_hc\.fn", "hc_ffn_fn"),
    (r"ffn_hc\.base", "hc_ffn_base"),
    (r"ffn_hc\.scale", "hc_ffn_scale"),
    (r"mlp\.gate\.e_score_correction_bias", "ffn.gate.bias"),
    (r"mlp\.gate\.tid2eid", "ffn.gate.tid2eid"),
    (r"mlp\.gate\.weight", "ffn.gate.weight"),
    (r"mlp\.shared_experts\.gate_proj\.weight", "ffn.shared_experts.w1.weight"),
    (r"mlp\.shared_experts\.up_proj\.weight", "ffn.shared_experts.w3.weight"),
    (r"mlp\.shared_experts\.down_proj\.weight", "ffn.shared_experts.w2.weight"),
    # Fused routed experts are split per expert (see expand_experts).
    (r"mlp\.experts\.gate_up_proj", "ffn.experts.*.w1+w3"),
    (r"mlp\.experts\.down_proj", "ffn.experts.*.w2"),
]

TOP_RENAMES = [
    (r"model\.embed_tokens\.weight", "embed.weight"),
    (r"lm_head\.weight", "head.weight"),
    (r"model\.norm\.weight", "norm.weight"),
    (r"model\.hc_head\.(hc_)?fn", "hc_head_fn"),
    (r"model\.hc_head\.(hc_)?base", "hc_head_base"),
    (r"model\.hc_head\.(hc_)?scale", "hc_head_scale"),
    # The MTP module defined below.
    (r"mtp\.enorm\.weight", "mtp.0.enorm.weight"),
    (r"mtp\.hnorm\.weight", "mtp.0.hnorm.weight"),
    (r"mtp\.e_proj\.weight", "mtp.0.e_proj.weight"),
    (r"mtp\.h_proj\.weight", "mtp.0.h_proj.weight"),
    (r"mtp\.norm\.weight", "mtp.0.norm.weight"),
    (r"mtp\.hc_head\.(hc_)?fn", "mtp.0.hc_head_fn"),
    (r"mtp\.hc_head\.(hc_)?base", "mtp.0.hc_head_base"),
    (r"mtp\.hc_head\.(hc_)?scale", "mtp.0.hc_head_scale"),
]

# Tensors DeepSeek keeps in fp32 (mHC mixing, sinks, compressor position bias, router bias).
F32_PATTERN = re.compile(r"(^|\.)(hc_[a-z_]+|attn_sink|ape|gate\.bias)$")


def official_name(hf_name: str) -> str | None:
    """Official name (or pattern with '*' for fused experts) of a transformers/MTP state-dict key."""
    for pat, off in TOP_RENAMES:
        if re.fullmatch(pat, hf_name):
            return off
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
    prefix = None
    if m:
        prefix, suffix = f"layers.{m.group(1)}.", m.group(2)
    else:
        m = re.fullmatch(r"mtp\.block\.(.+)", hf_name)
        if m:
            prefix, suffix = "mtp.0.", m.group(1)
    if prefix is None:
        return None
    for pat, off in LAYER_RENAMES:
        if re.fullmatch(pat, suffix):
            return prefix + off
    return None


def build_name_map(state_dict) -> dict:
    """hf name -> official name for every tensor; exits with the list of unmapped names if any."""
    mapping, unmapped = {}, []
    for k in state_dict:
        off = official_name(k)
        if off is None:
            unmapped.append(k)
        else:
            mapping[k] = off
    if unmapped:
        print("error: state-dict tensors with no official name (extend LAYER_RENAMES/TOP_RENAMES):", file=sys.stderr)
        for k in unmapped:
            print(f"  {k} {tuple(state_dict[k].shape)}", file=sys.stderr)
        raise SystemExit(2)
    return mapping


def export_tensors(state_dict, mapping):
    """Official name -> tensor (bf16, or f32/i64 for the sensitive ones), experts split per expert."""
    import torch

    out = {}
    for k, t in state_dict.items():
        off = mapping[k]
        t = t.detach().cpu()
        if off.endswith("ffn.experts.*.w1+w3"):  # gate_up_proj [E, 2I, H]: rows [0,I) gate, [I,2I) up
            inter = t.shape[1] // 2
            for e in range(t.shape[0]):
                base = off.replace("*.w1+w3", str(e))
                out[f"{base}.w1.weight"] = t[e, :inter].to(torch.bfloat16).contiguous()
                out[f"{base}.w3.weight"] = t[e, inter:].to(torch.bfloat16).contiguous()
            continue
        if off.endswith("ffn.experts.*.w2"):  # down_proj [E, H, I]
            for e in range(t.shape[0]):
                out[off.replace("*.w2", f"{e}.w2.weight")] = t[e].to(torch.bfloat16).contiguous()
            continue
        if off.endswith("tid2eid"):
            out[off] = t.to(torch.int64).contiguous()
        elif F32_PATTERN.search(off):
            out[off] = t.to(torch.float32).contiguous()
        else:
            out[off] = t.to(torch.bfloat16).contiguous()
    return out


def import_tensors(tensors, reference_state_dict, mapping):
    """Inverse of export_tensors: a state dict for the transformers/MTP modules."""
    import torch

    sd = {}
    for k, ref in reference_state_dict.items():
        off = mapping[k]
        if off.endswith("ffn.experts.*.w1+w3"):
            parts = []
            for e in range(ref.shape[0]):
                base = off.replace("*.w1+w3", str(e))
                parts.append(torch.cat([tensors[f"{base}.w1.weight"], tensors[f"{base}.w3.weight"]], dim=0))
            sd[k] = torch.stack(parts).to(ref.dtype)
        elif off.endswith("ffn.experts.*.w2"):
            sd[k] = torch.stack([tensors[off.replace("*.w2", f"{e}.w2.weight")]
                                 for e in range(ref.shape[0])]).to(ref.dtype)
        else:
            sd[k] = tensors[off].to(ref.dtype)
    return sd


def round_exported_to_bf16_(module, mapping, prefix=""):
    """Rounds, in place, every tensor that is exported as bf16, so the in-memory model computes exactly
    what the exported file holds."""
    import torch

    with torch.no_grad():
        for k, t in module.state_dict(keep_vars=True).items():
            name = prefix + k
            off = mapping[name]
            if off.endswith("tid2eid") or ("*" not in off and F32_PATTERN.search(off)):
                continue
            if t.dtype.is_floating_point:
                t.data.copy_(t.data.to(torch.bfloat16).to(t.dtype))


# ------------------------------------------------------------------------------------------------
# Model: transformers' DeepSeek-V4 plus an MTP layer


def build_models(spec, device):
    import torch
    import transformers
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    config = DeepseekV4Config(**hf_config_kwargs(spec))
    config._attn_implementation = "eager"
    rp = getattr(config, "rope_parameters", None) or {}
    compress_type = (rp.get("compress") or {}).get("rope_type")
    if compress_type != "yarn" or list(config.layer_types) != spec["layer_types"]:
        raise SystemExit(f"error: transformers did not take the config as meant: rope_parameters={rp}, "
                         f"layer_types={config.layer_types}")
    model = DeepseekV4ForCausalLM(config)
    # tid2eid is a frozen token -> experts table that comes with a checkpoint; transformers initialises
    # it to zeros. A random table with k distinct experts per token, as DeepSeek's hash routing uses.
    g = torch.Generator().manual_seed(1234)
    for name, buf in model.named_buffers():
        if name.endswith("tid2eid"):
            v, k = buf.shape
            table = torch.rand(v, config.n_routed_experts, generator=g).argsort(dim=1)[:, :k]
            buf.copy_(table.to(buf.dtype))

    mtp_config = DeepseekV4Config(**hf_config_kwargs(spec, extra_mtp_layer=True))
    mtp_config._attn_implementation = "eager"
    # The MTP layer (reference §2) lives in tools/reference/mtp_reference.py, shared with the fixtures.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
    from mtp_reference import build_mtp_layer

    mtp = build_mtp_layer(config, model, mtp_config)
    init_like_target_(mtp, config.initializer_range)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    return config, model.to(device), mtp.to(device)


def init_like_target_(module, std):
    """Initialises every parameter of the MTP layer the way DeepseekV4PreTrainedModel._init_weights
    treats the target's (transformers builds several of them with torch.empty). Name-based, so it does
    not depend on transformers' class names."""
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.split(".")[-1]
            if leaf in ("fn", "hc_fn"):
                p.normal_(0.0, std)
            elif leaf in ("base", "hc_base", "sinks", "position_bias", "bias"):
                p.zero_()
            elif leaf in ("scale", "hc_scale"):
                p.fill_(1.0)
            elif "norm" in name and p.dim() == 1:
                p.fill_(1.0)
            elif p.dim() >= 2:
                p.normal_(0.0, std)
            else:
                raise SystemExit(f"error: no initialisation rule for MTP parameter {name} {tuple(p.shape)}")
        for name, b in module.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.zero_()
        bad = [n for n, p in module.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise SystemExit(f"error: non-finite MTP parameters after init: {bad}")


class TargetCapture:
    """Captures, during a target forward, the pre-hc residual (input of model.hc_head) and the keyword
    arguments transformers passes to a decoder layer (position embeddings, position ids, mask), which
    the MTP block reuses: it runs on the same positions."""

    def __init__(self, model):
        self.hidden = None
        self.layer_kwargs = None
        model.model.hc_head.register_forward_pre_hook(self._hc_hook)
        model.model.layers[0].register_forward_pre_hook(self._layer_hook, with_kwargs=True)

    def _hc_hook(self, module, args):
        self.hidden = args[0]

    def _layer_hook(self, module, args, kwargs):
        self.layer_kwargs = {k: v for k, v in kwargs.items() if k not in ("input_ids", "hidden_states")}


class RouterBalancer:
    """DeepSeek's auxiliary-loss-free balancing: after each step nudge each routed layer's selection
    bias (e_score_correction_bias, exported as ffn.gate.bias) towards under-loaded experts."""

    def __init__(self, modules, n_experts, gamma):
        self.gamma = gamma
        self.n_experts = n_experts
        self.counts = {}
        self.routers = []
        self.enabled = True  # switched off after training: evaluation and export checks must not count
        for name, m in modules:
            if hasattr(m, "e_score_correction_bias"):
                self.routers.append((name, m))
                m.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        import torch

        idx = [o for o in output if isinstance(o, torch.Tensor) and not o.dtype.is_floating_point]
        if idx and module.training and self.enabled:
            c = torch.bincount(idx[-1].reshape(-1), minlength=self.n_experts).float()
            prev = self.counts.get(id(module))
            self.counts[id(module)] = c if prev is None else prev + c.to(prev.device)

    def step(self):
        import torch

        with torch.no_grad():
            for _, m in self.routers:
                c = self.counts.pop(id(m), None)
                if c is not None:
                    m.e_score_correction_bias.add_(self.gamma * torch.sign(c.mean() - c))


# ------------------------------------------------------------------------------------------------
# Data


def load_corpus(path, limit_lines):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    if limit_lines:
        lines = lines[:limit_lines]
    return lines


def tokenize_corpus(tok, lines):
    # Lines joined back with newlines; encoded in chunks (encode_batch runs in parallel).
    chunks = ["\n".join(lines[i:i + 500]) + "\n" for i in range(0, len(lines), 500)]
    ids = []
    for enc in tok.encode_batch(chunks, add_special_tokens=False):
        ids.extend(enc.ids)
    return ids


def split_stream(ids, block=8192, every=20):
    """Every `every`-th block of `block` tokens is held out (spread over the whole book)."""
    train, held = [], []
    for b, i in enumerate(range(0, len(ids), block)):
        (held if b % every == every // 2 else train).extend(ids[i:i + block])
    return train, held


# ------------------------------------------------------------------------------------------------
# Training and evaluation


def forward_losses(model, mtp, cap, batch, bos):
    """batch [B, S+2] token windows starting with BOS. Returns (main loss, MTP loss)."""
    import torch
    import torch.nn.functional as F

    inp = batch[:, :-2]
    out = model(input_ids=inp, use_cache=False)
    v = out.logits.shape[-1]
    main = F.cross_entropy(out.logits.float().reshape(-1, v), batch[:, 1:-1].reshape(-1))
    pos = position_ids_of(cap, inp)
    emb = model.model.embed_tokens(batch[:, 1:-1])
    hs = mtp(cap.hidden, emb, pos, cap.layer_kwargs)
    mtp_logits = mtp.logits(hs, model.lm_head)
    mtp_loss = F.cross_entropy(mtp_logits.float().reshape(-1, v), batch[:, 2:].reshape(-1))
    return main, mtp_loss


def position_ids_of(cap, inp):
    import torch

    pos = cap.layer_kwargs.get("position_ids")
    if pos is None:
        pos = torch.arange(inp.shape[1], device=inp.device).unsqueeze(0)
    return pos.expand(inp.shape[0], -1)


def make_windows(stream, seq_len, bos, starts):
    import torch

    rows = [[bos] + stream[s:s + seq_len + 1] for s in starts]
    return torch.tensor(rows, dtype=torch.long)


def evaluate(model, mtp, cap, held, seq_len, bos, n_windows, device, batch=16, autocast=True):
    import torch

    step = seq_len + 1
    starts = list(range(0, len(held) - step - 1, step))[:n_windows] if n_windows else \
        list(range(0, len(held) - step - 1, step))
    tot_main = tot_mtp = 0.0
    n = 0
    model.eval()
    mtp.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast and device == "cuda"):
        for i in range(0, len(starts), batch):
            w = make_windows(held, seq_len, bos, starts[i:i + batch]).to(device)
            a, b = forward_losses(model, mtp, cap, w, bos)
            tot_main += a.item() * w.shape[0]
            tot_mtp += b.item() * w.shape[0]
            n += w.shape[0]
    model.train()
    mtp.train()
    return tot_main / n, tot_mtp / n


def causality_check(model, config, device):
    """transformers' multi-token forward must be causal for training to match token-by-token inference
    (older releases let the CSA indexer's top-k see future entries). Compares a prefix forward with the
    same rows of the full forward, on the random-initialised model."""
    import torch

    g = torch.Generator().manual_seed(5)
    t = 96
    ids = torch.randint(3, config.vocab_size, (2, t), generator=g).to(device)
    model.eval()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 rounding differs between shapes
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits.float()
        pre = model(input_ids=ids[:, : t // 2], use_cache=False).logits.float()
    torch.backends.cuda.matmul.allow_tf32 = tf32
    model.train()
    rel = float((full[:, : t // 2] - pre).abs().max() / full.abs().max().clamp_min(1e-9))
    return rel



def greedy_continue(model, prompts, n_new):
    """Plain greedy decoding by full recomputation (small model, short sequences: no cache needed,
    and the forward is causal, so this equals token-by-token decoding)."""
    import torch

    ids = prompts
    with torch.no_grad():
        for _ in range(n_new):
            nxt = model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids


def acceptance_rates(model, mtp, cap, prompts, n_new, k_max):
    """Greedy speculative decoding with the MTP drafter, simulated exactly (reference §5).

    For every sequence s = prompt + the target's greedy continuation, and every position q the target
    has processed, the drafter proposes d1..dK from q: step 1 runs the MTP over positions 0..q with
    (target pre-hc hidden[p], embedding of s[p+1]); step j feeds back (MTP output at q+j-2, d_{j-1}) at
    position q+j-1. The MTP block is sliding-window attention only, hence causal, so one full-length
    forward per step with the draft inputs written at those positions gives exactly the outputs of
    the cached incremental computation. Drafts are then accepted while equal to s (the target's argmax)
    and the verify loop advances by accepted+1 tokens, from the end of the prompt.
    Returns {K: (acceptance rate, mean tokens per target step)}."""
    import torch

    seqs = greedy_continue(model, prompts, n_new)
    b, total = seqs.shape
    p0 = prompts.shape[1] - 1
    results = {k: [0, 0, 0] for k in range(1, k_max + 1)}  # accepted, proposed, steps
    length = total - 1  # MTP positions 0..L-2 (position L-1 has no next token)
    with torch.no_grad():
        for row in range(b):
            s = seqs[row]
            # Batch-1 target forward: the captured mask and rotary tables then broadcast over the
            # draft rows below.
            model(input_ids=seqs[row:row + 1], use_cache=False)
            prev0 = cap.hidden.clone()  # [1, L, n, H]
            kwargs = cap.layer_kwargs
            pos = position_ids_of(cap, seqs[row:row + 1])
            emb0 = model.model.embed_tokens(seqs[row:row + 1])[:, 1:]
            emb0 = torch.cat([emb0, emb0[:, -1:]], dim=1)  # pad to L; the last position is never read
            qs = list(range(p0, length - k_max))
            nq = len(qs)
            rows = torch.arange(nq, device=seqs.device)
            q_t = torch.tensor(qs, device=seqs.device)
            out0 = mtp(prev0, emb0, pos, kwargs)
            # outs[t][i]: MTP output (pre-hc residual) of step t+1 at position qs[i]+t; drafts[t][i]: d_{t+1}.
            outs = [out0[0, qs]]
            drafts = [mtp.logits(out0, model.lm_head).argmax(-1)[0, qs]]
            for j in range(2, k_max + 1):
                prev = prev0.expand(nq, -1, -1, -1).clone()
                emb = emb0.expand(nq, -1, -1).clone()
                for t in range(1, j):
                    # Position q+t carries (MTP output at q+t-1, draft d_t), as the drafter's step t+1 does.
                    prev[rows, q_t + t] = outs[t - 1]
                    emb[rows, q_t + t] = model.model.embed_tokens(drafts[t - 1])
                out = mtp(prev, emb, pos.expand(nq, -1), kwargs)
                last = out[rows, q_t + j - 1]  # [Q, n, H]
                outs.append(last)
                drafts.append(mtp.logits(last.unsqueeze(1), model.lm_head)[:, 0].argmax(-1))
            # Verify loop.
            draft_mat = torch.stack(drafts, dim=1).tolist()  # [Q, K]
            q_index = {q: i for i, q in enumerate(qs)}
            truth = s.tolist()
            for k in range(1, k_max + 1):
                q = p0
                while q in q_index and q + k + 1 < total:
                    ds = draft_mat[q_index[q]][:k]
                    a = 0
                    while a < k and ds[a] == truth[q + 2 + a]:
                        a += 1
                    results[k][0] += a
                    results[k][1] += k
                    results[k][2] += 1
                    q += a + 1
    return {k: (acc / max(prop, 1), (acc + steps) / max(steps, 1)) for k, (acc, prop, steps) in results.items()}


SHARD_BYTES = 14 * 2**20  # the GPU machine hands back files of at most 16 MiB


def save_sharded(tensors, out_dir, save_file):
    """HF-style sharded safetensors (model-0000i-of-0000n.safetensors + model.safetensors.index.json)."""
    shards, cur, size = [], {}, 0
    for name in sorted(tensors):
        nbytes = tensors[name].numel() * tensors[name].element_size()
        if cur and size + nbytes > SHARD_BYTES:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = tensors[name]
        size += nbytes
    if cur:
        shards.append(cur)
    for old in os.listdir(out_dir):
        if old.startswith("model") and old.endswith((".safetensors", ".safetensors.index.json")):
            os.remove(os.path.join(out_dir, old))
    files, weight_map, total = [], {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(out_dir, fname), metadata={"format": "pt"})
        files.append(os.path.join(out_dir, fname))
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * t.element_size()
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1, sort_keys=True)
        f.write("\n")
    return files


def sample_text(model, tok, prompt, n_new, device):
    import torch

    ids = torch.tensor([tok.encode(prompt, add_special_tokens=True).ids], device=device)
    out = greedy_continue(model, ids, n_new)
    return tok.decode(out[0].tolist(), skip_special_tokens=True)


def count_params(module):
    return sum(p.numel() for p in module.parameters())


def write_model_card(path, spec, cfg, stats):
    lines = [
        "# dsv4-tiny-kjv",
        "",
        "dsv4's default model: a small DeepSeek-V4 (all three attention layer types, hash and routed MoE,",
        "mHC with hc_mult 4) with its MTP draft layer, trained from scratch by `tools/train/train_tiny.py`.",
        "It writes KJV-flavoured English; it exists to exercise the engine and speculative decoding, not",
        "to be useful.",
        "",
        "## Data and licence",
        "",
        f"- Corpus: {CORPUS_NOTE}.",
        f"- {stats['corpus_tokens']:,} tokens; every 20th block of 8192 tokens held out "
        f"({stats['held_tokens']:,} tokens).",
        "- The KJV text is in the public domain (the translation dates from 1611); the Debian package's own",
        "  retrieval software is GPL-2+, but only the text is used here. The trained weights, config and",
        "  tokenizer are released under the same terms as this repository.",
        "",
        "## Tokenizer",
        "",
        f"Byte-level BPE, vocabulary {stats['vocab_size']} (3 special tokens: BOS `<｜begin▁of▁sentence｜>` = 0,",
        "EOS `<｜end▁of▁sentence｜>` = 1, PAD = 2), DeepSeek-V3/V4 pre-tokenizer (digit groups of at most 3,",
        "CJK runs, word/punctuation regex, ByteLevel), BOS added by the post-processor, trained with",
        f"`tokenizers` {stats['tokenizers_version']}.",
        "",
        "## Architecture",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "qk_rope_head_dim",
              "q_lora_rank", "o_groups", "o_lora_rank", "n_routed_experts", "num_experts_per_tok",
              "n_shared_experts", "moe_intermediate_size", "num_hash_layers", "compress_ratios", "sliding_window",
              "index_n_heads", "index_head_dim", "index_topk", "hc_mult", "num_nextn_predict_layers"):
        lines.append(f"| {k} | {cfg[k]} |")
    lines += [
        "",
        f"Parameters: {stats['params_main']:,} in the target model, {stats['params_mtp']:,} in the MTP layer "
        f"(embedding and head shared), {stats['params_total']:,} in all; exported as bf16 safetensors "
        "(mHC, sinks, compressor `ape` and router bias in f32, `tid2eid` in i64) with DeepSeek's official tensor "
        "names, `mtp.0.*` included.",
        "",
        "## Training",
        "",
        f"- {stats['steps']} steps of {spec['batch_size']} x {spec['seq_len']} tokens (BOS + text windows), "
        f"{stats['train_seconds']:.0f} s on {stats['device_name']} (torch {stats['torch_version']}, "
        f"transformers {stats['transformers_version']}).",
        f"- AdamW (lr {spec['lr']}, betas 0.9/0.95, weight decay 0.1), warm-up then cosine, bf16 autocast;",
        "  loss = next-token cross-entropy + 0.3 x MTP cross-entropy on the token after next;",
        "  auxiliary-loss-free router bias updates (gamma 1e-3); best held-out checkpoint kept "
        f"(step {stats['best_step']}).",
        "",
        "Held-out loss during training (step: target / MTP): " + ", ".join(
            f"{st}: {hl:.3f} / {hm:.3f}" for st, _, _, hl, hm in stats["log"]) + ".",
        "",
        "## Results (exported bf16 weights, fp32 compute, PyTorch)",
        "",
        f"- Held-out perplexity: **{stats['ppl']:.2f}** (MTP, token after next: {stats['mtp_ppl']:.2f}).",
        f"- Greedy MTP acceptance over {stats['accept_prompts']} held-out prompts of {spec['accept_prompt_len']} "
        f"tokens, {spec['accept_gen_len']} generated tokens each:",
        "",
        "| K (draft tokens) | acceptance rate | tokens per target step |",
        "|---|---|---|",
    ]
    for k, (rate, tps) in sorted(stats["acceptance"].items()):
        lines.append(f"| {k} | {rate:.3f} | {tps:.2f} |")
    lines += [
        "",
        "Sample (greedy, prompt \"And God said\"):",
        "",
        "> " + stats["sample"].replace("\n", "\n> "),
        "",
        "Reproduce: `tools/train/README.md`.",
        "",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="plain-text corpus from tools/train/prepare_corpus.sh")
    ap.add_argument("--out", required=True, help="output model directory (e.g. models/dsv4-tiny-kjv)")
    ap.add_argument("--smoke", action="store_true", help="tiny end-to-end run (< 60 s) to validate the pipeline")
    ap.add_argument("--train-seconds", type=float, default=None, help="wall-clock budget of the training loop")
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--mtp-weight", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()

    if not os.path.exists(args.corpus):
        raise SystemExit(f"error: corpus {args.corpus} not found (make it with tools/train/prepare_corpus.sh)")
    t_start = time.time()
    spec = model_spec(args.smoke)
    if args.train_seconds is not None:
        spec["train_seconds"] = args.train_seconds
    if args.max_steps is not None:
        spec["max_steps"] = args.max_steps

    tokenizers = dsv4_tokenizer.require_tokenizers()
    import torch

    try:
        import transformers
        from transformers import DeepseekV4ForCausalLM  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"error: transformers >= 5.17 with DeepseekV4ForCausalLM is required ({e})") from e
    from safetensors.torch import load_file, save_file

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device (pass --device cpu for a very slow run)")
    torch.manual_seed(args.seed)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.makedirs(args.out, exist_ok=True)

    # 1. Tokenizer and data.
    lines = load_corpus(args.corpus, spec["corpus_lines"])
    t0 = time.time()
    tok = dsv4_tokenizer.train_deepseek_bpe(lines, spec["vocab_size"])
    if tok.get_vocab_size(with_added_tokens=True) != spec["vocab_size"]:
        print(f"note: tokenizer vocabulary {tok.get_vocab_size()} (asked for {spec['vocab_size']})")
        spec["vocab_size"] = tok.get_vocab_size(with_added_tokens=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    ids = tokenize_corpus(tok, lines)
    train_ids, held_ids = split_stream(ids)
    chars_per_token = sum(len(ln) + 1 for ln in lines) / max(1, len(ids))
    print(f"tokenizer: vocab {spec['vocab_size']}, trained in {time.time() - t0:.1f} s; corpus {len(ids):,} tokens "
          f"({chars_per_token:.2f} chars/token), train {len(train_ids):,}, held-out {len(held_ids):,}", flush=True)
    bos = dsv4_tokenizer.SPECIAL_TOKENS.index(dsv4_tokenizer.BOS)

    # 2. Models; the name mapping is checked before any training time is spent.
    config, model, mtp = build_models(spec, device)
    full_sd = {**model.state_dict(), **{"mtp." + k: v for k, v in mtp.state_dict().items()}}
    mapping = build_name_map(full_sd)
    print("transformers -> official names:")
    for k, v in mapping.items():
        if re.match(r"model\.layers\.0\.|model\.layers\.1\.self_attn\.compressor|mtp\.|model\.[a-z_]+\.|lm_head",
                    k):
            print(f"  {k:70s} -> {v}")
    print(f"  ... {len(mapping)} tensors mapped, none unmapped", flush=True)
    rel = causality_check(model, config, device)
    print(f"causality check (prefix forward vs full forward rows): rel diff {rel:.2e}", flush=True)
    if rel > 1e-4:
        # Non-causal training would teach the model to read the future through the indexer; selecting
        # every visible compressed entry (index_topk >= seq_len / 4) is causal and exact.
        new_topk = spec["seq_len"] // spec["compress_rates"]["compressed_sparse_attention"] + 1
        print(f"WARNING: this transformers' multi-token forward is not causal; index_topk "
              f"{spec['index_topk']} -> {new_topk} so the indexer keeps every visible entry", flush=True)
        spec["index_topk"] = new_topk
        config, model, mtp = build_models(spec, device)
        rel = causality_check(model, config, device)
        print(f"causality check after the change: rel diff {rel:.2e}", flush=True)
        if rel > 1e-4:
            raise SystemExit("error: the model is still not causal; refusing to train")
    params_main, params_mtp = count_params(model), count_params(mtp)
    print(f"parameters: target {params_main:,}, MTP {params_mtp:,}", flush=True)

    cap = TargetCapture(model)
    balancer = RouterBalancer(list(model.named_modules()) + list(mtp.named_modules()), config.n_routed_experts, 1e-3)
    params = [p for p in list(model.parameters()) + list(mtp.parameters()) if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=spec["lr"], betas=(0.9, 0.95), fused=device == "cuda")
    seq = spec["seq_len"]
    gen = torch.Generator().manual_seed(args.seed)
    warmup = 50 if args.smoke else 150
    planned = spec["max_steps"]
    best = (float("inf"), None, 0)
    step = 0
    t_train = time.time()
    log = []
    model.train()
    mtp.train()
    while step < planned:
        lr = spec["lr"] * (step + 1) / warmup if step < warmup else \
            spec["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, planned - warmup)))))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(train_ids) - seq - 2, (spec["batch_size"],), generator=gen).tolist()
        batch = make_windows(train_ids, seq, bos, starts).to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            main_loss, mtp_loss = forward_losses(model, mtp, cap, batch, bos)
            loss = main_loss + args.mtp_weight * mtp_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        balancer.step()
        step += 1
        elapsed = time.time() - t_train
        if step == 20:
            # Fix the schedule length from the measured step time so the cosine ends inside the budget.
            per_step = elapsed / step
            planned = min(planned, max(step + 1, int(spec["train_seconds"] / per_step)))
            print(f"{per_step * 1000:.0f} ms/step -> {planned} steps in {spec['train_seconds']:.0f} s", flush=True)
        if step % spec["eval_every"] == 0 or step == planned or elapsed > spec["train_seconds"]:
            hl, hm = evaluate(model, mtp, cap, held_ids, seq, bos, spec["eval_windows"], device)
            log.append((step, main_loss.item(), mtp_loss.item(), hl, hm))
            print(f"step {step:5d}  lr {lr:.2e}  train {main_loss.item():.3f}/{mtp_loss.item():.3f}  "
                  f"held-out {hl:.3f}/{hm:.3f} (ppl {math.exp(hl):.1f})  {elapsed:.0f} s", flush=True)
            if hl < best[0]:
                best = (hl, {k: v.detach().clone() for k, v in
                             {**model.state_dict(), **{"mtp." + k: v for k, v in mtp.state_dict().items()}}.items()},
                        step)
        if elapsed > spec["train_seconds"]:
            print(f"time budget reached at step {step}", flush=True)
            break
    train_seconds = time.time() - t_train
    balancer.enabled = False

    # 3. Best checkpoint, rounded to what is exported; final metrics in fp32 compute.
    model.load_state_dict({k: v for k, v in best[1].items() if not k.startswith("mtp.")})
    mtp.load_state_dict({k[4:]: v for k, v in best[1].items() if k.startswith("mtp.")})
    round_exported_to_bf16_(model, mapping)
    round_exported_to_bf16_(mtp, mapping, prefix="mtp.")
    torch.backends.cuda.matmul.allow_tf32 = False
    model.eval()
    mtp.eval()
    hl, hm = evaluate(model, mtp, cap, held_ids, seq, bos, 0 if not args.smoke else spec["eval_windows"], device,
                      autocast=False)
    print(f"held-out (best step {best[2]}, bf16 weights, fp32 compute): loss {hl:.4f} ppl {math.exp(hl):.2f}; "
          f"MTP loss {hm:.4f} ppl {math.exp(hm):.2f}", flush=True)
    plen, glen, npr = spec["accept_prompt_len"], spec["accept_gen_len"], spec["accept_prompts"]
    step_p = max(1, (len(held_ids) - plen - 1) // npr)
    prompts = make_windows(held_ids, plen - 2, bos, [i * step_p for i in range(npr)])[:, :plen].to(device)
    acc = acceptance_rates(model, mtp, cap, prompts, glen, 3)
    for k, (rate, tps) in sorted(acc.items()):
        print(f"MTP greedy acceptance K={k}: rate {rate:.3f}, {tps:.2f} tokens per target step", flush=True)
    sample = sample_text(model, tok, "And God said", 48, device)
    print(f"sample: {sample!r}", flush=True)

    # 4. Export and verify.
    full_sd = {**model.state_dict(), **{"mtp." + k: v for k, v in mtp.state_dict().items()}}
    tensors = export_tensors(full_sd, mapping)
    shard_files = save_sharded(tensors, args.out, save_file)
    cfg = official_config(spec)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    dtypes = {}
    for t in tensors.values():
        dtypes[str(t.dtype)] = dtypes.get(str(t.dtype), 0) + 1
    print(f"exported {len(tensors)} tensors {dtypes} into {len(shard_files)} shards "
          f"({sum(os.path.getsize(f) for f in shard_files) / 2**20:.1f} MiB) -> {args.out}")

    # Reload the file into fresh modules: every tensor must come back bit-identical, and the logits of
    # both the target and the MTP must then be identical too (checked on the CPU, where kernels are
    # deterministic, in fp32).
    loaded = {}
    for f in shard_files:
        loaded.update(load_file(f))
    model.to("cpu")
    mtp.to("cpu")
    full_sd = {**model.state_dict(), **{"mtp." + k: v for k, v in mtp.state_dict().items()}}
    _, model2, mtp2 = build_models(spec, "cpu")
    sd2 = import_tensors(loaded, full_sd, mapping)
    bad = [k for k in full_sd if not torch.equal(full_sd[k], sd2[k])]
    if bad:
        raise SystemExit(f"error: tensors changed through export/import: {bad[:10]}")
    model2.load_state_dict({k: v for k, v in sd2.items() if not k.startswith("mtp.")}, strict=True)
    mtp2.load_state_dict({k[4:]: v for k, v in sd2.items() if k.startswith("mtp.")}, strict=True)
    model2.eval()
    mtp2.eval()
    cap2 = TargetCapture(model2)
    check = make_windows(held_ids, 126, bos, [0, 1000])

    def logits_pair(m, t, c):
        with torch.no_grad():
            main = m(input_ids=check, use_cache=False).logits
            hs = t(c.hidden, m.model.embed_tokens(check), position_ids_of(c, check), c.layer_kwargs)
            return main, t.logits(hs, m.lm_head)

    a, ma = logits_pair(model, mtp, cap)
    b, mb = logits_pair(model2, mtp2, cap2)
    d_main = float((a - b).abs().max())
    d_mtp = float((ma - mb).abs().max())
    print(f"export check: {len(full_sd)} tensors bit-identical after export/import; reloaded modules' "
          f"max |logits diff| target {d_main:.3g}, MTP {d_mtp:.3g} (argmax agreement "
          f"{float((a.argmax(-1) == b.argmax(-1)).float().mean()):.3f})", flush=True)
    if d_main > 1e-5 * float(a.abs().max()) or d_mtp > 1e-5 * float(ma.abs().max()):
        raise SystemExit("error: exported weights do not reproduce the trained model's logits")
    try:
        from transformers import DeepseekV4Config

        with open(os.path.join(args.out, "config.json")) as f:
            c = DeepseekV4Config(**json.load(f))
        ok = list(c.layer_types) == list(config.layer_types) and list(c.mlp_layer_types) == list(
            config.mlp_layer_types) and c.qk_rope_head_dim == config.qk_rope_head_dim and \
            c.rope_parameters == config.rope_parameters
        print(f"config.json reloads in transformers: {'matches' if ok else 'DIFFERS'}", flush=True)
    except Exception as e:  # the engine reads config.json itself; this is informative only
        print(f"note: DeepseekV4Config(**config.json) failed: {e!r}")

    stats = {
        "corpus_tokens": len(ids), "held_tokens": len(held_ids), "vocab_size": spec["vocab_size"],
        "tokenizers_version": tokenizers.__version__, "params_main": params_main, "params_mtp": params_mtp,
        "params_total": params_main + params_mtp, "steps": step, "train_seconds": train_seconds,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else "CPU",
        "torch_version": torch.__version__, "transformers_version": transformers.__version__,
        "best_step": best[2], "ppl": math.exp(hl), "mtp_ppl": math.exp(hm), "accept_prompts": npr,
        "acceptance": acc, "sample": sample, "log": log,
    }
    write_model_card(os.path.join(args.out, "MODEL_CARD.md"), spec, cfg, stats)
    total_mb = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out)) / 2**20
    print(f"done in {time.time() - t_start:.0f} s; {args.out} holds {total_mb:.1f} MiB", flush=True)
    if total_mb > 40:
        print("WARNING: the model directory exceeds 40 MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
