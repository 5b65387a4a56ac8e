// server::Generator over dsv4::Engine's scheduler (runtime/engine.h): a thin forwarding adapter.
#include "dsv4/runtime/engine.h"
#include "dsv4/server/generator.h"

namespace dsv4::server {
namespace {

class EngineGenerator final : public Generator {
 public:
  explicit EngineGenerator(Engine& engine) : engine_(engine) {}
  RequestId submit(std::vector<int32_t> prompt, const RequestOptions& options, TokenCallback on_event) override {
    return engine_.submit(std::move(prompt), options, std::move(on_event));
  }
  void cancel(RequestId id) override { engine_.cancel(id); }
  bool step() override { return engine_.step(); }
  bool idle() const override { return engine_.idle(); }
  SchedulerStats stats() const override { return engine_.scheduler_stats(); }
  int64_t max_model_len() const override { return engine_.max_model_len(); }
  int64_t vocab_size() const override { return engine_.config().vocab_size; }
  std::vector<int32_t> eos_ids() const override {
    std::vector<int32_t> ids;
    for (int64_t id : engine_.config().eos_token_ids) ids.push_back(static_cast<int32_t>(id));
    return ids;
  }
  // The scheduler (runtime/scheduler.cc) samples on the device (greedy, temperature, top-p) when the executor samples
  // there and no logprobs are asked for, and on the host whatever the device sampler cannot draw (top-k, min-p,
  // penalties); under speculative decoding, whose drafts and verification run on the device (temperature and top-p),
  // those are refused.
  std::string unsupported_sampling(const SamplingParams& p) const override {
    if (p.has_penalties() && engine_.spec_tokens() > 0) {
      return "presence_penalty / frequency_penalty are not supported with speculative decoding (--spec-tokens)";
    }
    if (!p.device_compatible() && engine_.spec_tokens() > 0) {  // drafts are drawn and verified on the device
      return "top_k / min_p are not supported with speculative decoding (--spec-tokens)";
    }
    return "";
  }

 private:
  Engine& engine_;
};

}  // namespace

std::unique_ptr<Generator> make_engine_generator(Engine& engine) { return std::make_unique<EngineGenerator>(engine); }

}  // namespace dsv4::server
