// GraphRunner's dispatch, capture-window, warm-up, padding and failure rules on the host emulation of
// stream capture. tests/gpu/graph_runner_test.cu runs a runner on real kernels.
#include "dsv4/graph/graph_runner.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dsv4/core/arena.h"
#include "unit/fake_capture_backend.h"

namespace dsv4::graph {
namespace {

using testing::enqueue;
using testing::FakeCaptureBackend;
using testing::FakeStream;
using Dispatch = GraphRunner::Dispatch;

constexpr GraphMode N = GraphMode::kNone, B = GraphMode::kBreakable, F = GraphMode::kFull;

// The DeepSeek-V4 default: full graphs for uniform decode, breakable graphs for mixed batches.
const GraphPolicy kDefaultPolicy{F, B, F, PolicySource::kArchitecture, "test"};

CaptureSizes sizes(std::vector<int> list) { return CaptureSizes(CaptureSizeOptions{std::move(list), -1, 0}); }

// A toy forward: y[i] = 2 * x[i] in a "graph" kernel, then an eager region adds the step's real token count
// (read from the context at replay) to the real rows. Calls are logged as "<phase>:<mode>:<tokens>".
class GraphRunnerTest : public ::testing::Test {
 protected:
  GraphRunnerTest() { exec.stream = &stream; }

  std::unique_ptr<GraphRunner> make_runner(GraphRunnerOptions options) {
    auto runner = std::make_unique<GraphRunner>(
        pool, std::move(options), exec, [this](ForwardContext& ctx, const BatchDescriptor& batch) {
          calls.push_back(phase_name(ctx.phase) + ":" + graph_mode_name(ctx.mode) + ":" +
                          std::to_string(batch.num_tokens_padded));
          const int rows = batch.num_tokens_padded;
          enqueue(ctx.exec.stream, [this, rows] {
            for (int i = 0; i < rows; ++i) y[i] = 2 * x[i];
          });
          eager_region(ctx, "add_num_tokens", [this, &ctx] {
            enqueue(ctx.exec.stream, [this, n = ctx.num_tokens] {
              for (int i = 0; i < n; ++i) y[i] += n;
            });
          });
        });
    return runner;
  }

  static std::string phase_name(ForwardPhase p) {
    switch (p) {
      case ForwardPhase::kEager:
        return "eager";
      case ForwardPhase::kWarmup:
        return "warmup";
      case ForwardPhase::kCapture:
        return "capture";
      case ForwardPhase::kReplay:
        return "replay";
    }
    return "?";
  }

