// Every op of dsv4::ops on the CPU backend against a direct scalar formula written here (double
// precision, plain loops, none of the backend's helpers), on random non-zero inputs of several shapes
// (odd sizes, T = 1); plus the ops' argument validation.
#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "dsv4/ops/ops.h"
#include "dsv4/ops/rope_table.h"
#include "dsv4/runtime/batch.h"
#include "test_util.h"

namespace dsv4 {
namespace {

using Vec = std::vector<float>;
using IVec = std::vector<int32_t>;
using DVec = std::vector<double>;

// Uniform magnitudes in [lo, hi] with random signs: never zero.
Vec rnd(size_t n, std::mt19937& rng, float lo = 0.1f, float hi = 1.0f) {
  std::uniform_real_distribution<float> mag(lo, hi);
  std::bernoulli_distribution sign(0.5);
  Vec v(n);
  for (float& x : v) x = sign(rng) ? mag(rng) : -mag(rng);
  return v;
}

Tensor f32(Vec& v, std::vector<int64_t> shape) { return Tensor(v.data(), DType::F32, shape); }
Tensor i32(IVec& v, std::vector<int64_t> shape) { return Tensor(v.data(), DType::I32, shape); }
// A dense [sequences, rows, width] state buffer as paged rows (one page per sequence, identity table).
PagedRows paged(Vec& v, std::vector<int64_t> shape) {
  static const IVec identity = [] {
    IVec t(4096);
    for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>(i);
    return t;
  }();
  return dense_paged_rows(v.data(), DType::F32, shape[0], shape[1], shape[2], identity.data());
}

// max |got - want| <= tol * max(1, max |want|)
void expect_close(const Vec& got, const DVec& want, double tol, const std::string& what = "") {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 1, worst = 0;
  size_t at = 0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  EXPECT_LE(worst, tol * scale) << what << ": worst at " << at << ": got " << got[at] << ", want " << want[at];
}

double sigmoid_d(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double silu_d(double x) { return x / (1.0 + std::exp(-x)); }

template <typename F>
void expect_invalid(F&& f, const std::string& op) {
  try {
    f();
    ADD_FAILURE() << "expected kInvalidArgument from " << op;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind(op + ":", 0), 0u)
        << "message should start with '" << op << ":' - " << e.what();
  }
}

class CpuOps : public testing::Test {
 protected:
  ExecContext ctx;
  std::mt19937 rng{1234};
};

// ---- dense ops --------------------------------------------------------------------------------------

TEST_F(CpuOps, EmbeddingAndBroadcastStreams) {
  for (auto [T, V, H] : std::vector<std::array<int64_t, 3>>{{1, 5, 3}, {7, 11, 16}, {4, 300, 33}}) {
    Vec table = rnd(V * H, rng);
    IVec ids(T);
    for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 7 + 3) % V);
    Vec out(T * H, NAN);
    ops::embedding(ctx, f32(out, {T, H}), f32(table, {V, H}), i32(ids, {T}));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t h = 0; h < H; ++h) ASSERT_EQ(out[t * H + h], table[ids[t] * H + h]);
    }
    for (int64_t n : {1, 3, 4}) {
      Vec streams(T * n * H, NAN);
      ops::broadcast_streams(ctx, f32(streams, {T, n, H}), f32(out, {T, H}));
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t s = 0; s < n; ++s) {
          for (int64_t h = 0; h < H; ++h) ASSERT_EQ(streams[(t * n + s) * H + h], out[t * H + h]);
        }
      }
    }
  }
}

DVec linear_ref(const Vec& x, const Vec& w, int64_t T, int64_t K, int64_t N) {
  DVec y(T * N);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[t * K + k]) * w[n * K + k];
      y[t * N + n] = acc;
    }
  }
  return y;
}

TEST_F(CpuOps, Linear) {
  // The last shape crosses the OpenMP threshold.
  for (auto [T, K, N] :
       std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {1, 7, 3}, {5, 17, 9}, {3, 64, 33}, {2, 9, 1}, {9, 130, 41}}) {
    SCOPED_TRACE(str_cat(T, "x", K, " -> ", N));
    Vec x = rnd(T * K, rng), w = rnd(N * K, rng), out(T * N, NAN);
    ops::linear(ctx, f32(out, {T, N}), f32(x, {T, K}), f32(w, {N, K}));
    expect_close(out, linear_ref(x, w, T, K, N), 1e-5);
  }
}

TEST_F(CpuOps, GroupedLinear) {
  for (auto [T, G, K, N] :
       std::vector<std::array<int64_t, 4>>{{1, 1, 5, 3}, {3, 2, 8, 4}, {4, 3, 7, 5}, {1, 4, 16, 9}}) {
    SCOPED_TRACE(str_cat(T, " tokens, ", G, " groups"));
    Vec x = rnd(T * G * K, rng), w = rnd(G * N * K, rng), out(T * G * N, NAN);
    ops::grouped_linear(ctx, f32(out, {T, G * N}), f32(x, {T, G * K}), f32(w, {G * N, K}), G);
    DVec want(T * G * N);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t g = 0; g < G; ++g) {
        for (int64_t n = 0; n < N; ++n) {
          double acc = 0;
          for (int64_t k = 0; k < K; ++k) acc += static_cast<double>(x[t * G * K + g * K + k]) * w[(g * N + n) * K + k];
          want[t * G * N + g * N + n] = acc;
        }
      }
    }
    expect_close(out, want, 1e-6);
  }
}

DVec rms_ref(const Vec& x, const Vec* w, int64_t rows, int64_t dim, double eps) {
  DVec y(rows * dim);
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(x[r * dim + i]) * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int64_t i = 0; i < dim; ++i) y[r * dim + i] = x[r * dim + i] * inv * (w ? (*w)[i] : 1.0);
  }
  return y;
}

TEST_F(CpuOps, RmsNormWeightedUnweightedInPlace) {
  for (auto [rows, dim] : std::vector<std::array<int64_t, 2>>{{1, 1}, {1, 7}, {5, 32}, {6, 33}}) {
    SCOPED_TRACE(str_cat(rows, "x", dim));
    for (float eps : {1e-6f, 0.5f}) {
      Vec x = rnd(rows * dim, rng, 0.01f, 3.0f), w = rnd(dim, rng, 0.5f, 1.5f), out(rows * dim, NAN);
      ops::rms_norm(ctx, f32(out, {rows, dim}), f32(x, {rows, dim}), f32(w, {dim}), eps);
      expect_close(out, rms_ref(x, &w, rows, dim, eps), 1e-6, "weighted");
      ops::rms_norm(ctx, f32(out, {rows, dim}), f32(x, {rows, dim}), Tensor(), eps);
      expect_close(out, rms_ref(x, nullptr, rows, dim, eps), 1e-6, "unweighted");
      // In place, on a 3-D view: the norm runs over the last dimension only.
      const DVec want = rms_ref(x, &w, rows, dim, eps);
      ops::rms_norm(ctx, f32(x, {rows, 1, dim}), f32(x, {rows, 1, dim}), f32(w, {dim}), eps);
      expect_close(x, want, 1e-6, "in place");
    }
  }
  // Per-head norm of [T, heads, D] (the weightless q norm): each head normalised on its own.
  Vec q = rnd(2 * 3 * 8, rng), out(q.size());
  ops::rms_norm(ctx, f32(out, {2, 3, 8}), f32(q, {2, 3, 8}), Tensor(), 1e-6f);
  expect_close(out, rms_ref(q, nullptr, 6, 8, 1e-6), 1e-6, "per head");
}

TEST_F(CpuOps, AddCopyGatherRows) {
  for (int64_t n : {1, 7, 100}) {
    Vec a = rnd(n, rng), b = rnd(n, rng), out(n, NAN);
    ops::add(ctx, f32(out, {n}), f32(a, {n}), f32(b, {n}));
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], a[i] + b[i]);
    const Vec a0 = a;
    ops::add(ctx, f32(a, {n}), f32(a, {n}), f32(b, {n}));  // aliasing out == a
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a[i], a0[i] + b[i]);
    Vec c(n, NAN);
    ops::copy(ctx, f32(c, {n}), f32(b, {1, n}));
    EXPECT_EQ(c, b);
  }
  IVec src = {5, -3, 7, 1 << 30}, dst(4, 0);
  ops::copy(ctx, i32(dst, {2, 2}), i32(src, {4}));
  EXPECT_EQ(dst, src);

  const int64_t R = 6, W = 5;
  Vec x = rnd(R * W, rng);
  IVec rows = {5, 0, 5, 2, 3};
  Vec out(rows.size() * W, NAN);
  ops::gather_rows(ctx, f32(out, {5, W}), f32(x, {R, W}), i32(rows, {5}));
  for (size_t r = 0; r < rows.size(); ++r) {
    for (int64_t i = 0; i < W; ++i) ASSERT_EQ(out[r * W + i], x[rows[r] * W + i]);
  }
  // 3-D rows (one row = [n, H]).
  Vec x3 = rnd(4 * 2 * 3, rng), out3(2 * 2 * 3, NAN);
  IVec rows3 = {3, 1};
  ops::gather_rows(ctx, f32(out3, {2, 2, 3}), f32(x3, {4, 2, 3}), i32(rows3, {2}));
  for (int r = 0; r < 2; ++r) {
    for (int i = 0; i < 6; ++i) ASSERT_EQ(out3[r * 6 + i], x3[rows3[r] * 6 + i]);
  }
}

TEST_F(CpuOps, SwigluClamps) {
  for (float limit : {10.0f, 0.7f}) {
    const int64_t n = 301;
    Vec g = rnd(n, rng, 0.05f, 3.0f), u = rnd(n, rng, 0.05f, 3.0f), out(n, NAN);
    ops::swiglu(ctx, f32(out, {n}), f32(g, {n}), f32(u, {n}), limit);
    DVec want(n);
    for (int64_t i = 0; i < n; ++i) {
      const double gc = std::min<double>(g[i], limit);  // gate: clamped from above only
      const double uc = std::clamp<double>(u[i], -limit, limit);
      want[i] = silu_d(gc) * uc;
    }
    expect_close(out, want, 1e-6);
  }
  // Large negative gates are not clamped (silu(-20), not silu(-limit)); up is clamped to +-limit.
  Vec g = {-20.0f, -20.0f}, u = {1.0f, -0.25f}, out(2);
  ops::swiglu(ctx, f32(out, {2}), f32(g, {2}), f32(u, {2}), 0.5f);
  EXPECT_NEAR(out[0], silu_d(-20.0) * 0.5, 1e-12);
  EXPECT_NEAR(out[1], silu_d(-20.0) * -0.25, 1e-12);
}

TEST_F(CpuOps, ArgmaxLowestIndexOnTies) {
  const int64_t R = 4, V = 37;
  Vec l = rnd(R * V, rng);
  l[1 * V + 9] = 5.0f;
  l[1 * V + 30] = 5.0f;  // tie: lowest index wins
  for (int64_t v = 0; v < V; ++v) l[2 * V + v] = 0.25f;
  l[3 * V + V - 1] = 9.0f;
  IVec out(R, -1);
  ops::argmax(ctx, i32(out, {R}), f32(l, {R, V}));
  const int32_t row0 = static_cast<int32_t>(std::max_element(l.begin(), l.begin() + V) - l.begin());
  EXPECT_EQ(out, (IVec{row0, 9, 0, static_cast<int32_t>(V - 1)}));
}

