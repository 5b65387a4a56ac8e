// Every CUDA op against its CPU reference (backend/cpu) on random inputs, including odd sizes and T = 1.
//
// Device inputs are stored in the dtype the model uses (bf16 activations and weights, f32 where the
// model keeps f32); the CPU reference runs in f32 on exactly the values the device holds (bf16-rounded),
// so the comparison measures the device's arithmetic and output rounding only. Outputs are poisoned
// (NaN / 0x7b7b7b7b) before every run and every element is checked to be written; stateful ops use
// several slots, a prefill chunk, a decode row and padding rows (slot -1) in one batch.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>

#include "backend/cpu/cpu_ops.h"
#include "backend/cuda/attention_split.h"
#include "cuda_test_util.h"
#include "dsv4/ops/indexer_workspace.h"
#include "dsv4/ops/rope_table.h"

namespace dsv4 {
namespace {

using test::check_selection;
using test::DevTensor;
using test::download;
using test::poison;
using test::random_vec;
using test::rng_for;
using test::RopePair;
using test::TestBatch;
using test::upload;

test::DeviceEnv& env() { return test::shared_env<256>(); }

ExecContext cpu_ctx() { return ExecContext{}; }

// ---- dense -------------------------------------------------------------------------------------------

// The fallback GEMM kernel (shapes cuBLASLt has no algorithm for) on the shapes of the linear parity cases
// (cuda_op_parity_test.cu runs ops::linear itself).
void check_linear_fallback(int64_t T, int64_t K, int64_t N, DType in_dtype, DType out_dtype, int variant) {
  auto rng = rng_for("linear", variant);
  std::vector<float> x = test::as_stored(random_vec(rng, T * K), in_dtype);
  std::vector<float> w = test::as_stored(random_vec(rng, N * K, -0.5f, 0.5f), in_dtype);
  std::vector<float> ref(T * N);
  ExecContext cpu = cpu_ctx();
  ops::linear(cpu, test::host_view(ref, {T, N}), test::host_view(x, {T, K}), test::host_view(w, {N, K}));
  DevTensor dx = upload(x, in_dtype, {T, K}), dw = upload(w, in_dtype, {N, K}), dout(out_dtype, {T, N});
  const double tol = out_dtype == DType::BF16 ? 1e-2 : 1e-4;
  cuda::GemmArgs g;
  g.x = dx.t.data(), g.w = dw.t.data(), g.out = dout.t.data();
  g.x_type = in_dtype, g.w_type = in_dtype, g.out_type = out_dtype;
  g.M = T, g.N = N, g.K = K, g.ldx = K, g.ldw = K, g.ldo = N;
  poison(dout.t);
  cuda::gemm_fallback(env().ctx, g);
  env().sync();
  DSV4_EXPECT_CLOSE(
      download(dout.t), ref, tol,
      str_cat("gemm_fallback T=", T, " K=", K, " N=", N, " ", dtype_name(in_dtype), "->", dtype_name(out_dtype)));
}

TEST(CudaOps, LinearFallbackKernel) {
  DSV4_REQUIRE_GPU();
  int v = 0;
  for (DType out : {DType::BF16, DType::F32}) {
    check_linear_fallback(1, 64, 32, DType::BF16, out, v++);
    check_linear_fallback(7, 96, 320, DType::BF16, out, v++);
    check_linear_fallback(33, 37, 19, DType::BF16, out, v++);  // odd: unaligned rows
    check_linear_fallback(130, 256, 520, DType::BF16, out, v++);
  }
  check_linear_fallback(5, 48, 24, DType::F32, DType::F32, v++);
}

// ---- rope and mHC -----------------------------------------------------------------------------------

// rms_norm_rope against the CPU's rms_norm then rope, and against the two CUDA ops (the fused kernel rounds the
// norm's output as the unfused path stores it): the fused kernels (bf16 rows of 512-1,024: a warp a row; up to 256:
// several rows a block; else a block a row), and the fallbacks (odd dim, rows > 8192).
TEST(CudaOps, RmsNormRope) {
  DSV4_REQUIRE_GPU();
  struct Case {
    int64_t T, heads, dim, rope_dim;
    bool weight;
    DType dtype;
  };
  int v = 0;
  for (const Case c : {Case{1, 64, 512, 64, false, DType::BF16}, Case{3, 1, 512, 64, true, DType::BF16},
                       Case{5, 3, 32, 8, true, DType::F32}, Case{2, 2, 37, 6, false, DType::BF16},
                       Case{2, 5, 100, 100, true, DType::BF16}, Case{2, 2, 9000, 64, true, DType::F32},
                       Case{4, 7, 64, 2, false, DType::F32}, Case{700, 4, 64, 16, true, DType::BF16},
                       Case{33, 4, 128, 32, false, DType::F32}, Case{9, 3, 256, 64, true, DType::BF16},
                       Case{6, 5, 18, 4, true, DType::F32}, Case{300, 64, 512, 64, false, DType::BF16},
                       Case{5, 3, 768, 64, true, DType::BF16}, Case{4, 2, 1024, 32, true, DType::BF16}}) {
    auto rng = rng_for("rms_norm_rope", v++);
    std::vector<float> inv = rope_inv_freq(test::v4_yarn(), c.rope_dim);
    std::vector<int32_t> pos(c.T);
    for (auto& x : pos) x = static_cast<int32_t>(rng() % 70000);
    std::vector<float> x = test::as_stored(random_vec(rng, c.T * c.heads * c.dim, -2, 2), c.dtype);
    std::vector<float> w = test::as_stored(random_vec(rng, c.dim, 0.5f, 1.5f), c.dtype);
    std::vector<float> ref = x;
    ExecContext cpu = cpu_ctx();
    RopeTable cpu_table{test::host_view(inv, {c.rope_dim / 2}), 1.0f, c.rope_dim};
    ops::rms_norm_rope(cpu, test::host_view(ref, {c.T, c.heads, c.dim}),
                       c.weight ? test::host_view(w, {c.dim}) : Tensor(), 1e-6f, test::host_view_i32(pos, {c.T}),
                       cpu_table);
    DevTensor dinv = upload(inv, DType::F32, {c.rope_dim / 2}), dpos = test::upload_i32(pos, {c.T});
    DevTensor dw = upload(w, c.dtype, {c.dim});
    DevTensor fused = upload(x, c.dtype, {c.T, c.heads, c.dim}), unfused = upload(x, c.dtype, {c.T, c.heads, c.dim});
    RopeTable gpu_table{dinv.t, 1.0f, c.rope_dim};
    const Tensor wt = c.weight ? dw.t : Tensor();
    ops::rms_norm_rope(env().ctx, fused.t, wt, 1e-6f, dpos.t, gpu_table);
    ops::rms_norm(env().ctx, unfused.t, unfused.t, wt, 1e-6f);
    ops::rope(env().ctx, unfused.t, dpos.t, gpu_table, false);
    env().sync();
    const std::string name = str_cat("rms_norm_rope T=", c.T, " heads=", c.heads, " dim=", c.dim, " R=", c.rope_dim,
                                     c.weight ? " weighted " : " ", dtype_name(c.dtype));
    DSV4_EXPECT_CLOSE(download(fused.t), ref, c.dtype == DType::BF16 ? 1e-2 : 1e-5, name);
    DSV4_EXPECT_CLOSE(download(fused.t), download(unfused.t), c.dtype == DType::BF16 ? 4e-3 : 1e-6,
                      name + " vs the two CUDA ops");
  }
}

// rms_norm_rope of two parts (a layer's query heads and its kv row: one launch of the row kernel) against the CPU and
// bit-identical to each part on its own; the narrow rows (dim <= 256) and mixed dtypes launch a part at a time.
TEST(CudaOps, RmsNormRopeTwoParts) {
  DSV4_REQUIRE_GPU();
  struct Case {
    int64_t T, heads_a, heads_b, dim, rope_dim;
    bool weight_a, weight_b;
    DType dtype;
  };
  int v = 0;
  for (const Case c :
       {Case{1, 64, 1, 512, 64, false, true, DType::BF16}, Case{3, 16, 1, 512, 64, false, true, DType::BF16},
        Case{5, 3, 2, 320, 32, true, true, DType::F32}, Case{2, 1, 4, 512, 64, true, false, DType::BF16},
        Case{4, 4, 1, 64, 16, false, true, DType::BF16}, Case{130, 64, 1, 512, 64, false, true, DType::BF16}}) {
    auto rng = rng_for("rms_norm_rope_parts", v++);
    std::vector<float> inv = rope_inv_freq(test::v4_yarn(), c.rope_dim);
    std::vector<int32_t> pos(c.T);
    for (auto& x : pos) x = static_cast<int32_t>(rng() % 70000);
    const std::vector<int64_t> shape_a{c.T, c.heads_a, c.dim}, shape_b{c.T, c.heads_b, c.dim};
    std::vector<float> xa = test::as_stored(random_vec(rng, c.T * c.heads_a * c.dim, -2, 2), c.dtype);
    std::vector<float> xb = test::as_stored(random_vec(rng, c.T * c.heads_b * c.dim, -2, 2), c.dtype);
    std::vector<float> wa = test::as_stored(random_vec(rng, c.dim, 0.5f, 1.5f), c.dtype);
    std::vector<float> wb = test::as_stored(random_vec(rng, c.dim, 0.5f, 1.5f), c.dtype);
    std::vector<float> ref_a = xa, ref_b = xb;
    ExecContext cpu = cpu_ctx();
    RopeTable cpu_table{test::host_view(inv, {c.rope_dim / 2}), 1.0f, c.rope_dim};
    const NormRopeHeads cpu_parts[] = {
        {test::host_view(ref_a, shape_a), c.weight_a ? test::host_view(wa, {c.dim}) : Tensor()},
        {test::host_view(ref_b, shape_b), c.weight_b ? test::host_view(wb, {c.dim}) : Tensor()}};
    ops::rms_norm_rope(cpu, cpu_parts, 1e-6f, test::host_view_i32(pos, {c.T}), cpu_table);
    DevTensor dinv = upload(inv, DType::F32, {c.rope_dim / 2}), dpos = test::upload_i32(pos, {c.T});
    DevTensor dwa = upload(wa, c.dtype, {c.dim}), dwb = upload(wb, c.dtype, {c.dim});
    DevTensor both_a = upload(xa, c.dtype, shape_a), both_b = upload(xb, c.dtype, shape_b);
    DevTensor alone_a = upload(xa, c.dtype, shape_a), alone_b = upload(xb, c.dtype, shape_b);
    RopeTable gpu_table{dinv.t, 1.0f, c.rope_dim};
    const Tensor wta = c.weight_a ? dwa.t : Tensor(), wtb = c.weight_b ? dwb.t : Tensor();
    const NormRopeHeads gpu_parts[] = {{both_a.t, wta}, {both_b.t, wtb}};
    ops::rms_norm_rope(env().ctx, gpu_parts, 1e-6f, dpos.t, gpu_table);
    ops::rms_norm_rope(env().ctx, alone_a.t, wta, 1e-6f, dpos.t, gpu_table);
    ops::rms_norm_rope(env().ctx, alone_b.t, wtb, 1e-6f, dpos.t, gpu_table);
    env().sync();
    const std::string name = str_cat("rms_norm_rope parts T=", c.T, " heads=", c.heads_a, "+", c.heads_b,
                                     " dim=", c.dim, " ", dtype_name(c.dtype));
    const double tol = c.dtype == DType::BF16 ? 1e-2 : 1e-5;
    DSV4_EXPECT_CLOSE(download(both_a.t), ref_a, tol, name + " part a");
    DSV4_EXPECT_CLOSE(download(both_b.t), ref_b, tol, name + " part b");
    EXPECT_EQ(download(both_a.t), download(alone_a.t)) << name << ": part a differs from its own launch";
    EXPECT_EQ(download(both_b.t), download(alone_b.t)) << name << ": part b differs from its own launch";
  }
  // Parts of different token counts are rejected before any launch.
  DevTensor a = upload(std::vector<float>(2 * 512, 1.0f), DType::BF16, {2, 1, 512});
  DevTensor b = upload(std::vector<float>(3 * 512, 1.0f), DType::BF16, {3, 1, 512});
  DevTensor dinv = upload(rope_inv_freq(test::v4_yarn(), 64), DType::F32, {32});
  DevTensor dpos = test::upload_i32(std::vector<int32_t>{1, 2, 3}, {3});
  const NormRopeHeads bad[] = {{a.t, Tensor()}, {b.t, Tensor()}};
  EXPECT_THROW(ops::rms_norm_rope(env().ctx, bad, 1e-6f, dpos.t, RopeTable{dinv.t, 1.0f, 64}), Error);
}

struct HcParams {
  std::vector<float> fn, base, scale;
};
HcParams random_hc(std::mt19937& rng, int64_t rows, int64_t width, int64_t nscale) {
  HcParams p;
  const float a = 3.0f / std::sqrt(static_cast<float>(width));
  p.fn = random_vec(rng, rows * width, -a, a);
  p.base = random_vec(rng, rows, -1, 1);
  p.scale = random_vec(rng, nscale, 0.5f, 2.0f);
  return p;
}

// hc_pre and hc_head of T tokens against the CPU, activations in `act`; the device runs twice and must
// give bit-identical results (fixed reduction order: graph replay is compared with memcmp). with_norm: both with
// the RMSNorm that follows them fused in (ops::HcNorm; on CUDA one kernel up to 64 tokens and rows of 8192).
void check_hc(int64_t T, int64_t H, DType act, int variant, bool with_norm = false) {
  ModelConfig cfg;
  auto rng = rng_for("hc_pre", variant);
  const int64_t n = cfg.hc_mult, rows = cfg.hc_mix_dim();
  std::vector<float> x = test::as_stored(random_vec(rng, T * n * H, -2, 2), act);
  HcParams p = random_hc(rng, rows, n * H, 3);
  HcParams ph = random_hc(rng, n, n * H, 1);
  std::vector<float> norm_w = random_vec(rng, H, 0.5f, 1.5f), head_norm_w = random_vec(rng, H, 0.5f, 1.5f);
  const float norm_eps = 1e-6f;
  auto norm_of = [&](Tensor w) { return with_norm ? ops::HcNorm{w, norm_eps} : ops::HcNorm{}; };
  std::vector<float> collapsed(T * H), post(T * n), comb(T * n * n), head(T * H);
  ExecContext cpu = cpu_ctx();
  ops::hc_pre(cpu, test::host_view(collapsed, {T, H}), test::host_view(post, {T, n}), test::host_view(comb, {T, n, n}),
              test::host_view(x, {T, n, H}), test::host_view(p.fn, {rows, n * H}), test::host_view(p.base, {rows}),
              test::host_view(p.scale, {3}), ops::mhc_params(cfg), norm_of(test::host_view(norm_w, {H})));
  ops::hc_head(cpu, test::host_view(head, {T, H}), test::host_view(x, {T, n, H}), test::host_view(ph.fn, {n, n * H}),
               test::host_view(ph.base, {n}), test::host_view(ph.scale, {1}), ops::mhc_params(cfg),
               norm_of(test::host_view(head_norm_w, {H})));
  DevTensor dx = upload(x, act, {T, n, H});
  DevTensor dfn = upload(p.fn, DType::F32, {rows, n * H}), dbase = upload(p.base, DType::F32, {rows});
  DevTensor dscale = upload(p.scale, DType::F32, {3});
  DevTensor hfn = upload(ph.fn, DType::F32, {n, n * H}), hbase = upload(ph.base, DType::F32, {n});
  DevTensor hscale = upload(ph.scale, DType::F32, {1});
  DevTensor dcol(act, {T, H}), dpost(DType::F32, {T, n}), dcomb(DType::F32, {T, n, n});
  DevTensor dhead(act, {T, H});
  DevTensor dnorm = upload(norm_w, DType::F32, {H}), dhead_norm = upload(head_norm_w, DType::F32, {H});
  std::vector<std::vector<float>> first;
  for (int run = 0; run < 2; ++run) {
    for (const Tensor* t : {&dcol.t, &dpost.t, &dcomb.t, &dhead.t}) poison(*t);
    ops::hc_pre(env().ctx, dcol.t, dpost.t, dcomb.t, dx.t, dfn.t, dbase.t, dscale.t, ops::mhc_params(cfg),
                norm_of(dnorm.t));
    ops::hc_head(env().ctx, dhead.t, dx.t, hfn.t, hbase.t, hscale.t, ops::mhc_params(cfg), norm_of(dhead_norm.t));
    env().sync();
    std::vector<std::vector<float>> got = {download(dcol.t), download(dpost.t), download(dcomb.t), download(dhead.t)};
    const std::string tag = str_cat(" T=", T, " H=", H, " ", dtype_name(act), with_norm ? " +norm" : "");
    if (run == 1) {
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(std::memcmp(got[i].data(), first[i].data(), got[i].size() * sizeof(float)), 0)
            << "hc_pre/hc_head output " << i << " differs between two runs" << tag;
      }
      continue;
    }
    const double tol = act == DType::BF16 ? 1e-2 : 1e-4;
    DSV4_EXPECT_CLOSE(got[0], collapsed, tol, "hc_pre collapsed" + tag);
    DSV4_EXPECT_CLOSE(got[1], post, 1e-4, "hc_pre post" + tag);
    DSV4_EXPECT_CLOSE(got[2], comb, 1e-4, "hc_pre comb (Sinkhorn)" + tag);
    DSV4_EXPECT_CLOSE(got[3], head, tol, "hc_head" + tag);
    first = std::move(got);
  }
}

TEST(CudaOps, HcPreAndHead) {
  DSV4_REQUIRE_GPU();
  int v = 0;
  for (int64_t T : {int64_t{1}, int64_t{6}}) {
    for (int64_t H : {int64_t{64}, int64_t{50}, int64_t{1024}}) check_hc(T, H, DType::BF16, v++);
  }
  // Flash shapes (n = 4, H = 4096): decode batches of 1, 3 and 64 tokens, a small prefill; odd H.
  for (int64_t T : {int64_t{1}, int64_t{3}, int64_t{64}, int64_t{300}}) check_hc(T, 4096, DType::BF16, v++);
  check_hc(5, 1001, DType::BF16, v++);
  check_hc(3, 4096, DType::F32, v++);
  check_hc(9, 333, DType::F32, v++);
  // Prefill (T >= 65: the tiled mixing GEMM and the vectorised finish): the first prefill size, prefills of the Flash
  // shape with partial token tiles, f32 (a width that is a multiple of 4, not of 64; and H % 8 == 0), and odd widths
  // (element-wise tile loads, the per-token finish).
  check_hc(65, 4096, DType::BF16, v++);
  check_hc(1000, 4096, DType::BF16, v++);
  check_hc(4100, 4096, DType::BF16, v++);
  check_hc(700, 333, DType::F32, v++);
  check_hc(100, 1024, DType::F32, v++);
  check_hc(300, 1001, DType::BF16, v++);
  check_hc(129, 50, DType::BF16, v++);
  // Rows narrower than a block's pass (the vectorised finish's blocks of 32, 64 and 96 threads): the tiny model's
  // H = 256, f32 at H = 768, H = 1040.
  check_hc(300, 256, DType::BF16, v++);
  check_hc(77, 768, DType::F32, v++);
  check_hc(67, 1040, DType::BF16, v++);
}

// The RMSNorm of every block fused into hc_pre / hc_head: the fused kernel (T <= 64, rows <= 8192) and the
// two-launch fallback beyond it, against the CPU's hc_pre + rms_norm.
TEST(CudaOps, HcPreAndHeadWithNorm) {
  DSV4_REQUIRE_GPU();
  int v = 100;
  for (int64_t T : {int64_t{1}, int64_t{3}, int64_t{64}, int64_t{65}}) {
    for (int64_t H : {int64_t{50}, int64_t{1024}, int64_t{4096}}) check_hc(T, H, DType::BF16, v++, true);
  }
  check_hc(1, 8192, DType::BF16, v++, true);  // the fused kernel's widest row
  check_hc(2, 8200, DType::BF16, v++, true);  // past it: the fallback
  check_hc(1, 7168, DType::F32, v++, true);
  check_hc(5, 1001, DType::F32, v++, true);
  check_hc(70, 333, DType::F32, v++, true);
}

TEST(CudaOps, HcPost) {
  DSV4_REQUIRE_GPU();
  int v = 0;
  // T >= 65 with H % 8 == 0: the vectorised prefill kernel (H = 37: the per-token one).
  // H = 64 / 256 / 1040: blocks of 32, 32 and 96 threads.
  for (int64_t T : {int64_t{1}, int64_t{9}, int64_t{65}, int64_t{1001}}) {
    for (int64_t H : {int64_t{64}, int64_t{37}, int64_t{256}, int64_t{1040}, int64_t{4096}}) {
      auto rng = rng_for("hc_post", v++);
      const int64_t n = 4;
      std::vector<float> x = test::round_bf16(random_vec(rng, T * n * H)), y = test::round_bf16(random_vec(rng, T * H));
      std::vector<float> post = random_vec(rng, T * n, 0, 2), comb = random_vec(rng, T * n * n, 0, 1);
      std::vector<float> ref(T * n * H);
      ExecContext cpu = cpu_ctx();
      ops::hc_post(cpu, test::host_view(ref, {T, n, H}), test::host_view(y, {T, H}), test::host_view(x, {T, n, H}),
                   test::host_view(post, {T, n}), test::host_view(comb, {T, n, n}));
      DevTensor dx = upload(x, DType::BF16, {T, n, H}), dy = upload(y, DType::BF16, {T, H});
      DevTensor dpost = upload(post, DType::F32, {T, n}), dcomb = upload(comb, DType::F32, {T, n, n});
      DevTensor dout(DType::BF16, {T, n, H});
      poison(dout.t);
      ops::hc_post(env().ctx, dout.t, dy.t, dx.t, dpost.t, dcomb.t);
      env().sync();
      DSV4_EXPECT_CLOSE(download(dout.t), ref, 1e-2, str_cat("hc_post T=", T, " H=", H));
    }
  }
}

// ---- state: compressor, rings, indexer, attention ---------------------------------------------------

// The state ops read and write paged rows (ops/paged_rows.h). These tests keep dense [slots, rows, width] buffers
// and show them as paged rows through identity page tables (one page per slot): a host table for the CPU
// reference, a device copy for the kernels. Scattered pages are tested in cuda_paged_test.cu.
constexpr int64_t kMaxDenseSlots = 16;

const int32_t* identity_table(Device device) {
  static const std::vector<int32_t> host = [] {
    std::vector<int32_t> v(kMaxDenseSlots);
    std::iota(v.begin(), v.end(), 0);
    return v;
  }();
  if (device == Device::kCPU) return host.data();
  // Never destroyed, as env(): the CUDA runtime may already be shut down when static destructors run.
  static const DevTensor* dev = new DevTensor(test::upload_i32(host, {kMaxDenseSlots}));
  return static_cast<const int32_t*>(dev->t.data());
}

// A host buffer of [slots, rows, width] f32 values as paged rows.
PagedRows host_rows(std::vector<float>& v, int64_t slots, int64_t rows, int64_t width) {
  EXPECT_LE(slots, kMaxDenseSlots);
  EXPECT_EQ(static_cast<int64_t>(v.size()), slots * rows * width);
  return dense_paged_rows(v.data(), DType::F32, slots, rows, width, identity_table(Device::kCPU));
}

// A device tensor [slots, rows, width] as paged rows.
PagedRows device_rows(const DevTensor& d) {
  const Tensor& t = d.t;
  EXPECT_EQ(t.ndim(), 3);
  EXPECT_LE(t.size(0), kMaxDenseSlots);
  return dense_paged_rows(t.data(), t.dtype(), t.size(0), t.size(1), t.size(2), identity_table(Device::kCUDA));
}

// A compressor state on the host (f32, the reference) and on the device (raw rings f32, entries bf16)
// holding the same random values.
struct CompressorPair {
  std::vector<float> raw_kv, raw_gate, entries;
  DevTensor d_kv, d_gate, d_entries;
  CompressorState cpu, gpu;

