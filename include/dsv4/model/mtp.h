// The MTP draft layer (reference §2): from the target's (or its own previous) pre-hc_head residual and the
// embedding of the next token, one decoder block with sliding-window attention only and a routed MoE,
// predicting the token after next. Shares the embedding and the LM head with the target.
#pragma once

#include "dsv4/model/deepseek_v4.h"

namespace dsv4 {

// MTP forward over a batch: meta.ids are the MTP's input tokens (the token *after* each position),
// meta.pos the positions, prev_hidden [T, n, H] the residual the drafter continues from. Writes the new
// residual [T, n, H] to `out` and updates the drafter's own sliding-window state (state.mtp).
void mtp_forward(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, ModelState& state,
                 const BatchMeta& meta, Tensor prev_hidden, Tensor out);

// Draft logits [R, V] of residual rows x [R, n, H]: the MTP's own hc_head → shared-head RMSNorm → lm_head.
void mtp_logits(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, Tensor x, Tensor logits);

// One drafter step as the executors run it: mtp_forward, then the draft logits [R, V] of the residual rows
// listed in logit_rows [R] (int32). Temporaries come from ctx.scratch.
void drafter_forward(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, ModelState& state,
                     const BatchMeta& meta, Tensor prev_hidden, Tensor out, Tensor logit_rows, Tensor logits);

}  // namespace dsv4
