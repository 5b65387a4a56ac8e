#include "dsv4/server/metrics.h"

#include <cstdio>
#include <sstream>

namespace dsv4::server {
namespace {

std::string number(double x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", x);
  return buf;
}

void header(std::ostringstream& os, const std::string& name, const char* type, const char* help) {
  os << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double x) {
  size_t i = 0;
  while (i < bounds_.size() && x > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += x;
  ++count_;
}

std::string Histogram::render(const std::string& name) const {
  std::ostringstream os;
  int64_t acc = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    acc += counts_[i];
    os << name << "_bucket{le=\"" << number(bounds_[i]) << "\"} " << acc << '\n';
  }
  os << name << "_bucket{le=\"+Inf\"} " << count_ << '\n';
  os << name << "_sum " << number(sum_) << '\n' << name << "_count " << count_ << '\n';
  return os.str();
}

Metrics::Metrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}),
      tpot_({0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
             0.075, 0.1,    0.15,  0.2,  0.3,   0.4,  0.5,   0.75, 1,    2.5}),
      latency_({0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320}) {}

void Metrics::request_done(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{endpoint, status}];
}

void Metrics::generation_done(const std::string& reason, int64_t prompt_tokens, int64_t generation_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  ++finished_[reason];
  prompt_tokens_ += prompt_tokens;
  generation_tokens_ += generation_tokens;
}

void Metrics::time_to_first_token(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.observe(s);
}

void Metrics::time_per_output_token(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  tpot_.observe(s);
}

void Metrics::request_latency(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  latency_.observe(s);
}

std::string Metrics::render(const SchedulerStats& st, int64_t queued) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::ostringstream os;
  header(os, "dsv4_http_requests_total", "counter", "HTTP requests by endpoint and status code.");
  for (const auto& [key, n] : requests_) {
    os << "dsv4_http_requests_total{endpoint=\"" << key.first << "\",status=\"" << key.second << "\"} " << n << '\n';
  }
  header(os, "dsv4_request_success_total", "counter", "Finished generations by finish reason.");
  for (const auto& [reason, n] : finished_)
    os << "dsv4_request_success_total{finish_reason=\"" << reason << "\"} " << n << '\n';
  header(os, "dsv4_prompt_tokens_total", "counter", "Prompt tokens of finished generations.");
  os << "dsv4_prompt_tokens_total " << prompt_tokens_ << '\n';
  header(os, "dsv4_generation_tokens_total", "counter", "Generated tokens of finished generations.");
  os << "dsv4_generation_tokens_total " << generation_tokens_ << '\n';
  header(os, "dsv4_time_to_first_token_seconds", "histogram", "Time from arrival to the first generated token.");
  os << ttft_.render("dsv4_time_to_first_token_seconds");
  header(os, "dsv4_time_per_output_token_seconds", "histogram", "Time between generated tokens after the first.");
  os << tpot_.render("dsv4_time_per_output_token_seconds");
  header(os, "dsv4_e2e_request_latency_seconds", "histogram", "Time from arrival to the last token.");
  os << latency_.render("dsv4_e2e_request_latency_seconds");
  header(os, "dsv4_num_requests_running", "gauge", "Requests in the engine's batch.");
  os << "dsv4_num_requests_running " << st.running << '\n';
  header(os, "dsv4_num_requests_waiting", "gauge", "Requests queued in the engine (preempted ones included).");
  os << "dsv4_num_requests_waiting " << st.waiting << '\n';
  header(os, "dsv4_num_requests_in_server", "gauge", "Generation requests the server holds (queue bound: 429 beyond).");
  os << "dsv4_num_requests_in_server " << queued << '\n';
  header(os, "dsv4_kv_pages_used", "gauge", "State pages in use.");
  os << "dsv4_kv_pages_used " << st.pages_used << '\n';
  header(os, "dsv4_kv_pages_total", "gauge", "State pages in the pool.");
  os << "dsv4_kv_pages_total " << st.pages_total << '\n';
  header(os, "dsv4_kv_cache_usage_ratio", "gauge", "Share of the state pool in use.");
  os << "dsv4_kv_cache_usage_ratio " << number(st.pages_total ? double(st.pages_used) / double(st.pages_total) : 0.0)
     << '\n';
  header(os, "dsv4_num_preemptions_total", "counter", "Sequences preempted (pages freed, recomputed later).");
  os << "dsv4_num_preemptions_total " << st.preemptions << '\n';
  header(os, "dsv4_scheduler_steps_total", "counter", "Scheduler steps run.");
  os << "dsv4_scheduler_steps_total " << st.steps << '\n';
  header(os, "dsv4_scheduler_prefill_steps_total", "counter", "Scheduler steps that carried prompt chunks.");
  os << "dsv4_scheduler_prefill_steps_total " << st.prefill_steps << '\n';
  header(os, "dsv4_scheduler_prompt_steps_fitted_total", "counter",
         "Of the steps with prompt chunks: trimmed to a size whose forward replays a graph (DSV4_PROMPT_STEP_GRAPHS).");
  os << "dsv4_scheduler_prompt_steps_fitted_total " << st.prompt_steps_fitted << '\n';
  header(os, "dsv4_scheduler_step_seconds_total", "counter",
         "Wall time of scheduler steps by kind (prefill: steps with prompt chunks; decode: the others).");
  os << "dsv4_scheduler_step_seconds_total{kind=\"prefill\"} " << number(st.prefill_seconds) << '\n';
  os << "dsv4_scheduler_step_seconds_total{kind=\"decode\"} " << number(st.decode_seconds) << '\n';
  header(os, "dsv4_scheduler_prefill_wait_seconds_total", "counter",
         "Of the prefill steps' time: waiting for the device (the rest is host work).");
  os << "dsv4_scheduler_prefill_wait_seconds_total " << number(st.prefill_wait_seconds) << '\n';
  header(os, "dsv4_spec_decode_num_drafts_total", "counter", "Speculative verification steps.");
  os << "dsv4_spec_decode_num_drafts_total " << st.draft_steps << '\n';
  header(os, "dsv4_spec_decode_num_draft_tokens_total", "counter", "Draft tokens proposed.");
  os << "dsv4_spec_decode_num_draft_tokens_total " << st.drafted_tokens << '\n';
  header(os, "dsv4_spec_decode_num_accepted_tokens_total", "counter", "Draft tokens accepted.");
  os << "dsv4_spec_decode_num_accepted_tokens_total " << st.accepted_tokens << '\n';
  header(os, "dsv4_spec_decode_acceptance_rate", "gauge", "Accepted / proposed draft tokens since start.");
  os << "dsv4_spec_decode_acceptance_rate "
     << number(st.drafted_tokens ? double(st.accepted_tokens) / double(st.drafted_tokens) : 0.0) << '\n';
  return os.str();
}

}  // namespace dsv4::server