  CompressorPair(std::mt19937& rng, int64_t slots, int64_t rate, bool overlap, int64_t dim, int64_t max_model_len,
                 int64_t ahead) {
    const int64_t width = (overlap ? 2 : 1) * dim, ring = (overlap ? 2 : 1) * rate + ahead;
    const int64_t max_entries = (max_model_len + rate - 1) / rate;
    raw_kv = random_vec(rng, slots * ring * width, -2, 2);
    raw_gate = random_vec(rng, slots * ring * width, -2, 2);
    entries = test::round_bf16(random_vec(rng, slots * max_entries * dim));
    d_kv = upload(raw_kv, DType::F32, {slots, ring, width});
    d_gate = upload(raw_gate, DType::F32, {slots, ring, width});
    d_entries = upload(entries, DType::BF16, {slots, max_entries, dim});
    for (CompressorState* s : {&cpu, &gpu}) {
      s->rate = rate;
      s->overlap = overlap;
      s->dim = dim;
    }
    cpu.raw_kv = host_rows(raw_kv, slots, ring, width);
    cpu.raw_gate = host_rows(raw_gate, slots, ring, width);
    cpu.entries = host_rows(entries, slots, max_entries, dim);
    gpu.raw_kv = device_rows(d_kv);
    gpu.raw_gate = device_rows(d_gate);
    gpu.entries = device_rows(d_entries);
  }
};

// A compressor's shape in the compressor tests.
struct CompressorCase {
  int64_t rate;
  bool overlap;
  int64_t dim, rope_dim;
  int64_t width() const { return (overlap ? 2 : 1) * dim; }
  std::string tag() const { return str_cat(" rate=", rate, overlap ? " overlap" : "", " dim=", dim); }
};

// A case's random batch rows (kv, gate) and weights (ape, norm), and their CPU emission.
struct CompressorInputs {
  std::vector<float> kv, gate, ape, norm;
  CompressorInputs(std::mt19937& rng, const CompressorCase& c, int64_t T)
      : kv(random_vec(rng, T * c.width(), -2, 2)),
        gate(random_vec(rng, T * c.width(), -2, 2)),
        ape(random_vec(rng, c.rate * c.width())),
        norm(random_vec(rng, c.dim, 0.5f, 1.5f)) {}
  void emit_cpu(CompressorState& st, const CompressorCase& c, const RopeTable& rope, TestBatch& batch) {
    ExecContext cpu = cpu_ctx();
    const int64_t T = batch.size(), width = c.width();
    ops::compressor_emit(cpu, st, test::host_view(kv, {T, width}), test::host_view(gate, {T, width}),
                         test::host_view(ape, {c.rate, width}), test::host_view(norm, {c.dim}), rope, batch.host(),
                         1e-6f);
  }
};

TEST(CudaOps, CompressorEmitAndStore) {
  DSV4_REQUIRE_GPU();
  int v = 0;
  for (const CompressorCase c :
       {CompressorCase{4, true, 32, 8}, CompressorCase{8, false, 32, 8}, CompressorCase{4, true, 128, 64},
        CompressorCase{16, false, 512, 64}, CompressorCase{4, true, 40, 8}}) {
    auto rng = rng_for("compressor", v++);
    const int64_t slots = 3, ahead = 2, max_model_len = 64, width = c.width();
    CompressorPair st(rng, slots, c.rate, c.overlap, c.dim, max_model_len, ahead);
    RopePair rope(c.rope_dim);
    // A prefill continuation (slot 2, positions 5..11), a decode row closing a window from the ring
    // (slot 0, position 39 or 47), a fresh prefill (slot 1, 0..8), a T = 1-like row and padding.
    const int32_t decode_pos = c.rate == 16 ? 47 : 39;
    TestBatch batch({{2, 5, 7}, {0, decode_pos, 1}, {1, 0, 9}}, 2, 100, rng);
    const int64_t T = batch.size();
    CompressorInputs in(rng, c, T);
    std::vector<float>&kv = in.kv, &gate = in.gate, &ape = in.ape, &norm = in.norm;
    in.emit_cpu(st.cpu, c, rope.cpu, batch);
    ExecContext cpu = cpu_ctx();
    ops::compressor_store(cpu, st.cpu, test::host_view(kv, {T, width}), test::host_view(gate, {T, width}),
                          batch.host());
    DevTensor dkv = upload(kv, DType::F32, {T, width}), dgate = upload(gate, DType::F32, {T, width});
    DevTensor dape = upload(ape, DType::F32, {c.rate, width}), dnorm = upload(norm, DType::F32, {c.dim});
    ops::compressor_emit(env().ctx, st.gpu, dkv.t, dgate.t, dape.t, dnorm.t, rope.gpu, batch.device(), 1e-6f);
    ops::compressor_store(env().ctx, st.gpu, dkv.t, dgate.t, batch.device());
    env().sync();
    const std::string tag = c.tag();
    // Untouched entries keep their (identical) initial values, so a stray write shows as a large error.
    DSV4_EXPECT_CLOSE(download(st.d_entries.t), st.entries, 1e-2, "compressor_emit entries" + tag);
    DSV4_EXPECT_CLOSE(download(st.d_kv.t), st.raw_kv, 0.0, "compressor_store raw kv" + tag);
    DSV4_EXPECT_CLOSE(download(st.d_gate.t), st.raw_gate, 0.0, "compressor_store raw gate" + tag);
  }
}

// A 300-token prefill's entries against the CPU, and bit-identical to the same rows emitted in two chunks (the second
// chunk's earlier taps from the raw rings), so chunked and one-shot prefills agree.
TEST(CudaOps, CompressorEmitChunkedEqualsOneShot) {
  DSV4_REQUIRE_GPU();
  int v = 0;
  for (const CompressorCase c :
       {CompressorCase{4, true, 32, 8}, CompressorCase{4, true, 64, 16}, CompressorCase{16, false, 128, 64},
        CompressorCase{4, true, 40, 8}, CompressorCase{16, false, 512, 64}}) {
    const std::string tag = c.tag();
    const int seed = v++;
    const int64_t slots = 2, ahead = 2, max_model_len = 400, width = c.width();
    auto rng = rng_for("compressor prefill", seed);
    CompressorPair whole(rng, slots, c.rate, c.overlap, c.dim, max_model_len, ahead);
    auto rng2 = rng_for("compressor prefill", seed);
    CompressorPair chunked(rng2, slots, c.rate, c.overlap, c.dim, max_model_len, ahead);
    RopePair rope(c.rope_dim);
    // A fresh 300-token prefill (slot 0) and a continuation closing windows from the ring (slot 1), then padding.
    TestBatch batch({{0, 0, 300}, {1, 20, 17}}, 3, 100, rng);
    const int64_t T = batch.size();
    CompressorInputs in(rng, c, T);
    std::vector<float>&kv = in.kv, &gate = in.gate, &ape = in.ape, &norm = in.norm;
    in.emit_cpu(whole.cpu, c, rope.cpu, batch);
    DevTensor dape = upload(ape, DType::F32, {c.rate, width}), dnorm = upload(norm, DType::F32, {c.dim});
    DevTensor dkv = upload(kv, DType::F32, {T, width}), dgate = upload(gate, DType::F32, {T, width});
    ops::compressor_emit(env().ctx, whole.gpu, dkv.t, dgate.t, dape.t, dnorm.t, rope.gpu, batch.device(), 1e-6f);
    env().sync();
    const std::vector<float> one_shot = download(whole.d_entries.t);
    DSV4_EXPECT_CLOSE(one_shot, whole.entries, 1e-2, "compressor_emit prefill entries" + tag);

    // The same rows in two forwards: slot 0's first 150 with slot 1's rows, then slot 0's last 150.
    auto rows = [&](const std::vector<float>& all, const std::vector<std::pair<int64_t, int64_t>>& ranges) {
      std::vector<float> out;
      for (const auto& [b, e] : ranges) out.insert(out.end(), all.begin() + b * width, all.begin() + e * width);
      return out;
    };
    const std::vector<std::vector<std::pair<int64_t, int64_t>>> parts = {{{0, 150}, {300, 317}}, {{150, 300}}};
    const std::vector<std::vector<TestBatch::Chunk>> metas = {{{0, 0, 150}, {1, 20, 17}}, {{0, 150, 150}}};
    for (size_t k = 0; k < parts.size(); ++k) {
      TestBatch b(metas[k], 1, 100, rng);
      std::vector<float> pkv = rows(kv, parts[k]), pgate = rows(gate, parts[k]);
      pkv.resize(b.size() * width, 0.0f), pgate.resize(b.size() * width, 0.0f);  // the padding row
      DevTensor ckv = upload(pkv, DType::F32, {b.size(), width}), cgate = upload(pgate, DType::F32, {b.size(), width});
      ops::compressor_emit(env().ctx, chunked.gpu, ckv.t, cgate.t, dape.t, dnorm.t, rope.gpu, b.device(), 1e-6f);
      ops::compressor_store(env().ctx, chunked.gpu, ckv.t, cgate.t, b.device());
    }
    env().sync();
    EXPECT_EQ(download(chunked.d_entries.t), one_shot) << "chunked vs one-shot entries" << tag;
  }
}

TEST(CudaOps, KvRingStore) {
  DSV4_REQUIRE_GPU();
  int v = 0;
  for (int64_t D : {int64_t{32}, int64_t{512}}) {
    auto rng = rng_for("kv_ring", v++);
    const int64_t slots = 3, ring = 10;
    std::vector<float> state = test::round_bf16(random_vec(rng, slots * ring * D));
    // A chunk longer than the ring (only its last `ring` positions are kept), a decode row, a short chunk.
    TestBatch batch({{1, 3, 12}, {0, 50, 1}, {2, 0, 4}}, 2, 100, rng);
    const int64_t T = batch.size();
    std::vector<float> rows = test::round_bf16(random_vec(rng, T * D));
    DevTensor dstate = upload(state, DType::BF16, {slots, ring, D}), drows = upload(rows, DType::BF16, {T, D});
    ExecContext cpu = cpu_ctx();
    ops::kv_ring_store(cpu, host_rows(state, slots, ring, D), test::host_view(rows, {T, D}), batch.host());
    ops::kv_ring_store(env().ctx, device_rows(dstate), drows.t, batch.device());
    env().sync();
    DSV4_EXPECT_CLOSE(download(dstate.t), state, 0.0, str_cat("kv_ring_store D=", D));
  }
}

// Several rings in one launch, every dtype pairing (F32/BF16 rows into F32/BF16 rings), rings of different
// widths and sizes, and more stores than one launch takes (the op splits them): each ring as kv_ring_store leaves it.
// Batches of decode size (a block per row) and of prefill size (a warp per row from 256 rows: chunks much longer than
// the rings, an odd row count).
void check_ring_stores(const std::vector<TestBatch::Chunk>& chunks, int padding, int variant) {
  auto rng = rng_for("ring_stores", variant);
  const int64_t slots = 3;
  TestBatch batch(chunks, padding, 100, rng);
  const int64_t T = batch.size();
  struct Ring {
    int64_t rows, width;
    DType ring_dtype, rows_dtype;
  };
  std::vector<Ring> rings;
  for (int i = 0; i < 10; ++i) {  // 10 > one launch's 8
    rings.push_back({i % 2 == 0 ? 10 : 4, i % 3 == 0 ? 512 : 40 + 8 * i, i % 4 < 2 ? DType::F32 : DType::BF16,
                     i % 2 == 0 ? DType::F32 : DType::BF16});
  }
  std::vector<std::vector<float>> want, rows;
  std::vector<DevTensor> dstate, drows;
  std::vector<ops::RingStore> stores;
  ExecContext cpu = cpu_ctx();
  for (const Ring& r : rings) {
    // Values a bf16 ring or bf16 rows hold exactly, so every pairing has one right answer.
    want.push_back(test::round_bf16(random_vec(rng, slots * r.rows * r.width)));
    rows.push_back(test::round_bf16(random_vec(rng, T * r.width)));
    dstate.push_back(upload(want.back(), r.ring_dtype, {slots, r.rows, r.width}));
    drows.push_back(upload(rows.back(), r.rows_dtype, {T, r.width}));
    ops::kv_ring_store(cpu, host_rows(want.back(), slots, r.rows, r.width), test::host_view(rows.back(), {T, r.width}),
                       batch.host());
  }
  for (size_t i = 0; i < rings.size(); ++i) stores.push_back({device_rows(dstate[i]), drows[i].t});
  ops::ring_stores(env().ctx, stores, batch.device());
  env().sync();
  for (size_t i = 0; i < rings.size(); ++i) {
    DSV4_EXPECT_CLOSE(download(dstate[i].t), want[i], 0.0,
                      str_cat("ring_stores T=", T, " ring ", i, " ", dtype_name(rings[i].ring_dtype), " <- ",
                              dtype_name(rings[i].rows_dtype), " width ", rings[i].width));
  }
}

TEST(CudaOps, RingStoresMatchSeparateStores) {
  DSV4_REQUIRE_GPU();
  check_ring_stores({{1, 3, 12}, {0, 50, 1}, {2, 0, 4}}, 2, 0);
  check_ring_stores({{1, 3, 300}, {0, 50, 1}, {2, 0, 9}, {0, 0, 0}}, 3, 1);
  check_ring_stores({{2, 7, 517}, {1, 0, 3}}, 0, 2);
}

struct IndexerCase {
  int64_t heads, Di, max_model_len, topk;
};

// `period` > 0: entry s repeats entry s % period, so scores tie exactly in groups; the selection must then
// take each group's lowest indices, in ascending order (the CPU's tie order).
// `chunks`: the batch (default: early positions, a chunk past top-k, a decode row at the store's end). The
// device runs twice, without and with the decode workspace (one block per query group / entries split over
// blocks and merged), and both must give the same selection.
void check_indexer(const IndexerCase& c, int variant, int64_t period = 0, std::vector<TestBatch::Chunk> chunks = {}) {
  auto rng = rng_for("indexer", variant);
  const int64_t slots = 3, rate = 4;
  CompressorPair keys(rng, slots, rate, true, c.Di, c.max_model_len, 2);
  const int64_t max_entries = keys.cpu.entries.rows;
  if (period > 0) {
    for (int64_t sl = 0; sl < slots; ++sl) {
      for (int64_t s = period; s < max_entries; ++s) {
        std::copy_n(&keys.entries[(sl * max_entries + s % period) * c.Di], c.Di,
                    &keys.entries[(sl * max_entries + s) * c.Di]);
      }
    }
    keys.d_entries = upload(keys.entries, DType::BF16, {slots, max_entries, c.Di});
    keys.gpu.entries = device_rows(keys.d_entries);
  }
  // Early positions (every visible entry, in order), a chunk past top-k, a decode row at the store's end.
  if (chunks.empty()) chunks = {{0, 0, 10}, {1, 40, 6}, {2, static_cast<int32_t>(c.max_model_len - 1), 1}};
  TestBatch batch(chunks, 2, 100, rng);
  const int64_t T = batch.size();
  std::vector<float> q = random_vec(rng, T * c.heads * c.Di), w = random_vec(rng, T * c.heads, -1, 1);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.Di * c.heads));
  std::vector<int32_t> ref(T * c.topk);
  ExecContext cpu = cpu_ctx();
  ops::indexer_topk(cpu, test::host_view_i32(ref, {T, c.topk}), test::host_view(q, {T, c.heads, c.Di}),
                    test::host_view(w, {T, c.heads}), keys.cpu, batch.host(), scale);
  DevTensor dq = upload(q, DType::F32, {T, c.heads, c.Di}), dw = upload(w, DType::F32, {T, c.heads});
  DevTensor dout(DType::I32, {T, c.topk});
  poison(dout.t);
  ops::indexer_topk(env().ctx, dout.t, dq.t, dw.t, keys.gpu, batch.device(), scale);
  env().sync();
  const int64_t ws_bytes = ops::indexer_workspace_bytes(env().ctx, T, c.topk);
  if (ws_bytes > 0) {
    DevTensor dws(DType::I32, {(ws_bytes + 3) / 4}), dsplit(DType::I32, {T, c.topk});
    poison(dws.t);
    poison(dsplit.t);
    ops::indexer_topk(env().ctx, dsplit.t, dq.t, dw.t, keys.gpu, batch.device(), scale, dws.t);
    env().sync();
    EXPECT_EQ(test::download_i32(dsplit.t), test::download_i32(dout.t))
        << "indexer_topk: the split (decode workspace) selection differs from the unsplit one";
  }
  // Double-precision scores for the near-tie check.
  std::vector<std::vector<double>> scores(T);
  for (int64_t t = 0; t < T; ++t) {
    if (batch.slot[t] < 0) continue;
    const int64_t visible = std::min<int64_t>((batch.pos[t] + 1) / rate, max_entries);
    for (int64_t s = 0; s < visible; ++s) {
      double acc = 0;
      for (int64_t h = 0; h < c.heads; ++h) {
        double d = 0;
        for (int64_t i = 0; i < c.Di; ++i) {
          d += static_cast<double>(q[(t * c.heads + h) * c.Di + i]) *
               keys.entries[(batch.slot[t] * max_entries + s) * c.Di + i];
        }
        acc += std::max(d, 0.0) * scale * w[t * c.heads + h];
      }
      scores[t].push_back(acc);
    }
  }
  const std::vector<int32_t> got = test::download_i32(dout.t);
  for (int32_t s : got) ASSERT_NE(s, 0x7b7b7b7b) << "indexer_topk left an output unwritten";
  const std::string what = str_cat("indexer_topk heads=", c.heads, " Di=", c.Di, " topk=", c.topk,
                                   " entries=", max_entries, period > 0 ? " tied" : "");
  check_selection(got, ref, scores, c.topk, what);
  if (period == 0) return;
  for (int64_t t = 0; t < T; ++t) {  // per tie group: the lowest indices, ascending
    std::vector<int32_t> next(period, 0);
    for (int64_t k = 0; k < c.topk; ++k) {
      const int32_t s = got[t * c.topk + k];
      if (s < 0) continue;
      EXPECT_EQ(s, next[s % period] * period + s % period) << what << ": token " << t << " rank " << k;
      ++next[s % period];
    }
  }
}

