// Token sampling on the host: greedy, temperature, top-k, nucleus (top-p) and min-p, with OpenAI-style presence
// and frequency penalties; seeded per sequence.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace dsv4 {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  float top_p = 1.0f;        // nucleus mass in (0, 1]
  uint64_t seed = 0;
  int32_t top_k = 0;   // keep the k most likely tokens (0 = all)
  float min_p = 0.0f;  // drop tokens less likely than min_p × the most likely one, in [0, 1] (0 = off)
  // Subtracted from the logit of every token already generated (presence) and once per occurrence (frequency),
  // before temperature; in [-2, 2] as in OpenAI's API. They apply to greedy decoding too.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  void validate() const;
  bool greedy() const { return temperature <= 0.0f; }
  bool has_penalties() const { return presence_penalty != 0.0f || frequency_penalty != 0.0f; }
  // Whether the device sampler (greedy, temperature, top-p) draws this distribution; false with top-k, min-p or
  // penalties, which only the host Sampler implements.
  bool device_compatible() const { return top_k == 0 && min_p == 0.0f && !has_penalties(); }
};

// The distribution sampling draws from: softmax(logits / T), then restricted to the top_k most likely tokens
// (ties to the lower id), then to the smallest set whose mass reaches top_p, then to the tokens whose
// probability is at least min_p × the largest, renormalised after each step. Greedy gives a one-hot at the argmax.
// Penalties are not applied here (see apply_penalties).
std::vector<float> sampling_distribution(const float* logits, int64_t vocab, const SamplingParams& p);

// logits[t] -= presence_penalty · [count(t) > 0] + frequency_penalty · count(t) over the generated tokens.
// Throws kInvalidArgument for a token outside [0, vocab).
void apply_penalties(float* logits, int64_t vocab, std::span<const int32_t> generated, const SamplingParams& p);

int32_t argmax_token(const float* logits, int64_t vocab);

// log(sum_v exp(logits[v])) in double (each logit minus the row's maximum before exp): the normaliser of log-softmax
// for logprobs, scores and perplexity.
double log_sum_exp(const float* logits, int64_t vocab);

class Sampler {
 public:
  Sampler() : Sampler(SamplingParams{}) {}
  explicit Sampler(const SamplingParams& p, uint64_t stream = 0);
  int32_t sample(const float* logits, int64_t vocab);
  // With penalties: `generated` are the tokens generated so far (without penalties it is not read).
  int32_t sample(const float* logits, int64_t vocab, std::span<const int32_t> generated);
  // Draws an index from an arbitrary (unnormalised, non-negative) distribution.
  int32_t draw(const std::vector<float>& weights);
  double uniform();  // in [0, 1)
  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace dsv4
