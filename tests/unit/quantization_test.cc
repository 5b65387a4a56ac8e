// Quantised checkpoints (issue 17): the E4M3 / E2M1 / E8M0 codecs, quantization_config parsing, `dsv4 quantize`
// round trips checked against a dequantiser written independently here, the official layout (shards, index,
// `.scale` siblings, packed I8 experts), and a clear error for every malformed quantised checkpoint.
#include "dsv4/io/quantization.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "dsv4/core/buffer.h"
#include "dsv4/model/quantize.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/model/weights.h"
#include "test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Runs fn, which must throw a dsv4::Error whose message holds every one of `parts`.
void expect_error_contains(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' in: " << msg;
    return;
  }
  ADD_FAILURE() << "expected an error";
}

// ---- the independent reference: decoders written from the format definitions, in double -----------------------

// E4M3FN: 1 sign, 4 exponent (bias 7), 3 mantissa bits; exponent 0 is subnormal; S.1111.111 is NaN.
double ref_e4m3(uint8_t b) {
  const int sign = b >> 7, e = (b >> 3) & 15, m = b & 7;
  const double mag = e == 0 ? m / 8.0 * std::pow(2.0, -6) : (1.0 + m / 8.0) * std::pow(2.0, e - 7);
  return sign ? -mag : mag;
}
// E2M1 in a nibble: 1 sign, 2 exponent (bias 1), 1 mantissa bit; exponent 0 is subnormal (0 or 0.5).
double ref_e2m1(uint8_t nib) {
  const int sign = (nib >> 3) & 1, e = (nib >> 1) & 3, m = nib & 1;
  const double mag = e == 0 ? m * 0.5 : (1.0 + m / 2.0) * std::pow(2.0, e - 1);
  return sign ? -mag : mag;
}
double ref_e8m0(uint8_t s) { return std::pow(2.0, static_cast<int>(s) - 127); }

std::vector<double> ref_dequant_fp8(const uint8_t* q, const uint8_t* s, int64_t out, int64_t in) {
  const int64_t sc = (in + 127) / 128;
  std::vector<double> w(static_cast<size_t>(out * in));
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t k = 0; k < in; ++k) w[r * in + k] = ref_e4m3(q[r * in + k]) * ref_e8m0(s[(r / 128) * sc + k / 128]);
  }
  return w;
}

std::vector<double> ref_dequant_fp4(const uint8_t* packed, const uint8_t* s, int64_t out, int64_t in) {
  const int64_t sc = (in + 31) / 32;
  std::vector<double> w(static_cast<size_t>(out * in));
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t k = 0; k < in; ++k) {
      const uint8_t byte = packed[r * (in / 2) + k / 2];
      const uint8_t nib = (k % 2 == 0) ? (byte & 0xF) : (byte >> 4);  // element 2j in the low nibble
      w[r * in + k] = ref_e2m1(nib) * ref_e8m0(s[r * sc + k / 32]);
    }
  }
  return w;
}

// ---- codecs -------------------------------------------------------------------------------------------------------

TEST(QuantCodec, E4m3EncodeInvertsEveryFiniteCode) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;  // NaN
    const float v = static_cast<float>(ref_e4m3(static_cast<uint8_t>(c)));
    EXPECT_EQ(f8e4m3_to_float(static_cast<uint8_t>(c)), v) << c;
    EXPECT_EQ(float_to_f8e4m3(v), c) << c;
  }
  EXPECT_EQ(float_to_f8e4m3(448.0f), 0x7E);
  EXPECT_EQ(float_to_f8e4m3(1e6f), 0x7E);   // saturates
  EXPECT_EQ(float_to_f8e4m3(-1e6f), 0xFE);  // saturates
  EXPECT_EQ(float_to_f8e4m3(NAN), 0x7F);
  // Ties go to the even mantissa: 1.0625 lies between 1.0 (0x38) and 1.125 (0x39); 1.1875 between 0x39 and 0x3A.
  EXPECT_EQ(float_to_f8e4m3(1.0625f), 0x38);
  EXPECT_EQ(float_to_f8e4m3(1.1875f), 0x3A);
  EXPECT_EQ(float_to_f8e4m3(1.07f), 0x39);
  EXPECT_EQ(float_to_f8e4m3(std::ldexp(1.0f, -10)), 0x00);  // half the smallest subnormal: tie to 0
  EXPECT_EQ(float_to_f8e4m3(std::ldexp(1.5f, -10)), 0x01);
}

