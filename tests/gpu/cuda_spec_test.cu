// Speculative decoding on the device: the acceptance op against its CPU reference (greedy verdicts, identical tokens
// on random rows, the chi-square tests of tests/unit/speculative_test.cc on the GPU), and the CUDA engine's whole
// draft–verify–accept step — greedy output token-identical to K = 0 for K = 1..4 (f32) at b = 1 and b = 16 under
// continuous batching, on the default model and the MTP fixture, with the steps replayed from captured graphs;
// sampled output deterministic per seed.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "dsv4/backend/cuda_device.h"
#include "dsv4/runtime/engine.h"
#include "unit/scheduler_testing.h"
#include "unit/spec_testing.h"
#include "unit/test_util.h"

namespace dsv4 {
namespace {

class GpuOps final : public test::OpsBackend {
 public:
  ExecContext& ctx() override { return env_.ctx; }
  Tensor alloc(DType dtype, std::vector<int64_t> shape) override {
    owned_.push_back(std::make_unique<test::DevTensor>(dtype, shape));
    return owned_.back()->t;
  }
  void write(const Tensor& t, const void* host, size_t bytes) override {
    env_.sync();
    cuda::copy_to_device(t.data(), host, bytes);
  }
  void read(void* host, const Tensor& t, size_t bytes) override {
    env_.sync();
    cuda::copy_to_host(host, t.data(), bytes);
  }

