#include "dsv4/runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/log.h"
#include "runtime/device_forward.h"

namespace dsv4 {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

double GenerateStats::decode_tokens_per_second() const {
  return decode_seconds > 0 ? static_cast<double>(generated_tokens) / decode_seconds : 0.0;
}

Engine::Engine(const std::string& model_dir, const EngineOptions& options) : opt_(options) {
  const auto t0 = std::chrono::steady_clock::now();
  if (opt_.device == Device::kCUDA) {
    const std::string why = cuda::unavailable_reason();
    DSV4_CHECK(why.empty(), kUnsupported, "--device cuda: ", why, "; use --device cpu");
  }
  DSV4_CHECK_ARG(opt_.max_seqs > 0 && opt_.max_batch_tokens > 0 && opt_.max_spec_tokens >= 0,
                 "engine options: max_seqs and max_batch_tokens must be positive");
  cfg_ = ModelConfig::from_file((std::filesystem::path(model_dir) / "config.json").string());
  ckpt_ = Checkpoint::open(model_dir);
  weights_ = load_weights(ckpt_, cfg_, {opt_.device, opt_.load_mtp});
  model_opt_.max_seqs = opt_.max_seqs;
  model_opt_.max_seq_len =
      opt_.max_seq_len > 0 ? opt_.max_seq_len : std::min<int64_t>(cfg_.max_position_embeddings, 4096);
  model_opt_.max_tokens_ahead = opt_.max_spec_tokens + 1;
  state_ = std::make_unique<ModelState>(cfg_, model_opt_, opt_.device, has_mtp());
  const int64_t rows = std::max(opt_.max_batch_tokens, opt_.max_seqs);
  scratch_ = Arena("activations", forward_scratch_bytes(cfg_, opt_.max_batch_tokens, rows), opt_.device);
  ctx_.device = opt_.device;
  ctx_.scratch = &scratch_;
  if (opt_.device == Device::kCUDA) device_ = std::make_unique<DeviceForward>(cfg_, opt_.max_batch_tokens, rows, ctx_);
  load_seconds_ = seconds_since(t0);
}

Engine::~Engine() = default;

void Engine::check_ids(const std::vector<int32_t>& ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    DSV4_CHECK_ARG(ids[i] >= 0 && ids[i] < cfg_.vocab_size, "token id ", ids[i], " at index ", i,
                   " is outside the vocabulary [0, ", cfg_.vocab_size, ")");
  }
}

void Engine::forward(BatchBuilder& batch, std::vector<float>* logits, std::vector<float>* residual) {
  const int64_t T = batch.num_tokens(), R = batch.num_logit_rows(), V = cfg_.vocab_size;
  DSV4_CHECK_ARG(T > 0 && T <= opt_.max_batch_tokens, "forward of ", T, " tokens exceeds max_batch_tokens (",
                 opt_.max_batch_tokens, ")");
  check_ids(batch.ids());
  for (int32_t p : batch.positions()) {
    DSV4_CHECK_ARG(p < model_opt_.max_seq_len, "position ", p, " exceeds the engine's max_seq_len (",
                   model_opt_.max_seq_len, ")");
  }
  if (ctx_.is_cuda()) {
    scratch_.reset();
    device_->forward(ctx_, cfg_, weights_, *state_, batch, logits, residual);
    return;
  }
  logits->assign(static_cast<size_t>(R * V), 0.0f);
  Tensor residual_t;
  if (residual != nullptr) {
    residual->assign(static_cast<size_t>(T * cfg_.hc_dim()), 0.0f);
    residual_t = Tensor(residual->data(), DType::F32, {T, cfg_.hc_mult, cfg_.hidden_size});
  }
  scratch_.reset();
  target_forward(ctx_, cfg_, weights_, *state_, batch.meta(), batch.logit_rows(),
                 Tensor(logits->data(), DType::F32, {R, V}), residual_t);
}

std::vector<float> Engine::score(const std::vector<int32_t>& ids) {
  DSV4_CHECK_ARG(!ids.empty(), "score: no token ids given");
  check_ids(ids);
  DSV4_CHECK_ARG(static_cast<int64_t>(ids.size()) <= model_opt_.max_seq_len, "score: ", ids.size(),
                 " tokens exceed max_seq_len (", model_opt_.max_seq_len, ")");
  std::vector<float> all, part;
  for (size_t done = 0; done < ids.size();) {
    const size_t n = std::min<size_t>(ids.size() - done, static_cast<size_t>(opt_.max_batch_tokens));
    BatchBuilder b;
    b.add({0, static_cast<int32_t>(done), std::vector<int32_t>(ids.begin() + done, ids.begin() + done + n), true});
    forward(b, &part);
    all.insert(all.end(), part.begin(), part.end());
    done += n;
  }
  return all;
}

