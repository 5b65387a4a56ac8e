#include "dsv4/runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/log.h"
#include "dsv4/model/mtp.h"
#include "dsv4/runtime/speculative.h"
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

namespace {

void check_engine_options(const EngineOptions& o) {
  if (o.device == Device::kCUDA) {
    const std::string why = cuda::unavailable_reason();
    DSV4_CHECK(why.empty(), kUnsupported, "--device cuda: ", why, "; use --device cpu");
  }
  DSV4_CHECK_ARG(o.max_seqs > 0 && o.max_batch_tokens > 0 && o.max_spec_tokens >= 0,
                 "engine options: max_seqs and max_batch_tokens must be positive");
  DSV4_CHECK_ARG(o.cuda_precision == DType::BF16 || o.cuda_precision == DType::F32,
                 "engine options: the CUDA precision must be BF16 or F32");
}

}  // namespace

Engine::Engine(const std::string& model_dir, const EngineOptions& options) : opt_(options) {
  const auto t0 = std::chrono::steady_clock::now();
  check_engine_options(opt_);
  cfg_ = ModelConfig::from_file((std::filesystem::path(model_dir) / "config.json").string());
  ckpt_ = Checkpoint::open(model_dir);
  weights_ = load_weights(ckpt_, cfg_, {opt_.device, opt_.load_mtp, opt_.cuda_precision});
  init(t0);
}

Engine::Engine(ModelConfig cfg, ModelWeights weights, const EngineOptions& options)
    : cfg_(std::move(cfg)), opt_(options), weights_(std::move(weights)) {
  const auto t0 = std::chrono::steady_clock::now();
  check_engine_options(opt_);
  DSV4_CHECK_ARG(weights_.storage.device() == opt_.device, "engine: the weights are on ",
                 device_name(weights_.storage.device()), ", the engine runs on ", device_name(opt_.device));
  DSV4_CHECK_ARG(weights_.layers.size() == static_cast<size_t>(cfg_.num_hidden_layers), "engine: the weights have ",
                 weights_.layers.size(), " layers, the config ", cfg_.num_hidden_layers);
  init(t0);
}

// State, activation arena, device buffers and CUDA graphs for the loaded weights.
void Engine::init(std::chrono::steady_clock::time_point t0) {
  model_opt_.max_seqs = opt_.max_seqs;
  model_opt_.max_seq_len =
      opt_.max_seq_len > 0 ? opt_.max_seq_len : std::min<int64_t>(cfg_.max_position_embeddings, 4096);
  model_opt_.max_tokens_ahead = opt_.max_spec_tokens + 1;
  model_opt_.cuda_activation_dtype = opt_.cuda_precision;
  state_ = std::make_unique<ModelState>(cfg_, model_opt_, opt_.device, has_mtp());
  const int64_t rows = std::max(opt_.max_batch_tokens, opt_.max_seqs);
  scratch_ = Arena("activations", forward_scratch_bytes(cfg_, opt_.max_batch_tokens, rows), opt_.device);
  ctx_.device = opt_.device;
  ctx_.scratch = &scratch_;
  if (opt_.device == Device::kCUDA) {
    device_ = std::make_unique<DeviceForward>(cfg_, *state_, opt_.max_batch_tokens, rows, ctx_);
    GraphSetup g;
    g.cudagraph_mode = opt_.cudagraph_mode;
    g.enforce_eager = opt_.enforce_eager;
    g.capture_sizes = opt_.capture_sizes;
    g.spec_tokens = opt_.graph_spec_tokens;
    g.architecture = cfg_.architecture;
    device_->setup_graphs(g, ctx_, cfg_, weights_, *state_);
  }
  load_seconds_ = seconds_since(t0);
}

Engine::~Engine() = default;

void Engine::check_ids(const std::vector<int32_t>& ids) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    DSV4_CHECK_ARG(ids[i] >= 0 && ids[i] < cfg_.vocab_size, "token id ", ids[i], " at index ", i,
                   " is outside the vocabulary [0, ", cfg_.vocab_size, ")");
  }
}

