// Speculative decoding with the MTP drafter on the CPU (the reference of the device path): greedy output identical to
// plain decoding (random checkpoints, the MTP fixture and the default model, prompts of different lengths batched
// together, K = 1..4, continuous batching with sequences joining and finishing mid-step), rollback when most drafts
// are rejected, real acceptance on the trained default model, and the acceptance op keeping the target's sampling
// distribution (chi-square; tests/gpu/cuda_spec_test.cu runs the same bodies on the GPU).
#include <cmath>
#include <filesystem>
#include <map>

#include "dsv4/model/random_checkpoint.h"
#include "dsv4/runtime/engine.h"
#include "scheduler_testing.h"
#include "spec_testing.h"
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
    for (int64_t k : {1, 2, 3, 4}) {
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
  for (int64_t k : {1, 2, 3, 4}) {
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
  test::CpuOps cpu;
  test::check_greedy_verdicts(cpu);
}

TEST(Speculative, SampledVerificationKeepsTheTargetDistributionOnTheTrainedModel) {
  // p and q from the trained model at one prompt (the target's logits and the MTP's draft logits), K = 1: the first
  // emitted token of a speculative step must be distributed as plain sampling from p (ops::speculative_accept, the
  // CPU reference of the device acceptance; Philox streams per trial).
  std::vector<float> p, q;
  test::mtp_target_and_draft_rows(test::source_dir() + "/models/dsv4-tiny-kjv", &p, &q);
  test::CpuOps cpu;
  test::check_first_token_follows_target(cpu, p, q, 1.0f, 1.0f, 20000, "sampled K=1 (T=1)");
  test::check_first_token_follows_target(cpu, p, q, 0.8f, 0.9f, 20000, "sampled K=1 (T=0.8, top-p 0.9)");
}

TEST(Speculative, SampledVerificationKeepsJointDistributionOverTwoDrafts) {
  test::CpuOps cpu;
  test::check_joint_over_two_drafts(cpu, 60000);
}

TEST(Speculative, GreedyIdenticalToPlainOnTheMtpFixture) {
  EngineOptions o;
  o.max_seqs = 4;
  Engine e(test::source_dir() + "/tests/fixtures/mtp/mtp_tiny", o);
  const auto prompts = prompts_for(e.config().vocab_size, 5);
  const GenerateResult plain = run(e, prompts, 0);
  for (int64_t k : {1, 2, 3, 4}) EXPECT_EQ(run(e, prompts, k).tokens, plain.tokens) << "K=" << k;
}

TEST(Speculative, ContinuousBatchingOfSixteenMatchesPlain) {
  // 20 requests of mixed lengths arriving at different steps, up to 16 at once: sequences join running speculative
  // batches, accept different numbers of tokens, and finish in the middle of a step (23 tokens, K up to 4).
  EngineOptions o;
  o.max_seqs = 16;
  o.max_batch_tokens = 96;
  Engine e(test::source_dir() + "/models/dsv4-tiny-kjv", o);
  const auto prompts = test::mixed_prompts(e.config().vocab_size, 20, 41, 40);
  GenerateOptions go = test::greedy(23);
  for (size_t i = 0; i < prompts.size(); ++i) go.arrival_steps.push_back(static_cast<int64_t>(i % 7) * 3);
  const GenerateResult plain = e.generate(prompts, go);
  for (int64_t k : {1, 2, 4}) {
    go.spec_tokens = k;
    const GenerateResult spec = e.generate(prompts, go);
    EXPECT_EQ(spec.tokens, plain.tokens) << "K=" << k;
    std::printf("b<=16 K=%lld: acceptance %.3f, mean accepted length %.2f\n", static_cast<long long>(k),
                spec.stats.acceptance_rate(), spec.stats.mean_accepted_length());
  }
  EXPECT_EQ(e.scheduler_stats().pages_used, 0);
}

TEST(Speculative, SampledOutputIsDeterministicPerSeed) {
  Engine e(test::source_dir() + "/models/dsv4-tiny-kjv", EngineOptions{});
  const std::vector<std::vector<int32_t>> prompts = {{0, 1035, 509, 456}, {0, 320, 1205, 14}};
  GenerateOptions go;
  go.max_new_tokens = 24;
  go.spec_tokens = 2;
  go.stop_at_eos = false;
  go.sampling.temperature = 1.0f;
  go.sampling.top_p = 0.95f;
  go.sampling.seed = 3;
  const GenerateResult a = e.generate(prompts, go), b = e.generate(prompts, go);
  EXPECT_EQ(a.tokens, b.tokens);
  go.sampling.seed = 4;
  EXPECT_NE(e.generate(prompts, go).tokens, a.tokens);
  // top-k / min-p have no device draw: refused with speculative decoding, as penalties are.
  e.set_spec_tokens(2);
  RequestOptions ro;
  ro.sampling.temperature = 1.0f;
  ro.sampling.top_k = 5;
  EXPECT_THROW(e.submit({0, 5}, ro, nullptr), Error);
  e.set_spec_tokens(0);
}

}  // namespace
}  // namespace dsv4
