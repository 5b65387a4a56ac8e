#include "dsv4/io/quantization.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <nlohmann/json.hpp>

#include "dsv4/core/dtype.h"
#include "dsv4/core/status.h"

namespace dsv4 {
namespace {

using json = nlohmann::json;

constexpr float kFp4Magnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
constexpr double kE4m3Max = 448.0;
constexpr double kE2m1Max = 6.0;
constexpr uint8_t kE8m0Nan = 0xFF;
// Matrices above this many elements are (de)quantised with OpenMP over rows.
[[maybe_unused]] constexpr int64_t kParallelElements = int64_t{1} << 18;  // read by OpenMP pragmas only

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The 127 non-negative finite E4M3FN values in code order (0x00 .. 0x7E): increasing.
const std::array<float, 127>& e4m3_positive() {
  static const std::array<float, 127> table = [] {
    std::array<float, 127> t{};
    for (int c = 0; c < 127; ++c) t[c] = f8e4m3_to_float(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

// Nearest value of an increasing table (codes 0..n-1) to a >= 0, ties to the even code (= even mantissa,
// since consecutive codes differ in the mantissa's last bit); saturates at the last code.
template <size_t N>
int round_to_table(const float* table, float a) {
  if (!(a < table[N - 1])) return static_cast<int>(N - 1);
  const float* hi = std::lower_bound(table, table + N, a);
  const int c = static_cast<int>(hi - table);
  if (*hi == a || c == 0) return c;
  const float below = a - table[c - 1], above = *hi - a;
  if (below < above) return c - 1;
  if (above < below) return c;
  return (c % 2 == 0) ? c : c - 1;
}

float e8m0_value(uint8_t s) { return std::ldexp(1.0f, static_cast<int>(s) - 127); }

[[noreturn]] void non_finite_input(const std::string& what, int64_t row, int64_t col, float v) {
  fail(StatusCode::kInvalidArgument, what, ": cannot quantise the non-finite value ", v, " at [", row, ", ", col, "]");
}

// Errors found inside an OpenMP region are recorded (first by index) and thrown after it.
struct FirstError {
  std::atomic<int64_t> index{INT64_MAX};
  void record(int64_t i) {
    int64_t cur = index.load();
    while (i < cur && !index.compare_exchange_weak(cur, i)) {
    }
  }
  bool any() const { return index.load() != INT64_MAX; }
};

}  // namespace

int scale_exponent(double amax, double qmax) {
  if (amax == 0.0) return 0;
  int e = std::ilogb(amax) - std::ilogb(qmax);
  while (amax > std::ldexp(qmax, e)) ++e;
  while (amax <= std::ldexp(qmax, e - 1)) --e;
  return std::clamp(e, -127, 127);
}

const char* weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::kPlain:
      return "plain";
    case WeightFormat::kFp8Block:
      return "fp8-e4m3 (ue8m0 128x128 blocks)";
    case WeightFormat::kFp4:
      return "fp4-e2m1 (ue8m0 per 32)";
  }
  return "?";
}

QuantizationConfig QuantizationConfig::official(WeightFormat experts) {
  QuantizationConfig q;
  q.quantized = true;
  q.dense = WeightFormat::kFp8Block;
  q.experts = experts;
  q.expert_dtype = experts == WeightFormat::kFp4 ? "fp4" : experts == WeightFormat::kFp8Block ? "fp8" : "bf16";
  return q;
}

QuantizationConfig parse_quantization_config(const json& root, const std::string& origin) {
  auto bad = [&](const std::string& key, auto&&... problem) {
    fail(StatusCode::kParseError, origin, ": field '", key, "' ", problem...);
  };
  auto string_field = [&](const json& obj, const std::string& key, const std::string& path) -> std::string {
    if (!obj.contains(key) || obj.at(key).is_null()) return "";
    if (!obj.at(key).is_string()) bad(path, "must be a string, got ", obj.at(key).type_name());
    return obj.at(key).get<std::string>();
  };
  QuantizationConfig q;
  std::string expert_dtype = string_field(root, "expert_dtype", "expert_dtype");
  const bool has_qc = root.contains("quantization_config") && !root.at("quantization_config").is_null();
  if (has_qc) {
    const json& qc = root.at("quantization_config");
    if (!qc.is_object()) bad("quantization_config", "must be an object");
    q.quantized = true;
    q.dense = WeightFormat::kFp8Block;
    const std::string method = string_field(qc, "quant_method", "quantization_config.quant_method");
    if (!method.empty() && method != "fp8") {
      bad("quantization_config.quant_method", "is '", method, "': dsv4 reads DeepSeek's 'fp8' checkpoints");
    }
    // Absent fields take DeepSeek-V4's values; the tensors' dtypes and shapes are validated at load either way.
    const std::string fmt = string_field(qc, "fmt", "quantization_config.fmt");
    if (!fmt.empty() && fmt != "e4m3") bad("quantization_config.fmt", "is '", fmt, "': dsv4 reads 'e4m3' FP8 weights");
    const std::string scale_fmt = string_field(qc, "scale_fmt", "quantization_config.scale_fmt");
    if (!scale_fmt.empty() && scale_fmt != "ue8m0") {
      bad("quantization_config.scale_fmt", "is '", scale_fmt,
          "': dsv4 reads 'ue8m0' scales (F8_E8M0 tensors named <weight>.scale)");
    }
    const std::string act = string_field(qc, "activation_scheme", "quantization_config.activation_scheme");
    if (!act.empty() && act != "dynamic") {
      bad("quantization_config.activation_scheme", "is '", act, "': only 'dynamic' is supported");
    }
    if (qc.contains("weight_block_size") && !qc.at("weight_block_size").is_null()) {
      const json& bs = qc.at("weight_block_size");
      if (!bs.is_array() || bs.size() != 2 || !bs[0].is_number_integer() || !bs[1].is_number_integer()) {
        bad("quantization_config.weight_block_size", "must be a list of two integers, got ", bs.dump());
      }
      if (bs[0].get<int64_t>() != kFp8Block || bs[1].get<int64_t>() != kFp8Block) {
        bad("quantization_config.weight_block_size", "is ", bs.dump(),
            ": block sizes other than [128, 128] are not supported");
      }
    }
    const std::string inner = string_field(qc, "expert_dtype", "quantization_config.expert_dtype");
    if (!inner.empty() && !expert_dtype.empty() && inner != expert_dtype) {
      bad("expert_dtype", "is '", expert_dtype, "' but quantization_config.expert_dtype is '", inner, "'");
    }
    if (expert_dtype.empty()) expert_dtype = inner;
  }
  q.expert_dtype = expert_dtype;
  if (expert_dtype.empty()) {
    q.experts = q.dense;  // DeepSeek's reference: experts take the model's dtype unless expert_dtype says otherwise
  } else if (expert_dtype == "bf16") {
    q.experts = WeightFormat::kPlain;
  } else if (expert_dtype == "fp8" || expert_dtype == "fp4") {
    if (!has_qc) {
      bad("expert_dtype", "is '", expert_dtype,
          "' but config.json has no quantization_config (the scale format of the experts is undefined)");
    }
    q.experts = expert_dtype == "fp8" ? WeightFormat::kFp8Block : WeightFormat::kFp4;
  } else {
    bad("expert_dtype", "is '", expert_dtype, "' (expected fp4, fp8 or bf16)");
  }
  return q;
}

void write_quantization_config(const QuantizationConfig& q, json& root) {
  if (q.quantized) {
    root["quantization_config"] = {{"activation_scheme", "dynamic"},
                                   {"fmt", "e4m3"},
                                   {"quant_method", "fp8"},
                                   {"scale_fmt", "ue8m0"},
                                   {"weight_block_size", {kFp8Block, kFp8Block}}};
  }
  if (!q.expert_dtype.empty()) root["expert_dtype"] = q.expert_dtype;
}

float fp4_e2m1_to_float(uint8_t nibble) {
  const float m = kFp4Magnitudes[nibble & 7];
  return (nibble & 8) ? -m : m;
}

uint8_t float_to_f8e4m3(float x) {
  if (std::isnan(x)) return 0x7F;
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  return sign | static_cast<uint8_t>(round_to_table<127>(e4m3_positive().data(), std::fabs(x)));
}

uint8_t float_to_fp4_e2m1(float x) {
  if (std::isnan(x)) return 0;
  const uint8_t sign = std::signbit(x) ? 0x8 : 0x0;
  return sign | static_cast<uint8_t>(round_to_table<8>(kFp4Magnitudes, std::fabs(x)));
}

std::vector<int64_t> quantized_weight_shape(WeightFormat f, int64_t out, int64_t in) {
  if (f == WeightFormat::kFp4) return {out, in / 2};
  return {out, in};
}

std::vector<int64_t> quantized_scale_shape(WeightFormat f, int64_t out, int64_t in) {
  switch (f) {
    case WeightFormat::kPlain:
      return {};
    case WeightFormat::kFp8Block:
      return {ceil_div(out, kFp8Block), ceil_div(in, kFp8Block)};
    case WeightFormat::kFp4:
      return {out, ceil_div(in, kFp4Group)};
  }
  return {};
}

void dequantize_fp8_block(const uint8_t* q, const uint8_t* scale, int64_t out, int64_t in, float* dst,
                          const std::string& what) {
  const int64_t sc = ceil_div(in, kFp8Block), sr = ceil_div(out, kFp8Block);
  for (int64_t i = 0; i < sr * sc; ++i) {
    DSV4_CHECK_ARG(scale[i] != kE8m0Nan, what, ": scale [", i / sc, ", ", i % sc, "] is 0xFF (NaN in E8M0)");
    // |e4m3| <= 448 = 1.75 * 2^8: a product overflows f32 only from 2^120 on.
    DSV4_CHECK_ARG(scale[i] < 127 + 120, what, ": scale [", i / sc, ", ", i % sc, "] = 2^", int(scale[i]) - 127,
                   " overflows f32 times the largest E4M3 value");
  }
  float table[256];
  for (int c = 0; c < 256; ++c) table[c] = f8e4m3_to_float(static_cast<uint8_t>(c));
  FirstError nan_row;
#pragma omp parallel for schedule(static) if (out * in > kParallelElements)
  for (int64_t r = 0; r < out; ++r) {
    const uint8_t* qr = q + r * in;
    const uint8_t* srow = scale + (r / kFp8Block) * sc;
    float* d = dst + r * in;
    int nan_codes = 0;
    for (int64_t k0 = 0; k0 < in; k0 += kFp8Block) {
      const float s = e8m0_value(srow[k0 / kFp8Block]);
      const int64_t k1 = std::min(in, k0 + kFp8Block);
      for (int64_t k = k0; k < k1; ++k) {
        nan_codes |= (qr[k] & 0x7F) == 0x7F;
        d[k] = table[qr[k]] * s;
      }
    }
    if (nan_codes) nan_row.record(r);
  }
  if (nan_row.any()) {
    const int64_t r = nan_row.index.load();
    int64_t k = 0;
    while ((q[r * in + k] & 0x7F) != 0x7F) ++k;
    fail(StatusCode::kInvalidArgument, what, ": element [", r, ", ", k, "] is an E4M3 NaN code");
  }
}

int fp4_row_scale_span(const uint8_t* scale, int64_t out, int64_t in) {
  const int64_t sc = ceil_div(in, kFp4Group);
  int span = 0;
  for (int64_t r = 0; r < out; ++r) {
    const auto [lo, hi] = std::minmax_element(scale + r * sc, scale + (r + 1) * sc);
    if (sc > 0) span = std::max(span, int(*hi) - int(*lo));
  }
  return span;
}

void dequantize_fp4(const uint8_t* packed, const uint8_t* scale, int64_t out, int64_t in, float* dst,
                    const std::string& what) {
  DSV4_CHECK_ARG(in % 2 == 0, what, ": packed FP4 needs an even input dimension, got ", in);
  const int64_t sc = ceil_div(in, kFp4Group);
  for (int64_t i = 0; i < out * sc; ++i) {
    DSV4_CHECK_ARG(scale[i] != kE8m0Nan, what, ": scale [", i / sc, ", ", i % sc, "] is 0xFF (NaN in E8M0)");
    // |e2m1| <= 6 = 1.5 * 2^2: a product overflows f32 only from 2^126 on.
    DSV4_CHECK_ARG(scale[i] < 127 + 126, what, ": scale [", i / sc, ", ", i % sc, "] = 2^", int(scale[i]) - 127,
                   " overflows f32 times the largest E2M1 value");
  }
  // Both values of every byte: element 2j in the low nibble.
  float pairs[256][2];
  for (int b = 0; b < 256; ++b) {
    pairs[b][0] = fp4_e2m1_to_float(static_cast<uint8_t>(b & 0xF));
    pairs[b][1] = fp4_e2m1_to_float(static_cast<uint8_t>(b >> 4));
  }
#pragma omp parallel for schedule(static) if (out * in > kParallelElements)
  for (int64_t r = 0; r < out; ++r) {
    const uint8_t* pr = packed + r * (in / 2);
    const uint8_t* srow = scale + r * sc;
    float* d = dst + r * in;
    for (int64_t g = 0; g < sc; ++g) {  // a group of 32 inputs is 16 whole bytes (in is even)
      const float s = e8m0_value(srow[g]);
      const int64_t j1 = std::min(in, (g + 1) * kFp4Group) / 2;
      for (int64_t j = g * kFp4Group / 2; j < j1; ++j) {
        d[2 * j] = pairs[pr[j]][0] * s;
        d[2 * j + 1] = pairs[pr[j]][1] * s;
      }
    }
  }
}

void quantize_fp8_block(const float* w, int64_t out, int64_t in, uint8_t* q, uint8_t* scale, const std::string& what) {
  for (int64_t i = 0; i < out * in; ++i) {
    if (!std::isfinite(w[i])) non_finite_input(what, i / in, i % in, w[i]);
  }
  const int64_t sr = ceil_div(out, kFp8Block), sc = ceil_div(in, kFp8Block);
#pragma omp parallel for schedule(static) if (out * in > kParallelElements)
  for (int64_t b = 0; b < sr * sc; ++b) {
    const int64_t r0 = (b / sc) * kFp8Block, c0 = (b % sc) * kFp8Block;
    const int64_t r1 = std::min(out, r0 + kFp8Block), c1 = std::min(in, c0 + kFp8Block);
    double amax = 0;
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t k = c0; k < c1; ++k) amax = std::max(amax, static_cast<double>(std::fabs(w[r * in + k])));
    }
    const int e = scale_exponent(amax, kE4m3Max);
    scale[b] = static_cast<uint8_t>(e + 127);
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t k = c0; k < c1; ++k) q[r * in + k] = float_to_f8e4m3(std::ldexp(w[r * in + k], -e));
    }
  }
}

