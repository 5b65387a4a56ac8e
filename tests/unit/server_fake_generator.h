// A deterministic server::Generator for the server's tests: each running request emits one scripted token per
// step (continuous batching in miniature), with the engine's finish rules (max_new_tokens, end-of-sequence,
// stop_token_ids, cancellation) and fake log-probabilities.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dsv4/core/status.h"
#include "dsv4/server/generator.h"

namespace dsv4::server::testing {

class FakeGenerator final : public Generator {
 public:
  // script(prompt) = the tokens the request generates, in order (it ends with kLength after them unless an
  // end-of-sequence token comes first). Default: the prompt reversed, then the EOS id.
  using Script = std::function<std::vector<int32_t>(const std::vector<int32_t>& prompt)>;
  FakeGenerator(int64_t max_model_len = 4096, int64_t vocab = 512, int32_t eos = 1)
      : max_model_len_(max_model_len), vocab_(vocab), eos_(eos) {
    script_ = [eos](const std::vector<int32_t>& p) {
      std::vector<int32_t> out(p.rbegin(), p.rend());
      out.push_back(eos);
      return out;
    };
  }
  void set_script(Script s) {
    std::lock_guard<std::mutex> lock(mu_);
    script_ = std::move(s);
  }
  // While paused, step() does nothing (requests stay queued): lets tests hold requests in flight.
  void pause(bool p) { paused_ = p; }
  // Sleep per step (lets a test act while a long request runs).
  void set_step_delay(std::chrono::milliseconds d) { delay_ms_ = d.count(); }
  // Requests with penalties are refused with this message (as an engine without them would).
  void refuse_penalties(std::string why) { refuse_penalties_ = std::move(why); }
  std::string unsupported_sampling(const SamplingParams& p) const override {
    return p.has_penalties() ? refuse_penalties_ : std::string();
  }
  // The next step throws (an engine failure mid-generation).
  void fail_next_step(std::string why) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_ = std::move(why);
  }
  int64_t cancels() const { return cancels_; }
  int64_t submitted() const { return submitted_; }
  // idle() as of the engine loop's last call into this generator, for the test's own thread (idle() itself reads the
  // loop thread's vectors: ThreadSanitizer saw the tests race with the loop when they polled it).
  bool quiescent() const { return quiescent_; }

  RequestId submit(std::vector<int32_t> prompt, const RequestOptions& o, TokenCallback cb) override {
    DSV4_CHECK_ARG(!prompt.empty(), "request: the prompt is empty");
    for (int32_t t : prompt)
      DSV4_CHECK_ARG(t >= 0 && t < vocab_, "request: token id ", t, " is outside the vocabulary");
    o.sampling.validate();
    const int64_t P = static_cast<int64_t>(prompt.size());
    DSV4_CHECK_ARG(P + o.max_new_tokens <= max_model_len_, "request: the prompt (", P, " tokens) + ", o.max_new_tokens,
                   " new tokens exceed max_model_len (", max_model_len_, ")");
    Req r;
    r.id = next_id_++;
    r.opt = o;
    r.cb = std::move(cb);
    {
      std::lock_guard<std::mutex> lock(mu_);
      r.tokens = script_(prompt);
    }
    ++submitted_;
    running_.push_back(std::move(r));
    quiescent_ = false;
    return running_.back().id;
  }
  void cancel(RequestId id) override {
    cancelled_.push_back(id);
    quiescent_ = false;
  }
  bool step() override {
    for (RequestId id : cancelled_) {
      for (Req& r : running_) {
        if (r.id == id && !r.done) {
          ++cancels_;
          finish(r, FinishReason::kCancelled, -1);
        }
      }
    }
    cancelled_.clear();
    prune();
    quiescent_ = running_.empty();
    if (running_.empty()) return false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!fail_.empty()) {
        const std::string why = std::move(fail_);
        fail_.clear();
        fail(StatusCode::kInternal, why);
      }
    }
    if (paused_) {  // busy while holding requests, so the engine loop keeps polling
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return true;
    }
    if (delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_.load()));
    ++stats_.steps;
    for (Req& r : running_) {
      const int32_t token = r.next < r.tokens.size() ? r.tokens[r.next] : static_cast<int32_t>('.');
      ++r.next;
      ++stats_.generated_tokens;
      FinishReason reason = FinishReason::kNone;
      const bool stop =
          (r.opt.stop_at_eos && token == eos_) ||
          std::find(r.opt.stop_token_ids.begin(), r.opt.stop_token_ids.end(), token) != r.opt.stop_token_ids.end();
      if (stop) {
        reason = FinishReason::kStop;
      } else if (static_cast<int64_t>(r.next) >= r.opt.max_new_tokens) {
        reason = FinishReason::kLength;
      }
      finish(r, reason, token);
    }
    prune();
    quiescent_ = running_.empty();
    return true;
  }
  bool idle() const override { return running_.empty() && cancelled_.empty(); }
  SchedulerStats stats() const override {
    SchedulerStats s = stats_;
    s.running = static_cast<int64_t>(running_.size());
    s.pages_total = 100;
    s.pages_used = s.running;
    return s;
  }
  int64_t max_model_len() const override { return max_model_len_; }
  int64_t vocab_size() const override { return vocab_; }
  std::vector<int32_t> eos_ids() const override { return {eos_}; }

 private:
  struct Req {
    RequestId id = 0;
    RequestOptions opt;
    TokenCallback cb;
    std::vector<int32_t> tokens;
    size_t next = 0;
    bool done = false;
  };
  void finish(Req& r, FinishReason reason, int32_t token) {
    TokenEvent e;
    e.id = r.id;
    e.token = token;
    e.index = static_cast<int64_t>(r.next) - 1;
    if (token >= 0 && r.opt.logprobs >= 0) {
      e.logprob = -0.25f;
      for (int64_t k = 0; k < r.opt.logprobs; ++k)
        e.top_logprobs.emplace_back(static_cast<int32_t>(token + k), -0.25f - k);
    }
    e.finished = reason != FinishReason::kNone;
    e.reason = reason;
    r.done = e.finished;
    r.cb(e);
  }
  void prune() {
    running_.erase(std::remove_if(running_.begin(), running_.end(), [](const Req& r) { return r.done; }),
                   running_.end());
  }

  int64_t max_model_len_, vocab_;
  int32_t eos_;
  std::mutex mu_;
  std::string refuse_penalties_, fail_;
  Script script_;
  std::vector<Req> running_;
  std::vector<RequestId> cancelled_;
  RequestId next_id_ = 1;
  std::atomic<bool> paused_{false}, quiescent_{true};
  std::atomic<int64_t> cancels_{0}, submitted_{0}, delay_ms_{0};
  SchedulerStats stats_;
};

}  // namespace dsv4::server::testing
