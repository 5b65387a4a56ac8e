// Issue 21's bad-input campaign, held as tests: implausible config values are refused naming the field
// (before anything is sized from them), deeply nested JSON is an error (not a stack overflow), token ids
// are bounded, tensors at unaligned offsets load correctly, model files must be regular files, output files
// never replace a device or a symlink's target, and the size helpers catch overflow. docs/robustness.md
// lists them with the CLI cases of cli_test.cc.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <thread>

#include "dsv4/core/buffer.h"
#include "dsv4/core/checked.h"
#include "dsv4/io/config.h"
#include "dsv4/io/file.h"
#include "dsv4/io/json.h"
#include "dsv4/io/limits.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/model/weights.h"
#include "dsv4/runtime/engine.h"
#include "dsv4/tokenizer/tokenizer.h"
#include "test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string temp_dir(const std::string& name) {
  const fs::path d = fs::path(testing::TempDir()) / str_cat("dsv4_robust_", ::getpid(), "_", name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

using test::slurp;

// The error (code, message) of `fn`, which must throw dsv4::Error.
template <typename Fn>
std::string error_of(Fn&& fn, StatusCode code) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

std::string tiny_json() { return tiny_config().to_json(); }

// tiny_config() as JSON with `key` set to the raw JSON text `value`.
std::string with_field(const std::string& key, const std::string& value) {
  json j = json::parse(tiny_json());
  j.erase(key);
  std::string text = j.dump();
  text.pop_back();  // '}'
  return str_cat(text, ",\"", key, "\":", value, "}");
}

std::string config_error(const std::string& text) {
  try {
    ModelConfig::from_json_text(text, "bad/config.json");
  } catch (const Error& e) {
    EXPECT_TRUE(e.code() == StatusCode::kInvalidArgument || e.code() == StatusCode::kParseError) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "config accepted: " << text.substr(0, 300);
  return "";
}

TEST(RobustConfig, ImplausibleFieldsAreRefusedNamingTheField) {
  // Each of these crashed, hung or was silently accepted before (issue 21).
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"index_topk", "4611686018427387904"},           // 2^62: the arena size wrapped to 0 -> segfault
      {"hc_sinkhorn_iters", "1000000000000"},          // hang
      {"sliding_window", "4611686018427387904"},       // 2^62: accepted
      {"sliding_window", "1000000000"},                // 640 GB allocation failure naming no field
      {"vocab_size", "1e300"},                         // float -> int overflow (UB)
      {"hidden_size", "1099511627776"},                // 2^40: overflow in info
      {"vocab_size", "1099511627776"},                 // 2^40
      {"num_attention_heads", "4611686018427387904"},  // size products wrapped
      {"hc_mult", "4294967296"},                       // 2^32
      {"num_hidden_layers", "1000000000"},             // bad_alloc
      {"n_routed_experts", "1000000000"},              // bad_alloc
      {"head_dim", "18446744073709551615"},            // above int64
      {"max_position_embeddings", "-5"},
      {"moe_intermediate_size", "0"},
      {"bos_token_id", "1000000"},
  };
  for (const auto& [key, value] : cases) {
    SCOPED_TRACE(key + " = " + value);
    const std::string msg = config_error(with_field(key, value));
    EXPECT_NE(msg.find(key), std::string::npos) << msg;
  }
}

TEST(RobustConfig, NonFiniteAndHugeNumbersAreParseErrorsNamingTheFile) {
  // 1e999 escaped as an uncaught nlohmann exception naming no file.
  const std::string msg = config_error(with_field("rms_norm_eps", "1e999"));
  EXPECT_NE(msg.find("bad/config.json"), std::string::npos) << msg;
  EXPECT_NE(config_error(with_field("eos_token_id", "18446744073709551615")).find("eos_token_id"), std::string::npos);
  EXPECT_NE(config_error(with_field("routed_scaling_factor", "-1e999")).find("bad/config.json"), std::string::npos);
}

TEST(RobustConfig, DeepNestingIsAnErrorNotAStackOverflow) {
  // A 10^6-deep array in any field overflowed the stack.
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  const std::string msg = config_error(with_field("layer_types", deep));
  EXPECT_NE(msg.find("nested deeper"), std::string::npos) << msg;
  EXPECT_NE(msg.find("bad/config.json"), std::string::npos) << msg;
}

