// ops::sample_tokens on the CPU (the reference of the CUDA kernel): Philox known answers, greedy rows identical to
// argmax_token, draws distributed as the host sampler's exact distribution (chi-square over counters), the nucleus
// edges (top_p = 1, tiny top_p, ties at the boundary) and temperature extremes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "backend/philox.h"
#include "dsv4/ops/ops.h"
#include "dsv4/runtime/sampler.h"
#include "unit/sample_testing.h"

namespace dsv4 {
namespace {

std::vector<int32_t> sample(const std::vector<float>& logits, int64_t V, std::vector<ops::TokenSamplingParams> rows) {
  return test::sample_on_cpu(logits, V, std::move(rows));
}

// `draws` rows of the same logits, counters 0..draws-1 of one seed.
std::vector<int32_t> draw_many(const std::vector<float>& row, int draws, float temperature, float top_p,
                               uint64_t seed) {
  const int64_t V = static_cast<int64_t>(row.size());
  std::vector<float> logits;
  std::vector<ops::TokenSamplingParams> rows;
  for (int i = 0; i < draws; ++i) {
    logits.insert(logits.end(), row.begin(), row.end());
    rows.push_back(test::sampling_row(temperature, top_p, seed, 7, static_cast<uint64_t>(i)));
  }
  return sample(logits, V, rows);
}

// Random123's known-answer vectors for philox4x32_10.
TEST(SampleTokens, PhiloxKnownAnswers) {
  const Philox4x32 zero = philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(zero.v[0], 0x6627e8d5u);
  EXPECT_EQ(zero.v[1], 0xe169c58du);
  EXPECT_EQ(zero.v[2], 0xbc57ac4cu);
  EXPECT_EQ(zero.v[3], 0x9b00dbd8u);
  const Philox4x32 ones = philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  EXPECT_EQ(ones.v[0], 0x408f276du);
  EXPECT_EQ(ones.v[1], 0x41c83b0eu);
  EXPECT_EQ(ones.v[2], 0xa20bc7c6u);
  EXPECT_EQ(ones.v[3], 0x6d5451fdu);
  const Philox4x32 pi = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(pi.v[0], 0xd16cfe09u);
  EXPECT_EQ(pi.v[1], 0x94fdccebu);
  EXPECT_EQ(pi.v[2], 0x5001e420u);
  EXPECT_EQ(pi.v[3], 0x24126ea1u);
}

TEST(SampleTokens, GreedyIsArgmaxToken) {
  std::mt19937 rng(11);
  const int64_t V = 1000;
  std::vector<float> logits(6 * V);
  std::uniform_real_distribution<float> d(-4.0f, 4.0f);
  for (float& x : logits) x = d(rng);
  logits[1 * V + 17] = logits[1 * V + 900] = 10.0f;             // tie: lowest index
  for (int64_t v = 0; v < V; ++v) logits[2 * V + v] = 0.5f;     // all tied: token 0
  logits[3 * V + 0] = std::numeric_limits<float>::quiet_NaN();  // argmax_token keeps a NaN in column 0
  logits[4 * V + 5] = std::numeric_limits<float>::quiet_NaN();  // a NaN elsewhere never wins
  logits[4 * V + 6] = 20.0f;
  for (int64_t v = 0; v < V; ++v) logits[5 * V + v] = -std::numeric_limits<float>::infinity();
  std::vector<ops::TokenSamplingParams> rows(6, test::sampling_row(0.0f, 0.5f, 3, 0, 0));
  rows[5].temperature = -1.0f;  // any temperature <= 0 is greedy
  const std::vector<int32_t> got = sample(logits, V, rows);
  for (int r = 0; r < 6; ++r) EXPECT_EQ(got[r], argmax_token(logits.data() + r * V, V)) << "row " << r;
  EXPECT_EQ(got[1], 17);
  EXPECT_EQ(got[3], 0);
  EXPECT_EQ(got[4], 6);
}

TEST(SampleTokens, DeterministicPerSeedStreamAndCounter) {
  std::mt19937 rng(5);
  const int64_t V = 50;
  std::vector<float> row(V);
  std::normal_distribution<float> d(0.0f, 2.0f);
  for (float& x : row) x = d(rng);
  const std::vector<int32_t> a = draw_many(row, 64, 1.0f, 0.9f, 42), b = draw_many(row, 64, 1.0f, 0.9f, 42);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, draw_many(row, 64, 1.0f, 0.9f,
                         43));  // another seed: other draws (64 tokens; collision ~ 0)
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 3u);
}

TEST(SampleTokens, DrawsFollowTheExactDistribution) {
  std::mt19937 rng(8);  // a spread distribution: the top token has 0.22 at T = 1
  const int64_t V = 24;
  std::vector<float> row(V);
  std::normal_distribution<float> d(0.0f, 1.5f);
  for (float& x : row) x = d(rng);
  for (float T : {1.0f, 0.7f, 2.5f}) {
    for (float top_p : {1.0f, 0.9f, 0.5f}) {
      test::expect_matches_distribution(draw_many(row, 20000, T, top_p, 1234), row, T, top_p,
                                        "T " + std::to_string(T) + " top_p " + std::to_string(top_p));
    }
  }
}

