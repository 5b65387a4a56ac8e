// The activation arena's size, measured rather than written down: the engine's forwards run once against a
// counting arena (core/arena.h) with ExecContext::measuring set, so no op computes anything and the forward code
// itself is the single source of truth for its scratch bytes (a new temporary cannot overflow the arena).
#pragma once

#include "dsv4/model/state.h"
#include "dsv4/model/weights.h"

namespace dsv4 {

struct ForwardShape {
  int64_t max_tokens = 1;  // tokens of the largest forward (--max-batch-tokens)
  int64_t max_rows = 1;    // logit rows of the largest forward
  bool drafter = false;    // also the MTP drafter step (needs an MTP layer)
};

// The most activation-arena bytes any forward up to `shape` takes on `device` with `act` activations: the target
// forward and, if asked, the drafter step, measured at every power of two up to max_tokens and at max_tokens
// (kernel choices change with the token count), with min(tokens, max_rows) logit rows. Runs on a one-page state
// built from `state_options`; allocates nothing else.
size_t measure_forward_scratch(const ModelConfig& cfg, const ModelWeights& w, const ModelOptions& state_options,
                               Device device, const ForwardShape& shape);

}  // namespace dsv4
