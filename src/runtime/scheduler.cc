// The engine's scheduler: continuous batching over the paged state, one step loop for generation and
// speculative decoding.
//
// Every step builds one forward from (a) the next token of every running sequence in its decode phase and (b)
// prompt chunks of the others, up to max_batch_tokens, in admission order. Requests join at the next step with
// room (a free sequence slot and the pages of their first chunk) and leave when done, freeing their pages. A
// sequence is a token list plus how many of its tokens the state holds (`computed`): a prompt, a chunk, a decode
// step and a resumption after preemption are the same thing — the tokens not yet computed. When the pool runs
// out, the most recently admitted sequence is preempted: its pages are freed and it waits at the front of the
// queue to be recomputed from its tokens; its sampler state stays with it, so its output is unchanged.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <span>

#include "dsv4/core/log.h"
#include "dsv4/runtime/engine.h"
#include "dsv4/runtime/page_pool.h"
#include "dsv4/runtime/sampler.h"
#include "runtime/executor.h"
#include "runtime/sequence.h"

namespace dsv4 {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
    case FinishReason::kNone:
      break;
  }
  return "";
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Device sampling parameters of a sequence's next token: its Philox stream is the request's sampling stream, the
// counter its number of generated tokens (deterministic per seed; not the host Sampler's sequence).
ops::TokenSamplingParams device_sampling(const SamplingParams& p, uint64_t stream, int64_t generated) {
  return {p.temperature, p.top_p, p.seed, stream, static_cast<uint64_t>(generated)};
}

// log-softmax of one logit row at `token` and its k most likely tokens.
void fill_logprobs(const float* row, int64_t V, int32_t token, int64_t k, TokenEvent& e) {
  const double lse = log_sum_exp(row, V);
  e.logprob = static_cast<float>(row[token] - lse);
  if (k <= 0) return;
  std::vector<int32_t> idx(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) idx[static_cast<size_t>(v)] = static_cast<int32_t>(v);
  const int64_t n = std::min(k, V);
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(),
                    [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
  for (int64_t i = 0; i < n; ++i) e.top_logprobs.emplace_back(idx[i], static_cast<float>(row[idx[i]] - lse));
}

}  // namespace

// ---- requests ----

RequestId Engine::submit(std::vector<int32_t> prompt, const RequestOptions& o, TokenCallback on_event) {
  DSV4_CHECK_ARG(!prompt.empty(), "request: the prompt is empty");
  check_ids(prompt);
  o.sampling.validate();
  DSV4_CHECK_ARG(o.max_new_tokens >= 0, "request: max_new_tokens must be >= 0, got ", o.max_new_tokens);
  DSV4_CHECK_ARG(o.logprobs >= -1 && o.logprobs <= 20, "request: logprobs must be in [0, 20], got ", o.logprobs);
  DSV4_CHECK_ARG(spec_tokens_ == 0 || !o.sampling.has_penalties(),
                 "request: presence / frequency penalties are not supported with speculative decoding (--spec-tokens)");
  DSV4_CHECK_ARG(spec_tokens_ == 0 || o.sampling.device_compatible(),
                 "request: top-k / min-p are not supported with speculative decoding (--spec-tokens): drafts are "
                 "drawn and verified with temperature and top-p only");
  for (int32_t t : o.stop_token_ids) {
    DSV4_CHECK_ARG(t >= 0 && t < cfg_.vocab_size, "request: stop token id ", t, " is outside the vocabulary");
  }
  const int64_t P = static_cast<int64_t>(prompt.size()), limit = model_opt_.max_model_len;
  DSV4_CHECK_ARG(P <= limit && o.max_new_tokens <= limit - P, "request: the prompt (", P, " tokens) + ",
                 o.max_new_tokens, " new tokens exceed max_model_len (", limit, ")");
  const int64_t need = state_->layout().pages_for(P + o.max_new_tokens + model_opt_.max_tokens_ahead);
  DSV4_CHECK_ARG(need <= pages_->total_pages(), "request: the prompt (", P, " tokens) + ", o.max_new_tokens,
                 " new tokens need ", need, " state pages; the pool has ", pages_->total_pages(),
                 " (raise --kv-cache-memory)");
  auto s = std::make_unique<Seq>();
  s->id = next_id_++;
  s->opt = o;
  s->cb = std::move(on_event);
  s->tokens = std::move(prompt);
  s->prompt_len = P;
  s->sampler = Sampler(o.sampling, o.sampling_stream);
  sched_.prompt_tokens += P;
  const RequestId id = s->id;
  if (o.max_new_tokens == 0) {
    finish(*s, FinishReason::kLength);
    return id;
  }
  waiting_.push_back(std::move(s));
  return id;
}