// ---- rope -------------------------------------------------------------------------------------------

DVec default_inv_freq(double theta, int64_t R) {
  DVec inv(R / 2);
  for (int64_t i = 0; i < R / 2; ++i) inv[i] = 1.0 / std::pow(theta, 2.0 * i / R);
  return inv;
}

// transformers' _compute_yarn_parameters (truncate = True).
DVec yarn_inv_freq(double theta, int64_t R, double factor, double orig, double beta_fast, double beta_slow) {
  auto correction_dim = [&](double rot) { return R * std::log(orig / (rot * 2 * M_PI)) / (2 * std::log(theta)); };
  double low = std::max(std::floor(correction_dim(beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(beta_slow)), static_cast<double>(R - 1));
  if (low == high) high += 0.001;
  DVec inv(R / 2);
  for (int64_t i = 0; i < R / 2; ++i) {
    const double pos_freq = std::pow(theta, 2.0 * i / R);
    const double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
    const double extrapolation_factor = 1 - ramp;
    inv[i] = 1 / (factor * pos_freq) * (1 - extrapolation_factor) + 1 / pos_freq * extrapolation_factor;
  }
  return inv;
}

TEST(RopeInvFreq, DefaultAndYarnMatchTransformersFormulas) {
  for (int64_t R : {2, 8, 16, 64}) {
    for (double theta : {10000.0, 160000.0}) {
      SCOPED_TRACE(str_cat("R ", R, " theta ", theta));
      RopeParams p;
      p.theta = theta;
      const Vec got = rope_inv_freq(p, R);
      expect_close(got, default_inv_freq(theta, R), 1e-6, "default");
      EXPECT_EQ(got[0], 1.0f);
      struct Y {
        double factor, orig, fast, slow;
      };
      for (const Y& y : {Y{16, 65536, 32, 1}, Y{4, 64, 32, 1}, Y{8, 2048, 16, 2}, Y{2, 8, 32, 1}}) {
        SCOPED_TRACE(str_cat("yarn factor ", y.factor, " orig ", y.orig));
        RopeParams q = p;
        q.type = RopeType::kYarn;
        q.factor = y.factor;
        q.original_max_position_embeddings = y.orig;
        q.beta_fast = y.fast;
        q.beta_slow = y.slow;
        const Vec yarn = rope_inv_freq(q, R);
        const DVec want = yarn_inv_freq(theta, R, y.factor, y.orig, y.fast, y.slow);
        for (int64_t i = 0; i < R / 2; ++i) EXPECT_NEAR(yarn[i], want[i], 1e-6 * want[i] + 1e-12) << i;
      }
    }
  }
  // V4-Flash's compress rope: correction range [15, 25] of 32 pairs — the first 16 frequencies unscaled,
  // the last 7 divided by the factor 16.
  RopeParams flash;
  flash.type = RopeType::kYarn;
  flash.theta = 160000;
  flash.factor = 16;
  flash.original_max_position_embeddings = 65536;
  const Vec inv = rope_inv_freq(flash, 64);
  const DVec base = default_inv_freq(160000, 64);
  for (int i = 0; i <= 15; ++i) EXPECT_NEAR(inv[i], base[i], 1e-6 * base[i]) << i;
  for (int i = 25; i < 32; ++i) EXPECT_NEAR(inv[i], base[i] / 16, 1e-6 * base[i] / 16) << i;
  for (int i = 16; i < 25; ++i) {
    EXPECT_LT(inv[i], base[i]) << i;
    EXPECT_GT(inv[i], base[i] / 16) << i;
  }
}

struct RopeHolder {
  Vec inv;
  RopeTable table;
  RopeHolder(const Vec& inv_freq, float attention_factor) : inv(inv_freq) {
    table.inv_freq = f32(inv, {static_cast<int64_t>(inv.size())});
    table.rope_dim = static_cast<int64_t>(inv.size()) * 2;
    table.attention_factor = attention_factor;
  }
  RopeHolder(const RopeHolder&) = delete;
};

// GPT-J interleaved rotation of the last R channels of v[dim] at `pos`.
void rope_ref(double* v, int64_t dim, const Vec& inv, double af, double pos, bool inverse) {
  const int64_t R = static_cast<int64_t>(inv.size()) * 2;
  for (int64_t i = 0; i < R / 2; ++i) {
    const double a = static_cast<double>(inv[i]) * pos;
    const double c = std::cos(a) * af, s = (inverse ? -1 : 1) * std::sin(a) * af;
    double& x0 = v[dim - R + 2 * i];
    double& x1 = v[dim - R + 2 * i + 1];
    const double y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
    x0 = y0;
    x1 = y1;
  }
}

TEST_F(CpuOps, RopeInterleavedForwardAndInverse) {
  for (auto [T, heads, dim, R] :
       std::vector<std::array<int64_t, 4>>{{1, 1, 2, 2}, {3, 2, 16, 8}, {5, 3, 32, 32}, {4, 1, 9, 4}}) {
    SCOPED_TRACE(str_cat(T, " tokens, ", heads, " heads, dim ", dim, ", rope ", R));
    RopeParams yp;
    yp.type = RopeType::kYarn;
    yp.theta = 160000;
    yp.factor = 4;
    yp.original_max_position_embeddings = 64;
    for (const Vec& inv : {rope_inv_freq(RopeParams{}, R), rope_inv_freq(yp, R)}) {
      for (float af : {1.0f, 1.3f}) {
        RopeHolder rope(inv, af);
        Vec x = rnd(T * heads * dim, rng);
        IVec pos(T);
        for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(t * 13 + 2);
        Vec y = x;
        ops::rope(ctx, f32(y, {T, heads, dim}), i32(pos, {T}), rope.table, false);
        DVec want(x.begin(), x.end());
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t h = 0; h < heads; ++h) rope_ref(&want[(t * heads + h) * dim], dim, inv, af, pos[t], false);
        }
        expect_close(y, want, 2e-5, "forward");
        for (int64_t t = 0; t < T; ++t) {  // the non-rope channels are untouched, bit for bit
          for (int64_t h = 0; h < heads; ++h) {
            for (int64_t d = 0; d < dim - R; ++d) ASSERT_EQ(y[(t * heads + h) * dim + d], x[(t * heads + h) * dim + d]);
          }
        }
        Vec z = y;
        ops::rope(ctx, f32(z, {T, heads, dim}), i32(pos, {T}), rope.table, true);
        DVec want_inv(y.begin(), y.end());
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t h = 0; h < heads; ++h) rope_ref(&want_inv[(t * heads + h) * dim], dim, inv, af, pos[t], true);
        }
        expect_close(z, want_inv, 2e-5, "inverse");
        if (af == 1.0f) {  // inverse undoes forward
          DVec orig(x.begin(), x.end());
          expect_close(z, orig, 1e-5, "round trip");
        }
      }
    }
  }
  // Position 0 is the identity (with attention_factor 1).
  RopeHolder rope(rope_inv_freq(RopeParams{}, 8), 1.0f);
  Vec x = rnd(8, rng), y = x;
  IVec pos = {0};
  ops::rope(ctx, f32(y, {1, 1, 8}), i32(pos, {1}), rope.table, false);
  EXPECT_EQ(x, y);
}

// linears is one linear per projection of the same x; a bad shape is rejected by name.
TEST_F(CpuOps, LinearsAreSeparateLinears) {
  const int64_t T = 3, K = 12;
  Vec x = rnd(T * K, rng), w1 = rnd(5 * K, rng), w2 = rnd(7 * K, rng);
  Vec a(T * 5, NAN), b(T * 7, NAN), a_ref(T * 5), b_ref(T * 7);
  ops::linears(ctx, f32(x, {T, K}), {{f32(a, {T, 5}), f32(w1, {5, K})}, {f32(b, {T, 7}), f32(w2, {7, K})}});
  ops::linear(ctx, f32(a_ref, {T, 5}), f32(x, {T, K}), f32(w1, {5, K}));
  ops::linear(ctx, f32(b_ref, {T, 7}), f32(x, {T, K}), f32(w2, {7, K}));
  EXPECT_EQ(a, a_ref);
  EXPECT_EQ(b, b_ref);
  expect_invalid([&] { ops::linears(ctx, f32(x, {T, K}), {{f32(a, {T, 5}), f32(w2, {7, K})}}); }, "linears");
}

// rms_norm_rope is rms_norm then rope, in place; bad shapes are rejected by name.
TEST_F(CpuOps, RmsNormRopeIsNormThenRope) {
  const int64_t T = 3, heads = 2, dim = 16, R = 8;
  RopeHolder rope(rope_inv_freq(RopeParams{}, R), 1.0f);
  Vec x = rnd(T * heads * dim, rng, -2.0f, 2.0f), w = rnd(dim, rng, 0.5f, 1.5f);
  IVec pos = {0, 5, 70};
  for (bool weighted : {false, true}) {
    Vec want = x, got = x;
    const Tensor wt = weighted ? f32(w, {dim}) : Tensor();
    ops::rms_norm(ctx, f32(want, {T, heads, dim}), f32(want, {T, heads, dim}), wt, 1e-6f);
    ops::rope(ctx, f32(want, {T, heads, dim}), i32(pos, {T}), rope.table, false);
    ops::rms_norm_rope(ctx, f32(got, {T, heads, dim}), wt, 1e-6f, i32(pos, {T}), rope.table);
    EXPECT_EQ(got, want) << (weighted ? "weighted" : "unweighted");
  }
  expect_invalid(
      [&] { ops::rms_norm_rope(ctx, f32(x, {T * heads * dim}), Tensor(), 1e-6f, i32(pos, {T}), rope.table); },
      "rms_norm_rope");
  expect_invalid(
      [&] {
        ops::rms_norm_rope(ctx, f32(x, {T, heads, dim}), f32(w, {8}), 1e-6f, i32(pos, {T}), rope.table);
      },
      "rms_norm_rope");
  IVec short_pos = {1};
  expect_invalid(
      [&] {
        ops::rms_norm_rope(ctx, f32(x, {T, heads, dim}), Tensor(), 1e-6f, i32(short_pos, {1}), rope.table);
      },
      "rms_norm_rope");
  // Several parts (a layer's query heads and kv row): each part as on its own; parts of other tokens or widths fail.
  Vec q = rnd(T * heads * dim, rng, -2.0f, 2.0f), kv = rnd(T * dim, rng, -2.0f, 2.0f);
  Vec q_want = q, kv_want = kv;
  ops::rms_norm_rope(ctx, f32(q_want, {T, heads, dim}), Tensor(), 1e-6f, i32(pos, {T}), rope.table);
  ops::rms_norm_rope(ctx, f32(kv_want, {T, 1, dim}), f32(w, {dim}), 1e-6f, i32(pos, {T}), rope.table);
  const NormRopeHeads parts[] = {{f32(q, {T, heads, dim}), Tensor()}, {f32(kv, {T, 1, dim}), f32(w, {dim})}};
  ops::rms_norm_rope(ctx, parts, 1e-6f, i32(pos, {T}), rope.table);
  EXPECT_EQ(q, q_want);
  EXPECT_EQ(kv, kv_want);
  Vec narrow = rnd(T * 8, rng);
  const NormRopeHeads mismatched[] = {{f32(q, {T, heads, dim}), Tensor()}, {f32(narrow, {T, 1, 8}), Tensor()}};
  expect_invalid([&] { ops::rms_norm_rope(ctx, mismatched, 1e-6f, i32(pos, {T}), rope.table); }, "rms_norm_rope");
}

