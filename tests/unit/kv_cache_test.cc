// --kv-cache-dtype on the CPU: the caches' round trips (ops::kv_round_trip, the compressor's entries) against a
// quantiser written here from the formats' definitions, and the engine with an fp8 cache: the same values wherever
// a row is computed, speculative decoding unchanged, logits near the f32 cache's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "dsv4/io/safetensors.h"
#include "dsv4/model/state.h"
#include "dsv4/ops/kv_fp4.h"
#include "dsv4/ops/ops.h"
#include "dsv4/ops/rope_table.h"
#include "dsv4/ops/testing.h"
#include "dsv4/runtime/engine.h"
#include "engine_invariants.h"
#include "test_util.h"

namespace dsv4 {
namespace {

// ---- an independent quantiser: nearest representable value by search, ties to the even code ----

// Every finite E4M3FN magnitude by code 0..126: 4 exponent bits (bias 7), 3 mantissa bits, subnormals at exponent 0;
// code 127 (S.1111.111) is NaN, and there are no infinities.
std::vector<double> e4m3_magnitudes() {
  std::vector<double> v;
  for (int code = 0; code < 127; ++code) {
    const int e = code >> 3, m = code & 7;
    v.push_back(e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10));
  }
  return v;
}

double nearest_e4m3(double x) {
  static const std::vector<double> mags = e4m3_magnitudes();
  const double a = std::fabs(x);
  if (a >= mags.back()) return std::copysign(mags.back(), x);  // saturates at 448
  size_t best = 0;
  for (size_t c = 1; c < mags.size(); ++c) {
    const double d = std::fabs(mags[c] - a), db = std::fabs(mags[best] - a);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return std::copysign(mags[best], x);
}

float nearest_bf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  uint32_t lo_bits = bits & 0xFFFF0000u, hi_bits = lo_bits + 0x10000u;
  float lo, hi;
  std::memcpy(&lo, &lo_bits, 4);
  std::memcpy(&hi, &hi_bits, 4);
  const double dl = std::fabs(static_cast<double>(x) - lo), dh = std::fabs(static_cast<double>(hi) - x);
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return ((lo_bits >> 16) & 1u) == 0 ? lo : hi;
}

float block_amax(const float* x, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return std::max(m, 1e-4f);
}

void reference_round_trip(float* row, int64_t width, int64_t rope_dim, KvRoundTrip f) {
  if (f == KvRoundTrip::kBf16) {
    for (int64_t i = 0; i < width; ++i) row[i] = nearest_bf16(row[i]);
  } else if (f == KvRoundTrip::kFp8Blocks || f == KvRoundTrip::kFp8Blocks128) {
    // The activations' format: blocks of 128 over the whole row (no bf16 part).
    const int64_t block = f == KvRoundTrip::kFp8Blocks ? 64 : 128;
    if (f == KvRoundTrip::kFp8Blocks128) rope_dim = 0;
    for (int64_t b = 0; b < width - rope_dim; b += block) {
      const int64_t n = std::min<int64_t>(block, width - rope_dim - b);
      const float r = block_amax(row + b, n) / 448.0f;
      const float s = static_cast<float>(std::exp2(std::ceil(std::log2(static_cast<double>(r)))));
      for (int64_t i = b; i < b + n; ++i) row[i] = static_cast<float>(nearest_e4m3(row[i] / s) * s);
    }
    for (int64_t i = width - rope_dim; i < width; ++i) row[i] = nearest_bf16(row[i]);
  } else if (f == KvRoundTrip::kFp8Row) {
    const float s = block_amax(row, width) / 448.0f;
    for (int64_t i = 0; i < width; ++i) row[i] = static_cast<float>(nearest_e4m3(row[i] / s)) * s;
  }
}

// kFp4Rotated: the rotation is kv_fp4.h's (tested against the Hadamard matrix in kv_fp4_test.cc); the quantiser is
// the reference's: scale 2^ceil(log2(max(amax, 6 * 2^-126) / 6)) per group of 32, the nearest E2M1 value by search,
// ties to the even code.
double nearest_e2m1(double x) {
  static const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  const double a = std::fabs(x);
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const double d = std::fabs(mags[c] - a), db = std::fabs(mags[best] - a);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return std::copysign(mags[best], x);
}

void reference_fp4_rotated(float* row, int64_t width) {
  kvfp4::rotate(row, width);
  const int64_t group = std::min<int64_t>(32, width);
  for (int64_t b = 0; b < width; b += group) {
    double amax = std::ldexp(6.0, -126);
    for (int64_t i = b; i < b + group; ++i) amax = std::max(amax, static_cast<double>(std::fabs(row[i])));
    const double s = std::exp2(std::ceil(std::log2(amax / 6.0)));
    for (int64_t i = b; i < b + group; ++i) row[i] = static_cast<float>(nearest_e2m1(row[i] / s) * s);
  }
}

ExecContext cpu_context() {
  ExecContext ctx;
  ctx.device = Device::kCPU;
  return ctx;
}

TEST(KvCache, RoundTripsMatchAnIndependentQuantiser) {
  std::mt19937 rng(11);
  ExecContext ctx = cpu_context();
  int64_t values = 0;
  for (const KvRoundTrip f :
       {KvRoundTrip::kBf16, KvRoundTrip::kFp8Blocks, KvRoundTrip::kFp8Row, KvRoundTrip::kFp8Blocks128}) {
    for (const auto& [width, rope_dim] : {std::pair{64, 16}, std::pair{512, 64}, std::pair{128, 0}, std::pair{100, 20},
                                          std::pair{7, 7}, std::pair{200, 0}, std::pair{300, 0}}) {
      for (const double magnitude : {1e-7, 1e-3, 1.0, 30.0, 1e4}) {
        const int64_t rows = 5;
        std::vector<float> x(static_cast<size_t>(rows * width));
        std::normal_distribution<float> normal(0.0f, 1.0f);
        for (float& v : x) v = static_cast<float>(normal(rng) * magnitude);
        for (int64_t i = 0; i < width; ++i) x[static_cast<size_t>(width + i)] = 0.0f;  // an all-zero row
        x[static_cast<size_t>(2 * width)] = static_cast<float>(300 * magnitude);       // an outlier in block 0
        std::vector<float> want = x;
        for (int64_t r = 0; r < rows; ++r) reference_round_trip(want.data() + r * width, width, rope_dim, f);
        ops::kv_round_trip(ctx, Tensor(x.data(), DType::F32, {rows, width}), rope_dim, f);
        for (size_t i = 0; i < x.size(); ++i) {
          ASSERT_EQ(x[i], want[i]) << kv_round_trip_name(f) << " width " << width << " rope " << rope_dim
                                   << " magnitude " << magnitude << " element " << i;
        }
        values += static_cast<int64_t>(x.size());
      }
    }
  }
  for (const int64_t width : {4, 16, 32, 128, 256}) {  // kFp4Rotated: rows a power of two wide
    for (const double magnitude : {1e-30, 1e-3, 1.0, 1e4}) {
      const int64_t rows = 4;
      std::vector<float> x(static_cast<size_t>(rows * width));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (float& v : x) v = static_cast<float>(normal(rng) * magnitude);
      for (int64_t i = 0; i < width; ++i) x[static_cast<size_t>(width + i)] = 0.0f;  // an all-zero row
      x[static_cast<size_t>(2 * width)] = static_cast<float>(300 * magnitude);       // an outlier
      std::vector<float> want = x;
      for (int64_t r = 0; r < rows; ++r) reference_fp4_rotated(want.data() + r * width, width);
      ops::kv_round_trip(ctx, Tensor(x.data(), DType::F32, {rows, width}), 0, KvRoundTrip::kFp4Rotated);
      for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_EQ(x[i], want[i]) << "fp4-rotated width " << width << " magnitude " << magnitude << " element " << i;
      }
      values += static_cast<int64_t>(x.size());
    }
  }
  EXPECT_GT(values, 0);
  // Idempotent: a value a cache gives back is one it holds.
  std::vector<float> x(256);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (float& v : x) v = normal(rng);
  ops::kv_round_trip(ctx, Tensor(x.data(), DType::F32, {2, 128}), 32, KvRoundTrip::kFp8Blocks);
  std::vector<float> again = x;
  ops::kv_round_trip(ctx, Tensor(again.data(), DType::F32, {2, 128}), 32, KvRoundTrip::kFp8Blocks);
  EXPECT_EQ(again, x);
  // Bad arguments name the op.
  EXPECT_THROW(ops::kv_round_trip(ctx, Tensor(x.data(), DType::F32, {2, 128}), 129, KvRoundTrip::kFp8Blocks), Error);
  EXPECT_THROW(ops::kv_round_trip(ctx, Tensor(x.data(), DType::F32, {2, 96}), 0, KvRoundTrip::kFp4Rotated), Error);
}