TEST(CudaOps, IndexerTopk) {
  DSV4_REQUIRE_GPU();
  int v = 0;
  for (const IndexerCase c : {IndexerCase{8, 16, 64, 5}, IndexerCase{12, 32, 64, 4}, IndexerCase{64, 128, 256, 16},
                              IndexerCase{3, 20, 64, 3}}) {
    check_indexer(c, v++);
  }
  // A prefill-sized batch (several queries per block) that stays small enough for racecheck.
  check_indexer({8, 16, 2048, 5}, v++, 0, {{0, 100, 300}, {1, 500, 251}});
}

// Long contexts: 4096 positions (1024 CSA entries), top-512 (the Flash slice's), a top-k that is no power
// of two, and exact ties (repeated entries).
TEST(CudaOps, IndexerTopkLong) {
  DSV4_REQUIRE_GPU();
  check_indexer({64, 128, 4096, 512}, 10);
  check_indexer({8, 32, 4096, 300}, 11);
  check_indexer({8, 16, 1024, 100}, 12, 37);
  check_indexer({4, 16, 4096, 512}, 13, 5);
}

// Visible-entry counts at the edges (rate 4: S = (pos + 1) / 4): S = 0, S < top-k, S = top-k + 1, odd S, and
// a prefill-sized batch (>= 512 queries: several queries share a block) whose query groups straddle sequences.
TEST(CudaOps, IndexerTopkEdges) {
  DSV4_REQUIRE_GPU();
  using C = TestBatch::Chunk;
  const std::vector<C> edges = {{0, 0, 3}, {0, 399, 1}, {1, 4 * 513 - 1, 1}, {1, 4 * 1001 - 1, 2}, {2, 8191, 1}};
  check_indexer({64, 128, 8192, 512}, 20, 0, edges);
  check_indexer({12, 32, 8192, 512}, 21, 0, edges);
  check_indexer({16, 64, 8192, 100}, 22, 0, {{0, 0, 5}, {0, 4003, 301}, {1, 6000, 211}, {2, 3, 9}});
  check_indexer({64, 128, 4096, 512}, 23, 0, {{0, 2100, 263}, {1, 2400, 260}});
  check_indexer({8, 16, 4096, 64}, 24, 29, {{0, 1000, 301}, {1, 2000, 300}, {2, 4095, 1}});
}

