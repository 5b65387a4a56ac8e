// The indexer's FP4 keys (KvRoundTrip::kFp4Rotated, dsv4/ops/kv_fp4.h) on the host: the Hadamard rotation against
// the matrix it stands for, the scalar codec the CUDA writers and readers run (the same __host__ __device__
// functions) against io/quantization.h's codecs, and packed rows read back against the CPU's round trip, bit for bit.
#include "dsv4/ops/kv_fp4.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "dsv4/io/quantization.h"

namespace dsv4 {
namespace {

// The Sylvester Hadamard matrix entry H[i][j] = (-1)^popcount(i & j).
double hadamard_entry(int64_t i, int64_t j) { return __builtin_popcountll(static_cast<uint64_t>(i & j)) % 2 ? -1 : 1; }

TEST(KvFp4, RotationIsTheNormalisedHadamardTransform) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const int64_t n : {2, 4, 8, 16, 32, 64, 128, 256, 1024}) {
    EXPECT_EQ(static_cast<double>(kvfp4::rotation_scale(n)),
              static_cast<double>(static_cast<float>(1.0 / std::sqrt(n))))
        << n;
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = normal(rng);
    std::vector<float> y = x;
    kvfp4::rotate(y.data(), n);
    double norm_x = 0, norm_y = 0;
    for (int64_t i = 0; i < n; ++i) {
      double want = 0;
      for (int64_t j = 0; j < n; ++j) want += hadamard_entry(i, j) * x[static_cast<size_t>(j)];
      want /= std::sqrt(static_cast<double>(n));
      ASSERT_NEAR(y[static_cast<size_t>(i)], want, 1e-5 * std::sqrt(static_cast<double>(n))) << "n " << n << " i " << i;
      norm_x += static_cast<double>(x[static_cast<size_t>(i)]) * x[static_cast<size_t>(i)];
      norm_y += static_cast<double>(y[static_cast<size_t>(i)]) * y[static_cast<size_t>(i)];
    }
    EXPECT_NEAR(norm_y, norm_x, 1e-5 * norm_x) << "the rotation keeps lengths, n " << n;
    kvfp4::rotate(y.data(), n);  // H H = n I: rotating twice gives x back
    for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(y[static_cast<size_t>(i)], x[static_cast<size_t>(i)], 1e-5) << n;
  }
  EXPECT_TRUE(kvfp4::width_ok(128));
  EXPECT_FALSE(kvfp4::width_ok(96));
  EXPECT_FALSE(kvfp4::width_ok(1));
}