TEST(QuantCodec, Fp4TableAndRounding) {
  const float table[16] = {0, .5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -.5f, -1, -1.5f, -2, -3, -4, -6};
  for (uint8_t n = 0; n < 16; ++n) {
    EXPECT_EQ(fp4_e2m1_to_float(n), table[n]) << int(n);
    EXPECT_EQ(fp4_e2m1_to_float(n), static_cast<float>(ref_e2m1(n))) << int(n);
    EXPECT_EQ(float_to_fp4_e2m1(table[n]), n) << int(n);
  }
  // Ties to the even code: 0.25 -> 0, 0.75 -> 1.0, 1.25 -> 1.0, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4, 5 -> 4.
  const std::pair<float, uint8_t> ties[] = {{0.25f, 0}, {0.75f, 2}, {1.25f, 2}, {1.75f, 4},
                                            {2.5f, 4},  {3.5f, 6},  {5.0f, 6},  {-5.0f, 14}};
  for (const auto& [v, code] : ties) EXPECT_EQ(float_to_fp4_e2m1(v), code) << v;
  EXPECT_EQ(float_to_fp4_e2m1(100.0f), 7);  // saturates at 6
  EXPECT_EQ(float_to_fp4_e2m1(2.6f), 5);
}

// The loader's measure for CUDA's E4M3 MoE products: the widest (largest - smallest) scale byte span within one row,
// rows of ceil(in / 32) scale bytes (a ragged last group counts), never across rows.
TEST(QuantCodec, Fp4RowScaleSpanIsTheWidestWithinOneRow) {
  // 3 rows of in = 70 (3 groups): spans 0, 14, 5; across rows the bytes would span 130 - 100 = 30.
  const std::vector<uint8_t> scale = {120, 120, 120, 116, 130, 125, 100, 105, 103};
  EXPECT_EQ(fp4_row_scale_span(scale.data(), 3, 70), 14);
  EXPECT_EQ(fp4_row_scale_span(scale.data(), 1, 70), 0);
  EXPECT_EQ(fp4_row_scale_span(scale.data() + 6, 1, 70), 5);
  EXPECT_EQ(fp4_row_scale_span(scale.data(), 0, 70), 0);
}

TEST(QuantCodec, ScalesAreTheSmallestPowerOfTwoHoldingTheBlock) {
  auto fp8_scale = [](float amax) {
    std::vector<float> w(4, 0.0f);
    w[1] = -amax;
    std::vector<uint8_t> q(4), s(1);
    quantize_fp8_block(w.data(), 2, 2, q.data(), s.data(), "t");
    return static_cast<int>(s[0]);
  };
  EXPECT_EQ(fp8_scale(448.0f), 127);
  EXPECT_EQ(fp8_scale(448.5f), 128);
  EXPECT_EQ(fp8_scale(224.0f), 126);
  EXPECT_EQ(fp8_scale(225.0f), 127);
  EXPECT_EQ(fp8_scale(0.0f), 127);  // an all-zero block
  EXPECT_EQ(fp8_scale(1e-45f), 0);  // below 2^-127 * 448: clamped to the smallest E8M0 scale
  auto fp4_scale = [](float amax) {
    std::vector<float> w(32, 0.0f);
    w[7] = amax;
    std::vector<uint8_t> q(16), s(1);
    quantize_fp4(w.data(), 1, 32, q.data(), s.data(), "t");
    return static_cast<int>(s[0]);
  };
  EXPECT_EQ(fp4_scale(6.0f), 127);
  EXPECT_EQ(fp4_scale(6.001f), 128);
  EXPECT_EQ(fp4_scale(3.0f), 126);
  EXPECT_EQ(fp4_scale(0.75f), 124);
}

TEST(QuantCodec, MatrixRoundTripMatchesTheIndependentDequantiser) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t out = 200, in = 300;  // partial 128-blocks on both sides, 300 = 9 full groups of 32 + 12
  std::vector<float> w(static_cast<size_t>(out * in));
  for (size_t i = 0; i < w.size(); ++i) w[i] = normal(rng) * (i % 977 == 0 ? 50.0f : 0.05f);
  // FP8 blocks.
  std::vector<uint8_t> q(w.size()), s(2 * 3);
  quantize_fp8_block(w.data(), out, in, q.data(), s.data(), "w");
  std::vector<float> dq(w.size());
  dequantize_fp8_block(q.data(), s.data(), out, in, dq.data(), "w");
  const std::vector<double> ref = ref_dequant_fp8(q.data(), s.data(), out, in);
  for (size_t i = 0; i < w.size(); ++i) {
    ASSERT_EQ(static_cast<double>(dq[i]), ref[i]) << i;  // exact
    const double step = ref_e8m0(s[(i / in / 128) * 3 + (i % in) / 128]);
    EXPECT_LE(std::fabs(dq[i] - w[i]), std::max(std::fabs(w[i]) / 16.0, step * std::pow(2.0, -10))) << i;
  }
  // FP4 groups of 32.
  const int64_t groups = (in + 31) / 32;
  std::vector<uint8_t> p(static_cast<size_t>(out * in / 2)), s4(static_cast<size_t>(out * groups));
  quantize_fp4(w.data(), out, in, p.data(), s4.data(), "w");
  dequantize_fp4(p.data(), s4.data(), out, in, dq.data(), "w");
  const std::vector<double> ref4 = ref_dequant_fp4(p.data(), s4.data(), out, in);
  for (size_t i = 0; i < w.size(); ++i) {
    ASSERT_EQ(static_cast<double>(dq[i]), ref4[i]) << i;
    const double step = ref_e8m0(s4[(i / in) * groups + (i % in) / 32]);
    EXPECT_LE(std::fabs(dq[i] - w[i]), std::max(std::fabs(w[i]) * 0.2, step * 0.25) + 1e-12) << i;
  }
}