TEST(RobustJson, DepthLimitIsExact) {
  const auto nested = [](int depth) { return std::string(depth, '[') + std::string(depth, ']'); };
  EXPECT_EQ(json_depth("1", 100), 0);
  EXPECT_EQ(json_depth(nested(5), 100), 5);
  EXPECT_EQ(json_depth("{\"a\": [1, {\"b\": []}]}", 100), 4);
  EXPECT_NO_THROW(parse_json(nested(kMaxJsonDepth), "ok.json"));
  const std::string msg =
      error_of([&] { parse_json(nested(kMaxJsonDepth + 1), "deep.json"); }, StatusCode::kParseError);
  EXPECT_NE(msg.find("deep.json"), std::string::npos) << msg;
  // Every parser error is a dsv4::Error naming the origin (syntax, a number out of range, bad UTF-8).
  for (const std::string bad : {"{", "[1e999]", "\"\xff\"", "", "[1,]"}) {
    const std::string m = error_of([&] { parse_json(bad, "x.json"); }, StatusCode::kParseError);
    EXPECT_NE(m.find("x.json"), std::string::npos) << m;
  }
}

// A small valid tokenizer.json (a committed fixture).
json tokenizer_json() {
  return json::parse(slurp(test::source_dir() + "/tests/fixtures/tokenizer/gpt2_style.tokenizer.json"));
}

std::string tokenizer_error(const json& j) {
  const std::string text = j.dump();
  return error_of([&] { Tokenizer::from_json(text); }, StatusCode::kParseError);
}

TEST(RobustTokenizer, DeeplyNestedNormalizerIsAnError) {
  json j = tokenizer_json();
  // A normalizer Sequence nested 100,000 deep overflowed the stack.
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "{\"type\":\"Sequence\",\"normalizers\":[";
  deep += "{\"type\":\"NFC\"}";
  for (int i = 0; i < 100000; ++i) deep += "]}";
  j.erase("normalizer");
  std::string text = j.dump();
  text.pop_back();  // '}'
  text += ",\"normalizer\":" + deep + "}";
  const std::string msg = error_of([&] { Tokenizer::from_json(text); }, StatusCode::kParseError);
  EXPECT_NE(msg.find("nested deeper"), std::string::npos) << msg;
}

TEST(RobustTokenizer, TokenIdsAreBounded) {
  {
    json j = tokenizer_json();  // a vocab id near 2^31 overflowed max_id + 1 (and asked for 2^31 strings)
    j["model"]["vocab"]["zzz_far"] = 2147483647;
    EXPECT_NE(tokenizer_error(j).find("zzz_far"), std::string::npos);
  }
  {
    json j = tokenizer_json();  // a sparse added-token id: bad_alloc before
    j["added_tokens"] = json::array({{{"id", 1000000000}, {"content", "<far>"}, {"special", true}}});
    EXPECT_NE(tokenizer_error(j).find("added_tokens[0].id"), std::string::npos);
  }
  {
    json j = tokenizer_json();  // post-processor ids >= 2^32 were truncated to int32
    j["post_processor"] = {{"type", "TemplateProcessing"},
                           {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                                   {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                           {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {4294967297ull}}}}}}};
    EXPECT_NE(tokenizer_error(j).find("ids[0]"), std::string::npos);
  }
  {
    json j = tokenizer_json();
    j["post_processor"] = {{"type", "RobertaProcessing"}, {"cls", {"<s>", 4294967296ull}}, {"sep", {"</s>", 2}}};
    EXPECT_NE(tokenizer_error(j).find("cls"), std::string::npos);
  }
}

TEST(RobustTensors, Bf16AndF16ConvertAtOddAddresses) {
  // safetensors does not align tensors: 16-bit values at odd addresses were read through uint16_t*.
  alignas(8) unsigned char buf[9] = {0};
  const uint16_t one_bf16 = 0x3F80, two_f16 = 0x4000;
  std::memcpy(buf + 1, &one_bf16, 2);
  std::memcpy(buf + 3, &one_bf16, 2);
  std::memcpy(buf + 5, &two_f16, 2);
  float out[2] = {0, 0};
  convert_to_f32(DType::BF16, buf + 1, out, 2);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], 1.0f);
  convert_to_f32(DType::F16, buf + 5, out, 1);
  EXPECT_EQ(out[0], 2.0f);
  const float in[2] = {3.0f, -1.0f};
  convert_from_f32(in, DType::BF16, buf + 1, 2);
  convert_to_f32(DType::BF16, buf + 1, out, 2);
  EXPECT_EQ(out[0], 3.0f);
  EXPECT_EQ(out[1], -1.0f);
}

