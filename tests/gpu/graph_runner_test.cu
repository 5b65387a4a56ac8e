// GraphRunner on real CUDA graphs, wrapping a toy "model" shaped like the real one: a captured kernel, an
// eager region that reads per-step metadata (the attention core's place), another captured kernel, with
// activations in the shared arena and inputs/outputs in persistent buffers.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "dsv4/core/arena.h"
#include "dsv4/core/buffer.h"
#include "dsv4/graph/cuda_capture_backend.h"
#include "dsv4/graph/graph_runner.h"
#include "gpu/graph_test_util.h"
#include "gpu_test_util.h"

namespace dsv4::graph {
namespace {

using namespace gpu_test;

constexpr int kMaxTokens = 512;

__global__ void scale_kernel(const float* x, float* h, int rows) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < rows) h[i] = 2.0f * x[i];
}
// The "attention" stand-in: real rows get + num_tokens, read from a device buffer (valid in full graphs).
__global__ void add_tokens_kernel(const float* h, float* y, const int* num_tokens, int rows) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int n = *num_tokens;
  if (i < rows) y[i] = h[i] + (i < n ? static_cast<float>(n) : 0.0f);
}
__global__ void add_one_kernel(float* y, int rows) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < rows) y[i] += 1.0f;
}
__global__ void store_kernel(int* dst, int value) { *dst = value; }

unsigned blocks(int rows) { return static_cast<unsigned>((rows + 127) / 128); }

// Persistent buffers (allocated once, fixed addresses): inputs x and the step's token count, output y, and a
// probe recording the host-side ctx.num_tokens an eager region saw.
struct ToyModel {
  Buffer memory{2 * kMaxTokens * sizeof(float) + 512, Device::kCUDA};
  float* x = static_cast<float*>(memory.data());
  float* y = x + kMaxTokens;
  int* num_tokens = reinterpret_cast<int*>(y + kMaxTokens);
  int* host_probe = num_tokens + 32;

  void forward(ForwardContext& ctx, const BatchDescriptor& batch) {
    const int rows = batch.num_tokens_padded;
    cudaStream_t s = static_cast<cudaStream_t>(ctx.exec.stream);
    float* h = ctx.exec.scratch->alloc(DType::F32, {rows}).ptr<float>();  // activation: shared arena
    float* x_ = x;
    float* y_ = y;
    int* n_ = num_tokens;
    int* probe = host_probe;
    scale_kernel<<<blocks(rows), 128, 0, s>>>(x_, h, rows);
    DSV4_CUDA_CHECK(cudaGetLastError());
    eager_region(ctx, "attn", [=, &ctx] {
      add_tokens_kernel<<<blocks(rows), 128, 0, s>>>(h, y_, n_, rows);
      DSV4_CUDA_CHECK(cudaGetLastError());
      // Host metadata: fresh at every breakable replay, frozen at capture in a full graph.
      store_kernel<<<1, 1, 0, s>>>(probe, ctx.num_tokens);
      DSV4_CUDA_CHECK(cudaGetLastError());
    });
    add_one_kernel<<<blocks(rows), 128, 0, s>>>(y_, rows);
    DSV4_CUDA_CHECK(cudaGetLastError());
  }

  // What the engine does before a run: write the real rows' inputs and the per-step metadata.
  void write_step(cudaStream_t s, const std::vector<float>& xs) {
    DSV4_CUDA_CHECK(cudaMemcpyAsync(x, xs.data(), xs.size() * sizeof(float), cudaMemcpyHostToDevice, s));
    write_scalar(s, num_tokens, static_cast<int>(xs.size()));
  }
  // Padding rows get a safe input (0); the runner calls this before padded runs, warm-ups and captures.
  void pad(ForwardContext& ctx, const BatchDescriptor& batch, int n) {
    DSV4_CUDA_CHECK(cudaMemsetAsync(x + n, 0, (batch.num_tokens_padded - n) * sizeof(float),
                                    static_cast<cudaStream_t>(ctx.exec.stream)));
  }
};

class GraphRunnerGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    DSV4_REQUIRE_GPU();
    stream_ = std::make_unique<TestStream>();
    exec.device = Device::kCUDA;
    exec.stream = stream_->get();
    arena_ = std::make_unique<Arena>("activations", 1 << 20, Device::kCUDA);
    model_ = std::make_unique<ToyModel>();
  }
  cudaStream_t stream() const { return stream_->get(); }

  std::unique_ptr<GraphRunner> make_runner(GraphPool& pool, GraphRunnerOptions options) {
    ToyModel* model = model_.get();
    auto runner = std::make_unique<GraphRunner>(
        pool, std::move(options), exec,
        [model](ForwardContext& ctx, const BatchDescriptor& batch) { model->forward(ctx, batch); });
    runner->set_padding_hook(
        [model](ForwardContext& ctx, const BatchDescriptor& batch, int n) { model->pad(ctx, batch, n); });
    return runner;
  }
  static GraphRunnerOptions options(const char* name, GraphMode uniform, GraphMode mixed, int max_size = 64) {
    GraphRunnerOptions o;
    o.name = name;
    o.uniform_decode_mode = uniform;
    o.mixed_mode = mixed;
    o.sizes = CaptureSizes(CaptureSizeOptions{{}, max_size, 0});
    return o;
  }

  struct Result {
    GraphRunner::Dispatch dispatch;
    std::vector<float> y;  // all padded rows
    int probe = -1;
  };
  Result run(GraphRunner& runner, const std::vector<float>& xs, bool uniform) {
    model_->write_step(stream(), xs);
    Result r;
    r.dispatch = runner.run(static_cast<int>(xs.size()), uniform);
    r.y = read_vector(stream(), model_->y, static_cast<size_t>(r.dispatch.batch.num_tokens_padded));
    r.probe = read_scalar(stream(), model_->host_probe);
    return r;
  }

  std::unique_ptr<TestStream> stream_;
  ExecContext exec;
  std::unique_ptr<Arena> arena_;
  std::unique_ptr<ToyModel> model_;
};

std::vector<float> random_inputs(std::mt19937& rng, int n) {
  std::normal_distribution<float> dist(0.0f, 10.0f);
  std::vector<float> xs(static_cast<size_t>(n));
  for (float& v : xs) v = dist(rng);
  return xs;
}

TEST_F(GraphRunnerGpu, EagerBreakableAndFullAreBitIdentical) {
  GraphPool pool(arena_.get());  // one pool (arena + window) for all four runners
  auto eager = make_runner(pool, options("eager", GraphMode::kNone, GraphMode::kNone));
  auto breakable = make_runner(pool, options("breakable", GraphMode::kBreakable, GraphMode::kBreakable));
  auto full = make_runner(pool, options("full", GraphMode::kFull, GraphMode::kFull));
  auto dsv4_default = make_runner(pool, options("default", GraphMode::kFull, GraphMode::kBreakable));
  pool.begin_capture_window();
  for (GraphRunner* r : {eager.get(), breakable.get(), full.get(), dsv4_default.get()}) r->capture_all();
  pool.end_capture_window();
  EXPECT_EQ(dsv4_default->stats().num_captured, 22);  // 11 sizes, breakable mixed + full uniform
  EXPECT_EQ(dsv4_default->graph({8, false})->layout(), "G E G");
  EXPECT_EQ(dsv4_default->graph({8, true})->layout(), "G");

  std::mt19937 rng(42);
  for (int n : {1, 3, 8, 13, 64, 65, 200}) {
    for (bool uniform : {false, true}) {
      SCOPED_TRACE(str_cat("n=", n, " uniform=", uniform));
      const std::vector<float> xs = random_inputs(rng, n);
      const Result ref = run(*eager, xs, uniform);
      EXPECT_EQ(ref.dispatch.mode, GraphMode::kNone);
      for (int i = 0; i < n; ++i) {
        ASSERT_EQ(ref.y[i], (2.0f * xs[i] + static_cast<float>(n)) + 1.0f) << i;
      }
      EXPECT_EQ(ref.probe, n);
      for (GraphRunner* r : {breakable.get(), full.get(), dsv4_default.get()}) {
        const Result got = run(*r, xs, uniform);
        SCOPED_TRACE(str_cat(r->options().name, " ran as ", graph_mode_name(got.dispatch.mode)));
        EXPECT_EQ(got.dispatch.batch.num_tokens_padded, ref.dispatch.batch.num_tokens_padded);
        EXPECT_EQ(std::memcmp(got.y.data(), ref.y.data(), n * sizeof(float)), 0) << "real rows differ";
        for (size_t i = n; i < got.y.size(); ++i) ASSERT_EQ(got.y[i], 1.0f) << "padding row " << i;
        // The host-side count an eager region read: the replay's under breakable graphs, the capture's (0,
        // all padding) under a full graph. Full-graph kernels must read metadata from device buffers.
        EXPECT_EQ(got.probe, got.dispatch.mode == GraphMode::kFull ? 0 : n);
      }
      const GraphMode expected_default = n > 64    ? GraphMode::kNone
                                         : uniform ? GraphMode::kFull
                                                   : GraphMode::kBreakable;
      EXPECT_EQ(dsv4_default->dispatch(n, uniform).mode, expected_default);
    }
  }
}

