// Whole-model parity of the CPU backend with transformers' token-by-token logits (tests/fixtures/hf).
#include <algorithm>
#include <memory>
#include <numeric>
#include <random>

#include "dsv4/model/deepseek_v4.h"
#include "dsv4/model/forward_memory.h"
#include "dsv4/runtime/batch.h"
#include "test_util.h"

namespace dsv4 {
namespace {

struct Fixture {
  ModelConfig cfg;
  Checkpoint ckpt;
  ModelWeights weights;
  std::unique_ptr<SafetensorsFile> expected;
  std::vector<int32_t> ids;
  std::vector<float> logits;  // [T, V]
};

std::unique_ptr<Fixture> load_fixture(const std::string& name) {
  auto f = std::make_unique<Fixture>();
  const std::string dir = test::fixture_dir(name);
  f->cfg = ModelConfig::from_file(dir + "/config.json");
  f->ckpt = Checkpoint::open(dir);
  f->weights = load_weights(f->ckpt, f->cfg, {Device::kCPU, true});
  f->expected = SafetensorsFile::open(dir + "/expected.safetensors");
  const Tensor ids = f->expected->view(*f->expected->find("input_ids"));
  for (int64_t i = 0; i < ids.numel(); ++i) f->ids.push_back(static_cast<int32_t>(ids.ptr<int64_t>()[i]));
  f->logits = test::to_vector(f->expected->view(*f->expected->find("logits")));
  return f;
}

// Runs the sequence through the model in chunks of the given sizes; returns logits for every token. scattered:
// the smallest page size the config allows and the sequence's pages spread over a pool three times larger in
// a random order — ring rows and compressor windows cross page boundaries everywhere.
std::vector<float> run_chunks(const Fixture& f, const std::vector<int64_t>& chunks, bool scattered = false) {
  ModelOptions opt;
  opt.max_model_len = 256;
  if (scattered) {
    opt.page_tokens = std::max<int64_t>(f.cfg.compress_rate_csa, f.cfg.compress_rate_hca);
    for (AttentionType t : f.cfg.layer_types) {
      if (f.cfg.compress_rate(t) > 0) opt.page_tokens = std::lcm(opt.page_tokens, f.cfg.compress_rate(t));
    }
    const StateLayout layout = StateLayout::make(f.cfg, opt, DType::F32, false);
    opt.num_pages = 3 * layout.table_columns();
  }
  ModelState state(f.cfg, opt, Device::kCPU, false);
  if (scattered) {  // a random permutation of the pool's pages, the first table_columns of them to slot 0
    std::vector<int32_t> pages(static_cast<size_t>(state.num_pages()));
    std::iota(pages.begin(), pages.end(), 0);
    std::mt19937 rng(7);
    std::shuffle(pages.begin(), pages.end(), rng);
    std::copy_n(pages.begin(), state.layout().table_columns(), state.table_row(0));
    state.mark_dirty(0);
    EXPECT_GT(state.layout().ring_pages, 1);  // the rings themselves span pages
  }
  const int64_t n_ids = static_cast<int64_t>(f.ids.size());
  const size_t measured = measure_forward_scratch(f.cfg, f.weights, opt, Device::kCPU, {n_ids, n_ids, false});
  Arena scratch("scratch", measured, Device::kCPU);
  ExecContext ctx;
  ctx.scratch = &scratch;
  const int64_t V = f.cfg.vocab_size;
  std::vector<float> out;
  int64_t done = 0;
  for (int64_t n : chunks) {
    BatchBuilder b;
    b.add({0, static_cast<int32_t>(done), std::vector<int32_t>(f.ids.begin() + done, f.ids.begin() + done + n), true});
    std::vector<float> logits(static_cast<size_t>(n * V));
    scratch.reset();
    target_forward(ctx, f.cfg, f.weights, state, b.meta(), b.logit_rows(), Tensor(logits.data(), DType::F32, {n, V}),
                   Tensor());
    out.insert(out.end(), logits.begin(), logits.end());
    done += n;
  }
  // The measuring pass counts exactly what the real forward of the whole sequence takes (the CPU backend keeps no
  // scratch of its own; the measure adds one alignment of slack).
  if (chunks.size() == 1) {
    EXPECT_EQ(scratch.high_water() + Arena::kAlignment, measured);
  }
  return out;
}

class ModelParity : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelParity, WholeSequencePrefill) {
  auto f = load_fixture(GetParam());
  const int64_t T = static_cast<int64_t>(f->ids.size());
  const std::vector<float> got = run_chunks(*f, {T});
  const double err = test::max_rel_error(got.data(), f->logits.data(), got.size());
  std::printf("%s prefill: max rel error %.3g\n", GetParam().c_str(), err);
  EXPECT_LE(err, 1e-4);
}

// Paged state: the same logits wherever the pages lie (≤ 1e-5 of the unpaged run), for one-shot and chunked
// prefill and for decode steps.
TEST_P(ModelParity, ScatteredPagesMatchUnpaged) {
  auto f = load_fixture(GetParam());
  const int64_t T = static_cast<int64_t>(f->ids.size());
  std::vector<int64_t> decode = {T / 3};
  while (static_cast<int64_t>(decode.size()) < T - T / 3 + 1) decode.push_back(1);
  for (const std::vector<int64_t>& chunks : {std::vector<int64_t>{T}, std::vector<int64_t>{5, T - 12, 7}, decode}) {
    const std::vector<float> dense = run_chunks(*f, chunks), paged = run_chunks(*f, chunks, /*scattered=*/true);
    const double err = test::max_rel_error(paged.data(), dense.data(), dense.size());
    EXPECT_LE(err, 1e-5) << chunks.size() << " chunks";
    EXPECT_LE(test::max_rel_error(paged.data(), f->logits.data(), paged.size()), 1e-4);
  }
}

TEST_P(ModelParity, PrefillThenSingleTokenDecode) {
  auto f = load_fixture(GetParam());
  const int64_t T = static_cast<int64_t>(f->ids.size());
  std::vector<int64_t> chunks = {T / 3};
  while (static_cast<int64_t>(chunks.size()) < T - T / 3 + 1) chunks.push_back(1);
  const std::vector<float> got = run_chunks(*f, chunks);
  const double err = test::max_rel_error(got.data(), f->logits.data(), got.size());
  std::printf("%s prefill+decode: max rel error %.3g\n", GetParam().c_str(), err);
  EXPECT_LE(err, 1e-4);
}

TEST_P(ModelParity, TwoChunkPrefill) {
  auto f = load_fixture(GetParam());
  const int64_t T = static_cast<int64_t>(f->ids.size());
  for (int64_t first : {int64_t{5}, T / 2 + 1}) {
    const std::vector<float> got = run_chunks(*f, {first, T - first});
    const double err = test::max_rel_error(got.data(), f->logits.data(), got.size());
    std::printf("%s chunks %lld+%lld: max rel error %.3g\n", GetParam().c_str(), static_cast<long long>(first),
                static_cast<long long>(T - first), err);
    EXPECT_LE(err, 1e-4);
  }
}

// Causality: a row depends on its own and earlier tokens only. Matrix products of >= 8 rows run on OpenBLAS,
// whose kernels and work split depend on the row count, so the two runs may round a product's last bit
// differently (backend/cpu/blas.h); anything a later token leaked into an earlier row would show at full size.
TEST_P(ModelParity, PrefixRowsEqualWholeRows) {
  auto f = load_fixture(GetParam());
  const int64_t T = static_cast<int64_t>(f->ids.size());
  const std::vector<float> whole = run_chunks(*f, {T});
  Fixture& g = *f;
  const std::vector<int32_t> all = g.ids;
  g.ids.resize(static_cast<size_t>(T / 2));
  const std::vector<float> prefix = run_chunks(g, {T / 2});
  g.ids = all;
  const double err = test::max_rel_error(prefix.data(), whole.data(), prefix.size());
  std::printf("%s prefix of %lld rows vs the whole run: max rel error %.3g\n", GetParam().c_str(),
              static_cast<long long>(T / 2), err);
  EXPECT_LE(err, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(HfFixtures, ModelParity, ::testing::Values("tiny_a", "tiny_b", "tiny_c"));

}  // namespace
}  // namespace dsv4
