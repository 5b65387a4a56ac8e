// GraphRunner: wraps one model's forward (the target, or the MTP drafter) with captured graphs per batch
// shape. GraphPool: what the runners of one engine share (capture window, activation arena, accounting).
//
//   graph::GraphPool pool(&activations);                       // one per engine
//   graph::GraphRunner target(pool, graph::GraphRunnerOptions::for_target(policy, sizes), exec, fwd);
//   graph::GraphRunner drafter(pool, graph::GraphRunnerOptions::for_drafter(policy, draft_sizes), exec,
//   dfwd); pool.begin_capture_window();  target.capture_all();  drafter.capture_all();
//   pool.end_capture_window();
//   ...
//   write inputs + metadata into persistent buffers;  target.run(n, uniform_decode);  consume outputs
//
// Dispatch of a batch of n tokens: pad n to the smallest capture size s >= n; use a captured FULL entry
// ({s, uniform} first, then {s, mixed}), else a captured BREAKABLE entry, else run the forward eagerly.
// Above the largest capture size the forward runs eagerly on the unpadded batch.
//
// Memory: graphs are captured from raw stream capture, so they allocate nothing of their own apart from
// the executable graphs' small driver-side state. Every activation comes from the pool's arena, which is
// allocated before capture and rewound at the start of every forward: identical allocation sequences give
// identical addresses, so all entries of all runners (target and drafter) overlap in that one region, and
// a result left in it is valid only until the next forward of any runner. Results a caller keeps go to
// persistent buffers (allocated outside the arena); they hold the last run's output until the next run.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/core/arena.h"
#include "dsv4/graph/breakable_graph.h"
#include "dsv4/graph/buckets.h"
#include "dsv4/graph/capture_backend.h"
#include "dsv4/graph/forward_context.h"
#include "dsv4/graph/mode.h"

namespace dsv4::graph {

class GraphRunner;

struct GraphEntryStats {
  BatchDescriptor batch;
  GraphMode mode = GraphMode::kNone;  // the mode it was captured in
  bool captured = false;              // false: the capture failed and this shape runs eagerly
  std::string failure;                // why the capture failed
  double capture_ms = 0;              // capture + instantiate + upload, warm-up excluded
  int64_t graph_bytes = 0;            // device memory in use after minus before (cudaMemGetInfo)
  int num_graphs = 0;
  int num_eager_regions = 0;
  size_t num_nodes = 0;
  int64_t replays = 0;
};

struct GraphRunnerStats {
  std::string name;
  std::vector<GraphEntryStats> entries;  // in capture order
  int num_captured = 0;
  int num_failed = 0;
  double capture_ms = 0;
  int64_t graph_bytes = 0;
  int64_t replays = 0;
  int64_t eager_runs = 0;
  std::string summary() const;  // one line
};

class GraphPool {
 public:
  // `activations`: the arena every forward of every runner allocates from (nullptr: the forward manages its
  // memory itself). `backend`: the CUDA backend, or a test double.
  explicit GraphPool(Arena* activations = nullptr, CaptureBackend& backend = cuda_capture_backend());
  ~GraphPool();
  GraphPool(const GraphPool&) = delete;
  GraphPool& operator=(const GraphPool&) = delete;

  // Captures happen only between these calls (engine start-up). A capture outside is an error, so a batch
  // shape that was not captured at start-up never triggers a slow capture in the middle of serving.
  void begin_capture_window();
  void end_capture_window();
  bool capture_window_open() const { return window_open_; }

  Arena* activations() const { return activations_; }
  CaptureBackend& backend() const { return backend_; }

  // Per runner, in registration order.
  std::vector<GraphRunnerStats> stats() const;
  // Totals over every runner ("all"), plus the arena's high-water mark.
  GraphRunnerStats totals() const;
  int64_t activation_bytes() const;
  // Drops every runner's graphs (shutdown, before freeing the arena, or to re-capture in a new window).
  void clear_all();

 private:
  friend class GraphRunner;
  void add_runner(GraphRunner* runner);
  void remove_runner(GraphRunner* runner);

