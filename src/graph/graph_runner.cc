#include "dsv4/graph/graph_runner.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "dsv4/core/log.h"
#include "graph/format.h"

namespace dsv4::graph {
namespace {

std::string describe(const BatchDescriptor& b) {
  return str_cat(b.num_tokens_padded, b.uniform_decode ? " tokens (uniform decode)" : " tokens (mixed)");
}

}  // namespace

std::string GraphRunnerStats::summary() const {
  return str_cat("graphs[", name, "]: ", num_captured, " captured, ", num_failed, " failed (eager), capture ",
                 format_ms(capture_ms), ", graph memory ", format_bytes(graph_bytes));
}

GraphRunnerOptions GraphRunnerOptions::for_target(const GraphPolicy& policy, CaptureSizes sizes) {
  GraphRunnerOptions o;
  o.name = "target";
  o.uniform_decode_mode = policy.uniform_decode;
  o.mixed_mode = policy.mixed;
  o.sizes = std::move(sizes);
  return o;
}

GraphRunnerOptions GraphRunnerOptions::for_drafter(const GraphPolicy& policy, CaptureSizes sizes) {
  GraphRunnerOptions o;
  o.name = "drafter";
  o.uniform_decode_mode = policy.drafter;
  o.mixed_mode = policy.drafter;
  o.sizes = std::move(sizes);
  return o;
}

GraphRunner::GraphRunner(GraphPool& pool, GraphRunnerOptions options, ExecContext exec, ForwardFn forward)
    : pool_(pool), options_(std::move(options)), forward_(std::move(forward)) {
  DSV4_CHECK_ARG(forward_ != nullptr, "GraphRunner '", options_.name, "' needs a forward function");
  DSV4_CHECK_ARG(options_.warmup_runs >= 1, "GraphRunner '", options_.name, "': at least one warm-up run");
  ctx_.exec = exec;
  if (pool_.activations() != nullptr) ctx_.exec.scratch = pool_.activations();
  pool_.add_runner(this);
}

GraphRunner::~GraphRunner() { pool_.remove_runner(this); }

std::vector<std::pair<BatchDescriptor, GraphMode>> GraphRunner::planned_captures() const {
  std::vector<std::pair<BatchDescriptor, GraphMode>> plan;
  for (int size : options_.sizes.sizes()) {
    if (options_.mixed_mode != GraphMode::kNone) plan.push_back({{size, false}, options_.mixed_mode});
    // A uniform batch falls back to the mixed entry of its size: capture a separate uniform entry only
    // when its mode differs (e.g. full decode next to breakable prefill).
    if (options_.uniform_decode_mode != GraphMode::kNone &&
        options_.uniform_decode_mode != options_.mixed_mode) {
      plan.push_back({{size, true}, options_.uniform_decode_mode});
    }
  }
  if (options_.mixed_mode != GraphMode::kNone) {
    for (int size : options_.prefill_sizes.sizes()) {
      if (size > options_.sizes.max_size()) plan.push_back({{size, false}, options_.mixed_mode});
    }
  }
  std::stable_sort(plan.begin(), plan.end(), [](const auto& a, const auto& b) {
    const bool a_full = a.second == GraphMode::kFull, b_full = b.second == GraphMode::kFull;
    if (a_full != b_full) return !a_full;                          // breakable first
    return a.first.num_tokens_padded > b.first.num_tokens_padded;  // largest first
  });
  return plan;
}

void GraphRunner::capture_all() {
  DSV4_CHECK(pool_.capture_window_open(), kInternal, "GraphRunner '", options_.name,
             "': capture outside the start-up capture window (GraphPool::begin_capture_window)");
  for (const auto& [batch, mode] : planned_captures()) {
    if (entries_.count(batch) == 0) capture(batch, mode);
  }
  log_info(stats().summary());
}

void GraphRunner::prepare(const BatchDescriptor& batch, GraphMode mode, int num_tokens, ForwardPhase phase) {
  ctx_.batch = batch;
  ctx_.mode = mode;
  ctx_.num_tokens = num_tokens;
  ctx_.phase = phase;
  // Outside any capture: padding writes must not be recorded into a graph (they would overwrite the real
  // inputs of every later replay).
  if (padding_ && num_tokens < batch.num_tokens_padded) padding_(ctx_, batch, num_tokens);
}

void GraphRunner::run_forward(const BatchDescriptor& batch) {
  // Every forward starts at the same arena offset, so a shape gets the same addresses at every eager run,
  // warm-up and capture, and all shapes of all runners share the arena.
  std::optional<ArenaScope> scope;
  if (ctx_.exec.scratch != nullptr) scope.emplace(*ctx_.exec.scratch);
  forward_(ctx_, batch);
}

bool GraphRunner::capture(const BatchDescriptor& batch, GraphMode mode) {
  DSV4_CHECK(pool_.capture_window_open(), kInternal, "GraphRunner '", options_.name, "': capture of ",
             describe(batch), " outside the start-up capture window (GraphPool::begin_capture_window)");
  DSV4_CHECK_ARG(mode != GraphMode::kNone, "GraphRunner::capture needs mode breakable or full");
  const std::vector<int>& sizes = options_.sizes.sizes();
  const std::vector<int>& prefill = options_.prefill_sizes.sizes();
  DSV4_CHECK_ARG(std::binary_search(sizes.begin(), sizes.end(), batch.num_tokens_padded) ||
                     std::binary_search(prefill.begin(), prefill.end(), batch.num_tokens_padded),
                 "GraphRunner '", options_.name, "': ", batch.num_tokens_padded, " is not a capture size");
  DSV4_CHECK_ARG(entries_.count(batch) == 0, "GraphRunner '", options_.name, "': ", describe(batch),
                 " is already captured; clear() first");
  CaptureBackend& backend = pool_.backend();

  for (int i = 0; i < options_.warmup_runs; ++i) {
    prepare(batch, GraphMode::kNone, 0, ForwardPhase::kWarmup);
    run_forward(batch);
  }
  backend.synchronize(ctx_.exec.stream);

  Entry entry;
  entry.stats.batch = batch;
  entry.stats.mode = mode;
  const size_t memory_before = backend.device_memory_used();
  const auto start = std::chrono::steady_clock::now();
  prepare(batch, mode, 0, ForwardPhase::kCapture);
  auto graph = std::make_unique<BreakableGraph>(backend);
  try {
    graph->capture(ctx_.exec.stream, mode == GraphMode::kBreakable, [&] { run_forward(batch); });
    backend.synchronize(ctx_.exec.stream);  // eager regions ran during the capture
  } catch (const Error& e) {
    if (e.code() != StatusCode::kOutOfMemory && e.code() != StatusCode::kCudaError) throw;
    entry.stats.failure = e.what();
    log_warn("graphs[", options_.name, "]: capture of ", describe(batch), " as ", graph_mode_name(mode),
             " failed, that shape runs eagerly: ", e.what());
    entries_.emplace(batch, std::move(entry));
    capture_order_.push_back(batch);
    return false;
  }
  entry.stats.capture_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  entry.stats.graph_bytes =
      static_cast<int64_t>(backend.device_memory_used()) - static_cast<int64_t>(memory_before);
  entry.stats.captured = true;
  entry.stats.num_graphs = graph->num_graphs();
  entry.stats.num_eager_regions = graph->num_eager_regions();
  entry.stats.num_nodes = graph->num_nodes();
  log_debug("graphs[", options_.name, "]: captured ", describe(batch), " as ", graph_mode_name(mode), ": ",
            graph->layout(), " in ", entry.stats.capture_ms, " ms");
  entry.graph = std::move(graph);
  entries_.emplace(batch, std::move(entry));
  capture_order_.push_back(batch);
  return true;
}

const GraphRunner::Entry* GraphRunner::captured_entry(const BatchDescriptor& batch, GraphMode mode) const {
  const auto it = entries_.find(batch);
  if (it == entries_.end() || it->second.graph == nullptr || it->second.stats.mode != mode) return nullptr;
  return &it->second;
}

GraphRunner::Dispatch GraphRunner::dispatch(int num_tokens, bool uniform_decode) const {
  DSV4_CHECK_ARG(num_tokens >= 1, "GraphRunner '", options_.name, "': a forward needs >= 1 token, got ",
                 num_tokens);
  const std::optional<int> padded = options_.sizes.pad_to_bucket(num_tokens);
  if (!padded) {  // above the largest size: a prefill bucket that it (nearly) fills, or eager at its own size
    const std::optional<int> bucket = options_.prefill_sizes.pad_to_bucket(num_tokens);
    if (!bucket || *bucket - num_tokens > num_tokens / GraphRunnerOptions::kPrefillPadDivisor) {
      return {GraphMode::kNone, {num_tokens, uniform_decode}};
    }
    const BatchDescriptor prefill{*bucket, false};
    if (captured_entry(prefill, options_.mixed_mode)) return {options_.mixed_mode, prefill};
    return {GraphMode::kNone, options_.pad_eager_batches ? prefill : BatchDescriptor{num_tokens, uniform_decode}};
  }

  const BatchDescriptor exact{*padded, uniform_decode};
  const BatchDescriptor relaxed{*padded, false};  // a uniform batch is also a valid mixed batch
  for (GraphMode mode : {GraphMode::kFull, GraphMode::kBreakable}) {
    if (captured_entry(exact, mode)) return {mode, exact};
    if (uniform_decode && captured_entry(relaxed, mode)) return {mode, relaxed};
  }
  return {GraphMode::kNone, options_.pad_eager_batches ? exact : BatchDescriptor{num_tokens, uniform_decode}};
}

GraphRunner::Dispatch GraphRunner::run(int num_tokens, bool uniform_decode) {
  const Dispatch d = dispatch(num_tokens, uniform_decode);
  if (d.mode == GraphMode::kNone) {
    prepare(d.batch, GraphMode::kNone, num_tokens, ForwardPhase::kEager);
    run_forward(d.batch);
    ++eager_runs_;
    return d;
  }
  prepare(d.batch, d.mode, num_tokens, ForwardPhase::kReplay);
  Entry& entry = entries_.at(d.batch);
  entry.graph->replay();  // its eager regions read ctx_ (this step's num_tokens) now
  ++entry.stats.replays;
  return d;
}

void GraphRunner::clear() {
  entries_.clear();
  capture_order_.clear();
}

GraphRunnerStats GraphRunner::stats() const {
  GraphRunnerStats s;
  s.name = options_.name;
  s.eager_runs = eager_runs_;
  for (const BatchDescriptor& batch : capture_order_) {
    const GraphEntryStats& e = entries_.at(batch).stats;
    s.entries.push_back(e);
    (e.captured ? s.num_captured : s.num_failed) += 1;
    s.capture_ms += e.capture_ms;
    s.graph_bytes += e.graph_bytes;
    s.replays += e.replays;
  }
  return s;
}

const BreakableGraph* GraphRunner::graph(const BatchDescriptor& batch) const {
  const auto it = entries_.find(batch);
  return it == entries_.end() ? nullptr : it->second.graph.get();
}

}  // namespace dsv4::graph
