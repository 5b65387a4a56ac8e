// Engine::forward_greedy (the benchmarks' sampled decode step) against Engine::forward's logits: on the CPU the
// tokens are argmax_token of the same forward's rows, for a prompt's every row and for decode steps after it.
#include <cmath>
#include <limits>

#include "dsv4/runtime/engine.h"
#include "test_util.h"

namespace dsv4 {
namespace {

std::string model_dir() { return test::source_dir() + "/models/dsv4-tiny-kjv"; }

std::vector<int32_t> argmax_rows(const std::vector<float>& logits, int64_t V) {
  std::vector<int32_t> out;
  for (size_t r = 0; r * V < logits.size(); ++r) out.push_back(argmax_token(logits.data() + r * V, V));
  return out;
}

TEST(EngineForward, GreedyTokensAreTheLogitsArgmax) {
  EngineOptions o;
  o.max_seqs = 1;
  Engine e(model_dir(), o);
  const int64_t V = e.config().vocab_size;
  const std::vector<int32_t> prompt = {5, 17, 301, 42, 9, 1200, 77};

  // A prompt with every row's logits: the same forward twice at the same positions (the state rows it writes are
  // the same), once for logits, once for tokens.
  BatchBuilder a, b;
  a.add({0, 0, prompt, true});
  b.add({0, 0, prompt, true});
  std::vector<float> logits;
  e.forward(a, &logits);
  const std::vector<int32_t> expect = argmax_rows(logits, V), got = e.forward_greedy(b);
  ASSERT_EQ(got.size(), prompt.size());
  EXPECT_EQ(got, expect);

  // Greedy decode steps continuing from the prompt, uniform-decode batches as the bench's context steps.
  int32_t next = got.back();
  for (int32_t p = static_cast<int32_t>(prompt.size()); p < static_cast<int32_t>(prompt.size()) + 4; ++p) {
    BatchBuilder l, g;
    l.add({0, p, {next}, false});
    g.add({0, p, {next}, false});
    e.forward(l, &logits, nullptr, /*uniform_decode=*/true);
    const std::vector<int32_t> step = e.forward_greedy(g, /*uniform_decode=*/true);
    ASSERT_EQ(step.size(), 1u);
    EXPECT_EQ(step[0], argmax_token(logits.data(), V)) << "position " << p;
    next = step[0];
  }
  e.release_slot(0);
}

// decode_greedy (generate's decode loop, the benchmarks' pipelined step) draws what forward_greedy draws step by step
// from the same prompt, and checks every step before it runs one. Each run starts from the prompt again on a released
// slot: the window rings hold a few positions past the window, so a sequence cannot be rewound by a dozen steps.
TEST(EngineForward, DecodeGreedyMatchesStepByStep) {
  for (const std::string& dir : {model_dir(), test::fixture_dir("tiny_a")}) {
    SCOPED_TRACE(dir);
    EngineOptions o;
    o.max_seqs = 1;
    o.max_model_len = 4096;
    o.kv_cache_memory = int64_t{256} << 20;
    Engine e(dir, o);
    const std::vector<int32_t> prompt = {5, 17, 301, 42, 9, 120, 77};
    const int32_t pos = static_cast<int32_t>(prompt.size());
    auto prefill = [&] {
      e.release_slot(0);
      BatchBuilder a;
      a.add({0, 0, prompt, true});
      return e.forward_greedy(a).back();
    };
    const int32_t first = prefill();
    std::vector<int32_t> expect;
    int32_t next = first;
    for (int32_t p = pos; p < pos + 12; ++p) {
      BatchBuilder g;
      g.add({0, p, {next}, false});
      next = e.forward_greedy(g, /*uniform_decode=*/true).at(0);
      expect.push_back(next);
    }
    EXPECT_EQ(prefill(), first);
    EXPECT_EQ(e.decode_greedy(0, pos, first, 12), expect);
    EXPECT_TRUE(e.decode_greedy(0, pos, first, 0).empty());
    EXPECT_THROW(e.decode_greedy(0, pos, static_cast<int32_t>(e.config().vocab_size), 2), Error);
    EXPECT_THROW(e.decode_greedy(0, e.max_model_len() - 2, first, 1000), Error);  // the last step past max_model_len
    EXPECT_THROW(e.decode_greedy(0, pos, first, -1), Error);
    EXPECT_THROW(e.decode_greedy(-1, pos, first, 2), Error);  // a padding slot: no state to decode
    EXPECT_THROW(e.decode_greedy(1, pos, first, 2), Error);   // past max_seqs
    prefill();
    EXPECT_EQ(e.decode_greedy(0, pos, first, 12), expect);  // nothing left half done by the refusals
    e.release_slot(0);
  }
}

TEST(EngineForward, GreedyRefusesWhatForwardRefuses) {
  EngineOptions o;
  o.max_seqs = 1;
  Engine e(model_dir(), o);
  BatchBuilder bad;
  bad.add({0, 0, {static_cast<int32_t>(e.config().vocab_size)}, true});  // an id past the vocabulary
  EXPECT_THROW(e.forward_greedy(bad), Error);
  BatchBuilder ok;
  ok.add({0, 0, {1, 2, 3}, false});
  EXPECT_EQ(e.forward_greedy(ok).size(), 1u);  // the last row only
}

}  // namespace
}  // namespace dsv4