GenerateResult Engine::generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& go) {
  DSV4_CHECK_ARG(!prompts.empty(), "generate: no prompts");
  DSV4_CHECK_ARG(go.max_new_tokens >= 0, "generate: -n must be >= 0");
  go.sampling.validate();
  DSV4_CHECK_ARG(go.spec_tokens == 0, "speculative decoding (--spec-tokens) is not available in this build yet");
  const int64_t V = cfg_.vocab_size;
  GenerateResult result;
  result.tokens.resize(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    DSV4_CHECK_ARG(!prompts[i].empty(), "generate: prompt ", i, " is empty");
    check_ids(prompts[i]);
    DSV4_CHECK_ARG(static_cast<int64_t>(prompts[i].size()) + go.max_new_tokens <= model_opt_.max_seq_len,
                   "generate: prompt ", i, " (", prompts[i].size(), " tokens) + ", go.max_new_tokens,
                   " new tokens exceed max_seq_len (", model_opt_.max_seq_len, ")");
    result.stats.prompt_tokens += static_cast<int64_t>(prompts[i].size());
  }
  if (go.max_new_tokens == 0) return result;

  // Sequences run in waves of at most max_seqs (one state slot each).
  for (size_t wave = 0; wave < prompts.size(); wave += static_cast<size_t>(opt_.max_seqs)) {
    const size_t count = std::min(prompts.size() - wave, static_cast<size_t>(opt_.max_seqs));
    struct Seq {
      size_t index;
      int32_t slot;
      std::vector<int32_t> tokens;  // prompt + generated
      int64_t prompt_len = 0;
      int64_t prefilled = 0;        // prompt tokens already in the state
      bool done = false;
      Sampler sampler;
    };
    std::vector<Seq> seqs;
    for (size_t i = 0; i < count; ++i) {
      const std::vector<int32_t>& p = prompts[wave + i];
      seqs.push_back({wave + i, static_cast<int32_t>(i), p, static_cast<int64_t>(p.size()), 0, false,
                      Sampler(go.sampling, wave + i)});
    }
    auto emit = [&](Seq& s, int32_t token) {
      s.tokens.push_back(token);
      result.tokens[s.index].push_back(token);
      ++result.stats.generated_tokens;
      if (go.on_token) go.on_token(s.index, token);
      const bool eos = std::find(cfg_.eos_token_ids.begin(), cfg_.eos_token_ids.end(), token) != cfg_.eos_token_ids.end();
      if (static_cast<int64_t>(result.tokens[s.index].size()) >= go.max_new_tokens || (go.stop_at_eos && eos)) s.done = true;
    };
    std::vector<float> logits;
    // Prefill: pack prompt chunks into forwards of at most max_batch_tokens tokens.
    auto t0 = std::chrono::steady_clock::now();
    while (true) {
      BatchBuilder b;
      std::vector<Seq*> finishing;
      int64_t budget = opt_.max_batch_tokens;
      for (Seq& s : seqs) {
        const int64_t left = s.prompt_len - s.prefilled;
        if (left <= 0 || budget <= 0) continue;
        const int64_t n = std::min(left, budget);
        b.add({s.slot, static_cast<int32_t>(s.prefilled),
               std::vector<int32_t>(s.tokens.begin() + s.prefilled, s.tokens.begin() + s.prefilled + n), false});
        s.prefilled += n;
        budget -= n;
        finishing.push_back(s.prefilled == s.prompt_len ? &s : nullptr);
      }
      if (b.num_tokens() == 0) break;
      forward(b, &logits);
      ++result.stats.forward_calls;
      for (size_t c = 0; c < finishing.size(); ++c) {
        if (finishing[c] != nullptr) {
          Seq& s = *finishing[c];
          emit(s, s.sampler.sample(logits.data() + b.chunk_first_logit_row()[c] * V, V));
        }
      }
    }
    result.stats.prefill_seconds += seconds_since(t0);
    // Decode: one token per unfinished sequence per forward.
    t0 = std::chrono::steady_clock::now();
    while (true) {
      BatchBuilder b;
      std::vector<Seq*> active;
      for (Seq& s : seqs) {
        if (s.done) continue;
        b.add({s.slot, static_cast<int32_t>(s.tokens.size() - 1), {s.tokens.back()}, false});
        active.push_back(&s);
      }
      if (active.empty()) break;
      forward(b, &logits);
      ++result.stats.forward_calls;
      for (size_t c = 0; c < active.size(); ++c) emit(*active[c], active[c]->sampler.sample(logits.data() + c * V, V));
    }
    result.stats.decode_seconds += seconds_since(t0);
  }
  return result;
}

}  // namespace dsv4