// The longest context of the Flash slice at 1M positions: S = 262,144 CSA entries for one decode row.
TEST(CudaOps, IndexerTopkHuge) {
  DSV4_REQUIRE_GPU();
  check_indexer({64, 128, 1048576, 512}, 30, 0, {{0, 1048575, 1}, {1, 524287, 1}, {2, 4 * 513 - 1, 1}});
}

enum class AttnKind { kSliding, kHca, kCsa };

// One attention problem: random rings, entries, queries and selections (distinct visible entries with
// −1 holes) for the batch `chunks` + `padding` rows, the device against the CPU reference; the device
// runs twice and must reproduce its output bit for bit.
struct AttnCase {
  int64_t D, heads, window;
  AttnKind kind;
  int64_t rate, max_model_len, topk;
};

void check_attention(const AttnCase& c, const std::vector<TestBatch::Chunk>& chunks, int padding, int variant) {
  auto rng = rng_for("attention", variant);
  const int64_t slots = 3, ahead = 3, ring = c.window + ahead, max_entries = c.max_model_len / c.rate;
  const int64_t topk = c.topk;
  std::vector<float> ring_v = test::round_bf16(random_vec(rng, slots * ring * c.D));
  std::vector<float> entries = test::round_bf16(random_vec(rng, slots * max_entries * c.D));
  TestBatch batch(chunks, padding, 100, rng);
  const int64_t T = batch.size();
  std::vector<float> q = test::round_bf16(random_vec(rng, T * c.heads * c.D, -3, 3));
  std::vector<float> kv = test::round_bf16(random_vec(rng, T * c.D));
  std::vector<float> sinks = random_vec(rng, c.heads, -1, 1);
  std::vector<int32_t> selected(T * topk, -1);
  for (int64_t t = 0; t < T; ++t) {  // distinct visible entries, with -1 holes
    if (batch.slot[t] < 0) continue;
    std::vector<int32_t> pool(std::min<int64_t>((batch.pos[t] + 1) / c.rate, max_entries));
    std::iota(pool.begin(), pool.end(), 0);
    std::shuffle(pool.begin(), pool.end(), rng);
    for (int64_t k = 0; k < topk && k < static_cast<int64_t>(pool.size()); ++k) {
      if (rng() % 4 != 0) selected[t * topk + k] = pool[k];
    }
  }
  CompressorState cpu_c, gpu_c;
  DevTensor dentries = upload(entries, DType::BF16, {slots, max_entries, c.D});
  cpu_c.rate = gpu_c.rate = c.rate;
  cpu_c.dim = gpu_c.dim = c.D;
  cpu_c.entries = host_rows(entries, slots, max_entries, c.D);
  gpu_c.entries = device_rows(dentries);
  const bool compressed = c.kind != AttnKind::kSliding;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  std::vector<float> ref(T * c.heads * c.D);
  ExecContext cpu = cpu_ctx();
  ops::attention(cpu, test::host_view(ref, {T, c.heads, c.D}), test::host_view(q, {T, c.heads, c.D}),
                 test::host_view(kv, {T, c.D}), host_rows(ring_v, slots, ring, c.D), compressed ? &cpu_c : nullptr,
                 c.kind == AttnKind::kCsa ? test::host_view_i32(selected, {T, topk}) : Tensor(),
                 test::host_view(sinks, {c.heads}), batch.host(), c.window, scale);
  DevTensor dq = upload(q, DType::BF16, {T, c.heads, c.D}), dkv = upload(kv, DType::BF16, {T, c.D});
  DevTensor dring = upload(ring_v, DType::BF16, {slots, ring, c.D}), dsinks = upload(sinks, DType::F32, {c.heads});
  DevTensor dsel = test::upload_i32(selected, {T, topk}), dout(DType::BF16, {T, c.heads, c.D});
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    poison(dout.t);
    ops::attention(env().ctx, dout.t, dq.t, dkv.t, device_rows(dring), compressed ? &gpu_c : nullptr,
                   c.kind == AttnKind::kCsa ? dsel.t : Tensor(), dsinks.t, batch.device(), c.window, scale);
    env().sync();
    std::vector<float> got = download(dout.t);
    if (run == 1) {
      ASSERT_EQ(std::memcmp(got.data(), first.data(), got.size() * sizeof(float)), 0)
          << "attention is not deterministic";
      break;
    }
    const char* kind = c.kind == AttnKind::kSliding ? "sliding" : c.kind == AttnKind::kHca ? "HCA" : "CSA";
    DSV4_EXPECT_CLOSE(got, ref, 1e-2,
                      str_cat("attention ", kind, " D=", c.D, " heads=", c.heads, " window=", c.window, " T=", T));
    first = std::move(got);
  }
}