TEST(RobustTensors, CheckpointWithUnalignedDataLoadsTheSameWeights) {
  // A header one byte longer puts every tensor (the I64 tid2eid, the BF16 matrices) at an odd offset.
  const std::string dir = temp_dir("unaligned");
  const ModelConfig cfg = tiny_config();
  write_random_checkpoint(dir + "/aligned", cfg, 5);
  const std::string file = slurp(dir + "/aligned/model.safetensors");
  uint64_t len = 0;
  std::memcpy(&len, file.data(), 8);
  const uint64_t shifted = len + 1;
  std::string out(reinterpret_cast<const char*>(&shifted), 8);
  out += file.substr(8, len) + " " + file.substr(8 + len);
  fs::create_directories(dir + "/odd");
  std::ofstream(dir + "/odd/model.safetensors", std::ios::binary) << out;
  fs::copy_file(dir + "/aligned/config.json", dir + "/odd/config.json");
  const Checkpoint a = Checkpoint::open(dir + "/aligned"), b = Checkpoint::open(dir + "/odd");
  ASSERT_EQ(b.find("layers.0.ffn.gate.tid2eid")->offset % 2, 1u);
  const ModelWeights wa = load_weights(a, cfg, {}), wb = load_weights(b, cfg, {});
  for (auto [x, y] : {std::pair{wa.layers[0].ffn.tid2eid, wb.layers[0].ffn.tid2eid}, std::pair{wa.embed, wb.embed},
                      std::pair{wa.layers[0].attn.wq_a.plain(), wb.layers[0].attn.wq_a.plain()}}) {
    ASSERT_TRUE(x.defined() && y.defined());
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.nbytes()), 0);
  }
  fs::remove_all(dir);
}

// Writes a bf16 NaN over element `index` of the BF16 tensor `name` of DIR/model.safetensors.
void write_nan_bf16(const std::string& dir, const std::string& name, size_t index) {
  const Checkpoint ck = Checkpoint::open(dir);
  const TensorInfo* t = ck.find(name);
  ASSERT_NE(t, nullptr) << name;
  ASSERT_EQ(t->dtype, DType::BF16) << name;
  std::fstream f(dir + "/model.safetensors", std::ios::binary | std::ios::in | std::ios::out);
  const uint16_t nan_bf16 = 0x7fc0;
  f.seekp(static_cast<std::streamoff>(t->offset + index * 2));
  f.write(reinterpret_cast<const char*>(&nan_bf16), 2);
}