TEST(KvCache, FormatsByDevice) {
  EXPECT_EQ(parse_kv_cache_dtype("fp8"), KvCacheDtype::kFp8);
  EXPECT_THROW(parse_kv_cache_dtype("FP8"), Error);
  const KvFormats fp8 = kv_formats(KvCacheDtype::kFp8, Device::kCPU, DType::F32);
  EXPECT_EQ(fp8.window, KvRoundTrip::kFp8Blocks);
  EXPECT_EQ(fp8.compressed, KvRoundTrip::kFp8Blocks);
  EXPECT_EQ(fp8.indexer, KvRoundTrip::kFp4Rotated);
  EXPECT_EQ(kv_formats(KvCacheDtype::kFp8, Device::kCUDA, DType::BF16).indexer, KvRoundTrip::kFp4Rotated);
  EXPECT_EQ(kv_formats(KvCacheDtype::kAuto, Device::kCPU, DType::F32).window, KvRoundTrip::kNone);
  EXPECT_EQ(kv_formats(KvCacheDtype::kBf16, Device::kCPU, DType::F32).indexer, KvRoundTrip::kBf16);
  EXPECT_EQ(kv_formats(KvCacheDtype::kBf16, Device::kCUDA, DType::BF16).window, KvRoundTrip::kNone);
  EXPECT_THROW(kv_formats(KvCacheDtype::kBf16, Device::kCUDA, DType::F32), Error);
}