TEST(CudaOps, Attention) {
  DSV4_REQUIRE_GPU();
  struct Case {
    int64_t D, heads, window;
    AttnKind kind;
  };
  int v = 0;
  for (const Case c :
       {Case{32, 4, 8, AttnKind::kSliding}, Case{32, 4, 8, AttnKind::kHca}, Case{32, 4, 8, AttnKind::kCsa},
        Case{64, 3, 16, AttnKind::kCsa}, Case{40, 2, 8, AttnKind::kHca}, Case{512, 16, 16, AttnKind::kCsa},
        Case{512, 10, 8, AttnKind::kHca}, Case{256, 1, 8, AttnKind::kSliding}}) {
    const int64_t rate = c.kind == AttnKind::kCsa ? 4 : 8;
    // A chunk whose window spans the ring and the batch, a decode row, a fresh prefill, padding.
    check_attention({c.D, c.heads, c.window, c.kind, rate, 64, 5}, {{1, 5, 9}, {0, 40, 1}, {2, 0, 3}}, 2, v++);
  }
}

// The Flash slice's attention layers (64 heads × 512, window 128; HCA rate 128, CSA rate 4 with top-512 selections).
const AttnCase kFlashHca{512, 64, 128, AttnKind::kHca, 128, 81920, 512};
const AttnCase kFlashCsa{512, 64, 128, AttnKind::kCsa, 4, 2560, 512};
const AttnCase kFlashSliding{512, 64, 128, AttnKind::kSliding, 128, 81920, 512};

