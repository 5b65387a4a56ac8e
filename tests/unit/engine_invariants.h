// Invariants an engine option that changes the numerics (--kv-cache-dtype fp8, --activation-quant fp8) must keep on
// the default model, shared by their tests.
#pragma once

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "dsv4/runtime/engine.h"
#include "test_util.h"

namespace dsv4::test {

// Token 0, then n - 1 seeded random ids of the default model's vocabulary.
inline std::vector<int32_t> random_prompt(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> ids = {0};
  for (int64_t i = 1; i < n; ++i) ids.push_back(static_cast<int32_t>(2 + rng() % 6000));
  return ids;
}

// `o` (with max_spec_tokens >= 2) on the default model: prefill chunks of 5 and of 7 tokens (both below the BLAS
// threshold: every product through the same dot_rows bits) give the same logits bit for bit, and greedy speculative
// decoding (K = 2) gives the tokens of plain decoding.
inline void expect_chunking_and_speculation_invariant(EngineOptions o, const std::vector<int32_t>& ids) {
  const std::string dir = source_dir() + "/models/dsv4-tiny-kjv";
  o.max_batch_tokens = 5;
  Engine five(dir, o);
  o.max_batch_tokens = 7;
  Engine seven(dir, o);
  const std::vector<float> a = five.score(ids), b = seven.score(ids);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a, b);
  GenerateOptions g;
  g.max_new_tokens = 24;
  g.stop_at_eos = false;
  const GenerateResult plain = five.generate({ids}, g);
  g.spec_tokens = 2;
  EXPECT_EQ(five.generate({ids}, g).tokens, plain.tokens);
}

}  // namespace dsv4::test
