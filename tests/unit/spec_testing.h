// Shared by the CPU and GPU tests of speculative decoding's device ops (ops::sample_tokens with nuclei,
// ops::speculative_accept): one acceptance round over many independent trials (one "sequence" each, its own Philox
// stream) on any backend, chi-square p-values, and the test bodies both suites run.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "backend/philox.h"
#include "dsv4/ops/ops.h"
#include "dsv4/runtime/engine.h"
#include "dsv4/runtime/sampler.h"

namespace dsv4::test {

// Where the ops run: tensors it owns, host <-> tensor copies.
class OpsBackend {
 public:
  virtual ~OpsBackend() = default;
  virtual ExecContext& ctx() = 0;
  virtual Tensor alloc(DType dtype, std::vector<int64_t> shape) = 0;
  virtual void write(const Tensor& t, const void* host, size_t bytes) = 0;
  virtual void read(void* host, const Tensor& t, size_t bytes) = 0;
};

class CpuOps final : public OpsBackend {
 public:
  ExecContext& ctx() override { return ctx_; }
  Tensor alloc(DType dtype, std::vector<int64_t> shape) override {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    owned_.push_back(std::make_unique<std::vector<int64_t>>((static_cast<size_t>(n) * dtype_size(dtype) + 7) / 8 + 1));
    return Tensor(owned_.back()->data(), dtype, shape);
  }
  void write(const Tensor& t, const void* host, size_t bytes) override { std::memcpy(t.data(), host, bytes); }
  void read(void* host, const Tensor& t, size_t bytes) override { std::memcpy(host, t.data(), bytes); }

 private:
  ExecContext ctx_;
  std::vector<std::unique_ptr<std::vector<int64_t>>> owned_;
};

// Trials of one acceptance round: the drafter's logits for draft j + 1 given the trial's drafts d_1 .. d_j, and the
// target's logits of row r given d_1 .. d_r.
struct SpecTrials {
  int64_t V = 0, K = 0;
  std::function<std::vector<float>(int64_t trial, int64_t j, const std::vector<int32_t>& drafts)> draft_row;
  std::function<std::vector<float>(int64_t trial, int64_t r, const std::vector<int32_t>& drafts)> target_row;
};

struct SpecRound {
  std::vector<std::vector<int32_t>> drafts;  // per trial, d_1 .. d_K
  std::vector<int32_t> out, counts;          // ops::speculative_accept's outputs
};

// One round, as a speculative step runs it: each draft drawn by sample_tokens (Philox word 1 at counter g + j) from its
// row, the target rows' tokens and nuclei (word 3 at g + r), then the acceptance. params: one row per trial (counter =
// g).
inline SpecRound run_spec_round(OpsBackend& be, const SpecTrials& s,
                                const std::vector<ops::TokenSamplingParams>& params) {
  const int64_t b = static_cast<int64_t>(params.size()), K = s.K, V = s.V, Tv = b * (K + 1);
  const int64_t prm = sizeof(ops::TokenSamplingParams), inf = sizeof(ops::NucleusInfo);
  ExecContext& ctx = be.ctx();
  Tensor dl = be.alloc(DType::F32, {K * b, V}), dt = be.alloc(DType::I32, {K * b}),
         di = be.alloc(DType::U8, {K * b, inf});
  Tensor tl = be.alloc(DType::F32, {Tv, V}), tt = be.alloc(DType::I32, {Tv}), ti = be.alloc(DType::U8, {Tv, inf});
  Tensor pd = be.alloc(DType::U8, {K * b, prm}), pt = be.alloc(DType::U8, {Tv, prm}),
         pa = be.alloc(DType::U8, {b, prm});
  Tensor out = be.alloc(DType::I32, {Tv}), counts = be.alloc(DType::I32, {b});
  std::vector<ops::TokenSamplingParams> rows_d(static_cast<size_t>(K * b)), rows_t(static_cast<size_t>(Tv));
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < K; ++j) {
      rows_d[j * b + i] = params[i];
      rows_d[j * b + i].counter = philox_word_counter(params[i].counter + j, 1);
    }
    for (int64_t r = 0; r <= K; ++r) {
      rows_t[i * (K + 1) + r] = params[i];
      rows_t[i * (K + 1) + r].counter = philox_word_counter(params[i].counter + r, 3);
    }
  }
  be.write(pd, rows_d.data(), rows_d.size() * prm);
  be.write(pt, rows_t.data(), rows_t.size() * prm);
  be.write(pa, params.data(), params.size() * prm);
  SpecRound round;
  round.drafts.assign(static_cast<size_t>(b), {});
  std::vector<float> rows(static_cast<size_t>(b * V));
  std::vector<int32_t> drawn(static_cast<size_t>(b));
  for (int64_t j = 0; j < K; ++j) {
    for (int64_t i = 0; i < b; ++i) {
      const std::vector<float> row = s.draft_row(i, j, round.drafts[i]);
      std::copy(row.begin(), row.end(), rows.begin() + i * V);
    }
    be.write(dl.rows(j * b, (j + 1) * b), rows.data(), rows.size() * sizeof(float));
    ops::sample_tokens(ctx, dt.slice(0, j * b, (j + 1) * b), dl.rows(j * b, (j + 1) * b), pd.rows(j * b, (j + 1) * b),
                       di.rows(j * b, (j + 1) * b));
    be.read(drawn.data(), dt.slice(0, j * b, (j + 1) * b), drawn.size() * sizeof(int32_t));
    for (int64_t i = 0; i < b; ++i) round.drafts[i].push_back(drawn[i]);
  }
  std::vector<float> target(static_cast<size_t>(Tv * V));
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t r = 0; r <= K; ++r) {
      const std::vector<int32_t> prefix(round.drafts[i].begin(), round.drafts[i].begin() + r);
      const std::vector<float> row = s.target_row(i, r, prefix);
      std::copy(row.begin(), row.end(), target.begin() + (i * (K + 1) + r) * V);
    }
  }
  be.write(tl, target.data(), target.size() * sizeof(float));
  ops::sample_tokens(ctx, tt, tl, pt, ti);
  ops::speculative_accept(ctx, out, counts, tl, ti, tt, dl, di, dt, pa);
  round.out.resize(static_cast<size_t>(Tv));
  round.counts.resize(static_cast<size_t>(b));
  be.read(round.out.data(), out, round.out.size() * sizeof(int32_t));
  be.read(round.counts.data(), counts, round.counts.size() * sizeof(int32_t));
  return round;
}