void Engine::cancel(RequestId id) { cancelled_.push_back(id); }

bool Engine::idle() const { return running_.empty() && waiting_.empty() && cancelled_.empty(); }

SchedulerStats Engine::scheduler_stats() const {
  SchedulerStats s = sched_;
  s.running = static_cast<int64_t>(running_.size());
  s.waiting = static_cast<int64_t>(waiting_.size());
  s.pages_total = pages_->total_pages();
  s.pages_used = pages_->used_pages();
  s.page_tokens = state_->layout().page_tokens;
  return s;
}

void Engine::set_spec_tokens(int64_t k) {
  DSV4_CHECK_ARG(k >= 0, "--spec-tokens must be >= 0, got ", k);
  if (k == spec_tokens_) return;
  DSV4_CHECK(idle(), kInvalidArgument, "the draft length can change only while no request runs");
  if (k > 0) {
    DSV4_CHECK(has_mtp(), kUnsupported, "--spec-tokens needs a checkpoint with an MTP layer (mtp.0.*)");
    DSV4_CHECK_ARG(k <= opt_.max_spec_tokens, "--spec-tokens ", k, " exceeds the engine's maximum of ",
                   opt_.max_spec_tokens);
    DSV4_CHECK_ARG(k + 1 <= opt_.max_batch_tokens, "--spec-tokens too large for max_batch_tokens");
  }
  spec_tokens_ = k;
}

void Engine::finish(Seq& s, FinishReason reason, const std::string& error) {
  s.done = true;
  TokenEvent e;
  e.id = s.id;
  e.index = s.generated;
  e.finished = true;
  e.reason = reason;
  e.error = error;
  if (s.cb) s.cb(e);
}

void Engine::emit(Seq& s, int32_t token, const float* logits_row) {
  if (s.done) return;
  if (token < 0) {  // the device sampler's mark of a row whose logits hold a NaN or an infinity (never a token id)
    finish(s, FinishReason::kError,
           str_cat("non-finite logits (a NaN or an infinity, flagged by the sampler) at position ",
                   static_cast<int64_t>(s.tokens.size()) - 1, " of request ", s.id, ", scheduler step ", sched_.steps));
    return;
  }
  s.tokens.push_back(token);
  ++s.generated;
  ++sched_.generated_tokens;
  TokenEvent e;
  e.id = s.id;
  e.token = token;
  e.index = s.generated - 1;
  if (s.opt.logprobs >= 0 && logits_row != nullptr)
    fill_logprobs(logits_row, cfg_.vocab_size, token, s.opt.logprobs, e);
  const auto& eos = cfg_.eos_token_ids;
  const bool stop =
      (s.opt.stop_at_eos && std::find(eos.begin(), eos.end(), token) != eos.end()) ||
      std::find(s.opt.stop_token_ids.begin(), s.opt.stop_token_ids.end(), token) != s.opt.stop_token_ids.end();
  if (stop) {
    e.reason = FinishReason::kStop;
  } else if (s.generated >= s.opt.max_new_tokens || static_cast<int64_t>(s.tokens.size()) >= model_opt_.max_model_len) {
    e.reason = FinishReason::kLength;
  }
  e.finished = e.reason != FinishReason::kNone;
  s.done = e.finished;
  if (s.cb) s.cb(e);
}

// Frees the slots and pages of finished sequences.
void Engine::drop_finished() {
  for (auto it = running_.begin(); it != running_.end();) {
    if (!(*it)->done) {
      ++it;
      continue;
    }
    pages_->release((*it)->slot);
    free_slots_.push_back((*it)->slot);
    it = running_.erase(it);
  }
}

void Engine::handle_cancellations() {
  for (RequestId id : cancelled_) {
    for (auto* list : {&running_, &waiting_}) {
      for (auto& s : *list) {
        if (s->id == id && !s->done) finish(*s, FinishReason::kCancelled);
      }
    }
  }
  cancelled_.clear();
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), [](const auto& s) { return s->done; }),
                 waiting_.end());
  drop_finished();
}

