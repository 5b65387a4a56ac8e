// The engine thread: the only thread that touches the Generator. It loops step(), and between steps drains an
// inbox of submissions and cancellations that HTTP handler threads post. Each request's events reach its
// handler through a RequestChannel (a mutex-protected queue with a condition variable).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dsv4/server/generator.h"

namespace dsv4::server {

class RequestChannel {
 public:
  enum class Admission { kPending, kAccepted, kRejected };
  // Blocks until the engine thread admitted or rejected the request.
  Admission wait_admission();
  const std::string& reject_message() const { return reject_message_; }
  bool rejected_as_invalid() const { return reject_invalid_; }  // a kInvalidArgument rejection (client error)
  // Waits up to `timeout` for events and takes them (empty on timeout).
  std::vector<TokenEvent> take(std::chrono::milliseconds timeout);
  bool finished() const;

 private:
  friend class EngineLoop;
  void deliver(const TokenEvent& e);
  void admit(RequestId id);
  void reject(const std::string& message, bool invalid);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TokenEvent> events_;
  Admission admission_ = Admission::kPending;
  std::string reject_message_;
  bool reject_invalid_ = false;
  bool finished_ = false;
  RequestId id_ = -1;
  bool cancel_requested_ = false;
};

class EngineLoop {
 public:
  explicit EngineLoop(Generator& generator);
  ~EngineLoop();
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Posts a submission to the engine thread; the channel reports admission, then the request's events.
  std::shared_ptr<RequestChannel> submit(std::vector<int32_t> prompt, RequestOptions options);
  // Cancels a request (before or after admission); its channel gets a final kCancelled event unless it ended.
  void cancel(const std::shared_ptr<RequestChannel>& channel);
  // Cancels every request and ends the thread once the generator is idle.
  void stop();
  // The scheduler's statistics after the last step.
  SchedulerStats stats() const;
  int64_t max_model_len() const { return max_model_len_; }
  int64_t vocab_size() const { return vocab_size_; }
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }

 private:
  struct Submission {
    std::vector<int32_t> prompt;
    RequestOptions options;
    std::shared_ptr<RequestChannel> channel;
  };
  void run();
  void fail_all(const std::string& message);

  Generator& gen_;
  const int64_t max_model_len_, vocab_size_;
  const std::vector<int32_t> eos_ids_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Submission> inbox_;
  std::vector<std::shared_ptr<RequestChannel>> cancels_;
  bool stopping_ = false;
  SchedulerStats stats_;
  std::map<RequestId, std::shared_ptr<RequestChannel>> live_;  // engine thread only
  std::thread thread_;
};

}  // namespace dsv4::server