void Engine::check_batch(BatchBuilder& batch) const {
  const int64_t T = batch.num_tokens();
  DSV4_CHECK_ARG(T > 0 && T <= opt_.max_batch_tokens, "forward of ", T, " tokens exceeds max_batch_tokens (",
                 opt_.max_batch_tokens, ")");
  check_ids(batch.ids());
  for (int32_t p : batch.positions()) {
    DSV4_CHECK_ARG(p < model_opt_.max_seq_len, "position ", p, " exceeds the engine's max_seq_len (",
                   model_opt_.max_seq_len, ")");
  }
}

void Engine::forward(BatchBuilder& batch, std::vector<float>* logits, std::vector<float>* residual,
                     bool uniform_decode) {
  const int64_t T = batch.num_tokens(), R = batch.num_logit_rows(), V = cfg_.vocab_size;
  check_batch(batch);
  if (ctx_.is_cuda()) {
    scratch_.reset();
    device_->forward(ctx_, batch, logits, residual, uniform_decode);
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

// A sequence being generated, with its slot and the drafter's pending step-0 input.
struct Engine::Sequence {
  size_t index = 0;
  int32_t slot = 0;
  std::vector<int32_t> tokens;  // prompt + generated
  int64_t prompt_len = 0;
  int64_t prefilled = 0;  // prompt tokens already in the target's state
  bool done = false;
  Sampler sampler;
  std::vector<int32_t>* out = nullptr;  // generated tokens (the caller's result row)
  // Speculative decoding: the target's state holds positions [0, committed); tokens.back() sits at
  // position `committed` and is not processed yet. The drafter's next step 0 covers positions
  // [step0_start, committed) with the target's residual rows and the token after each position.
  int64_t committed = 0;
  int64_t step0_start = 0;
  std::vector<float> step0_hidden;
  std::vector<int32_t> step0_ids;
  std::vector<float> draft_hidden;  // the drafter's latest residual row (input of its next step)
  std::vector<int32_t> drafts;
  std::vector<std::vector<float>> draft_probs;
};

GenerateResult Engine::generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& go) {
  DSV4_CHECK_ARG(!prompts.empty(), "generate: no prompts");
  DSV4_CHECK_ARG(go.max_new_tokens >= 0, "generate: -n must be >= 0, got ", go.max_new_tokens);
  DSV4_CHECK_ARG(go.spec_tokens >= 0, "generate: --spec-tokens must be >= 0, got ", go.spec_tokens);
  go.sampling.validate();
  if (go.spec_tokens > 0) {
    DSV4_CHECK(has_mtp(), kUnsupported, "--spec-tokens needs a checkpoint with an MTP layer (mtp.0.*)");
    DSV4_CHECK_ARG(go.spec_tokens <= opt_.max_spec_tokens, "--spec-tokens ", go.spec_tokens,
                   " exceeds the engine's maximum of ", opt_.max_spec_tokens);
    DSV4_CHECK_ARG(go.spec_tokens + 1 <= opt_.max_batch_tokens, "--spec-tokens too large for max_batch_tokens");
  }
  GenerateResult result;
  result.tokens.resize(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    DSV4_CHECK_ARG(!prompts[i].empty(), "generate: prompt ", i, " is empty");
    check_ids(prompts[i]);
    DSV4_CHECK_ARG(
        static_cast<int64_t>(prompts[i].size()) + go.max_new_tokens + go.spec_tokens <= model_opt_.max_seq_len,
        "generate: prompt ", i, " (", prompts[i].size(), " tokens) + ", go.max_new_tokens,
        " new tokens exceed max_seq_len (", model_opt_.max_seq_len, ")");
    result.stats.prompt_tokens += static_cast<int64_t>(prompts[i].size());
  }
  if (go.max_new_tokens == 0) return result;

  // Sequences run in waves of at most max_seqs (one state slot each); finished sequences leave the batch.
  for (size_t wave = 0; wave < prompts.size(); wave += static_cast<size_t>(opt_.max_seqs)) {
    const size_t count = std::min(prompts.size() - wave, static_cast<size_t>(opt_.max_seqs));
    std::vector<Sequence> seqs(count);
    for (size_t i = 0; i < count; ++i) {
      Sequence& s = seqs[i];
      s.index = wave + i;
      s.slot = static_cast<int32_t>(i);
      s.tokens = prompts[wave + i];
      s.prompt_len = static_cast<int64_t>(s.tokens.size());
      s.sampler = Sampler(go.sampling, wave + i);
      s.out = &result.tokens[wave + i];
    }
    prefill(seqs, go, result.stats, go.spec_tokens > 0);
    if (go.spec_tokens > 0) {
      decode_speculative(seqs, go, result.stats);
    } else {
      decode_plain(seqs, go, result.stats);
    }
  }
  return result;
}

namespace {

// Appends a generated token; marks the sequence done at the token budget or an end-of-sequence token.
template <typename Seq>
void emit(Seq& s, int32_t token, const GenerateOptions& go, const ModelConfig& cfg, GenerateStats& stats) {
  if (s.done) return;
  s.tokens.push_back(token);
  s.out->push_back(token);
  ++stats.generated_tokens;
  if (go.on_token) go.on_token(s.index, token);
  const bool eos = std::find(cfg.eos_token_ids.begin(), cfg.eos_token_ids.end(), token) != cfg.eos_token_ids.end();
  if (static_cast<int64_t>(s.out->size()) >= go.max_new_tokens || (go.stop_at_eos && eos)) s.done = true;
}

// Device sampling parameters of a sequence's next token: its Philox stream is the sequence index, the
// counter its number of generated tokens (deterministic per seed; not the host Sampler's sequence).
ops::TokenSamplingParams device_sampling(const SamplingParams& p, size_t sequence, size_t generated) {
  return {p.temperature, p.top_p, p.seed, static_cast<uint64_t>(sequence), static_cast<uint64_t>(generated)};
}

}  // namespace

void Engine::prefill(std::vector<Sequence>& seqs, const GenerateOptions& go, GenerateStats& stats, bool keep_residual) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t V = cfg_.vocab_size, W = cfg_.hc_dim();
  std::vector<float> logits, residual;
  // CUDA without a logits consumer: sample on the device, copy back only the tokens.
  const bool sample_on_device = device_ != nullptr && !keep_residual && !go.on_target_logits;
  std::vector<ops::TokenSamplingParams> rows;
  std::vector<int32_t> tokens;
  // Prompt chunks are packed into forwards of at most max_batch_tokens tokens.
  while (true) {
    BatchBuilder b;
    std::vector<Sequence*> chunk_seq;
    std::vector<bool> finishing;
    int64_t budget = opt_.max_batch_tokens;
    for (Sequence& s : seqs) {
      const int64_t left = s.prompt_len - s.prefilled;
      if (left <= 0 || budget <= 0) continue;
      const int64_t n = std::min(left, budget);
      b.add({s.slot, static_cast<int32_t>(s.prefilled),
             std::vector<int32_t>(s.tokens.begin() + s.prefilled, s.tokens.begin() + s.prefilled + n), false});
      chunk_seq.push_back(&s);
      s.prefilled += n;
      budget -= n;
      finishing.push_back(s.prefilled == s.prompt_len);
    }
    if (b.num_tokens() == 0) break;
    if (sample_on_device) {
      rows.assign(static_cast<size_t>(b.num_logit_rows()), {});
      for (size_t c = 0; c < chunk_seq.size(); ++c) {
        rows[b.chunk_first_logit_row()[c]] =
            device_sampling(go.sampling, chunk_seq[c]->index, chunk_seq[c]->out->size());
      }
      check_batch(b);
      scratch_.reset();
      device_->forward_tokens(ctx_, b, rows, &tokens, /*uniform_decode=*/false);
    } else {
      forward(b, &logits, keep_residual ? &residual : nullptr);
    }
    ++stats.forward_calls;
    if (go.on_target_logits) go.on_target_logits(logits);
    int64_t row = 0;
    for (size_t c = 0; c < chunk_seq.size(); ++c) {
      Sequence& s = *chunk_seq[c];
      const int64_t n = static_cast<int64_t>(b.chunk_token_count(c));
      if (keep_residual)
        s.step0_hidden.insert(s.step0_hidden.end(), residual.begin() + row * W, residual.begin() + (row + n) * W);
      row += n;
      if (!finishing[c]) continue;
      const int64_t r = b.chunk_first_logit_row()[c];
      emit(s, sample_on_device ? tokens[r] : s.sampler.sample(logits.data() + r * V, V), go, cfg_, stats);
    }
  }
  for (Sequence& s : seqs) {  // the drafter's first step 0 covers the whole prompt
    s.committed = s.prompt_len;
    s.step0_start = 0;
    s.step0_ids.assign(s.tokens.begin() + 1, s.tokens.end());
  }
  stats.prefill_seconds += seconds_since(t0);
}