// Moves waiting requests into the batch, first come first served, while a slot and their first chunk's pages are
// free.
void Engine::admit() {
  while (!waiting_.empty() && !free_slots_.empty() && static_cast<int64_t>(running_.size()) < opt_.max_seqs) {
    Seq& s = *waiting_.front();
    const int64_t first = std::min(s.pending(), opt_.max_batch_tokens) + model_opt_.max_tokens_ahead;
    if (state_->layout().pages_for(first) > pages_->free_pages()) break;
    s.slot = free_slots_.back();
    free_slots_.pop_back();
    s.admitted = admissions_++;
    running_.push_back(std::move(waiting_.front()));
    waiting_.erase(waiting_.begin());
  }
}

void Engine::preempt(Seq& s) {
  pages_->release(s.slot);
  free_slots_.push_back(s.slot);
  s.slot = -1;
  s.computed = 0;
  s.prefilled = false;
  s.carry = 0;
  ++sched_.preemptions;
  auto it = std::find_if(running_.begin(), running_.end(), [&](const auto& p) { return p.get() == &s; });
  waiting_.insert(waiting_.begin(), std::move(*it));
  running_.erase(it);
}

// Pages for positions [0, tokens) of `s`, preempting the most recently admitted sequences while the pool is short;
// false when `s` itself was preempted. Callers reserve in admission order, so victims are never reserved yet.
bool Engine::reserve(Seq& s, int64_t tokens) {
  while (!pages_->ensure(s.slot, tokens)) {
    Seq& victim = *running_.back();
    preempt(victim);
    if (&victim == &s) return false;
  }
  return true;
}

bool Engine::step() {
  if (inflight_ticket_ >= 0) {  // a pipelined decode step is queued: read it back (and maybe queue the next)
    continue_pipeline();
    drop_finished();
    ++sched_.steps;
    return true;
  }
  handle_cancellations();
  admit();
  if (running_.empty()) return false;
  if (spec_tokens_ > 0) {
    const bool any_unprefilled =
        std::any_of(running_.begin(), running_.end(), [](const auto& s) { return !s->prefilled; });
    if (any_unprefilled) {
      step_prefill_for_drafts();
    } else {
      step_speculative();
    }
  } else {
    step_plain();
  }
  drop_finished();
  ++sched_.steps;
  return true;
}

// The chunks of one forward: the pending tokens of `order` up to max_batch_tokens, their pages reserved in admission
// order (preempting the newest sequences when the pool is short; preempted ones drop out), laid out in `b` in
// `order`. Returns each chunk's sequence and token count.
std::vector<std::pair<Engine::Seq*, int64_t>> Engine::plan_chunks(const std::vector<Seq*>& order, BatchBuilder& b) {
  int64_t budget = opt_.max_batch_tokens;
  for (Seq* s : order) {
    s->planned = std::min(s->pending(), budget);
    budget -= s->planned;
  }
  fit_prompt_step(order);
  std::vector<Seq*> admitted_order;
  for (auto& s : running_) admitted_order.push_back(s.get());
  for (Seq* s : admitted_order) {  // victims are always newer than the sequence reserving, so not reserved yet
    if (s->planned == 0 || s->slot < 0) continue;
    if (!reserve(*s, s->computed + s->planned)) s->planned = 0;
  }
  std::vector<std::pair<Seq*, int64_t>> in;
  int64_t tokens = 0;
  for (Seq* s : order) tokens += s->slot >= 0 ? s->planned : 0;
  b.reserve(tokens);
  for (Seq* s : order) {
    const int64_t n = s->planned;
    s->planned = 0;
    if (n == 0 || s->slot < 0) continue;
    b.add(s->slot, static_cast<int32_t>(s->computed),
          std::span<const int32_t>(s->tokens).subspan(static_cast<size_t>(s->computed), static_cast<size_t>(n)), false);
    in.emplace_back(s, n);
  }
  return in;
}

namespace {
bool prompt_step_graphs_enabled() {
  static const bool enabled = env_bool_or("DSV4_PROMPT_STEP_GRAPHS", false);
  return enabled;
}
}  // namespace

