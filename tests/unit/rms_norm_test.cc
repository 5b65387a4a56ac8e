// CPU reference of the MTP norms against a direct float64 formula; ops-level argument checks; C API
// argument errors (all of which are detected before any CUDA call, so they run without a GPU).
#include "backend/cpu/rms_norm.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "dsv4/dsv4.h"
#include "dsv4/ops/ops.h"
#include "unit/rms_norm_testing.h"

namespace dsv4 {
namespace {

using mtp_testing::element_tolerance;
using mtp_testing::MtpInputs;
using mtp_testing::random_mtp_inputs;
using mtp_testing::reference_mtp;
using mtp_testing::relative_error;
using mtp_testing::to_floats;
using mtp_testing::tolerance;

constexpr float kEps = 1e-6f;

void expect_close(const std::vector<float>& out, const std::vector<double>& ref, DType dtype, const std::string& what) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  EXPECT_LE(relative_error(out, ref), tolerance(dtype)) << what;
  int64_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!(std::fabs(out[i] - ref[i]) <= element_tolerance(dtype, ref[i]))) {
      if (bad++ < 5) ADD_FAILURE() << what << "[" << i << "]: " << out[i] << " vs " << ref[i];
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

using Shape = std::tuple<int64_t, int64_t, int64_t>;  // T, H, hc

class MtpNormCpuShapes : public ::testing::TestWithParam<std::tuple<DType, Shape>> {};

TEST_P(MtpNormCpuShapes, MatchesFloat64FormulaInBothLayouts) {
  const auto [dtype, shape] = GetParam();
  const auto [T, H, hc] = shape;
  const MtpInputs in = random_mtp_inputs(T, H, hc, dtype, static_cast<uint32_t>(T * 131 + H * 7 + hc));
  const auto ref = reference_mtp(in, kEps);
  const size_t es = dtype_size(dtype);

  std::vector<uint8_t> enorm(T * H * es, 0xff), hnorm(T * hc * H * es, 0xff);
  cpu::fused_mtp_input_rms_norm(in.e.data(), RowPositions{in.positions.data(), true}, in.prev.data(), in.enorm_w.data(),
                                in.hnorm_w.data(), enorm.data(), hnorm.data(), T, H, hc, kEps, dtype);
  const std::vector<float> e_out = to_floats(enorm.data(), T * H, dtype);
  const std::vector<float> h_out = to_floats(hnorm.data(), T * hc * H, dtype);
  expect_close(e_out, ref.enorm, dtype, "enorm");
  expect_close(h_out, ref.hnorm, dtype, "hnorm");
  for (int64_t t = 0; t < T; ++t) {
    if (in.positions[t] != 0) continue;
    for (int64_t i = 0; i < H; ++i) ASSERT_EQ(e_out[t * H + i], 0.0f) << "position-0 row " << t;
  }

  // The eh layout holds the same bytes: out[t, s, :H] = hnorm[t, s], out[t, s, H:] = enorm[t].
  std::vector<uint8_t> eh(T * hc * 2 * H * es, 0xff);
  cpu::fused_mtp_input_rms_norm_eh(in.e.data(), RowPositions{in.positions.data(), true}, in.prev.data(),
                                   in.enorm_w.data(), in.hnorm_w.data(), eh.data(), T, H, hc, kEps, dtype);
  const size_t row = H * es;
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t s = 0; s < hc; ++s) {
      const uint8_t* slot = eh.data() + (t * hc + s) * 2 * row;
      ASSERT_EQ(std::memcmp(slot, hnorm.data() + (t * hc + s) * row, row), 0) << "h half " << t << "," << s;
      ASSERT_EQ(std::memcmp(slot + row, enorm.data() + t * row, row), 0) << "e half " << t << "," << s;
    }
  }

  // Shared head: a plain per-row norm (prev rows reused as input).
  std::vector<uint8_t> head(T * hc * H * es, 0xff);
  cpu::rms_norm_rows(in.prev.data(), in.hnorm_w.data(), head.data(), T * hc, H, kEps, dtype);
  expect_close(to_floats(head.data(), T * hc * H, dtype), ref.hnorm, dtype, "shared head");
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<DType, Shape>>& info) {
  const Shape& shape = std::get<1>(info.param);
  return std::string(dtype_name(std::get<0>(info.param))) + "_T" + std::to_string(std::get<0>(shape)) + "_H" +
         std::to_string(std::get<1>(shape)) + "_hc" + std::to_string(std::get<2>(shape));
}