namespace {

// Whether plain decode on the device queues step n + 1 before step n's tokens are back (DSV4_PIPELINE_DECODE,
// on by default; 0 = one synchronous step at a time, for A/B timing).
bool pipeline_decode() {
  static const bool enabled = [] {
    bool v = true;
    env_bool("DSV4_PIPELINE_DECODE", &v);
    return v;
  }();
  return enabled;
}

}  // namespace

// Plain decode with device sampling, two steps in flight: while step n runs, step n + 1 is queued with its
// token ids taken on the device from step n's sampled tokens (positions and sampling counters are known
// ahead), so the GPU never waits for the host between steps. Step n + 1 is queued only if no sequence can
// stop by length or position at step n; if one stops at step n on an end-of-sequence token, step n + 1
// (already queued) still completes and its rows of the finished sequences are dropped: their state past
// the end is never read (position-indexed rings; the slot's next owner overwrites it from position 0).
// The tokens and their order are exactly those of the synchronous loop.
void Engine::decode_on_device_pipelined(std::vector<Sequence>& seqs, const GenerateOptions& go, GenerateStats& stats) {
  std::vector<Sequence*> active;
  for (Sequence& s : seqs) {
    if (!s.done) active.push_back(&s);
  }
  auto still_running = [&] {
    std::vector<Sequence*> running;
    for (Sequence* s : active) {
      if (!s->done) running.push_back(s);
    }
    return running;
  };
  // Starts one step of `active` (ahead = 1: the step after the one in flight, ids from its tokens).
  std::vector<ops::TokenSamplingParams> rows;
  auto start = [&](int ahead) {
    BatchBuilder b;
    rows.clear();
    for (Sequence* s : active) {
      b.add({s->slot, static_cast<int32_t>(s->tokens.size() - 1 + ahead), {ahead ? 0 : s->tokens.back()}, false});
      rows.push_back(device_sampling(go.sampling, s->index, s->out->size() + ahead));
    }
    check_batch(b);
    scratch_.reset();
    ++stats.forward_calls;
    return device_->start_tokens(ctx_, b, rows, /*uniform_decode=*/true, /*ids_from_previous=*/ahead != 0);
  };
  // Whether every active sequence is certain to want another token after the step in flight.
  auto all_continue_by_length = [&] {
    for (const Sequence* s : active) {
      if (static_cast<int64_t>(s->out->size()) + 1 >= go.max_new_tokens ||
          static_cast<int64_t>(s->tokens.size()) + 1 > model_opt_.max_seq_len) {
        return false;
      }
    }
    return true;
  };
  std::vector<int32_t> tokens;
  int pending = active.empty() ? -1 : start(0);
  while (pending >= 0) {
    const int next = all_continue_by_length() ? start(1) : -1;
    device_->finish_tokens(pending, &tokens);
    for (size_t c = 0; c < active.size(); ++c) emit(*active[c], tokens[c], go, cfg_, stats);
    std::vector<Sequence*> running = still_running();
    if (next >= 0 && running.size() == active.size()) {
      pending = next;  // step n + 1 is exactly the next synchronous step
      continue;
    }
    if (next >= 0) {  // an end-of-sequence token: keep step n + 1's tokens of the others
      device_->finish_tokens(next, &tokens);
      for (size_t c = 0; c < active.size(); ++c) {
        if (!active[c]->done) emit(*active[c], tokens[c], go, cfg_, stats);
      }
      running = still_running();
    }
    active = std::move(running);
    pending = active.empty() ? -1 : start(0);
  }
}

