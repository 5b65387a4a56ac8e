// Host sampling additions the server exposes: top-k, min-p, presence and frequency penalties.
#include <gtest/gtest.h>

#include <cmath>

#include "dsv4/core/status.h"
#include "dsv4/runtime/sampler.h"

namespace dsv4 {
namespace {

TEST(ServerSampling, TopKKeepsTheMostLikely) {
  const std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.0f, 2.0f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  const auto prob = sampling_distribution(logits.data(), 5, p);
  // Token 1 and, of the tie 3/4, the lower id.
  EXPECT_EQ(prob[0], 0.0f);
  EXPECT_EQ(prob[2], 0.0f);
  EXPECT_EQ(prob[4], 0.0f);
  EXPECT_NEAR(prob[1], std::exp(1.0) / (std::exp(1.0) + 1.0), 1e-6);
  EXPECT_NEAR(prob[1] + prob[3], 1.0, 1e-6);
}

TEST(ServerSampling, MinPDropsUnlikelyTokens) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.2f;  // floor 0.1: drops 0.05
  const auto prob = sampling_distribution(logits.data(), 4, p);
  EXPECT_EQ(prob[3], 0.0f);
  EXPECT_NEAR(prob[0], 0.5 / 0.95, 1e-6);
  EXPECT_NEAR(prob[2], 0.15 / 0.95, 1e-6);
}

TEST(ServerSampling, TopKThenTopP) {
  const std::vector<float> logits = {std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.1f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 3;     // 0.4, 0.3, 0.2 → renormalised 4/9, 3/9, 2/9
  p.top_p = 0.7f;  // 4/9 < 0.7 ≤ 7/9: keeps two
  const auto prob = sampling_distribution(logits.data(), 4, p);
  EXPECT_NEAR(prob[0], 4.0 / 7.0, 1e-6);
  EXPECT_NEAR(prob[1], 3.0 / 7.0, 1e-6);
  EXPECT_EQ(prob[2], 0.0f);
}

TEST(ServerSampling, TopPAloneIsUnchanged) {
  // The nucleus without top-k keeps its original rule: accumulate until the mass reaches top_p.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.75f;
  const auto prob = sampling_distribution(logits.data(), 3, p);
  EXPECT_NEAR(prob[0], 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(prob[1], 0.3 / 0.8, 1e-6);
  EXPECT_EQ(prob[2], 0.0f);
}

TEST(ServerSampling, PenaltiesChangeGreedyChoices) {
  std::vector<float> logits = {1.0f, 3.0f, 2.5f};
  SamplingParams p;  // greedy
  p.presence_penalty = 0.4f;
  p.frequency_penalty = 0.1f;
  const std::vector<int32_t> generated = {1, 1, 2};
  std::vector<float> penalised = logits;
  apply_penalties(penalised.data(), 3, generated, p);
  EXPECT_FLOAT_EQ(penalised[0], 1.0f);
  EXPECT_FLOAT_EQ(penalised[1], 3.0f - 0.4f - 0.2f);
  EXPECT_FLOAT_EQ(penalised[2], 2.5f - 0.4f - 0.1f);
  Sampler s(p);
  EXPECT_EQ(s.sample(logits.data(), 3), 1);             // no history: the plain argmax
  EXPECT_EQ(s.sample(logits.data(), 3, generated), 1);  // 2.4 > 2.0
  const std::vector<int32_t> repeated = {1, 1, 1};      // token 1: 3 - 0.4 - 0.3 = 2.3 < 2.5
  EXPECT_EQ(s.sample(logits.data(), 3, repeated), 2);
}

TEST(ServerSampling, Validation) {
  SamplingParams p;
  p.top_k = -1;
  EXPECT_THROW(p.validate(), Error);
  p = SamplingParams{};
  p.min_p = 1.5f;
  EXPECT_THROW(p.validate(), Error);
  p = SamplingParams{};
  p.presence_penalty = 2.5f;
  EXPECT_THROW(p.validate(), Error);
  p = SamplingParams{};
  p.frequency_penalty = NAN;
  EXPECT_THROW(p.validate(), Error);
  p = SamplingParams{};
  EXPECT_TRUE(p.device_compatible());
  p.top_k = 5;
  EXPECT_FALSE(p.device_compatible());
  std::vector<float> logits = {0.0f, 1.0f};
  p = SamplingParams{};
  p.presence_penalty = 1.0f;
  const std::vector<int32_t> bad = {7};
  EXPECT_THROW(apply_penalties(logits.data(), 2, bad, p), Error);
}

}  // namespace
}  // namespace dsv4
