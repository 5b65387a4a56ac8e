// Testing hooks of the ops (ops.cc): not part of the engine's API.
#pragma once

#include "dsv4/ops/op_types.h"

namespace dsv4::ops {

// Testing hook on the forward's discrete choices. A low-precision backend (bf16 on CUDA) can order two
// nearly tied candidates of the MoE router or the indexer differently from the fp32 reference, and the
// forward then follows another path. Parity tests install a tap (per thread) that sees every routing and
// selection result right after it is computed — and may overwrite it with the reference's choice — to
// detect and report such flips instead of loosening tolerances. No tap is installed outside tests.
class ChoiceTap {
 public:
  virtual ~ChoiceTap() = default;
  virtual void after_moe_route(ExecContext& ctx, Tensor weights, Tensor indices, Tensor logits, Tensor bias,
                               const RouteParams& params) = 0;
  virtual void after_indexer_topk(ExecContext& ctx, Tensor selected, Tensor q, Tensor w, const CompressorState& keys,
                                  const BatchMeta& meta, float softmax_scale) = 0;
};
// Installs `tap` for this thread (nullptr removes it); returns the previous one.
ChoiceTap* set_choice_tap(ChoiceTap* tap);

}  // namespace dsv4::ops
