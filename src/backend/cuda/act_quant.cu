// --activation-quant fp8 on CUDA: DeepSeek's act_quant before every product its checkpoints hold in FP8 / FP4.
// Each row's values in blocks of 128, E4M3 at a power-of-two (UE8M0) scale per block, given back dequantised — the
// CPU's kv_round_trip kFp8Blocks128 with the same codec (dsv4/ops/kv_fp8.h, checked bit for bit against the host's
// in tests/unit/kv_cache_test.cc). E4M3 values times a power of two are bf16 values, so BF16 rows hold the result
// exactly: the products that follow then see the quantised activations unrounded.
//
// One warp per 128-value block (4 consecutive values a lane, one vector access where aligned), the amax a warp max
// (NaN-ignoring, as the CPU's std::max), blocks of a row spread over the block's warps, each warp's loads of
// kActUnroll blocks issued before their reductions. The MoE form scales each expert row of the SwiGLU
// intermediate by its pair's routing weight first (the reference applies the weight before w2; the shared expert's
// rows by 1), so the combine then adds the rows with weight 1.
#include <cuda_fp8.h>

#include "backend/cuda/act_quant.h"
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/kv_fp8.cuh"

namespace dsv4::cuda {
namespace {

using namespace kvfp8_dev;

constexpr int kActBlock = 128;
constexpr int kActThreads = 256;
constexpr int kActUnroll = 4;  // blocks a warp loads before it reduces any: its loads in flight at once

// The scale exponent of a warp's 128-value block (lane l holds values 4 l .. 4 l + 3 in v), the same on every lane.
__device__ __forceinline__ int warp_block_exponent(const float (&v)[4]) {
  float m = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) m = fmaxf(m, fabsf(v[j]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  return block_exponent(fmaxf(m, kAmaxFloor));
}

// x's E4M3 code at scale 2^e: x * 2^-e (the quotient x / 2^e that kv_fp8.h's codec takes, exactly: both are the
// correctly rounded value of the same real) through the hardware's round-to-nearest-even conversion, saturating at
// +-448 — bit for bit kv_fp8.h's e4m3_encode for every value but NaN (0x7F or 0xFF here, 0x7F there: both NaN), in a
// few instructions where the software encoder's division, frexpf and ldexpf take dozens (these kernels were bound by
// them).
__device__ __forceinline__ uint8_t e4m3_code(float x, int e) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x * pow2(-e), __NV_SATFINITE, __NV_E4M3));
}

template <typename T>
struct alignas(4 * sizeof(T)) Vec4 {
  T x[4];
};
struct alignas(4) Codes4 {
  uint8_t c[4];
};

// v = p[0 .. 4) * mul, values at or past n as 0: one vector load where all four are in and p is aligned.
template <typename T>
__device__ __forceinline__ void load4(float (&v)[4], const T* p, int64_t n, float mul) {
  if (n >= 4 && reinterpret_cast<uintptr_t>(p) % sizeof(Vec4<T>) == 0) {
    const Vec4<T> q = *reinterpret_cast<const Vec4<T>*>(p);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = to_float(q.x[j]) * mul;
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) v[j] = j < n ? to_float(p[j]) * mul : 0.0f;
}

// p[0 .. min(n, 4)) = the values' round trip at scale 2^e.
template <typename T>
__device__ __forceinline__ void store4_round_trip(T* p, int64_t n, const float (&v)[4], int e) {
  const float s = pow2(e);
  Vec4<T> q;
#pragma unroll
  for (int j = 0; j < 4; ++j) q.x[j] = from_float<T>(e4m3_value(e4m3_code(v[j], e)) * s);
  if (n >= 4 && reinterpret_cast<uintptr_t>(p) % sizeof(Vec4<T>) == 0) {
    *reinterpret_cast<Vec4<T>*>(p) = q;
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j)
    if (j < n) p[j] = q.x[j];
}

// p[0 .. 4) = the values' E4M3 codes at scale 2^e (whole 128-value blocks: always four).
__device__ __forceinline__ void store4_codes(uint8_t* p, const float (&v)[4], int e) {
  Codes4 q;
#pragma unroll
  for (int j = 0; j < 4; ++j) q.c[j] = e4m3_code(v[j], e);
  if (reinterpret_cast<uintptr_t>(p) % 4 == 0) {
    *reinterpret_cast<Codes4*>(p) = q;
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) p[j] = q.c[j];
}

