// The packed rows of the CUDA fp8 cache (dsv4/ops/kv_fp8.h) on the host: the codec the CUDA writers and readers
// run (the same __host__ __device__ functions) against the CPU's codecs and round trip, bit for bit, and the state
// layout's bytes with the fp8 cache (the Flash slice at 1M positions).
#include "dsv4/ops/kv_fp8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "dsv4/io/quantization.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/model/state.h"
#include "dsv4/runtime/decode_traffic.h"

namespace dsv4 {
namespace {

bool same_value(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

// Every E4M3 code and its neighbourhood: the midpoints between consecutive values (the ties), one ulp either side,
// values past 448, subnormals, signs; plus a stride through every float bit pattern.
std::vector<float> encoder_inputs() {
  std::vector<float> xs;
  for (int c = 0; c < 127; ++c) {
    const float v = f8e4m3_to_float(static_cast<uint8_t>(c));
    const float next = c < 126 ? f8e4m3_to_float(static_cast<uint8_t>(c + 1)) : 480.0f;
    const float mid = (v + next) / 2;  // exact: e4m3 values have 4 significant bits
    for (float x : {v, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f), std::nextafter(v, 1e9f)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (float x : {448.0f, 464.0f, 465.0f, 1e30f, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-40f, 9.7e-4f, 9.8e-4f}) {
    xs.push_back(x);
  }
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 65521) {  // a prime stride: every exponent, many mantissas
    float f;
    const uint32_t bits = static_cast<uint32_t>(u);
    std::memcpy(&f, &bits, 4);
    xs.push_back(f);
  }
  return xs;
}

TEST(KvFp8, ScalarCodecMatchesTheCpuCodecs) {
  int64_t checked = 0;
  for (const float x : encoder_inputs()) {
    ASSERT_EQ(kvfp8::e4m3_encode(x), float_to_f8e4m3(x)) << "x = " << x;
    ++checked;
  }
  // Densely over the range E4M3 codes live in (2^-12 .. 512: below rounds to 0, above saturates): every 7th float.
  const uint32_t lo = 0x39800000u /* 2^-12 */, hi = 0x44000000u /* 512 */;
  for (uint32_t u = lo; u < hi; u += 7) {
    float f;
    std::memcpy(&f, &u, 4);
    if (kvfp8::e4m3_encode(f) != float_to_f8e4m3(f) || kvfp8::e4m3_encode(-f) != float_to_f8e4m3(-f)) {
      FAIL() << "x = " << f;
    }
    ++checked;
  }
  EXPECT_GT(checked, 20000000);
  for (int c = 0; c < 256; ++c) {
    ASSERT_TRUE(same_value(kvfp8::e4m3_value(static_cast<uint8_t>(c)), f8e4m3_to_float(static_cast<uint8_t>(c))))
        << "code " << c;
  }
  // The UE8M0 exponent: io/quantization.h's scale_exponent at qmax 448 (the CPU round trip's rule), for amax from
  // the floor to far beyond 448, at and around the powers of two times 448 / 7 / 8.
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  for (int k = -20; k < 100; ++k) {
    for (const float m : {1.0f, 1.75f, std::nextafter(1.75f, 2.0f), std::nextafter(1.75f, 0.0f), mant(rng), mant(rng),
                          std::nextafter(2.0f, 0.0f)}) {
      const float amax = std::ldexp(m, k);
      if (amax < kvfp8::kAmaxFloor) continue;
      ASSERT_EQ(kvfp8::block_exponent(amax), scale_exponent(amax, 448.0)) << "amax " << amax;
    }
  }
  for (const float amax : {3.1e38f, std::numeric_limits<float>::max(), 1e-4f, 448.0f, std::nextafter(448.0f, 1e9f)}) {
    ASSERT_EQ(kvfp8::block_exponent(amax), scale_exponent(amax, 448.0)) << "amax " << amax;
  }
  for (int e = -127; e <= 127; ++e) ASSERT_EQ(kvfp8::pow2(e), std::ldexp(1.0f, e)) << e;
  for (const float x : {1.0f, 1.00390625f, 1.01171875f, -3.3e-5f, 65504.0f, 1e-40f, NAN}) {
    ASSERT_TRUE(same_value(kvfp8::bf16_value(kvfp8::bf16_bits(x)), round_to_bf16(x))) << x;
  }
}

// A row packed as the CUDA writers pack it and read back as the readers read it gives exactly the CPU's round trip.
TEST(KvFp8, PackedRowsGiveTheCpuRoundTrip) {
  EXPECT_EQ(kvfp8::row_bytes(KvStorage::kFp8Blocks, 512, 64), 584);  // the issue's / DeepSeek's bytes
  EXPECT_EQ(kvfp8::row_bytes(KvStorage::kFp8Row, 128, 0), 132);      // vLLM's indexer-key bytes
  std::mt19937 rng(17);
  int64_t values = 0;
  struct Case {
    KvStorage storage;
    KvRoundTrip trip;
    int64_t width, rope;
  };
  for (const Case& c :
       {Case{KvStorage::kFp8Blocks, KvRoundTrip::kFp8Blocks, 512, 64},
        Case{KvStorage::kFp8Blocks, KvRoundTrip::kFp8Blocks, 64, 16},
        Case{KvStorage::kFp8Blocks, KvRoundTrip::kFp8Blocks, 128, 0},
        Case{KvStorage::kFp8Blocks, KvRoundTrip::kFp8Blocks, 112, 16},  // a short last block
        Case{KvStorage::kFp8Blocks, KvRoundTrip::kFp8Blocks, 32, 8},    // the hf fixtures' rows
        Case{KvStorage::kFp8Row, KvRoundTrip::kFp8Row, 128, 0}, Case{KvStorage::kFp8Row, KvRoundTrip::kFp8Row, 16, 0},
        Case{KvStorage::kFp4Rotated, KvRoundTrip::kFp4Rotated, 128, 0},
        Case{KvStorage::kFp4Rotated, KvRoundTrip::kFp4Rotated, 16, 0}}) {
    ASSERT_TRUE(kvfp8::shape_ok(c.storage, c.width, c.rope));
    for (const double magnitude : {1e-7, 1e-3, 1.0, 30.0, 1e4}) {
      std::vector<float> x(static_cast<size_t>(c.width));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (float& v : x) v = static_cast<float>(normal(rng) * magnitude);
      x[3] = static_cast<float>(300 * magnitude);  // an outlier in block 0
      if (magnitude == 1.0) x[5] = NAN;            // NaN: skipped by the amax, coded 0x7F
      std::vector<float> want = x;
      cpu::kv_round_trip_row(want.data(), c.width, c.rope, c.trip);
      std::vector<uint8_t> row(static_cast<size_t>(kvfp8::row_bytes(c.storage, c.width, c.rope)));
      kvfp8::pack_row_host(x.data(), c.storage, c.width, c.rope, row.data());
      for (int64_t e = 0; e < c.width; ++e) {
        const float got = kvfp8::element(row.data(), c.storage, c.width, c.rope, e);
        ASSERT_TRUE(same_value(got, want[static_cast<size_t>(e)]))
            << "width " << c.width << " rope " << c.rope << " magnitude " << magnitude << " element " << e << ": "
            << got << " vs " << want[static_cast<size_t>(e)];
        ++values;
      }
      // Packing the values read back gives them again (the ring stores re-pack round-tripped batch rows; fp4 keys
      // are never re-packed, and packing rotates).
      if (c.storage == KvStorage::kFp4Rotated) continue;
      std::vector<float> back(x.size());
      for (int64_t e = 0; e < c.width; ++e) back[e] = kvfp8::element(row.data(), c.storage, c.width, c.rope, e);
      std::vector<uint8_t> again(row.size());
      kvfp8::pack_row_host(back.data(), c.storage, c.width, c.rope, again.data());
      for (int64_t e = 0; e < c.width; ++e) {
        ASSERT_TRUE(same_value(kvfp8::element(again.data(), c.storage, c.width, c.rope, e), back[e])) << e;
      }
    }
  }
  EXPECT_GT(values, 0);
  EXPECT_FALSE(kvfp8::shape_ok(KvStorage::kFp8Blocks, 100, 22));  // no-rope part not a multiple of 8
  EXPECT_FALSE(kvfp8::shape_ok(KvStorage::kFp8Row, 12, 0));
  EXPECT_TRUE(kvfp8::shape_ok(KvStorage::kFp4Rotated, 128, 0));
  EXPECT_FALSE(kvfp8::shape_ok(KvStorage::kFp4Rotated, 96, 0));   // not a power of two: no Hadamard rotation
  EXPECT_FALSE(kvfp8::shape_ok(KvStorage::kFp4Rotated, 512, 0));  // past the CUDA kernels' one warp per row
}

// The state of the Flash slice (3 layers: sliding, sliding, CSA) at 1M positions: with the fp8 cache's packed rows
// the pool holds (584 + 68) / (1024 + 256) = 0.509 of the bf16 bytes per context page (E4M3 indexer keys, 132 bytes,
// gave 0.559).
TEST(KvFp8, FlashSliceStateBytesAtOneMillionPositions) {
  const ModelConfig cfg = flash_slice_config(3);
  ModelOptions opt;
  opt.max_model_len = 1 << 20;
  const StateLayout bf16 = StateLayout::make(cfg, opt, DType::BF16, false);
  const StateLayout fp8 = StateLayout::make(cfg, opt, DType::BF16, false, /*packed_fp8=*/true);
  EXPECT_EQ(fp8.array("layers.2.compressor.entries").row_bytes, 584);
  EXPECT_EQ(fp8.array("layers.2.indexer.entries").row_bytes, 68);
  EXPECT_EQ(fp8.array("layers.0.kv_ring").row_bytes, 584);
  EXPECT_EQ(fp8.array("layers.2.compressor.entries").storage, KvStorage::kFp8Blocks);
  EXPECT_EQ(fp8.array("layers.2.indexer.entries").storage, KvStorage::kFp4Rotated);
  for (const StateLayout::Array& a : fp8.arrays) EXPECT_EQ(a.offset % 16, 0) << a.name;  // 8-byte loads and more
  const double ratio =
      static_cast<double>(fp8.bytes_for(opt.max_model_len)) / static_cast<double>(bf16.bytes_for(opt.max_model_len));
  std::printf("Flash slice (3 layers) state at %lld positions: bf16 %lld bytes, fp8 %lld bytes, ratio %.4f\n",
              static_cast<long long>(opt.max_model_len), static_cast<long long>(bf16.bytes_for(opt.max_model_len)),
              static_cast<long long>(fp8.bytes_for(opt.max_model_len)), ratio);
  EXPECT_NEAR(ratio, 652.0 / 1280.0, 0.002);
  EXPECT_LE(ratio, 0.55);  // issue 16's target
  // Rows that cannot be packed are refused by name.
  ModelConfig odd = cfg;
  odd.rope_head_dim = 60;  // no-rope part 452: not a multiple of 8
  EXPECT_THROW(StateLayout::make(odd, opt, DType::BF16, false, true), Error);
  // The fp8 cache rotates the indexer's keys: an index_head_dim that is not a power of two is refused on any device.
  ModelConfig wide = cfg;
  wide.index_head_dim = 96;
  ModelOptions fp8_opt = opt;
  fp8_opt.kv_cache_dtype = KvCacheDtype::kFp8;
  EXPECT_THROW(StateLayout::make(wide, fp8_opt, DType::F32, false, false), Error);
  EXPECT_NO_THROW(StateLayout::make(wide, opt, DType::F32, false, false));
}

// The bench's floor counts the rows as stored: 584 / 68 bytes with the fp8 cache at the Flash shapes.
TEST(KvFp8, DecodeFloorCountsTheStoredRows) {
  const ModelConfig cfg = flash_slice_config(3);
  const KeyRowBytes fp8 = key_row_bytes(cfg, DType::BF16, true), bf16 = key_row_bytes(cfg, DType::BF16, false);
  EXPECT_EQ(fp8.kv, 584.0);
  EXPECT_EQ(fp8.indexer, 68.0);
  EXPECT_EQ(bf16.kv, 1024.0);
  EXPECT_EQ(bf16.indexer, 256.0);
  EXPECT_EQ(key_row_bytes(cfg, DType::F32, false).kv, 2048.0);
}

TEST(KvFp8, CudaRunsTheFp8Cache) {
  const KvFormats f = kv_formats(KvCacheDtype::kFp8, Device::kCUDA, DType::BF16);
  EXPECT_EQ(f.window, KvRoundTrip::kFp8Blocks);
  EXPECT_EQ(f.compressed, KvRoundTrip::kFp8Blocks);
  EXPECT_EQ(f.indexer, KvRoundTrip::kFp4Rotated);
  EXPECT_TRUE(packs_fp8_cache(KvCacheDtype::kFp8, Device::kCUDA));
  EXPECT_FALSE(packs_fp8_cache(KvCacheDtype::kFp8, Device::kCPU));
  EXPECT_FALSE(packs_fp8_cache(KvCacheDtype::kBf16, Device::kCUDA));
}

}  // namespace
}  // namespace dsv4
