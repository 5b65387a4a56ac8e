#!/usr/bin/env python3
"""Quantised-checkpoint fixtures for dsv4 (issue 17), with a quantiser written independently of dsv4's C++ one.

Runs where torch, transformers >= 5.17, safetensors and tokenizers exist (the GPU test machines; CPU fp32 math).

Fixtures (`OUT_DIR/<name>/`, for `tests/fixtures/quantized/`): for each tiny config of make_fixtures.py
  1. builds DeepseekV4ForCausalLM(config) with make_fixtures.py's unit-scale random parameters and
     `save_pretrained`s it;
  2. quantises every weight DeepSeek stores quantised with the independent quantiser below — the dense
     projections (attention wq_a, wq_b, wkv, wo_a, wo_b, the indexer's wq_b, the shared expert) to F8_E4M3 with
     F8_E8M0 128x128 block scales, the routed experts to packed FP4 (I8 [out, in/2], element 2j in the low
     nibble) with F8_E8M0 per-32 scales (or FP8 blocks: `expert_dtype` per fixture) — and writes them in
     DeepSeek's official layout (`<name>.weight` + `<name>.scale`, config.json with quantization_config and
     expert_dtype) with its own safetensors writer;
  3. dequantises them again (float64 decoders from the format definitions), reloads transformers' model with
     those weights and writes `expected.safetensors` (input_ids [T] I64, logits [T, V] F32) from the
     token-by-token path, rejecting seeds whose router/indexer choices come within 1e-3 of a tie (as
     make_fixtures.py does), plus `figures.json`.
  dsv4's test `QuantizedParity.*` loads each folder and must match the logits within 1e-4.

Default model (`--kjv MODEL_DIR --heldout FILE`): quantises models/dsv4-tiny-kjv the same way (FP8 dense,
FP4 experts), writes it as OUT_DIR/kjv-python-fp4 (official layout), and computes transformers' perplexity on
the held-out text for the bf16 weights and for the quantise-dequantised weights, with `dsv4 perplexity`'s
windowing (windows of --ctx tokens, each scored as BOS + its first ctx - 1 tokens, every token predicted once).
Writes OUT_DIR/kjv_perplexity.json. Compare with
    build/dsv4 quantize models/dsv4-tiny-kjv /tmp/kjv-fp4
    build/dsv4 perplexity -m /tmp/kjv-fp4 --file models/dsv4-tiny-kjv/heldout.txt --json
(acceptance: within 0.5%), and `--compare /tmp/kjv-fp4 OUT_DIR/kjv-python-fp4`: both quantisers implement the
same rule (the smallest power-of-two scale holding each block's largest magnitude, round-to-nearest-even), so
every tensor's bytes should agree.
(transformers drops the MTP layer when loading; the Python checkpoint keeps mtp.0.* quantised the same way.)

Usage: make_quantized_fixtures.py OUT_DIR [--only NAME]
       make_quantized_fixtures.py OUT_DIR --kjv models/dsv4-tiny-kjv --heldout models/dsv4-tiny-kjv/heldout.txt
       make_quantized_fixtures.py - --compare DIR_A DIR_B     (tensor-by-tensor bytes; exit 1 on any difference)
"""

import argparse
import json
import math
import os
import re
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------------------------------
# Which tensors DeepSeek stores quantised (official names, "model." prefix stripped).

DENSE = [
    re.compile(r"^(layers|mtp)\.\d+\.attn\.(wq_a|wq_b|wkv|wo_a|wo_b)\.weight$"),
    re.compile(r"^(layers|mtp)\.\d+\.attn\.indexer\.wq_b\.weight$"),
    re.compile(r"^(layers|mtp)\.\d+\.ffn\.shared_experts\.w[123]\.weight$"),
    re.compile(r"^mtp\.\d+\.(e_proj|h_proj)\.weight$"),
]
EXPERT = re.compile(r"^(layers|mtp)\.\d+\.ffn\.experts\.\d+\.w[123]\.weight$")


def official(name):
    return name[len("model."):] if name.startswith("model.") else name