EngineOptions fp8_options(int64_t max_batch_tokens) {
  EngineOptions o;
  o.kv_cache_dtype = KvCacheDtype::kFp8;
  o.max_batch_tokens = max_batch_tokens;
  o.max_seqs = 2;
  o.max_spec_tokens = 2;
  return o;
}

// The window kv and the compressed entries are round-tripped where they are computed: every chunking gives the same
// logits, and speculative decoding keeps its tokens.
TEST(KvCache, Fp8CacheGivesTheSameValuesWhereverARowIsComputed) {
  test::expect_chunking_and_speculation_invariant(fp8_options(512), test::random_prompt(90, 3));
}

// The fp8 cache changes the logits (the option does something), by little: top-1 agreement with the f32 cache and
// the mean KL divergence of the next-token distributions (the perplexity of heldout.txt at --ctx 1024, where the
// indexer selects, moves 14.356 -> 14.362 with the FP4 indexer keys; E4M3 keys gave 14.371).
TEST(KvCache, Fp8CacheStaysCloseToTheF32Cache) {
  EngineOptions f32 = fp8_options(512);
  f32.kv_cache_dtype = KvCacheDtype::kAuto;
  test::expect_close_but_changed(f32, fp8_options(512), test::random_prompt(300, 3), "fp8 cache vs f32 cache");
}

// Against transformers with the same round trips (tools/reference/make_fp8_cache_fixtures.py, an independent
// quantiser: torch's float8_e4m3fn cast, frexp scales, a float64 Hadamard matrix and a search for the nearest E2M1
// value; inputs with a value within 1e-6 of a rounding boundary, or an indexer / router top-k margin below 1e-5,
// rejected). A format mistake (scale, block, rounding, rotation, which values are rounded) moves every position's
// logits by the quantisation noise itself, ~1 relative (KvCache.Fp8CacheStaysCloseToTheF32Cache: max |diff| ~2).
// fp32 noise that still tips one value of the cache to the neighbouring E4M3 code (a 1/16 step of one value) moves
// only the positions that read it, by ~1e-4 at most: tiny_a and tiny_c hold the typical position (the median)
// within 1e-5 as ModelParity holds the f32 cache, and every position within 1e-4. tiny_b's indexer picks its top-4
// from 12 heads of 32-value FP4 queries, and several of its top-k boundaries are closer than one FP4 step of a
// query value moves a score: the fp32 rounding of the build (OpenBLAS's kernels of the machine, the sanitizer
// build's code) tips such a code and one choice, and the positions after it move (medians 1e-6 to 7e-5, maxima
// 3e-6 to 2e-3 across the GPU machine's CPU, this machine and the ASAN build). Its bounds are the median 1e-3 and
// every position 1e-2, still two to three orders below a format bug. (Forcing transformers' choices, saved with
// the fixture, would give tiny_b the strict bounds too.)
// Forces the CPU indexer to the selections transformers made on the fixture (indexer_layers / indexer_choices of
// expected_fp8_cache.safetensors) and counts the rows where its own differed: the FP4 query's codes sit on a grid
// one step of which moves a score by more than a top-k margin, so a 1e-6-level fp32 difference that tips one query
// value over an FP4 boundary would pick other entries without any bug — forcing keeps such a choice from hiding the
// rest of the comparison, and the count keeps a wrong indexer from hiding behind the forcing. Rows with no choice to
// make (visible entries <= topk) must agree as they are.
class FixtureIndexerChoices : public ops::ChoiceTap {
 public:
  explicit FixtureIndexerChoices(const SafetensorsFile& f) {
    const TensorInfo* layers = f.find("indexer_layers");
    const TensorInfo* choices = f.find("indexer_choices");
    if (layers == nullptr || choices == nullptr) throw std::runtime_error("fixture without indexer_choices");
    const Tensor c = f.view(*choices);
    layers_ = c.size(0);
    positions_ = c.size(1);
    topk_ = c.size(2);
    choices_.assign(c.ptr<int32_t>(), c.ptr<int32_t>() + c.numel());
  }
  void after_moe_route(ExecContext&, Tensor, Tensor, Tensor, Tensor, const ops::RouteParams&) override {}
  void after_indexer_topk(ExecContext&, Tensor selected, Tensor, Tensor, const CompressorState& keys,
                          const BatchMeta& meta, float) override {
    const auto known = std::find(seen_.begin(), seen_.end(), &keys);  // layers in the order of the first forward
    const int64_t layer = known - seen_.begin();
    if (known == seen_.end()) seen_.push_back(&keys);
    ASSERT_LT(layer, layers_) << "more indexer layers than the fixture recorded";
    ASSERT_EQ(selected.size(1), topk_);
    for (int64_t t = 0; t < meta.num_tokens; ++t) {
      const int32_t slot = meta.slot.ptr<int32_t>()[t], pos = meta.pos.ptr<int32_t>()[t];
      if (slot < 0) continue;
      ASSERT_LT(pos, positions_);
      int32_t* sel = selected.ptr<int32_t>() + t * topk_;
      const int32_t* want = choices_.data() + (layer * positions_ + pos) * topk_;
      const std::set<int32_t> got_set(sel, sel + topk_), want_set(want, want + topk_);
      const bool selects = std::min<int64_t>((pos + 1) / keys.rate, keys.entries.rows) > topk_;
      (selects ? selecting_rows : fixed_rows) += 1;
      if (got_set == want_set) continue;
      (selects ? flips : fixed_mismatches) += 1;
      std::copy(want, want + topk_, sel);
    }
  }
  int64_t selecting_rows = 0, fixed_rows = 0, flips = 0, fixed_mismatches = 0;