 private:
  test::DeviceEnv env_;
  std::vector<std::unique_ptr<test::DevTensor>> owned_;
};

std::string model_dir() { return test::source_dir() + "/models/dsv4-tiny-kjv"; }

TEST(CudaSpec, GreedyVerdicts) {
  DSV4_REQUIRE_GPU();
  GpuOps gpu;
  test::check_greedy_verdicts(gpu);
}

TEST(CudaSpec, AcceptanceEqualsTheCpuReference) {
  DSV4_REQUIRE_GPU();
  // Random rows (V = 1000, K = 3, 256 trials) where the drafter often agrees: greedy trials must match exactly, sampled
  // ones too unless an expf ulp moves a boundary (none expected at this size).
  const int64_t V = 1000, K = 3, b = 256;
  std::mt19937 rng(17);
  std::normal_distribution<float> n(0.0f, 2.0f);
  std::vector<std::vector<float>> base(4, std::vector<float>(V));
  for (auto& row : base) {
    for (float& x : row) x = n(rng);
  }
  test::SpecTrials s;
  s.V = V;
  s.K = K;
  auto noisy = [&](int64_t trial, int64_t j, int salt) {
    std::vector<float> row = base[static_cast<size_t>(j)];
    std::mt19937 r(static_cast<uint32_t>(trial * 131 + j * 7 + salt));
    std::normal_distribution<float> e(0.0f, 0.3f);
    for (float& x : row) x += e(r);
    return row;
  };
  s.draft_row = [&](int64_t i, int64_t j, const std::vector<int32_t>&) { return noisy(i, j, 1); };
  s.target_row = [&](int64_t i, int64_t r, const std::vector<int32_t>&) { return noisy(i, r, 2); };
  for (const auto& [t, p] : std::vector<std::pair<float, float>>{{0.0f, 1.0f}, {1.0f, 1.0f}, {0.7f, 0.9f}}) {
    test::CpuOps cpu;
    GpuOps gpu;
    const test::SpecRound want = run_spec_round(cpu, s, test::trial_params(b, t, p, 5));
    const test::SpecRound got = run_spec_round(gpu, s, test::trial_params(b, t, p, 5));
    int64_t same = 0, accepted = 0;
    for (int64_t i = 0; i < b; ++i) {
      same += std::equal(want.out.begin() + i * (K + 1), want.out.begin() + (i + 1) * (K + 1),
                         got.out.begin() + i * (K + 1)) &&
              want.counts[i] == got.counts[i];
      accepted += got.counts[i] - 1;
    }
    std::printf("T=%.1f top-p %.1f: %lld of %lld trials identical to the CPU, acceptance %.3f\n", t, p,
                static_cast<long long>(same), static_cast<long long>(b), static_cast<double>(accepted) / (b * K));
    if (t == 0.0f) {
      EXPECT_EQ(got.out, want.out);
      EXPECT_EQ(got.counts, want.counts);
    } else {
      EXPECT_GE(same, b - 2);
    }
  }
}

TEST(CudaSpec, SampledVerificationKeepsTheTargetDistribution) {
  DSV4_REQUIRE_GPU();
  std::vector<float> p, q;
  test::mtp_target_and_draft_rows(model_dir(), &p, &q);
  GpuOps gpu;
  test::check_first_token_follows_target(gpu, p, q, 1.0f, 1.0f, 20000, "GPU sampled K=1 (T=1)");
  test::check_first_token_follows_target(gpu, p, q, 0.8f, 0.9f, 20000, "GPU sampled K=1 (T=0.8, top-p 0.9)");
  GpuOps joint;
  test::check_joint_over_two_drafts(joint, 60000);
}

EngineOptions cuda_options(int64_t max_seqs, std::vector<int64_t> graph_k) {
  EngineOptions o;
  o.device = Device::kCUDA;
  o.cuda_precision = DType::F32;
  o.max_seqs = max_seqs;
  o.max_batch_tokens = 256;
  o.max_model_len = 4096;
  o.kv_cache_memory = int64_t{256} << 20;
  o.spec_graph_tokens = std::move(graph_k);
  return o;
}

// b = 1 and b = 16 with requests arriving at different steps (continuous batching; sequences accept different
// numbers of tokens and finish mid-step), K = 1..4: greedy tokens identical to K = 0 (f32), K = 2 and 4 replayed from
// captured graphs, the others through the same device path eagerly.
TEST(CudaSpec, GreedyIdenticalToPlainUnderContinuousBatching) {
  DSV4_REQUIRE_GPU();
  Engine e(model_dir(), cuda_options(16, {2, 4}));
  bool captured = false;
  for (const GraphEntryInfo& g : e.graph_entries()) captured = captured || (g.runner == "spec-draft K=2" && g.captured);
  EXPECT_TRUE(captured) << e.graph_summary();
  const auto prompts = test::mixed_prompts(e.config().vocab_size, 24, 43, 40);
  GenerateOptions go = test::greedy(23);
  for (size_t i = 0; i < prompts.size(); ++i) go.arrival_steps.push_back(static_cast<int64_t>(i % 6) * 3);
  const GenerateResult plain = e.generate(prompts, go);
  const GenerateResult alone = e.generate({prompts[0]}, test::greedy(40));
  for (int64_t k : {1, 2, 3, 4}) {
    go.spec_tokens = k;
    const GenerateResult spec = e.generate(prompts, go);
    EXPECT_EQ(spec.tokens, plain.tokens) << "b=16 K=" << k;
    const GenerateResult one = e.generate({prompts[0]}, test::greedy(40, k));
    EXPECT_EQ(one.tokens, alone.tokens) << "b=1 K=" << k;
    std::printf("CUDA K=%lld: b<=16 acceptance %.3f (mean accepted length %.2f), b=1 acceptance %.3f\n",
                static_cast<long long>(k), spec.stats.acceptance_rate(), spec.stats.mean_accepted_length(),
                one.stats.acceptance_rate());
  }
  EXPECT_EQ(e.scheduler_stats().pages_used, 0);
}

TEST(CudaSpec, GreedyIdenticalAboveTheLargestBucket) {
  DSV4_REQUIRE_GPU();
  // Capture sizes 1, 2, 4: a step of 12 sequences runs unpadded and eagerly, one of 3 replays the bucket of 4.
  EngineOptions o = cuda_options(12, {2});
  o.capture_sizes = "1,2,4,8,12";
  Engine e(model_dir(), o);
  const auto prompts = test::mixed_prompts(e.config().vocab_size, 12, 47, 30);
  const GenerateResult plain = e.generate(prompts, test::greedy(20));
  EXPECT_EQ(e.generate(prompts, test::greedy(20, 2)).tokens, plain.tokens);
  const std::vector<std::vector<int32_t>> three(prompts.begin(), prompts.begin() + 3);
  EXPECT_EQ(e.generate(three, test::greedy(20, 2)).tokens,
            std::vector<std::vector<int32_t>>(plain.tokens.begin(), plain.tokens.begin() + 3));
}

TEST(CudaSpec, GreedyIdenticalToPlainOnTheMtpFixtureAndTheCpu) {
  DSV4_REQUIRE_GPU();
  const std::string dir = test::source_dir() + "/tests/fixtures/mtp/mtp_tiny";
  EngineOptions co;
  co.max_seqs = 4;
  Engine cpu(dir, co);
  const auto prompts = test::mixed_prompts(cpu.config().vocab_size, 4, 7, 20);
  const GenerateResult want = cpu.generate(prompts, test::greedy(20, 2));
  Engine gpu(dir, cuda_options(4, {3}));
  const GenerateResult plain = gpu.generate(prompts, test::greedy(20));
  for (int64_t k : {1, 2, 3, 4}) EXPECT_EQ(gpu.generate(prompts, test::greedy(20, k)).tokens, plain.tokens) << "K=" << k;
  size_t same = 0;
  for (size_t i = 0; i < prompts.size(); ++i) same += plain.tokens[i] == want.tokens[i];
  std::printf("MTP fixture: CUDA f32 vs CPU speculative %zu of %zu identical\n", same, prompts.size());
  EXPECT_GE(same, prompts.size() - 1);
}

TEST(CudaSpec, SampledIsDeterministicPerSeedAndLikeTheCpu) {
  DSV4_REQUIRE_GPU();
  Engine e(model_dir(), cuda_options(4, {2}));
  const std::vector<std::vector<int32_t>> prompts = {{0, 1035, 509, 456}, {0, 320, 1205, 14}};
  GenerateOptions go = test::greedy(24, 2);
  go.sampling.temperature = 0.8f;
  go.sampling.top_p = 0.95f;
  go.sampling.seed = 3;
  const GenerateResult a = e.generate(prompts, go), b = e.generate(prompts, go);
  EXPECT_EQ(a.tokens, b.tokens);
  // The CPU runs the same algorithm with the same Philox draws: equal unless an expf ulp moves a draw (f32 here).
  EngineOptions co;
  co.max_seqs = 4;
  Engine cpu(model_dir(), co);
  const GenerateResult c = cpu.generate(prompts, go);
  std::printf("sampled K=2: GPU %s the CPU\n", c.tokens == a.tokens ? "equals" : "differs from");
  go.sampling.seed = 4;
  EXPECT_NE(e.generate(prompts, go).tokens, a.tokens);
}

}  // namespace
}  // namespace dsv4
