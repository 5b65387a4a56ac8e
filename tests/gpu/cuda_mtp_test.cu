// The MTP drafter and speculative decoding on the CUDA backend: the drafter against the PyTorch reference
// (tests/fixtures/mtp, as tests/unit/mtp_test.cc does on the CPU), and greedy speculative decoding emitting
// exactly the tokens of plain greedy decoding. Strict at F32; the BF16 figures are reported (on these
// random fixtures bf16 rounding flips near-tied choices, see cuda_model_test.cu).
#include <filesystem>
#include <random>

#include "cuda_test_util.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/runtime/engine.h"
#include "unit/test_util.h"

namespace dsv4 {
namespace {

const char* precision_name(DType p) { return p == DType::F32 ? "F32" : "BF16"; }

std::vector<int32_t> int_tensor(const SafetensorsFile& f, const char* name) {
  const Tensor t = f.view(*f.find(name));
  std::vector<int32_t> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(static_cast<int32_t>(t.ptr<int64_t>()[i]));
  return v;
}

TEST(CudaMtp, DrafterMatchesPyTorchReference) {
  DSV4_REQUIRE_GPU();
  const std::string dir = test::source_dir() + "/tests/fixtures/mtp/mtp_tiny";
  auto f = SafetensorsFile::open(dir + "/expected.safetensors");
  const std::vector<int32_t> ids = int_tensor(*f, "input_ids"), next = int_tensor(*f, "next_ids");
  const std::vector<int32_t> drafts = int_tensor(*f, "draft_ids");
  const std::vector<float> ref_logits = test::to_vector(f->view(*f->find("target_logits")));
  const std::vector<float> ref_residual = test::to_vector(f->view(*f->find("target_residual")));
  const std::vector<float> ref_mtp = test::to_vector(f->view(*f->find("mtp_logits")));
  const std::vector<float> ref_steps = test::to_vector(f->view(*f->find("draft_logits")));
  for (DType p : {DType::F32, DType::BF16}) {
    EngineOptions eo;
    eo.device = Device::kCUDA;
    eo.cuda_precision = p;
    eo.max_seqs = 1;
    eo.max_model_len = 4096;
    eo.max_batch_tokens = 512;
    eo.kv_cache_memory = int64_t{256} << 20;
    Engine engine(dir, eo);
    ASSERT_TRUE(engine.has_mtp());
    const int64_t T = static_cast<int64_t>(ids.size()), V = engine.config().vocab_size, W = engine.config().hc_dim();
    BatchBuilder b;
    b.add({0, 0, ids, true});
    std::vector<float> logits, residual;
    engine.forward(b, &logits, &residual);
    const double e_logits = test::max_rel_error(logits.data(), ref_logits.data(), logits.size());
    const double e_residual = test::max_rel_error(residual.data(), ref_residual.data(), residual.size());
    BatchBuilder m;
    m.add({0, 0, next, true});
    std::vector<float> draft_logits, draft_hidden;
    engine.mtp_forward(m, residual, &draft_logits, &draft_hidden);
    const double e_step0 = test::max_rel_error(draft_logits.data(), ref_mtp.data(), draft_logits.size());
    std::printf("MTP [%s]: target logits %.3g, residual %.3g, draft step 0 %.3g", precision_name(p), e_logits,
                e_residual, e_step0);
    // Greedy draft steps continuing from the drafter's own output (the reference's drafts as inputs).
    std::vector<float> prev(draft_hidden.end() - W, draft_hidden.end());
    double e_steps = 0;
    int agree = 0;
    int32_t d = argmax_token(draft_logits.data() + (T - 1) * V, V);
    for (size_t j = 0; j < drafts.size(); ++j) {
      agree += d == drafts[j];
      BatchBuilder s;
      s.add({0, static_cast<int32_t>(T + j), {drafts[j]}, true});
      std::vector<float> step_logits, step_hidden;
      engine.mtp_forward(s, prev, &step_logits, &step_hidden);
      e_steps = std::max(e_steps, test::max_rel_error(step_logits.data(), ref_steps.data() + j * V, V));
      prev = step_hidden;
      d = argmax_token(step_logits.data(), V);
    }
    std::printf(", draft steps %.3g; %d of %zu drafts as the reference\n", e_steps, agree, drafts.size());
    if (p == DType::F32) {
      EXPECT_LE(e_logits, 1e-3);
      EXPECT_LE(e_residual, 1e-3);
      EXPECT_LE(e_step0, 1e-3);
      EXPECT_LE(e_steps, 1e-3);
      EXPECT_EQ(agree, static_cast<int>(drafts.size()));
    }
  }
}

std::string random_checkpoint(uint64_t seed) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("dsv4_cuda_spec_" + std::to_string(seed))).string();
  if (!std::filesystem::exists(dir + "/model.safetensors")) write_random_checkpoint(dir, tiny_config(), seed);
  return dir;
}

// Greedy speculative decoding (K = 1..3, prompts of different lengths batched) emits exactly the tokens of
// plain greedy decoding, on the GPU as on the CPU, and the GPU's tokens equal the CPU's.
TEST(CudaMtp, GreedySpeculativeEqualsPlainDecoding) {
  DSV4_REQUIRE_GPU();
  for (uint64_t seed : {21, 22}) {
    const std::string dir = random_checkpoint(seed);
    EngineOptions co;
    co.max_seqs = 8;
    co.max_model_len = 4096;
    co.max_batch_tokens = 512;
    co.kv_cache_memory = int64_t{256} << 20;
    Engine cpu(dir, co);
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::vector<std::vector<int32_t>> prompts;
    for (int len : {3, 9, 17, 30}) {
      std::vector<int32_t> pr;
      for (int i = 0; i < len; ++i) pr.push_back(static_cast<int32_t>(2 + rng() % (cpu.config().vocab_size - 2)));
      prompts.push_back(pr);
    }
    GenerateOptions go;
    go.max_new_tokens = 24;
    go.stop_at_eos = false;
    const GenerateResult cpu_plain = cpu.generate(prompts, go);
    for (DType p : {DType::F32, DType::BF16}) {
      EngineOptions o = co;
      o.device = Device::kCUDA;
      o.cuda_precision = p;
      Engine gpu(dir, o);
      go.spec_tokens = 0;
      const GenerateResult plain = gpu.generate(prompts, go);
      std::printf("seed %llu [%s]: plain greedy %s the CPU's", static_cast<unsigned long long>(seed), precision_name(p),
                  plain.tokens == cpu_plain.tokens ? "equals" : "DIFFERS FROM");
      if (p == DType::F32) EXPECT_EQ(plain.tokens, cpu_plain.tokens) << "seed " << seed;
      for (int64_t k : {1, 2, 3, 4}) {
        go.spec_tokens = k;
        const GenerateResult spec = gpu.generate(prompts, go);
        std::printf("; K=%lld %s (acceptance %.2f)", static_cast<long long>(k),
                    spec.tokens == plain.tokens ? "identical" : "DIFFERENT", spec.stats.acceptance_rate());
        if (p == DType::F32) EXPECT_EQ(spec.tokens, plain.tokens) << "seed " << seed << " K=" << k;
        EXPECT_EQ(spec.stats.drafted_tokens, spec.stats.draft_steps * k);
      }
      std::printf("\n");
    }
  }
}

}  // namespace
}  // namespace dsv4