TEST(QuantCodec, BadCodesAndInputsAreErrors) {
  std::vector<float> dst(4);
  const uint8_t q[4] = {0x38, 0x38, 0x7F, 0x38}, s[1] = {127}, nan_scale[1] = {0xFF};
  expect_error_contains([&] { dequantize_fp8_block(q, s, 2, 2, dst.data(), "tensor 'x'"); },
                        {"tensor 'x'", "[1, 0]", "NaN"});
  const uint8_t ok[4] = {0x38, 0x38, 0x38, 0x38};
  expect_error_contains([&] { dequantize_fp8_block(ok, nan_scale, 2, 2, dst.data(), "tensor 'x'"); },
                        {"tensor 'x'", "0xFF"});
  const uint8_t max_codes[4] = {0x7E, 0x7E, 0x7E, 0x7E}, big[1] = {254};  // 448 * 2^127
  expect_error_contains([&] { dequantize_fp8_block(max_codes, big, 2, 2, dst.data(), "tensor 'x'"); },
                        {"overflows f32"});
  const float inf_w[2] = {1.0f, INFINITY};
  uint8_t qb[2], sb[1];
  expect_error_contains([&] { quantize_fp8_block(inf_w, 1, 2, qb, sb, "tensor 'y'"); },
                        {"tensor 'y'", "non-finite", "[0, 1]"});
  const float three[3] = {1, 2, 3};
  expect_error_contains([&] { quantize_fp4(three, 1, 3, qb, sb, "tensor 'z'"); }, {"tensor 'z'", "even"});
}

// ---- quantization_config ----------------------------------------------------------------------------------------

json tiny_json() { return json::parse(tiny_config().to_json()); }
json official_qc() {
  return {{"activation_scheme", "dynamic"},
          {"fmt", "e4m3"},
          {"quant_method", "fp8"},
          {"scale_fmt", "ue8m0"},
          {"weight_block_size", {128, 128}}};
}
ModelConfig parse(const json& j) { return ModelConfig::from_json_text(j.dump(), "config.json"); }

TEST(QuantConfig, OfficialFieldsParseAndRoundTrip) {
  json j = tiny_json();
  EXPECT_FALSE(parse(j).quantization.quantized);
  j["quantization_config"] = official_qc();
  j["expert_dtype"] = "fp4";
  ModelConfig c = parse(j);
  EXPECT_TRUE(c.quantization.quantized);
  EXPECT_EQ(c.quantization.dense, WeightFormat::kFp8Block);
  EXPECT_EQ(c.quantization.experts, WeightFormat::kFp4);
  const ModelConfig again = ModelConfig::from_json_text(c.to_json());
  EXPECT_EQ(again.quantization.experts, WeightFormat::kFp4);
  EXPECT_EQ(again.quantization.expert_dtype, "fp4");
  j["expert_dtype"] = "fp8";
  EXPECT_EQ(parse(j).quantization.experts, WeightFormat::kFp8Block);
  j["expert_dtype"] = "bf16";
  EXPECT_EQ(parse(j).quantization.experts, WeightFormat::kPlain);
  j.erase("expert_dtype");  // DeepSeek's reference: experts follow the dense dtype
  EXPECT_EQ(parse(j).quantization.experts, WeightFormat::kFp8Block);
  j["quantization_config"]["expert_dtype"] = "fp4";  // V4.1 spelling, inside quantization_config
  EXPECT_EQ(parse(j).quantization.experts, WeightFormat::kFp4);
  // Absent fields take DeepSeek-V4's values (a config with only quant_method and the block size).
  j["quantization_config"] = {{"quant_method", "fp8"}};
  EXPECT_EQ(parse(j).quantization.dense, WeightFormat::kFp8Block);
  json plain = tiny_json();
  plain["expert_dtype"] = "bf16";  // the default model's config
  EXPECT_FALSE(parse(plain).quantization.quantized);
  EXPECT_EQ(parse(plain).quantization.experts, WeightFormat::kPlain);
}

