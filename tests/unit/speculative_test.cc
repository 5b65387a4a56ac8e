// Speculative decoding with the MTP drafter: greedy output identical to plain decoding (several random
// checkpoints, prompts of different lengths batched together, K = 1..3), rollback when most drafts are
// rejected, real acceptance on the trained default model, and sampled speculative decoding keeping the
// target's distribution (chi-square).
#include <cmath>
#include <filesystem>
#include <map>

#include "dsv4/model/random_checkpoint.h"
#include "dsv4/runtime/engine.h"
#include "dsv4/runtime/speculative.h"
#include "test_util.h"

namespace dsv4 {
namespace {

std::string random_checkpoint(uint64_t seed) {
  const std::string dir = (std::filesystem::temp_directory_path() / ("dsv4_spec_" + std::to_string(seed))).string();
  if (!std::filesystem::exists(dir + "/model.safetensors")) write_random_checkpoint(dir, tiny_config(), seed);
  return dir;
}

std::vector<std::vector<int32_t>> prompts_for(int64_t vocab, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::vector<std::vector<int32_t>> out;
  for (int len : {3, 9, 17, 30}) {  // different lengths, batched together
    std::vector<int32_t> p;
    for (int i = 0; i < len; ++i) p.push_back(static_cast<int32_t>(2 + rng() % (vocab - 2)));
    out.push_back(p);
  }
  return out;
}

GenerateResult run(Engine& e, const std::vector<std::vector<int32_t>>& prompts, int64_t k, int64_t n = 24) {
  GenerateOptions go;
  go.max_new_tokens = n;
  go.spec_tokens = k;
  go.stop_at_eos = false;
  return e.generate(prompts, go);
}

TEST(Speculative, GreedyIsTokenIdenticalToPlainDecoding) {
  for (uint64_t seed : {11, 12, 13}) {
    Engine e(random_checkpoint(seed), EngineOptions{});
    const auto prompts = prompts_for(e.config().vocab_size, seed);
    const GenerateResult plain = run(e, prompts, 0);
    for (size_t i = 0; i < prompts.size(); ++i) {  // batching does not change a sequence's tokens
      EXPECT_EQ(run(e, {prompts[i]}, 0).tokens[0], plain.tokens[i]) << "seed " << seed << " prompt " << i;
    }
    for (int64_t k : {1, 2, 3}) {
      const GenerateResult spec = run(e, prompts, k);
      EXPECT_EQ(spec.tokens, plain.tokens) << "seed " << seed << " K=" << k;
      EXPECT_EQ(spec.stats.drafted_tokens, spec.stats.draft_steps * k);
    }
  }
}

TEST(Speculative, RollbackWhenMostDraftsAreRejected) {
  // A random drafter almost never agrees with the target: nearly every step rejects at d_1 and the
  // target's KV, compressor and the drafter's state must be rewritten for the rejected positions.
  Engine e(random_checkpoint(21), EngineOptions{});
  const auto prompts = prompts_for(e.config().vocab_size, 21);
  const GenerateResult plain = run(e, prompts, 0, 48);
  const GenerateResult spec = run(e, prompts, 3, 48);
  EXPECT_EQ(spec.tokens, plain.tokens);
  std::printf("random drafter: acceptance %.3f over %lld drafts\n", spec.stats.acceptance_rate(),
              static_cast<long long>(spec.stats.drafted_tokens));
  EXPECT_LT(spec.stats.acceptance_rate(), 0.2);
  EXPECT_GT(spec.stats.drafted_tokens, 100);
}

TEST(Speculative, TrainedModelAcceptsDraftsAndKeepsGreedyOutput) {
  Engine e(test::source_dir() + "/models/dsv4-tiny-kjv", EngineOptions{});
  const std::vector<std::vector<int32_t>> prompts = {{0, 1035, 509, 456}, {0, 320, 1205, 14, 292, 1035, 379}};
  const GenerateResult plain = run(e, prompts, 0, 64);
  for (int64_t k : {1, 2, 3}) {
    const GenerateResult spec = run(e, prompts, k, 64);
    EXPECT_EQ(spec.tokens, plain.tokens) << "K=" << k;
    std::printf("dsv4-tiny-kjv K=%lld: acceptance %.3f, mean accepted length %.2f\n", static_cast<long long>(k),
                spec.stats.acceptance_rate(), spec.stats.mean_accepted_length());
    if (k == 2) {
      EXPECT_GT(spec.stats.acceptance_rate(), 0.3);
    }
  }
}

TEST(Speculative, GreedyVerdicts) {
  const int64_t V = 4;
  // Row i of the target's logits predicts the token after [last, d_1..d_i].
  const std::vector<float> logits = {0, 5, 0, 0,   // argmax 1
                                     0, 0, 5, 0,   // argmax 2
                                     5, 0, 0, 0};  // argmax 0
  Sampler greedy(SamplingParams{});
  DraftVerdict v = verify_drafts(logits.data(), V, {1, 2}, {}, greedy);
  EXPECT_EQ(v.accepted, 2);
  EXPECT_EQ(v.next_token, 0);  // bonus token
  v = verify_drafts(logits.data(), V, {1, 3}, {}, greedy);
  EXPECT_EQ(v.accepted, 1);
  EXPECT_EQ(v.next_token, 2);  // recovered token
  v = verify_drafts(logits.data(), V, {0, 2}, {}, greedy);
  EXPECT_EQ(v.accepted, 0);
  EXPECT_EQ(v.next_token, 1);
}

// Upper regularised incomplete gamma Q(a, x) (series / continued fraction), for chi-square p-values.
double gamma_q(double a, double x) {
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

// Chi-square goodness of fit of counts against probabilities; bins with expected count < 5 are pooled.
double chi_square_p_value(const std::map<int64_t, int64_t>& counts, const std::map<int64_t, double>& probs,
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
  for (const auto& [key, c] : counts) {  // outcomes with zero probability must never be drawn
    if (!probs.count(key)) return 0.0;
  }
  if (pooled_expected > 0) {
    chi2 += (pooled_observed - pooled_expected) * (pooled_observed - pooled_expected) / pooled_expected;
    ++bins;
  }
  return gamma_q((bins - 1) / 2.0, chi2 / 2.0);
}

TEST(Speculative, SampledVerificationKeepsTheTargetDistributionOnTheTrainedModel) {
  // p and q from the trained model at one prompt (target logits and the MTP's draft logits), K = 1:
  // the first emitted token of a speculative step must be distributed as plain sampling from p.
  Engine e(test::source_dir() + "/models/dsv4-tiny-kjv", EngineOptions{});
  const int64_t V = e.config().vocab_size;
  const std::vector<int32_t> prompt = {0, 1035, 509, 456};
  BatchBuilder b;
  b.add({0, 0, prompt, true});
  std::vector<float> target, residual;
  e.forward(b, &target, &residual);
  const SamplingParams params{1.0f, 1.0f, 7};
  Sampler first(params, 0);
  const int32_t last = first.sample(target.data() + 3 * V, V);  // the token the drafter continues with
  BatchBuilder m;
  m.add({0, 0, {1035, 509, 456, last}, true});
  std::vector<float> draft_logits, draft_hidden;
  e.mtp_forward(m, residual, &draft_logits, &draft_hidden);
  // The target's row for the verified position: one more forward with [last].
  BatchBuilder v;
  v.add({0, 4, {last}, true});
  std::vector<float> verify_row;
  e.forward(v, &verify_row);
  const std::vector<float> q = sampling_distribution(draft_logits.data() + 3 * V, V, params);
  const std::vector<float> p = sampling_distribution(verify_row.data(), V, params);
  const int64_t draws = 20000;
  // verify_drafts reads K + 1 = 2 rows; the second (after [last, d]) only decides the bonus token, which
  // this test does not count, so any valid row will do.
  std::vector<float> rows = verify_row;
  rows.insert(rows.end(), verify_row.begin(), verify_row.end());
  std::map<int64_t, int64_t> spec_counts, plain_counts;
  Sampler s(params, 1), plain(params, 2);
  int64_t accepted = 0;
  for (int64_t i = 0; i < draws; ++i) {
    const int32_t d = s.draw(q);
    const DraftVerdict verdict = verify_drafts(rows.data(), V, {d}, {q}, s);
    const int32_t emitted = verdict.accepted == 1 ? d : verdict.next_token;
    accepted += verdict.accepted;
    ++spec_counts[emitted];
    ++plain_counts[plain.draw(p)];
  }
  std::map<int64_t, double> probs;
  for (int64_t t = 0; t < V; ++t) {
    if (p[t] > 0) probs[t] = p[t];
  }
  const double p_spec = chi_square_p_value(spec_counts, probs, draws);
  const double p_plain = chi_square_p_value(plain_counts, probs, draws);
  std::printf("sampled K=1: acceptance %.3f, chi-square p-value %.4f (plain sampling: %.4f)\n",
              static_cast<double>(accepted) / draws, p_spec, p_plain);
  EXPECT_GE(p_spec, 0.001);
  EXPECT_GE(p_plain, 0.001);
  EXPECT_GT(accepted, draws / 10);  // the drafter is good enough that both branches are exercised
  EXPECT_LT(accepted, draws);
}

TEST(Speculative, SampledVerificationKeepsJointDistributionOverTwoDrafts) {
  // Synthetic target p(x), p(y | x), p(z | x, y) and drafter q(x), q(y | x) over a small vocabulary: the
  // first two emitted tokens of a K = 2 step (accepted drafts, recovered or bonus tokens) must follow
  // p(x) p(y | x) exactly.
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
  const SamplingParams params{1.0f, 1.0f, 11};
  auto dist = [&](const std::vector<float>& l) { return sampling_distribution(l.data(), V, params); };
  Sampler s(params, 5);
  const int64_t draws = 60000;
  std::map<int64_t, int64_t> counts;
  for (int64_t i = 0; i < draws; ++i) {
    const std::vector<float> qa = dist(q0);
    const int32_t d1 = s.draw(qa);
    const std::vector<float> qb = dist(q1[d1]);
    const int32_t d2 = s.draw(qb);
    std::vector<float> rows = p0;  // target rows after [last], [last, d1], [last, d1, d2]
    rows.insert(rows.end(), p1[d1].begin(), p1[d1].end());
    rows.insert(rows.end(), p2[d1 * V + d2].begin(), p2[d1 * V + d2].end());
    const DraftVerdict v = verify_drafts(rows.data(), V, {d1, d2}, {qa, qb}, s);
    int32_t x, y;
    if (v.accepted == 0) {  // x recovered; y would come from the next step: sample it from the target
      x = v.next_token;
      y = s.draw(dist(p1[x]));
    } else {
      x = d1;
      y = v.accepted == 1 ? v.next_token : d2;
    }
    ++counts[x * V + y];
  }
  std::map<int64_t, double> probs;
  const std::vector<float> px = dist(p0);
  for (int64_t x = 0; x < V; ++x) {
    const std::vector<float> py = dist(p1[x]);
    for (int64_t y = 0; y < V; ++y) probs[x * V + y] = static_cast<double>(px[x]) * py[y];
  }
  const double pv = chi_square_p_value(counts, probs, draws);
  std::printf("sampled K=2 joint: chi-square p-value %.4f\n", pv);
  EXPECT_GE(pv, 0.001);
}

}  // namespace
}  // namespace dsv4