def tensor_class(name):
    n = official(name)
    if EXPERT.match(n):
        return "expert"
    if any(p.match(n) for p in DENSE):
        return "dense"
    return None


# ---------------------------------------------------------------------------------------------------------------
# The independent quantiser / dequantiser (torch, float64 where it matters).

E4M3_MAX = 448.0
E2M1_MAX = 6.0
E2M1_MAGNITUDES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def pow2_exponent(amax, qmax):
    """Smallest integer e with amax <= qmax * 2**e (exact in float64); 0 where amax == 0; clamped to the
    E8M0 range [-127, 127]."""
    import torch

    amax = amax.double()
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    e = torch.ceil(torch.log2(safe / qmax))
    for _ in range(3):  # log2 may be off by one ulp: fix up with exact comparisons
        e = torch.where(safe > qmax * torch.exp2(e), e + 1, e)
        e = torch.where(safe <= qmax * torch.exp2(e - 1), e - 1, e)
    e = torch.where(amax > 0, e, torch.zeros_like(e))
    return e.clamp(-127, 127)


def e4m3_decode(codes):
    """uint8 codes -> float64 values, from the bit layout (bias 7, subnormals, 0x7F/0xFF NaN)."""
    import torch

    c = codes.to(torch.int64)
    sign = torch.where((c >> 7) == 1, -1.0, 1.0).double()
    e = (c >> 3) & 15
    m = (c & 7).double()
    mag = torch.where(e == 0, m / 8.0 * 2.0 ** -6, (1.0 + m / 8.0) * torch.exp2((e - 7).double()))
    if bool(((c & 0x7F) == 0x7F).any()):
        raise ValueError("E4M3 NaN code in a quantised weight")
    return sign * mag


def e2m1_decode(nibbles):
    import torch

    table = torch.tensor(E2M1_MAGNITUDES, dtype=torch.float64)
    n = nibbles.to(torch.int64)
    mag = table[n & 7]
    return torch.where((n & 8) != 0, -mag, mag)


def e2m1_encode(x):
    """float -> 4-bit codes, round to nearest with ties to the even code, saturating at +-6."""
    import torch

    a = x.abs().double()
    mids = torch.tensor([(E2M1_MAGNITUDES[i] + E2M1_MAGNITUDES[i + 1]) / 2 for i in range(7)], dtype=torch.float64)
    idx = (a.unsqueeze(-1) > mids).sum(-1)  # ties land on the lower code
    tie = torch.zeros_like(a, dtype=torch.bool)
    for i in range(7):
        tie |= (idx == i) & (a == mids[i])
    idx = torch.where(tie & (idx % 2 == 1), idx + 1, idx)
    sign = torch.signbit(x).to(torch.int64)
    return (idx | (sign << 3)).to(torch.uint8)