// ---- mHC --------------------------------------------------------------------------------------------

ModelConfig hc_config(int64_t n, int64_t iters = 20) {
  ModelConfig c;
  c.hc_mult = n;
  c.hc_sinkhorn_iters = iters;
  c.hc_eps = 1e-6;
  c.rms_norm_eps = 1e-6;
  return c;
}

struct HcRef {
  DVec collapsed, post, comb;
};

HcRef hc_pre_ref(const Vec& x, const Vec& fn, const Vec& base, const Vec& scale, int64_t T, int64_t n, int64_t H,
                 const ModelConfig& cfg) {
  HcRef out{DVec(T * H), DVec(T * n), DVec(T * n * n)};
  const int64_t width = n * H, rows = (2 + n) * n;
  const double eps = cfg.rms_norm_eps, hc_eps = cfg.hc_eps;
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x.data() + t * width;
    double ss = 0;
    for (int64_t i = 0; i < width; ++i) ss += static_cast<double>(xt[i]) * xt[i];
    const double r = 1.0 / std::sqrt(ss / width + eps);
    DVec m(rows);
    for (int64_t k = 0; k < rows; ++k) {
      double acc = 0;
      for (int64_t i = 0; i < width; ++i) acc += static_cast<double>(fn[k * width + i]) * xt[i];
      m[k] = acc * r;
    }
    DVec pre(n);
    for (int64_t i = 0; i < n; ++i) {
      pre[i] = sigmoid_d(m[i] * scale[0] + base[i]) + hc_eps;
      out.post[t * n + i] = 2.0 * sigmoid_d(m[n + i] * scale[1] + base[n + i]);
    }
    std::vector<DVec> C(n, DVec(n));
    for (int64_t i = 0; i < n; ++i) {
      double mx = -INFINITY, sum = 0;
      for (int64_t j = 0; j < n; ++j)
        mx = std::max(mx, C[i][j] = m[2 * n + i * n + j] * scale[2] + base[2 * n + i * n + j]);
      for (int64_t j = 0; j < n; ++j) sum += (C[i][j] = std::exp(C[i][j] - mx));
      for (int64_t j = 0; j < n; ++j) C[i][j] = C[i][j] / sum + hc_eps;
    }
    auto cols = [&] {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += C[i][j];
        for (int64_t i = 0; i < n; ++i) C[i][j] /= s + hc_eps;
      }
    };
    cols();
    for (int64_t it = 1; it < cfg.hc_sinkhorn_iters; ++it) {
      for (int64_t i = 0; i < n; ++i) {
        double s = 0;
        for (int64_t j = 0; j < n; ++j) s += C[i][j];
        for (int64_t j = 0; j < n; ++j) C[i][j] /= s + hc_eps;
      }
      cols();
    }
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) out.comb[(t * n + i) * n + j] = C[i][j];
    }
    for (int64_t h = 0; h < H; ++h) {
      double acc = 0;
      for (int64_t i = 0; i < n; ++i) acc += pre[i] * xt[i * H + h];
      out.collapsed[t * H + h] = acc;
    }
  }
  return out;
}

TEST_F(CpuOps, HcPreSinkhorn) {
  for (auto [T, n, H, iters] :
       std::vector<std::array<int64_t, 4>>{{1, 4, 8, 20}, {3, 4, 33, 20}, {2, 2, 5, 1}, {4, 3, 16, 7}}) {
    SCOPED_TRACE(str_cat(T, " tokens, n ", n, ", H ", H, ", ", iters, " iters"));
    const ModelConfig cfg = hc_config(n, iters);
    const int64_t rows = (2 + n) * n;
    Vec x = rnd(T * n * H, rng, 0.1f, 2.0f), fn = rnd(rows * n * H, rng, 0.1f, 3.0f / std::sqrt(float(n * H)) + 0.1f);
    Vec base = rnd(rows, rng), scale = rnd(3, rng, 0.5f, 1.5f);
    Vec collapsed(T * H, NAN), post(T * n, NAN), comb(T * n * n, NAN);
    ops::hc_pre(ctx, f32(collapsed, {T, H}), f32(post, {T, n}), f32(comb, {T, n, n}), f32(x, {T, n, H}),
                f32(fn, {rows, n * H}), f32(base, {rows}), f32(scale, {3}), ops::mhc_params(cfg));
    const HcRef want = hc_pre_ref(x, fn, base, scale, T, n, H, cfg);
    expect_close(collapsed, want.collapsed, 2e-6, "collapsed");
    expect_close(post, want.post, 2e-6, "post");
    expect_close(comb, want.comb, 5e-6, "comb");
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_GT(post[t * n + i], 0.0f);
        EXPECT_LT(post[t * n + i], 2.0f);
      }
      if (iters < 20) continue;
      for (int64_t k = 0; k < n; ++k) {  // Sinkhorn: doubly stochastic
        double row = 0, col = 0;
        for (int64_t j = 0; j < n; ++j) {
          row += comb[(t * n + k) * n + j];
          col += comb[(t * n + j) * n + k];
        }
        EXPECT_NEAR(row, 1.0, 1e-2);  // 19 Sinkhorn rounds: rows close to 1 ...
        EXPECT_NEAR(col, 1.0, 1e-5);  // ... columns normalised last
      }
    }
  }
}

// Flash's streams (4 x 4096) over 80 tokens: enough work for the parallel normalisation (kParallelWork), whose
// workers once wrote into their own empty thread_local buffer (a crash on any machine with more than one thread).
// Each token's outputs are its own: the token alone (serial; its mix product on dot_rows, not sgemm) gives them up to
// the product's summation order.
TEST_F(CpuOps, HcPreManyTokensEqualEachTokenAlone) {
  const int64_t T = 80, n = 4, H = 4096, rows = (2 + n) * n;
  const ModelConfig cfg = hc_config(n, 20);
  Vec x = rnd(T * n * H, rng, -2.0f, 2.0f), fn = rnd(rows * n * H, rng, -0.02f, 0.02f);
  Vec base = rnd(rows, rng), scale = rnd(3, rng, 0.5f, 1.5f);
  Vec collapsed(T * H, NAN), post(T * n, NAN), comb(T * n * n, NAN);
  ops::hc_pre(ctx, f32(collapsed, {T, H}), f32(post, {T, n}), f32(comb, {T, n, n}), f32(x, {T, n, H}),
              f32(fn, {rows, n * H}), f32(base, {rows}), f32(scale, {3}), ops::mhc_params(cfg));
  for (int64_t t = 0; t < T; t += 13) {
    Vec xt(x.begin() + t * n * H, x.begin() + (t + 1) * n * H), c1(H, NAN), p1(n, NAN), m1(n * n, NAN);
    ops::hc_pre(ctx, f32(c1, {1, H}), f32(p1, {1, n}), f32(m1, {1, n, n}), f32(xt, {1, n, H}), f32(fn, {rows, n * H}),
                f32(base, {rows}), f32(scale, {3}), ops::mhc_params(cfg));
    SCOPED_TRACE(str_cat("token ", t));
    expect_close(Vec(collapsed.begin() + t * H, collapsed.begin() + (t + 1) * H), DVec(c1.begin(), c1.end()), 1e-5,
                 "collapsed");
    expect_close(Vec(post.begin() + t * n, post.begin() + (t + 1) * n), DVec(p1.begin(), p1.end()), 1e-5, "post");
    expect_close(Vec(comb.begin() + t * n * n, comb.begin() + (t + 1) * n * n), DVec(m1.begin(), m1.end()), 1e-5,
                 "comb");
  }
}

TEST_F(CpuOps, HcPostAndHead) {
  for (auto [T, n, H] : std::vector<std::array<int64_t, 3>>{{1, 4, 8}, {3, 4, 17}, {2, 3, 5}}) {
    SCOPED_TRACE(str_cat(T, " tokens, n ", n, ", H ", H));
    Vec x = rnd(T * n * H, rng), y = rnd(T * H, rng), post = rnd(T * n, rng), comb = rnd(T * n * n, rng);
    Vec out(T * n * H, NAN);
    ops::hc_post(ctx, f32(out, {T, n, H}), f32(y, {T, H}), f32(x, {T, n, H}), f32(post, {T, n}), f32(comb, {T, n, n}));
    DVec want(T * n * H);
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t h = 0; h < H; ++h) {
          double acc = static_cast<double>(post[t * n + j]) * y[t * H + h];
          for (int64_t i = 0; i < n; ++i)
            acc += static_cast<double>(comb[(t * n + i) * n + j]) * x[(t * n + i) * H + h];
          want[(t * n + j) * H + h] = acc;
        }
      }
    }
    expect_close(out, want, 1e-6, "hc_post");

    const ModelConfig cfg = hc_config(n);
    Vec fn = rnd(n * n * H, rng), base = rnd(n, rng), scale = rnd(1, rng, 0.5f, 2.0f), head(T * H, NAN);
    ops::hc_head(ctx, f32(head, {T, H}), f32(x, {T, n, H}), f32(fn, {n, n * H}), f32(base, {n}), f32(scale, {1}),
                 ops::mhc_params(cfg));
    DVec want_head(T * H);
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x.data() + t * n * H;
      double ss = 0;
      for (int64_t i = 0; i < n * H; ++i) ss += static_cast<double>(xt[i]) * xt[i];
      const double r = 1.0 / std::sqrt(ss / (n * H) + cfg.rms_norm_eps);
      for (int64_t h = 0; h < H; ++h) {
        double acc = 0;
        for (int64_t i = 0; i < n; ++i) {
          double m = 0;
          for (int64_t k = 0; k < n * H; ++k) m += static_cast<double>(fn[i * n * H + k]) * xt[k];
          const double pre = sigmoid_d(m * r * scale[0] + base[i]) + cfg.hc_eps;
          acc += pre * xt[i * H + h];
        }
        want_head[t * H + h] = acc;
      }
    }
    expect_close(head, want_head, 2e-6, "hc_head");
  }
}

// ---- MoE --------------------------------------------------------------------------------------------

ModelConfig moe_config(int64_t E, int64_t k, ScoringFunc f, bool norm, double scale) {
  ModelConfig c;
  c.n_routed_experts = E;
  c.num_experts_per_tok = k;
  c.scoring_func = f;
  c.norm_topk_prob = norm;
  c.routed_scaling_factor = scale;
  return c;
}