// The Flash shapes at decode sizes: steps of T = 1 and 4 with 64..600 compressed entries (the split-KV path), and a
// batch large enough that the keys are not split.
TEST(CudaOps, AttentionFlashShapes) {
  DSV4_REQUIRE_GPU();
  const AttnCase hca = kFlashHca, csa = kFlashCsa, sliding = kFlashSliding;
  int v = 100;
  check_attention(hca, {{1, 8200, 1}}, 0, v++);                                           // 64 entries
  check_attention(hca, {{0, 76900, 1}, {1, 8191, 1}, {2, 40000, 1}}, 1, v++);             // 600, 64, 312
  check_attention(csa, {{2, 2403, 1}}, 0, v++);                                           // 601 visible
  check_attention(csa, {{0, 2403, 1}, {1, 300, 1}, {2, 1100, 1}, {0, 2559, 1}}, 0, v++);  // 601, 75, 275, 640
  check_attention(sliding, {{0, 60, 1}, {1, 500, 1}, {2, 127, 1}}, 1, v++);
  check_attention(csa, {{1, 100, 24}, {0, 2403, 1}, {2, 700, 8}}, 2, v++);  // 35 rows: no split
  // Decode batches of 8 and 16 rows (32 and 64 token-head groups): the 4- and 2-way splits.
  std::vector<TestBatch::Chunk> b8, b16;
  for (int32_t i = 0; i < 16; ++i) (i < 8 ? b8 : b16).push_back({i % 3, 300 + 131 * i, 1});
  for (int64_t i = 0; i < 8; ++i) b16.push_back(b8[i]);
  ASSERT_EQ(cuda::split_attention_parts(8 * 4, 132), 4);
  ASSERT_EQ(cuda::split_attention_parts(16 * 4, 132), 2);
  check_attention(csa, b8, 0, v++);
  check_attention(csa, b16, 0, v++);
  check_attention(hca, b16, 0, v++);
}

// Prefill-sized batches (>= kPrefillAttentionMinTokens rows) of the model's layout: the 64-head kernel
// (attention_prefill.cu). Long chunks whose windows span the ring and the batch, CSA rows whose selections are mostly
// -1 (early positions: whole 32-key tiles absent and skipped), decode rows and padding; Pro's 128 heads (two blocks a
// row); at T = 64 exactly, the kernel's smallest batch.
TEST(CudaOps, AttentionFlashPrefill) {
  DSV4_REQUIRE_GPU();
  const AttnCase hca = kFlashHca, csa = kFlashCsa, sliding = kFlashSliding;
  AttnCase csa_pro = kFlashCsa;
  csa_pro.heads = 128;
  int v = 300;
  check_attention(csa, {{2, 2300, 80}, {0, 600, 1}, {1, 0, 20}}, 2, v++);       // 103 rows
  check_attention(hca, {{0, 76900, 70}, {1, 100, 10}, {2, 40000, 1}}, 1, v++);  // 600+ entries, 0, 312
  check_attention(sliding, {{2, 500, 70}, {0, 10, 5}}, 0, v++);
  check_attention(csa_pro, {{1, 1800, 66}}, 0, v++);
  check_attention(csa, {{0, 2000, 64}}, 0, v++);
}

// Head counts that are not a multiple of 16 (the default tiny model: 4 × 64, window 64, CSA 4 / top-16,
// HCA 16; the HF fixtures: 4 × 32, window 8, top-3) and head dim 32: the split kernel's zero-padded head
// groups. Decode T = 1, a 4-row batch (3 decode rows + padding), 35 rows (a prefill chunk whose window
// spans the ring and the batch, decode rows, padding), each window-only, HCA and CSA with −1 holes, and a
// 72-row batch where the keys are not split; heads 16 is the unmasked instantiation at D 64, the masked one
// at D 32.
TEST(CudaOps, AttentionSmallHeads) {
  DSV4_REQUIRE_GPU();
  struct Batch {
    std::vector<TestBatch::Chunk> chunks;
    int padding;
  };
  const std::vector<Batch> batches = {
      {{{1, 150, 1}}, 0},                            // T = 1
      {{{0, 300, 1}, {1, 90, 1}, {2, 40, 1}}, 1},    // T = 4
      {{{1, 100, 24}, {0, 200, 1}, {2, 70, 8}}, 2},  // T = 35
  };
  int v = 200;
  for (const int64_t D : {64, 32}) {
    const int64_t window = D == 64 ? 64 : 8, topk = D == 64 ? 16 : 3;
    for (const int64_t heads : {1, 4, 8, 12, 16, 20}) {
      for (const AttnKind kind : {AttnKind::kSliding, AttnKind::kHca, AttnKind::kCsa}) {
        const int64_t rate = kind == AttnKind::kCsa ? 4 : 16;
        for (const Batch& b : batches)
          check_attention({D, heads, window, kind, rate, 512, topk}, b.chunks, b.padding, v++);
      }
    }
    check_attention({D, 4, window, AttnKind::kCsa, 4, 512, topk}, {{0, 10, 64}, {1, 200, 8}}, 0, v++);  // 72 rows
  }
}

