// cuBLASLt for the dense projections: one handle and one fixed workspace per engine (created before any
// forward, so forwards can be captured into CUDA graphs), and a per-shape plan cache so that a forward
// only issues host-side heuristic queries the first time it meets a shape. Prefill row counts (M past
// kExactPlanRows, bf16 / f32, batch 1) share the plan of their power-of-two bucket: a server's prefill steps
// meet a new M at almost every step, and a heuristic query per product (~0.2 ms) made each eager prefill
// forward of the tiny model spend 10-17 ms on the host (bench/RESULTS.md nineteenth entry); the bucket's
// algorithm serves each M that cublasLtMatmulAlgoCheck accepts (checked once per M), with that M's layouts.
#pragma once

#include <cublasLt.h>

#include <array>
#include <cstdint>
#include <map>

#include "dsv4/core/exec_context.h"
#include "dsv4/core/tensor.h"

namespace dsv4::cuda {

// Operands of out[b] = x[b] · w[b]^T for b < batch, all row-major:
// x [M, K] (leading dimension ldx), w [N, K] (ldw), out [M, N] (ldo); stride_* = elements between batches.
// x_type = w_type = F8_E4M3: DeepSeek's block-scaled FP8 product (cuBLASLt's VEC128_32F / BLK128x128_32F scale
// modes, sm_90+): x's value is code * x_scale[(k / 128) * M + m] (x_scale [K / 128, M] f32: K-block-major, rows
// contiguous) and w's code * w_scale[n / 128, k / 128] (w_scale [ceil(N / 128), K / 128] f32, row-major: the
// checkpoint's scale grid) — the layouts bench/kernels/quant_gemv/probe_cublaslt_block_fp8.cu found cuBLASLt 13.1
// to read (H100, 2026-12-06); K % 128 == 0, batch 1. No fallback kernel reads FP8: BlasHandle::supports says
// whether cuBLASLt has an algorithm.
struct GemmArgs {
  const void* x = nullptr;
  const void* w = nullptr;
  void* out = nullptr;
  DType x_type = DType::BF16, w_type = DType::BF16, out_type = DType::BF16;
  int64_t M = 0, N = 0, K = 0, batch = 1;
  int64_t ldx = 0, ldw = 0, ldo = 0;
  int64_t stride_x = 0, stride_w = 0, stride_o = 0;
  const float* x_scale = nullptr;  // FP8 operands only
  const float* w_scale = nullptr;
};

struct BlasHandle {
  static constexpr size_t kDefaultWorkspaceBytes = size_t{32} << 20;  // NVIDIA's recommendation for Hopper

  explicit BlasHandle(size_t workspace_bytes = kDefaultWorkspaceBytes);
  ~BlasHandle();
  BlasHandle(const BlasHandle&) = delete;
  BlasHandle& operator=(const BlasHandle&) = delete;

  // out = x · w^T with fp32 accumulation on ctx's stream (cuBLASLt; a plain tiled kernel for the rare
  // shape cuBLASLt has no algorithm for). Capture-safe once the shape has been seen.
  void gemm(const ExecContext& ctx, const GemmArgs& args);
  // Whether gemm runs these operands on cuBLASLt (a host-side heuristic query the first time a shape is seen; FP8
  // operands have no other path).
  bool supports(const GemmArgs& args);

  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

 private:
  static constexpr int64_t kExactPlanRows = 256;  // row counts up to this get a plan of their own (decode, graphs)
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;  // b and d at M rows
    cublasLtMatmulAlgo_t algo{};
    bool use_lt = false;  // false: no cuBLASLt algorithm for this shape, use the fallback kernel
    int64_t M = 0;
    std::map<int64_t, bool> serves;  // a bucket's plan: whether its algorithm runs these row counts
  };
  using Key = std::array<int64_t, 16>;
  // The plan of these operands: the exact M's, or (bucket) the plan of M's power-of-two bucket where that applies.
  Plan& plan_for(const GemmArgs& args, bool bucket = true);
  std::map<Key, Plan> plans_;
};

// The fallback GEMM (also used by tests to check cuBLASLt's results against a second implementation).
void gemm_fallback(const ExecContext& ctx, const GemmArgs& args);

}  // namespace dsv4::cuda