void Engine::decode_plain(std::vector<Sequence>& seqs, const GenerateOptions& go, GenerateStats& stats) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t V = cfg_.vocab_size;
  std::vector<float> logits;
  const bool sample_on_device = device_ != nullptr && !go.on_target_logits;  // as in prefill
  if (sample_on_device && pipeline_decode()) {
    decode_on_device_pipelined(seqs, go, stats);
    stats.decode_seconds += seconds_since(t0);
    return;
  }
  std::vector<ops::TokenSamplingParams> rows;
  std::vector<int32_t> tokens;
  while (true) {  // one token per unfinished sequence per forward
    BatchBuilder b;
    std::vector<Sequence*> active;
    for (Sequence& s : seqs) {
      if (s.done) continue;
      b.add({s.slot, static_cast<int32_t>(s.tokens.size() - 1), {s.tokens.back()}, false});
      active.push_back(&s);
    }
    if (active.empty()) break;
    if (sample_on_device) {
      rows.clear();
      for (Sequence* s : active) rows.push_back(device_sampling(go.sampling, s->index, s->out->size()));
      check_batch(b);
      scratch_.reset();
      device_->forward_tokens(ctx_, b, rows, &tokens, /*uniform_decode=*/true);
    } else {
      forward(b, &logits, nullptr, /*uniform_decode=*/true);
    }
    ++stats.forward_calls;
    if (go.on_target_logits) go.on_target_logits(logits);
    for (size_t c = 0; c < active.size(); ++c) {
      emit(*active[c], sample_on_device ? tokens[c] : active[c]->sampler.sample(logits.data() + c * V, V), go, cfg_,
           stats);
    }
  }
  stats.decode_seconds += seconds_since(t0);
}