void quantize_fp4(const float* w, int64_t out, int64_t in, uint8_t* packed, uint8_t* scale, const std::string& what) {
  DSV4_CHECK_ARG(in % 2 == 0, what, ": packed FP4 needs an even input dimension, got ", in);
  for (int64_t i = 0; i < out * in; ++i) {
    if (!std::isfinite(w[i])) non_finite_input(what, i / in, i % in, w[i]);
  }
  const int64_t sc = ceil_div(in, kFp4Group);
#pragma omp parallel for schedule(static) if (out * in > kParallelElements)
  for (int64_t r = 0; r < out; ++r) {
    const float* wr = w + r * in;
    std::vector<int> exps(static_cast<size_t>(sc));
    for (int64_t g = 0; g < sc; ++g) {
      double amax = 0;
      for (int64_t k = g * kFp4Group; k < std::min(in, (g + 1) * kFp4Group); ++k) {
        amax = std::max(amax, static_cast<double>(std::fabs(wr[k])));
      }
      exps[g] = scale_exponent(amax, kE2m1Max);
      scale[r * sc + g] = static_cast<uint8_t>(exps[g] + 127);
    }
    for (int64_t j = 0; j < in / 2; ++j) {
      const uint8_t lo = float_to_fp4_e2m1(std::ldexp(wr[2 * j], -exps[(2 * j) / kFp4Group]));
      const uint8_t hi = float_to_fp4_e2m1(std::ldexp(wr[2 * j + 1], -exps[(2 * j + 1) / kFp4Group]));
      packed[r * (in / 2) + j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

}  // namespace dsv4
