#include "dsv4/runtime/speculative.h"

#include <algorithm>

#include "dsv4/core/status.h"

namespace dsv4 {

DraftVerdict verify_drafts(const float* target_logits, int64_t V, const std::vector<int32_t>& drafts,
                           const std::vector<std::vector<float>>& draft_probs, Sampler& sampler) {
  const int64_t K = static_cast<int64_t>(drafts.size());
  const SamplingParams& params = sampler.params();
  if (params.greedy()) {
    int64_t a = 0;
    while (a < K && drafts[a] == argmax_token(target_logits + a * V, V)) ++a;
    return {a, argmax_token(target_logits + a * V, V)};
  }
  DSV4_INTERNAL_CHECK(static_cast<int64_t>(draft_probs.size()) == K, "sampled verification needs q for every draft");
  for (int64_t i = 0; i < K; ++i) {
    const std::vector<float> p = sampling_distribution(target_logits + i * V, V, params);
    const std::vector<float>& q = draft_probs[i];
    const int32_t d = drafts[i];
    const double ratio = q[d] > 0 ? static_cast<double>(p[d]) / q[d] : 0.0;
    if (sampler.uniform() < std::min(1.0, ratio)) continue;
    std::vector<float> residual(static_cast<size_t>(V));
    double mass = 0;
    for (int64_t v = 0; v < V; ++v) mass += (residual[v] = std::max(0.0f, p[v] - q[v]));
    // mass == 0 means p == q, where rejection has probability 0; guard against rounding all the same.
    return {i, mass > 0 ? sampler.draw(residual) : sampler.draw(p)};
  }
  return {K, sampler.draw(sampling_distribution(target_logits + K * V, V, params))};
}

}  // namespace dsv4
