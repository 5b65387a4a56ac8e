"""DeepSeek-V4's MTP draft layer in PyTorch, assembled from transformers' DeepSeek-V4 modules.

transformers has no MTP layer; this is the reference dsv4's drafter is checked against
(tools/reference/make_mtp_fixtures.py) and the layer the default model is trained with
(tools/train/train_tiny.py). It follows shared/reference/dsv4-architecture.md §2:

  e   = where(position == 0, 0, embed(token after p))          # the position-0 mask (vLLM, from V3)
  x   = h_proj(hnorm(prev[p, s])) + e_proj(enorm(e))           # hnorm per hc slot, e_proj broadcast
  out = DeepseekV4DecoderLayer(x)                               # layer id = num_hidden_layers: sliding
                                                                #   attention only, routed (non-hash) MoE
  logits = lm_head(norm(hc_head(out)))                          # its own hc_head and shared-head norm

Embedding and lm_head are the target's (passed in, not owned).
"""


def mtp_block_config(config):
    """The target's config with one more layer: the MTP block's (sliding attention, routed MoE)."""
    from transformers import DeepseekV4Config

    raw = config.to_dict()
    for k in ("transformers_version", "model_type", "architectures", "dtype", "torch_dtype", "layer_types",
              "mlp_layer_types", "num_hidden_layers"):
        raw.pop(k, None)
    raw["layer_types"] = list(config.layer_types) + ["sliding_attention"]
    raw["mlp_layer_types"] = list(config.mlp_layer_types) + ["moe"]
    raw["num_hidden_layers"] = config.num_hidden_layers + 1
    mtp_config = DeepseekV4Config(**raw)
    mtp_config._attn_implementation = "eager"
    return mtp_config


def build_mtp_layer(config, model, mtp_config=None):
    """An MTP layer for `model` (a DeepseekV4ForCausalLM); `mtp_config` defaults to mtp_block_config."""
    import copy

    import torch
    from torch import nn

    mtp_config = mtp_config if mtp_config is not None else mtp_block_config(config)
    layer_cls = type(model.model.layers[0])
    norm_cls = type(model.model.norm)
    hidden = config.hidden_size

    class MTPLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.enorm = norm_cls(hidden, eps=config.rms_norm_eps)
            self.hnorm = norm_cls(hidden, eps=config.rms_norm_eps)
            self.e_proj = nn.Linear(hidden, hidden, bias=False)
            self.h_proj = nn.Linear(hidden, hidden, bias=False)
            self.block = layer_cls(mtp_config, config.num_hidden_layers)
            self.hc_head = copy.deepcopy(model.model.hc_head)
            self.norm = norm_cls(hidden, eps=config.rms_norm_eps)

        def forward(self, prev_hidden, input_embeds, position_ids, layer_kwargs):
            """prev_hidden [B,S,n,H] (pre-hc residual of the target or of the previous MTP step),
            input_embeds [B,S,H] (embedding of the token after each position) -> [B,S,n,H]."""
            e = torch.where((position_ids == 0).unsqueeze(-1), torch.zeros_like(input_embeds), input_embeds)
            x = self.h_proj(self.hnorm(prev_hidden)) + self.e_proj(self.enorm(e)).unsqueeze(-2)
            return self.block(x, input_ids=None, **layer_kwargs)

        def logits(self, hs, head):
            return head(self.norm(self.hc_head(hs)))

    return MTPLayer()
