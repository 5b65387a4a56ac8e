// Requests of the engine's scheduler (continuous batching): what a caller submits and the events it
// receives per request. Engine::submit / cancel / step (runtime/engine.h) drive the scheduler; the engine is
// single-threaded — a server runs its step loop on one thread and hands submissions and cancellations to that
// thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "dsv4/runtime/sampler.h"

namespace dsv4 {

using RequestId = int64_t;

enum class FinishReason {
  kNone,       // still running
  kLength,     // max_new_tokens reached (or the engine's max_model_len)
  kStop,       // an end-of-sequence token or one of stop_token_ids (that token is the last event's token)
  kCancelled,  // Engine::cancel
  kError,      // the request failed after admission (message in TokenEvent::error)
};
const char* finish_reason_name(FinishReason r);  // "length", "stop", "cancelled", "error", "" for kNone

struct RequestOptions {
  int64_t max_new_tokens = 32;
  SamplingParams sampling;
  // Philox / host-RNG stream of the request's draws: the same prompt, options and stream give the same tokens
  // whatever else runs beside it (generate --prompts uses the prompt index; a server leaves 0).
  uint64_t sampling_stream = 0;
  bool stop_at_eos = true;
  std::vector<int32_t> stop_token_ids;  // further ids that end the request (finish reason kStop)
  // Log-probabilities of emitted tokens: -1 none; 0 the emitted token's; k > 0 also the k most likely tokens.
  int64_t logprobs = -1;
};

struct TokenEvent {
  RequestId id = 0;
  int32_t token = -1;    // the emitted token, or -1 for an event without one (cancellation, error)
  int64_t index = 0;     // 0-based index of the token among the request's generated tokens
  float logprob = 0.0f;  // when RequestOptions::logprobs >= 0
  std::vector<std::pair<int32_t, float>> top_logprobs;  // when RequestOptions::logprobs > 0, most likely first
  bool finished = false;
  FinishReason reason = FinishReason::kNone;
  std::string error;
};

// Called on the engine's thread, in order per request; the last event of a request has finished = true.
using TokenCallback = std::function<void(const TokenEvent&)>;

struct SchedulerStats {
  int64_t running = 0, waiting = 0;  // requests in the batch / queued (including preempted ones)
  int64_t pages_total = 0, pages_used = 0, page_tokens = 0;
  int64_t preemptions = 0;    // since the engine started
  int64_t steps = 0;          // scheduler steps run
  int64_t forward_calls = 0;  // target and drafter forwards
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;  // steps with prompt chunks / pure decode steps
  // Of prefill_seconds: waiting for the device (the rest is host work: planning, launches, emitting tokens).
  double prefill_wait_seconds = 0;
  int64_t prefill_steps = 0;        // steps with prompt chunks
  int64_t prompt_steps_fitted = 0;  // of them, trimmed to a prompt step size (EngineOptions::prompt_step_sizes)
  int64_t draft_steps = 0, drafted_tokens = 0, accepted_tokens = 0;  // speculative decoding
};

}  // namespace dsv4
