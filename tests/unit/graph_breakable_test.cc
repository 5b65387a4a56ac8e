// BreakableGraph's segment rules on the host emulation of stream capture (CI has no GPU). The same
// scenarios run on real kernels in tests/gpu/breakable_graph_test.cu.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dsv4/graph/breakable_graph.h"
#include "unit/fake_capture_backend.h"

namespace dsv4::graph {
namespace {

using testing::enqueue;
using testing::FakeCaptureBackend;
using testing::FakeStream;

class BreakableGraphTest : public ::testing::Test {
 protected:
  BreakableGraphTest() {
    ctx.exec.stream = &stream;
    ctx.mode = GraphMode::kBreakable;
  }
  // A "kernel": host work that runs when the stream runs it, not when it is enqueued during a capture.
  void kernel(std::function<void()> op) { enqueue(&stream, std::move(op)); }

  FakeCaptureBackend backend;
  FakeStream stream;
  ForwardContext ctx;
  BreakableGraph graph{backend};
};

TEST_F(BreakableGraphTest, NoRegionGivesOneGraph) {
  int x = 0;
  graph.capture(&stream, true, [&] {
    kernel([&] { x += 1; });
    kernel([&] { x *= 3; });
  });
  EXPECT_EQ(graph.layout(), "G");
  EXPECT_EQ(graph.num_graphs(), 1);
  EXPECT_EQ(graph.num_eager_regions(), 0);
  EXPECT_EQ(graph.num_nodes(), 2u);
  EXPECT_EQ(x, 0) << "capture records, it does not execute";
  graph.replay();
  EXPECT_EQ(x, 3);
}

TEST_F(BreakableGraphTest, TwoRegionsGiveGEGEG) {
  int eager_runs = 0;
  graph.capture(&stream, true, [&] {
    kernel([] {});
    eager_region(ctx, "a", [&] { ++eager_runs; });
    kernel([] {});
    eager_region(ctx, "b", [&] { ++eager_runs; });
    kernel([] {});
  });
  EXPECT_EQ(graph.layout(), "G E G E G");
  EXPECT_EQ(graph.num_graphs(), 3);
  EXPECT_EQ(graph.num_eager_regions(), 2);
  EXPECT_EQ(eager_runs, 2) << "each region runs once at capture";
  const auto items = graph.items();
  ASSERT_EQ(items.size(), 5u);
  EXPECT_EQ(items[1].kind, BreakableGraph::ItemKind::kEager);
  EXPECT_EQ(items[1].name, "a");
  EXPECT_EQ(items[3].name, "b");
  EXPECT_EQ(items[2].kind, BreakableGraph::ItemKind::kGraph);
  EXPECT_EQ(items[2].num_nodes, 1u);
}

TEST_F(BreakableGraphTest, EmptySegmentsAreSkipped) {
  graph.capture(&stream, true, [&] {
    eager_region(ctx, "first", [] {});
    eager_region(ctx, "second", [] {});
    kernel([] {});
    eager_region(ctx, "last", [] {});
  });
  EXPECT_EQ(graph.layout(), "E E G E");
  EXPECT_EQ(graph.num_empty_segments(), 3);
  EXPECT_EQ(backend.live_graphs, 1) << "an empty segment is never instantiated";
}

TEST_F(BreakableGraphTest, ReplayRunsSegmentsAndRegionsInOrder) {
  std::vector<std::string> order;
  graph.capture(&stream, true, [&] {
    kernel([&] { order.push_back("g0"); });
    eager_region(ctx, "A", [&] { order.push_back("A"); });
    kernel([&] { order.push_back("g1"); });
    eager_region(ctx, "B", [&] { order.push_back("B"); });
    eager_region(ctx, "C", [&] { order.push_back("C"); });
    kernel([&] { order.push_back("g2"); });
  });
  EXPECT_EQ(order, (std::vector<std::string>{"A", "B", "C"}));
  order.clear();
  graph.replay();
  EXPECT_EQ(order, (std::vector<std::string>{"g0", "A", "g1", "B", "C", "g2"}));
  EXPECT_EQ(graph.num_replays(), 1);
}

// vLLM's capture/replay equivalence test: at capture only eager work mutates state; replay runs it all.
TEST_F(BreakableGraphTest, CaptureDoesNotExecuteSegmentsReplayDoes) {
  int x = 0;
  graph.capture(&stream, true, [&] {
    kernel([&] { x += 1; });
    eager_region(ctx, "double", [&] { kernel([&] { x *= 2; }); });
    kernel([&] { x += 5; });
  });
  EXPECT_EQ(x, 0);
  x = 10;
  graph.replay();
  EXPECT_EQ(x, 27);
  x = 100;
  graph.replay();
  EXPECT_EQ(x, 207);
}

TEST_F(BreakableGraphTest, EagerRegionReadsReplayTimeMetadata) {
  struct StepMetadata {
    int num_tokens = 0;
  } meta;
  std::vector<int> seen;
  meta.num_tokens = 1;
  graph.capture(&stream, true, [&] {
    kernel([] {});
    // By reference: the engine's metadata object outlives the graph and is rewritten every step.
    eager_region(ctx, "attn", [&meta, &seen, this] {
      const int n = meta.num_tokens;  // read when the region runs
      kernel([&seen, n] { seen.push_back(n); });
    });
  });
  for (int step : {5, 7, 3}) {
    meta.num_tokens = step;
    graph.replay();
  }
  EXPECT_EQ(seen, (std::vector<int>{1, 5, 7, 3}));
}

TEST_F(BreakableGraphTest, NestedRegionMakesOneBreak) {
  int x = 0, inner_runs = 0;
  graph.capture(&stream, true, [&] {
    kernel([&] { x += 1; });
    eager_region(ctx, "outer", [&] {
      kernel([&] { x *= 10; });
      eager_region(ctx, "inner", [&] {
        ++inner_runs;
        kernel([&] { x += 3; });
      });
    });
    kernel([&] { x += 100; });
  });
  EXPECT_EQ(graph.layout(), "G E G");
  EXPECT_EQ(graph.items()[1].name, "outer");
  EXPECT_EQ(inner_runs, 1);
  x = 0;
  graph.replay();
  EXPECT_EQ(x, 113);  // ((0 + 1) * 10 + 3) + 100
  EXPECT_EQ(inner_runs, 2);
}

TEST_F(BreakableGraphTest, FullModeRunsRegionsInlineIntoOneGraph) {
  int x = 0, eager_host_runs = 0;
  auto body = [&] {
    kernel([&] { x += 1; });
    eager_region(ctx, "attn", [&] {
      ++eager_host_runs;
      kernel([&] { x *= 2; });
    });
    kernel([&] { x += 5; });
  };
  graph.capture(&stream, /*allow_breaks=*/false, body);
  EXPECT_EQ(graph.layout(), "G");
  EXPECT_EQ(graph.num_nodes(), 3u) << "the region's kernel is captured";

  // ctx.mode = full has the same effect on a graph that would allow breaks.
  BreakableGraph full_by_ctx(backend);
  ctx.mode = GraphMode::kFull;
  full_by_ctx.capture(&stream, true, body);
  EXPECT_EQ(full_by_ctx.layout(), "G");

  x = 10;
  graph.replay();
  EXPECT_EQ(x, 27);
  EXPECT_EQ(eager_host_runs, 2) << "host code of an inlined region runs only at capture";
}

TEST_F(BreakableGraphTest, NotCapturingRunsRegionsInline) {
  int x = 0;
  eager_region(ctx, "outside", [&] { kernel([&] { x = 4; }); });
  EXPECT_EQ(x, 4);
  EXPECT_EQ(BreakableGraph::current(), nullptr);
}

TEST_F(BreakableGraphTest, ExceptionDuringCaptureResetsThreadState) {
  EXPECT_THROW(graph.capture(&stream, true,
                             [&] {
                               kernel([] {});
                               EXPECT_EQ(BreakableGraph::current(), &graph);
                               throw std::runtime_error("forward failed");
                             }),
               std::runtime_error);
  EXPECT_EQ(BreakableGraph::current(), nullptr);
  EXPECT_FALSE(stream.capturing) << "the open capture was aborted";
  EXPECT_FALSE(graph.captured());
  EXPECT_EQ(backend.calls.back(), "abort");

  // Inside an eager region (no capture open at that moment), with a graph already recorded.
  EXPECT_THROW(graph.capture(&stream, true,
                             [&] {
                               kernel([] {});
                               eager_region(ctx, "bad", [] { throw std::runtime_error("region failed"); });
                             }),
               std::runtime_error);
  EXPECT_EQ(BreakableGraph::current(), nullptr);
  EXPECT_FALSE(BreakableGraph::in_eager_region());
  EXPECT_EQ(backend.live_graphs, 0) << "the partial capture was released";

  // The object and the thread capture normally afterwards.
  graph.capture(&stream, true, [&] {
    kernel([] {});
    eager_region(ctx, "ok", [] {});
  });
  EXPECT_EQ(graph.layout(), "G E");
}

TEST_F(BreakableGraphTest, InstantiationFailurePropagatesAndResets) {
  backend.fail_instantiate = [] { return true; };
  try {
    graph.capture(&stream, true, [&] { kernel([] {}); });
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kOutOfMemory);
  }
  EXPECT_EQ(BreakableGraph::current(), nullptr);
  EXPECT_FALSE(stream.capturing);
}

TEST_F(BreakableGraphTest, MisuseIsAnError) {
  EXPECT_THROW(graph.replay(), Error);  // nothing captured
  graph.capture(&stream, true, [&] {
    BreakableGraph other(backend);
    FakeStream other_stream;
    EXPECT_THROW(other.capture(&other_stream, true, [] {}), Error);  // nested capture on one thread
    ForwardContext wrong = ctx;
    FakeStream wrong_stream;
    wrong.exec.stream = &wrong_stream;
    EXPECT_THROW(eager_region(wrong, "wrong stream", [] {}), Error);
  });
  EXPECT_THROW(graph.capture(&stream, true, [] {}), Error);  // already captured
  graph.clear();
  EXPECT_FALSE(graph.captured());
  EXPECT_EQ(backend.live_graphs, 0);
  graph.capture(&stream, true, [&] { kernel([] {}); });
  EXPECT_EQ(graph.layout(), "G");
}

TEST_F(BreakableGraphTest, CaptureStateIsPerThread) {
  int other_thread_inline = 0;
  graph.capture(&stream, true, [&] {
    kernel([] {});
    std::thread([&] {
      // No capture is open on this thread: the region runs inline and does not break this capture.
      EXPECT_EQ(BreakableGraph::current(), nullptr);
      ForwardContext other_ctx;
      other_ctx.mode = GraphMode::kBreakable;
      eager_region(other_ctx, "other thread", [&] { ++other_thread_inline; });
    }).join();
    kernel([] {});
  });
  EXPECT_EQ(other_thread_inline, 1);
  EXPECT_EQ(graph.layout(), "G");
}

TEST_F(BreakableGraphTest, EmptyBodyCapturesNothing) {
  graph.capture(&stream, true, [] {});
  EXPECT_TRUE(graph.captured());
  EXPECT_EQ(graph.layout(), "");
  graph.replay();  // a no-op
  EXPECT_EQ(backend.live_graphs, 0);
}

}  // namespace
}  // namespace dsv4::graph