 private:
  int64_t layers_ = 0, positions_ = 0, topk_ = 0;
  std::vector<int32_t> choices_;
  std::vector<const CompressorState*> seen_;
};

// Against transformers with the same round trips (tools/reference/make_fp8_cache_fixtures.py), the indexer forced
// to transformers' selections (no row chose otherwise, 2026-12-06): tiny_a and tiny_c with the median position within
// 1e-5 and every position within 1e-4; tiny_b within 1e-3 / 1e-2. tiny_b's cache round trips are the ones fp32 noise
// tips: in this build one E4M3 code of the window kv row of position 53 lies 7.6e-7 (relative) from a rounding
// boundary in dsv4's fp32 and on the other side of it in transformers' (whose value the generator found more than
// 1e-6 from any boundary: the two computations differ by ~2e-6 there), so positions 53-63, which read that row through
// the 16-token window, are off by up to 2e-3 (median 1.1e-6); the sanitiser build's other contractions tip an earlier
// one (median 7.3e-5, max 1.5e-3). A wider rejection margin cannot be had at tiny_b's size (77k rounded values an
// attempt, ~20 of them within 2e-5 of a boundary); the round trips themselves are checked code for code against an
// independent quantiser above.
TEST(KvCache, Fp8CacheMatchesTransformersOnTheFixtures) {
  for (const char* name : {"tiny_a", "tiny_b", "tiny_c"}) {
    const std::string dir = test::fixture_dir(name);
    const std::string path = dir + "/expected_fp8_cache.safetensors";
    const test::LogitFixture want = test::load_logit_fixture(path);
    const auto file = SafetensorsFile::open(path);
    FixtureIndexerChoices tap(*file);
    EngineOptions o = fp8_options(512);
    o.max_model_len = 256;
    Engine e(dir, o);
    ops::ChoiceTap* before = ops::set_choice_tap(&tap);
    const std::vector<float> got = e.score(want.ids);
    ops::set_choice_tap(before);
    ASSERT_EQ(got.size(), want.logits.size()) << name;
    const test::PositionErrors err = test::position_errors(got, want.logits, want.ids.size());
    std::printf(
        "%s: fp8 cache vs transformers with the same round trips: relative error median %.3g, max %.3g; indexer "
        "rows %lld selecting (%lld chose otherwise), %lld with every entry\n",
        name, err.median, err.max, static_cast<long long>(tap.selecting_rows), static_cast<long long>(tap.flips),
        static_cast<long long>(tap.fixed_rows));
    EXPECT_GT(tap.selecting_rows, 0) << name << ": the fixture's indexer never selects";
    EXPECT_EQ(tap.fixed_mismatches, 0) << name;
    EXPECT_LE(tap.flips * 20, tap.selecting_rows) << name;
    const bool tipped_codes = std::string(name) == "tiny_b";
    EXPECT_LE(err.median, tipped_codes ? 1e-3 : 1e-5) << name;
    EXPECT_LE(err.max, tipped_codes ? 1e-2 : 1e-4) << name;
  }
}

}  // namespace
}  // namespace dsv4