TEST(SampleTokens, NucleusEdges) {
  // Four tied leaders at ~0.20 each: top_p 0.5 needs three of them, the lowest-index ones.
  const std::vector<float> tied = {0.0f, 1.0f, 1.0f, -5.0f, 1.0f, 1.0f, 0.5f};
  const std::vector<int32_t> t = draw_many(tied, 4000, 1.0f, 0.5f, 8);
  EXPECT_EQ(std::set<int32_t>(t.begin(), t.end()), (std::set<int32_t>{1, 2, 4}));
  test::expect_matches_distribution(t, tied, 1.0f, 0.5f, "tied boundary");
  // A tiny nucleus is the argmax (ties → lowest index); top_p = 1 reaches every token.
  const std::vector<int32_t> tiny = draw_many(tied, 500, 1.0f, 1e-6f, 8);
  EXPECT_EQ(std::set<int32_t>(tiny.begin(), tiny.end()), (std::set<int32_t>{1}));
  const std::vector<int32_t> all = draw_many(tied, 20000, 1.0f, 1.0f, 8);
  EXPECT_EQ(std::set<int32_t>(all.begin(), all.end()).size(), tied.size());
  // Temperature extremes: near 0 the argmax; very large, uniform over the vocabulary.
  const std::vector<float> ramp = {0.1f, 0.4f, 0.3f, 0.2f, 0.35f};
  const std::vector<int32_t> cold = draw_many(ramp, 500, 1e-6f, 1.0f, 2);
  EXPECT_EQ(std::set<int32_t>(cold.begin(), cold.end()), (std::set<int32_t>{1}));
  test::expect_matches_distribution(draw_many(ramp, 20000, 1e6f, 1.0f, 2), ramp, 1e6f, 1.0f, "T = 1e6");
}

// The optional non-finite flags: 1 for a row holding a NaN or an infinity anywhere, 0 else; the tokens are the same
// with and without them.
TEST(SampleTokens, FlagsRowsWithNonFiniteLogits) {
  ExecContext ctx;
  const int64_t V = 6;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> logits = {0.1f, 0.5f, 0.2f, 0.3f, 0.4f, 0.0f,    //
                               0.1f, 0.5f, 0.2f, nan,  0.4f, 0.0f,    //
                               0.1f, 0.5f, 0.2f, 0.3f, 0.4f, inf,     //
                               -inf, 0.5f, 0.2f, 0.3f, 0.4f, 0.0f,    //
                               0.1f, 0.5f, 0.2f, 0.3f, 0.4f, 1e30f};  // large but finite
  const int64_t R = 5;
  std::vector<ops::TokenSamplingParams> rows(R);
  rows[2].temperature = 0.7f;
  rows[4].temperature = 1.0f;
  std::vector<int32_t> flagged(R, -7), plain(R, -7), flags(R, -7);
  ops::sample_tokens(ctx, Tensor(flagged.data(), DType::I32, {R}), Tensor(logits.data(), DType::F32, {R, V}),
                     test::params_view(rows), Tensor(), Tensor(flags.data(), DType::I32, {R}));
  ops::sample_tokens(ctx, Tensor(plain.data(), DType::I32, {R}), Tensor(logits.data(), DType::F32, {R, V}),
                     test::params_view(rows));
  EXPECT_EQ(flags, (std::vector<int32_t>{0, 1, 1, 1, 0}));
  EXPECT_EQ(flagged, plain);
  for (int32_t t : flagged) EXPECT_TRUE(t >= 0 && t < V) << "a flagged row still gets a valid id";
  std::vector<int32_t> short_flags(R - 1);
  EXPECT_THROW(ops::sample_tokens(ctx, Tensor(plain.data(), DType::I32, {R}), Tensor(logits.data(), DType::F32, {R, V}),
                                  test::params_view(rows), Tensor(), Tensor(short_flags.data(), DType::I32, {R - 1})),
               Error);
}

TEST(SampleTokens, RejectsBadShapes) {
  ExecContext ctx;
  std::vector<float> logits(8);
  std::vector<int32_t> out(2);
  std::vector<ops::TokenSamplingParams> rows(1);
  EXPECT_THROW(ops::sample_tokens(ctx, Tensor(out.data(), DType::I32, {2}), Tensor(logits.data(), DType::F32, {2, 4}),
                                  test::params_view(rows)),
               Error);
}

// argmax_token (a vector maximum, then a scan) and log_sum_exp (glibc's vector exp) against the scalar loops they
// replaced, over row lengths around the vector widths: the same index always, the same sum to ~1e-15.
TEST(SampleTokens, ArgmaxTokenAndLogSumExpMatchScalarLoops) {
  std::mt19937 rng(5);
  std::normal_distribution<float> d(0.0f, 4.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (const int64_t V : {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 1000, 6144}) {
    for (int variant = 0; variant < 6; ++variant) {
      std::vector<float> row(static_cast<size_t>(V));
      for (float& x : row) x = d(rng);
      const auto at = [&](int64_t i) -> float& { return row[static_cast<size_t>(i % V)]; };
      if (variant == 1) at(V / 2) = at(V - 1) = 50.0f;  // a tie: the lower index
      if (variant == 2) at(V / 3) = nan;                // a NaN never wins
      if (variant == 3) row.assign(row.size(), -inf);
      if (variant == 4) at(V - 1) = inf;
      if (variant == 5) std::fill(row.begin(), row.end(), 1.25f);
      int64_t best = 0;
      for (int64_t v = 1; v < V; ++v) {
        if (row[v] > row[best]) best = v;
      }
      EXPECT_EQ(argmax_token(row.data(), V), best) << "V=" << V << " variant " << variant;
      if (variant == 2 || variant == 3 || variant == 4) continue;  // non-finite sums: not compared
      double mx = row[0], z = 0;
      for (int64_t v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(row[v]));
      for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]) - mx);
      const double want = mx + std::log(z);
      EXPECT_NEAR(log_sum_exp(row.data(), V), want, 1e-14 * std::max(1.0, std::fabs(want)))
          << "V=" << V << " variant " << variant;
    }
  }
  const float nan_first[3] = {nan, 2.0f, 3.0f};
  EXPECT_EQ(argmax_token(nan_first, 3), 0);  // as the scalar scan: nothing compares greater than a NaN
}

}  // namespace
}  // namespace dsv4