  FakeCaptureBackend backend;
  FakeStream stream;
  ExecContext exec;
  GraphPool pool{nullptr, backend};
  std::vector<std::string> calls;
  std::vector<int> x = std::vector<int>(512, 0), y = std::vector<int>(512, 0);
};

TEST_F(GraphRunnerTest, PlansBreakableBeforeFullEachLargestFirst) {
  auto runner = make_runner(GraphRunnerOptions::for_target(kDefaultPolicy, sizes({1, 2, 4})));
  using P = std::pair<BatchDescriptor, GraphMode>;
  EXPECT_EQ(runner->planned_captures(), (std::vector<P>{{{4, false}, B},
                                                        {{2, false}, B},
                                                        {{1, false}, B},
                                                        {{4, true}, F},
                                                        {{2, true}, F},
                                                        {{1, true}, F}}));
  // Same mode for both: a uniform batch uses the mixed entry, nothing is captured twice.
  auto drafter = make_runner(GraphRunnerOptions::for_drafter(kDefaultPolicy, sizes({1, 2})));
  EXPECT_EQ(drafter->planned_captures(), (std::vector<P>{{{2, false}, F}, {{1, false}, F}}));
  GraphPolicy none{N, N, N, PolicySource::kFlag, "test"};
  EXPECT_TRUE(make_runner(GraphRunnerOptions::for_target(none, sizes({1, 2})))->planned_captures().empty());
}

TEST_F(GraphRunnerTest, DispatchOrderFullThenBreakableThenEager) {
  auto runner = make_runner(GraphRunnerOptions::for_target(kDefaultPolicy, sizes({1, 2, 4, 8})));
  // Nothing captured yet: eager, padded to the bucket (same shapes as a replay would use).
  EXPECT_EQ(runner->dispatch(3, true), (Dispatch{N, {4, true}}));

  pool.begin_capture_window();
  runner->capture_all();
  pool.end_capture_window();
  EXPECT_EQ(runner->dispatch(3, true), (Dispatch{F, {4, true}}));    // uniform decode: full
  EXPECT_EQ(runner->dispatch(3, false), (Dispatch{B, {4, false}}));  // mixed: breakable
  EXPECT_EQ(runner->dispatch(8, false), (Dispatch{B, {8, false}}));
  EXPECT_EQ(runner->dispatch(9, true), (Dispatch{N, {9, true}}));  // above the largest: eager, unpadded
  EXPECT_EQ(runner->dispatch(1000, false), (Dispatch{N, {1000, false}}));
  EXPECT_THROW(runner->dispatch(0, false), Error);
}

// Prefill buckets: captured in mixed mode only, largest first with the other breakable entries; a batch above the
// decode sizes uses one only when it fills it to within 1/16, in every graph mode (so modes stay bit-identical).
TEST_F(GraphRunnerTest, PrefillBucketsAreMixedOnlyAndUsedWhenNearlyFull) {
  GraphRunnerOptions options = GraphRunnerOptions::for_target(kDefaultPolicy, sizes({1, 2, 4, 8}));
  options.prefill_sizes = sizes({32, 64});
  auto runner = make_runner(options);
  using P = std::pair<BatchDescriptor, GraphMode>;
  const std::vector<P> plan = runner->planned_captures();
  ASSERT_EQ(plan.size(), 10u);
  EXPECT_EQ(plan[0], (P{{64, false}, B}));
  EXPECT_EQ(plan[1], (P{{32, false}, B}));
  EXPECT_EQ(plan[2], (P{{8, false}, B}));
  EXPECT_EQ(runner->dispatch(64, false), (Dispatch{N, {64, false}}));  // not captured yet: eager at the bucket
  EXPECT_EQ(runner->dispatch(61, false), (Dispatch{N, {64, false}}));
  pool.begin_capture_window();
  runner->capture_all();
  pool.end_capture_window();
  EXPECT_EQ(runner->dispatch(64, false), (Dispatch{B, {64, false}}));
  EXPECT_EQ(runner->dispatch(61, true), (Dispatch{B, {64, false}}));   // 3 rows of padding <= 61 / 16
  EXPECT_EQ(runner->dispatch(60, false), (Dispatch{N, {60, false}}));  // 4 > 60 / 16: eager, unpadded
  EXPECT_EQ(runner->dispatch(33, false), (Dispatch{N, {33, false}}));
  EXPECT_EQ(runner->dispatch(31, false), (Dispatch{B, {32, false}}));
  EXPECT_EQ(runner->dispatch(30, false), (Dispatch{N, {30, false}}));  // 2 > 30 / 16
  EXPECT_EQ(runner->dispatch(65, false), (Dispatch{N, {65, false}}));  // above every bucket
  // A replay of the prefill entry adds the real token count to the real rows only.
  for (int i = 0; i < 64; ++i) x[i] = i;
  runner->run(62, false);
  EXPECT_EQ(y[61], 2 * 61 + 62);
  EXPECT_EQ(y[63], 2 * 63);
}

TEST_F(GraphRunnerTest, UniformBatchFallsBackToTheMixedEntry) {
  GraphRunnerOptions options = GraphRunnerOptions::for_target(kDefaultPolicy, sizes({2, 4}));
  auto runner = make_runner(options);
  // Fail the full (uniform) capture of size 4 and the breakable capture of size 2.
  backend.fail_instantiate = [&] {
    const ForwardContext& c = runner->context();
    return (c.batch == BatchDescriptor{4, true}) || (c.batch == BatchDescriptor{2, false});
  };
  pool.begin_capture_window();
  runner->capture_all();
  pool.end_capture_window();
  EXPECT_EQ(runner->dispatch(3, true), (Dispatch{B, {4, false}}));  // full failed: breakable mixed entry
  EXPECT_EQ(runner->dispatch(2, true), (Dispatch{F, {2, true}}));
  EXPECT_EQ(runner->dispatch(2, false), (Dispatch{N, {2, false}}));  // its only entry failed: eager
  const GraphRunnerStats stats = runner->stats();
  EXPECT_EQ(stats.num_captured, 2);
  EXPECT_EQ(stats.num_failed, 2);
}

TEST_F(GraphRunnerTest, CaptureOnlyInsideTheWindow) {
  auto runner = make_runner(GraphRunnerOptions::for_target(kDefaultPolicy, sizes({1, 2})));
  EXPECT_THROW(runner->capture_all(), Error);
  EXPECT_THROW(runner->capture({1, false}, B), Error);
  pool.begin_capture_window();
  EXPECT_THROW(pool.begin_capture_window(), Error);
  EXPECT_TRUE(runner->capture({2, false}, B));
  EXPECT_THROW(runner->capture({2, false}, B), Error) << "already captured";
  EXPECT_THROW(runner->capture({3, false}, B), Error) << "not a capture size";
  EXPECT_THROW(runner->capture({1, false}, N), Error);
  pool.end_capture_window();
  try {
    runner->capture({1, false}, B);
    FAIL() << "a capture after the window was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("capture window"), std::string::npos) << e.what();
  }
  // Running an uncaptured shape never captures lazily: it runs eagerly.
  calls.clear();
  EXPECT_EQ(runner->run(1, false).mode, N);
  EXPECT_EQ(calls, (std::vector<std::string>{"eager:none:1"}));
}

TEST_F(GraphRunnerTest, WarmsUpAndSynchronizesBeforeEachCaptureLargestFirst) {
  GraphRunnerOptions options = GraphRunnerOptions::for_target(kDefaultPolicy, sizes({1, 4}));
  options.warmup_runs = 2;
  auto runner = make_runner(options);
  pool.begin_capture_window();
  runner->capture_all();
  pool.end_capture_window();
  EXPECT_EQ(calls, (std::vector<std::string>{"warmup:none:4", "warmup:none:4", "capture:breakable:4",
                                             "warmup:none:1", "warmup:none:1", "capture:breakable:1",
                                             "warmup:none:4", "warmup:none:4", "capture:full:4",
                                             "warmup:none:1", "warmup:none:1", "capture:full:1"}));
  // Every capture is preceded by a synchronize (after its warm-ups) and followed by one.
  std::vector<std::string> seq;
  for (const std::string& c : backend.calls) {
    if (c == "sync" || c == "begin") seq.push_back(c);
  }
  ASSERT_GE(seq.size(), 3u);
  EXPECT_EQ(seq[0], "sync");
  EXPECT_EQ(seq[1], "begin");
}

TEST_F(GraphRunnerTest, ReplayUsesTheGraphAndThisStepsMetadata) {
  auto runner = make_runner(GraphRunnerOptions::for_target(kDefaultPolicy, sizes({4, 8})));
  pool.begin_capture_window();
  runner->capture_all();
  pool.end_capture_window();
  calls.clear();
  for (int i = 0; i < 8; ++i) x[i] = 10 + i;
  EXPECT_EQ(runner->run(3, false), (Dispatch{B, {4, false}}));
  EXPECT_TRUE(calls.empty()) << "a replay does not call the forward";
  EXPECT_EQ(y[0], 2 * 10 + 3);
  EXPECT_EQ(y[2], 2 * 12 + 3);
  EXPECT_EQ(y[3], 2 * 13) << "padding row: the eager region only touched real rows";
  EXPECT_EQ(runner->run(7, true), (Dispatch{F, {8, true}}));
  // Full graph: the region's host code ran at capture (0 real tokens there), so nothing is added. Full-mode
  // kernels must read per-step metadata from device buffers (see the GPU test).
  EXPECT_EQ(y[0], 2 * 10);

  const GraphRunnerStats stats = runner->stats();
  EXPECT_EQ(stats.replays, 2);
  EXPECT_EQ(stats.eager_runs, 0);
  const BreakableGraph* g = runner->graph({4, false});
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->layout(), "G E");
  EXPECT_EQ(g->num_replays(), 1);
  EXPECT_EQ(runner->graph({4, true})->layout(), "G");
}

TEST_F(GraphRunnerTest, PaddingHookFillsOnlyPaddingRows) {
  auto runner = make_runner(GraphRunnerOptions::for_target(kDefaultPolicy, sizes({4})));
  std::vector<std::pair<int, int>> hook;  // (padded, real)
  runner->set_padding_hook([&](ForwardContext& ctx, const BatchDescriptor& batch, int num_tokens) {
    EXPECT_EQ(BreakableGraph::current(), nullptr) << "padding is written outside any capture";
    EXPECT_EQ(ctx.batch, batch);
    hook.push_back({batch.num_tokens_padded, num_tokens});
  });
  pool.begin_capture_window();
  runner->capture_all();
  pool.end_capture_window();
  // Warm-up and capture of both entries see an all-padding batch.
  EXPECT_EQ(hook, (std::vector<std::pair<int, int>>(4, {4, 0})));
  hook.clear();
  runner->run(3, false);
  runner->run(4, true);   // full: no padding rows
  runner->run(5, false);  // eager above the largest: unpadded
  EXPECT_EQ(hook, (std::vector<std::pair<int, int>>{{4, 3}}));
}

TEST_F(GraphRunnerTest, CaptureFailureWarnsAndLeavesThatSizeEager) {
  auto runner = make_runner(GraphRunnerOptions::for_drafter(kDefaultPolicy, sizes({1, 2, 4})));
  backend.fail_instantiate = [&] { return runner->context().batch.num_tokens_padded == 2; };
  pool.begin_capture_window();
  EXPECT_NO_THROW(runner->capture_all());
  pool.end_capture_window();
  EXPECT_EQ(runner->dispatch(2, false).mode, N);
  EXPECT_EQ(runner->dispatch(1, false).mode, F);
  EXPECT_EQ(runner->dispatch(3, false).mode, F);
  const GraphRunnerStats stats = runner->stats();
  EXPECT_EQ(stats.num_failed, 1);
  ASSERT_EQ(stats.entries.size(), 3u);
  EXPECT_FALSE(stats.entries[1].captured);
  EXPECT_NE(stats.entries[1].failure.find("cudaErrorMemoryAllocation"), std::string::npos);
  EXPECT_EQ(BreakableGraph::current(), nullptr);
  // The eager fallback still computes the right result.
  x[0] = 5;
  x[1] = 6;
  runner->run(2, false);
  EXPECT_EQ(y[0], 2 * 5 + 2);
  EXPECT_EQ(y[1], 2 * 6 + 2);
}

TEST_F(GraphRunnerTest, OtherErrorsDuringCapturePropagate) {
  GraphRunner runner(pool, GraphRunnerOptions::for_drafter(kDefaultPolicy, sizes({1})), exec,
                     [](ForwardContext& ctx, const BatchDescriptor&) {
                       if (ctx.phase == ForwardPhase::kCapture)
                         fail(StatusCode::kInvalidArgument, "bad shape");
                     });
  pool.begin_capture_window();
  EXPECT_THROW(runner.capture_all(), Error);
  pool.end_capture_window();
  EXPECT_EQ(BreakableGraph::current(), nullptr);
}

TEST_F(GraphRunnerTest, StatsAndSharedPoolAcrossTargetAndDrafter) {
  auto target = make_runner(GraphRunnerOptions::for_target(kDefaultPolicy, sizes({1, 2})));
  auto drafter = make_runner(GraphRunnerOptions::for_drafter(kDefaultPolicy, sizes({1})));
  pool.begin_capture_window();
  target->capture_all();
  drafter->capture_all();
  pool.end_capture_window();
  const GraphRunnerStats t = target->stats(), d = drafter->stats();
  EXPECT_EQ(t.name, "target");
  EXPECT_EQ(t.num_captured, 4);
  EXPECT_EQ(d.num_captured, 1);
  // Breakable entries: "G E" = one graph each; full: one graph each. The fake charges 1 MiB per graph.
  EXPECT_EQ(t.graph_bytes, 4 * static_cast<int64_t>(FakeCaptureBackend::kBytesPerGraph));
  EXPECT_EQ(t.entries[0].num_graphs, 1);
  EXPECT_EQ(t.entries[0].num_eager_regions, 1);
  EXPECT_GE(t.capture_ms, 0.0);
  const GraphRunnerStats all = pool.totals();
  EXPECT_EQ(all.num_captured, 5);
  EXPECT_EQ(all.graph_bytes, 5 * static_cast<int64_t>(FakeCaptureBackend::kBytesPerGraph));
  EXPECT_EQ(pool.stats().size(), 2u);
  EXPECT_NE(all.summary().find("5 captured"), std::string::npos) << all.summary();

  pool.clear_all();
  EXPECT_EQ(backend.live_graphs, 0);
  EXPECT_EQ(backend.memory_used, 0u);
  EXPECT_EQ(target->dispatch(1, false).mode, N);
  // A new window may capture again.
  pool.begin_capture_window();
  target->capture_all();
  pool.end_capture_window();
  EXPECT_EQ(target->dispatch(1, false).mode, B);
}

TEST_F(GraphRunnerTest, EveryForwardStartsAtTheSameArenaOffset) {
  Arena arena("activations", 1 << 16, Device::kCPU);
  GraphPool arena_pool(&arena, backend);
  std::vector<void*> addresses;
  GraphRunner runner(arena_pool, GraphRunnerOptions::for_drafter(kDefaultPolicy, sizes({4})), exec,
                     [&](ForwardContext& ctx, const BatchDescriptor& batch) {
                       ASSERT_EQ(ctx.exec.scratch, &arena);
                       addresses.push_back(ctx.exec.scratch->alloc_bytes(batch.num_tokens_padded * 64));
                     });
  arena_pool.begin_capture_window();
  runner.capture_all();
  arena_pool.end_capture_window();
  runner.run(5, false);  // eager
  runner.run(6, false);
  ASSERT_EQ(addresses.size(), 4u);  // warm-up, capture, two eager runs
  for (void* a : addresses) EXPECT_EQ(a, addresses[0]);
  EXPECT_EQ(arena.used(), 0u);
  EXPECT_EQ(arena_pool.activation_bytes(), 6 * 64);
}

}  // namespace
}  // namespace dsv4::graph
