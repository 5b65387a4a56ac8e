#include "dsv4/graph/breakable_graph.h"

#include "dsv4/core/status.h"

namespace dsv4::graph {
namespace {

// Per-thread capture state: which graph this thread is capturing, and how deep inside eager regions it
// runs. Per thread because stream capture is per thread (thread-local capture mode): another thread's
// forward must neither break this capture nor be recorded into it.
struct CaptureTls {
  BreakableGraph* active = nullptr;
  int eager_depth = 0;
};
thread_local CaptureTls tls;

// Marks "inside an eager region" for the scope's lifetime, also when the region throws.
class EagerScope {
 public:
  EagerScope() { ++tls.eager_depth; }
  ~EagerScope() { --tls.eager_depth; }
  EagerScope(const EagerScope&) = delete;
  EagerScope& operator=(const EagerScope&) = delete;
};

}  // namespace

BreakableGraph::BreakableGraph(CaptureBackend& backend) : backend_(backend) {}

BreakableGraph::~BreakableGraph() {
  if (tls.active == this) tls.active = nullptr;  // defensive: capture() always resets it
}

BreakableGraph* BreakableGraph::current() { return tls.active; }
bool BreakableGraph::in_eager_region() { return tls.eager_depth > 0; }

void BreakableGraph::capture(void* stream, bool allow_breaks, const std::function<void()>& body) {
  DSV4_CHECK_ARG(!captured_ && items_.empty(), "BreakableGraph::capture: already captured; clear() it first");
  DSV4_CHECK_ARG(tls.active == nullptr, "nested BreakableGraph captures on one thread are not supported");
  DSV4_CHECK_ARG(tls.eager_depth == 0, "BreakableGraph::capture called from inside an eager region");
  stream_ = stream;
  allow_breaks_ = allow_breaks;

  // RAII: whatever happens inside body, this thread leaves the capture state clean.
  struct Guard {
    BreakableGraph& graph;
    bool committed = false;
    ~Guard() {
      if (!committed) {
        if (graph.segment_open_) graph.backend_.abort_capture(graph.stream_);
        graph.segment_open_ = false;
        graph.reset();
      }
      tls.active = nullptr;
    }
  } guard{*this};

  tls.active = this;
  begin_segment();
  body();
  end_segment();
  captured_ = true;
  guard.committed = true;
}

void BreakableGraph::add_eager(std::string name, std::function<void()> fn) {
  DSV4_INTERNAL_CHECK(tls.active == this && segment_open_ && allow_breaks_,
                      "add_eager outside a breakable capture of this graph");
  end_segment();
  {
    EagerScope inside;
    fn();  // once now, eagerly, on the stream: graphs captured later may read what it writes
  }
  items_.push_back({nullptr, std::move(fn), std::move(name)});
  begin_segment();
}

void BreakableGraph::begin_segment() {
  backend_.begin_capture(stream_);
  segment_open_ = true;
}

void BreakableGraph::end_segment() {
  segment_open_ = false;  // end_capture closes the capture even when it throws
  std::unique_ptr<ExecutableGraph> graph = backend_.end_capture(stream_);
  if (graph == nullptr) {
    ++num_empty_segments_;
    return;
  }
  items_.push_back({std::move(graph), nullptr, {}});
}

void BreakableGraph::replay() {
  DSV4_CHECK_ARG(captured_, "BreakableGraph::replay before a successful capture");
  for (Item& item : items_) {
    if (item.graph) {
      item.graph->launch(stream_);
    } else {
      EagerScope inside;  // eager_region calls made by the region run inline
      item.eager();
    }
  }
  ++num_replays_;
}

void BreakableGraph::clear() {
  DSV4_CHECK_ARG(tls.active != this, "BreakableGraph::clear during its own capture");
  reset();
}

void BreakableGraph::reset() {
  items_.clear();
  captured_ = false;
  num_empty_segments_ = 0;
  num_replays_ = 0;
}

int BreakableGraph::num_graphs() const {
  int n = 0;
  for (const Item& item : items_) n += item.graph ? 1 : 0;
  return n;
}

int BreakableGraph::num_eager_regions() const { return static_cast<int>(items_.size()) - num_graphs(); }

size_t BreakableGraph::num_nodes() const {
  size_t n = 0;
  for (const Item& item : items_) n += item.graph ? item.graph->num_nodes() : 0;
  return n;
}

std::vector<BreakableGraph::ItemInfo> BreakableGraph::items() const {
  std::vector<ItemInfo> out;
  out.reserve(items_.size());
  for (const Item& item : items_) {
    out.push_back(item.graph ? ItemInfo{ItemKind::kGraph, {}, item.graph->num_nodes()}
                             : ItemInfo{ItemKind::kEager, item.name, 0});
  }
  return out;
}

std::string BreakableGraph::layout() const {
  std::string out;
  for (const Item& item : items_) {
    if (!out.empty()) out += ' ';
    out += item.graph ? 'G' : 'E';
  }
  return out;
}

}  // namespace dsv4::graph