// Upper regularised incomplete gamma Q(a, x) (series / continued fraction), for chi-square p-values.
inline double gamma_q(double a, double x) {
  if (x <= 0) return 1.0;
  const double gln = std::lgamma(a);
  if (x < a + 1) {
    double sum = 1.0 / a, del = sum, ap = a;
    for (int n = 0; n < 1000; ++n) {
      del *= x / ++ap;
      sum += del;
      if (std::fabs(del) < std::fabs(sum) * 1e-15) break;
    }
    return 1.0 - sum * std::exp(-x + a * std::log(x) - gln);
  }
  double b = x + 1 - a, c = 1e300, d = 1 / b, h = d;
  for (int i = 1; i < 1000; ++i) {
    const double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::fabs(d) < 1e-300) d = 1e-300;
    c = b + an / c;
    if (std::fabs(c) < 1e-300) c = 1e-300;
    d = 1 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1) < 1e-15) break;
  }
  return std::exp(-x + a * std::log(x) - gln) * h;
}

// Chi-square goodness of fit of counts against probabilities; bins with expected count < 5 are pooled; an outcome
// of probability 0 drawn gives 0.
inline double chi_square_p_value(const std::map<int64_t, int64_t>& counts, const std::map<int64_t, double>& probs,
                                 int64_t draws) {
  double chi2 = 0, pooled_expected = 0, pooled_observed = 0;
  int bins = 0;
  for (const auto& [key, p] : probs) {
    const double expected = p * static_cast<double>(draws);
    const auto it = counts.find(key);
    const double observed = it == counts.end() ? 0.0 : static_cast<double>(it->second);
    if (expected < 5) {
      pooled_expected += expected;
      pooled_observed += observed;
      continue;
    }
    chi2 += (observed - expected) * (observed - expected) / expected;
    ++bins;
  }
  for (const auto& [key, c] : counts) {
    if (!probs.count(key)) return 0.0;
  }
  if (pooled_expected > 0) {
    chi2 += (pooled_observed - pooled_expected) * (pooled_observed - pooled_expected) / pooled_expected;
    ++bins;
  }
  return gamma_q((bins - 1) / 2.0, chi2 / 2.0);
}

