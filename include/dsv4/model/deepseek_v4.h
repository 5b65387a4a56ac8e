// The DeepSeek-V4 target model (and the blocks the MTP drafter reuses), written once against dsv4::ops.
//
// State lives in pages addressed through per-sequence page tables (model/state.h) and is indexed by absolute
// position (see ops.h), so a forward may mix sequences at different positions, prefill chunks of any size,
// decode steps and speculative verification; rejected positions are simply recomputed later. No state needs
// resetting between sequences that reuse a page.
#pragma once

#include "dsv4/model/state.h"
#include "dsv4/model/weights.h"
#include "dsv4/ops/ops.h"

namespace dsv4 {

// Attention sublayer of one block: h [T, H] → y [T, H], updating the layer's state.
void attention_block(ExecContext& ctx, const ModelConfig& cfg, const BlockWeights& w, LayerState& state,
                     const ModelState& ms, const BatchMeta& meta, Tensor h, Tensor y);
// MoE sublayer: h [T, H] → y [T, H]. activation_quant: --activation-quant fp8 (ops::moe_experts).
void moe_block(ExecContext& ctx, const ModelConfig& cfg, const BlockWeights& w, const BatchMeta& meta, Tensor h,
               Tensor y, bool activation_quant = false);
// The input of a product DeepSeek's checkpoints store in FP8/FP4: x itself, or under --activation-quant fp8
// (ModelOptions::activation_quant) a scratch copy through ops::activation_round_trip, per `row` values (a row of a
// concatenated input may join two products: each part is quantised on its own).
Tensor quantized_input(ExecContext& ctx, const ModelState& ms, Tensor x, int64_t row);
// ops::linears of quantized_input(x, row): under --activation-quant fp8 with ExecContext::fp8_input_rows set for the
// call, so that the backend may run the products on FP8 codes (the values are the same); where every product reads
// only codes (ops::linear_reads_fp8_codes), of x itself, whose codes are the round trip's.
void quantized_linears(ExecContext& ctx, const ModelState& ms, Tensor x, int64_t row,
                       const std::vector<ops::Projection>& projections);
// One decoder block on the mHC residual: x [T, n, H] → out [T, n, H] (out must not alias x).
void decoder_block(ExecContext& ctx, const ModelConfig& cfg, const BlockWeights& w, LayerState& state,
                   const ModelState& ms, const BatchMeta& meta, Tensor x, Tensor out);

// The target model's forward. Writes logits [R, V] (f32) for the batch rows listed in logit_rows [R]
// (int32) and, if `residual_out` is defined, the final pre-hc_head residual [T, n*H] (the MTP drafter's
// input). Temporaries come from ctx.scratch.
void target_forward(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, ModelState& state,
                    const BatchMeta& meta, Tensor logit_rows, Tensor logits, Tensor residual_out);

}  // namespace dsv4