// Drafter step 0 over each sequence's pending positions (chunked to max_batch_tokens); leaves the first
// draft and the drafter's last residual row in the sequence.
void Engine::draft_step0(std::vector<Sequence*>& active) {
  const int64_t W = cfg_.hc_dim();
  std::vector<float> hidden, logits, out;
  std::vector<int64_t> done(active.size(), 0);
  while (true) {
    BatchBuilder b;
    std::vector<size_t> members;
    hidden.clear();
    int64_t budget = opt_.max_batch_tokens;
    for (size_t i = 0; i < active.size(); ++i) {
      Sequence& s = *active[i];
      const int64_t total = static_cast<int64_t>(s.step0_ids.size());
      const int64_t n = std::min(total - done[i], budget);
      if (n <= 0) continue;
      b.add({s.slot, static_cast<int32_t>(s.step0_start + done[i]),
             std::vector<int32_t>(s.step0_ids.begin() + done[i], s.step0_ids.begin() + done[i] + n), false});
      hidden.insert(hidden.end(), s.step0_hidden.begin() + done[i] * W, s.step0_hidden.begin() + (done[i] + n) * W);
      members.push_back(i);
      done[i] += n;
      budget -= n;
    }
    if (members.empty()) break;
    mtp_forward(b, hidden, &logits, &out);
    int64_t row = 0;
    for (size_t c = 0; c < members.size(); ++c) {
      Sequence& s = *active[members[c]];
      row += b.chunk_token_count(c);
      if (done[members[c]] < static_cast<int64_t>(s.step0_ids.size())) continue;  // more chunks follow
      s.draft_hidden.assign(out.begin() + (row - 1) * W, out.begin() + row * W);
      const float* l = logits.data() + b.chunk_first_logit_row()[c] * cfg_.vocab_size;
      s.drafts.clear();
      s.draft_probs.clear();
      if (s.sampler.params().greedy()) {
        s.drafts.push_back(argmax_token(l, cfg_.vocab_size));
      } else {
        s.draft_probs.push_back(sampling_distribution(l, cfg_.vocab_size, s.sampler.params()));
        s.drafts.push_back(s.sampler.draw(s.draft_probs.back()));
      }
    }
  }
}