// EngineOptions::prompt_step_sizes: a planned step with prompt chunks is trimmed to the largest size <= its tokens that
// keeps every decode token, its last chunks shortened first (order holds the decode sequences first). Each step still
// moves at least one prompt token, so every prompt finishes.
void Engine::fit_prompt_step(const std::vector<Seq*>& order) {
  int64_t total = 0, keep = 0;
  bool prompt = false;
  for (const Seq* s : order) {
    total += s->planned;
    if (s->pending() == 1) {
      keep += s->planned;
    } else {
      prompt = prompt || s->planned > 0;
    }
  }
  if (!prompt) return;
  int64_t fit = total;
  if (!opt_.prompt_step_sizes.empty()) {
    fit = 0;
    for (int64_t size : opt_.prompt_step_sizes) {
      if (size <= total) fit = std::max(fit, size);
    }
  } else if (prompt_step_graphs_enabled()) {
    fit = exec_->replayed_tokens_at_most(total);
  }
  if (fit >= total || fit <= keep) return;
  int64_t excess = total - fit;
  for (auto it = order.rbegin(); it != order.rend() && excess > 0; ++it) {
    if ((*it)->pending() == 1) continue;
    const int64_t cut = std::min(excess, (*it)->planned);
    (*it)->planned -= cut;
    excess -= cut;
  }
  ++sched_.prompt_steps_fitted;
}

// One forward over the running sequences' pending tokens: decode tokens first, then prompt chunks.
bool Engine::step_plain() {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Seq*> order;  // decode-phase sequences first, then prompt chunks
  for (auto& s : running_) {
    if (s->pending() == 1) order.push_back(s.get());
  }
  for (auto& s : running_) {
    if (s->pending() > 1) order.push_back(s.get());
  }
  BatchBuilder b;
  const std::vector<std::pair<Seq*, int64_t>> in = plan_chunks(order, b);
  bool uniform = true, prefill = false;
  for (const auto& [s, n] : in) {
    uniform = uniform && n == 1;
    prefill = prefill || s->generated == 0 || n > 1;
  }
  if (in.empty()) return false;
  check_batch(b);
  const auto t_built = std::chrono::steady_clock::now();
  // Device sampling unless a caller needs the logits on the host.
  bool host_logits = !exec_->samples_on_device() || (generating_ != nullptr && generating_->on_target_logits);
  for (auto& [s, n] : in) host_logits = host_logits || s->opt.logprobs >= 0 || !s->opt.sampling.device_compatible();
  if (!host_logits && !prefill && pipeline_decode()) {  // pure decode: two steps in flight when possible
    std::vector<Seq*> seqs;
    for (auto& [s, n] : in) seqs.push_back(s);
    const int ticket = start_decode(seqs, /*ids_from_previous=*/false);
    const int next = can_pipeline(seqs) ? start_decode(seqs, /*ids_from_previous=*/true) : -1;
    finish_decode(ticket, seqs);
    if (next >= 0) {
      inflight_ticket_ = next;
      inflight_seqs_ = seqs;
      if (std::any_of(seqs.begin(), seqs.end(), [](Seq* s) { return s->done; })) continue_pipeline();
    }
    sched_.decode_seconds += seconds_since(t0);
    return true;
  }
  std::vector<float> logits;
  std::vector<int32_t> tokens;
  auto t_wait = t_built;  // host_logits: the forward's launch and wait are one call
  if (host_logits) {
    exec_->forward(b, uniform, &logits, nullptr);
    if (generating_ != nullptr && generating_->on_target_logits) generating_->on_target_logits(logits);
  } else {
    std::vector<ops::TokenSamplingParams> params(static_cast<size_t>(b.num_logit_rows()));
    for (size_t c = 0; c < in.size(); ++c) {
      const Seq& s = *in[c].first;
      params[b.chunk_first_logit_row()[c]] = device_sampling(s.opt.sampling, s.opt.sampling_stream, s.generated);
    }
    const int ticket = exec_->start_tokens(b, uniform, params, /*ids_from_previous=*/false);
    t_wait = std::chrono::steady_clock::now();
    exec_->finish_tokens(ticket, &tokens);
    if (prefill) sched_.prefill_wait_seconds += seconds_since(t_wait);
  }
  const auto t_back = std::chrono::steady_clock::now();
  ++sched_.forward_calls;
  const int64_t V = cfg_.vocab_size;
  for (size_t c = 0; c < in.size(); ++c) {
    Seq& s = *in[c].first;
    s.computed += in[c].second;
    if (s.computed < static_cast<int64_t>(s.tokens.size())) continue;  // more prompt chunks follow
    const int64_t r = b.chunk_first_logit_row()[c];
    if (host_logits) {
      const float* row = logits.data() + r * V;
      const float* bad = std::find_if(row, row + V, [](float x) { return !std::isfinite(x); });
      if (bad != row + V) {  // NaN/Inf weights or an overflow: never sample from it
        finish(s, FinishReason::kError,
               str_cat("non-finite logits (", *bad, " for token id ", bad - row, ") at position ", s.computed - 1,
                       " of request ", s.id, ", scheduler step ", sched_.steps));
        continue;
      }
      emit(s, s.sampler.sample(row, V, s.generated_span()), row);
    } else {
      emit(s, tokens[r], nullptr);
    }
  }
  (prefill ? sched_.prefill_seconds : sched_.decode_seconds) += seconds_since(t0);
  sched_.prefill_steps += prefill ? 1 : 0;
  if (prefill && log_level() >= LogLevel::kDebug) {  // where a prefill step's host time goes (issue 18)
    const auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    log_debug("prefill step ", sched_.steps, ": ", b.num_tokens(), " tokens, ", in.size(), " chunks; ms: plan ",
              ms(t0, t_built), ", start ", ms(t_built, t_wait), ", wait ", ms(t_wait, t_back), ", emit ",
              ms(t_back, std::chrono::steady_clock::now()));
  }
  return true;
}

