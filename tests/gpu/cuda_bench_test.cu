// Throughput of the CUDA forward on a mid-size random checkpoint (real head_dim 512, rope 64, window 128,
// CSA rate 4 / HCA rate 128, 16 experts top-6): prefill and decode forwards timed with device events,
// eager and as a replayed CUDA graph. Runs only with DSV4_BENCH=1 (it writes a ~400 MB checkpoint).
#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>

#include "cuda_test_util.h"
#include "dsv4/model/deepseek_v4.h"
#include "dsv4/model/forward_memory.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/runtime/batch.h"

namespace dsv4 {
namespace {

ModelConfig bench_config() {
  ModelConfig c = tiny_config();
  c.vocab_size = 16384;
  c.hidden_size = 512;
  c.moe_intermediate_size = 256;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 8;
  c.head_dim = 512;
  c.rope_head_dim = 64;
  c.q_lora_rank = 256;
  c.o_lora_rank = 256;
  c.o_groups = 4;
  c.num_experts_per_tok = 6;
  c.n_routed_experts = 16;
  c.layer_types.clear();
  c.mlp_layer_types.clear();
  for (int l = 0; l < 8; ++l) {
    c.layer_types.push_back(l == 0 ? AttentionType::kSliding
                                   : (l % 2 ? AttentionType::kCompressedSparse : AttentionType::kHeavilyCompressed));
    c.mlp_layer_types.push_back(l < 2 ? MlpType::kHashMoe : MlpType::kMoe);
  }
  c.compress_rate_hca = 128;
  c.sliding_window = 128;
  c.index_n_heads = 16;
  c.index_head_dim = 128;
  c.index_topk = 64;
  c.num_nextn_predict_layers = 0;
  c.validate();
  return c;
}

struct Timer {
  cudaEvent_t a, b;
  Timer() {
    DSV4_CUDA_CHECK(cudaEventCreate(&a));
    DSV4_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~Timer() {
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  }
  template <typename F>
  float median_ms(cudaStream_t s, int reps, F&& f) {
    std::vector<float> t;
    for (int i = 0; i < reps; ++i) {
      DSV4_CUDA_CHECK(cudaEventRecord(a, s));
      f();
      DSV4_CUDA_CHECK(cudaEventRecord(b, s));
      DSV4_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

TEST(CudaBench, ForwardThroughput) {
  DSV4_REQUIRE_GPU();
  const char* on = std::getenv("DSV4_BENCH");
  if (on == nullptr || std::string(on) != "1") GTEST_SKIP() << "set DSV4_BENCH=1 to run the benchmark";
  const ModelConfig cfg = bench_config();
  const std::string dir = (std::filesystem::temp_directory_path() / "dsv4_cuda_bench").string();
  if (!std::filesystem::exists(dir + "/model.safetensors")) write_random_checkpoint(dir, cfg, 7);
  const Checkpoint ckpt = Checkpoint::open(dir);
  const ModelWeights w = load_weights(ckpt, cfg, {Device::kCUDA, false, DType::BF16});
  ModelOptions mo;
  mo.max_seqs = 8;
  mo.max_model_len = 4096;
  ModelState state(cfg, mo, Device::kCUDA, false);
  const int64_t max_tokens = 2048;
  test::DeviceEnv env(measure_forward_scratch(cfg, w, mo, Device::kCUDA, {max_tokens, max_tokens, false}));
  std::printf("bench model: %zu parameters (bf16 weights %.1f MiB), state %.1f MiB\n", w.parameter_count,
              w.storage.capacity() / 1048576.0, state.bytes() / 1048576.0);
  std::mt19937 rng(1);
  Timer timer;
  test::DevTensor logits(DType::F32, {max_tokens, cfg.vocab_size});
  // Prefill: 8 sequences (slots) of 2048 tokens, in chunks of 256, 1024 or 2048 tokens per forward.
  std::map<int64_t, std::vector<float>> prefill_ms;
  for (int32_t slot = 0; slot < 8; ++slot) {
    const int64_t chunk = std::array<int64_t, 3>{256, 1024, 2048}[slot % 3];
    for (int32_t done = 0; done < 2048; done += static_cast<int32_t>(chunk)) {
      std::vector<int32_t> ids(chunk), pos(chunk);
      for (int64_t i = 0; i < chunk; ++i) {
        ids[i] = static_cast<int32_t>(rng() % cfg.vocab_size);
        pos[i] = done + static_cast<int32_t>(i);
      }
      test::DevTensor dids = test::upload_i32(ids, {chunk}), dpos = test::upload_i32(pos, {chunk});
      test::DevTensor dslot = test::upload_i32(std::vector<int32_t>(chunk, slot), {chunk});
      test::DevTensor dstart = test::upload_i32(std::vector<int32_t>(chunk, done), {chunk});
      test::DevTensor dend = test::upload_i32(std::vector<int32_t>(chunk, done + static_cast<int32_t>(chunk)), {chunk});
      test::DevTensor drows = test::upload_i32({static_cast<int32_t>(chunk - 1)}, {1});
      const BatchMeta meta{dids.t, dpos.t, dslot.t, dstart.t, dend.t, chunk};
      const Tensor out = logits.t.rows(0, 1);
      prefill_ms[chunk].push_back(timer.median_ms(env.stream(), 1, [&] {
        env.scratch().reset();
        target_forward(env.ctx, cfg, w, state, meta, drows.t, out, Tensor());
      }));
    }
  }
  for (auto& [chunk, ms] : prefill_ms) {
    std::sort(ms.begin(), ms.end());
    std::printf("prefill chunk %5lld tokens: median %.2f ms per forward (%zu forwards), %.0f tokens/s\n",
                static_cast<long long>(chunk), ms[ms.size() / 2], ms.size(), chunk / (ms[ms.size() / 2] / 1000.0));
  }
  // Decode: B sequences (slots 0..B-1), one token each, eager vs graph replay.
  for (int64_t B : {int64_t{1}, int64_t{8}}) {
    std::vector<int32_t> ids(B), pos(B), slot(B), start(B), end(B), rows(B);
    for (int64_t i = 0; i < B; ++i) {
      ids[i] = static_cast<int32_t>(rng() % cfg.vocab_size);
      pos[i] = start[i] = 2047;  // re-runs each slot's last position: a valid decode step
      end[i] = 2048;
      slot[i] = static_cast<int32_t>(i);
      rows[i] = static_cast<int32_t>(i);
    }
    test::DevTensor dids = test::upload_i32(ids, {B}), dpos = test::upload_i32(pos, {B});
    test::DevTensor dslot = test::upload_i32(slot, {B}), dstart = test::upload_i32(start, {B});
    test::DevTensor dend = test::upload_i32(end, {B}), drows = test::upload_i32(rows, {B});
    const BatchMeta meta{dids.t, dpos.t, dslot.t, dstart.t, dend.t, B};
    const Tensor out = logits.t.rows(0, B);
    auto step = [&] {
      env.scratch().reset();
      target_forward(env.ctx, cfg, w, state, meta, drows.t, out, Tensor());
    };
    step();
    const float eager = timer.median_ms(env.stream(), 21, step);
    if (B == 8 && std::getenv("DSV4_BENCH_PROFILE") != nullptr) {  // one decode step for `ncu --profile-from-start off`
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      DSV4_CUDA_CHECK(cudaProfilerStart());
      step();
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      DSV4_CUDA_CHECK(cudaProfilerStop());
    }
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    DSV4_CUDA_CHECK(cudaStreamBeginCapture(env.stream(), cudaStreamCaptureModeGlobal));
    step();
    DSV4_CUDA_CHECK(cudaStreamEndCapture(env.stream(), &graph));
    DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    const float replay =
        timer.median_ms(env.stream(), 21, [&] { DSV4_CUDA_CHECK(cudaGraphLaunch(exec, env.stream())); });
    size_t nodes = 0;
    DSV4_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes));
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    std::printf("decode batch %lld: eager %.3f ms, graph replay %.3f ms (%zu nodes), %.0f tokens/s replayed\n",
                static_cast<long long>(B), eager, replay, nodes, B / (replay / 1000.0));
  }
}

}  // namespace
}  // namespace dsv4
