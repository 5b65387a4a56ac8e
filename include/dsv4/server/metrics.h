// Server metrics in Prometheus' text exposition format (GET /metrics). Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "dsv4/runtime/request.h"

namespace dsv4::server {

// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double x);
  // Lines "<name>_bucket{le="…"} n", "<name>_sum", "<name>_count".
  std::string render(const std::string& name) const;
  int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // per bucket, the last one +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  // A finished HTTP request: endpoint ("/v1/chat/completions", …) and status code.
  void request_done(const std::string& endpoint, int status);
  // A finished generation: the finish reason ("stop", "length", "tool_calls", "abort", "error").
  void generation_done(const std::string& finish_reason, int64_t prompt_tokens, int64_t generation_tokens);
  void time_to_first_token(double seconds);
  void time_per_output_token(double seconds);
  void request_latency(double seconds);
  // The Prometheus text, with the scheduler's gauges (running/waiting requests, KV pages, speculation) and the
  // server's queue depth.
  std::string render(const SchedulerStats& stats, int64_t queued_http_requests) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;
  std::map<std::string, int64_t> finished_;
  int64_t prompt_tokens_ = 0, generation_tokens_ = 0;
  Histogram ttft_, tpot_, latency_;
};

}  // namespace dsv4::server