// Prefill-sized batches (>= 256 rows) with at most 8 heads: 16 / heads rows a block (split_attention_packed_kernel).
// A long chunk whose windows span the ring and the batch (blocks of consecutive positions share one key list), a
// decode row, a fresh prompt and padding between (blocks straddling sequences take each row's own keys), a block
// left short at the end; heads that divide 16 and one that does not (3: 15 of 16 rows).
TEST(CudaOps, AttentionSmallHeadsPrefill) {
  DSV4_REQUIRE_GPU();
  ASSERT_EQ(cuda::split_attention_tokens_per_block(4, 256), 4);
  ASSERT_EQ(cuda::split_attention_tokens_per_block(4, 255), 1);
  ASSERT_EQ(cuda::split_attention_tokens_per_block(16, 4096), 1);
  const std::vector<std::pair<std::vector<TestBatch::Chunk>, int>> batches = {
      {{{1, 100, 300}, {0, 200, 1}, {2, 0, 37}}, 3},  // T = 341
      {{{2, 5, 257}, {0, 60, 2}}, 1},                 // T = 260
  };
  int v = 400;
  for (const int64_t D : {64, 32}) {
    const int64_t window = D == 64 ? 64 : 8, topk = D == 64 ? 16 : 3;
    for (const int64_t heads : {1, 2, 3, 4, 8}) {
      for (const AttnKind kind : {AttnKind::kSliding, AttnKind::kHca, AttnKind::kCsa}) {
        const int64_t rate = kind == AttnKind::kCsa ? 4 : 16;
        for (const auto& [chunks, padding] : batches)
          check_attention({D, heads, window, kind, rate, 512, topk}, chunks, padding, v++);
      }
    }
  }
}

// ---- MoE -------------------------------------------------------------------------------------------

TEST(CudaOps, MoeRoute) {
  DSV4_REQUIRE_GPU();
  struct Case {
    int64_t T, E, k;
    ScoringFunc scoring;
    bool bias, hash, normalise;
  };
  int v = 0;
  for (const Case c : {Case{1, 8, 2, ScoringFunc::kSqrtSoftplus, true, false, true},
                       Case{9, 256, 6, ScoringFunc::kSqrtSoftplus, true, false, true},
                       Case{7, 6, 3, ScoringFunc::kSigmoid, true, false, true},
                       Case{5, 64, 4, ScoringFunc::kSoftmax, false, false, false},
                       Case{11, 8, 2, ScoringFunc::kSqrtSoftplus, false, true, true},
                       Case{3, 384, 8, ScoringFunc::kSigmoid, true, false, true}}) {
    auto rng = rng_for("moe_route", v++);
    ModelConfig cfg;
    cfg.n_routed_experts = c.E;
    cfg.num_experts_per_tok = c.k;
    cfg.scoring_func = c.scoring;
    cfg.norm_topk_prob = c.normalise;
    cfg.routed_scaling_factor = 1.5;
    const int64_t V = 50;
    std::vector<float> logits = random_vec(rng, c.T * c.E, -4, 4), bias = random_vec(rng, c.E, -0.3f, 0.3f);
    std::vector<int32_t> ids(c.T), table(V * c.k);
    for (auto& i : ids) i = static_cast<int32_t>(rng() % V);
    for (int64_t r = 0; r < V; ++r) {
      std::vector<int32_t> e(c.E);
      std::iota(e.begin(), e.end(), 0);
      std::shuffle(e.begin(), e.end(), rng);
      std::copy(e.begin(), e.begin() + c.k, table.begin() + r * c.k);
    }
    std::vector<float> w(c.T * c.k);
    std::vector<int32_t> idx(c.T * c.k);
    ExecContext cpu = cpu_ctx();
    ops::moe_route(cpu, test::host_view(w, {c.T, c.k}), test::host_view_i32(idx, {c.T, c.k}),
                   test::host_view(logits, {c.T, c.E}), c.bias ? test::host_view(bias, {c.E}) : Tensor(),
                   c.hash ? test::host_view_i32(table, {V, c.k}) : Tensor(), test::host_view_i32(ids, {c.T}),
                   ops::route_params(cfg));
    DevTensor dl = upload(logits, DType::F32, {c.T, c.E}), db = upload(bias, DType::F32, {c.E});
    DevTensor dtable = test::upload_i32(table, {V, c.k}), dids = test::upload_i32(ids, {c.T});
    DevTensor dw(DType::F32, {c.T, c.k}), didx(DType::I32, {c.T, c.k});
    poison(dw.t);
    poison(didx.t);
    ops::moe_route(env().ctx, dw.t, didx.t, dl.t, c.bias ? db.t : Tensor(), c.hash ? dtable.t : Tensor(), dids.t,
                   ops::route_params(cfg));
    env().sync();
    const std::string tag = str_cat("moe_route T=", c.T, " E=", c.E, " k=", c.k, " ", scoring_func_name(c.scoring),
                                    c.hash ? " hash" : "", c.bias ? " bias" : "");
    // Selection values in double: the near-tie check of the indices.
    std::vector<std::vector<double>> sel(c.T);
    for (int64_t t = 0; t < c.T; ++t) {
      double mx = -1e300, sum = 0;
      for (int64_t e = 0; e < c.E; ++e) mx = std::max(mx, static_cast<double>(logits[t * c.E + e]));
      for (int64_t e = 0; e < c.E; ++e) sum += std::exp(logits[t * c.E + e] - mx);
      for (int64_t e = 0; e < c.E; ++e) {
        const double l = logits[t * c.E + e];
        double s = c.scoring == ScoringFunc::kSigmoid   ? 1 / (1 + std::exp(-l))
                   : c.scoring == ScoringFunc::kSoftmax ? std::exp(l - mx) / sum
                                                        : std::sqrt(std::log1p(std::exp(l)));
        sel[t].push_back(s + (c.bias ? bias[e] : 0.0));
      }
    }
    const std::vector<int32_t> got = test::download_i32(didx.t);
    check_selection(got, idx, sel, c.k, tag);
    if (got == idx) DSV4_EXPECT_CLOSE(download(dw.t), w, 1e-5, tag + " weights");
  }
}

namespace moe_experts_test {

enum class Routing {
  kRandom,  // k distinct random experts per token
  kSkewed,  // every token routed to experts {0, 1, ...}: each of them gets T rows
  kHashed,  // a hash layer's table gathered by token ids from a small vocabulary: tokens repeat expert sets
};
struct Case {
  int64_t T, H, I, E, k;
  float limit;
  Routing routing;
  bool shared = false;  // a shared expert stacked after the E routed ones (T more pairs)
};

// P = T·k (+ T with the shared expert) ≤ 128 runs the decode path (bf16), larger counts the tiled GEMMs;
// odd H / I take the element-wise variants of both. `variant` seeds the case's random values.
const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      // decode path
      Case{1, 64, 32, 8, 2, 10.0f, Routing::kRandom}, Case{5, 48, 24, 4, 3, 10.0f, Routing::kRandom},
      Case{7, 37, 19, 6, 2, 1.5f, Routing::kRandom}, Case{1, 1024, 512, 16, 6, 10.0f, Routing::kRandom},
      Case{2, 1000, 520, 32, 6, 3.0f, Routing::kRandom}, Case{2, 2048, 1024, 8, 6, 10.0f, Routing::kRandom},
      Case{3, 37, 19, 64, 6, 1.5f, Routing::kRandom}, Case{7, 77, 45, 24, 6, 10.0f, Routing::kRandom},
      Case{7, 520, 264, 16, 6, 10.0f, Routing::kHashed}, Case{3, 99, 41, 48, 6, 2.0f, Routing::kHashed},
      Case{12, 264, 136, 16, 6, 10.0f, Routing::kSkewed}, Case{20, 128, 72, 64, 6, 10.0f, Routing::kSkewed},
      // decode path with the shared expert (P = T·(k + 1) ≤ 128, the last at the limit)
      Case{1, 64, 32, 8, 2, 10.0f, Routing::kRandom, true}, Case{7, 37, 19, 6, 2, 1.5f, Routing::kRandom, true},
      Case{2, 2048, 1024, 8, 6, 10.0f, Routing::kRandom, true}, Case{7, 520, 264, 16, 6, 10.0f, Routing::kHashed, true},
      Case{16, 128, 72, 64, 6, 10.0f, Routing::kSkewed, true}, Case{18, 264, 136, 16, 6, 10.0f, Routing::kRandom, true},
      // tiled GEMMs
      Case{70, 96, 48, 6, 3, 10.0f, Routing::kRandom}, Case{200, 64, 32, 4, 2, 1.0f, Routing::kSkewed},
      Case{33, 256, 128, 16, 4, 10.0f, Routing::kRandom}, Case{45, 37, 19, 6, 3, 1.5f, Routing::kRandom},
      Case{40, 128, 64, 16, 6, 10.0f, Routing::kHashed},
      // tiled GEMMs with the shared expert: T·k ≤ 128 < T·(k + 1) first; then the shared expert over several
      // 64-row tiles, odd sizes, hashed routing
      Case{19, 96, 48, 6, 6, 10.0f, Routing::kRandom, true}, Case{200, 64, 32, 4, 2, 1.0f, Routing::kSkewed, true},
      Case{45, 37, 19, 6, 3, 1.5f, Routing::kRandom, true}, Case{40, 128, 64, 16, 6, 10.0f, Routing::kHashed, true},
      // one token: no planning kernel (each pair its own tile), hashed, and past kMoeDecodeMaxPairs pairs (still the
      // decode path: a token's pairs are at most one per expert) (last, so that the cases above keep their seeds)
      Case{1, 96, 48, 16, 6, 10.0f, Routing::kHashed, true}, Case{1, 64, 32, 160, 130, 10.0f, Routing::kRandom},
      // past kMoeDecodeMaxPairs with few rows per expert (moe_takes_decode_path): the decode path over tiles of
      // several rows; with the shared expert's T rows in passes of 8 (60 rows: a partial last pass)
      Case{40, 128, 64, 64, 6, 10.0f, Routing::kRandom}, Case{60, 96, 48, 64, 2, 10.0f, Routing::kRandom, true},
      Case{48, 264, 136, 128, 6, 3.0f, Routing::kHashed, true}};
  return all;
}