// ---- pipelined decode (CUDA, device sampling) ----
// Step n + 1 of a pure-decode batch is queued, its ids copied on the device from step n's sampled tokens, before
// step n's tokens are read back, so the GPU never waits for the host between steps. It is queued only when nothing
// can change the batch in between: no request waiting or cancelled, no sequence at its token budget or
// max_model_len, and every sequence's pages already hold step n + 1's position. A sequence that stops on an end or
// stop token at step n has its step n + 1 row dropped (its state past the end is never read; its pages are reused
// only by work queued later on the same stream). The tokens are exactly those of one step at a time.

namespace {
bool pipeline_decode_enabled() {
  static const bool enabled = env_bool_or("DSV4_PIPELINE_DECODE", true);
  return enabled;
}
}  // namespace

bool Engine::pipeline_decode() const { return exec_->samples_on_device() && pipeline_decode_enabled(); }

int Engine::start_decode(const std::vector<Seq*>& seqs, bool ids_from_previous) {
  BatchBuilder b;
  std::vector<ops::TokenSamplingParams> params;
  const int64_t ahead = ids_from_previous ? 1 : 0;
  for (Seq* s : seqs) {
    b.add({s->slot, static_cast<int32_t>(s->computed), {ids_from_previous ? 0 : s->tokens.back()}, false});
    params.push_back(device_sampling(s->opt.sampling, s->opt.sampling_stream, s->generated + ahead));
    ++s->computed;
  }
  check_batch(b);
  ++sched_.forward_calls;
  return exec_->start_tokens(b, /*uniform_decode=*/true, params, ids_from_previous);
}

void Engine::finish_decode(int ticket, const std::vector<Seq*>& seqs) {
  std::vector<int32_t> tokens;
  exec_->finish_tokens(ticket, &tokens);
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (!seqs[i]->done) emit(*seqs[i], tokens[i], nullptr);
  }
}

// Whether step n + 1 of `seqs` (whose step n is queued: computed counts it, generated does not) may be queued now.
bool Engine::can_pipeline(const std::vector<Seq*>& seqs) {
  if (!waiting_.empty() || !cancelled_.empty() || seqs.size() != running_.size()) return false;
  if (generating_ != nullptr && generating_->on_target_logits) return false;
  for (Seq* s : seqs) {
    if (s->done || s->generated + 1 >= s->opt.max_new_tokens ||
        static_cast<int64_t>(s->tokens.size()) + 1 >= model_opt_.max_model_len || s->opt.logprobs >= 0 ||
        !s->opt.sampling.device_compatible()) {
      return false;
    }
  }
  for (Seq* s : seqs) {
    if (!pages_->ensure(s->slot, s->computed + 1)) return false;
  }
  return true;
}