  Arena* activations_;
  CaptureBackend& backend_;
  bool window_open_ = false;
  std::vector<GraphRunner*> runners_;
};

struct GraphRunnerOptions {
  std::string name = "model";
  GraphMode uniform_decode_mode = GraphMode::kNone;  // entries {s, uniform_decode = true}
  GraphMode mixed_mode = GraphMode::kNone;           // entries {s, uniform_decode = false}
  CaptureSizes sizes;
  // Prefill buckets above `sizes`, captured in mixed mode only: a batch of n tokens above sizes' largest pads to
  // the smallest of them >= n when that adds at most n / kPrefillPadDivisor rows (a scheduler filling
  // --max-batch-tokens hits one exactly), and otherwise runs eagerly at n. Large prefill forwards gain little from
  // a graph on the device side but much on the host side (hundreds of eager launches per step).
  CaptureSizes prefill_sizes;
  static constexpr int kPrefillPadDivisor = 16;
  int warmup_runs = 1;  // eager runs of the same shape before each capture
  // Run eager batches inside the capture range at the padded size too, so each shape runs the same
  // kernels with the same shapes whether it replays a graph or not (bit-identical results across modes).
  bool pad_eager_batches = true;

  // The target's policy: uniform decode and mixed batches as the policy says.
  static GraphRunnerOptions for_target(const GraphPolicy& policy, CaptureSizes sizes);
  // The drafter's: every step in policy.drafter mode.
  static GraphRunnerOptions for_drafter(const GraphPolicy& policy, CaptureSizes sizes);
};

class GraphRunner {
 public:
  using ForwardFn = std::function<void(ForwardContext&, const BatchDescriptor&)>;
  // Writes safe values (position 0, slot -1, length 0, ...) into rows [num_tokens, batch.num_tokens_padded)
  // of the persistent input buffers, on ctx.exec.stream. Called before a padded replay or eager run, and
  // with num_tokens = 0 (every row is padding) before each warm-up and capture.
  using PaddingFn = std::function<void(ForwardContext&, const BatchDescriptor& batch, int num_tokens)>;

  struct Dispatch {
    GraphMode mode = GraphMode::kNone;  // kNone: eager
    BatchDescriptor batch;              // the entry replayed, or the shape the eager forward runs with
    bool operator==(const Dispatch&) const = default;
  };

  // `exec.stream` must be a non-default stream. The runner owns the ForwardContext it passes to `forward`;
  // if the pool has an arena, ctx.exec.scratch is that arena.
  GraphRunner(GraphPool& pool, GraphRunnerOptions options, ExecContext exec, ForwardFn forward);
  ~GraphRunner();
  GraphRunner(const GraphRunner&) = delete;
  GraphRunner& operator=(const GraphRunner&) = delete;

  void set_padding_hook(PaddingFn padding) { padding_ = std::move(padding); }

  // The (batch, mode) pairs capture_all() captures, in order: breakable entries before full ones (as vLLM:
  // piecewise first), each largest first.
  std::vector<std::pair<BatchDescriptor, GraphMode>> planned_captures() const;
  // Warms up, then captures every planned entry. Requires the pool's capture window.
  void capture_all();
  // Warms up (options.warmup_runs eager runs, then a synchronize) and captures one entry. A capture that
  // fails with an out-of-memory or CUDA error is logged as a warning and leaves that shape eager (returns
  // false); other errors propagate. Throws outside the capture window.
  bool capture(const BatchDescriptor& batch, GraphMode mode);

  // Which entry (or eager shape) a batch of num_tokens would use. Pure: runs nothing.
  Dispatch dispatch(int num_tokens, bool uniform_decode) const;
  // Runs one forward of num_tokens real tokens whose inputs and per-step metadata the caller has already
  // written: fills the padding rows, then replays the entry or runs the forward eagerly. Results are in
  // the caller's persistent output buffers, valid until the next run.
  Dispatch run(int num_tokens, bool uniform_decode);

  // Releases every graph of this runner; capture_all() may run again in a new window.
  void clear();

  ForwardContext& context() { return ctx_; }
  const GraphRunnerOptions& options() const { return options_; }
  GraphRunnerStats stats() const;
  const BreakableGraph* graph(const BatchDescriptor& batch) const;  // nullptr if none captured

 private:
  struct Entry {
    GraphEntryStats stats;
    std::unique_ptr<BreakableGraph> graph;  // null when the capture failed
  };
  const Entry* captured_entry(const BatchDescriptor& batch, GraphMode mode) const;
  void prepare(const BatchDescriptor& batch, GraphMode mode, int num_tokens, ForwardPhase phase);
  void run_forward(const BatchDescriptor& batch);

  GraphPool& pool_;
  GraphRunnerOptions options_;
  ForwardFn forward_;
  PaddingFn padding_;
  ForwardContext ctx_;
  std::map<BatchDescriptor, Entry> entries_;
  std::vector<BatchDescriptor> capture_order_;
  int64_t eager_runs_ = 0;
};

}  // namespace dsv4::graph
