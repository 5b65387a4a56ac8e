// A host emulation of CUDA stream capture, so the graph library's rules run in CPU-only CI.
//
// A FakeStream is a queue that either runs an enqueued host op at once or, while capturing, records it.
// end_capture turns the recording into a FakeGraph whose launch runs the ops again. Like CUDA, capture
// does not execute what it records. Instantiation can be made to fail, and every instantiated graph
// "uses" bytes_per_graph of device memory until it is destroyed, for the memory accounting tests.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/core/status.h"
#include "dsv4/graph/capture_backend.h"

namespace dsv4::graph::testing {

struct FakeStream {
  bool capturing = false;
  std::vector<std::function<void()>> recorded;
};

// "Launches" `op` on `stream`: runs it now, or records it when the stream captures.
inline void enqueue(void* stream, std::function<void()> op) {
  auto* s = static_cast<FakeStream*>(stream);
  if (s->capturing) {
    s->recorded.push_back(std::move(op));
  } else {
    op();
  }
}

class FakeCaptureBackend : public CaptureBackend {
 public:
  static constexpr size_t kBytesPerGraph = 1 << 20;

  // Backend calls in order: "begin", "end", "end(empty)", "abort", "sync", "instantiate failed".
  std::vector<std::string> calls;
  size_t memory_used = 0;
  int live_graphs = 0;
  // Evaluated for each non-empty segment; true makes instantiation fail with kOutOfMemory.
  std::function<bool()> fail_instantiate;

  void begin_capture(void* stream) override {
    auto* s = static_cast<FakeStream*>(stream);
    DSV4_INTERNAL_CHECK(!s->capturing, "begin_capture on a capturing stream");
    s->capturing = true;
    s->recorded.clear();
    calls.push_back("begin");
  }

  std::unique_ptr<ExecutableGraph> end_capture(void* stream) override {
    auto* s = static_cast<FakeStream*>(stream);
    DSV4_INTERNAL_CHECK(s->capturing, "end_capture without a capture");
    s->capturing = false;
    std::vector<std::function<void()>> ops = std::move(s->recorded);
    s->recorded.clear();
    if (ops.empty()) {
      calls.push_back("end(empty)");
      return nullptr;
    }
    if (fail_instantiate && fail_instantiate()) {
      calls.push_back("instantiate failed");
      fail(StatusCode::kOutOfMemory, "cudaGraphInstantiate: cudaErrorMemoryAllocation (injected)");
    }
    calls.push_back("end");
    return std::make_unique<Graph>(std::move(ops), this);
  }

  void abort_capture(void* stream) noexcept override {
    auto* s = static_cast<FakeStream*>(stream);
    s->capturing = false;
    s->recorded.clear();
    calls.push_back("abort");
  }

  void synchronize(void*) override { calls.push_back("sync"); }
  size_t device_memory_used() override { return memory_used; }

 private:
  class Graph final : public ExecutableGraph {
   public:
    Graph(std::vector<std::function<void()>> ops, FakeCaptureBackend* backend)
        : ops_(std::move(ops)), backend_(backend) {
      backend_->memory_used += kBytesPerGraph;
      ++backend_->live_graphs;
    }
    ~Graph() override {
      backend_->memory_used -= kBytesPerGraph;
      --backend_->live_graphs;
    }
    void launch(void* stream) override {
      for (const auto& op : ops_) enqueue(stream, op);
    }
    size_t num_nodes() const override { return ops_.size(); }

   private:
    std::vector<std::function<void()>> ops_;
    FakeCaptureBackend* backend_;
  };
};

}  // namespace dsv4::graph::testing
