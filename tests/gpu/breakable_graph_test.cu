// BreakableGraph on real CUDA stream capture, with one-thread kernels on scalars so every result is exact.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "dsv4/core/buffer.h"
#include "dsv4/graph/breakable_graph.h"
#include "dsv4/graph/cuda_capture_backend.h"
#include "gpu/graph_test_util.h"
#include "gpu_test_util.h"

namespace dsv4::graph {
namespace {

using namespace gpu_test;

__global__ void add_kernel(float* x, float v) { *x += v; }
__global__ void mul_kernel(float* x, float v) { *x *= v; }
// Appends `id` to a device log: the order in which kernels really ran.
__global__ void append_kernel(int* log, int* count, int id) { log[atomicAdd(count, 1)] = id; }

void add(cudaStream_t s, float* x, float v) {
  add_kernel<<<1, 1, 0, s>>>(x, v);
  DSV4_CUDA_CHECK(cudaGetLastError());
}
void mul(cudaStream_t s, float* x, float v) {
  mul_kernel<<<1, 1, 0, s>>>(x, v);
  DSV4_CUDA_CHECK(cudaGetLastError());
}
void append(cudaStream_t s, int* log, int* count, int id) {
  append_kernel<<<1, 1, 0, s>>>(log, count, id);
  DSV4_CUDA_CHECK(cudaGetLastError());
}

// Each test copies the stream and device pointers into locals, so its eager regions capture them by value,
// as model code captures tensor views; a `[=]` on the fixture's members would capture `this` instead.
class BreakableGraphGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    DSV4_REQUIRE_GPU();
    stream_ = std::make_unique<TestStream>();
    s_ = stream_->get();
    memory_ = Buffer(4096, Device::kCUDA);
    x_ = static_cast<float*>(memory_.data());
    count_ = reinterpret_cast<int*>(static_cast<char*>(memory_.data()) + 256);
    log_ = count_ + 1;
    DSV4_CUDA_CHECK(cudaMemsetAsync(memory_.data(), 0, 4096, s_));
    ctx.exec.device = Device::kCUDA;
    ctx.exec.stream = s_;
    ctx.mode = GraphMode::kBreakable;
  }
  void set_x(float v) { write_scalar(s_, x_, v); }
  float get_x() { return read_scalar(s_, x_); }
  std::vector<int> read_log() {
    const int n = read_scalar(s_, count_);
    return read_vector(s_, log_, static_cast<size_t>(n));
  }
  void reset_log() { write_scalar(s_, count_, 0); }

  std::unique_ptr<TestStream> stream_;
  cudaStream_t s_ = nullptr;
  Buffer memory_;
  float* x_ = nullptr;
  int* count_ = nullptr;
  int* log_ = nullptr;
  ForwardContext ctx;
  BreakableGraph graph;  // the CUDA backend
};

TEST_F(BreakableGraphGpu, NoRegionGivesOneGraph) {
  cudaStream_t s = s_;
  float* x = x_;
  graph.capture(s, true, [&] {
    add(s, x, 1);
    mul(s, x, 3);
  });
  EXPECT_EQ(graph.layout(), "G");
  EXPECT_EQ(graph.num_nodes(), 2u);
  EXPECT_EQ(get_x(), 0.0f) << "capture records kernels, it does not run them";
  set_x(2);
  graph.replay();
  EXPECT_EQ(get_x(), 9.0f);
}

