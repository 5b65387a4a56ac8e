// Weight-streaming GEMV for the dense projections at small T (decode): out[b] = x[b] · w[b]^T for a few
// rows of x, bf16 x and w, f32 or bf16 out, fp32 accumulation, each weight row read once for all rows.
//
// At decode a projection reads its whole weight matrix for 1-8 activation rows, so its cost is the weight
// bytes over the HBM bandwidth. cuBLASLt serves these shapes with split-K tensor-core GEMMs plus a separate
// split-K reduction and reaches about half the bandwidth on Flash's attention and shared-expert shapes; a
// GEMV that streams each weight row once with all rows of x applied to it and no second kernel reaches it.
// Deterministic (fixed-order reductions, no atomics) and graph-capturable (no allocation, no host reads).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/cuda/blas.h"

namespace dsv4::cuda {

// The most rows of x the GEMV serves. Per weight element the kernel issues T FMAs plus ~1 + T/4 unpacking
// operations; at T = 8 that is ~11 instructions per 2 bytes of HBM traffic, ~75% of an H200 SM's issue rate
// at full bandwidth, so beyond 8 rows the CUDA cores, not HBM, set the pace and tensor cores win.
constexpr int64_t kGemvMaxTokens = 8;

// The default policy, from bench_gemv on H200 (bench/RESULTS.md, 2026-11-28): the GEMV beats cuBLASLt's split-K
// GEMMs on every Flash projection at T <= 2 (1.23x per CSA layer at T = 1) and on matrices up to 8 MiB at any
// T <= 8 (1.2-2.4x: cuBLASLt's fixed cost dominates there), while the 16-67 MB ones fall behind from T = 4
// (0.65-0.93x at T = 8: fewer loads in flight per lane). Matrices above kGemvMaxWeightBytes (the 1.06 GB
// vocabulary head) stay on cuBLASLt, which already streams them at the copy bandwidth.
constexpr int64_t kGemvAnySizeTokens = 2;
constexpr int64_t kGemvSmallWeightBytes = int64_t{8} << 20;
constexpr int64_t kGemvMaxWeightBytes = int64_t{512} << 20;

// Whether the kernel can compute these operands: x and w bf16, out f32 or bf16, 1 <= M <= max_tokens,
// N >= 1, K % 8 == 0, x and w 16-byte aligned with ldx, ldw (and, for batch > 1, stride_x, stride_w) multiples
// of 8 elements. Any N, ldo and output alignment.
bool gemv_supports(const GemmArgs& g, int64_t max_tokens = kGemvMaxTokens);

// The dispatch policy of cuda::linear / grouped_linear: gemv_supports(g) and the size/T policy above.
// DSV4_GEMV=0 sends everything to cuBLASLt, 1 is the policy (the default), 2 takes the GEMV whenever it can
// (for timing). Read once. The choice depends on T, so a verification batch of more than 2 rows may project
// a large matrix on another path than a one-row step (cuBLASLt's split-K choice depends on T in any case).
bool gemv_serves(const GemmArgs& g);

// out[b] = x[b] · w[b]^T for b < g.batch on `stream` (requires gemv_supports(g)). Bit-identical run to run,
// and each output row is the same bits whatever M is (the summation order depends on N, K and batch only):
// a speculative verification batch projects every row exactly as a one-row decode step. Graph-capturable.
void gemv(cudaStream_t stream, const GemmArgs& g);

// The most projections one gemv_many launch takes.
constexpr int kMaxGemvMatrices = 8;

// gemv for n <= kMaxGemvMatrices unbatched projections of the same x (same M, K, ldx; each N, w, out and out
// dtype its own) in one launch. Each output is the same bits as its own gemv call.
void gemv_many(cudaStream_t stream, const GemmArgs* gs, int n);

}  // namespace dsv4::cuda