INSTANTIATE_TEST_SUITE_P(Shapes, MtpNormCpuShapes,
                         ::testing::Combine(::testing::Values(DType::F32, DType::BF16, DType::F16),
                                            ::testing::Values(Shape{1, 4096, 4}, Shape{3, 7168, 4}, Shape{5, 2568, 4},
                                                              Shape{4, 7, 4}, Shape{6, 1023, 2}, Shape{2, 1, 3},
                                                              Shape{7, 64, 1})),
                         case_name);

TEST(MtpNormCpu, ZeroRowsGiveZerosNotNaN) {
  // All positions 0 and an all-zero prev slot: rsqrt(eps) keeps them finite, and the result is exactly 0.
  const int64_t T = 3, H = 16, hc = 2;
  MtpInputs in = random_mtp_inputs(T, H, hc, DType::F32, 5);
  for (auto& p : in.positions) p = 0;
  for (int64_t i = 0; i < H; ++i) in.prev.values[i] = 0.f;
  std::memcpy(in.prev.bytes.data(), in.prev.values.data(), H * sizeof(float));
  std::vector<float> e(T * H, NAN), h(T * hc * H, NAN);
  cpu::fused_mtp_input_rms_norm(in.e.data(), RowPositions{in.positions.data(), true}, in.prev.data(), in.enorm_w.data(),
                                in.hnorm_w.data(), e.data(), h.data(), T, H, hc, kEps, DType::F32);
  for (float v : e) ASSERT_EQ(v, 0.0f);
  for (int64_t i = 0; i < H; ++i) ASSERT_EQ(h[i], 0.0f);
  for (int64_t i = H; i < T * hc * H; ++i) ASSERT_TRUE(std::isfinite(h[i]));
}

TEST(MtpNormCpu, ZeroTokensTouchNothing) {
  std::vector<float> out(8, 42.f);
  cpu::fused_mtp_input_rms_norm(nullptr, RowPositions{}, nullptr, nullptr, nullptr, out.data(), out.data(), 0, 8, 4,
                                kEps, DType::BF16);
  cpu::fused_mtp_input_rms_norm_eh(nullptr, RowPositions{}, nullptr, nullptr, nullptr, out.data(), 0, 8, 4, kEps,
                                   DType::F16);
  cpu::rms_norm_rows(nullptr, nullptr, out.data(), 0, 8, kEps, DType::F32);
  for (float v : out) EXPECT_EQ(v, 42.f);
}

// ---- ops layer ------------------------------------------------------------------------------------
struct OpsFixture {
  static constexpr int64_t T = 3, H = 8, hc = 2;
  MtpInputs in = random_mtp_inputs(T, H, hc, DType::F32, 11);
  std::vector<float> e_out = std::vector<float>(T * H), h_out = std::vector<float>(T * hc * H),
                     eh_out = std::vector<float>(T * hc * 2 * H);
  Tensor e() { return {in.e.data(), DType::F32, {T, H}}; }
  std::vector<int32_t> pos32 = std::vector<int32_t>(in.positions.begin(), in.positions.end());
  Tensor pos() { return {pos32.data(), DType::I32, {T}}; }  // the engine's positions are int32
  Tensor prev() { return {in.prev.data(), DType::F32, {T, hc, H}}; }
  Tensor ew() { return {in.enorm_w.data(), DType::F32, {H}}; }
  Tensor hw() { return {in.hnorm_w.data(), DType::F32, {H}}; }
  Tensor eo() { return {e_out.data(), DType::F32, {T, H}}; }
  Tensor ho() { return {h_out.data(), DType::F32, {T, hc, H}}; }
  Tensor eho() { return {eh_out.data(), DType::F32, {T, hc, 2 * H}}; }
};

void expect_invalid(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an invalid-argument error mentioning '" << needle << "'";
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), StatusCode::kInvalidArgument) << err.what();
    EXPECT_NE(std::string(err.what()).find(needle), std::string::npos) << err.what();
  }
}

