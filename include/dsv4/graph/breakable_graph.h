// BreakableGraph: a forward captured as CUDA graph segments with eager regions between them.
//
//   graph::eager_region(ctx, "attn.L3", [=, &meta] { attention_core(ctx.exec, meta, q, kv, out); });
//
// While a breakable capture is open on this thread, eager_region ends the current segment (stream capture
// -> instantiate), runs the region once, records it, and begins a new segment. Replay launches
// segment 0, runs eager region 0, launches segment 1, ... in order on the capture stream. Elsewhere the
// region runs inline: no capture open on this thread, a full-mode capture (the result is one graph), or a
// call from inside another eager region (nested regions make one break, not two).
//
// Rules for the region's callable (see docs/graphs.md):
//   - It runs again at every replay. Capture tensors (non-owning views: pointer, shape, strides) BY VALUE;
//     by reference only objects that outlive the graph (the runner's ForwardContext, the engine's step
//     metadata, layer weights). A `[&]` capture of forward-local variables dangles at replay.
//   - Per-step data (token count, positions, slots, lengths) is read from those long-lived objects when it
//     runs, so each replay sees that replay's metadata, not the capture's.
//   - It reads and writes only memory that existed at capture (arena / persistent buffers) and never
//     allocates a buffer that a later segment reads.
//   - It enqueues its work on ctx.exec.stream, the capture stream.
//   - At capture it runs on garbage: the kernels of the preceding segment were recorded, not executed.
//   - Host code outside eager regions runs once, at capture: a host branch on per-step data there is
//     frozen into the graph. Keep every metadata-dependent host decision inside an eager region.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsv4/core/status.h"
#include "dsv4/graph/capture_backend.h"
#include "dsv4/graph/forward_context.h"

namespace dsv4::graph {

class BreakableGraph {
 public:
  enum class ItemKind { kGraph, kEager };
  struct ItemInfo {
    ItemKind kind;
    std::string name;      // eager regions: the name given to eager_region
    size_t num_nodes = 0;  // graph segments: captured node count
  };

  explicit BreakableGraph(CaptureBackend& backend = cuda_capture_backend());
  ~BreakableGraph();
  // Not movable: the thread-local capture state points at the object while it captures.
  BreakableGraph(const BreakableGraph&) = delete;
  BreakableGraph& operator=(const BreakableGraph&) = delete;

  // Runs `body` once under stream capture on `stream` (never the legacy default stream). With
  // allow_breaks = false (full mode) eager regions run inline and are captured, giving one graph.
  // On any exception the open capture is aborted, everything recorded so far is dropped and the
  // thread-local state is reset, so the object (and the thread) can capture again.
  void capture(void* stream, bool allow_breaks, const std::function<void()>& body);
  // Launches the segments and runs the eager regions in capture order on the capture stream.
  void replay();
  // Releases every graph and eager region; the object can capture again.
  void clear();

  bool captured() const { return captured_; }
  bool breaks_enabled() const { return allow_breaks_; }
  void* stream() const { return stream_; }

  // Introspection (tests, debug logs).
  int num_graphs() const;
  int num_eager_regions() const;
  int num_empty_segments() const { return num_empty_segments_; }  // skipped, never instantiated
  size_t num_nodes() const;                                       // over all segments
  std::vector<ItemInfo> items() const;
  std::string layout() const;  // capture order, e.g. "G E G E G"
  int64_t num_replays() const { return num_replays_; }

  // The capture open on this thread, or nullptr.
  static BreakableGraph* current();
  // True while an eager region runs on this thread (at capture or at replay).
  static bool in_eager_region();

  // Called by eager_region while this graph captures with breaks enabled: ends the segment, runs `fn`
  // once, records it, begins the next segment.
  void add_eager(std::string name, std::function<void()> fn);

 private:
  struct Item {
    std::unique_ptr<ExecutableGraph> graph;  // set for a segment
    std::function<void()> eager;             // set for an eager region
    std::string name;
  };
  void begin_segment();
  void end_segment();
  void reset();

  CaptureBackend& backend_;
  std::vector<Item> items_;
  void* stream_ = nullptr;
  bool allow_breaks_ = true;
  bool captured_ = false;
  bool segment_open_ = false;
  int num_empty_segments_ = 0;
  int64_t num_replays_ = 0;
};

// Marks a region that must not be captured into a graph segment (see the rules above). `name` identifies
// it in logs and BreakableGraph::items().
template <typename Fn>
void eager_region(ForwardContext& ctx, std::string_view name, Fn&& fn) {
  BreakableGraph* graph = BreakableGraph::current();
  if (graph == nullptr || BreakableGraph::in_eager_region() || ctx.mode == GraphMode::kFull ||
      !graph->breaks_enabled()) {
    std::forward<Fn>(fn)();
    return;
  }
  DSV4_CHECK_ARG(ctx.exec.stream == graph->stream(), "eager region '", name,
                 "': the forward context's stream is not the capture stream");
  graph->add_eager(std::string(name), std::function<void()>(std::forward<Fn>(fn)));
}

}  // namespace dsv4::graph
