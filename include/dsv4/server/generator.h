// The server's view of a model: a single-threaded request scheduler (continuous batching). The server drives it
// from one engine thread (server/engine_loop.h); make_engine_generator adapts dsv4::Engine, tests use a
// deterministic fake.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/runtime/request.h"

namespace dsv4 {
class Engine;
}

namespace dsv4::server {

class Generator {
 public:
  virtual ~Generator() = default;
  // Queues a request; throws dsv4::Error(kInvalidArgument) for one that can never run (nothing queued then).
  virtual RequestId submit(std::vector<int32_t> prompt, const RequestOptions& options, TokenCallback on_event) = 0;
  // Ends a request at the next step; its callback gets a final event with reason kCancelled (or its real end, if
  // it finished first).
  virtual void cancel(RequestId id) = 0;
  // One scheduler step; false when there was nothing to do.
  virtual bool step() = 0;
  virtual bool idle() const = 0;
  virtual SchedulerStats stats() const = 0;
  virtual int64_t max_model_len() const = 0;
  virtual int64_t vocab_size() const = 0;
  // Tokens that end a request by themselves when stop_at_eos is set (the model's end-of-sequence ids).
  virtual std::vector<int32_t> eos_ids() const = 0;
  // Why these sampling parameters cannot be honoured ("" when they can); the server answers 400 with it rather
  // than sample from another distribution than the one asked for. Called from HTTP threads: reads only state
  // that does not change while serving.
  virtual std::string unsupported_sampling(const SamplingParams& p) const { return ""; }
};

// The engine must outlive the generator; it is used from the server's engine thread only.
std::unique_ptr<Generator> make_engine_generator(Engine& engine);

}  // namespace dsv4::server