TEST_F(BreakableGraphGpu, TwoRegionsGiveGEGEGAndReplayInOrder) {
  cudaStream_t s = s_;
  int* log = log_;
  int* count = count_;
  std::vector<std::string> host_order;
  graph.capture(s, true, [&] {
    append(s, log, count, 0);
    eager_region(ctx, "A", [=, &host_order] {
      host_order.push_back("A");
      append(s, log, count, 1);
    });
    append(s, log, count, 2);
    eager_region(ctx, "B", [=, &host_order] {
      host_order.push_back("B");
      append(s, log, count, 3);
    });
    eager_region(ctx, "C", [&host_order] { host_order.push_back("C"); });  // host-only region
    append(s, log, count, 4);
  });
  EXPECT_EQ(graph.layout(), "G E G E E G");
  EXPECT_EQ(graph.num_graphs(), 3);
  EXPECT_EQ(graph.num_eager_regions(), 3);
  EXPECT_EQ(graph.num_empty_segments(), 1);  // between B and C
  EXPECT_EQ(read_log(), (std::vector<int>{1, 3})) << "at capture only the eager regions ran";
  EXPECT_EQ(host_order, (std::vector<std::string>{"A", "B", "C"}));

  reset_log();
  host_order.clear();
  graph.replay();
  EXPECT_EQ(read_log(), (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(host_order, (std::vector<std::string>{"A", "B", "C"}));
}

TEST_F(BreakableGraphGpu, PlainGEGEG) {
  cudaStream_t s = s_;
  float* x = x_;
  graph.capture(s, true, [&] {
    add(s, x, 1);
    eager_region(ctx, "e1", [=] { add(s, x, 1); });
    add(s, x, 1);
    eager_region(ctx, "e2", [=] { add(s, x, 1); });
    add(s, x, 1);
  });
  EXPECT_EQ(graph.layout(), "G E G E G");
  set_x(0);
  graph.replay();
  EXPECT_EQ(get_x(), 5.0f);
}

// vLLM's equivalence test: capture runs only the eager regions; replay runs everything.
TEST_F(BreakableGraphGpu, CaptureDoesNotExecuteSegmentsReplayDoes) {
  cudaStream_t s = s_;
  float* x = x_;
  graph.capture(s, true, [&] {
    add(s, x, 1);
    eager_region(ctx, "double", [=] { mul(s, x, 2); });
    add(s, x, 5);
  });
  EXPECT_EQ(get_x(), 0.0f);  // 0 * 2: only the eager region ran
  set_x(10);
  graph.replay();
  EXPECT_EQ(get_x(), 27.0f);
  set_x(100);
  graph.replay();
  EXPECT_EQ(get_x(), 207.0f);
}

TEST_F(BreakableGraphGpu, EagerRegionSeesTheReplaysMetadata) {
  cudaStream_t s = s_;
  float* x = x_;
  struct StepMetadata {
    float increment = 0;
  } meta;  // the engine's per-step metadata: long-lived, rewritten before every replay
  meta.increment = 1;
  graph.capture(s, true, [&] {
    add(s, x, 0);
    // Tensors by value, metadata by reference: the kernel argument is read when the region runs.
    eager_region(ctx, "attn", [=, &meta] { add(s, x, meta.increment); });
  });
  EXPECT_EQ(get_x(), 1.0f) << "at capture the region saw the capture's metadata";
  set_x(0);
  meta.increment = 5;
  graph.replay();
  EXPECT_EQ(get_x(), 5.0f);
  meta.increment = 7;
  graph.replay();
  EXPECT_EQ(get_x(), 12.0f);
}

TEST_F(BreakableGraphGpu, NestedRegionMakesOneBreak) {
  cudaStream_t s = s_;
  float* x = x_;
  graph.capture(s, true, [&] {
    add(s, x, 1);
    eager_region(ctx, "outer", [=, this] {
      mul(s, x, 10);
      eager_region(ctx, "inner", [=] { add(s, x, 3); });
    });
    add(s, x, 100);
  });
  EXPECT_EQ(graph.layout(), "G E G");
  set_x(0);
  graph.replay();
  EXPECT_EQ(get_x(), 113.0f);
}

TEST_F(BreakableGraphGpu, FullModeRunsRegionsInlineIntoOneGraph) {
  cudaStream_t s = s_;
  float* x = x_;
  ctx.mode = GraphMode::kFull;
  graph.capture(s, /*allow_breaks=*/false, [&] {
    add(s, x, 1);
    eager_region(ctx, "attn", [=] { mul(s, x, 2); });
    add(s, x, 5);
  });
  EXPECT_EQ(graph.layout(), "G");
  EXPECT_EQ(graph.num_nodes(), 3u);
  EXPECT_EQ(get_x(), 0.0f) << "the region was captured, not run";
  set_x(10);
  graph.replay();
  EXPECT_EQ(get_x(), 27.0f);
}

TEST_F(BreakableGraphGpu, ExceptionDuringCaptureResetsThreadState) {
  cudaStream_t s = s_;
  float* x = x_;
  EXPECT_THROW(graph.capture(s, true,
                             [&] {
                               add(s, x, 1);
                               throw std::runtime_error("forward failed");
                             }),
               std::runtime_error);
  EXPECT_EQ(BreakableGraph::current(), nullptr);
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusNone) << "the open capture was ended";
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);

  // A capture-unsafe call invalidates the CUDA capture: ending it fails, and the state is reset too.
  try {
    graph.capture(s, true, [&] {
      add(s, x, 1);
      EXPECT_NE(cudaStreamSynchronize(s), cudaSuccess);
      cudaGetLastError();  // this runtime's record of that error, so the next launch check stays clean
    });
    FAIL() << "an invalidated capture was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kCudaError) << e.what();
  }
  EXPECT_EQ(BreakableGraph::current(), nullptr);
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusNone);

  graph.capture(s, true, [&] {
    add(s, x, 1);
    eager_region(ctx, "e", [=] { mul(s, x, 2); });
  });
  EXPECT_EQ(graph.layout(), "G E");
  set_x(1);
  graph.replay();
  EXPECT_EQ(get_x(), 4.0f);
}

// The test seam of the CUDA backend: instantiation fails as if the device were out of memory.
class OutOfMemoryBackend : public CudaCaptureBackend {
 protected:
  cudaError_t instantiate(cudaGraphExec_t*, cudaGraph_t, cudaStream_t) override {
    return cudaErrorMemoryAllocation;
  }
};

TEST_F(BreakableGraphGpu, InstantiationFailureIsOutOfMemoryAndResets) {
  cudaStream_t s = s_;
  float* x = x_;
  OutOfMemoryBackend oom;
  BreakableGraph failing(oom);
  try {
    failing.capture(s, true, [&] {
      add(s, x, 1);
      eager_region(ctx, "e", [=] { add(s, x, 1); });
    });
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kOutOfMemory) << e.what();
  }
  EXPECT_EQ(BreakableGraph::current(), nullptr);
  EXPECT_FALSE(failing.captured());
  cudaStreamCaptureStatus status;
  ASSERT_EQ(cudaStreamIsCapturing(s, &status), cudaSuccess);
  EXPECT_EQ(status, cudaStreamCaptureStatusNone);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
}  // namespace dsv4::graph