TEST(QuantConfig, EveryUnsupportedFieldIsNamed) {
  auto error_of = [](const std::function<void(json&)>& edit) {
    json j = tiny_json();
    j["quantization_config"] = official_qc();
    j["expert_dtype"] = "fp4";
    edit(j);
    try {
      parse(j);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::kParseError);
      return std::string(e.what());
    }
    ADD_FAILURE() << "expected a parse error for " << j.dump();
    return std::string();
  };
  auto expect = [](const std::string& msg, const std::vector<std::string>& parts) {
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' in: " << msg;
  };
  expect(error_of([](json& j) { j["quantization_config"]["fmt"] = "e5m2"; }),
         {"config.json", "quantization_config.fmt", "'e5m2'", "e4m3"});
  expect(error_of([](json& j) { j["quantization_config"]["scale_fmt"] = "fp32"; }),
         {"quantization_config.scale_fmt", "'fp32'", "ue8m0"});
  expect(error_of([](json& j) {
           j["quantization_config"]["weight_block_size"] = {64, 64};
         }),
         {"weight_block_size", "[64,64]", "not supported", "[128, 128]"});
  expect(error_of([](json& j) { j["quantization_config"]["weight_block_size"] = "128"; }),
         {"weight_block_size", "two integers"});
  expect(error_of([](json& j) { j["quantization_config"]["quant_method"] = "gptq"; }), {"quant_method", "'gptq'"});
  expect(error_of([](json& j) { j["quantization_config"]["activation_scheme"] = "static"; }),
         {"activation_scheme", "'static'"});
  expect(error_of([](json& j) { j["expert_dtype"] = "int4"; }), {"expert_dtype", "'int4'", "fp4, fp8 or bf16"});
  expect(error_of([](json& j) { j["quantization_config"] = "fp8"; }), {"quantization_config", "object"});
  expect(error_of([](json& j) { j["quantization_config"]["expert_dtype"] = "fp8"; }),
         {"expert_dtype", "'fp4'", "'fp8'"});
  expect(error_of([](json& j) { j.erase("quantization_config"); }), {"expert_dtype", "no quantization_config"});
}

// ---- checkpoints -------------------------------------------------------------------------------------------------

class QuantizedCheckpoint : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::path(testing::TempDir()) / str_cat("dsv4_quant_", ::getpid())).string();
    fs::remove_all(dir_);
    write_random_checkpoint(dir_ + "/bf16", tiny_config(), 11);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string quantize(const std::string& name, WeightFormat experts, size_t shard_bytes = size_t{1} << 30) {
    QuantizeOptions o;
    o.experts = experts;
    o.shard_bytes = shard_bytes;
    quantize_checkpoint(dir_ + "/bf16", dir_ + "/" + name, o);
    return dir_ + "/" + name;
  }
  static ModelConfig config_of(const std::string& d) { return ModelConfig::from_file(d + "/config.json"); }

  // Copies a checkpoint's tensors into memory, lets `edit` change them, and writes the result (one file, the
  // source's config.json) as a new checkpoint.
  std::string rewrite(const std::string& src, const std::string& name,
                      const std::function<void(std::vector<std::pair<std::string, HostTensor>>&)>& edit) {
    const Checkpoint c = Checkpoint::open(src);
    std::vector<std::pair<std::string, HostTensor>> tensors;
    for (const std::string& n : c.names()) {
      const Tensor v = c.view(n);
      HostTensor t(v.dtype(), v.shape());
      std::memcpy(t.t().data(), v.data(), v.nbytes());
      tensors.emplace_back(n, std::move(t));
    }
    edit(tensors);
    const std::string d = dir_ + "/" + name;
    fs::create_directories(d);
    std::vector<std::pair<std::string, Tensor>> list;
    for (const auto& [n, t] : tensors) list.emplace_back(n, t.t());
    save_safetensors(d + "/model.safetensors", list);
    fs::copy_file(src + "/config.json", d + "/config.json", fs::copy_options::overwrite_existing);
    return d;
  }
  static HostTensor& find(std::vector<std::pair<std::string, HostTensor>>& ts, const std::string& name) {
    for (auto& [n, t] : ts) {
      if (n == name) return t;
    }
    throw std::runtime_error("no tensor " + name);
  }
  static void erase(std::vector<std::pair<std::string, HostTensor>>& ts, const std::string& name) {
    std::erase_if(ts, [&](const auto& p) { return p.first == name; });
  }
  static std::string load_error(const std::string& d) {
    try {
      load_weights(Checkpoint::open(d), config_of(d), {});
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "expected loading " << d << " to fail";
    return "";
  }
  static void expect_parts(const std::string& msg, const std::vector<std::string>& parts) {
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' in:\n" << msg;
  }

  std::string dir_;
};