DVec scores_ref(const float* l, int64_t E, ScoringFunc f) {
  DVec s(E);
  double mx = -INFINITY, sum = 0;
  for (int64_t e = 0; e < E; ++e) mx = std::max<double>(mx, l[e]);
  for (int64_t e = 0; e < E; ++e) {
    switch (f) {
      case ScoringFunc::kSqrtSoftplus:
        s[e] = std::sqrt(std::log1p(std::exp(static_cast<double>(l[e]))));
        break;
      case ScoringFunc::kSigmoid:
        s[e] = sigmoid_d(l[e]);
        break;
      case ScoringFunc::kSoftmax:
        sum += (s[e] = std::exp(l[e] - mx));
        break;
    }
  }
  if (f == ScoringFunc::kSoftmax) {
    for (double& v : s) v /= sum;
  }
  return s;
}

TEST_F(CpuOps, MoeRouteTopKWithSelectionOnlyBias) {
  for (ScoringFunc f : {ScoringFunc::kSqrtSoftplus, ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
    for (bool norm : {true, false}) {
      for (auto [T, E, k] : std::vector<std::array<int64_t, 3>>{{1, 4, 1}, {5, 8, 2}, {3, 7, 3}, {2, 16, 6}}) {
        SCOPED_TRACE(str_cat(scoring_func_name(f), norm ? " norm" : " raw", " T ", T, " E ", E, " k ", k));
        const ModelConfig cfg = moe_config(E, k, f, norm, 2.5);
        Vec logits = rnd(T * E, rng, 0.05f, 4.0f), bias = rnd(E, rng, 0.0f, 0.3f);
        IVec ids(T, 0), idx(T * k, -1);
        Vec w(T * k, NAN);
        for (bool with_bias : {false, true}) {
          ops::moe_route(ctx, f32(w, {T, k}), i32(idx, {T, k}), f32(logits, {T, E}),
                         with_bias ? f32(bias, {E}) : Tensor(), Tensor(), i32(ids, {T}), ops::route_params(cfg));
          for (int64_t t = 0; t < T; ++t) {
            const DVec s = scores_ref(logits.data() + t * E, E, f);
            std::vector<int32_t> order(E);
            std::iota(order.begin(), order.end(), 0);
            auto biased = [&](int32_t e) { return s[e] + (with_bias ? bias[e] : 0.0); };
            std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return biased(a) > biased(b); });
            double sum = 0;
            for (int64_t i = 0; i < k; ++i) sum += s[order[i]];
            for (int64_t i = 0; i < k; ++i) {
              EXPECT_EQ(idx[t * k + i], order[i]) << "token " << t << " rank " << i;
              const double want = (norm ? s[order[i]] / sum : s[order[i]]) * 2.5;  // unbiased score
              EXPECT_NEAR(w[t * k + i], want, 2e-6 * std::max(1.0, std::fabs(want)));
            }
          }
        }
      }
    }
  }
}

TEST_F(CpuOps, MoeRouteBiasChangesSelectionNotWeights) {
  const ModelConfig cfg = moe_config(4, 2, ScoringFunc::kSigmoid, false, 1.0);
  Vec logits = {2.0f, 1.0f, -1.0f, -2.0f}, bias = {0.0f, 0.0f, 0.0f, 5.0f}, w(2);
  IVec ids = {0}, idx(2);
  ops::moe_route(ctx, f32(w, {1, 2}), i32(idx, {1, 2}), f32(logits, {1, 4}), Tensor(), Tensor(), i32(ids, {1}),
                 ops::route_params(cfg));
  EXPECT_EQ(idx, (IVec{0, 1}));
  ops::moe_route(ctx, f32(w, {1, 2}), i32(idx, {1, 2}), f32(logits, {1, 4}), f32(bias, {4}), Tensor(), i32(ids, {1}),
                 ops::route_params(cfg));
  EXPECT_EQ(idx, (IVec{3, 0}));              // the bias pulls in the weakest expert ...
  EXPECT_NEAR(w[0], sigmoid_d(-2.0), 1e-7);  // ... whose weight is its own unbiased score
  EXPECT_NEAR(w[1], sigmoid_d(2.0), 1e-7);
}

TEST_F(CpuOps, MoeRouteHashUsesTid2eid) {
  const int64_t V = 11, E = 6, k = 3, T = 5;
  for (ScoringFunc f : {ScoringFunc::kSqrtSoftplus, ScoringFunc::kSoftmax, ScoringFunc::kSigmoid}) {
    const ModelConfig cfg = moe_config(E, k, f, true, 1.5);
    IVec table(V * k);
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t i = 0; i < k; ++i) table[v * k + i] = static_cast<int32_t>((v * 5 + i * 2 + 1) % E);
    }
    IVec ids = {10, 0, 3, 3, 7}, idx(T * k, -1);
    Vec logits = rnd(T * E, rng, 0.05f, 3.0f), w(T * k, NAN);
    ops::moe_route(ctx, f32(w, {T, k}), i32(idx, {T, k}), f32(logits, {T, E}), Tensor(), i32(table, {V, k}),
                   i32(ids, {T}), ops::route_params(cfg));
    for (int64_t t = 0; t < T; ++t) {
      const DVec s = scores_ref(logits.data() + t * E, E, f);
      double sum = 0;
      for (int64_t i = 0; i < k; ++i) sum += s[table[ids[t] * k + i]];
      for (int64_t i = 0; i < k; ++i) {
        const int32_t e = table[ids[t] * k + i];
        EXPECT_EQ(idx[t * k + i], e);
        EXPECT_NEAR(w[t * k + i], s[e] / sum * 1.5, 2e-6);
      }
    }
  }
}

TEST_F(CpuOps, MoeExperts) {
  for (auto [T, H, I, E, k] : std::vector<std::array<int64_t, 5>>{{1, 4, 3, 2, 1}, {3, 9, 5, 4, 2}, {4, 16, 7, 6, 3}}) {
    for (float limit : {10.0f, 0.4f}) {
      SCOPED_TRACE(str_cat("T ", T, " H ", H, " I ", I, " E ", E, " k ", k, " limit ", limit));
      Vec x = rnd(T * H, rng), w1 = rnd(E * I * H, rng), w2 = rnd(E * H * I, rng), w3 = rnd(E * I * H, rng);
      Vec weights = rnd(T * k, rng), out(T * H, NAN);
      IVec idx(T * k);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < k; ++i) idx[t * k + i] = static_cast<int32_t>((t + i * 3) % E);
      }
      ops::moe_experts(ctx, f32(out, {T, H}), f32(x, {T, H}), i32(idx, {T, k}), f32(weights, {T, k}),
                       f32(w1, {E, I, H}), f32(w2, {E, H, I}), f32(w3, {E, I, H}), limit);
      DVec want(T * H, 0.0);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < k; ++i) {
          const int64_t e = idx[t * k + i];
          DVec act(I);
          for (int64_t j = 0; j < I; ++j) {
            double g = 0, u = 0;
            for (int64_t h = 0; h < H; ++h) {
              g += static_cast<double>(w1[(e * I + j) * H + h]) * x[t * H + h];
              u += static_cast<double>(w3[(e * I + j) * H + h]) * x[t * H + h];
            }
            act[j] = silu_d(std::min<double>(g, limit)) * std::clamp<double>(u, -limit, limit);
          }
          for (int64_t h = 0; h < H; ++h) {
            double acc = 0;
            for (int64_t j = 0; j < I; ++j) acc += static_cast<double>(w2[(e * H + h) * I + j]) * act[j];
            want[t * H + h] += weights[t * k + i] * acc;
          }
        }
      }
      expect_close(out, want, 2e-6);
    }
  }
}

// shared_expert: the last stacked expert runs for every token with weight 1 after the routed ones; equal (up
// to the summation order of f32 dots) to the model's former unfused sequence: routed experts, then
// linear / linear / swiglu / linear with the shared weights and an add.
TEST_F(CpuOps, MoeExpertsSharedExpert) {
  for (auto [T, H, I, E, k] :
       std::vector<std::array<int64_t, 5>>{{1, 7, 5, 3, 2}, {1, 33, 17, 5, 3}, {3, 9, 5, 4, 2}}) {
    for (float limit : {10.0f, 0.4f}) {
      SCOPED_TRACE(str_cat("T ", T, " H ", H, " I ", I, " E ", E, " k ", k, " limit ", limit));
      // Stacked [E + 1, ...]: the routed experts, then the shared one.
      Vec x = rnd(T * H, rng, -1.0f, 1.0f), w1 = rnd((E + 1) * I * H, rng, -1.0f, 1.0f),
          w2 = rnd((E + 1) * H * I, rng, -1.0f, 1.0f), w3 = rnd((E + 1) * I * H, rng, -1.0f, 1.0f);
      Vec weights = rnd(T * k, rng), out(T * H, NAN);
      IVec idx(T * k);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < k; ++i) idx[t * k + i] = static_cast<int32_t>((t + i * 2 + 1) % E);
      }
      Tensor tw1 = f32(w1, {E + 1, I, H}), tw2 = f32(w2, {E + 1, H, I}), tw3 = f32(w3, {E + 1, I, H});
      ops::moe_experts(ctx, f32(out, {T, H}), f32(x, {T, H}), i32(idx, {T, k}), f32(weights, {T, k}), tw1, tw2, tw3,
                       limit, /*shared_expert=*/true);

      Vec routed(T * H, NAN), gate(T * I, NAN), up(T * I, NAN), y(T * H, NAN);
      ops::moe_experts(ctx, f32(routed, {T, H}), f32(x, {T, H}), i32(idx, {T, k}), f32(weights, {T, k}),
                       tw1.slice(0, 0, E), tw2.slice(0, 0, E), tw3.slice(0, 0, E), limit);
      ops::linear(ctx, f32(gate, {T, I}), f32(x, {T, H}), tw1.select(0, E));
      ops::linear(ctx, f32(up, {T, I}), f32(x, {T, H}), tw3.select(0, E));
      ops::swiglu(ctx, f32(gate, {T, I}), f32(gate, {T, I}), f32(up, {T, I}), limit);
      ops::linear(ctx, f32(y, {T, H}), f32(gate, {T, I}), tw2.select(0, E));
      ops::add(ctx, f32(y, {T, H}), f32(y, {T, H}), f32(routed, {T, H}));
      expect_close(out, DVec(y.begin(), y.end()), 1e-6);
    }
  }
}

// ---- compressor -------------------------------------------------------------------------------------

