// The CLI of issue 17, run as a process (DSV4_CLI_PATH): `dsv4 quantize`, `make-tiny --quantized`, `info` on a
// quantised checkpoint, and `dsv4 perplexity` (perplexity, KL divergence and top-1 agreement against a saved run).

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_process.h"
#include "test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using Result = test::CliResult;
using test::slurp;

class QuantizeCli : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test::fresh_scratch_dir("dsv4_qcli_"));
    // A short text for the random tiny model (byte-level ids: it has no tokenizer.json).
    std::ofstream(path("text.txt")) << "In the beginning God created the heaven and the earth.\n"
                                       "And the earth was without form, and void; and darkness was upon the deep.\n";
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }
  static std::string path(const std::string& name) { return *dir_ + "/" + name; }
  static std::string default_model() { return test::source_dir() + "/models/dsv4-tiny-kjv"; }

  static Result run(const std::string& args) { return test::run_cli(*dir_, args); }
  static json run_json(const std::string& args) { return test::cli_json(run(args), args); }
  static void expect_failure(const std::string& args, const std::vector<std::string>& parts) {
    const Result r = run(args);
    EXPECT_EQ(r.status, 1) << args << "\n" << r.out << r.err;
    EXPECT_NE(r.err.find("error:"), std::string::npos) << args << "\n" << r.err;
    for (const std::string& p : parts)
      EXPECT_NE(r.err.find(p), std::string::npos) << args << ": '" << p << "' in:\n" << r.err;
  }

  static std::string* dir_;
};
std::string* QuantizeCli::dir_ = nullptr;