inline std::vector<ops::TokenSamplingParams> trial_params(int64_t trials, float temperature, float top_p, uint64_t seed,
                                                          uint64_t counter = 5) {
  std::vector<ops::TokenSamplingParams> p(static_cast<size_t>(trials));
  for (int64_t i = 0; i < trials; ++i) p[i] = {temperature, top_p, seed, static_cast<uint64_t>(i), counter};
  return p;
}

// A target row p and a draft row q of the trained model at one prompt (CPU engine): p = the target after
// [BOS, 1035, 509, 456, last], q = the MTP's prediction of the same token (last = the target's argmax after the
// prompt).
inline void mtp_target_and_draft_rows(const std::string& model_dir, std::vector<float>* p, std::vector<float>* q) {
  Engine e(model_dir, EngineOptions{});
  const int64_t V = e.config().vocab_size;
  BatchBuilder b;
  b.add({0, 0, {0, 1035, 509, 456}, true});
  std::vector<float> target, residual;
  e.forward(b, &target, &residual);
  const int32_t last = argmax_token(target.data() + 3 * V, V);
  BatchBuilder m;
  m.add({0, 0, {1035, 509, 456, last}, true});
  std::vector<float> draft, hidden;
  e.mtp_forward(m, residual, &draft, &hidden);
  BatchBuilder v;
  v.add({0, 4, {last}, true});
  std::vector<float> row;
  e.forward(v, &row);
  p->assign(row.begin(), row.begin() + V);
  q->assign(draft.begin() + 3 * V, draft.begin() + 4 * V);
  e.release_slot(0);
}

// ---- test bodies (run on the CPU by tests/unit/speculative_test.cc, on the GPU by tests/gpu/cuda_spec_test.cu) ----

// Greedy: accept while the draft equals the target's argmax, then the argmax of the first unmatched row (recovered)
// or of row K (bonus). Three trials of K = 2 over V = 4: drafts [1, 2], [1, 3], [0, 2] against argmaxes 1, 2, 0.
inline void check_greedy_verdicts(OpsBackend& be) {
  SpecTrials s;
  s.V = 4;
  s.K = 2;
  const int32_t want[3][2] = {{1, 2}, {1, 3}, {0, 2}};
  auto one_hot = [](int32_t v) {
    std::vector<float> l(4, 0.0f);
    l[v] = 5.0f;
    return l;
  };
  s.draft_row = [&](int64_t i, int64_t j, const std::vector<int32_t>&) { return one_hot(want[i][j]); };
  const int32_t target_argmax[3] = {1, 2, 0};
  s.target_row = [&](int64_t, int64_t r, const std::vector<int32_t>&) { return one_hot(target_argmax[r]); };
  const SpecRound round = run_spec_round(be, s, trial_params(3, 0.0f, 1.0f, 0));
  EXPECT_EQ(round.counts, (std::vector<int32_t>{3, 2, 1}));
  EXPECT_EQ(round.out, (std::vector<int32_t>{1, 2, 0, /**/ 1, 2, -1, /**/ 1, -1, -1}));
}

