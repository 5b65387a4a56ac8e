// The weight-streaming GEMV (backend/cuda/gemv.h) against the CPU reference on Flash's decode shapes, its
// determinism (two runs and a CUDA-graph replay, bit-identical) and the dispatch of cuda::linear /
// grouped_linear (GEMV for small-T bf16 operands, cuBLASLt for the rest, both checked for values).
//
// Inputs are bf16 (the CPU reference runs in f32 on the same bf16-rounded values); outputs are poisoned
// with NaN before every run, so an unwritten element fails. Timings: bench/kernels/bench_gemv.cu.
#include <cuda_runtime.h>

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/gemv.h"
#include "cuda_test_util.h"

namespace dsv4 {
namespace {

using test::DevTensor;
using test::download;
using test::poison;
using test::random_vec;
using test::upload;

test::DeviceEnv& env() { return test::shared_env<16>(); }

std::vector<char> download_bytes(const Tensor& t) {
  std::vector<char> out(t.nbytes());
  cuda::copy_to_host(out.data(), t.data(), out.size());
  return out;
}

// out [T, G*N] = x [T, G*K] · w [G*N, K]^T per group (G = 1: a plain linear), as cuda::linear /
// grouped_linear describe it to the GEMM layer.
cuda::GemmArgs gemm_args(const Tensor& out, const Tensor& x, const Tensor& w, int64_t G) {
  cuda::GemmArgs g;
  g.x = x.data(), g.w = w.data(), g.out = out.data();
  g.x_type = x.dtype(), g.w_type = w.dtype(), g.out_type = out.dtype();
  g.M = x.size(0), g.K = x.size(1) / G, g.N = w.size(0) / G, g.batch = G;
  g.ldx = G * g.K, g.ldw = g.K, g.ldo = G * g.N;
  g.stride_x = g.K, g.stride_w = g.N * g.K, g.stride_o = g.N;
  return g;
}

void run_op(const Tensor& out, const Tensor& x, const Tensor& w, int64_t G) {
  if (G == 1) {
    ops::linear(env().ctx, out, x, w);
  } else {
    ops::grouped_linear(env().ctx, out, x, w, G);
  }
}

struct Shape {
  const char* name;
  int64_t K, N, G;  // per group: x [T, G*K], w [G*N, K]
};

// Every T of `tokens` on one shape: the GEMV called directly, twice (bit-identical), and through the op
// dispatch (which must pick it where gemv_serves says so, the same bits), for bf16 and f32 out.
void check_shape(const Shape& s, const std::vector<int64_t>& tokens, int seed) {
  std::mt19937 rng(seed);
  std::vector<float> w = test::round_bf16(random_vec(rng, s.G * s.N * s.K, -0.5f, 0.5f));
  DevTensor dw = upload(w, DType::BF16, {s.G * s.N, s.K});
  for (int64_t T : tokens) {
    std::vector<float> x = test::round_bf16(random_vec(rng, T * s.G * s.K));
    std::vector<float> ref(T * s.G * s.N);
    ExecContext cpu;
    if (s.G == 1) {
      ops::linear(cpu, test::host_view(ref, {T, s.N}), test::host_view(x, {T, s.K}), test::host_view(w, {s.N, s.K}));
    } else {
      ops::grouped_linear(cpu, test::host_view(ref, {T, s.G * s.N}), test::host_view(x, {T, s.G * s.K}),
                          test::host_view(w, {s.G * s.N, s.K}), s.G);
    }
    DevTensor dx = upload(x, DType::BF16, {T, s.G * s.K});
    for (DType out_dtype : {DType::BF16, DType::F32}) {
      DevTensor dout(out_dtype, {T, s.G * s.N});
      const cuda::GemmArgs g = gemm_args(dout.t, dx.t, dw.t, s.G);
      const std::string name =
          str_cat("gemv ", s.name, " T=", T, " K=", s.K, " N=", s.N, " G=", s.G, " -> ", dtype_name(out_dtype));
      ASSERT_TRUE(cuda::gemv_supports(g)) << name;
      const double tol = out_dtype == DType::BF16 ? 1e-2 : 1e-4;

      poison(dout.t);
      cuda::gemv(env().stream(), g);
      env().sync();
      DSV4_EXPECT_CLOSE(download(dout.t), ref, tol, name);
      const std::vector<char> first = download_bytes(dout.t);
      poison(dout.t);
      cuda::gemv(env().stream(), g);
      env().sync();
      EXPECT_TRUE(first == download_bytes(dout.t)) << name << ": second run differs";

      poison(dout.t);
      run_op(dout.t, dx.t, dw.t, s.G);
      env().sync();
      DSV4_EXPECT_CLOSE(download(dout.t), ref, tol, name + " (op dispatch)");
      if (cuda::gemv_serves(g)) EXPECT_TRUE(first == download_bytes(dout.t)) << name << ": dispatch took another path";
    }
  }
}

TEST(CudaGemv, FlashShapesMatchCpu) {
  DSV4_REQUIRE_GPU();
  const std::vector<int64_t> tokens = {1, 2, 3, 7, 8};
  int seed = 1;
  for (const Shape& s : {Shape{"wq_a", 4096, 1024, 1}, Shape{"wq_b", 1024, 32768, 1}, Shape{"wkv", 4096, 512, 1},
                         Shape{"wo_b", 8192, 4096, 1}, Shape{"wo_a (8 groups)", 4096, 1024, 8},
                         Shape{"8192->4096 in 8 groups", 1024, 512, 8}}) {
    check_shape(s, tokens, seed++);
  }
}

// Shapes off the Flash grid: N not a multiple of the 4 rows a warp owns (and smaller than one block),
// K split across warps with a short last slice (K = 4104 = 513 * 8), one-piece K, small groups.
TEST(CudaGemv, OddShapesMatchCpu) {
  DSV4_REQUIRE_GPU();
  int seed = 100;
  for (const Shape& s : {Shape{"odd N", 64, 37, 1}, Shape{"N=1", 256, 1, 1}, Shape{"short last slice", 4104, 64, 1},
                         Shape{"K=8", 8, 45, 1}, Shape{"grouped odd N", 520, 5, 3}, Shape{"N=1 grouped", 1032, 1, 2}}) {
    check_shape(s, {1, 3, 5, 8}, seed++);
  }
}

// Operands the GEMV does not take go to cuBLASLt (or its fallback kernel) through the same op, with correct
// values: K not a multiple of 8, a row of x not 16-byte aligned, more than 8 rows, f32 inputs.
TEST(CudaGemv, UnsupportedOperandsFallBackToCublasLt) {
  DSV4_REQUIRE_GPU();
  struct Case {
    const char* name;
    int64_t T, K, N, G;
    int64_t x_offset;  // elements: shifts x off 16-byte alignment
    DType in;
  };
  int seed = 200;
  for (const Case c :
       {Case{"K % 8 != 0", 3, 37, 19, 1, 0, DType::BF16},
        Case{"K % 8 != 0, odd N, grouped", 2, 33, 7, 3, 0, DType::BF16},
        Case{"x misaligned", 2, 64, 40, 1, 1, DType::BF16}, Case{"T = 9", 9, 256, 96, 1, 0, DType::BF16},
        Case{"T = 16 grouped", 16, 128, 64, 8, 0, DType::BF16}, Case{"f32 operands", 2, 256, 64, 1, 0, DType::F32}}) {
    std::mt19937 rng(seed++);
    std::vector<float> x = test::as_stored(random_vec(rng, c.T * c.G * c.K), c.in);
    std::vector<float> w = test::as_stored(random_vec(rng, c.G * c.N * c.K, -0.5f, 0.5f), c.in);
    std::vector<float> ref(c.T * c.G * c.N);
    ExecContext cpu;
    if (c.G == 1) {
      ops::linear(cpu, test::host_view(ref, {c.T, c.N}), test::host_view(x, {c.T, c.K}),
                  test::host_view(w, {c.N, c.K}));
    } else {
      ops::grouped_linear(cpu, test::host_view(ref, {c.T, c.G * c.N}), test::host_view(x, {c.T, c.G * c.K}),
                          test::host_view(w, {c.G * c.N, c.K}), c.G);
    }
    // x lives c.x_offset elements into a larger buffer.
    std::vector<float> x_padded(c.x_offset, 0.0f);
    x_padded.insert(x_padded.end(), x.begin(), x.end());
    DevTensor dxp = upload(x_padded, c.in, {static_cast<int64_t>(x_padded.size())});
    const Tensor dx(static_cast<char*>(dxp.t.data()) + c.x_offset * dtype_size(c.in), c.in, {c.T, c.G * c.K},
                    Device::kCUDA);
    DevTensor dw = upload(w, c.in, {c.G * c.N, c.K});
    DevTensor dout(DType::F32, {c.T, c.G * c.N});
    const std::string name = str_cat("fallback ", c.name, " T=", c.T, " K=", c.K, " N=", c.N, " G=", c.G);
    EXPECT_FALSE(cuda::gemv_supports(gemm_args(dout.t, dx, dw.t, c.G))) << name;
    poison(dout.t);
    run_op(dout.t, dx, dw.t, c.G);
    env().sync();
    DSV4_EXPECT_CLOSE(download(dout.t), ref, 1e-4, name);
  }
}

// Each output row depends on its own row of x only, bit for bit: the per-lane order over K, the reduction
// tree and the K split do not change with T. So a speculative verification batch (T = K + 1 rows) projects
// each row exactly as a single-row decode step does.
TEST(CudaGemv, RowsDoNotDependOnT) {
  DSV4_REQUIRE_GPU();
  for (const Shape& s : {Shape{"wq_a", 4096, 1024, 1}, Shape{"wo_a", 512, 96, 8}, Shape{"odd", 4104, 37, 1}}) {
    std::mt19937 rng(400);
    const int64_t T = 8;
    DevTensor dx = upload(test::round_bf16(random_vec(rng, T * s.G * s.K)), DType::BF16, {T, s.G * s.K});
    DevTensor dw = upload(test::round_bf16(random_vec(rng, s.G * s.N * s.K)), DType::BF16, {s.G * s.N, s.K});
    DevTensor dall(DType::F32, {T, s.G * s.N}), drow(DType::F32, {1, s.G * s.N});
    poison(dall.t);
    cuda::gemv(env().stream(), gemm_args(dall.t, dx.t, dw.t, s.G));
    env().sync();
    const std::vector<char> all = download_bytes(dall.t);
    const size_t row_bytes = drow.t.nbytes();
    for (int64_t t = 0; t < T; ++t) {
      const Tensor xt(static_cast<char*>(dx.t.data()) + t * s.G * s.K * 2, DType::BF16, {1, s.G * s.K}, Device::kCUDA);
      poison(drow.t);
      cuda::gemv(env().stream(), gemm_args(drow.t, xt, dw.t, s.G));
      env().sync();
      EXPECT_EQ(0, std::memcmp(all.data() + t * row_bytes, download_bytes(drow.t).data(), row_bytes))
          << s.name << ": row " << t << " of T=8 differs from the same row alone";
    }
  }
}

// ops::linears: several projections of one x (the attention block's projections of h and of qr) — the
// GEMV-served ones share gemv_many launches (more than kMaxGemvMatrices: several launches), the others go to
// cuBLASLt. Every output equals its own ops::linear call bit for bit, across bf16 and f32 outputs and sizes.
TEST(CudaGemv, ManyProjectionsOfOneInputEqualSeparateLinears) {
  DSV4_REQUIRE_GPU();
  struct Proj {
    int64_t N;
    DType out, w;
  };
  const std::vector<Proj> projs = {
      {1024, DType::BF16, DType::BF16}, {512, DType::BF16, DType::BF16}, {1024, DType::F32, DType::BF16},
      {1024, DType::F32, DType::BF16},  {256, DType::F32, DType::BF16},  {64, DType::F32, DType::BF16},
      {37, DType::BF16, DType::BF16},   {7, DType::F32, DType::BF16},    {300, DType::F32, DType::BF16},
      {2048, DType::F32, DType::BF16}};  // 16 MiB at
                                         // K = 4096, T = 3: cuBLASLt
  int seed = 500;
  for (int64_t T : {1, 2, 3}) {
    for (int64_t K : {4096, 1032}) {
      std::mt19937 rng(seed++);
      DevTensor dx = upload(test::round_bf16(random_vec(rng, T * K)), DType::BF16, {T, K});
      std::vector<DevTensor> ws, many, single;
      std::vector<ops::Projection> list;
      for (const Proj& p : projs) {
        ws.push_back(upload(test::round_bf16(random_vec(rng, p.N * K, -0.5f, 0.5f)), p.w, {p.N, K}));
        many.emplace_back(p.out, std::vector<int64_t>{T, p.N});
        single.emplace_back(p.out, std::vector<int64_t>{T, p.N});
      }
      for (size_t i = 0; i < projs.size(); ++i) {
        poison(many[i].t);
        poison(single[i].t);
        list.push_back({many[i].t, ws[i].t});
      }
      ops::linears(env().ctx, dx.t, list);
      for (size_t i = 0; i < projs.size(); ++i) ops::linear(env().ctx, single[i].t, dx.t, ws[i].t);
      env().sync();
      for (size_t i = 0; i < projs.size(); ++i) {
        EXPECT_TRUE(download_bytes(many[i].t) == download_bytes(single[i].t))
            << "T=" << T << " K=" << K << " projection " << i << " (N=" << projs[i].N << ") differs from its linear";
        std::string where;
        EXPECT_TRUE(test::all_written(download(many[i].t), &where)) << where;
      }
    }
  }
}

// A captured GEMV replays to the eager result bit for bit (the engine captures whole forwards).
TEST(CudaGemv, GraphReplayIsBitIdentical) {
  DSV4_REQUIRE_GPU();
  std::mt19937 rng(300);
  const int64_t T = 4, G = 8, K = 512, N = 96;
  DevTensor dx = upload(test::round_bf16(random_vec(rng, T * G * K)), DType::BF16, {T, G * K});
  DevTensor dw = upload(test::round_bf16(random_vec(rng, G * N * K)), DType::BF16, {G * N, K});
  DevTensor dout(DType::BF16, {T, G * N});
  const cuda::GemmArgs g = gemm_args(dout.t, dx.t, dw.t, G);
  ASSERT_TRUE(cuda::gemv_supports(g));
  poison(dout.t);
  cuda::gemv(env().stream(), g);
  env().sync();
  const std::vector<char> eager = download_bytes(dout.t);
  std::string where;
  ASSERT_TRUE(test::all_written(download(dout.t), &where)) << where;

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(env().stream(), cudaStreamCaptureModeGlobal));
  cuda::gemv(env().stream(), g);
  DSV4_CUDA_CHECK(cudaStreamEndCapture(env().stream(), &graph));
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 2; ++replay) {
    poison(dout.t);
    DSV4_CUDA_CHECK(cudaGraphLaunch(exec, env().stream()));
    env().sync();
    EXPECT_TRUE(eager == download_bytes(dout.t)) << "replay " << replay << " differs from eager";
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

}  // namespace
}  // namespace dsv4