TEST_F(QuantizeCli, PerplexityAgainstItselfHasZeroKlAndFullAgreement) {
  ASSERT_EQ(run(str_cat("make-tiny ", path("tiny"), " --seed 4")).status, 0);
  const std::string common = str_cat("perplexity -m ", path("tiny"), " --file ", path("text.txt"), " --ctx 48 --json");
  const json a = run_json(str_cat(common, " --save-logits ", path("ref.safetensors")));
  ASSERT_TRUE(a.contains("perplexity")) << a.dump();
  const std::string text = slurp(path("text.txt"));
  EXPECT_EQ(a["tokens"], text.size());  // byte-level: one token per byte
  EXPECT_EQ(a["windows"], (text.size() + 47) / 48);
  EXPECT_GT(a["perplexity"].get<double>(), 1.0);
  EXPECT_TRUE(std::isfinite(a["perplexity"].get<double>()));
  EXPECT_NEAR(std::log(a["perplexity"].get<double>()), a["mean_nll"].get<double>(), 1e-9);
  const json b = run_json(str_cat(common, " --kl-reference ", path("ref.safetensors")));
  EXPECT_EQ(b["kl_mean"].get<double>(), 0.0);
  EXPECT_EQ(b["kl_p99"].get<double>(), 0.0);
  EXPECT_EQ(b["top1_agreement"].get<double>(), 1.0);
  EXPECT_EQ(b["perplexity"], a["perplexity"]);
  EXPECT_EQ(b["reference_perplexity"], a["perplexity"]);
  // The progress line goes to stderr; the human-readable form names every figure.
  const Result r = run(str_cat("perplexity -m ", path("tiny"), " --file ", path("text.txt"),
                               " --ctx 48 --kl-reference ", path("ref.safetensors")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("perplexity: window 3/3"), std::string::npos) << r.err;
  for (const char* part : {"perplexity ", "KL mean 0", "top-1 agreement 1.0000"}) {
    EXPECT_NE(r.out.find(part), std::string::npos) << part << " in " << r.out;
  }
  // A reference of another run shape is refused by name.
  expect_failure(str_cat(common, " --max-tokens 20 --kl-reference ", path("ref.safetensors")),
                 {"--kl-reference", str_cat("scores ", text.size(), " tokens, this run 20")});
  expect_failure(str_cat("perplexity -m ", path("tiny"), " --file ", path("text.txt"), " --ctx 32 --kl-reference ",
                         path("ref.safetensors")),
                 {"--ctx 48", "--ctx 32"});
  expect_failure(str_cat("perplexity -m ", path("tiny"), " --file ", path("missing.txt")),
                 {"cannot open", "missing.txt"});
  expect_failure(
      str_cat("perplexity -m ", path("tiny"), " --file ", path("text.txt"), " --kl-reference ", path("text.txt")),
      {"text.txt"});
}

TEST_F(QuantizeCli, MakeTinyQuantizedAndInfo) {
  ASSERT_EQ(run(str_cat("make-tiny ", path("tinyq"), " --seed 4 --quantized")).status, 0);
  EXPECT_FALSE(fs::exists(path("tinyq.bf16-tmp")));
  const json info = run_json(str_cat("info -m ", path("tinyq"), " --json"));
  EXPECT_EQ(info["quantization"]["quantized"], true);
  EXPECT_EQ(info["quantization"]["expert_dtype"], "fp4");
  const json& st = info["storage"];
  EXPECT_EQ(st["routed_experts"]["formats"], json::array({"fp4-e2m1 (ue8m0 per 32)"}));
  EXPECT_EQ(st["shared_experts"]["formats"], json::array({"fp8-e4m3 (ue8m0 128x128 blocks)"}));
  EXPECT_EQ(st["embedding+head"]["formats"], json::array({"BF16"}));
  // On disk: half a byte per expert weight plus one scale byte per 32; loaded on the CPU: 4 bytes each.
  const int64_t experts = 3 * 32 * 64 * 8 * 4;  // w1, w2, w3 of [32, 64] x 8 experts x 4 layers
  EXPECT_EQ(st["routed_experts"]["disk_bytes"], experts / 2 + experts / 32);
  EXPECT_EQ(st["routed_experts"]["cpu_bytes"], experts * 4);
  EXPECT_EQ(st["routed_experts"]["cuda_bytes"], experts * 2);
  // --cuda-weights quantized keeps what is on disk; plain tensors as bf16.
  EXPECT_EQ(st["routed_experts"]["cuda_quantized_bytes"], experts / 2 + experts / 32);
  EXPECT_EQ(st["embedding+head"]["cuda_quantized_bytes"], st["embedding+head"]["cuda_bytes"]);
  EXPECT_LT(st["total"]["cuda_quantized_bytes"].get<int64_t>(), st["total"]["cuda_bytes"].get<int64_t>());
  // The quantised checkpoint runs: the same text scores close to the bf16 model of the same seed.
  const std::string common = str_cat(" --file ", path("text.txt"), " --ctx 48 --json");
  ASSERT_EQ(run(str_cat("make-tiny ", path("tinyb"), " --seed 4")).status, 0);
  run_json(str_cat("perplexity -m ", path("tinyb"), common, " --save-logits ", path("tinyb.safetensors")));
  const json q =
      run_json(str_cat("perplexity -m ", path("tinyq"), common, " --kl-reference ", path("tinyb.safetensors")));
  EXPECT_GT(q["kl_mean"].get<double>(), 0.0);
  EXPECT_LT(q["kl_mean"].get<double>(), 0.5);  // random unit-scale weights, FP4 experts: a loose sanity bound
  expect_failure(str_cat("make-tiny ", path("bad"), " --quantized --expert-dtype int4"), {"--expert-dtype", "int4"});
}

// The default model quantised to DeepSeek's official layout scores the held-out KJV split close to its bf16 self.
TEST_F(QuantizeCli, DefaultModelQuantizedPerplexity) {
  const std::string heldout = default_model() + "/heldout.txt";
  ASSERT_TRUE(fs::exists(heldout));
  EXPECT_LE(fs::file_size(heldout), 64u << 10);
  const Result r = run(str_cat("quantize ", default_model(), " ", path("kjv-fp4")));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("experts fp4"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(path("kjv-fp4/model.safetensors.index.json")));
  EXPECT_TRUE(fs::exists(path("kjv-fp4/tokenizer.json")));
  const std::string common = str_cat(" --file ", heldout, " --max-tokens 1024 --json");
  const json ref =
      run_json(str_cat("perplexity -m ", default_model(), common, " --save-logits ", path("kjv.safetensors")));
  const json q =
      run_json(str_cat("perplexity -m ", path("kjv-fp4"), common, " --kl-reference ", path("kjv.safetensors")));
  EXPECT_EQ(q["tokens"], 1024);
  const double bf16 = ref["perplexity"].get<double>(), fp4 = q["perplexity"].get<double>();
  // Measured on the whole file: bf16 15.066, FP8 dense + FP4 experts 15.093 (+0.18%), KL mean 0.017.
  EXPECT_LT(bf16, 30.0);
  EXPECT_NEAR(fp4 / bf16, 1.0, 0.02);
  EXPECT_LT(q["kl_mean"].get<double>(), 0.05);
  EXPECT_GT(q["top1_agreement"].get<double>(), 0.85);
  expect_failure(str_cat("quantize ", default_model(), " ", default_model()), {"must differ"});
  expect_failure(str_cat("quantize ", default_model(), " ", path("x"), " --expert-dtype fp16"), {"--expert-dtype"});
}

}  // namespace
}  // namespace dsv4