// Compares a loaded f32 matrix with the independent dequantisation of the checkpoint's raw bytes.
void expect_equals_reference(const Checkpoint& c, const std::string& name, const Tensor& loaded) {
  SCOPED_TRACE(name);
  const Tensor q = c.view(name);
  const Tensor s = c.view(name.substr(0, name.size() - 7) + ".scale");
  ASSERT_EQ(s.dtype(), DType::F8_E8M0);
  const int64_t out = loaded.size(0), in = loaded.size(1);
  const std::vector<double> ref = q.dtype() == DType::F8_E4M3
                                      ? ref_dequant_fp8(q.ptr<uint8_t>(), s.ptr<uint8_t>(), out, in)
                                      : ref_dequant_fp4(q.ptr<uint8_t>(), s.ptr<uint8_t>(), out, in);
  const std::vector<float> got = test::to_vector(loaded);
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(static_cast<double>(got[i]), ref[i]) << i;
}

TEST_F(QuantizedCheckpoint, RoundTripLoadsExactlyWhatTheIndependentDequantiserReads) {
  for (WeightFormat experts : {WeightFormat::kFp4, WeightFormat::kFp8Block}) {
    SCOPED_TRACE(weight_format_name(experts));
    const std::string d = quantize(experts == WeightFormat::kFp4 ? "fp4" : "fp8", experts);
    const Checkpoint c = Checkpoint::open(d);
    const ModelConfig cfg = config_of(d);
    const ModelWeights w = load_weights(c, cfg, {Device::kCPU, true});
    ASSERT_TRUE(w.mtp.has_value());
    expect_equals_reference(c, "layers.1.attn.wq_a.weight", w.layers[1].attn.wq_a);
    expect_equals_reference(c, "layers.3.attn.indexer.wq_b.weight", w.layers[3].attn.indexer_wq_b);
    expect_equals_reference(c, "layers.2.attn.wo_b.weight", w.layers[2].attn.wo_b);
    expect_equals_reference(c, "layers.2.ffn.experts.5.w2.weight", w.layers[2].ffn.w2.plain().select(0, 5));
    expect_equals_reference(c, "layers.0.ffn.experts.0.w1.weight", w.layers[0].ffn.w1.plain().select(0, 0));
    expect_equals_reference(c, "layers.3.ffn.shared_experts.w3.weight", w.layers[3].ffn.shared_w3);
    expect_equals_reference(c, "mtp.0.ffn.experts.7.w3.weight", w.mtp->block.ffn.w3.plain().select(0, 7));
    // The MTP's [h_proj | e_proj]: each half dequantised on its own.
    const int64_t H = cfg.hidden_size;
    HostTensor h(DType::F32, {H, H}), e(DType::F32, {H, H});
    for (int64_t r = 0; r < H; ++r) {
      std::memcpy(h.ptr<float>() + r * H, w.mtp->eh_proj.plain().ptr<float>() + r * 2 * H, H * 4);
      std::memcpy(e.ptr<float>() + r * H, w.mtp->eh_proj.plain().ptr<float>() + r * 2 * H + H, H * 4);
    }
    expect_equals_reference(c, "mtp.0.h_proj.weight", h.t());
    expect_equals_reference(c, "mtp.0.e_proj.weight", e.t());
    // Unquantised tensors are the source's, unchanged.
    const Checkpoint src = Checkpoint::open(dir_ + "/bf16");
    for (const char* n : {"embed.weight", "layers.1.attn.compressor.wkv.weight", "layers.1.ffn.gate.weight"}) {
      EXPECT_EQ(c.view(n).dtype(), src.view(n).dtype()) << n;
      EXPECT_EQ(std::memcmp(c.view(n).data(), src.view(n).data(), src.view(n).nbytes()), 0) << n;
    }
    // Quantised values stay close to the bf16 source (FP8 ~2^-4 relative, FP4 coarser).
    const std::vector<float> a = test::to_vector(src.view("layers.1.attn.wq_b.weight"));
    const std::vector<float> b = test::to_vector(w.layers[1].attn.wq_b);
    EXPECT_LT(test::max_rel_error(b.data(), a.data(), a.size()), 0.07);
  }
}