void Engine::continue_pipeline() {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Seq*> seqs = std::move(inflight_seqs_);
  const int ticket = inflight_ticket_;
  inflight_ticket_ = -1;
  inflight_seqs_.clear();
  const int next = can_pipeline(seqs) ? start_decode(seqs, /*ids_from_previous=*/true) : -1;
  finish_decode(ticket, seqs);
  if (next >= 0) {
    if (std::any_of(seqs.begin(), seqs.end(), [](Seq* s) { return s->done; })) {
      finish_decode(next, seqs);  // keep the others' tokens of the step already queued
    } else {
      inflight_ticket_ = next;
      inflight_seqs_ = std::move(seqs);
    }
  }
  sched_.decode_seconds += seconds_since(t0);
}

// Speculative mode: prompts (or resumed sequences) run through the target, their first token drawn on the device, and
// the drafter runs over the same rows at once (the token after each position is known, except after a prompt's last
// position: that row's target residual is carried instead, for the first step 0). See runtime/spec_step.h.
bool Engine::step_prefill_for_drafts() {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<Seq*> order;
  for (auto& s : running_) {
    if (!s->prefilled) order.push_back(s.get());
  }
  BatchBuilder b;
  const std::vector<std::pair<Seq*, int64_t>> in = plan_chunks(order, b);
  if (in.empty()) return false;
  check_batch(b);
  const int64_t T = b.num_tokens(), R = b.num_logit_rows(), V = cfg_.vocab_size;
  std::vector<int32_t> drafter_ids(static_cast<size_t>(T), 0), carry_slot(static_cast<size_t>(T), -1);
  std::vector<ops::TokenSamplingParams> params(static_cast<size_t>(R));
  bool host_logits = generating_ != nullptr && generating_->on_target_logits;
  int64_t row = 0;
  for (size_t c = 0; c < in.size(); ++c) {
    const Seq& s = *in[c].first;
    const int64_t n = in[c].second, size = static_cast<int64_t>(s.tokens.size());
    for (int64_t k = 0; k < n; ++k) {
      const int64_t next = s.computed + k + 1;
      if (next < size) drafter_ids[static_cast<size_t>(row + k)] = s.tokens[static_cast<size_t>(next)];
    }
    if (s.computed + n == size) carry_slot[static_cast<size_t>(row + n - 1)] = s.slot;
    params[static_cast<size_t>(b.chunk_first_logit_row()[c])] =
        device_sampling(s.opt.sampling, s.opt.sampling_stream, s.generated);
    host_logits = host_logits || s.opt.logprobs >= 0;
    row += n;
  }
  std::vector<int32_t> tokens;
  std::vector<float> logits;
  exec_->spec_prefill(b, drafter_ids, carry_slot, params, &tokens, host_logits ? &logits : nullptr);
  sched_.forward_calls += 2;
  if (generating_ != nullptr && generating_->on_target_logits) generating_->on_target_logits(logits);
  for (size_t c = 0; c < in.size(); ++c) {
    Seq& s = *in[c].first;
    s.computed += in[c].second;
    if (s.computed < static_cast<int64_t>(s.tokens.size())) continue;  // more prompt chunks follow
    const int64_t r = b.chunk_first_logit_row()[c];
    emit(s, tokens[static_cast<size_t>(r)], host_logits ? logits.data() + r * V : nullptr);
    s.prefilled = true;
    s.carry = 1;  // the residual of position computed - 1, whose next token was just drawn
  }
  sched_.prefill_seconds += seconds_since(t0);
  return true;
}