// For every 128-value block b of a row (a warp takes b = warp, warp + warps, ...): load(b, v) fills this lane's four
// values (4 lane .. 4 lane + 3 of the block), store(b, v, e) writes them at the block's scale 2^e. A warp loads
// kActUnroll blocks before it reduces any.
template <typename Load, typename Store>
__device__ __forceinline__ void for_each_block(int64_t blocks, Load load, Store store) {
  const int64_t warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t b0 = warp; b0 < blocks; b0 += warps * kActUnroll) {
    float v[kActUnroll][4];
#pragma unroll
    for (int u = 0; u < kActUnroll; ++u) {
      const int64_t b = b0 + u * warps;
      if (b < blocks) load(b, v[u]);
    }
#pragma unroll
    for (int u = 0; u < kActUnroll; ++u) {
      const int64_t b = b0 + u * warps;  // warp-uniform: the scale's shuffles see every lane
      if (b < blocks) store(b, v[u], warp_block_exponent(v[u]));
    }
  }
}

// out = the round trip of in * mul (`width` values; out may be in), by the calling block.
template <typename T>
__device__ __forceinline__ void round_trip_row(T* out, const T* in, int64_t width, float mul) {
  const int64_t l4 = 4 * (threadIdx.x & 31);
  for_each_block((width + kActBlock - 1) / kActBlock,
                 [&](int64_t b, float(&v)[4]) { load4(v, in + b * kActBlock + l4, width - b * kActBlock - l4, mul); },
                 [&](int64_t b, const float(&v)[4], int e) {
                   store4_round_trip(out + b * kActBlock + l4, width - b * kActBlock - l4, v, e);
                 });
}

template <typename T>
__global__ void __launch_bounds__(kActThreads) activation_round_trip_kernel(T* out, const T* in, int64_t width) {
  pdl_wait();
  const int64_t r = static_cast<int64_t>(blockIdx.x) * width;
  round_trip_row(out + r, in + r, width, 1.0f);
}

// Block p: pair p's row of the expert-sorted intermediate, times the pair's weight (routed pairs) or 1 (shared).
template <typename T>
__global__ void __launch_bounds__(kActThreads)
    moe_act_round_trip_kernel(T* __restrict__ act, int64_t width, MoePlan plan, const float* __restrict__ weights,
                              int64_t routed_pairs) {
  pdl_wait();
  const int64_t p = blockIdx.x;
  const float mul = p < routed_pairs ? weights[p] : 1.0f;
  T* row = act + static_cast<int64_t>(plan_row(plan, p)) * width;
  round_trip_row(row, row, width, mul);
}

// Block p: pair p's row of the expert-sorted intermediate times its weight as codes and scales (moe_act_fp8_codes).
__global__ void __launch_bounds__(kActThreads)
    moe_act_fp8_codes_kernel(const bf16* __restrict__ act, int64_t width, MoePlan plan,
                             const float* __restrict__ weights, int64_t routed_pairs, int64_t pairs,
                             uint8_t* __restrict__ codes, float* __restrict__ scales) {
  pdl_wait();
  const int64_t p = blockIdx.x, row = plan_row(plan, p), l4 = 4 * (threadIdx.x & 31);
  const float mul = p < routed_pairs ? weights[p] : 1.0f;
  const bf16* src = act + row * width + l4;
  uint8_t* dst = codes + row * width + l4;
  for_each_block(
      width / kActBlock, [&](int64_t b, float(&v)[4]) { load4(v, src + b * kActBlock, 4, mul); },
      [&](int64_t b, const float(&v)[4], int e) {
        store4_codes(dst + b * kActBlock, v, e);
        if (l4 == 0) scales[b * pairs + row] = pow2(e);
      });
}