TEST(MtpNormOps, CpuDispatchMatchesReference) {
  OpsFixture f;
  ExecContext ctx;
  ops::fused_mtp_input_rms_norm(ctx, f.eo(), f.ho(), f.e(), f.pos(), f.prev(), f.ew(), f.hw(), kEps);
  const auto ref = reference_mtp(f.in, kEps);
  expect_close(f.e_out, ref.enorm, DType::F32, "ops enorm");
  expect_close(f.h_out, ref.hnorm, DType::F32, "ops hnorm");
  // prev_hidden as [T, hc*H] (the model's flat residual) is accepted too.
  Tensor prev_flat(f.in.prev.data(), DType::F32, {f.T, f.hc * f.H});
  ops::fused_mtp_input_rms_norm_eh(ctx, f.eho(), f.e(), f.pos(), prev_flat, f.ew(), f.hw(), kEps);
  for (int64_t t = 0; t < f.T; ++t) {
    for (int64_t s = 0; s < f.hc; ++s) {
      for (int64_t i = 0; i < f.H; ++i) {
        ASSERT_EQ(f.eh_out[((t * f.hc + s) * 2) * f.H + i], f.h_out[(t * f.hc + s) * f.H + i]);
        ASSERT_EQ(f.eh_out[((t * f.hc + s) * 2 + 1) * f.H + i], f.e_out[t * f.H + i]);
      }
    }
  }
  std::vector<float> head(f.T * f.H);
  // The shared head's norm is the plain op.
  ops::rms_norm(ctx, Tensor(head.data(), DType::F32, {f.T, f.H}), f.e(), f.ew(), kEps);
  expect_close(head, mtp_testing::reference_rms_norm(f.in.e.values, f.H, f.in.enorm_w.values, kEps), DType::F32,
               "ops shared head");
}

TEST(MtpNormOps, RejectsBadArguments) {
  OpsFixture f;
  ExecContext ctx;
  const float eps = kEps;
  auto call = [&](Tensor eo, Tensor ho, Tensor e, Tensor pos, Tensor prev, Tensor ew, Tensor hw, float ep) {
    return [=, &ctx] { ops::fused_mtp_input_rms_norm(ctx, eo, ho, e, pos, prev, ew, hw, ep); };
  };
  std::vector<int64_t> pos64(f.T);
  std::vector<uint16_t> bf16(f.T * f.hc * f.H);
  std::vector<float> big(64 * 64);
  expect_invalid(call(f.eo(), f.ho(), f.e(), Tensor(pos64.data(), DType::I64, {f.T}), f.prev(), f.ew(), f.hw(), eps),
                 "positions");
  expect_invalid(
      call(f.eo(), f.ho(), f.e(), f.pos(), Tensor(bf16.data(), DType::BF16, {f.T, f.hc, f.H}), f.ew(), f.hw(), eps),
      "prev_hidden");
  expect_invalid(call(f.eo(), f.ho(), f.e(), f.pos(), f.prev(), Tensor(big.data(), DType::F32, {f.H + 1}), f.hw(), eps),
                 "enorm_w");
  expect_invalid(call(f.eo(), f.ho(), f.e(), f.pos(), f.prev(), f.ew(), f.hw().view({2, 4}), eps), "hnorm_w");
  expect_invalid(
      call(f.eo(), Tensor(big.data(), DType::F32, {f.T, f.hc + 1, f.H}), f.e(), f.pos(), f.prev(), f.ew(), f.hw(), eps),
      "prev_hidden");
  expect_invalid(
      call(Tensor(big.data(), DType::F32, {f.T + 1, f.H}), f.ho(), f.e(), f.pos(), f.prev(), f.ew(), f.hw(), eps),
      "enorm_out");
  expect_invalid(call(f.eo(), f.ho(), f.e(), f.pos(), f.prev(), f.ew(), f.hw(), NAN), "eps");
  expect_invalid(call(f.eo(), f.ho(), f.e(), f.pos(), f.prev(), f.ew(), f.hw(), -1.f), "eps");
  // Integer activations, a non-contiguous input, a tensor on the wrong device.
  std::vector<int32_t> ints(f.T * f.H);
  expect_invalid(
      call(f.eo(), f.ho(), Tensor(ints.data(), DType::I32, {f.T, f.H}), f.pos(), f.prev(), f.ew(), f.hw(), eps),
      "inputs_embeds");
  Tensor wide(big.data(), DType::F32, {f.T, 2 * f.H});
  expect_invalid(call(f.eo(), f.ho(), wide.slice(1, 0, f.H), f.pos(), f.prev(), f.ew(), f.hw(), eps), "contiguous");
  Tensor on_gpu(f.in.enorm_w.data(), DType::F32, {f.H}, Device::kCUDA);
  expect_invalid(call(f.eo(), f.ho(), f.e(), f.pos(), f.prev(), on_gpu, f.hw(), eps), "enorm_w");
  // eh layout: the last dim must be 2H.
  expect_invalid([&] { ops::fused_mtp_input_rms_norm_eh(ctx, f.ho(), f.e(), f.pos(), f.prev(), f.ew(), f.hw(), eps); },
                 "out");
  // shared head (ops::rms_norm): weight size and output shape.
  expect_invalid([&] { ops::rms_norm(ctx, f.eo(), f.e(), Tensor(big.data(), DType::F32, {3}), eps); }, "weight");
  expect_invalid([&] { ops::rms_norm(ctx, f.ho(), f.e(), f.ew(), eps); }, "out");
}