TEST(KvFp4, ScalarCodecMatchesTheCpuCodecs) {
  // Every E2M1 value, the midpoints between neighbours (the ties), one ulp either side, beyond 6, signs, NaN.
  std::vector<float> xs = {0.0f, -0.0f, 6.0f, 7.0f, 1e30f, INFINITY, -INFINITY, NAN, 1e-40f, -1e-40f};
  for (int c = 0; c < 8; ++c) {
    const float v = fp4_e2m1_to_float(static_cast<uint8_t>(c)), next = c < 7 ? fp4_e2m1_to_float(c + 1) : 8.0f;
    const float mid = (v + next) / 2;
    for (float x : {v, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 9.0f), std::nextafter(v, 9.0f)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (uint32_t u = 0x3c000000u /* 2^-7 */; u < 0x41000000u /* 8 */; u += 97) {
    float f;
    std::memcpy(&f, &u, 4);
    xs.push_back(f);
    xs.push_back(-f);
  }
  for (const float x : xs) ASSERT_EQ(kvfp4::e2m1_encode(x), float_to_fp4_e2m1(x)) << "x = " << x;
  for (int c = 0; c < 16; ++c) {
    const float a = kvfp4::e2m1_value(static_cast<uint8_t>(c)), b = fp4_e2m1_to_float(static_cast<uint8_t>(c));
    ASSERT_EQ(a, b) << "code " << c;
    ASSERT_EQ(std::signbit(a), std::signbit(b)) << "code " << c;
  }
  // The group exponent: io/quantization.h's scale_exponent at qmax 6 with the reference's floor 6 * 2^-126.
  const double floor = std::ldexp(6.0, -126);
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> mant(1.0f, 2.0f);
  for (int k = -140; k < 128; ++k) {
    for (const float m : {1.0f, 1.5f, std::nextafter(1.5f, 2.0f), std::nextafter(1.5f, 0.0f), mant(rng), mant(rng),
                          std::nextafter(2.0f, 0.0f)}) {
      const float amax = std::ldexp(m, k);
      if (std::isinf(amax)) continue;
      ASSERT_EQ(kvfp4::group_exponent(amax), scale_exponent(std::max<double>(amax, floor), 6.0)) << "amax " << amax;
    }
  }
  EXPECT_EQ(kvfp4::group_exponent(0.0f), -126);
  EXPECT_EQ(kvfp4::group_exponent(INFINITY), 127);
  for (int e = -126; e <= 127; ++e) ASSERT_EQ(kvfp4::pow2(e), std::ldexp(1.0f, e)) << e;
}

// A row packed as the CUDA writers will pack it and read back gives exactly the CPU's round trip (which rotates the
// row it is given in place).
TEST(KvFp4, PackedRowsGiveTheCpuRoundTrip) {
  EXPECT_EQ(kvfp4::row_bytes(128), 68);  // vLLM's MXFP4 indexer-key bytes (132 as kFp8Row, 256 in bf16)
  EXPECT_EQ(kvfp4::row_bytes(16), 12);   // one group of 16: 8 code bytes + 1 scale, padded
  std::mt19937 rng(17);
  int64_t values = 0;
  for (const int64_t n : {2, 16, 32, 64, 128, 512}) {
    for (const double magnitude : {1e-30, 1e-7, 1e-3, 1.0, 30.0, 1e4, 1e30}) {
      std::vector<float> x(static_cast<size_t>(n));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      for (float& v : x) v = static_cast<float>(normal(rng) * magnitude);
      x[1] = static_cast<float>(40 * magnitude);  // an outlier the rotation spreads over the row
      std::vector<float> want = x;
      cpu::kv_round_trip_row(want.data(), n, 0, KvRoundTrip::kFp4Rotated);
      std::vector<uint8_t> row(static_cast<size_t>(kvfp4::row_bytes(n)));
      kvfp4::pack_row_host(x.data(), n, row.data());
      for (int64_t e = 0; e < n; ++e) {
        const float got = kvfp4::element(row.data(), n, e);
        ASSERT_EQ(got, want[static_cast<size_t>(e)])
            << "n " << n << " magnitude " << magnitude << " element " << e << ": " << got << " vs " << want[e];
        ++values;
      }
      // The round trip moves a value by half an E2M1 step at most (<= the scale, < amax / 3): the rotated row against
      // what it gives back.
      std::vector<float> rotated = x;
      kvfp4::rotate(rotated.data(), n);
      for (int64_t e = 0; e < n; ++e) {
        const int64_t g = kvfp4::group_of(n), b = e / g;
        float amax = 0;
        for (int64_t i = b * g; i < (b + 1) * g; ++i) amax = std::max(amax, std::fabs(rotated[static_cast<size_t>(i)]));
        ASSERT_LE(std::fabs(want[static_cast<size_t>(e)] - rotated[static_cast<size_t>(e)]), amax / 3.0f)
            << "n " << n << " element " << e;
      }
    }
  }
  EXPECT_GT(values, 0);
  // An all-zero row: zeros, at the smallest scale (the reference's floor), not 2^0.
  std::vector<float> zeros(128, 0.0f);
  std::vector<uint8_t> row(static_cast<size_t>(kvfp4::row_bytes(128)));
  kvfp4::pack_row_host(zeros.data(), 128, row.data());
  for (int64_t e = 0; e < 128; ++e) EXPECT_EQ(kvfp4::element(row.data(), 128, e), 0.0f);
  for (int64_t b = 0; b < 4; ++b) EXPECT_EQ(row[64 + b], 1);
}

}  // namespace
}  // namespace dsv4
