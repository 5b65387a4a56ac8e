// ForwardContext: what one forward (of the target model or the drafter) runs with.
//
// The GraphRunner owns one ForwardContext per wrapped model and passes that same object (same address)
// to every eager forward, warm-up and capture. Eager regions recorded during a capture may therefore keep
// a reference to it and read its per-step fields (num_tokens, phase) when they run again at replay: the
// runner updates those fields before every replay. The padded shape (batch) and the execution context are
// fixed for a captured entry.
#pragma once

#include "dsv4/core/exec_context.h"
#include "dsv4/graph/mode.h"

namespace dsv4::graph {

// Key of a graph entry: the padded token count and whether the batch is uniform decode (every request
// contributes the same 1 + K tokens). vLLM also keys on num_reqs and LoRA; dsv4 has neither dimension yet.
struct BatchDescriptor {
  int num_tokens_padded = 0;
  bool uniform_decode = false;

  bool operator==(const BatchDescriptor&) const = default;
  auto operator<=>(const BatchDescriptor&) const = default;
};

// Why a forward is running. Eager regions see kCapture once while a graph is being captured (their inputs,
// produced by captured but not yet executed kernels, are garbage then) and kReplay at every replay.
enum class ForwardPhase { kEager, kWarmup, kCapture, kReplay };

struct ForwardContext {
  ExecContext exec;  // device, the (non-default) stream, scratch = the shared activation arena
  GraphMode mode =
      GraphMode::kNone;   // how this forward executes: eagerly, as breakable segments, as one graph
  BatchDescriptor batch;  // padded shape: the only batch shape host code may depend on
  int num_tokens = 0;     // real tokens this step (<= batch.num_tokens_padded); per step
  ForwardPhase phase = ForwardPhase::kEager;
};

}  // namespace dsv4::graph
