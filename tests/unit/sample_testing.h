// Shared by the CPU and GPU tests of ops::sample_tokens: parameter rows as the op's U8 tensor, and a chi-square check
// of drawn tokens against the host sampler's exact distribution.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "dsv4/ops/ops.h"
#include "dsv4/runtime/sampler.h"

namespace dsv4::test {

inline ops::TokenSamplingParams sampling_row(float temperature, float top_p, uint64_t seed, uint64_t stream,
                                             uint64_t counter) {
  return {temperature, top_p, seed, stream, counter};
}

// The rows as a host U8 [R, 32] tensor over `rows` (which must outlive it).
inline Tensor params_view(std::vector<ops::TokenSamplingParams>& rows) {
  return Tensor(rows.data(), DType::U8,
                {static_cast<int64_t>(rows.size()), static_cast<int64_t>(sizeof(ops::TokenSamplingParams))});
}

// The CPU reference's tokens for `rows` over logits [R, V] (the op's CPU backend).
inline std::vector<int32_t> sample_on_cpu(std::vector<float> logits, int64_t V,
                                          std::vector<ops::TokenSamplingParams> rows) {
  ExecContext ctx;
  const int64_t R = static_cast<int64_t>(rows.size());
  std::vector<int32_t> out(rows.size(), -1);
  ops::sample_tokens(ctx, Tensor(out.data(), DType::I32, {R}), Tensor(logits.data(), DType::F32, {R, V}),
                     params_view(rows));
  return out;
}

// Pearson's chi-square of the token counts against the host sampling_distribution of `logits`: tokens outside the
// distribution's support must never be drawn, and the statistic must stay below df + 6 standard deviations (a wrong
// nucleus or a biased draw exceeds that by orders of magnitude).
inline void expect_matches_distribution(const std::vector<int32_t>& tokens, const std::vector<float>& logits,
                                        float temperature, float top_p, const std::string& what) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_p = top_p;
  const std::vector<float> prob = sampling_distribution(logits.data(), static_cast<int64_t>(logits.size()), p);
  std::vector<double> count(prob.size(), 0.0);
  for (int32_t t : tokens) {
    ASSERT_TRUE(t >= 0 && t < static_cast<int32_t>(prob.size())) << what << ": token " << t;
    count[t] += 1;
  }
  const double n = static_cast<double>(tokens.size());
  double chi2 = 0;
  int support = 0;
  for (size_t v = 0; v < prob.size(); ++v) {
    if (prob[v] <= 0) {
      EXPECT_EQ(count[v], 0.0) << what << ": token " << v << " is outside the nucleus";
      continue;
    }
    ++support;
    const double e = n * prob[v];
    chi2 += (count[v] - e) * (count[v] - e) / e;
  }
  const double df = std::max(1, support - 1);
  std::printf("%s: %zu draws over %d tokens, chi-square %.1f (df %.0f)\n", what.c_str(), tokens.size(), support, chi2,
              df);
  EXPECT_LT(chi2, df + 6 * std::sqrt(2 * df)) << what;
}

}  // namespace dsv4::test
