// Invariants an engine option that changes the numerics (--kv-cache-dtype fp8, --activation-quant fp8) must keep on
// the default model, shared by their tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
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

// `changed` moves the default model's logits over `ids` away from `exact`'s (the option does something), by little:
// top-1 agreement >= 95% and mean KL <= 1e-2. `what` names the pair in the printed figures.
inline void expect_close_but_changed(const EngineOptions& exact, const EngineOptions& changed,
                                     const std::vector<int32_t>& ids, const char* what) {
  const std::string dir = source_dir() + "/models/dsv4-tiny-kjv";
  Engine a(dir, exact), b(dir, changed);
  const std::vector<float> want = a.score(ids), got = b.score(ids);
  ASSERT_EQ(want.size(), got.size());
  const LogitAgreement r = compare_logits(want, got, a.config().vocab_size);
  std::printf("%s over %zu positions: top-1 agreement %.4f, mean KL %.3g, max |logit diff| %.3g\n", what, ids.size(),
              r.top1, r.kl, r.max_diff);
  EXPECT_GT(r.max_diff, 0.0);
  EXPECT_GE(r.top1, 0.95);
  EXPECT_LE(r.kl, 1e-2);
}

}  // namespace dsv4::test
