#include "dsv4/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "dsv4/core/status.h"

namespace dsv4 {

void SamplingParams::validate() const {
  DSV4_CHECK_ARG(std::isfinite(temperature) && temperature >= 0.0f, "temperature must be >= 0, got ", temperature);
  DSV4_CHECK_ARG(top_p > 0.0f && top_p <= 1.0f, "top-p must be in (0, 1], got ", top_p);
  DSV4_CHECK_ARG(top_k >= 0, "top-k must be >= 0 (0 = off), got ", top_k);
  DSV4_CHECK_ARG(std::isfinite(min_p) && min_p >= 0.0f && min_p <= 1.0f, "min-p must be in [0, 1], got ", min_p);
  DSV4_CHECK_ARG(std::isfinite(presence_penalty) && presence_penalty >= -2.0f && presence_penalty <= 2.0f,
                 "presence penalty must be in [-2, 2], got ", presence_penalty);
  DSV4_CHECK_ARG(std::isfinite(frequency_penalty) && frequency_penalty >= -2.0f && frequency_penalty <= 2.0f,
                 "frequency penalty must be in [-2, 2], got ", frequency_penalty);
}

void apply_penalties(float* logits, int64_t vocab, std::span<const int32_t> generated, const SamplingParams& p) {
  if (!p.has_penalties() || generated.empty()) return;
  std::vector<int32_t> count(static_cast<size_t>(vocab), 0);
  for (int32_t t : generated) {
    DSV4_CHECK_ARG(t >= 0 && t < vocab, "penalties: generated token ", t, " is outside the vocabulary of ", vocab);
    ++count[static_cast<size_t>(t)];
  }
  for (int64_t v = 0; v < vocab; ++v) {
    const int32_t c = count[static_cast<size_t>(v)];
    if (c > 0) logits[v] -= p.presence_penalty + p.frequency_penalty * static_cast<float>(c);
  }
}

int32_t argmax_token(const float* logits, int64_t vocab) {
  int64_t best = 0;
  for (int64_t v = 1; v < vocab; ++v) {
    if (logits[v] > logits[best]) best = v;
  }
  return static_cast<int32_t>(best);
}

double log_sum_exp(const float* logits, int64_t vocab) {
  double mx = logits[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, static_cast<double>(logits[v]));
  double z = 0;
  for (int64_t v = 0; v < vocab; ++v) z += std::exp(static_cast<double>(logits[v]) - mx);
  return mx + std::log(z);
}

std::vector<float> sampling_distribution(const float* logits, int64_t vocab, const SamplingParams& p) {
  std::vector<float> prob(static_cast<size_t>(vocab), 0.0f);
  if (p.greedy()) {
    prob[argmax_token(logits, vocab)] = 1.0f;
    return prob;
  }
  const float mx = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += (prob[v] = std::exp((logits[v] - mx) / p.temperature));
  for (float& x : prob) x = static_cast<float>(x / sum);
  const bool restrict = p.top_k > 0 || p.top_p < 1.0f || p.min_p > 0.0f;
  if (!restrict) return prob;
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); });
  // keep = how many of the most likely tokens survive each filter in turn; mass = their total probability.
  size_t keep = order.size();
  if (p.top_k > 0) keep = std::min(keep, static_cast<size_t>(p.top_k));
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += prob[order[i]];
  if (p.top_p < 1.0f) {
    // Nucleus over the top-k distribution (renormalised): the smallest prefix whose mass reaches top_p.
    const double target = p.top_k > 0 ? p.top_p * mass : static_cast<double>(p.top_p);
    double acc = 0;
    size_t n = 0;
    while (n < keep && acc < target) acc += prob[order[n++]];
    keep = std::max<size_t>(n, 1);
    mass = acc;
  }
  if (p.min_p > 0.0f) {
    const double floor = static_cast<double>(p.min_p) * prob[order[0]];
    size_t n = 1;
    double acc = prob[order[0]];
    while (n < keep && prob[order[n]] >= floor) acc += prob[order[n++]];
    keep = n;
    mass = acc;
  }
  for (size_t i = keep; i < order.size(); ++i) prob[order[i]] = 0.0f;
  for (size_t i = 0; i < keep; ++i) prob[order[i]] = static_cast<float>(prob[order[i]] / mass);
  return prob;
}

Sampler::Sampler(const SamplingParams& p, uint64_t stream) : params_(p), rng_(p.seed * 0x9E3779B97F4A7C15ull + stream) {
  p.validate();
}

double Sampler::uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_); }

int32_t Sampler::draw(const std::vector<float>& w) {
  double total = 0;
  for (float x : w) total += x;
  DSV4_INTERNAL_CHECK(total > 0, "sampling from an empty distribution");
  double u = uniform() * total;
  for (size_t i = 0; i < w.size(); ++i) {
    if ((u -= w[i]) < 0 && w[i] > 0) return static_cast<int32_t>(i);
  }
  for (size_t i = w.size(); i-- > 0;) {  // rounding: the last token with mass
    if (w[i] > 0) return static_cast<int32_t>(i);
  }
  return 0;
}

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  if (params_.greedy()) return argmax_token(logits, vocab);
  return draw(sampling_distribution(logits, vocab, params_));
}

int32_t Sampler::sample(const float* logits, int64_t vocab, std::span<const int32_t> generated) {
  if (!params_.has_penalties() || generated.empty()) return sample(logits, vocab);
  std::vector<float> penalised(logits, logits + vocab);
  apply_penalties(penalised.data(), vocab, generated, params_);
  return sample(penalised.data(), vocab);
}

}  // namespace dsv4