// Sampled, K = 1, on a target p and a drafter q: the first emitted token (the accepted draft, or the token drawn from
// max(0, p - q)) must be distributed as p, and both branches must occur.
inline void check_first_token_follows_target(OpsBackend& be, const std::vector<float>& p_logits,
                                             const std::vector<float>& q_logits, float temperature, float top_p,
                                             int64_t trials, const char* what) {
  const int64_t V = static_cast<int64_t>(p_logits.size());
  SpecTrials s;
  s.V = V;
  s.K = 1;
  s.draft_row = [&](int64_t, int64_t, const std::vector<int32_t>&) { return q_logits; };
  s.target_row = [&](int64_t, int64_t, const std::vector<int32_t>&) { return p_logits; };
  const SpecRound round = run_spec_round(be, s, trial_params(trials, temperature, top_p, 7));
  SamplingParams sp;
  sp.temperature = temperature;
  sp.top_p = top_p;
  const std::vector<float> p = sampling_distribution(p_logits.data(), V, sp);
  std::map<int64_t, int64_t> counts;
  int64_t accepted = 0;
  for (int64_t i = 0; i < trials; ++i) {
    ASSERT_TRUE(round.counts[i] == 1 || round.counts[i] == 2) << what << ": count " << round.counts[i];
    accepted += round.counts[i] - 1;
    if (round.counts[i] == 2) {
      ASSERT_EQ(round.out[i * 2], round.drafts[i][0]) << what;
    }
    ++counts[round.out[i * 2]];
  }
  std::map<int64_t, double> probs;
  for (int64_t t = 0; t < V; ++t) {
    if (p[t] > 0) probs[t] = p[t];
  }
  const double pv = chi_square_p_value(counts, probs, trials);
  std::printf("%s: acceptance %.3f, chi-square p-value %.4f\n", what, static_cast<double>(accepted) / trials, pv);
  EXPECT_GE(pv, 0.001) << what;
  EXPECT_GT(accepted, trials / 20) << what;
  EXPECT_LT(accepted, trials) << what;
}

// Sampled, K = 2, synthetic target p(x), p(y | x), p(z | x, y) and drafter q(x), q(y | x) over V = 5: the first two
// emitted tokens (accepted drafts, recovered or bonus tokens; y drawn from p(. | x) when only x was emitted) must
// follow p(x) p(y | x).
inline void check_joint_over_two_drafts(OpsBackend& be, int64_t trials) {
  const int64_t V = 5;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  auto random_logits = [&] {
    std::vector<float> l(V);
    for (float& x : l) x = u(rng);
    return l;
  };
  std::vector<std::vector<float>> p1(V), q1(V), p2(V * V);
  const std::vector<float> p0 = random_logits(), q0 = random_logits();
  for (int64_t x = 0; x < V; ++x) {
    p1[x] = random_logits();
    q1[x] = random_logits();
    for (int64_t y = 0; y < V; ++y) p2[x * V + y] = random_logits();
  }
  SpecTrials s;
  s.V = V;
  s.K = 2;
  s.draft_row = [&](int64_t, int64_t j, const std::vector<int32_t>& d) { return j == 0 ? q0 : q1[d[0]]; };
  s.target_row = [&](int64_t, int64_t r, const std::vector<int32_t>& d) {
    return r == 0 ? p0 : (r == 1 ? p1[d[0]] : p2[d[0] * V + d[1]]);
  };
  const SpecRound round = run_spec_round(be, s, trial_params(trials, 1.0f, 1.0f, 11));
  SamplingParams sp;
  sp.temperature = 1.0f;
  auto dist = [&](const std::vector<float>& l) { return sampling_distribution(l.data(), V, sp); };
  Sampler next(sp, 99);  // the following step's draw of y when only x was emitted
  std::map<int64_t, int64_t> counts;
  for (int64_t i = 0; i < trials; ++i) {
    const int32_t* o = round.out.data() + i * 3;
    const int32_t x = o[0];
    const int32_t y = round.counts[i] >= 2 ? o[1] : next.draw(dist(p1[x]));
    ++counts[x * V + y];
  }
  std::map<int64_t, double> probs;
  const std::vector<float> px = dist(p0);
  for (int64_t x = 0; x < V; ++x) {
    const std::vector<float> py = dist(p1[x]);
    for (int64_t y = 0; y < V; ++y) probs[x * V + y] = static_cast<double>(px[x]) * py[y];
  }
  const double pv = chi_square_p_value(counts, probs, trials);
  std::printf("sampled K=2 joint: chi-square p-value %.4f\n", pv);
  EXPECT_GE(pv, 0.001);
}

}  // namespace dsv4::test
