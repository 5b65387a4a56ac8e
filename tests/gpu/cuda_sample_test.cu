// ops::sample_tokens on the GPU: greedy rows identical to the host argmax_token (ties, NaN, V = 129280), draws
// identical to the CPU reference and distributed as the host sampler's exact distribution (chi-square over counters),
// nucleus and temperature edges, graph replay identical to eager, timings; and the CUDA engine's tokens with device
// sampling vs the host sampling path.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "cuda_test_util.h"
#include "dsv4/io/safetensors.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/runtime/engine.h"
#include "dsv4/runtime/sampler.h"
#include "unit/sample_testing.h"
#include "unit/test_util.h"

namespace dsv4 {
namespace {

constexpr int64_t kFlashVocab = 129280;

struct DeviceSampler {
  test::DeviceEnv env;
  // Tokens for logits [R, V] with `rows` (R = rows.size()), on the GPU.
  std::vector<int32_t> gpu(const std::vector<float>& logits, int64_t V, std::vector<ops::TokenSamplingParams> rows) {
    const int64_t R = static_cast<int64_t>(rows.size());
    test::DevTensor l = test::upload(logits, DType::F32, {R, V});
    test::DevTensor p(DType::U8, {R, static_cast<int64_t>(sizeof(ops::TokenSamplingParams))});
    cuda::copy_to_device(p.t.data(), rows.data(), rows.size() * sizeof(ops::TokenSamplingParams));
    test::DevTensor out(DType::I32, {R});
    test::poison(out.t);
    ops::sample_tokens(env.ctx, out.t, l.t, p.t);
    env.sync();
    return test::download_i32(out.t);
  }
  static std::vector<int32_t> cpu(std::vector<float> logits, int64_t V, std::vector<ops::TokenSamplingParams> rows) {
    return test::sample_on_cpu(std::move(logits), V, std::move(rows));
  }
};

std::vector<float> normal_logits(std::mt19937& rng, size_t n, float stddev) {
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<float> repeat_rows(const std::vector<float>& row, int64_t R) {
  std::vector<float> out;
  for (int64_t r = 0; r < R; ++r) out.insert(out.end(), row.begin(), row.end());
  return out;
}

TEST(CudaSampleTokens, GreedyIsHostArgmax) {
  DSV4_REQUIRE_GPU();
  DeviceSampler s;
  std::mt19937 rng(3);
  for (int64_t V : {int64_t{1}, int64_t{37}, int64_t{513}, kFlashVocab}) {
    const int64_t R = 8;
    std::vector<float> l = normal_logits(rng, R * V, 3.0f);
    if (V > 1) {
      l[1 * V + V / 3] = l[1 * V + V - 1] = 50.0f;                 // tie: lowest index
      for (int64_t v = 0; v < V; ++v) l[2 * V + v] = 0.25f;        // all tied: token 0
      l[3 * V] = std::numeric_limits<float>::quiet_NaN();          // NaN in column 0: token 0
      l[4 * V + V / 2] = std::numeric_limits<float>::quiet_NaN();  // a NaN elsewhere never wins
      for (int64_t v = 0; v < V; ++v) l[5 * V + v] = -std::numeric_limits<float>::infinity();
      for (int64_t v = 0; v < V; v += 7) l[6 * V + v] = 9.0f;  // many ties
    }
    const std::vector<int32_t> got = s.gpu(l, V, std::vector<ops::TokenSamplingParams>(R));
    for (int64_t r = 0; r < R; ++r) {
      EXPECT_EQ(got[r], argmax_token(l.data() + r * V, V)) << "V " << V << " row " << r;
    }
  }
}

// The GPU's draws are the CPU reference's: same nucleus, same Philox point, same lane-major walk. A token can only
// differ where a weight's expf differs by an ulp right at a nucleus or draw boundary.
TEST(CudaSampleTokens, DrawsMatchTheCpuReference) {
  DSV4_REQUIRE_GPU();
  DeviceSampler s;
  std::mt19937 rng(17);
  for (int64_t V : {int64_t{7}, int64_t{600}, int64_t{5000}, kFlashVocab}) {
    const int64_t R = V == kFlashVocab ? 24 : 96;
    const std::vector<float> l = normal_logits(rng, R * V, 2.5f);
    std::vector<ops::TokenSamplingParams> rows;
    const float temps[] = {1.0f, 0.6f, 1.7f, 1e-3f}, tops[] = {1.0f, 0.95f, 0.7f, 0.2f, 1e-4f};
    for (int64_t r = 0; r < R; ++r) {
      rows.push_back(test::sampling_row(temps[r % 4], tops[(r / 4) % 5], 99 + r, r % 3, static_cast<uint64_t>(r) * 7));
    }
    const std::vector<int32_t> gpu = s.gpu(l, V, rows), cpu = DeviceSampler::cpu(l, V, rows);
    int64_t differ = 0;
    for (int64_t r = 0; r < R; ++r) differ += gpu[r] != cpu[r];
    std::printf("V %ld: %ld of %ld sampled rows differ from the CPU reference\n", static_cast<long>(V),
                static_cast<long>(differ), static_cast<long>(R));
    EXPECT_EQ(differ, 0) << "V " << V;
  }
}

TEST(CudaSampleTokens, DrawsFollowTheExactDistribution) {
  DSV4_REQUIRE_GPU();
  DeviceSampler s;
  std::mt19937 rng(23);
  const int64_t V = 32, N = 40000;
  const std::vector<float> row = normal_logits(rng, V, 1.5f);
  const std::vector<float> l = repeat_rows(row, N);
  for (float T : {1.0f, 0.5f, 3.0f}) {
    for (float top_p : {1.0f, 0.9f, 0.6f}) {
      std::vector<ops::TokenSamplingParams> rows;
      for (int64_t i = 0; i < N; ++i) {  // 40 seeds × 1000 counters
        rows.push_back(test::sampling_row(T, top_p, 1000 + i % 40, 0, static_cast<uint64_t>(i / 40)));
      }
      test::expect_matches_distribution(s.gpu(l, V, rows), row, T, top_p,
                                        "GPU T " + std::to_string(T) + " top_p " + std::to_string(top_p));
    }
  }
}

TEST(CudaSampleTokens, NucleusAndTemperatureEdges) {
  DSV4_REQUIRE_GPU();
  DeviceSampler s;
  std::mt19937 rng(29);
  const int64_t V = kFlashVocab, R = 64;
  std::vector<float> row = normal_logits(rng, V, 2.0f);
  row[1000] = row[70000] = 12.0f;  // a tied leader pair, far apart
  const std::vector<float> l = repeat_rows(row, R);
  auto run = [&](float T, float top_p) {
    std::vector<ops::TokenSamplingParams> rows;
    for (int64_t r = 0; r < R; ++r) rows.push_back(test::sampling_row(T, top_p, 5, r, 0));
    return s.gpu(l, V, rows);
  };
  auto distinct = [](const std::vector<int32_t>& t) { return std::set<int32_t>(t.begin(), t.end()); };
  // Tiny top-p and a tiny temperature: the argmax (ties → lowest index); a tiny temperature with top-p 1 splits evenly
  // between the two tied leaders.
  EXPECT_EQ(distinct(run(1.0f, 1e-7f)), (std::set<int32_t>{1000}));
  EXPECT_EQ(distinct(run(1e-4f, 0.3f)), (std::set<int32_t>{1000}));
  EXPECT_EQ(distinct(run(1e-4f, 1.0f)), (std::set<int32_t>{1000, 70000}));
  // top-p 1 and a huge temperature: the whole vocabulary, the GPU equal to the CPU reference.
  const std::vector<int32_t> hot = run(1e6f, 1.0f);
  EXPECT_GT(distinct(hot).size(), static_cast<size_t>(R - 2));
  std::vector<ops::TokenSamplingParams> rows;
  for (int64_t r = 0; r < R; ++r) rows.push_back(test::sampling_row(1e6f, 1.0f, 5, r, 0));
  EXPECT_EQ(hot, DeviceSampler::cpu(l, V, rows));
  // Many tokens tied at the nucleus boundary (a flat vocabulary): the CPU's lowest-index choice.
  std::vector<float> flat(V, 0.0f);
  rows.assign(8, test::sampling_row(1.0f, 0.37f, 77, 0, 0));
  for (int64_t r = 0; r < 8; ++r) rows[r].counter = r;
  const std::vector<float> flat_rows = repeat_rows(flat, 8);
  const std::vector<int32_t> got = s.gpu(flat_rows, V, rows);
  EXPECT_EQ(got, DeviceSampler::cpu(flat_rows, V, rows));
  for (int32_t t : got) EXPECT_LT(t, static_cast<int32_t>(0.37 * V) + 1);
}

// Captured in a CUDA graph, the op reads its parameters from the device buffer at replay: a replay after rewriting the
// counters gives the eager tokens of the new counters.
TEST(CudaSampleTokens, GraphReplayMatchesEager) {
  DSV4_REQUIRE_GPU();
  test::DeviceEnv env;
  std::mt19937 rng(31);
  const int64_t V = kFlashVocab, R = 4;
  test::DevTensor l = test::upload(normal_logits(rng, R * V, 2.0f), DType::F32, {R, V});
  test::DevTensor p(DType::U8, {R, static_cast<int64_t>(sizeof(ops::TokenSamplingParams))});
  test::DevTensor out(DType::I32, {R});
  std::vector<ops::TokenSamplingParams> rows = {
      test::sampling_row(1.0f, 0.9f, 1, 0, 0), test::sampling_row(0.0f, 1.0f, 1, 1, 0),
      test::sampling_row(0.8f, 1.0f, 1, 2, 0), test::sampling_row(1.3f, 0.5f, 1, 3, 0)};
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(env.stream(), cudaStreamCaptureModeGlobal));
  ops::sample_tokens(env.ctx, out.t, l.t, p.t);
  DSV4_CUDA_CHECK(cudaStreamEndCapture(env.stream(), &graph));
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (uint64_t counter : {0u, 1u, 2u}) {
    for (auto& r : rows) r.counter = counter;
    cuda::copy_to_device(p.t.data(), rows.data(), rows.size() * sizeof(ops::TokenSamplingParams));
    test::poison(out.t);
    DSV4_CUDA_CHECK(cudaGraphLaunch(exec, env.stream()));
    env.sync();
    const std::vector<int32_t> replayed = test::download_i32(out.t);
    test::poison(out.t);
    ops::sample_tokens(env.ctx, out.t, l.t, p.t);
    env.sync();
    EXPECT_EQ(replayed, test::download_i32(out.t)) << "counter " << counter;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

// Device sampling of R Flash-vocabulary rows vs what the host path costs per step: the D2H copy of the logits and the
// host sampler (greedy scan, or softmax + sort for top-p).
TEST(CudaSampleTokens, Timing) {
  DSV4_REQUIRE_GPU();
  test::DeviceEnv env;
  std::mt19937 rng(37);
  const int64_t V = kFlashVocab;
  for (int64_t R : {int64_t{1}, int64_t{8}}) {
    const std::vector<float> host_logits = normal_logits(rng, R * V, 2.5f);
    test::DevTensor l = test::upload(host_logits, DType::F32, {R, V});
    test::DevTensor p(DType::U8, {R, static_cast<int64_t>(sizeof(ops::TokenSamplingParams))});
    test::DevTensor out(DType::I32, {R});
    std::vector<float> pinned_copy(static_cast<size_t>(R * V));
    for (auto [T, top_p] : {std::pair{0.0f, 1.0f}, std::pair{1.0f, 1.0f}, std::pair{1.0f, 0.9f}}) {
      std::vector<ops::TokenSamplingParams> rows(R, test::sampling_row(T, top_p, 1, 0, 0));
      cuda::copy_to_device(p.t.data(), rows.data(), rows.size() * sizeof(ops::TokenSamplingParams));
      cudaEvent_t a, b;
      DSV4_CUDA_CHECK(cudaEventCreate(&a));
      DSV4_CUDA_CHECK(cudaEventCreate(&b));
      ops::sample_tokens(env.ctx, out.t, l.t, p.t);  // warm-up
      const int reps = 50;
      DSV4_CUDA_CHECK(cudaEventRecord(a, env.stream()));
      for (int i = 0; i < reps; ++i) ops::sample_tokens(env.ctx, out.t, l.t, p.t);
      DSV4_CUDA_CHECK(cudaEventRecord(b, env.stream()));
      env.sync();
      float ms = 0;
      DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      cudaEventDestroy(a);
      cudaEventDestroy(b);
      // The host path: copy the logits back, then sample each row.
      const auto t0 = std::chrono::steady_clock::now();
      cuda::copy_to_host(pinned_copy.data(), l.t.data(), pinned_copy.size() * sizeof(float));
      SamplingParams sp;
      sp.temperature = T;
      sp.top_p = top_p;
      Sampler sampler(sp);
      int32_t sink = 0;
      for (int64_t r = 0; r < R; ++r) sink += sampler.sample(pinned_copy.data() + r * V, V);
      const double host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      std::printf(
          "sample_tokens V %ld R %ld T %.1f top_p %.2f: device %.1f "
          "us/call; host path (D2H + Sampler) %.1f us "
          "(token sum %d)\n",
          static_cast<long>(V), static_cast<long>(R), T, top_p, 1e3 * ms / reps, 1e3 * host_ms, sink);
    }
  }
}

// The engine on CUDA samples on the device when nothing needs the logits. Greedy tokens equal the host path's (forced
// by an on_target_logits callback) for eager and graph engines; sampled tokens are deterministic per seed and change
// with it.
TEST(CudaSampleTokens, EngineDeviceSamplingMatchesHostPath) {
  DSV4_REQUIRE_GPU();
  const std::string dir = test::fixture_dir("tiny_a");
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9, 14, 3, 7}, {2, 8, 4, 11, 6, 10, 12, 13, 15}};
  for (bool eager : {true, false}) {
    EngineOptions o;
    o.device = Device::kCUDA;
    o.max_seqs = 2;
    o.max_model_len = 4096;
    o.max_batch_tokens = 512;
    o.kv_cache_memory = int64_t{256} << 20;
    o.enforce_eager = eager;
    Engine engine(dir, o);
    GenerateOptions go;
    go.max_new_tokens = 24;
    go.stop_at_eos = false;
    const GenerateResult device_greedy = engine.generate(prompts, go);
    GenerateOptions host = go;
    host.on_target_logits = [](const std::vector<float>&) {};  // a logits consumer keeps the host path
    const GenerateResult host_greedy = engine.generate(prompts, host);
    EXPECT_EQ(device_greedy.tokens, host_greedy.tokens) << (eager ? "eager" : "graphs");
    go.sampling.temperature = 2.0f;  // flatter than the random fixture's logits: seeds differ visibly
    go.sampling.top_p = 0.95f;
    go.sampling.seed = 1;
    const GenerateResult a = engine.generate(prompts, go), b = engine.generate(prompts, go);
    go.sampling.seed = 2;
    const GenerateResult c = engine.generate(prompts, go);
    EXPECT_EQ(a.tokens, b.tokens) << (eager ? "eager" : "graphs");
    EXPECT_NE(a.tokens, c.tokens) << (eager ? "eager" : "graphs");
    std::printf(
        "%s engine: greedy device == host path over %zu x %ld tokens; "
        "sampled seed 1 prompt 0:",
        eager ? "eager" : "graph", prompts.size(), static_cast<long>(go.max_new_tokens));
    for (int32_t t : a.tokens[0]) std::printf(" %d", t);
    std::printf("\n");
  }
}

// Engine::decode_greedy on the device (each step queued before the previous one's token is back, its id taken on the
// device) draws what forward_greedy draws step by step from the same prompt and what the CPU engine draws, eager and
// under graphs. Each run starts from the prompt on a released slot (a sequence cannot be rewound past its window
// rings' slack).
TEST(CudaSampleTokens, PipelinedDecodeGreedyMatchesStepByStep) {
  DSV4_REQUIRE_GPU();
  const std::string dir = test::fixture_dir("tiny_a");
  const std::vector<int32_t> prompt = {1, 5, 9, 14, 3, 7};
  const int32_t pos = static_cast<int32_t>(prompt.size());
  constexpr int kSteps = 12;
  auto run = [&](Engine& engine) {
    auto prefill = [&] {
      engine.release_slot(0);
      BatchBuilder a;
      a.add({0, 0, prompt, true});
      return engine.forward_greedy(a).back();
    };
    const int32_t first = prefill();
    std::vector<int32_t> step_by_step;
    int32_t next = first;
    for (int32_t p = pos; p < pos + kSteps; ++p) {
      BatchBuilder g;
      g.add({0, p, {next}, false});
      next = engine.forward_greedy(g, /*uniform_decode=*/true).at(0);
      step_by_step.push_back(next);
    }
    EXPECT_EQ(prefill(), first);
    const std::vector<int32_t> pipelined = engine.decode_greedy(0, pos, first, kSteps);
    EXPECT_EQ(pipelined, step_by_step);
    engine.release_slot(0);
    return pipelined;
  };
  EngineOptions o;
  o.max_seqs = 1;
  o.max_model_len = 4096;
  o.max_batch_tokens = 512;
  o.kv_cache_memory = int64_t{256} << 20;
  o.cuda_precision = DType::F32;  // the CPU engine's tokens, exactly
  Engine cpu(dir, o);
  const std::vector<int32_t> expect = run(cpu);
  o.device = Device::kCUDA;
  for (bool eager : {true, false}) {
    o.enforce_eager = eager;
    Engine engine(dir, o);
    EXPECT_EQ(run(engine), expect) << (eager ? "eager" : "graphs");
  }
}

// The non-finite flags on the GPU: the same as the CPU reference's for rows with a NaN or an infinity in any of the
// cluster's slices (first, middle, last element of a Flash-sized row), greedy and sampled; tokens unchanged.
TEST(CudaSampleTokens, NonFiniteRowsAreFlaggedLikeTheCpu) {
  DSV4_REQUIRE_GPU();
  DeviceSampler s;
  std::mt19937 rng(17);
  const int64_t V = kFlashVocab, R = 8;
  std::vector<float> logits = normal_logits(rng, static_cast<size_t>(R * V), 1.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  logits[1 * V + 0] = nan;
  logits[2 * V + V / 2] = inf;
  logits[3 * V + V - 1] = -inf;
  logits[5 * V + V / 3] = nan;  // a sampled row
  std::vector<ops::TokenSamplingParams> rows(R);
  for (int64_t r = 4; r < R; ++r) rows[r].temperature = 0.8f, rows[r].seed = 3, rows[r].counter = r;
  test::DevTensor l = test::upload(logits, DType::F32, {R, V});
  test::DevTensor p(DType::U8, {R, static_cast<int64_t>(sizeof(ops::TokenSamplingParams))});
  cuda::copy_to_device(p.t.data(), rows.data(), rows.size() * sizeof(ops::TokenSamplingParams));
  test::DevTensor out(DType::I32, {R}), flags(DType::I32, {R});
  test::poison(out.t);
  test::poison(flags.t);
  ops::sample_tokens(s.env.ctx, out.t, l.t, p.t, Tensor(), flags.t);
  s.env.sync();
  EXPECT_EQ(test::download_i32(flags.t), (std::vector<int32_t>{0, 1, 1, 1, 0, 1, 0, 0}));
  EXPECT_EQ(test::download_i32(out.t), s.gpu(logits, V, rows)) << "the flags change no token";
}

// A NaN in the head's weights makes every position's logit 0 NaN: on the device-sampling path (pipelined decode
// included) the request ends with an error naming the position and the scheduler step, and the engine goes on.
TEST(CudaSampleTokens, NonFiniteLogitsEndTheRequestWithAnError) {
  DSV4_REQUIRE_GPU();
  const std::filesystem::path dir =
      std::filesystem::path(testing::TempDir()) / ("dsv4_nan_head_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  write_random_checkpoint(dir.string(), tiny_config(), 5);
  {
    const Checkpoint ck = Checkpoint::open(dir.string());
    const TensorInfo* head = ck.find("head.weight");
    ASSERT_NE(head, nullptr);
    ASSERT_TRUE(head->dtype == DType::BF16 || head->dtype == DType::F32);
    std::fstream f(dir / "model.safetensors", std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(head->offset));
    if (head->dtype == DType::BF16) {
      const uint16_t nan_bf16 = 0x7fc0;
      f.write(reinterpret_cast<const char*>(&nan_bf16), 2);
    } else {
      const float nan_f32 = std::numeric_limits<float>::quiet_NaN();
      f.write(reinterpret_cast<const char*>(&nan_f32), 4);
    }
  }
  EngineOptions o;
  o.device = Device::kCUDA;
  o.max_seqs = 2;
  o.max_model_len = 4096;
  o.kv_cache_memory = int64_t{256} << 20;
  Engine engine(dir.string(), o);
  GenerateOptions go;
  go.max_new_tokens = 4;
  try {
    engine.generate({{3, 4, 5}}, go);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("non-finite logits (a NaN or an infinity, flagged by the sampler) at position 2 of "
                        "request"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("scheduler step"), std::string::npos) << what;
  }
  EXPECT_TRUE(engine.idle());
  std::filesystem::remove_all(dir);
}

// Plain decode on the device keeps two steps in flight (the next step's ids come from this step's tokens on the
// device). When a sequence stops on an end-of-sequence token, the step already queued behind it is dropped for
// that sequence and kept for the others: the tokens equal the host path's, step by step. The fixture's config
// is copied with an eos id that one prompt's greedy output meets early and the other's late or never.
TEST(CudaSampleTokens, PipelinedDecodeStopsAtEosLikeTheHostPath) {
  DSV4_REQUIRE_GPU();
  const std::string dir = test::fixture_dir("tiny_a");
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9, 14, 3, 7}, {2, 8, 4, 11, 6, 10, 12, 13, 15}};
  EngineOptions o;
  o.device = Device::kCUDA;
  o.max_seqs = 2;
  o.max_model_len = 4096;
  o.max_batch_tokens = 512;
  o.kv_cache_memory = int64_t{256} << 20;
  GenerateOptions go;
  go.max_new_tokens = 24;
  go.stop_at_eos = false;
  std::vector<std::vector<int32_t>> free_run;
  {
    Engine engine(dir, o);
    free_run = engine.generate(prompts, go).tokens;
  }
  // The first token of prompt 0's output (from step 2 on) that prompt 1 meets at least 3 steps later or never.
  auto first_at = [](const std::vector<int32_t>& v, int32_t t) {
    return static_cast<size_t>(std::find(v.begin(), v.end(), t) - v.begin());
  };
  int32_t eos = -1;
  for (size_t j = 2; j + 3 < free_run[0].size() && eos < 0; ++j) {
    const int32_t t = free_run[0][j];
    if (first_at(free_run[0], t) == j && first_at(free_run[1], t) >= j + 3) eos = t;
  }
  ASSERT_GE(eos, 0) << "no usable eos candidate in the fixture's greedy output";
  const std::filesystem::path eos_dir =
      std::filesystem::path(testing::TempDir()) / ("dsv4_pipelined_eos_" + std::to_string(::getpid()));
  std::filesystem::create_directories(eos_dir);
  ModelConfig cfg = ModelConfig::from_file(dir + "/config.json");
  cfg.eos_token_ids = {eos};
  std::ofstream(eos_dir / "config.json") << cfg.to_json();
  std::filesystem::copy_file(dir + "/model.safetensors", eos_dir / "model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);

  for (bool eager : {true, false}) {
    o.enforce_eager = eager;
    Engine engine(eos_dir.string(), o);
    GenerateOptions stop = go;
    stop.stop_at_eos = true;
    const GenerateResult device_run = engine.generate(prompts, stop);
    GenerateOptions host = stop;
    host.on_target_logits = [](const std::vector<float>&) {};  // the synchronous host-sampling path
    const GenerateResult host_run = engine.generate(prompts, host);
    EXPECT_EQ(device_run.tokens, host_run.tokens) << (eager ? "eager" : "graphs");
    for (size_t p = 0; p < prompts.size(); ++p) {
      const size_t stop_at = std::min(first_at(free_run[p], eos) + 1, free_run[p].size());
      const std::vector<int32_t> want(free_run[p].begin(), free_run[p].begin() + stop_at);
      EXPECT_EQ(device_run.tokens[p], want) << (eager ? "eager" : "graphs") << " prompt " << p;
    }
    std::printf("%s engine: eos %d stops prompt 0 after %zu tokens, prompt 1 after %zu\n", eager ? "eager" : "graph",
                eos, device_run.tokens[0].size(), device_run.tokens[1].size());
  }
  std::filesystem::remove_all(eos_dir);
}

}  // namespace
}  // namespace dsv4