TEST_F(GraphRunnerGpu, CaptureOutsideTheWindowIsAnError) {
  GraphPool pool(arena_.get());
  auto runner = make_runner(pool, options("target", GraphMode::kFull, GraphMode::kBreakable, 8));
  EXPECT_THROW(runner->capture_all(), Error);
  pool.begin_capture_window();
  runner->capture_all();
  pool.end_capture_window();
  EXPECT_THROW(runner->capture({8, false}, GraphMode::kBreakable), Error);
  pool.clear_all();
  EXPECT_THROW(runner->capture_all(), Error) << "even after clear(), only inside a window";
}

// The CUDA backend with instantiation failing (cudaErrorMemoryAllocation) while `fail_when` holds.
class FailingBackend : public CudaCaptureBackend {
 public:
  std::function<bool()> fail_when;

 protected:
  cudaError_t instantiate(cudaGraphExec_t* exec, cudaGraph_t graph, cudaStream_t stream) override {
    if (fail_when && fail_when()) return cudaErrorMemoryAllocation;
    return CudaCaptureBackend::instantiate(exec, graph, stream);
  }
};

TEST_F(GraphRunnerGpu, InstantiationOutOfMemoryLeavesThatSizeEager) {
  FailingBackend backend;
  GraphPool pool(arena_.get(), backend);
  auto runner = make_runner(pool, options("target", GraphMode::kFull, GraphMode::kBreakable, 8));
  backend.fail_when = [&] { return runner->context().batch.num_tokens_padded == 4; };
  pool.begin_capture_window();
  EXPECT_NO_THROW(runner->capture_all());
  pool.end_capture_window();
  const GraphRunnerStats stats = runner->stats();
  EXPECT_EQ(stats.num_failed, 2);  // {4, mixed} and {4, uniform}
  EXPECT_EQ(stats.num_captured, 6);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);

  std::mt19937 rng(7);
  const std::vector<float> xs = random_inputs(rng, 3);
  const Result r = run(*runner, xs, true);
  EXPECT_EQ(r.dispatch.mode, GraphMode::kNone);
  EXPECT_EQ(r.dispatch.batch.num_tokens_padded, 4);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(r.y[i], (2.0f * xs[i] + 3.0f) + 1.0f);
  EXPECT_EQ(run(*runner, random_inputs(rng, 5), true).dispatch.mode, GraphMode::kFull);
  EXPECT_EQ(run(*runner, random_inputs(rng, 2), false).dispatch.mode, GraphMode::kBreakable);
}

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

