// The stateless ops, CUDA against the CPU reference, as a table (op_parity.h): each case is the op's call and its
// operands; shapes cover T = 1, odd sizes (unaligned rows, the element-wise fallbacks) and the model's sizes.
// Stateful and selection ops (compressor, rings, indexer, attention, routing, MoE, mHC) keep their own tests in
// cuda_ops_test.cu: they need batch metadata, page tables or tie-aware comparisons.
#include <string>
#include <vector>

#include "cuda_test_util.h"
#include "dsv4/ops/rope_table.h"
#include "op_parity.h"

namespace dsv4 {
namespace {

using test::random_vec;
using test::parity::in_place;
using test::parity::input;
using test::parity::OpCase;
using test::parity::output;

test::DeviceEnv& env() { return test::shared_env<64>(); }

// Random token ids (or row indices) in [0, n) as exact floats.
std::vector<float> random_ids(std::mt19937& rng, int64_t count, int64_t n) {
  std::vector<float> v(static_cast<size_t>(count));
  for (float& x : v) x = static_cast<float>(rng() % static_cast<uint32_t>(n));
  return v;
}

double bf16_or(DType d, double f32_tol) { return d == DType::BF16 ? 1e-2 : f32_tol; }

std::vector<OpCase> dense_cases() {
  std::vector<OpCase> cases;
  int v = 0;
  struct Linear {
    int64_t T, K, N;
    DType in, out;
  };
  for (const Linear l : {Linear{1, 64, 32, DType::BF16, DType::BF16}, Linear{7, 96, 320, DType::BF16, DType::BF16},
                         Linear{33, 37, 19, DType::BF16, DType::BF16}, Linear{130, 256, 520, DType::BF16, DType::BF16},
                         Linear{1, 64, 32, DType::BF16, DType::F32}, Linear{7, 96, 320, DType::BF16, DType::F32},
                         Linear{33, 37, 19, DType::BF16, DType::F32}, Linear{130, 256, 520, DType::BF16, DType::F32},
                         Linear{5, 48, 24, DType::F32, DType::F32},
                         // Past BlasHandle::kExactPlanRows: the power-of-two bucket's plan (300 and 400 share 512's).
                         Linear{300, 64, 96, DType::BF16, DType::BF16}, Linear{400, 64, 96, DType::BF16, DType::BF16},
                         Linear{700, 128, 72, DType::BF16, DType::F32}, Linear{513, 40, 24, DType::F32, DType::F32}}) {
    auto rng = test::rng_for("parity linear", v++);
    cases.push_back({str_cat("linear T=", l.T, " K=", l.K, " N=", l.N, " ", dtype_name(l.in), "->", dtype_name(l.out)),
                     {input(l.in, {l.T, l.K}, random_vec(rng, l.T * l.K)),
                      input(l.in, {l.N, l.K}, random_vec(rng, l.N * l.K, -0.5f, 0.5f))},
                     {output(l.out, {l.T, l.N}, l.out == DType::BF16 ? 1e-2 : 1e-4)},
                     [](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
                       ops::linear(ctx, out[0], in[0], in[1]);
                     }});
  }
  struct Grouped {
    int64_t T, G, K, N;
  };
  for (const Grouped g :
       {Grouped{1, 2, 64, 16}, Grouped{9, 8, 40, 24}, Grouped{5, 3, 33, 7}, Grouped{64, 8, 512, 128}}) {
    auto rng = test::rng_for("parity grouped_linear", v++);
    cases.push_back({str_cat("grouped_linear T=", g.T, " G=", g.G, " K=", g.K, " N=", g.N),
                     {input(DType::BF16, {g.T, g.G * g.K}, random_vec(rng, g.T * g.G * g.K)),
                      input(DType::BF16, {g.G * g.N, g.K}, random_vec(rng, g.G * g.N * g.K, -0.5f, 0.5f))},
                     {output(DType::BF16, {g.T, g.G * g.N}, 1e-2)},
                     [G = g.G](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
                       ops::grouped_linear(ctx, out[0], in[0], in[1], G);
                     }});
  }
  struct Norm {
    int64_t rows, dim;
    bool weight, in_place;
    DType dtype;
  };
  for (const Norm n : {Norm{1, 64, true, false, DType::BF16}, Norm{7, 512, true, true, DType::BF16},
                       Norm{5, 37, false, false, DType::BF16}, Norm{12, 1000, true, false, DType::F32},
                       Norm{3, 4096, false, true, DType::BF16}, Norm{1, 4096, true, false, DType::BF16},
                       Norm{64, 512, false, true, DType::BF16}, Norm{2, 16384, true, false, DType::BF16},
                       Norm{1, 16384, false, true, DType::F32}, Norm{2, 20001, true, true, DType::BF16},
                       Norm{3, 9000, true, false, DType::F32}, Norm{1000, 64, true, false, DType::BF16},
                       Norm{33, 128, true, true, DType::F32}, Norm{301, 256, false, false, DType::BF16},
                       Norm{9, 17, true, false, DType::F32}, Norm{70, 257, true, false, DType::BF16},
                       Norm{5, 32, false, true, DType::BF16}}) {
    auto rng = test::rng_for("parity rms_norm", v++);
    const double tol = bf16_or(n.dtype, 1e-5);
    cases.push_back(
        {str_cat("rms_norm ", n.rows, "x", n.dim, n.weight ? " weighted" : "", n.in_place ? " in place" : ""),
         {input(n.dtype, {n.rows, n.dim}, random_vec(rng, n.rows * n.dim, -2, 2)),
          input(DType::F32, {n.dim}, random_vec(rng, n.dim, 0.5f, 1.5f))},
         {n.in_place ? in_place(0, tol) : output(n.dtype, {n.rows, n.dim}, tol)},
         [weight = n.weight](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
           ops::rms_norm(ctx, out[0], in[0], weight ? in[1] : Tensor(), 1e-6f);
         }});
  }
  for (int64_t n : {int64_t{1}, int64_t{333}, int64_t{70000}}) {
    auto rng = test::rng_for("parity add_swiglu", v++);
    const std::vector<float> a = random_vec(rng, n, -12, 12), b = random_vec(rng, n, -12, 12);
    cases.push_back({str_cat("add n=", n),
                     {input(DType::BF16, {n}, a), input(DType::BF16, {n}, b)},
                     {output(DType::F32, {n}, 1e-6)},
                     [](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
                       ops::add(ctx, out[0], in[0], in[1]);
                     }});
    cases.push_back({str_cat("add in place (bf16) n=", n),
                     {input(DType::BF16, {n}, a), input(DType::BF16, {n}, b)},
                     {in_place(0, 1e-2)},
                     [](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
                       ops::add(ctx, out[0], in[0], in[1]);
                     }});
    cases.push_back({str_cat("swiglu (limit 10) n=", n),
                     {input(DType::BF16, {n}, a), input(DType::BF16, {n}, b)},
                     {output(DType::BF16, {n}, 1e-2)},
                     [](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
                       ops::swiglu(ctx, out[0], in[0], in[1], 10.0f);
                     }});
  }
  for (int64_t V : {int64_t{320}, int64_t{1000}, int64_t{129280}}) {
    for (int64_t R : {int64_t{1}, int64_t{5}}) {
      auto rng = test::rng_for("parity argmax", v++);
      std::vector<float> logits = random_vec(rng, R * V, -5, 5);
      logits[7] = logits[static_cast<size_t>(V - 3)] = 9.0f;  // a tie in row 0: the lower index wins
      cases.push_back({str_cat("argmax V=", V, " R=", R),
                       {input(DType::F32, {R, V}, logits)},
                       {output(DType::I32, {R}, 0.0)},
                       [](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
                         ops::argmax(ctx, out[0], in[0]);
                       }});
    }
  }
  return cases;
}

std::vector<OpCase> gather_cases() {
  std::vector<OpCase> cases;
  int v = 0;
  for (int64_t H : {int64_t{64}, int64_t{37}}) {
    for (int64_t T : {int64_t{1}, int64_t{7}}) {
      auto rng = test::rng_for("parity embedding", v++);
      const int64_t V = 50, n = 4;
      const std::vector<float> table = random_vec(rng, V * H);
      const std::vector<float> ids = random_ids(rng, T, V);
      cases.push_back({str_cat("embedding T=", T, " H=", H),
                       {input(DType::BF16, {V, H}, table), input(DType::I32, {T}, ids)},
                       {output(DType::BF16, {T, H}, 0.0)},
                       [](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
                         ops::embedding(ctx, out[0], in[0], in[1]);
                       }});
      const std::vector<float> emb = random_vec(rng, T * H);
      cases.push_back({str_cat("broadcast_streams T=", T, " H=", H),
                       {input(DType::BF16, {T, H}, emb)},
                       {output(DType::BF16, {T, n, H}, 0.0)},
                       [](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
                         ops::broadcast_streams(ctx, out[0], in[0]);
                       }});
      // Rows in any order, repeated.
      const std::vector<float> rows = {static_cast<float>(T - 1), 0.0f, static_cast<float>(T / 2)};
      const std::vector<float> streams = random_vec(rng, T * n * H);
      cases.push_back({str_cat("gather_rows T=", T, " H=", H),
                       {input(DType::BF16, {T, n, H}, streams), input(DType::I32, {3}, rows)},
                       {output(DType::BF16, {3, n, H}, 0.0)},
                       [](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
                         ops::gather_rows(ctx, out[0], in[0], in[1]);
                       }});
      cases.push_back({str_cat("copy T=", T, " H=", H),
                       {input(DType::BF16, {T, n * H}, streams)},
                       {output(DType::BF16, {T, n * H}, 0.0)},
                       [](ExecContext& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& out) {
                         ops::copy(ctx, out[0], in[0]);
                       }});
    }
  }
  return cases;
}

std::vector<OpCase> rope_cases() {
  std::vector<OpCase> cases;
  struct Rope {
    int64_t T, heads, dim, rope_dim;
    bool yarn;
    DType dtype;
  };
  int v = 0;
  for (const Rope r : {Rope{1, 4, 32, 8, false, DType::BF16}, Rope{7, 3, 32, 8, true, DType::BF16},
                       Rope{5, 16, 512, 64, true, DType::BF16}, Rope{6, 8, 128, 64, true, DType::F32},
                       Rope{1, 64, 512, 64, true, DType::BF16}, Rope{3, 70, 16, 2, false, DType::BF16},
                       Rope{2, 3, 1200, 1200, false, DType::F32}, Rope{301, 4, 64, 16, true, DType::BF16},
                       Rope{37, 1, 32, 2, false, DType::F32}}) {
    for (bool inverse : {false, true}) {
      auto rng = test::rng_for("parity rope", v++);
      const std::vector<float> inv = rope_inv_freq(r.yarn ? test::v4_yarn() : RopeParams{}, r.rope_dim);
      cases.push_back(
          {str_cat("rope T=", r.T, " heads=", r.heads, " dim=", r.dim, " R=", r.rope_dim, inverse ? " inverse" : ""),
           {input(r.dtype, {r.T, r.heads, r.dim}, random_vec(rng, r.T * r.heads * r.dim)),
            input(DType::I32, {r.T}, random_ids(rng, r.T, 70000)), input(DType::F32, {r.rope_dim / 2}, inv)},
           {in_place(0, bf16_or(r.dtype, 1e-5))},
           [inverse, rope_dim = r.rope_dim](ExecContext& ctx, const std::vector<Tensor>& in,
                                            const std::vector<Tensor>& out) {
             ops::rope(ctx, out[0], in[1], RopeTable{in[2], 1.0f, rope_dim}, inverse);
           }});
    }
  }
  return cases;
}

TEST(CudaOpParity, Dense) {
  DSV4_REQUIRE_GPU();
  for (const OpCase& c : dense_cases()) test::parity::run(env(), c);
}

TEST(CudaOpParity, EmbeddingBroadcastGatherCopy) {
  DSV4_REQUIRE_GPU();
  for (const OpCase& c : gather_cases()) test::parity::run(env(), c);
}

TEST(CudaOpParity, Rope) {
  DSV4_REQUIRE_GPU();
  for (const OpCase& c : rope_cases()) test::parity::run(env(), c);
}

}  // namespace
}  // namespace dsv4
