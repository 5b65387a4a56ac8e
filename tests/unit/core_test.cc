#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "dsv4/core/arena.h"
#include "dsv4/core/dtype.h"
#include "dsv4/core/tensor.h"

namespace dsv4 {
namespace {

TEST(DType, Bf16RoundTripIsRoundToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties go to the even mantissa (1.0).
  EXPECT_EQ(float_to_bf16(1.0f + 1.0f / 256.0f), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + 3.0f / 256.0f), 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.f, 3.f);
  for (int i = 0; i < 1000; ++i) {
    const float x = dist(rng);
    const float r = round_to_bf16(x);
    EXPECT_LE(std::fabs(r - x), std::fabs(x) * (1.0f / 256.0f));
  }
}

TEST(DType, F16AndF8Conversions) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f}) {
    EXPECT_EQ(f16_to_float(float_to_f16(v)), v) << v;
  }
  EXPECT_EQ(f8e4m3_to_float(0x38), 1.0f);   // 0.0111.000
  EXPECT_EQ(f8e4m3_to_float(0x7e), 448.0f); // max normal
  EXPECT_EQ(f8e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(f8e4m3_to_float(0x7f)));
  DType t;
  EXPECT_TRUE(parse_dtype("F8_E4M3", &t));
  EXPECT_EQ(t, DType::F8_E4M3);
  EXPECT_FALSE(parse_dtype("F4", &t));
}

TEST(Tensor, ViewsSliceAndSelect) {
  std::vector<float> data(24);
  for (int i = 0; i < 24; ++i) data[i] = static_cast<float>(i);
  Tensor t(data.data(), DType::F32, {2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_TRUE(t.is_contiguous());
  Tensor v = t.view({6, -1});
  EXPECT_EQ(v.size(1), 4);
  EXPECT_EQ(t.select(0, 1).at({2, 3}), 23.0f);
  Tensor s = t.slice(2, 1, 3);
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_EQ(s.at({1, 0, 1}), 14.0f);
  EXPECT_THROW(t.view({5, 5}), Error);
  EXPECT_THROW(t.slice(0, 1, 3), Error);
  EXPECT_THROW(s.view({-1}), Error);
}

TEST(Arena, AlignedBumpAllocationAndOverflow) {
  Arena arena("test", 4096, Device::kCPU);
  Tensor a = arena.alloc(DType::F32, {3});
  Tensor b = arena.alloc(DType::BF16, {5});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % Arena::kAlignment, 0u);
  EXPECT_NE(a.data(), b.data());
  const size_t mark = arena.mark();
  Tensor c = arena.alloc(DType::F32, {10});
  arena.release(mark);
  Tensor d = arena.alloc(DType::F32, {10});
  EXPECT_EQ(c.data(), d.data());  // identical sequences give identical addresses
  try {
    arena.alloc(DType::F32, {100000});
    FAIL() << "expected out-of-memory";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kOutOfMemory);
    EXPECT_NE(std::string(e.what()).find("arena 'test' exhausted"), std::string::npos);
  }
}

// The measuring pass's arena: any size, no memory, the same bump/release/high-water accounting.
TEST(Arena, CountingArenaRecordsHighWaterWithoutMemory) {
  Arena arena = Arena::counting("measure", Device::kCUDA);
  EXPECT_TRUE(arena.is_counting());
  EXPECT_EQ(arena.device(), Device::kCUDA);
  Tensor a = arena.alloc(DType::F32, {int64_t{1} << 38});  // 1 TiB: nothing is allocated
  EXPECT_NE(a.data(), nullptr);
  EXPECT_EQ(a.device(), Device::kCUDA);
  const size_t mark = arena.mark();
  Tensor b = arena.alloc(DType::BF16, {3});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % Arena::kAlignment, 0u);
  EXPECT_EQ(arena.high_water(), (size_t{1} << 40) + 6);
  arena.release(mark);
  arena.alloc(DType::I32, {1});
  EXPECT_EQ(arena.high_water(), (size_t{1} << 40) + 6);  // the peak, not the current top
  EXPECT_EQ(arena.used(), (size_t{1} << 40) + 4);
}

}  // namespace
}  // namespace dsv4