TEST_F(GraphRunnerGpu, TenThousandReplaysKeepDeviceMemoryFlat) {
  GraphPool pool(arena_.get());
  // Target (DeepSeek-V4 default: full decode, breakable mixed, every size up to 256) and a drafter (full),
  // both on the one pool.
  auto target = make_runner(pool, options("target", GraphMode::kFull, GraphMode::kBreakable, 256));
  auto drafter = make_runner(pool, options("drafter", GraphMode::kFull, GraphMode::kFull, 64));
  const size_t before_capture = device_memory_used();
  pool.begin_capture_window();
  target->capture_all();
  drafter->capture_all();
  pool.end_capture_window();
  const size_t after_capture = device_memory_used();

  std::mt19937 rng(3);
  const std::vector<float> xs = random_inputs(rng, 256);
  DSV4_CUDA_CHECK(cudaMemcpy(model_->x, xs.data(), xs.size() * sizeof(float), cudaMemcpyHostToDevice));
  for (int n = 1; n <= 64; ++n) {  // touch every path once before measuring
    target->run(n, n % 2 == 0);
    drafter->run(n, true);
  }
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream()));
  const size_t before = device_memory_used();
  const auto start = std::chrono::steady_clock::now();
  constexpr int kReplays = 10000;
  for (int i = 0; i < kReplays; ++i) {
    const int n = 1 + (i * 37) % 256;
    const GraphRunner::Dispatch d = target->run(n, i % 2 == 0);
    ASSERT_NE(d.mode, GraphMode::kNone);
  }
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream()));
  const double replay_ms = ms_since(start);
  const size_t after = device_memory_used();
  EXPECT_EQ(after, before) << "device memory grew across " << kReplays << " replays";
  EXPECT_EQ(target->stats().replays, kReplays + 64);

  // A full-graph replay of a single decode token vs the breakable chain of the same size.
  auto time_runs = [&](bool uniform) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 1000; ++i) target->run(1, uniform);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream()));
    return ms_since(t0);
  };
  const double full_us = time_runs(true), breakable_us = time_runs(false);

  const GraphRunnerStats totals = pool.totals();
  std::printf("device: %s\n", cuda::device_summary().c_str());
  std::printf("%s\n", totals.summary().c_str());
  std::printf(
      "device memory: %zu bytes used by capture (cudaMemGetInfo delta around the window), %zu bytes "
      "before / %zu after %d replays; arena high-water %lld bytes\n",
      after_capture - before_capture, before, after, kReplays,
      static_cast<long long>(pool.activation_bytes()));
  std::printf(
      "%d replays in %.1f ms (%.2f us each, including host dispatch); n=1: full %.2f us, breakable "
      "%.2f us per run\n",
      kReplays, replay_ms, 1000.0 * replay_ms / kReplays, full_us, breakable_us);
  for (const GraphEntryStats& e : target->stats().entries) {
    if (e.batch.num_tokens_padded == 256 || e.batch.num_tokens_padded == 1) {
      std::printf("  target %3d %-7s %-9s capture %.3f ms, %lld bytes, %d graphs + %d eager, %zu nodes\n",
                  e.batch.num_tokens_padded, e.batch.uniform_decode ? "uniform" : "mixed",
                  graph_mode_name(e.mode), e.capture_ms, static_cast<long long>(e.graph_bytes), e.num_graphs,
                  e.num_eager_regions, e.num_nodes);
    }
  }
  EXPECT_EQ(totals.num_captured, 2 * 35 + 11);
  EXPECT_GT(totals.capture_ms, 0.0);

  // Last result is still right after all that.
  const Result r = run(*target, std::vector<float>(xs.begin(), xs.begin() + 100), false);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(r.y[i], (2.0f * xs[i] + 100.0f) + 1.0f);
}

}  // namespace
}  // namespace dsv4::graph