// NaN in the LM head: generation stops with an error naming the position instead of sampling from NaN logits.
TEST(RobustTensors, NonFiniteLogitsAreAnErrorNamingThePosition) {
  const std::string dir = temp_dir("nan_head");
  const ModelConfig cfg = tiny_config();
  write_random_checkpoint(dir, cfg, 5);
  write_nan_bf16(dir, "head.weight", 0);  // head[0][0]: logit 0 is NaN at every position
  EngineOptions o;
  o.device = Device::kCPU;
  Engine engine(dir, o);
  GenerateOptions go;
  go.max_new_tokens = 4;
  try {
    engine.generate({{3, 4, 5}}, go);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("non-finite logits ("), std::string::npos) << what;
    EXPECT_NE(what.find("nan for token id 0) at position 2 of request"), std::string::npos) << what;
  }
  EXPECT_TRUE(engine.idle());  // the engine is usable afterwards
  // With speculative decoding the prefill step and the verification steps sample inside the executor (the device
  // path's semantics): their non-finite flags end the request the same way.
  go.spec_tokens = 2;
  try {
    engine.generate({{3, 4, 5}}, go);
    FAIL() << "expected an error with speculative decoding";
  } catch (const Error& e) {
    std::printf("speculative: %s\n", e.what());
    EXPECT_NE(std::string(e.what()).find("non-finite logits"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(engine.idle());
  fs::remove_all(dir);
}

// Logits that turn non-finite only after the prompt: the embedding row of the first generated token is NaN, so the
// prefill is finite and the next forward is not. With speculative decoding that forward is the verification of
// [token, drafts]: its rows are flagged (sample_tokens' nonfinite output) and the request ends with an error.
TEST(RobustTensors, NonFiniteVerificationRowsEndASpeculativeRequest) {
  const std::string dir = temp_dir("nan_embed");
  const ModelConfig cfg = tiny_config();
  write_random_checkpoint(dir, cfg, 7);
  const std::vector<int32_t> prompt = {3, 4, 5, 6};
  GenerateOptions go;
  go.max_new_tokens = 6;
  go.stop_at_eos = false;
  int32_t first = -1;
  {
    EngineOptions o;
    Engine engine(dir, o);
    first = engine.generate({prompt}, go).tokens[0][0];
  }
  ASSERT_TRUE(std::find(prompt.begin(), prompt.end(), first) == prompt.end()) << "pick another prompt";
  write_nan_bf16(dir, "embed.weight", static_cast<size_t>(first) * cfg.hidden_size);  // embed[first][0]
  EngineOptions o;
  Engine engine(dir, o);
  go.spec_tokens = 2;
  try {
    engine.generate({prompt}, go);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("non-finite logits (a NaN or an infinity, in the speculative verification) after position 4"),
              std::string::npos)
        << what;
  }
  EXPECT_TRUE(engine.idle());
  fs::remove_all(dir);
}

TEST(RobustFiles, FifoModelFilesAreRefusedWithoutHanging) {
  const std::string dir = temp_dir("fifo");
  fs::copy_file(test::source_dir() + "/models/dsv4-tiny-kjv/config.json", dir + "/config.json");
  ASSERT_EQ(::mkfifo((dir + "/model.safetensors").c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  const std::string msg = error_of([&] { Checkpoint::open(dir); }, StatusCode::kInvalidArgument);
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;
  fs::remove(dir + "/config.json");
  ASSERT_EQ(::mkfifo((dir + "/config.json").c_str(), 0600), 0);
  EXPECT_NE(error_of([&] { ModelConfig::from_file(dir + "/config.json"); }, StatusCode::kInvalidArgument).find("FIFO"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::from_file(dir + "/config.json"); }, StatusCode::kInvalidArgument).find("FIFO"),
            std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  fs::create_directories(dir + "/index");
  ASSERT_EQ(::mkfifo((dir + "/index/model.safetensors.index.json").c_str(), 0600), 0);
  EXPECT_NE(error_of([&] { Checkpoint::open(dir + "/index"); }, StatusCode::kInvalidArgument).find("FIFO"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(RobustFiles, OutputFilesKeepSymlinksAndRefuseDirectories) {
  const std::string dir = temp_dir("out");
  HostTensor t(DType::F32, {2});
  // A symlink's target is written through the link: the link stays a link.
  std::ofstream(dir + "/target") << "old";
  fs::create_symlink("target", dir + "/link");
  save_safetensors(dir + "/link", {{"t", t.t()}});
  EXPECT_TRUE(fs::is_symlink(dir + "/link"));
  EXPECT_EQ(fs::file_size(dir + "/target"), fs::file_size(dir + "/link"));
  EXPECT_NO_THROW(SafetensorsFile::open(dir + "/target"));
  // A directory is refused and no stray X.tmp is left behind.
  fs::create_directories(dir + "/d");
  EXPECT_NE(error_of(
                [&] {
                  save_safetensors(dir + "/d", {{"t", t.t()}});
                },
                StatusCode::kIoError)
                .find("directory"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir + "/d.tmp"));
  // A FIFO is written in place (a reader gets the bytes), not replaced by a regular file.
  ASSERT_EQ(::mkfifo((dir + "/pipe").c_str(), 0600), 0);
  std::string got;
  std::thread reader([&] { got = slurp(dir + "/pipe"); });
  save_safetensors(dir + "/pipe", {{"t", t.t()}});
  reader.join();
  struct stat st {};
  ASSERT_EQ(::lstat((dir + "/pipe").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(got.size(), fs::file_size(dir + "/target"));
  // A regular file is replaced atomically (the writer's .tmp is gone afterwards).
  save_safetensors(dir + "/plain.safetensors", {{"t", t.t()}});
  EXPECT_FALSE(fs::exists(dir + "/plain.safetensors.tmp"));
  // A failed write (a full device) is an error naming the path.
  if (fs::exists("/dev/full")) {
    EXPECT_NE(error_of([&] { write_output_file("/dev/full", [](std::ostream& o) { o << std::string(1 << 16, 'x'); }); },
                       StatusCode::kIoError)
                  .find("/dev/full"),
              std::string::npos);
    EXPECT_TRUE(fs::is_character_file("/dev/full"));
  }
  fs::remove_all(dir);
}

TEST(RobustChecked, SizeArithmeticCatchesOverflow) {
  EXPECT_EQ(checked_mul(int64_t{1} << 31, int64_t{1} << 31, "x"), int64_t{1} << 62);
  EXPECT_EQ(checked_product({3, 4, 5}, "x"), 60);
  EXPECT_EQ(checked_add(1, 2, "x"), 3);
  EXPECT_NE(
      error_of([] { checked_mul(int64_t{1} << 62, 4, "the arena"); }, StatusCode::kInvalidArgument).find("the arena"),
      std::string::npos);
  error_of([] { checked_add(std::numeric_limits<int64_t>::max(), 1, "n"); }, StatusCode::kInvalidArgument);
  error_of([] { checked_mul(-1, 4, "n"); }, StatusCode::kInvalidArgument);
  EXPECT_TRUE(double_is_int64(1e18));
  EXPECT_FALSE(double_is_int64(1e300));
  EXPECT_FALSE(double_is_int64(9223372036854775808.0));
  EXPECT_FALSE(double_is_int64(0.5));
  EXPECT_FALSE(double_is_int64(std::numeric_limits<double>::quiet_NaN()));
}

}  // namespace
}  // namespace dsv4
