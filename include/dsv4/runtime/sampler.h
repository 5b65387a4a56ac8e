// Token sampling on the host: greedy, temperature and nucleus (top-p), seeded per sequence.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace dsv4 {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  float top_p = 1.0f;        // nucleus mass in (0, 1]
  uint64_t seed = 0;
  void validate() const;
  bool greedy() const { return temperature <= 0.0f; }
};

// The distribution sampling draws from: softmax(logits / T) restricted to the smallest set of tokens
// whose mass reaches top_p (renormalised). Greedy gives a one-hot at the argmax.
std::vector<float> sampling_distribution(const float* logits, int64_t vocab, const SamplingParams& p);

int32_t argmax_token(const float* logits, int64_t vocab);

class Sampler {
 public:
  Sampler() : Sampler(SamplingParams{}) {}
  explicit Sampler(const SamplingParams& p, uint64_t stream = 0);
  int32_t sample(const float* logits, int64_t vocab);
  // Draws an index from an arbitrary (unnormalised, non-negative) distribution.
  int32_t draw(const std::vector<float>& weights);
  double uniform();  // in [0, 1)
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace dsv4