struct StateHolder {
  Vec raw_kv, raw_gate, entries;
  CompressorState st;
  StateHolder(int64_t slots, int64_t rate, bool overlap, int64_t dim, int64_t max_entries, int64_t ahead = 1) {
    const int64_t width = (overlap ? 2 : 1) * dim, ring = (overlap ? 2 : 1) * rate + ahead;
    raw_kv.assign(slots * ring * width, NAN);
    raw_gate.assign(slots * ring * width, NAN);
    entries.assign(slots * max_entries * dim, 12345.0f);  // sentinel: never-emitted entries keep it
    st.rate = rate;
    st.overlap = overlap;
    st.dim = dim;
    st.raw_kv = paged(raw_kv, {slots, ring, width});
    st.raw_gate = paged(raw_gate, {slots, ring, width});
    st.entries = paged(entries, {slots, max_entries, dim});
  }
  StateHolder(const StateHolder&) = delete;
  const float* entry(int64_t slot, int64_t j) const { return entries.data() + (slot * st.entries.rows + j) * st.dim; }
};

// Entry j of a sequence whose per-position projections are kv/gate [L, width].
DVec compressor_entry_ref(const Vec& kv, const Vec& gate, const Vec& ape, const Vec& norm_w, const Vec& inv_freq,
                          double af, int64_t rate, bool overlap, int64_t D, int64_t j, double eps) {
  const int64_t width = (overlap ? 2 : 1) * D;
  struct Src {
    int64_t pos, ape_row, off;
  };
  std::vector<Src> src;
  if (overlap && j >= 1) {
    for (int64_t i = 0; i < rate; ++i) src.push_back({(j - 1) * rate + i, i, 0});
  }
  for (int64_t i = 0; i < rate; ++i) src.push_back({j * rate + i, i, overlap ? D : 0});
  DVec e(D);
  for (int64_t d = 0; d < D; ++d) {
    DVec logit;
    double mx = -INFINITY;
    for (const Src& s : src) {
      logit.push_back(static_cast<double>(gate[s.pos * width + s.off + d]) + ape[s.ape_row * width + s.off + d]);
      mx = std::max(mx, logit.back());
    }
    double denom = 0, acc = 0;
    for (size_t k = 0; k < src.size(); ++k) {
      const double p = std::exp(logit[k] - mx);
      denom += p;
      acc += p * kv[src[k].pos * width + src[k].off + d];
    }
    e[d] = acc / denom;
  }
  double ss = 0;
  for (double v : e) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / D + eps);
  for (int64_t d = 0; d < D; ++d) e[d] = e[d] * inv * norm_w[d];
  rope_ref(e.data(), D, inv_freq, af, static_cast<double>(j * rate), false);
  return e;
}

// Rows [begin, end) of a per-position array [L, width].
Vec rows_of(const Vec& a, int64_t width, int64_t begin, int64_t end) {
  return Vec(a.begin() + begin * width, a.begin() + end * width);
}

struct CompressorCase {
  int64_t rate;
  bool overlap;
  int64_t dim, rope_dim, length;
};

void PrintTo(const CompressorCase& c, std::ostream* os) {
  *os << "rate " << c.rate << (c.overlap ? " overlap" : "") << ", dim " << c.dim << ", rope " << c.rope_dim << ", "
      << c.length << " tokens";
}

class Compressor : public CpuOps, public testing::WithParamInterface<CompressorCase> {};