// act_quant: --activation-quant fp8 on both sides (x and each weighted SwiGLU row round-tripped per 128 values,
// the weight applied before w2). F32: all but a few outputs within 1e-4 of the largest — an intermediate value
// that the two sides' summation orders put on either side of an E4M3 rounding point moves one code step (6% of
// it), so a few outputs may differ more (bound 5e-2) — and closer to the CPU's quantised result than to its plain
// one. BF16 rounds the intermediate before its round trip (the CPU keeps f32): 3e-2.
void check(const Case& c, int variant, bool act_quant = false) {
  auto rng = rng_for("moe_experts", variant);
  const int64_t Es = c.E + (c.shared ? 1 : 0);  // stacked experts; routing picks among the first E
  const float sx = 2.0f, sw1 = 2.0f / std::sqrt(static_cast<float>(c.H)),
              sw2 = 2.0f / std::sqrt(static_cast<float>(c.I));
  std::vector<float> x = test::round_bf16(random_vec(rng, c.T * c.H, -sx, sx));
  std::vector<float> w1 = test::round_bf16(random_vec(rng, Es * c.I * c.H, -sw1, sw1));
  std::vector<float> w3 = test::round_bf16(random_vec(rng, Es * c.I * c.H, -sw1, sw1));
  std::vector<float> w2 = test::round_bf16(random_vec(rng, Es * c.H * c.I, -sw2, sw2));
  std::vector<float> weights = random_vec(rng, c.T * c.k, 0.1f, 1.0f);
  auto distinct_experts = [&](int32_t* dst) {
    std::vector<int32_t> e(c.E);
    std::iota(e.begin(), e.end(), 0);
    if (c.routing != Routing::kSkewed) std::shuffle(e.begin(), e.end(), rng);
    std::copy(e.begin(), e.begin() + c.k, dst);
  };
  const int64_t vocab = 3;  // hashed: the table's rows, so tokens share expert sets
  std::vector<int32_t> idx(c.T * c.k), table(vocab * c.k);
  for (int64_t r = 0; r < vocab; ++r) distinct_experts(table.data() + r * c.k);
  for (int64_t t = 0; t < c.T; ++t) {
    if (c.routing == Routing::kHashed) {
      const int64_t id = static_cast<int64_t>(rng() % vocab);
      std::copy(table.begin() + id * c.k, table.begin() + (id + 1) * c.k, idx.begin() + t * c.k);
    } else {
      distinct_experts(idx.data() + t * c.k);
    }
  }
  std::vector<float> ref(c.T * c.H);
  ExecContext cpu = cpu_ctx();
  ops::moe_experts(cpu, test::host_view(ref, {c.T, c.H}), test::host_view(x, {c.T, c.H}),
                   test::host_view_i32(idx, {c.T, c.k}), test::host_view(weights, {c.T, c.k}),
                   test::host_view(w1, {Es, c.I, c.H}), test::host_view(w2, {Es, c.H, c.I}),
                   test::host_view(w3, {Es, c.I, c.H}), c.limit, c.shared, act_quant);
  std::vector<float> ref_plain;  // act_quant: the CPU without it, which the CUDA result must be farther from
  if (act_quant) {
    ref_plain.resize(ref.size());
    ops::moe_experts(cpu, test::host_view(ref_plain, {c.T, c.H}), test::host_view(x, {c.T, c.H}),
                     test::host_view_i32(idx, {c.T, c.k}), test::host_view(weights, {c.T, c.k}),
                     test::host_view(w1, {Es, c.I, c.H}), test::host_view(w2, {Es, c.H, c.I}),
                     test::host_view(w3, {Es, c.I, c.H}), c.limit, c.shared);
  }
  const char* routing = c.routing == Routing::kSkewed ? " skewed" : c.routing == Routing::kHashed ? " hashed" : "";
  // BF16: decode GEMVs or tensor cores (bf16 SwiGLU intermediate); F32: the generic grouped kernel.
  for (DType dt : {DType::BF16, DType::F32}) {
    DevTensor dx = upload(x, dt, {c.T, c.H}), didx = test::upload_i32(idx, {c.T, c.k});
    DevTensor dweights = upload(weights, DType::F32, {c.T, c.k});
    DevTensor dw1 = upload(w1, dt, {Es, c.I, c.H}), dw2 = upload(w2, dt, {Es, c.H, c.I});
    DevTensor dw3 = upload(w3, dt, {Es, c.I, c.H}), dout(dt, {c.T, c.H});
    const std::string tag =
        str_cat("moe_experts ", dtype_name(dt), " T=", c.T, " H=", c.H, " I=", c.I, " E=", c.E, " k=", c.k,
                " limit=", c.limit, routing, c.shared ? " +shared" : "", act_quant ? " fp8 activations" : "");
    std::vector<float> first;
    for (int run = 0; run < 2; ++run) {  // the second run must reproduce the first bit for bit
      poison(dout.t);
      env().scratch().reset();
      ops::moe_experts(env().ctx, dout.t, dx.t, didx.t, dweights.t, dw1.t, dw2.t, dw3.t, c.limit, c.shared, act_quant);
      env().sync();
      std::vector<float> got = download(dout.t);
      if (run == 0) {
        const double tol = dt == DType::BF16 ? (act_quant ? 3e-2 : 2e-2) : (act_quant ? 5e-2 : 1e-4);
        DSV4_EXPECT_CLOSE(got, ref, tol, tag);
        if (act_quant && dt == DType::F32) {
          double max_ref = 0;
          for (float v : ref) max_ref = std::max(max_ref, std::fabs(static_cast<double>(v)));
          int64_t far = 0;
          for (size_t i = 0; i < ref.size(); ++i)
            far += std::fabs(static_cast<double>(got[i]) - ref[i]) > 1e-4 * max_ref;
          EXPECT_LE(far, std::max<int64_t>(2, static_cast<int64_t>(ref.size()) / 200))
              << tag << ": outputs off by > 1e-4";
          EXPECT_LT(test::rel_error(got, ref), test::rel_error(got, ref_plain)) << tag << ": not the quantised result";
        }
        first = std::move(got);
      } else {
        EXPECT_EQ(std::memcmp(got.data(), first.data(), got.size() * sizeof(float)), 0) << tag << " not deterministic";
      }
    }
  }
}

}  // namespace moe_experts_test

TEST(CudaOps, MoeExperts) {
  DSV4_REQUIRE_GPU();
  int v = 0;
  for (const moe_experts_test::Case& c : moe_experts_test::cases()) moe_experts_test::check(c, v++);
}

// --activation-quant fp8 through every path (decode, tiled, simple f32, the shared expert, odd sizes).
TEST(CudaOps, MoeExpertsActivationQuant) {
  DSV4_REQUIRE_GPU();
  int v = 0;
  for (const moe_experts_test::Case& c : moe_experts_test::cases()) {
    if (c.H <= 1024) moe_experts_test::check(c, v, /*act_quant=*/true);
    ++v;
  }
}

// The activations' FP8 round trip: bit for bit the CPU's, F32 and BF16 rows (e4m3 times a power of two is a bf16
// value), partial last blocks, all-zero rows (the amax floor), large and tiny magnitudes.
TEST(CudaOps, ActivationRoundTripMatchesTheCpu) {
  DSV4_REQUIRE_GPU();
  std::mt19937 rng(7);
  for (int64_t width : {int64_t{5}, int64_t{128}, int64_t{300}, int64_t{7168}}) {
    const int64_t rows = 4;
    std::vector<float> x = random_vec(rng, rows * width, -3.0f, 3.0f);
    for (int64_t i = 0; i < width; ++i) {
      x[i] = 0.0f;                                    // row 0: zeros
      x[2 * width + i] *= 1e25f;                      // row 2: large
      x[3 * width + i] *= i % 3 == 0 ? 1e-9f : 1.0f;  // row 3: tiny values beside ordinary ones
    }
    for (DType dt : {DType::F32, DType::BF16}) {
      const std::vector<float> in = dt == DType::BF16 ? test::round_bf16(x) : x;
      std::vector<float> ref = in;
      ExecContext cpu = cpu_ctx();
      ops::activation_round_trip(cpu, test::host_view(ref, {rows, width}));
      DevTensor d = upload(in, dt, {rows, width});
      ops::activation_round_trip(env().ctx, d.t);
      env().sync();
      const std::vector<float> got = download(d.t);
      int64_t bad = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        if (std::memcmp(&got[i], &ref[i], sizeof(float)) != 0 && bad++ < 5) {
          ADD_FAILURE() << dtype_name(dt) << " width " << width << " [" << i << "]: cuda " << got[i] << " vs cpu "
                        << ref[i] << " (in " << in[i] << ")";
        }
      }
      EXPECT_EQ(bad, 0) << dtype_name(dt) << " width " << width;
    }
  }
}

// The cases with H <= 128 (every path: decode, tiled, the shared expert, odd sizes, hashed and skewed routing),
// small enough for compute-sanitizer racecheck, which does not finish the whole list in 300 s.
TEST(CudaOps, MoeExpertsSmallShapes) {
  DSV4_REQUIRE_GPU();
  int v = 0;
  for (const moe_experts_test::Case& c : moe_experts_test::cases()) {
    if (c.H <= 128) moe_experts_test::check(c, v);
    ++v;
  }
}

}  // namespace
}  // namespace dsv4
