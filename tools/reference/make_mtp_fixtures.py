#!/usr/bin/env python3
"""MTP-drafter reference fixtures for dsv4 (transformers has no MTP layer; this builds one).

The MTP layer is the one in mtp_reference.py (reference §2, from transformers' modules). `prev` is the
target's pre-hc_head residual (step 0) or the MTP's own previous output (later draft steps).

Writes OUT/mtp_tiny/: config.json, model.safetensors in DeepSeek's official naming (target + mtp.0.*),
and expected.safetensors:
  input_ids [T] I64, next_ids [T] I64 (token after each position; the last one is random),
  target_logits [T, V] and target_residual [T, n*H] (token-by-token path),
  mtp_logits [T, V] (step 0 over every position),
  draft_ids [S] I64, draft_logits [S, V]: S greedy draft steps after the last position, each continuing
  from the previous MTP output (as speculative decoding's steps 1..K-1 do).

Usage: make_mtp_fixtures.py OUT_DIR   (needs torch, transformers >= 5.17, safetensors)
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "train"))

import make_fixtures as mf  # noqa: E402
from mtp_reference import build_mtp_layer  # noqa: E402

DRAFT_STEPS = 2


def main():
    import torch
    from safetensors.torch import save_file
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM

    import train_tiny as tt

    out_dir = os.path.join(sys.argv[1], "mtp_tiny")
    os.makedirs(out_dir, exist_ok=True)
    spec = mf.fixture_configs()["tiny_a"]
    T = 40
    for attempt in range(40):
        seed = 4242 + 1000 * attempt
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        raw = dict(spec["config"])
        config = DeepseekV4Config(**raw)
        config._attn_implementation = "eager"
        model = DeepseekV4ForCausalLM(config).float().eval()
        mf.randomise(model, config, gen)
        mtp = build_mtp_layer(config, model).float().eval()
        mf.randomise(mtp, config, gen)
        ids = torch.randint(2, config.vocab_size, (1, T), generator=gen)
        next_ids = torch.cat([ids[:, 1:], torch.randint(2, config.vocab_size, (1, 1), generator=gen)], dim=1)

        residual_rows = []
        hook = model.model.hc_head.register_forward_pre_hook(lambda m, a: residual_rows.append(a[0].detach().clone()))
        with mf.TieMonitor() as monitor, torch.no_grad():
            target_logits = mf.token_by_token_logits(model, ids)
            hook.remove()
            residual = torch.cat(residual_rows, dim=1)  # [1, T, n, H]
            # Layer kwargs (rotary tables, sliding-window mask) of a T-token forward, for the MTP block.
            captured = {}

            def grab(module, args, kwargs):
                captured.update({k: v for k, v in kwargs.items() if k not in ("input_ids", "hidden_states")})

            h2 = model.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
            model(input_ids=ids, use_cache=False)
            h2.remove()
            pos = torch.arange(T).unsqueeze(0)
            hs = mtp(residual, model.model.embed_tokens(next_ids), pos, captured)
            mtp_logits = mtp.logits(hs, model.lm_head)[0]
            # Greedy draft steps after the last position: step j runs at position T-1+j on draft d_j and the
            # previous MTP output. Recomputed as one multi-token forward over the growing sequence (the MTP
            # block is sliding-window only, so its multi-token forward equals its incremental one).
            draft_ids, draft_logits = [], []
            prev_rows, tok_rows = residual, next_ids
            last_out = hs
            d = int(mtp_logits[-1].argmax())
            for j in range(1, DRAFT_STEPS + 1):
                draft_ids.append(d)
                prev_rows = torch.cat([prev_rows, last_out[:, -1:]], dim=1)
                tok_rows = torch.cat([tok_rows, torch.tensor([[d]])], dim=1)
                n = prev_rows.shape[1]
                h3 = model.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
                model(input_ids=torch.zeros(1, n, dtype=torch.long), use_cache=False)
                h3.remove()
                last_out = mtp(prev_rows, model.model.embed_tokens(tok_rows), torch.arange(n).unsqueeze(0), captured)
                row = mtp.logits(last_out[:, -1:], model.lm_head)[0, 0]
                draft_logits.append(row)
                d = int(row.argmax())
        if monitor.min_index_margin >= mf.MIN_INDEX_MARGIN and monitor.min_router_margin >= mf.MIN_ROUTER_MARGIN:
            break
        print(f"seed {seed} rejected (index margin {monitor.min_index_margin:.2e}, "
              f"router margin {monitor.min_router_margin:.2e})", flush=True)
    else:
        raise SystemExit("no tie-free seed found")

    # Checkpoint in the official naming: target + mtp.0.* in one file.
    state = {**model.state_dict(), **{"mtp." + k: v for k, v in mtp.state_dict().items()}}
    mapping = tt.build_name_map(state)
    tensors = tt.export_tensors(state, mapping)
    for name, t in tensors.items():  # parameters are bf16-representable: export must be lossless
        src = [k for k, v in mapping.items() if v == name]
        if src and t.dtype == torch.bfloat16 and not torch.equal(t.float(), state[src[0]].float()):
            raise SystemExit(f"export of {name} is lossy")
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    config.num_nextn_predict_layers = 1
    config.save_pretrained(out_dir)
    n, H = config.hc_mult, config.hidden_size
    save_file({
        "input_ids": ids[0].to(torch.int64).contiguous(),
        "next_ids": next_ids[0].to(torch.int64).contiguous(),
        "target_logits": target_logits.float().contiguous(),
        "target_residual": residual[0].reshape(T, n * H).float().contiguous(),
        "mtp_logits": mtp_logits.float().contiguous(),
        "draft_ids": torch.tensor(draft_ids, dtype=torch.int64),
        "draft_logits": torch.stack(draft_logits).float().contiguous(),
    }, os.path.join(out_dir, "expected.safetensors"))
    figures = {"seed": seed, "seq_len": T, "draft_steps": DRAFT_STEPS, "min_index_margin": monitor.min_index_margin,
               "min_router_margin": monitor.min_router_margin, "mtp_logits_absmax": float(mtp_logits.abs().max()),
               "tensors": len(tensors)}
    with open(os.path.join(out_dir, "figures.json"), "w") as f:
        json.dump(figures, f, indent=1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