TEST_P(Compressor, EntriesMatchFormulaAndDoNotDependOnBatching) {
  const CompressorCase cc = GetParam();
  const int64_t r = cc.rate, D = cc.dim, R = cc.rope_dim, L = cc.length;
  const bool overlap = cc.overlap;
  const int64_t width = (overlap ? 2 : 1) * D, max_entries = L / r + 2;
  const float eps = 1e-6f;
  Vec kv = rnd(L * width, rng, 0.1f, 2.0f), gate = rnd(L * width, rng, 0.1f, 2.0f), ape = rnd(r * width, rng);
  Vec norm_w = rnd(D, rng, 0.5f, 1.5f);
  RopeParams yp;
  yp.type = RopeType::kYarn;
  yp.theta = 160000;
  yp.factor = 4;
  yp.original_max_position_embeddings = 64;
  RopeHolder rope(rope_inv_freq(yp, R), 1.0f);
  const int32_t slot = 1;

  // Runs the sequence through emit + store in chunks of the given sizes.
  auto run = [&](const std::vector<int64_t>& chunks) {
    auto s = std::make_unique<StateHolder>(2, r, overlap, D, max_entries);
    int64_t done = 0;
    for (int64_t n : chunks) {
      BatchBuilder b;
      b.add({slot, static_cast<int32_t>(done), IVec(n, 0), false});
      b.pad_to(n + 2);  // padding rows carry garbage and must be ignored
      Vec ckv = rows_of(kv, width, done, done + n), cgate = rows_of(gate, width, done, done + n);
      for (int i = 0; i < 2 * width; ++i) {
        ckv.push_back(99.0f);
        cgate.push_back(99.0f);
      }
      const BatchMeta meta = b.meta();
      ops::compressor_emit(ctx, s->st, f32(ckv, {n + 2, width}), f32(cgate, {n + 2, width}), f32(ape, {r, width}),
                           f32(norm_w, {D}), rope.table, meta, eps);
      ops::compressor_store(ctx, s->st, f32(ckv, {n + 2, width}), f32(cgate, {n + 2, width}), meta);
      done += n;
    }
    EXPECT_EQ(done, L);
    return s;
  };

  auto whole = run({L});
  const int64_t emitted = L / r;
  for (int64_t j = 0; j < emitted; ++j) {
    SCOPED_TRACE(str_cat("entry ", j));
    const DVec want = compressor_entry_ref(kv, gate, ape, norm_w, rope.inv, 1.0, r, overlap, D, j, eps);
    expect_close(Vec(whole->entry(slot, j), whole->entry(slot, j) + D), want, 1e-5);
  }
  for (int64_t j = emitted; j < max_entries; ++j) EXPECT_EQ(whole->entry(slot, j)[0], 12345.0f) << "entry " << j;
  for (int64_t j = 0; j < max_entries; ++j) EXPECT_EQ(whole->entry(0, j)[0], 12345.0f) << "slot 0 untouched";

  // Token by token and in uneven chunks: identical entries, bit for bit.
  std::vector<std::vector<int64_t>> schedules = {std::vector<int64_t>(L, 1)};
  std::vector<int64_t> uneven;
  for (int64_t left = L, step = 1; left > 0; step = step % 5 + 2) {
    uneven.push_back(std::min(step, left));
    left -= uneven.back();
  }
  schedules.push_back(uneven);
  schedules.push_back({L / 2, L - L / 2});
  for (const auto& chunks : schedules) {
    auto other = run(chunks);
    for (int64_t j = 0; j < max_entries; ++j) {
      for (int64_t d = 0; d < D; ++d) {
        ASSERT_EQ(other->entry(slot, j)[d], whole->entry(slot, j)[d]) << "entry " << j << " channel " << d;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(CpuOps, Compressor,
                         testing::Values(CompressorCase{4, true, 16, 8, 19}, CompressorCase{4, true, 8, 8, 8},
                                         CompressorCase{8, false, 12, 4, 27}, CompressorCase{2, true, 6, 2, 9},
                                         CompressorCase{3, false, 10, 6, 3}, CompressorCase{1, false, 4, 2, 5}));

TEST_F(CpuOps, CompressorTwoSequencesInOneBatch) {
  const int64_t r = 4, D = 8, R = 4, width = 2 * D, max_entries = 6;
  Vec ape = rnd(r * width, rng), norm_w = rnd(D, rng, 0.5f, 1.5f);
  RopeHolder rope(rope_inv_freq(RopeParams{}, R), 1.0f);
  StateHolder s(3, r, true, D, max_entries);
  const int64_t La = 11, Lb = 7;
  Vec kva = rnd((La + 1) * width, rng), ga = rnd((La + 1) * width, rng);
  Vec kvb = rnd((Lb + 1) * width, rng), gb = rnd((Lb + 1) * width, rng);
  auto step = [&](int64_t a0, int64_t a1, int64_t b0, int64_t b1) {  // A at slot 2, B at slot 0, then padding
    BatchBuilder b;
    b.add({2, static_cast<int32_t>(a0), IVec(a1 - a0, 1), false});
    b.add({0, static_cast<int32_t>(b0), IVec(b1 - b0, 2), false});
    b.pad_to(b.num_tokens() + 1);
    Vec kv = rows_of(kva, width, a0, a1), g = rows_of(ga, width, a0, a1);
    const Vec kvb_rows = rows_of(kvb, width, b0, b1), gb_rows = rows_of(gb, width, b0, b1);
    kv.insert(kv.end(), kvb_rows.begin(), kvb_rows.end());
    g.insert(g.end(), gb_rows.begin(), gb_rows.end());
    kv.resize(kv.size() + width, -50.0f);
    g.resize(g.size() + width, 50.0f);
    const int64_t T = b.num_tokens();
    ops::compressor_emit(ctx, s.st, f32(kv, {T, width}), f32(g, {T, width}), f32(ape, {r, width}), f32(norm_w, {D}),
                         rope.table, b.meta(), 1e-6f);
    ops::compressor_store(ctx, s.st, f32(kv, {T, width}), f32(g, {T, width}), b.meta());
  };
  step(0, La, 0, Lb);            // prefill both
  step(La, La + 1, Lb, Lb + 1);  // one decode step each: B's position 7 closes its second window
  for (auto [slot, L, kv, g] : {std::tuple{2, La + 1, &kva, &ga}, std::tuple{0, Lb + 1, &kvb, &gb}}) {
    for (int64_t j = 0; j < L / r; ++j) {
      SCOPED_TRACE(str_cat("slot ", slot, " entry ", j));
      const DVec want = compressor_entry_ref(*kv, *g, ape, norm_w, rope.inv, 1.0, r, true, D, j, 1e-6);
      expect_close(Vec(s.entry(slot, j), s.entry(slot, j) + D), want, 1e-5);
    }
    EXPECT_EQ(s.entry(slot, L / r)[0], 12345.0f);
  }
  for (int64_t j = 0; j < max_entries; ++j) EXPECT_EQ(s.entry(1, j)[0], 12345.0f);
}

// --kv-cache-dtype: an entry goes through its cache's format after RoPE, before it is stored: the entries of a
// formatted state are the plain entries' round trips (kv_round_trip is checked against its definition elsewhere).
TEST_F(CpuOps, CompressorEntriesGoThroughTheCacheFormat) {
  const int64_t r = 4, D = 24, R = 8, width = 2 * D, max_entries = 4, L = 16;
  Vec ape = rnd(r * width, rng), norm_w = rnd(D, rng, 0.5f, 1.5f), kv = rnd(L * width, rng), g = rnd(L * width, rng);
  RopeHolder rope(rope_inv_freq(RopeParams{}, R), 1.0f);
  for (const KvRoundTrip f : {KvRoundTrip::kBf16, KvRoundTrip::kFp8Blocks, KvRoundTrip::kFp8Row}) {
    StateHolder plain(1, r, true, D, max_entries), formatted(1, r, true, D, max_entries);
    formatted.st.entry_format = f;
    BatchBuilder b;
    b.add({0, 0, IVec(L, 0), false});
    for (StateHolder* s : {&plain, &formatted}) {
      ops::compressor_emit(ctx, s->st, f32(kv, {L, width}), f32(g, {L, width}), f32(ape, {r, width}), f32(norm_w, {D}),
                           rope.table, b.meta(), 1e-6f);
    }
    for (int64_t j = 0; j < max_entries; ++j) {
      Vec want(plain.entry(0, j), plain.entry(0, j) + D);
      ops::kv_round_trip(ctx, f32(want, {1, D}), R, f);
      EXPECT_EQ(Vec(formatted.entry(0, j), formatted.entry(0, j) + D), want) << kv_round_trip_name(f) << " entry " << j;
      EXPECT_NE(Vec(formatted.entry(0, j), formatted.entry(0, j) + D), Vec(plain.entry(0, j), plain.entry(0, j) + D));
    }
  }
}

TEST_F(CpuOps, CompressorRefusesEntriesBeyondCapacity) {
  StateHolder s(1, 2, false, 4, 2);
  Vec kv = rnd(6 * 4, rng), g = rnd(6 * 4, rng), ape = rnd(2 * 4, rng), nw = rnd(4, rng);
  RopeHolder rope(rope_inv_freq(RopeParams{}, 2), 1.0f);
  BatchBuilder b;
  b.add({0, 0, IVec(6, 0), false});
  try {
    ops::compressor_emit(ctx, s.st, f32(kv, {6, 4}), f32(g, {6, 4}), f32(ape, {2, 4}), f32(nw, {4}), rope.table,
                         b.meta(), 1e-6f);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("capacity"), std::string::npos) << e.what();
  }
}

// ---- indexer ----------------------------------------------------------------------------------------

TEST_F(CpuOps, IndexerTopkPerQueryVisibility) {
  const int64_t Hi = 3, Di = 8, rate = 4, max_entries = 12, topk = 3;
  StateHolder keys(2, rate, true, Di, max_entries);
  for (float& v : keys.entries) v = rnd(1, rng)[0];
  // Sequence A (slot 1): a whole prefill of 41 tokens (0..10 entries visible); sequence B (slot 0): decode
  // at position 9 (2 visible, fewer than topk); then padding.
  BatchBuilder b;
  b.add({1, 0, IVec(41, 0), true});
  b.add({0, 9, IVec(1, 0), false});
  b.pad_to(45);
  const int64_t T = b.num_tokens();
  Vec q = rnd(T * Hi * Di, rng), w = rnd(T * Hi, rng);
  const float scale = 0.3f;
  IVec out(T * topk, 77);
  ops::indexer_topk(ctx, i32(out, {T, topk}), f32(q, {T, Hi, Di}), f32(w, {T, Hi}), keys.st, b.meta(), scale);
  const IVec& pos = b.positions();
  for (int64_t t = 0; t < T; ++t) {
    SCOPED_TRACE(str_cat("row ", t));
    const int32_t* sel = out.data() + t * topk;
    if (t >= 42) {  // padding
      for (int64_t i = 0; i < topk; ++i) EXPECT_EQ(sel[i], -1);
      continue;
    }
    const int64_t slot = t < 41 ? 1 : 0;
    const int64_t visible = (pos[t] + 1) / rate;
    DVec score(visible);
    for (int64_t s = 0; s < visible; ++s) {
      double acc = 0;
      for (int64_t h = 0; h < Hi; ++h) {
        double d = 0;
        for (int64_t c = 0; c < Di; ++c) d += static_cast<double>(q[(t * Hi + h) * Di + c]) * keys.entry(slot, s)[c];
        acc += std::max(d, 0.0) * scale * w[t * Hi + h];
      }
      score[s] = acc;
    }
    if (visible <= topk) {  // everything visible, in order, then -1
      for (int64_t i = 0; i < topk; ++i) EXPECT_EQ(sel[i], i < visible ? i : -1);
      continue;
    }
    std::vector<int32_t> order(visible);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t c) { return score[a] > score[c]; });
    for (int64_t i = 0; i < topk; ++i) {
      ASSERT_GE(sel[i], 0);
      ASSERT_LT(sel[i], visible);  // never an entry the query cannot see
      // Same choice as the double-precision ranking (up to near-ties).
      EXPECT_NEAR(score[sel[i]], score[order[i]], 1e-5) << "rank " << i;
    }
    EXPECT_EQ(std::set<int32_t>(sel, sel + topk).size(), static_cast<size_t>(topk));
  }
  // With no more than topk entries visible anywhere, every row lists them all.
  BatchBuilder small;
  small.add({1, 0, IVec(12, 0), true});
  IVec out2(12 * topk);
  ops::indexer_topk(ctx, i32(out2, {12, topk}), f32(q, {12, Hi, Di}), f32(w, {12, Hi}), keys.st, small.meta(), scale);
  for (int64_t t = 0; t < 12; ++t) {
    for (int64_t i = 0; i < topk; ++i) EXPECT_EQ(out2[t * topk + i], i < (t + 1) / rate ? i : -1) << t;
  }
}

// ---- attention --------------------------------------------------------------------------------------

struct AttnCase {
  const char* name;
  int64_t start, tokens, window, ring;
  int kind;  // 0 sliding, 1 all visible compressed (HCA), 2 selected compressed (CSA)
};

void PrintTo(const AttnCase& c, std::ostream* os) { *os << c.name; }

class Attention : public CpuOps, public testing::WithParamInterface<AttnCase> {};

TEST_P(Attention, MatchesSinkSoftmaxOverWindowAndCompressedEntries) {
  const AttnCase c = GetParam();
  const int64_t heads = 3, D = 16, slots = 2, slot = 1, rate = 4, max_entries = 16, topk = 3;
  const int64_t P = c.start + c.tokens;  // positions 0..P-1 exist
  Vec hist = rnd(P * D, rng);            // kv of every position
  Vec ring(slots * c.ring * D, NAN);
  for (int64_t p = std::max<int64_t>(0, c.start - c.ring); p < c.start; ++p) {
    std::copy(hist.begin() + p * D, hist.begin() + (p + 1) * D, ring.begin() + (slot * c.ring + p % c.ring) * D);
  }
  StateHolder comp(slots, rate, false, D, max_entries);
  for (float& v : comp.entries) v = rnd(1, rng)[0];
  BatchBuilder b;
  b.add({static_cast<int32_t>(slot), static_cast<int32_t>(c.start), IVec(c.tokens, 0), true});
  b.pad_to(c.tokens + 1);
  const int64_t T = b.num_tokens();
  Vec kv = rows_of(hist, D, c.start, P);
  kv.resize(T * D, 1000.0f);
  Vec q = rnd(T * heads * D, rng, 0.1f, 2.0f), sinks = rnd(heads, rng, 0.1f, 2.0f), out(T * heads * D, NAN);
  IVec selected(T * topk, -1);
  const IVec& pos = b.positions();
  for (int64_t t = 0; t < c.tokens; ++t) {  // a few visible entries (some rows keep -1 padding)
    const int64_t visible = (pos[t] + 1) / rate;
    for (int64_t i = 0; i < std::min<int64_t>(topk, visible); ++i) {
      selected[t * topk + i] = static_cast<int32_t>(visible - 1 - i);
    }
    if (visible >= 2) selected[t * topk + topk - 1] = -1;
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  ops::attention(ctx, f32(out, {T, heads, D}), f32(q, {T, heads, D}), f32(kv, {T, D}), paged(ring, {slots, c.ring, D}),
                 c.kind == 0 ? nullptr : &comp.st, c.kind == 2 ? i32(selected, {T, topk}) : Tensor(),
                 f32(sinks, {heads}), b.meta(), c.window, scale);
  DVec want(T * heads * D, 0.0);
  for (int64_t t = 0; t < c.tokens; ++t) {
    std::vector<const float*> keys;
    for (int64_t p = std::max<int64_t>(0, pos[t] - c.window + 1); p <= pos[t]; ++p) keys.push_back(&hist[p * D]);
    if (c.kind == 1) {
      for (int64_t s = 0; s < (pos[t] + 1) / rate; ++s) keys.push_back(comp.entry(slot, s));
    } else if (c.kind == 2) {
      for (int64_t i = 0; i < topk; ++i) {
        if (selected[t * topk + i] >= 0) keys.push_back(comp.entry(slot, selected[t * topk + i]));
      }
    }
    for (int64_t h = 0; h < heads; ++h) {
      DVec logit;
      double mx = sinks[h];
      for (const float* k : keys) {
        double d = 0;
        for (int64_t i = 0; i < D; ++i) d += static_cast<double>(q[(t * heads + h) * D + i]) * k[i];
        logit.push_back(d * scale);
        mx = std::max(mx, logit.back());
      }
      double denom = std::exp(sinks[h] - mx);
      for (double l : logit) denom += std::exp(l - mx);
      for (size_t k = 0; k < keys.size(); ++k) {
        const double p = std::exp(logit[k] - mx) / denom;
        for (int64_t i = 0; i < D; ++i) want[(t * heads + h) * D + i] += p * keys[k][i];
      }
    }
  }
  expect_close(out, want, 2e-6);  // padding row: zeros
}

INSTANTIATE_TEST_SUITE_P(
    CpuOps, Attention,
    testing::Values(AttnCase{"prefill_sliding", 0, 13, 5, 6, 0}, AttnCase{"prefill_hca", 0, 17, 4, 5, 1},
                    AttnCase{"prefill_csa", 0, 21, 6, 7, 2}, AttnCase{"decode_from_ring", 20, 1, 6, 7, 0},
                    AttnCase{"decode_hca", 33, 1, 5, 5, 1}, AttnCase{"chunk_after_ring_csa", 11, 4, 5, 9, 2},
                    AttnCase{"window_longer_than_history", 0, 3, 16, 16, 1}, AttnCase{"window_one", 5, 3, 1, 2, 0}),
    [](const testing::TestParamInfo<AttnCase>& i) { return std::string(i.param.name); });

TEST_F(CpuOps, AttentionSinkAbsorbsMass) {
  // One key with logit 0 and a sink of log(3): the output is v / (1 + 3).
  const int64_t D = 4;
  Vec q(D, 0.0f), kv = {1.0f, -2.0f, 3.0f, 0.5f}, ring(1 * 2 * D, 0.0f), sinks = {std::log(3.0f)}, out(D);
  BatchBuilder b;
  b.add({0, 0, {5}, true});
  ops::attention(ctx, f32(out, {1, 1, D}), f32(q, {1, 1, D}), f32(kv, {1, D}), paged(ring, {1, 2, D}), nullptr,
                 Tensor(), f32(sinks, {1}), b.meta(), 2, 0.5f);
  for (int64_t i = 0; i < D; ++i) EXPECT_NEAR(out[i], kv[i] / 4.0f, 1e-6);
}

TEST_F(CpuOps, KvRingStoreKeepsLastRingPositions) {
  const int64_t D = 3, ring = 4, slots = 2;
  Vec r(slots * ring * D, -7.0f);
  // Sequence in slot 1: positions 3..9 (only 6..9 are kept: the ring holds the last 4); sequence in slot 0:
  // positions 0..1; a padding row.
  BatchBuilder b;
  b.add({1, 3, IVec(7, 0), false});
  b.add({0, 0, IVec(2, 0), false});
  b.pad_to(10);
  Vec kv = rnd(10 * D, rng);
  ops::kv_ring_store(ctx, paged(r, {slots, ring, D}), f32(kv, {10, D}), b.meta());
  for (int64_t p = 6; p <= 9; ++p) {
    for (int64_t i = 0; i < D; ++i) EXPECT_EQ(r[(1 * ring + p % ring) * D + i], kv[(p - 3) * D + i]) << p;
  }
  for (int64_t p = 0; p <= 1; ++p) {
    for (int64_t i = 0; i < D; ++i) EXPECT_EQ(r[(0 * ring + p) * D + i], kv[(7 + p) * D + i]) << p;
  }
  for (int64_t s = 2; s < ring; ++s) {
    for (int64_t i = 0; i < D; ++i) EXPECT_EQ(r[(0 * ring + s) * D + i], -7.0f) << "slot 0 ring entry " << s;
  }
}

TEST_F(CpuOps, RingStoresAreSeparateStores) {
  const int64_t slots = 2;
  BatchBuilder b;
  b.add({1, 3, IVec(7, 0), false});
  b.add({0, 0, IVec(2, 0), false});
  b.pad_to(10);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{4, 3}, {8, 5}, {2, 16}};  // (ring rows, width)
  std::vector<Vec> together, separate, rows;
  for (const auto& [ring, D] : shapes) {
    together.push_back(rnd(slots * ring * D, rng));
    separate.push_back(together.back());
    rows.push_back(rnd(10 * D, rng));
  }
  std::vector<ops::RingStore> stores;
  for (size_t i = 0; i < shapes.size(); ++i) {
    const auto [ring, D] = shapes[i];
    stores.push_back({paged(together[i], {slots, ring, D}), f32(rows[i], {10, D})});
    ops::kv_ring_store(ctx, paged(separate[i], {slots, ring, D}), f32(rows[i], {10, D}), b.meta());
  }
  ops::ring_stores(ctx, stores, b.meta());
  for (size_t i = 0; i < shapes.size(); ++i) EXPECT_EQ(together[i], separate[i]) << "ring " << i;
  ops::ring_stores(ctx, {}, b.meta());  // nothing to store: a no-op
  Vec short_rows(4 * 3);
  expect_invalid(
      [&] {
        ops::ring_stores(ctx, {{paged(together[0], {slots, 4, 3}), f32(short_rows, {4, 3})}}, b.meta());
      },
      "ring_stores");
  expect_invalid(
      [&] {
        ops::ring_stores(ctx, {{paged(together[0], {slots, 4, 3}), f32(rows[1], {10, 5})}}, b.meta());
      },
      "ring_stores");
}

// ---- validation -------------------------------------------------------------------------------------

TEST_F(CpuOps, ValidationNamesTheOp) {
  Vec a(64, 1.0f), b(64, 1.0f), c(64, 1.0f);
  IVec ids(8, 0);
  uint16_t bf[16] = {};
  ExecContext& x = ctx;
  expect_invalid([&] { ops::linear(x, f32(c, {2, 3}), f32(a, {2, 4}), f32(b, {3, 5})); }, "linear");
  expect_invalid([&] { ops::linear(x, f32(c, {2, 4}), f32(a, {2, 4}), f32(b, {3, 4})); }, "linear");
  expect_invalid([&] { ops::linear(x, f32(c, {2, 3}), Tensor(bf, DType::BF16, {2, 4}), f32(b, {3, 4})); }, "linear");
  expect_invalid(
      [&] {
        ops::linear(x, f32(c, {2, 3}), f32(a, {2, 4}), Tensor(nullptr, DType::F32, {3, 4}));
      },
      "linear");
  expect_invalid(
      [&] {
        ops::linear(x, f32(c, {2, 3}), f32(a, {2, 4}), Tensor(b.data(), DType::F32, {3, 4}, Device::kCUDA));
      },
      "linear");
  expect_invalid([&] { ops::linear(x, f32(c, {2, 2}), f32(a, {2, 4}).slice(1, 0, 2), f32(b, {2, 2})); }, "linear");
  expect_invalid([&] { ops::grouped_linear(x, f32(c, {2, 4}), f32(a, {2, 6}), f32(b, {4, 3}), 4); }, "grouped_linear");
  expect_invalid([&] { ops::grouped_linear(x, f32(c, {2, 4}), f32(a, {2, 6}), f32(b, {4, 3}), 0); }, "grouped_linear");
  expect_invalid([&] { ops::embedding(x, f32(c, {2, 4}), f32(a, {8, 4}), f32(b, {2})); }, "embedding");
  expect_invalid([&] { ops::embedding(x, f32(c, {2, 4}), f32(a, {8, 3}), i32(ids, {2})); }, "embedding");
  expect_invalid([&] { ops::broadcast_streams(x, f32(c, {2, 4, 3}), f32(a, {2, 4})); }, "broadcast_streams");
  expect_invalid([&] { ops::rms_norm(x, f32(c, {2, 4}), f32(a, {2, 4}), f32(b, {3}), 1e-6f); }, "rms_norm");
  expect_invalid([&] { ops::rms_norm(x, f32(c, {2, 3}), f32(a, {2, 4}), Tensor(), 1e-6f); }, "rms_norm");
  expect_invalid([&] { ops::add(x, f32(c, {4}), f32(a, {4}), f32(b, {5})); }, "add");
  expect_invalid([&] { ops::copy(x, f32(c, {4}), f32(a, {5})); }, "copy");
  expect_invalid([&] { ops::copy(x, i32(ids, {4}), f32(a, {4})); }, "copy");
  expect_invalid([&] { ops::gather_rows(x, f32(c, {2, 4}), f32(a, {8, 3}), i32(ids, {2})); }, "gather_rows");
  expect_invalid([&] { ops::swiglu(x, f32(c, {4}), f32(a, {4}), f32(b, {3}), 1.0f); }, "swiglu");
  expect_invalid([&] { ops::argmax(x, i32(ids, {3}), f32(a, {2, 4})); }, "argmax");
  expect_invalid([&] { ops::argmax(x, i32(ids, {2}), f32(a, {8})); }, "argmax");
  expect_invalid([&] { ops::argmax(x, f32(c, {2}), f32(a, {2, 4})); }, "argmax");

  RopeHolder rope(rope_inv_freq(RopeParams{}, 4), 1.0f);
  expect_invalid([&] { ops::rope(x, f32(a, {2, 1, 3}), i32(ids, {2}), rope.table, false); }, "rope");
  expect_invalid([&] { ops::rope(x, f32(a, {8, 1, 4}), i32(ids, {2}), rope.table, false); }, "rope");
  expect_invalid([&] { ops::rope(x, f32(a, {2, 4}), i32(ids, {2}), rope.table, false); }, "rope");
  RopeTable odd = rope.table;
  odd.rope_dim = 3;
  expect_invalid([&] { ops::rope(x, f32(a, {2, 1, 8}), i32(ids, {2}), odd, false); }, "rope");

  const ModelConfig cfg = hc_config(4);
  Vec fn(24 * 8, 0.1f), big(4 * 4 * 8, 1.0f);
  expect_invalid(
      [&] {
        ops::hc_pre(x, f32(c, {1, 2}), f32(a, {1, 4}), f32(b, {1, 4, 4}), f32(big, {1, 3, 2}), f32(fn, {24, 8}),
                    f32(a, {24}), f32(b, {3}), ops::mhc_params(cfg));
      },
      "hc_pre");
  expect_invalid(
      [&] {
        ops::hc_pre(x, f32(c, {1, 2}), f32(a, {1, 4}), f32(b, {1, 4, 4}), f32(big, {1, 4, 2}), f32(fn, {24, 8}),
                    f32(a, {24}), f32(b, {2}), ops::mhc_params(cfg));
      },
      "hc_pre");
  expect_invalid(
      [&] {
        ops::hc_post(x, f32(big, {1, 4, 2}), f32(a, {1, 2}), f32(big, {1, 4, 2}), f32(b, {1, 4}), f32(c, {1, 4, 4}));
      },
      "hc_post");  // out aliases x
  expect_invalid(
      [&] {
        ops::hc_post(x, f32(c, {1, 4, 2}), f32(a, {1, 3}), f32(big, {1, 4, 2}), f32(b, {1, 4}), f32(c, {1, 4, 4}));
      },
      "hc_post");
  expect_invalid(
      [&] {
        ops::hc_head(x, f32(c, {1, 2}), f32(big, {1, 4, 2}), f32(fn, {3, 8}), f32(a, {4}), f32(b, {1}),
                     ops::mhc_params(cfg));
      },
      "hc_head");

  const ModelConfig moe = moe_config(8, 2, ScoringFunc::kSigmoid, true, 1.0);
  // More experts chosen than the logits have (the op reads E and k from the tensors, not from a config).
  expect_invalid(
      [&] {
        ops::moe_route(x, f32(a, {2, 2}), i32(ids, {2, 2}), f32(b, {2, 1}), Tensor(), Tensor(), i32(ids, {2}),
                       ops::route_params(moe));
      },
      "moe_route");
  expect_invalid(
      [&] {
        ops::moe_route(x, f32(a, {2, 3}), i32(ids, {2, 2}), f32(b, {2, 8}), Tensor(), Tensor(), i32(ids, {2}),
                       ops::route_params(moe));
      },
      "moe_route");
  expect_invalid(
      [&] {
        ops::moe_route(x, f32(a, {2, 2}), i32(ids, {2, 2}), f32(b, {2, 8}), f32(c, {8}), f32(c, {8, 2}), i32(ids, {2}),
                       ops::route_params(moe));
      },
      "moe_route");  // tid2eid must be I32
  expect_invalid(
      [&] {
        ops::moe_experts(x, f32(c, {2, 4}), f32(a, {2, 4}), i32(ids, {2, 1}), f32(b, {2, 1}), f32(big, {2, 3, 4}),
                         f32(big, {2, 4, 2}), f32(big, {2, 3, 4}), 1.0f);
      },
      "moe_experts");

  StateHolder st(1, 4, true, 4, 4);
  BatchBuilder bb;
  bb.add({0, 0, IVec(2, 0), true});
  const BatchMeta meta = bb.meta();
  expect_invalid(
      [&] {
        ops::compressor_emit(x, st.st, f32(a, {2, 4}), f32(b, {2, 8}), f32(c, {4, 8}), f32(c, {4}), rope.table, meta,
                             1e-6f);
      },
      "compressor_emit");  // width 8 expected
  expect_invalid(
      [&] {
        ops::compressor_emit(x, st.st, f32(a, {2, 8}), f32(b, {2, 8}), f32(c, {3, 8}), f32(c, {4}), rope.table, meta,
                             1e-6f);
      },
      "compressor_emit");  // ape rows != rate
  expect_invalid([&] { ops::compressor_store(x, st.st, f32(a, {2, 4}), f32(b, {2, 4}), meta); }, "compressor_store");
  BatchMeta bad_meta = meta;
  bad_meta.pos = f32(a, {2});
  expect_invalid(
      [&] {
        ops::compressor_store(x, st.st, f32(a, {2, 8}), f32(b, {2, 8}), bad_meta);
      },
      "compressor_store");
  bad_meta = meta;
  bad_meta.num_tokens = 5;
  expect_invalid([&] { ops::kv_ring_store(x, paged(a, {2, 2, 4}), f32(b, {2, 4}), bad_meta); }, "kv_ring_store");
  expect_invalid([&] { ops::kv_ring_store(x, paged(a, {1, 2, 4}), f32(b, {2, 3}), meta); }, "kv_ring_store");
  expect_invalid(
      [&] {
        ops::indexer_topk(x, i32(ids, {2, 2}), f32(a, {2, 2, 3}), f32(b, {2, 2}), st.st, meta, 1.0f);
      },
      "indexer_topk");  // q dim != key dim
  expect_invalid(
      [&] {
        ops::indexer_topk(x, f32(c, {2, 2}), f32(a, {2, 2, 4}), f32(b, {2, 2}), st.st, meta, 1.0f);
      },
      "indexer_topk");
  expect_invalid(
      [&] {
        ops::attention(x, f32(c, {2, 1, 4}), f32(a, {2, 1, 4}), f32(b, {2, 4}), paged(big, {1, 2, 4}), nullptr,
                       Tensor(), f32(c, {1}), meta, 3, 1.0f);
      },
      "attention");  // ring smaller than the window
  expect_invalid(
      [&] {
        ops::attention(x, f32(c, {2, 1, 4}), f32(a, {2, 1, 4}), f32(b, {2, 3}), paged(big, {1, 4, 4}), nullptr,
                       Tensor(), f32(c, {1}), meta, 3, 1.0f);
      },
      "attention");
  expect_invalid(
      [&] {
        ops::attention(x, f32(c, {2, 2, 4}), f32(a, {2, 2, 4}), f32(b, {2, 4}), paged(big, {1, 4, 4}), nullptr,
                       Tensor(), f32(c, {1}), meta, 3, 1.0f);
      },
      "attention");  // one sink per head
}

// Mismatches the kernels would otherwise turn into out-of-bounds reads or writes.
TEST_F(CpuOps, ValidationCatchesOutOfBoundsShapes) {
  Vec a(256, 1.0f), b(256, 1.0f), c(256, 1.0f), d(256, 1.0f);
  IVec ids(64, 0);
  uint16_t bf[64] = {};
  ExecContext& x = ctx;
  const ModelConfig cfg = hc_config(4);
  // hc_head: base [n], scale [1]; hc_post: post [T, n], comb [T, n, n].
  expect_invalid(
      [&] {
        ops::hc_head(x, f32(c, {1, 2}), f32(d, {1, 4, 2}), f32(a, {4, 8}), f32(b, {2}), f32(b, {1}),
                     ops::mhc_params(cfg));
      },
      "hc_head");
  expect_invalid(
      [&] {
        ops::hc_head(x, f32(c, {1, 2}), f32(d, {1, 4, 2}), f32(a, {4, 8}), f32(b, {4}), f32(b, {0}),
                     ops::mhc_params(cfg));
      },
      "hc_head");
  expect_invalid(
      [&] {
        ops::hc_post(x, f32(c, {2, 4, 2}), f32(a, {2, 2}), f32(d, {2, 4, 2}), f32(b, {1, 4}), f32(b, {2, 4, 4}));
      },
      "hc_post");
  expect_invalid(
      [&] {
        ops::hc_post(x, f32(c, {2, 4, 2}), f32(a, {2, 2}), f32(d, {2, 4, 2}), f32(b, {2, 4}), f32(a, {2, 4, 3}));
      },
      "hc_post");
  // moe_route: bias [E], tid2eid [V, k], weights / indices [T, k].
  const ModelConfig moe = moe_config(8, 2, ScoringFunc::kSigmoid, true, 1.0);
  expect_invalid(
      [&] {
        ops::moe_route(x, f32(a, {2, 2}), i32(ids, {2, 2}), f32(b, {2, 8}), f32(c, {7}), Tensor(), i32(ids, {2}),
                       ops::route_params(moe));
      },
      "moe_route");
  expect_invalid(
      [&] {
        ops::moe_route(x, f32(a, {2, 2}), i32(ids, {2, 2}), f32(b, {2, 8}), Tensor(), i32(ids, {10, 3}), i32(ids, {2}),
                       ops::route_params(moe));
      },
      "moe_route");
  expect_invalid(
      [&] {
        ops::moe_route(x, f32(a, {1, 2}), i32(ids, {2, 2}), f32(b, {2, 8}), Tensor(), Tensor(), i32(ids, {2}),
                       ops::route_params(moe));
      },
      "moe_route");
  expect_invalid(
      [&] {
        ops::moe_route(x, f32(a, {2, 2}), i32(ids, {1, 2}), f32(b, {2, 8}), Tensor(), Tensor(), i32(ids, {2}),
                       ops::route_params(moe));
      },
      "moe_route");
  // moe_experts: w3 like w1, experts agree, indices / weights [T, k], out like x, float weights.
  auto experts = [&](std::vector<int64_t> out, std::vector<int64_t> idx, std::vector<int64_t> wts,
                     std::vector<int64_t> w3) {
    ops::moe_experts(x, f32(c, out), f32(a, {2, 4}), i32(ids, idx), f32(b, wts), f32(d, {2, 3, 4}), f32(d, {2, 4, 3}),
                     f32(d, w3), 1.0f);
  };
  experts({2, 4}, {2, 1}, {2, 1}, {2, 3, 4});  // valid
  expect_invalid([&] { experts({2, 4}, {2, 1}, {2, 1}, {2, 2, 4}); }, "moe_experts");
  expect_invalid([&] { experts({2, 4}, {2, 1}, {2, 1}, {3, 3, 4}); }, "moe_experts");
  expect_invalid([&] { experts({2, 4}, {1, 1}, {2, 1}, {2, 3, 4}); }, "moe_experts");
  expect_invalid([&] { experts({2, 4}, {2, 1}, {2, 2}, {2, 3, 4}); }, "moe_experts");
  expect_invalid([&] { experts({2, 3}, {2, 1}, {2, 1}, {2, 3, 4}); }, "moe_experts");
  expect_invalid(
      [&] {
        ops::moe_experts(x, f32(c, {2, 4}), f32(a, {2, 4}), i32(ids, {2, 1}), f32(b, {2, 1}),
                         Tensor(bf, DType::BF16, {2, 3, 4}), f32(d, {2, 4, 3}), f32(d, {2, 3, 4}), 1.0f);
      },
      "moe_experts");
  // With a shared expert (the last of w1/w2/w3): at least one routed expert besides it, and routed indices
  // below it (the CPU reads the indices on the host and checks them).
  expect_invalid(
      [&] {
        ops::moe_experts(x, f32(c, {2, 4}), f32(a, {2, 4}), i32(ids, {2, 1}), f32(b, {2, 1}), f32(d, {1, 3, 4}),
                         f32(d, {1, 4, 3}), f32(d, {1, 3, 4}), 1.0f, /*shared_expert=*/true);
      },
      "moe_experts");
  IVec shared_idx = {0, 1};
  expect_invalid(
      [&] {
        ops::moe_experts(x, f32(c, {2, 4}), f32(a, {2, 4}), i32(shared_idx, {2, 1}), f32(b, {2, 1}), f32(d, {2, 3, 4}),
                         f32(d, {2, 4, 3}), f32(d, {2, 3, 4}), 1.0f, /*shared_expert=*/true);
      },
      "moe_experts");
  ops::moe_experts(x, f32(c, {2, 4}), f32(a, {2, 4}), i32(shared_idx, {2, 1}), f32(b, {2, 1}), f32(d, {2, 3, 4}),
                   f32(d, {2, 4, 3}), f32(d, {2, 3, 4}), 1.0f);  // valid without the shared expert

  // Stateful ops: the batch rows must cover meta.num_tokens.
  StateHolder st(1, 2, false, 4, 4);
  BatchBuilder bb;
  bb.add({0, 0, IVec(2, 0), true});
  const BatchMeta meta = bb.meta();
  RopeHolder rope(rope_inv_freq(RopeParams{}, 2), 1.0f);
  expect_invalid(
      [&] {
        ops::compressor_emit(x, st.st, f32(a, {1, 4}), f32(b, {1, 4}), f32(c, {2, 4}), f32(d, {4}), rope.table, meta,
                             1e-6f);
      },
      "compressor_emit");
  expect_invalid(
      [&] {
        ops::compressor_emit(x, st.st, f32(a, {2, 4}), f32(b, {2, 4}), f32(c, {2, 4}), Tensor(bf, DType::BF16, {4}),
                             rope.table, meta, 1e-6f);
      },
      "compressor_emit");
  expect_invalid([&] { ops::compressor_store(x, st.st, f32(a, {1, 4}), f32(b, {2, 4}), meta); }, "compressor_store");
  expect_invalid([&] { ops::compressor_store(x, st.st, f32(a, {2, 4}), f32(b, {1, 4}), meta); }, "compressor_store");
  expect_invalid([&] { ops::kv_ring_store(x, paged(c, {1, 4, 4}), f32(a, {1, 4}), meta); }, "kv_ring_store");
  expect_invalid(
      [&] {
        ops::indexer_topk(x, i32(ids, {2, 2}), f32(a, {1, 2, 4}), f32(b, {2, 2}), st.st, meta, 1.0f);
      },
      "indexer_topk");
  expect_invalid(
      [&] {
        ops::indexer_topk(x, i32(ids, {2, 2}), f32(a, {2, 2, 4}), f32(b, {1, 2}), st.st, meta, 1.0f);
      },
      "indexer_topk");
  expect_invalid(
      [&] {
        ops::indexer_topk(x, i32(ids, {1, 2}), f32(a, {2, 2, 4}), f32(b, {2, 2}), st.st, meta, 1.0f);
      },
      "indexer_topk");
  expect_invalid(
      [&] {
        ops::attention(x, f32(c, {1, 1, 4}), f32(a, {1, 1, 4}), f32(b, {1, 4}), paged(d, {1, 4, 4}), nullptr, Tensor(),
                       f32(c, {1}), meta, 3, 1.0f);
      },
      "attention");
  expect_invalid(
      [&] {
        ops::attention(x, f32(c, {2, 1, 4}), f32(a, {2, 1, 4}), f32(b, {2, 4}), paged(d, {1, 4, 4}), &st.st,
                       i32(ids, {1, 2}), f32(c, {1}), meta, 3, 1.0f);
      },
      "attention");
  StateHolder wide(1, 2, true, 4, 4);  // entries of another width than the heads
  expect_invalid(
      [&] {
        ops::attention(x, f32(c, {2, 1, 8}), f32(a, {2, 1, 8}), f32(b, {2, 8}), paged(d, {1, 4, 8}), &wide.st, Tensor(),
                       f32(c, {1}), meta, 3, 1.0f);
      },
      "attention");
}

}  // namespace
}  // namespace dsv4
