// Whole-model parity on quantised checkpoints in DeepSeek's official layout (tests/fixtures/quantized, written by
// tools/reference/make_quantized_fixtures.py with an independent Python quantiser; expected logits are
// transformers' token-by-token run on the dequantised weights). Uses only the Engine's public score().
#include <algorithm>
#include <filesystem>

#include "dsv4/runtime/engine.h"
#include "test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> quantized_fixtures() {
  std::vector<std::string> out;
  const fs::path root = fs::path(test::source_dir()) / "tests/fixtures/quantized";
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::directory_iterator(root)) {
    if (fs::exists(e.path() / "expected.safetensors")) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(QuantizedParity, OfficialLayoutFixturesMatchTransformers) {
  const std::vector<std::string> dirs = quantized_fixtures();
  if (dirs.empty()) {
    GTEST_SKIP() << "no tests/fixtures/quantized yet: run tools/reference/make_quantized_fixtures.py on a machine "
                    "with torch + transformers and copy its output there";
  }
  for (const std::string& dir : dirs) {
    SCOPED_TRACE(dir);
    const ModelConfig cfg = ModelConfig::from_file(dir + "/config.json");
    ASSERT_TRUE(cfg.quantization.quantized) << "a quantised fixture must carry quantization_config";
    const auto expected = SafetensorsFile::open(dir + "/expected.safetensors");
    const Tensor ids_t = expected->view(*expected->find("input_ids"));
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < ids_t.numel(); ++i) ids.push_back(static_cast<int32_t>(ids_t.ptr<int64_t>()[i]));
    const std::vector<float> want = test::to_vector(expected->view(*expected->find("logits")));
    EngineOptions eo;
    eo.max_seqs = 1;
    eo.max_model_len = static_cast<int64_t>(ids.size());
    Engine engine(dir, eo);
    const std::vector<float> got = engine.score(ids);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_LE(test::max_rel_error(got.data(), want.data(), got.size()), 1e-4);
  }
}

}  // namespace
}  // namespace dsv4