// One draft–verify–accept round over the running sequences (all in their decode phase), on the device: the host
// sends the step's metadata in one copy and reads back the accepted tokens and counts in one copy.
void Engine::step_speculative() {
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t K = spec_tokens_, V = cfg_.vocab_size;
  // As many sequences as one step takes, oldest first; their pages for the K + 1 verified positions.
  const int64_t most = std::max<int64_t>(1, std::min(exec_->spec_max_seqs(K), opt_.max_batch_tokens / (K + 1)));
  std::vector<Seq*> candidates, active;
  for (auto& s : running_) {
    if (static_cast<int64_t>(candidates.size()) < most) candidates.push_back(s.get());
  }
  for (Seq* s : candidates) {
    if (s->slot >= 0 && reserve(*s, s->computed + K + 1)) active.push_back(s);
  }
  active.erase(std::remove_if(active.begin(), active.end(), [](Seq* s) { return s->slot < 0; }), active.end());
  if (active.empty()) return;
  std::vector<SpecSeq> seqs;
  bool host_logits = generating_ != nullptr && generating_->on_target_logits;
  const int64_t limit = model_opt_.max_model_len + model_opt_.max_tokens_ahead;
  for (Seq* s : active) {
    DSV4_INTERNAL_CHECK(s->prefilled && s->pending() == 1 && s->carry >= 1 && s->carry <= K + 1,
                        "speculative step: sequence ", s->id, " is not in its decode phase");
    DSV4_CHECK_ARG(s->computed + K < limit, "position ", s->computed + K, " exceeds the engine's max_model_len (",
                   model_opt_.max_model_len, ")");
    SpecSeq q;
    q.slot = s->slot;
    q.computed = s->computed;
    q.carry_ids.assign(s->tokens.begin() + (s->computed - s->carry + 1), s->tokens.begin() + (s->computed + 1));
    q.last = s->tokens.back();
    q.sampling = device_sampling(s->opt.sampling, s->opt.sampling_stream, s->generated);
    seqs.push_back(std::move(q));
    host_logits = host_logits || s->opt.logprobs >= 0;
  }
  std::vector<int32_t> tokens, counts;
  std::vector<float> logits;
  exec_->spec_step(seqs, K, &tokens, &counts, host_logits ? &logits : nullptr);
  last_spec_batch_ = static_cast<int64_t>(seqs.size());
  last_spec_k_ = K;
  sched_.forward_calls += K + 1;
  if (generating_ != nullptr && generating_->on_target_logits) generating_->on_target_logits(logits);
  // Emit the accepted drafts and the next token. Rejected positions leave no trace: every state is indexed by
  // position and is rewritten when they are reprocessed; the carry keeps the accepted positions' residual rows.
  for (size_t i = 0; i < active.size(); ++i) {
    Seq& s = *active[i];
    const int64_t emitted = counts[i];
    if (emitted < 0) {  // a verified row's logits held a NaN or an infinity (runtime/spec_step.h)
      finish(
          s, FinishReason::kError,
          str_cat("non-finite logits (a NaN or an infinity, in the speculative verification) after position ",
                  static_cast<int64_t>(s.tokens.size()) - 1, " of request ", s.id, ", scheduler step ", sched_.steps));
      continue;
    }
    DSV4_INTERNAL_CHECK(emitted >= 1 && emitted <= K + 1, "speculative step: ", emitted, " tokens accepted");
    ++sched_.draft_steps;
    sched_.drafted_tokens += K;
    sched_.accepted_tokens += emitted - 1;
    const int64_t row = static_cast<int64_t>(i) * (K + 1);
    for (int64_t j = 0; j < emitted; ++j) {
      emit(s, tokens[static_cast<size_t>(row + j)], host_logits ? logits.data() + (row + j) * V : nullptr);
    }
    s.computed += emitted;
    s.carry = emitted;
  }
  sched_.decode_seconds += seconds_since(t0);
}

// ---- generate: the prompts through the scheduler ----

