#include <algorithm>

#include "dsv4/core/log.h"
#include "dsv4/graph/graph_runner.h"
#include "graph/format.h"

namespace dsv4::graph {

GraphPool::GraphPool(Arena* activations, CaptureBackend& backend)
    : activations_(activations), backend_(backend) {}

GraphPool::~GraphPool() {
  // Runners keep a reference to their pool: destroying it first would leave them dangling.
  if (!runners_.empty()) log_message(LogLevel::kError, "GraphPool destroyed before its GraphRunners");
}

void GraphPool::begin_capture_window() {
  DSV4_CHECK_ARG(!window_open_, "the capture window is already open");
  window_open_ = true;
}

void GraphPool::end_capture_window() {
  window_open_ = false;
  log_info(totals().summary(), activations_
                                   ? ", activation arena high-water " + format_bytes(activation_bytes())
                                   : std::string());
}

std::vector<GraphRunnerStats> GraphPool::stats() const {
  std::vector<GraphRunnerStats> out;
  for (const GraphRunner* runner : runners_) out.push_back(runner->stats());
  return out;
}

GraphRunnerStats GraphPool::totals() const {
  GraphRunnerStats all;
  all.name = "all";
  for (const GraphRunnerStats& s : stats()) {
    all.entries.insert(all.entries.end(), s.entries.begin(), s.entries.end());
    all.num_captured += s.num_captured;
    all.num_failed += s.num_failed;
    all.capture_ms += s.capture_ms;
    all.graph_bytes += s.graph_bytes;
    all.replays += s.replays;
    all.eager_runs += s.eager_runs;
  }
  return all;
}

int64_t GraphPool::activation_bytes() const {
  return activations_ ? static_cast<int64_t>(activations_->high_water()) : 0;
}

void GraphPool::clear_all() {
  for (GraphRunner* runner : runners_) runner->clear();
}

void GraphPool::add_runner(GraphRunner* runner) { runners_.push_back(runner); }

void GraphPool::remove_runner(GraphRunner* runner) {
  runners_.erase(std::remove(runners_.begin(), runners_.end(), runner), runners_.end());
}

}  // namespace dsv4::graph