// ---- C API (argument errors are found before any device call) -------------------------------------
TEST(MtpNormCApi, StatusStrings) {
  EXPECT_STREQ(dsv4_status_string(DSV4_OK), "ok");
  EXPECT_STREQ(dsv4_status_string(DSV4_ERROR_INVALID_ARGUMENT), "invalid argument");
  EXPECT_STREQ(dsv4_status_string(DSV4_ERROR_CUDA), "CUDA error");
  EXPECT_STREQ(dsv4_status_string(-1), "unknown dsv4 status code");
  EXPECT_STREQ(dsv4_status_string(1000), "unknown dsv4 status code");
}

TEST(MtpNormCApi, ArgumentErrorsAreCodesNotCrashes) {
  alignas(16) static uint8_t buf[4096];
  const int64_t pos[2] = {0, 1};
  void* p = buf;
  auto mtp = [&](const void* e, const int64_t* ps, int64_t T, int64_t H, int64_t hc, float eps, int dtype) {
    return dsv4_fused_mtp_input_rms_norm(e, ps, p, p, p, p, p, T, H, hc, eps, dtype, nullptr);
  };
  EXPECT_EQ(mtp(nullptr, pos, 2, 8, 4, kEps, DSV4_DTYPE_BF16), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dsv4_last_error()).find("inputs_embeds is null"), std::string::npos) << dsv4_last_error();
  EXPECT_EQ(mtp(p, nullptr, 2, 8, 4, kEps, DSV4_DTYPE_BF16), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dsv4_last_error()).find("positions"), std::string::npos) << dsv4_last_error();
  EXPECT_EQ(mtp(p, pos, 2, 8, 4, kEps, 7), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dsv4_last_error()).find("dtype"), std::string::npos) << dsv4_last_error();
  EXPECT_EQ(mtp(p, pos, -1, 8, 4, kEps, DSV4_DTYPE_BF16), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(mtp(p, pos, 2, 0, 4, kEps, DSV4_DTYPE_F32), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(mtp(p, pos, 2, 8, 0, kEps, DSV4_DTYPE_F16), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dsv4_last_error()).find("hc_mult=0"), std::string::npos) << dsv4_last_error();
  // Sizes whose byte count overflows int64 (T = 0 so that no pointer is looked at).
  EXPECT_EQ(mtp(p, pos, 0, std::numeric_limits<int64_t>::max() / 2, 4, kEps, DSV4_DTYPE_F32),
            DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(mtp(p, pos, 0, 8, 4, NAN, DSV4_DTYPE_F32), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dsv4_last_error()).find("eps"), std::string::npos) << dsv4_last_error();
  // T = 0 is a no-op even with null pointers, and clears the last error.
  EXPECT_EQ(dsv4_fused_mtp_input_rms_norm(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 8, 4, kEps,
                                          DSV4_DTYPE_BF16, nullptr),
            DSV4_OK);
  EXPECT_STREQ(dsv4_last_error(), "");

  EXPECT_EQ(dsv4_fused_mtp_input_rms_norm_eh(p, pos, p, p, p, nullptr, 2, 8, 4, kEps, DSV4_DTYPE_BF16, nullptr),
            DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dsv4_last_error()).find("out is null"), std::string::npos) << dsv4_last_error();
  EXPECT_EQ(dsv4_fused_mtp_input_rms_norm_eh(p, pos, p, p, p, p, 2, 8, 4, kEps, -3, nullptr),
            DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(dsv4_fused_mtp_input_rms_norm_eh(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 8, 4, kEps,
                                             DSV4_DTYPE_F32, nullptr),
            DSV4_OK);

  EXPECT_EQ(dsv4_mtp_shared_head_rms_norm(p, nullptr, p, 2, 8, kEps, DSV4_DTYPE_BF16, nullptr),
            DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dsv4_last_error()).find("weight is null"), std::string::npos) << dsv4_last_error();
  EXPECT_EQ(dsv4_mtp_shared_head_rms_norm(p, p, p, 2, -5, kEps, DSV4_DTYPE_BF16, nullptr), DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(dsv4_mtp_shared_head_rms_norm(nullptr, nullptr, nullptr, 0, 8, kEps, DSV4_DTYPE_F16, nullptr), DSV4_OK);
}

}  // namespace
}  // namespace dsv4