void Engine::decode_speculative(std::vector<Sequence>& seqs, const GenerateOptions& go, GenerateStats& stats) {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t K = go.spec_tokens, V = cfg_.vocab_size, W = cfg_.hc_dim();
  std::vector<float> logits, residual, out;
  while (true) {
    std::vector<Sequence*> active;
    for (Sequence& s : seqs) {
      if (!s.done) active.push_back(&s);
    }
    if (active.empty()) break;
    // 1. Drafter step 0 (every position the target just accepted) → d_1.
    draft_step0(active);
    // 2. K-1 single-token drafter steps, each continuing from the drafter's previous residual.
    for (int64_t j = 1; j < K; ++j) {
      BatchBuilder b;
      std::vector<float> hidden;
      for (Sequence* s : active) {
        b.add({s->slot, static_cast<int32_t>(s->committed - 1 + j), {s->drafts.back()}, false});
        hidden.insert(hidden.end(), s->draft_hidden.begin(), s->draft_hidden.end());
      }
      mtp_forward(b, hidden, &logits, &out);
      for (size_t c = 0; c < active.size(); ++c) {
        Sequence& s = *active[c];
        s.draft_hidden.assign(out.begin() + c * W, out.begin() + (c + 1) * W);
        const float* l = logits.data() + c * V;
        if (s.sampler.params().greedy()) {
          s.drafts.push_back(argmax_token(l, V));
        } else {
          s.draft_probs.push_back(sampling_distribution(l, V, s.sampler.params()));
          s.drafts.push_back(s.sampler.draw(s.draft_probs.back()));
        }
      }
    }
    // 3. The target verifies [last, d_1..d_K] of every sequence in one forward.
    BatchBuilder b;
    for (Sequence* s : active) {
      std::vector<int32_t> ids = {s->tokens.back()};
      ids.insert(ids.end(), s->drafts.begin(), s->drafts.end());
      b.add({s->slot, static_cast<int32_t>(s->committed), ids, true});
    }
    forward(b, &logits, &residual, /*uniform_decode=*/true);
    ++stats.forward_calls;
    if (go.on_target_logits) go.on_target_logits(logits);
    // 4. Accept, emit, and queue the accepted positions for the drafter's next step 0. Rejected positions
    //    leave no trace: every state is indexed by position and is rewritten when they are reprocessed.
    int64_t row = 0;
    for (size_t c = 0; c < active.size(); ++c) {
      Sequence& s = *active[c];
      const DraftVerdict v =
          verify_drafts(logits.data() + b.chunk_first_logit_row()[c] * V, V, s.drafts, s.draft_probs, s.sampler);
      ++stats.draft_steps;
      stats.drafted_tokens += K;
      stats.accepted_tokens += v.accepted;
      s.step0_start = s.committed;
      s.step0_hidden.assign(residual.begin() + row * W, residual.begin() + (row + v.accepted + 1) * W);
      s.step0_ids.assign(s.drafts.begin(), s.drafts.begin() + v.accepted);
      s.step0_ids.push_back(v.next_token);
      s.committed += v.accepted + 1;
      for (int64_t i = 0; i < v.accepted; ++i) emit(s, s.drafts[i], go, cfg_, stats);
      emit(s, v.next_token, go, cfg_, stats);
      row += K + 1;
    }
  }
  stats.decode_seconds += seconds_since(t0);
}

void Engine::mtp_forward(BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
                         std::vector<float>* hidden_out) {
  DSV4_CHECK(has_mtp(), kUnsupported, "this checkpoint has no MTP layer (mtp.0.*)");
  check_batch(batch);
  const int64_t T = batch.num_tokens(), R = batch.num_logit_rows(), V = cfg_.vocab_size;
  const int64_t n = cfg_.hc_mult, H = cfg_.hidden_size;
  DSV4_CHECK_ARG(static_cast<int64_t>(hidden.size()) == T * n * H, "mtp_forward: hidden has ", hidden.size(),
                 " values, expected ", T * n * H);
  if (ctx_.is_cuda()) {
    scratch_.reset();
    device_->mtp_forward(ctx_, batch, hidden, logits, hidden_out);
    return;
  }
  logits->assign(static_cast<size_t>(R * V), 0.0f);
  hidden_out->assign(static_cast<size_t>(T * n * H), 0.0f);
  scratch_.reset();
  ArenaScope scope(scratch_);
  Tensor out(hidden_out->data(), DType::F32, {T, n, H});
  ::dsv4::mtp_forward(ctx_, cfg_, weights_, *state_, batch.meta(),
                      Tensor(const_cast<float*>(hidden.data()), DType::F32, {T, n, H}), out);
  Tensor rows = scratch_.alloc(DType::F32, {R, n, H});
  ops::gather_rows(ctx_, rows, out, batch.logit_rows());
  mtp_logits(ctx_, cfg_, weights_, rows, Tensor(logits->data(), DType::F32, {R, V}));
}

}  // namespace dsv4
