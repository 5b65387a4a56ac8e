// The DeepSeek-V4 target model (and the blocks the MTP drafter reuses), written once against dsv4::ops.
//
// State is held in fixed per-sequence slots and indexed by absolute position (see ops.h), so a forward
// may mix sequences at different positions, prefill chunks of any size, decode steps and speculative
// verification; rejected positions are simply recomputed later. No state needs resetting between
// sequences that reuse a slot.
#pragma once

#include "dsv4/model/weights.h"
#include "dsv4/ops/ops.h"

namespace dsv4 {

struct ModelOptions {
  int64_t max_seqs = 1;        // sequence slots
  int64_t max_seq_len = 4096;  // positions per sequence (sizes the compressed-entry stores)
  int64_t max_tokens_ahead = 8;  // tokens a step may write beyond the accepted length (speculation)
  // CUDA only: activations and the attention keys (kv ring, compressed entries) in BF16 (the default) or F32
  // (full precision, with F32 matrices: LoadOptions::cuda_matrix_dtype). The CPU always runs F32.
  DType cuda_activation_dtype = DType::BF16;
};

// Per-layer, per-slot state.
struct LayerState {
  Tensor kv_ring;  // [slots, window + ahead, head_dim]
  CompressorState compressor;
  CompressorState indexer;
};

// Everything a forward needs besides weights: state, rope tables. One allocation on the device.
class ModelState {
 public:
  ModelState(const ModelConfig& cfg, const ModelOptions& opt, Device device, bool with_mtp);
  std::vector<LayerState> layers;
  LayerState mtp;  // the drafter's own sliding-window state
  RopeTable rope_main, rope_compress;
  size_t bytes() const { return storage_.capacity(); }
  DType activation_dtype() const { return act_; }  // of the forwards on this state

 private:
  Arena storage_;
  DType act_ = DType::F32;
};

// Scratch bytes a forward of `tokens` tokens with `logit_rows` logit rows needs (upper bound).
size_t forward_scratch_bytes(const ModelConfig& cfg, int64_t tokens, int64_t logit_rows);

// Attention sublayer of one block: h [T, H] → y [T, H], updating the layer's state.
void attention_block(ExecContext& ctx, const ModelConfig& cfg, const BlockWeights& w, LayerState& state,
                     const ModelState& ms, const BatchMeta& meta, Tensor h, Tensor y);
// MoE sublayer: h [T, H] → y [T, H].
void moe_block(ExecContext& ctx, const ModelConfig& cfg, const BlockWeights& w, const BatchMeta& meta, Tensor h,
               Tensor y);
// One decoder block on the mHC residual: x [T, n, H] → out [T, n, H] (out must not alias x).
void decoder_block(ExecContext& ctx, const ModelConfig& cfg, const BlockWeights& w, LayerState& state,
                   const ModelState& ms, const BatchMeta& meta, Tensor x, Tensor out);

// The target model's forward. Writes logits [R, V] (f32) for the batch rows listed in logit_rows [R]
// (int32) and, if `residual_out` is defined, the final pre-hc_head residual [T, n*H] (the MTP drafter's
// input). Temporaries come from ctx.scratch.
void target_forward(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, ModelState& state,
                    const BatchMeta& meta, Tensor logit_rows, Tensor logits, Tensor residual_out);

}  // namespace dsv4