TEST_F(QuantizedCheckpoint, OfficialLayout) {
  const std::string d = quantize("sharded", WeightFormat::kFp4, 200 << 10);
  const json cfg = json::parse(std::ifstream(d + "/config.json"));
  EXPECT_EQ(cfg["quantization_config"], official_qc());
  EXPECT_EQ(cfg["expert_dtype"], "fp4");
  const json index = json::parse(std::ifstream(d + "/model.safetensors.index.json"));
  ASSERT_TRUE(index["weight_map"].is_object());
  std::set<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) shards.insert(file.get<std::string>());
  ASSERT_GT(shards.size(), 2u);
  EXPECT_TRUE(shards.count(str_cat("model-00001-of-0000", shards.size(), ".safetensors")));
  EXPECT_FALSE(fs::exists(d + "/model.safetensors"));
  const Checkpoint c = Checkpoint::open(d);
  size_t total = 0;
  for (const std::string& n : c.names()) total += c.find(n)->nbytes;
  EXPECT_EQ(index["metadata"]["total_size"].get<size_t>(), total);
  // Dense FP8 with one 128 x 128 scale block (the tiny matrices are smaller than a block).
  EXPECT_EQ(c.find("layers.0.attn.wq_a.weight")->dtype, DType::F8_E4M3);
  EXPECT_EQ(c.find("layers.0.attn.wq_a.scale")->dtype, DType::F8_E8M0);
  EXPECT_EQ(c.find("layers.0.attn.wq_a.scale")->shape, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(c.find("mtp.0.e_proj.scale")->dtype, DType::F8_E8M0);
  // FP4 experts: I8 [out, in/2], scales [out, in/32]. w1 is [32, 64], w2 [64, 32].
  EXPECT_EQ(c.find("layers.1.ffn.experts.0.w1.weight")->dtype, DType::I8);
  EXPECT_EQ(c.find("layers.1.ffn.experts.0.w1.weight")->shape, (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(c.find("layers.1.ffn.experts.0.w1.scale")->shape, (std::vector<int64_t>{32, 2}));
  EXPECT_EQ(c.find("layers.1.ffn.experts.0.w2.scale")->shape, (std::vector<int64_t>{64, 1}));
  // Unquantised classes stay as DeepSeek ships them.
  for (const char* n : {"embed.weight", "head.weight", "layers.1.ffn.gate.weight",
                        "layers.1.attn.compressor.wgate.weight", "layers.1.attn.indexer.weights_proj.weight"}) {
    EXPECT_EQ(c.find(n)->dtype, DType::BF16) << n;
    EXPECT_EQ(c.find(str_cat(std::string(n).substr(0, std::string(n).size() - 7), ".scale")), nullptr) << n;
  }
  EXPECT_EQ(c.find("layers.0.ffn.gate.tid2eid")->dtype, DType::I64);
  // Sharded and single-file outputs load to the same weights.
  const std::string one = quantize("single", WeightFormat::kFp4);
  const ModelWeights a = load_weights(c, config_of(d), {});
  const ModelWeights b = load_weights(Checkpoint::open(one), config_of(one), {});
  ASSERT_EQ(a.storage.capacity(), b.storage.capacity());
  const std::vector<float> x = test::to_vector(a.layers[3].ffn.w2), y = test::to_vector(b.layers[3].ffn.w2);
  EXPECT_EQ(x, y);
  // Quantising an already quantised checkpoint keeps every value (the scales may shrink where rounding lowered
  // a block's largest magnitude, so the bytes can differ).
  QuantizeOptions o;
  quantize_checkpoint(one, dir_ + "/again", o);
  const ModelWeights c2 = load_weights(Checkpoint::open(dir_ + "/again"), config_of(dir_ + "/again"), {});
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(test::to_vector(c2.layers[l].ffn.w1), test::to_vector(b.layers[l].ffn.w1)) << l;
    EXPECT_EQ(test::to_vector(c2.layers[l].attn.wkv), test::to_vector(b.layers[l].attn.wkv)) << l;
  }
}

TEST_F(QuantizedCheckpoint, MalformedCheckpointsGiveClearErrors) {
  const std::string q = quantize("q", WeightFormat::kFp4);
  using Ts = std::vector<std::pair<std::string, HostTensor>>;
  expect_parts(load_error(rewrite(q, "noscale", [](Ts& t) { erase(t, "layers.0.attn.wq_a.scale"); })),
               {"missing scale tensor 'layers.0.attn.wq_a.scale'", "'layers.0.attn.wq_a.weight'", "F8_E8M0 [1, 1]"});
  expect_parts(load_error(rewrite(q, "scaleshape",
                                  [](Ts& t) {
                                    find(t, "layers.1.attn.wq_b.scale") = HostTensor(DType::F8_E8M0, {2, 1});
                                  })),
               {"scale tensor 'layers.1.attn.wq_b.scale' has shape [2, 1], expected [1, 1]"});
  expect_parts(load_error(rewrite(q, "scaledtype",
                                  [](Ts& t) {
                                    find(t, "layers.1.attn.wkv.scale") = HostTensor(DType::F32, {1, 1});
                                  })),
               {"scale tensor 'layers.1.attn.wkv.scale' has dtype F32, expected F8_E8M0"});
  expect_parts(load_error(rewrite(q, "fp4scale",
                                  [](Ts& t) {
                                    find(t, "layers.2.ffn.experts.4.w1.scale") = HostTensor(DType::F8_E8M0, {32, 1});
                                  })),
               {"'layers.2.ffn.experts.4.w1.scale' has shape [32, 1], expected [32, 2]", "fp4-e2m1"});
  expect_parts(load_error(rewrite(q, "fp4shape",
                                  [](Ts& t) {
                                    find(t, "layers.2.ffn.experts.4.w2.weight") = HostTensor(DType::I8, {64, 32});
                                  })),
               {"'layers.2.ffn.experts.4.w2.weight' has shape [64, 32], expected [64, 16]"});
  expect_parts(load_error(rewrite(q, "bf16dense",
                                  [](Ts& t) {
                                    find(t, "layers.0.attn.wo_a.weight") = HostTensor(DType::BF16, {32, 64});
                                  })),
               {"'layers.0.attn.wo_a.weight' has dtype BF16, expected F8_E4M3", "quantization_config"});
  expect_parts(
      load_error(rewrite(q, "expertdtype",
                         [](Ts& t) {
                           find(t, "layers.3.ffn.experts.1.w3.weight") = HostTensor(DType::F8_E4M3, {32, 32});
                         })),
      {"'layers.3.ffn.experts.1.w3.weight' has dtype F8_E4M3, expected I8 (packed FP4)", "expert_dtype is 'fp4'"});
  expect_parts(load_error(rewrite(q, "extrascale",
                                  [](Ts& t) {
                                    t.emplace_back("embed.scale", HostTensor(DType::F8_E8M0, {1, 1}));
                                  })),
               {"unexpected scale tensor 'embed.scale'", "not stored quantised"});
  expect_parts(
      load_error(rewrite(q, "nanscale", [](Ts& t) { find(t, "layers.1.attn.wq_a.scale").ptr<uint8_t>()[0] = 0xFF; })),
      {"tensor 'layers.1.attn.wq_a.weight'", "0xFF (NaN in E8M0)"});
  // A quantised config over a bf16 checkpoint, and a plain config over a quantised one.
  const std::string plain_as_q = rewrite(dir_ + "/bf16", "plainasq", [](Ts&) {});
  fs::copy_file(q + "/config.json", plain_as_q + "/config.json", fs::copy_options::overwrite_existing);
  expect_parts(load_error(plain_as_q),
               {"'layers.0.attn.wq_a.weight' has dtype BF16, expected F8_E4M3",
                "'layers.0.ffn.experts.0.w1.weight' has dtype BF16, expected I8", "missing scale tensor"});
  const std::string q_as_plain = rewrite(q, "qasplain", [](Ts&) {});
  fs::copy_file(dir_ + "/bf16/config.json", q_as_plain + "/config.json", fs::copy_options::overwrite_existing);
  expect_parts(load_error(q_as_plain), {"'layers.0.attn.wq_a.weight' has dtype F8_E4M3", "no quantization_config"});
  // The MTP's own copies of the embedding and head, as DeepSeek's checkpoints may carry them: accepted (unused)
  // when shaped [V, H].
  const std::string copies = rewrite(q, "mtpcopies", [](Ts& t) {
    t.emplace_back("mtp.0.emb.tok_emb.weight", HostTensor(DType::BF16, {512, 64}));
    t.emplace_back("mtp.0.head.weight", HostTensor(DType::BF16, {512, 64}));
  });
  EXPECT_TRUE(load_weights(Checkpoint::open(copies), config_of(copies), {}).mtp.has_value());
  expect_parts(load_error(rewrite(q, "mtpcopybad",
                                  [](Ts& t) {
                                    t.emplace_back("mtp.0.head.weight", HostTensor(DType::BF16, {512, 32}));
                                  })),
               {"'mtp.0.head.weight'", "has shape [512, 32], expected [512, 64]"});
  // A truncated shard.
  const std::string cut = rewrite(q, "truncated", [](Ts&) {});
  fs::resize_file(cut + "/model.safetensors", fs::file_size(cut + "/model.safetensors") - 100);
  expect_error_contains([&] { Checkpoint::open(cut); }, {"truncated"});
}

// Hand-written codes and scale bytes load as the format defines them (literal expected values: the nibble order,
// the sign bit, the E8M0 bias and the block/group layout, independent of any codec in dsv4 or this file).
TEST_F(QuantizedCheckpoint, HandWrittenCodesLoadAsDefined) {
  const std::string q = quantize("q", WeightFormat::kFp4);
  using Ts = std::vector<std::pair<std::string, HostTensor>>;
  const std::string d = rewrite(q, "hand", [](Ts& t) {
    // wq_a [32, 64], one 128x128 block: 0x38 = 1.0, 0xB8 = -1.0, 0x3C = 1.5, 0x01 = 2^-9, 0x7E = 448; scale 2^3.
    uint8_t* w = find(t, "layers.0.attn.wq_a.weight").ptr<uint8_t>();
    std::memset(w, 0, 32 * 64);
    w[0] = 0x38;
    w[1] = 0xB8;
    w[64 + 2] = 0x3C;
    w[31 * 64 + 63] = 0x01;
    w[5 * 64 + 7] = 0x7E;
    find(t, "layers.0.attn.wq_a.scale").ptr<uint8_t>()[0] = 130;
    // Expert 2's w1 [32, 64] as [32, 32] bytes, scales [32, 2]: row 0 byte 0 = 0x7A -> element 0 = -1.0 (low
    // nibble 0xA), element 1 = 6.0 (high nibble 0x7); row 0 byte 16 (elements 32, 33, second group) = 0x21 ->
    // 0.5, 1.0; row 3 byte 31 (elements 62, 63) = 0xF9 -> -0.5, -6.0.
    uint8_t* e = find(t, "layers.0.ffn.experts.2.w1.weight").ptr<uint8_t>();
    std::memset(e, 0, 32 * 32);
    e[0] = 0x7A;
    e[16] = 0x21;
    e[3 * 32 + 31] = 0xF9;
    uint8_t* s = find(t, "layers.0.ffn.experts.2.w1.scale").ptr<uint8_t>();
    std::memset(s, 127, 32 * 2);
    s[0] = 126;          // row 0, group 0: 2^-1
    s[1] = 129;          // row 0, group 1: 2^2
    s[3 * 2 + 1] = 120;  // row 3, group 1: 2^-7
  });
  const ModelWeights w = load_weights(Checkpoint::open(d), config_of(d), {});
  const float* a = w.layers[0].attn.wq_a.plain().ptr<float>();
  EXPECT_EQ(a[0], 8.0f);
  EXPECT_EQ(a[1], -8.0f);
  EXPECT_EQ(a[64 + 2], 12.0f);
  EXPECT_EQ(a[31 * 64 + 63], std::ldexp(1.0f, -6));
  EXPECT_EQ(a[5 * 64 + 7], 3584.0f);
  EXPECT_EQ(a[3], 0.0f);
  const Tensor ex = w.layers[0].ffn.w1.plain().select(0, 2);
  const float* x = ex.ptr<float>();
  EXPECT_EQ(x[0], -0.5f);
  EXPECT_EQ(x[1], 3.0f);
  EXPECT_EQ(x[32], 2.0f);
  EXPECT_EQ(x[33], 4.0f);
  EXPECT_EQ(x[3 * 64 + 62], -std::ldexp(0.5f, -7));
  EXPECT_EQ(x[3 * 64 + 63], -std::ldexp(6.0f, -7));
  EXPECT_EQ(x[2], 0.0f);
}

TEST_F(QuantizedCheckpoint, OddExpertInputIsRejected) {
  ModelConfig cfg = tiny_config();
  cfg.moe_intermediate_size = 33;  // w2 [64, 33]: cannot be packed two values a byte
  write_random_checkpoint(dir_ + "/odd", cfg, 2);
  QuantizeOptions o;
  expect_error_contains([&] { quantize_checkpoint(dir_ + "/odd", dir_ + "/oddq", o); },
                        {"ffn.experts.0.w2.weight", "odd input dimension 33", "--expert-dtype fp8"});
  o.experts = WeightFormat::kFp8Block;  // FP8 experts take any shape (partial 128-blocks)
  quantize_checkpoint(dir_ + "/odd", dir_ + "/oddq8", o);
  EXPECT_NO_THROW(load_weights(Checkpoint::open(dir_ + "/oddq8"), config_of(dir_ + "/oddq8"), {}));
  // The loader names it too when a config claims FP4 experts.
  json j = json::parse(std::ifstream(dir_ + "/oddq8/config.json"));
  j["expert_dtype"] = "fp4";
  std::ofstream(dir_ + "/oddq8/config.json") << j.dump();
  expect_parts(load_error(dir_ + "/oddq8"), {"odd input dimension 33", "packed FP4"});
}

}  // namespace
}  // namespace dsv4
