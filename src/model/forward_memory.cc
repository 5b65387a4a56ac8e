#include "dsv4/model/forward_memory.h"

#include <algorithm>

#include "dsv4/model/mtp.h"

namespace dsv4 {
namespace {

// High-water bytes of one target forward (and drafter step) of T tokens and R logit rows.
size_t measure_once(const ModelConfig& cfg, const ModelWeights& w, ModelState& state, Device device, int64_t T,
                    int64_t R, bool drafter) {
  // The forward's inputs and outputs live outside the arena it is measured with.
  Arena io = Arena::counting("measuring-io", device);
  const DType act = state.activation_dtype();
  auto ints = [&] { return io.alloc(DType::I32, {T}); };
  const BatchMeta meta{ints(), ints(), ints(), ints(), ints(), T};
  const Tensor rows = io.alloc(DType::I32, {R});
  const Tensor logits = io.alloc(DType::F32, {R, cfg.vocab_size});
  const Tensor residual = io.alloc(act, {T, cfg.hc_mult, cfg.hidden_size});
  const Tensor residual_out = io.alloc(act, {T, cfg.hc_mult, cfg.hidden_size});

  Arena scratch = Arena::counting("activations", device);
  ExecContext ctx;
  ctx.device = device;
  ctx.scratch = &scratch;
  ctx.measuring = true;
  target_forward(ctx, cfg, w, state, meta, rows, logits, residual);
  if (drafter) drafter_forward(ctx, cfg, w, state, meta, residual, residual_out, rows, logits);
  return scratch.high_water();
}

}  // namespace

size_t measure_forward_scratch(const ModelConfig& cfg, const ModelWeights& w, const ModelOptions& state_options,
                               Device device, const ForwardShape& shape) {
  DSV4_CHECK_ARG(shape.max_tokens >= 1 && shape.max_rows >= 1, "measure_forward_scratch: ", shape.max_tokens,
                 " tokens / ", shape.max_rows, " logit rows");
  DSV4_CHECK(!shape.drafter || w.mtp.has_value(), kUnsupported, "this checkpoint has no MTP layer (mtp.0.*)");
  ModelOptions o = state_options;
  o.max_seqs = 1;
  o.num_pages = 1;
  ModelState state(cfg, o, device, w.mtp.has_value());
  size_t bytes = 0;
  for (int64_t T = 1;; T = std::min(2 * T, shape.max_tokens)) {
    bytes = std::max(bytes, measure_once(cfg, w, state, device, T, std::min(T, shape.max_rows), shape.drafter));
    if (T == shape.max_tokens) break;
  }
  return bytes + Arena::kAlignment;  // the arena's own alignment of its first allocation
}

}  // namespace dsv4
