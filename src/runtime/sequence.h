// A request inside the engine's scheduler (scheduler.cc).
#pragma once

#include <span>
#include <vector>

#include "dsv4/runtime/engine.h"

namespace dsv4 {

struct Engine::Seq {
  RequestId id = 0;
  RequestOptions opt;
  TokenCallback cb;
  std::vector<int32_t> tokens;  // prompt + generated
  int64_t prompt_len = 0, generated = 0;
  int32_t slot = -1;
  int64_t computed = 0;  // tokens whose state is in the pages (positions [0, computed))
  int64_t admitted = -1;
  int64_t planned = 0;  // tokens of this sequence in the step being planned
  Sampler sampler;
  bool done = false;
  // Speculative decoding: `prefilled` once the target has run every token but the last (then computed =
  // tokens.size() - 1 and tokens.back() sits at position `computed`, unprocessed). The executor's carry holds the
  // target's residual rows of the last `carry` positions [computed - carry, computed), which the drafter's next
  // step 0 runs over with the token after each position (runtime/spec_step.h).
  bool prefilled = false;
  int64_t carry = 0;

  int64_t pending() const { return static_cast<int64_t>(tokens.size()) - computed; }
  // The tokens generated so far (what presence / frequency penalties count).
  std::span<const int32_t> generated_span() const {
    return {tokens.data() + prompt_len, static_cast<size_t>(generated)};
  }
};

}  // namespace dsv4
