#include "dsv4/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cpu/cpu_clones.h"
#include "backend/cpu/vector_exp.h"
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

namespace {
// The row's largest value that is not NaN, or -FLT_MAX (OpenMP's identity for max) when that is below it: a row of
// -inf. logits[0] must not be NaN.
DSV4_CPU_CLONES float row_max(const float* logits, int64_t vocab) {
  float m = logits[0];
#pragma omp simd reduction(max : m)
  for (int64_t v = 1; v < vocab; ++v) m = logits[v] > m ? logits[v] : m;
  return m;
}
}  // namespace

// The first index of the row's maximum, NaNs never chosen (0 when logits[0] is NaN): what a scalar scan keeping the
// first strictly greater value gives, in a vector pass for the maximum and a scan that stops at its first position.
int32_t argmax_token(const float* logits, int64_t vocab) {
  if (std::isnan(logits[0])) return 0;
  const float m = row_max(logits, vocab);
  for (int64_t v = 0; v < vocab; ++v) {
    if (logits[v] == m) return static_cast<int32_t>(v);
  }
  return 0;  // the row's values are all -inf (or NaN): m is the reduction's identity, -FLT_MAX, and token 0 is first
}

namespace {
// sum_v exp(logits[v] - mx) in double, 4 or 8 lanes at a time through glibc's vector exp (libmvec, <= 4 ulp) on
// CPUs that have AVX2 / AVX-512: a 512-token score's 3 million exps were 22 ms of one core with the scalar exp.
// The lanes' partial sums change the last bits of the sum (~1e-16 relative), not its meaning.
DSV4_CPU_CLONES double sum_exp(const float* logits, int64_t vocab, double mx) {
  double z = 0;
#pragma omp simd reduction(+ : z)
  for (int64_t v = 0; v < vocab; ++v) z += exp(static_cast<double>(logits[v]) - mx);
  return z;
}

double log_sum_exp_from(const float* logits, int64_t vocab, double mx) {
  return mx + std::log(sum_exp(logits, vocab, mx));
}
}  // namespace

double log_sum_exp(const float* logits, int64_t vocab) {
  double mx = logits[0];
  for (int64_t v = 1; v < vocab; ++v) mx = std::max(mx, static_cast<double>(logits[v]));
  return log_sum_exp_from(logits, vocab, mx);
}

TokenScores teacher_forced_scores(const float* logits, std::span<const int32_t> ids, int64_t vocab) {
  const int64_t T = static_cast<int64_t>(ids.size());
  TokenScores s;
  s.argmax.resize(static_cast<size_t>(T));
  s.nll.resize(static_cast<size_t>(std::max<int64_t>(T - 1, 0)));
  // A row is ~10 us of exp: a 512-token score's rows are milliseconds, worth a fork/join.
#pragma omp parallel for schedule(static) if (T * vocab > (int64_t{1} << 20))
  for (int64_t t = 0; t < T; ++t) {
    const float* row = logits + t * vocab;
    s.argmax[t] = argmax_token(row, vocab);
    // The row's maximum is its argmax's logit unless a NaN is in the row (then the sum is NaN either way).
    if (t + 1 < T) s.nll[t] = log_sum_exp_from(row, vocab, row[s.argmax[t]]) - row[ids[t + 1]];
  }
  return s;
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