// Row blockIdx.x of the FP8 codes: the round trip's codes and scales instead of its values (rows past `rows`:
// zero codes at scale 1, the padding of a GEMM that takes rows in multiples of 16). Scales K-block-major
// ([width / 128, rows_padded], gridDim.x = rows_padded): cuBLASLt's VEC128_32F layout.
template <typename T>
__global__ void __launch_bounds__(kActThreads)
    activation_fp8_codes_kernel(const T* __restrict__ src, int64_t ld, int64_t rows, int64_t width,
                                uint8_t* __restrict__ codes, float* __restrict__ scales) {
  pdl_wait();
  const int64_t r = blockIdx.x, l4 = 4 * (threadIdx.x & 31);
  const bool live = r < rows;
  const T* in = src + (live ? r * ld : 0) + l4;
  uint8_t* dst = codes + r * width + l4;
  for_each_block(
      width / kActBlock, [&](int64_t b, float(&v)[4]) { load4(v, in + b * kActBlock, live ? 4 : 0, 1.0f); },
      [&](int64_t b, const float(&v)[4], int e) {
        e = live ? e : 0;  // padding rows: zero codes at scale 1
        store4_codes(dst + b * kActBlock, v, e);
        if (l4 == 0) scales[b * gridDim.x + r] = pow2(e);
      });
}

}  // namespace

void activation_fp8_codes(cudaStream_t stream, DType dtype, const void* src, int64_t ld, int64_t rows, int64_t width,
                          int64_t rows_padded, uint8_t* codes, float* scales) {
  DSV4_CHECK_ARG(width % kActBlock == 0 && rows >= 0 && rows <= rows_padded && rows_padded <= 0x7fffffff && ld >= width,
                 "activation_fp8_codes: rows ", rows, " of ", rows_padded, ", width ", width, ", ld ", ld);
  if (rows_padded == 0 || width == 0) return;
  dispatch_float(dtype, "activation_fp8_codes", [&](auto tag) {
    using T = decltype(tag);
    check_launch(
        launch_kernel(activation_fp8_codes_kernel<T>, dim3(static_cast<unsigned>(rows_padded)), dim3(kActThreads), 0,
                      stream, static_cast<const T*>(src), ld, rows, width, codes, scales),
        "activation_fp8_codes");
  });
}

void activation_round_trip_rows(cudaStream_t stream, DType dtype, void* dst, const void* src, int64_t rows,
                                int64_t width) {
  if (rows == 0 || width == 0) return;
  DSV4_CHECK_ARG(rows <= 0x7fffffff, "activation_round_trip on CUDA: ", rows, " rows");
  dispatch_float(dtype, "activation_round_trip", [&](auto tag) {
    using T = decltype(tag);
    check_launch(launch_kernel(activation_round_trip_kernel<T>, dim3(static_cast<unsigned>(rows)), dim3(kActThreads), 0,
                               stream, static_cast<T*>(dst), static_cast<const T*>(src), width),
                 "activation_round_trip");
  });
}

void activation_round_trip(ExecContext& ctx, Tensor out, Tensor x) {
  const int64_t width = x.ndim() >= 1 ? x.size(-1) : 0, rows = width > 0 ? x.numel() / width : 0;
  activation_round_trip_rows(stream_of(ctx), x.dtype(), out.data(), x.data(), rows, width);
}
void activation_round_trip(ExecContext& ctx, Tensor x) { activation_round_trip(ctx, x, x); }

template <typename T>
void moe_act_round_trip(cudaStream_t stream, T* act, int64_t width, const MoePlan& plan, const MoeActQuant& aq) {
  if (aq.pairs == 0) return;
  check_launch(launch_kernel(moe_act_round_trip_kernel<T>, dim3(static_cast<unsigned>(aq.pairs)), dim3(kActThreads), 0,
                             stream, act, width, plan, aq.weights, aq.routed_pairs),
               "moe_act_round_trip");
}
void moe_act_fp8_codes(cudaStream_t stream, const bf16* act, int64_t width, const MoePlan& plan, const MoeActQuant& aq,
                       uint8_t* codes, float* scales) {
  DSV4_CHECK_ARG(width % kActBlock == 0 && aq.pairs <= 0x7fffffff, "moe_act_fp8_codes: width ", width, ", ", aq.pairs,
                 " pairs");
  if (aq.pairs == 0 || width == 0) return;
  check_launch(launch_kernel(moe_act_fp8_codes_kernel, dim3(static_cast<unsigned>(aq.pairs)), dim3(kActThreads), 0,
                             stream, act, width, plan, aq.weights, aq.routed_pairs, aq.pairs, codes, scales),
               "moe_act_fp8_codes");
}
template void moe_act_round_trip<bf16>(cudaStream_t, bf16*, int64_t, const MoePlan&, const MoeActQuant&);
template void moe_act_round_trip<float>(cudaStream_t, float*, int64_t, const MoePlan&, const MoeActQuant&);

}  // namespace dsv4::cuda
