#include "dsv4/server/engine_loop.h"

#include "dsv4/core/log.h"
#include "dsv4/core/status.h"

namespace dsv4::server {

// ---- RequestChannel ----

RequestChannel::Admission RequestChannel::wait_admission() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return admission_ != Admission::kPending; });
  return admission_;
}

std::vector<TokenEvent> RequestChannel::take(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return !events_.empty(); });
  std::vector<TokenEvent> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

bool RequestChannel::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

void RequestChannel::deliver(const TokenEvent& e) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    events_.push_back(e);
    finished_ = e.finished;
  }
  cv_.notify_all();
}

void RequestChannel::admit(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    id_ = id;
    if (admission_ == Admission::kPending) admission_ = Admission::kAccepted;
  }
  cv_.notify_all();
}

void RequestChannel::reject(const std::string& message, bool invalid) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    admission_ = Admission::kRejected;
    reject_message_ = message;
    reject_invalid_ = invalid;
    finished_ = true;
  }
  cv_.notify_all();
}

// ---- EngineLoop ----

EngineLoop::EngineLoop(Generator& generator)
    : gen_(generator),
      max_model_len_(generator.max_model_len()),
      vocab_size_(generator.vocab_size()),
      eos_ids_(generator.eos_ids()),
      stats_(generator.stats()) {
  thread_ = std::thread([this] { run(); });
}

EngineLoop::~EngineLoop() { stop(); }

std::shared_ptr<RequestChannel> EngineLoop::submit(std::vector<int32_t> prompt, RequestOptions options) {
  auto channel = std::make_shared<RequestChannel>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      channel->reject("the server is shutting down", /*invalid=*/false);
      return channel;
    }
    inbox_.push_back({std::move(prompt), std::move(options), channel});
  }
  cv_.notify_all();
  return channel;
}

void EngineLoop::cancel(const std::shared_ptr<RequestChannel>& channel) {
  {
    std::lock_guard<std::mutex> lock(channel->mu_);
    if (channel->finished_ || channel->cancel_requested_) return;
    channel->cancel_requested_ = true;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(channel);
  }
  cv_.notify_all();
}

void EngineLoop::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

SchedulerStats EngineLoop::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void EngineLoop::fail_all(const std::string& message) {
  for (auto& [id, ch] : live_) {
    TokenEvent e;
    e.id = id;
    e.finished = true;
    e.reason = FinishReason::kError;
    e.error = message;
    ch->deliver(e);
    try {
      gen_.cancel(id);
    } catch (const std::exception&) {
      // The generator is already failing; the request is answered with the error above.
    }
  }
  live_.clear();
}

void EngineLoop::run() {
  bool busy = false;
  while (true) {
    std::vector<Submission> inbox;
    std::vector<std::shared_ptr<RequestChannel>> cancels;
    bool stopping = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!busy) cv_.wait(lock, [&] { return stopping_ || !inbox_.empty() || !cancels_.empty(); });
      inbox.swap(inbox_);
      cancels.swap(cancels_);
      stopping = stopping_;
    }
    for (Submission& s : inbox) {
      if (stopping) {
        s.channel->reject("the server is shutting down", /*invalid=*/false);
        continue;
      }
      bool cancelled;
      {
        std::lock_guard<std::mutex> lock(s.channel->mu_);
        cancelled = s.channel->cancel_requested_;
      }
      if (cancelled) {
        s.channel->reject("cancelled before admission", /*invalid=*/false);
        continue;
      }
      std::shared_ptr<RequestChannel> ch = s.channel;
      try {
        const RequestId id = gen_.submit(std::move(s.prompt), s.options, [ch](const TokenEvent& e) { ch->deliver(e); });
        ch->admit(id);
        if (!ch->finished()) live_[id] = ch;
      } catch (const Error& e) {
        ch->reject(e.what(), e.code() == StatusCode::kInvalidArgument);
      } catch (const std::exception& e) {
        ch->reject(e.what(), /*invalid=*/false);
      }
    }
    for (const auto& ch : cancels) {
      RequestId id;
      {
        std::lock_guard<std::mutex> lock(ch->mu_);
        id = ch->id_;
      }
      if (id >= 0 && live_.count(id) && !ch->finished()) gen_.cancel(id);
    }
    if (stopping) {
      for (const auto& [id, ch] : live_) gen_.cancel(id);
    }
    if (!inbox.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      stats_ = gen_.stats();  // admissions show before the step that runs them ends
    }
    try {
      busy = gen_.step();
    } catch (const std::exception& e) {
      log_message(LogLevel::kError, std::string("engine step failed: ") + e.what());
      fail_all(std::string("the engine failed: ") + e.what());
      busy = false;
    }
    for (auto it = live_.begin(); it != live_.end();) it = it->second->finished() ? live_.erase(it) : std::next(it);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stats_ = gen_.stats();
    }
    if (stopping && !busy && gen_.idle()) {
      fail_all("the server shut down");  // anything the generator did not end itself
      return;
    }
  }
}

}  // namespace dsv4::server