def quantize_fp8_block(w):
    """w [out, in] -> (codes uint8 [out, in], scale bytes uint8 [ceil(out/128), ceil(in/128)])."""
    import torch

    out, inn = w.shape
    bo, bi = -(-out // 128), -(-inn // 128)
    padded = torch.zeros(bo * 128, bi * 128, dtype=torch.float64)
    padded[:out, :inn] = w.double()
    amax = padded.abs().view(bo, 128, bi, 128).amax(dim=(1, 3))
    e = pow2_exponent(amax, E4M3_MAX)
    scale_full = torch.exp2(e).repeat_interleave(128, 0).repeat_interleave(128, 1)[:out, :inn]
    x = (w.double() / scale_full).float()  # a power-of-two division: exact
    codes = x.to(torch.float8_e4m3fn).view(torch.uint8)
    return codes, (e + 127).to(torch.uint8)


def dequantize_fp8_block(codes, scale):
    import torch

    out, inn = codes.shape
    s = torch.exp2(scale.double() - 127).repeat_interleave(128, 0).repeat_interleave(128, 1)[:out, :inn]
    return e4m3_decode(codes) * s


def quantize_fp4(w):
    """w [out, in] (in even) -> (packed uint8 [out, in/2], scale bytes uint8 [out, ceil(in/32)])."""
    import torch

    out, inn = w.shape
    if inn % 2:
        raise ValueError(f"packed FP4 needs an even input dimension, got {inn}")
    g = -(-inn // 32)
    padded = torch.zeros(out, g * 32, dtype=torch.float64)
    padded[:, :inn] = w.double()
    e = pow2_exponent(padded.abs().view(out, g, 32).amax(dim=2), E2M1_MAX)
    x = w.double() / torch.exp2(e).repeat_interleave(32, 1)[:, :inn]
    nib = e2m1_encode(x)
    packed = nib[:, 0::2] | (nib[:, 1::2] << 4)  # element 2j in the low nibble
    return packed.to(torch.uint8), (e + 127).to(torch.uint8)


def dequantize_fp4(packed, scale):
    import torch

    out, half = packed.shape
    nib = torch.stack([packed & 0xF, packed >> 4], dim=-1).reshape(out, 2 * half)
    s = torch.exp2(scale.double() - 127).repeat_interleave(32, 1)[:, :2 * half]
    return e2m1_decode(nib) * s


# ---------------------------------------------------------------------------------------------------------------
# A minimal safetensors writer (raw bytes with explicit dtype strings, so F8_E8M0 needs no library support).

def write_safetensors(path, tensors):
    """tensors: list of (name, dtype_string, shape, bytes)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for _, _, _, data in tensors:
            f.write(data)


TORCH_TO_ST = {"torch.float32": "F32", "torch.bfloat16": "BF16", "torch.float16": "F16", "torch.int64": "I64",
               "torch.int32": "I32"}


def raw_entry(name, t):
    import torch

    t = t.contiguous()
    return name, TORCH_TO_ST[str(t.dtype)], tuple(t.shape), t.view(torch.uint8).numpy().tobytes() if t.dim() else \
        t.reshape(1).view(torch.uint8).numpy().tobytes()


def quantize_state_dict(sd, expert_fmt):
    """Official-layout tensors and the dequantised state dict (for transformers) of a plain state dict."""
    import torch

    entries, deq, counts = [], {}, {"dense": 0, "expert": 0}
    for name in sorted(sd):
        t = sd[name]
        cls = tensor_class(name)
        fmt = {"dense": "fp8", "expert": expert_fmt, None: "plain"}[cls]
        if fmt == "plain":
            entries.append(raw_entry(name, t))
            deq[name] = t
            continue
        counts[cls] += 1
        w = t.double()
        scale_name = name[: -len(".weight")] + ".scale"
        if fmt == "fp8":
            codes, scale = quantize_fp8_block(w)
            d = dequantize_fp8_block(codes, scale)
            entries.append((name, "F8_E4M3", tuple(codes.shape), codes.numpy().tobytes()))
        else:
            codes, scale = quantize_fp4(w)
            d = dequantize_fp4(codes, scale)
            entries.append((name, "I8", tuple(codes.shape), codes.numpy().tobytes()))
        entries.append((scale_name, "F8_E8M0", tuple(scale.shape), scale.numpy().tobytes()))
        # E4M3 / E2M1 values times powers of two are bf16 values: the dequantised weight is exact in bf16.
        deq[name] = d.to(t.dtype)
        if not torch.equal(deq[name].double(), d):
            raise RuntimeError(f"{name}: the dequantised weight is not exact in {t.dtype}")
    return entries, deq, counts


def quant_config(expert_fmt):
    return {"quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                    "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
            "expert_dtype": {"fp4": "fp4", "fp8": "fp8"}[expert_fmt]}


# ---------------------------------------------------------------------------------------------------------------
# Fixtures.

FIXTURES = {"qtiny_a": ("tiny_a", "fp4"), "qtiny_b": ("tiny_b", "fp4"), "qtiny_c": ("tiny_c", "fp8")}


def build_attempt(name, base, expert_fmt, out_dir, seed):
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    import make_fixtures as mf

    spec = mf.fixture_configs()[base]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    raw = dict(spec["config"])
    raw["architectures"] = ["DeepseekV4ForCausalLM"]
    config = DeepseekV4Config(**raw)
    config._attn_implementation = "eager"
    model = DeepseekV4ForCausalLM(config).float().eval()
    mf.randomise(model, config, gen)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        sd = load_file(os.path.join(tmp, "model.safetensors"))
        entries, deq, counts = quantize_state_dict(sd, expert_fmt)
        n_dense_expected = sum(
            (5 + (1 if t == "compressed_sparse_attention" else 0) + 3) for t in config.layer_types)
        if counts["dense"] != n_dense_expected or counts["expert"] != 3 * config.n_routed_experts * len(
                config.layer_types):
            raise RuntimeError(f"{name}: quantised {counts}, expected {n_dense_expected} dense and "
                               f"{3 * config.n_routed_experts * len(config.layer_types)} expert matrices: "
                               "transformers' saved names changed?")
        save_file({k: v.contiguous() for k, v in deq.items()}, os.path.join(tmp, "model.safetensors"),
                  metadata={"format": "pt"})
        deq_model = DeepseekV4ForCausalLM.from_pretrained(tmp, torch_dtype=torch.float32).eval()
        deq_model.config._attn_implementation = "eager"
        with open(os.path.join(tmp, "config.json")) as f:
            cfg_json = json.load(f)

    T = spec["seq_len"]
    ids = torch.randint(2, config.vocab_size, (1, T), generator=gen)
    with mf.TieMonitor() as monitor:
        tbt = mf.token_by_token_logits(deq_model, ids)
    orig = mf.token_by_token_logits(model, ids)
    fdir = os.path.join(out_dir, name)
    os.makedirs(fdir, exist_ok=True)
    write_safetensors(os.path.join(fdir, "model.safetensors"), entries)
    cfg_json.update(quant_config(expert_fmt))
    with open(os.path.join(fdir, "config.json"), "w") as f:
        json.dump(cfg_json, f, indent=1, sort_keys=True)
    save_file({"input_ids": ids[0].to(torch.int64).contiguous(), "logits": tbt.float().contiguous()},
              os.path.join(fdir, "expected.safetensors"))
    figures = {"base": base, "seed": seed, "expert_dtype": expert_fmt, "seq_len": T,
               "min_index_margin": monitor.min_index_margin, "min_router_margin": monitor.min_router_margin,
               "quantised_matrices": counts, "dequantised_vs_unquantised_logits_rel": mf.rel(tbt, orig),
               "logits_absmax": float(tbt.abs().max())}
    with open(os.path.join(fdir, "figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    return figures


def build_one(name, out_dir, max_attempts=40):
    import make_fixtures as mf

    base, expert_fmt = FIXTURES[name]
    seed0 = mf.fixture_configs()[base]["seed"] + 7
    for attempt in range(max_attempts):
        figures = build_attempt(name, base, expert_fmt, out_dir, seed0 + 1000 * attempt)
        if figures["min_index_margin"] >= mf.MIN_INDEX_MARGIN and figures["min_router_margin"] >= mf.MIN_ROUTER_MARGIN:
            return figures
        print(f"{name}: seed {figures['seed']} rejected (near-tie)", flush=True)
    raise RuntimeError(f"{name}: no tie-free seed in {max_attempts} attempts")


# ---------------------------------------------------------------------------------------------------------------
# The default model: Python-quantised checkpoint and perplexities.

def perplexity(model, tokens, bos, ctx):
    import torch

    nll, n = 0.0, 0
    with torch.no_grad():
        for begin in range(0, len(tokens), ctx):
            chunk = tokens[begin:begin + ctx]
            inp = torch.tensor([[bos] + chunk[:-1]], dtype=torch.long)
            logits = model(input_ids=inp, use_cache=False).logits[0].double()
            lp = torch.log_softmax(logits, dim=-1)
            nll -= float(lp[torch.arange(len(chunk)), torch.tensor(chunk)].sum())
            n += len(chunk)
    return math.exp(nll / n), n


def build_kjv(model_dir, heldout, ctx, out_dir):
    import glob

    import torch
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer
    from transformers import DeepseekV4ForCausalLM

    sd = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        sd.update(load_file(path))
    entries, deq, counts = quantize_state_dict(sd, "fp4")
    qdir = os.path.join(out_dir, "kjv-python-fp4")
    os.makedirs(qdir, exist_ok=True)
    write_safetensors(os.path.join(qdir, "model.safetensors"), entries)
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    cfg.pop("expert_dtype", None)
    cfg.update(quant_config("fp4"))
    with open(os.path.join(qdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(qdir, "tokenizer.json"), "w") as f:
        f.write(tok.to_str())
    with open(heldout, encoding="utf-8") as f:
        tokens = tok.encode(f.read(), add_special_tokens=False).ids
    bos = cfg.get("bos_token_id", 0)
    ref = DeepseekV4ForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    ref.config._attn_implementation = "eager"
    ppl_bf16, n = perplexity(ref, tokens, bos, ctx)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("config.json", "tokenizer.json"):
            with open(os.path.join(model_dir, name)) as src, open(os.path.join(tmp, name), "w") as dst:
                dst.write(src.read())
        save_file({k: v.contiguous() for k, v in deq.items()}, os.path.join(tmp, "model.safetensors"),
                  metadata={"format": "pt"})
        qmodel = DeepseekV4ForCausalLM.from_pretrained(tmp, torch_dtype=torch.float32).eval()
        qmodel.config._attn_implementation = "eager"
        ppl_q, _ = perplexity(qmodel, tokens, bos, ctx)
    result = {"tokens": n, "ctx": ctx, "perplexity_bf16": ppl_bf16, "perplexity_fp8_dense_fp4_experts": ppl_q,
              "quantised_matrices": counts, "python_checkpoint": qdir}
    with open(os.path.join(out_dir, "kjv_perplexity.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Tensor-by-tensor comparison of two checkpoints (pure Python: no torch needed).

def read_tensors(directory):
    """name -> (dtype, shape, bytes) for model.safetensors or the shards of model.safetensors.index.json."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for name in files:
        with open(os.path.join(directory, name), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(n))
            data = f.read()
        for key, v in header.items():
            if key == "__metadata__":
                continue
            b, e = v["data_offsets"]
            out[key] = (v["dtype"], tuple(v["shape"]), data[b:e])
    return out


def compare(dir_a, dir_b):
    a, b = read_tensors(dir_a), read_tensors(dir_b)
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    differ = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    result = {"tensors": len(set(a) & set(b)), "identical": len(set(a) & set(b)) - len(differ),
              "differ": differ[:20], "n_differ": len(differ), "only_in_a": only_a[:20], "only_in_b": only_b[:20]}
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--only", default=None, choices=sorted(FIXTURES))
    ap.add_argument("--kjv", default=None, help="default model directory: Python-quantised copy and perplexities")
    ap.add_argument("--heldout", default=None, help="held-out text for --kjv")
    ap.add_argument("--ctx", type=int, default=256, help="window length for --kjv (dsv4 perplexity's default)")
    ap.add_argument("--compare", nargs=2, metavar=("DIR_A", "DIR_B"), default=None,
                    help="compare two checkpoints tensor by tensor (bytes, dtype, shape) and exit; no torch needed")
    args = ap.parse_args()
    if args.compare:
        result = compare(*args.compare)
        print(json.dumps(result, indent=1))
        return 0 if result["n_differ"] == 0 and not result["only_in_a"] and not result["only_in_b"] else 1
    import torch
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    os.makedirs(args.out_dir, exist_ok=True)
    if args.kjv:
        if not args.heldout:
            ap.error("--kjv needs --heldout")
        print(json.dumps(build_kjv(args.kjv, args.heldout, args.ctx, args.out_dir)), flush=True)
        return 0
    results, failed = {}, False
    for name in FIXTURES:
        if args.only and name != args.only:
            continue
        try:
            results[name] = build_one(name, args.out_dir)
            print(name, json.dumps(results[name]), flush=True)
        except Exception as e:  # keep going: one bad config must not hide the others
            import traceback

            traceback.print_exc()
            results[name] = {"error": repr(e)}
            failed = True
    with open(os.path.join(args.out_dir, "summary.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "fixtures": results}, f,
                  indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