GenerateResult Engine::generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& go) {
  DSV4_CHECK_ARG(!prompts.empty(), "generate: no prompts");
  DSV4_CHECK_ARG(go.max_new_tokens >= 0, "generate: -n must be >= 0, got ", go.max_new_tokens);
  DSV4_CHECK_ARG(go.spec_tokens >= 0, "generate: --spec-tokens must be >= 0, got ", go.spec_tokens);
  DSV4_CHECK_ARG(go.arrival_steps.empty() || go.arrival_steps.size() == prompts.size(),
                 "generate: arrival_steps needs one entry per prompt");
  DSV4_CHECK(idle(), kInvalidArgument, "generate: the engine is serving other requests");
  go.sampling.validate();
  const int64_t previous_k = spec_tokens_;
  set_spec_tokens(go.spec_tokens);
  GenerateResult result;
  result.tokens.resize(prompts.size());
  result.latency_seconds.assign(prompts.size(), 0.0);
  result.first_token_seconds.assign(prompts.size(), 0.0);
  for (size_t i = 0; i < prompts.size(); ++i) {  // every request checked before any runs
    DSV4_CHECK_ARG(!prompts[i].empty(), "generate: prompt ", i, " is empty");
    check_ids(prompts[i]);
    const int64_t P = static_cast<int64_t>(prompts[i].size());
    DSV4_CHECK_ARG(go.max_new_tokens <= model_opt_.max_model_len - P, "generate: prompt ", i, " (", P, " tokens) + ",
                   go.max_new_tokens, " new tokens exceed max_model_len (", model_opt_.max_model_len, ")");
  }
  const SchedulerStats before = sched_;
  std::string failure;  // the first request that failed after admission (the others still complete)
  std::vector<std::chrono::steady_clock::time_point> submitted(prompts.size());
  const auto t0 = std::chrono::steady_clock::now();
  generating_ = &go;
  size_t next = 0;
  std::vector<size_t> order(prompts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  if (!go.arrival_steps.empty()) {
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return go.arrival_steps[a] < go.arrival_steps[b]; });
  }
  try {
    for (int64_t steps = 0; next < order.size() || !idle(); ++steps) {
      while (next < order.size() && (go.arrival_steps.empty() || go.arrival_steps[order[next]] <= steps)) {
        const size_t i = order[next++];
        RequestOptions ro;
        ro.max_new_tokens = go.max_new_tokens;
        ro.sampling = go.sampling;
        ro.sampling_stream = i;
        ro.stop_at_eos = go.stop_at_eos;
        submitted[i] = std::chrono::steady_clock::now();
        submit(prompts[i], ro, [&, i](const TokenEvent& e) {
          const auto now = std::chrono::steady_clock::now();
          if (e.token >= 0) {
            if (result.tokens[i].empty()) {
              result.first_token_seconds[i] = std::chrono::duration<double>(now - submitted[i]).count();
            }
            result.tokens[i].push_back(e.token);
            if (go.on_token) go.on_token(i, e.token);
          }
          if (e.finished) result.latency_seconds[i] = std::chrono::duration<double>(now - submitted[i]).count();
          if (e.reason == FinishReason::kError && failure.empty()) failure = e.error;
        });
      }
      step();
    }
  } catch (...) {
    generating_ = nullptr;
    if (inflight_ticket_ >= 0) {
      std::vector<int32_t> unused;
      try {
        exec_->finish_tokens(inflight_ticket_, &unused);
      } catch (...) {
      }
      inflight_ticket_ = -1;
      inflight_seqs_.clear();
    }
    for (auto& s : running_) pages_->release(s->slot), free_slots_.push_back(s->slot);
    running_.clear();
    waiting_.clear();
    spec_tokens_ = previous_k;
    throw;
  }
  generating_ = nullptr;
  spec_tokens_ = previous_k;
  DSV4_CHECK(failure.empty(), kInvalidArgument, "generate: ", failure);
  GenerateStats& st = result.stats;
  st.total_seconds = seconds_since(t0);
  st.prompt_tokens = sched_.prompt_tokens - before.prompt_tokens;
  st.generated_tokens = sched_.generated_tokens - before.generated_tokens;
  st.forward_calls = sched_.forward_calls - before.forward_calls;
  st.prefill_seconds = sched_.prefill_seconds - before.prefill_seconds;
  st.prefill_wait_seconds = sched_.prefill_wait_seconds - before.prefill_wait_seconds;
  st.prefill_steps = sched_.prefill_steps - before.prefill_steps;
  st.prompt_steps_fitted = sched_.prompt_steps_fitted - before.prompt_steps_fitted;
  st.decode_seconds = sched_.decode_seconds - before.decode_seconds;
  st.draft_steps = sched_.draft_steps - before.draft_steps;
  st.drafted_tokens = sched_.drafted_tokens - before.drafted_tokens;
  st.accepted_tokens = sched_.accepted_tokens - before.accepted_tokens;
  st.preemptions = sched_.preemptions - before.preemptions;
  st.steps = sched_.steps - before.steps;
  return result;
}

}  // namespace dsv4
