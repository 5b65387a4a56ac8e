// --activation-quant fp8 on CUDA: DeepSeek's act_quant before every product its checkpoints hold in FP8 / FP4.
// Each row's values in blocks of 128, E4M3 at a power-of-two (UE8M0) scale per block, given back dequantised — the
// CPU's kv_round_trip kFp8Blocks128 with the same codec (dsv4/ops/kv_fp8.h, checked bit for bit against the host's
// in tests/unit/kv_cache_test.cc). E4M3 values times a power of two are bf16 values, so BF16 rows hold the result
// exactly: the products that follow then see the quantised activations unrounded.
//
// One warp per 128-value block (4 values per lane: lane + 32 j), the amax a warp max (NaN-ignoring, as the CPU's
// std::max), blocks of a row spread over the block's warps. The MoE form scales each expert row of the SwiGLU
// intermediate by its pair's routing weight first (the reference applies the weight before w2; the shared expert's
// rows by 1), so the combine then adds the rows with weight 1.
#include "backend/cuda/act_quant.h"
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/kv_fp8.cuh"

namespace dsv4::cuda {
namespace {

using namespace kvfp8_dev;

constexpr int kActBlock = 128;
constexpr int kActThreads = 256;

// The power-of-two scale of a warp's 128-value block (lane + 32 j holds v[j]), the same on every lane.
__device__ __forceinline__ float warp_block_scale(const float (&v)[4]) {
  float m = 0.0f;
#pragma unroll
  for (int j = 0; j < 4; ++j) m = fmaxf(m, fabsf(v[j]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  return pow2(block_exponent(fmaxf(m, kAmaxFloor)));
}

// out = the round trip of in * mul (`width` values; out may be in), by the calling block.
template <typename T>
__device__ __forceinline__ void round_trip_row(T* out, const T* in, int64_t width, float mul) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t lo = static_cast<int64_t>(warp) * kActBlock; lo < width; lo += static_cast<int64_t>(warps) * kActBlock) {
    const int64_t n = min(static_cast<int64_t>(kActBlock), width - lo);
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = lane + 32 * j;
      v[j] = i < n ? to_float(in[lo + i]) * mul : 0.0f;
    }
    const float s = warp_block_scale(v);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t i = lane + 32 * j;
      if (i < n) out[lo + i] = from_float<T>(e4m3_value(e4m3_encode(divide(v[j], s))) * s);
    }
  }
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
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t p = blockIdx.x, row = plan_row(plan, p);
  const float mul = p < routed_pairs ? weights[p] : 1.0f;
  for (int64_t b = warp; b < width / kActBlock; b += warps) {
    const int64_t lo = row * width + b * kActBlock;
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = to_float(act[lo + lane + 32 * j]) * mul;
    const float s = warp_block_scale(v);
#pragma unroll
    for (int j = 0; j < 4; ++j) codes[lo + lane + 32 * j] = e4m3_encode(divide(v[j], s));
    if (lane == 0) scales[b * pairs + row] = s;
  }
}

// Row blockIdx.x of the FP8 codes: the round trip's codes and scales instead of its values (rows past `rows`:
// zero codes at scale 1, the padding of a GEMM that takes rows in multiples of 16). Scales K-block-major
// ([width / 128, rows_padded], gridDim.x = rows_padded): cuBLASLt's VEC128_32F layout.
template <typename T>
__global__ void __launch_bounds__(kActThreads)
    activation_fp8_codes_kernel(const T* __restrict__ src, int64_t ld, int64_t rows, int64_t width,
                                uint8_t* __restrict__ codes, float* __restrict__ scales) {
  pdl_wait();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t r = blockIdx.x, blocks = width / kActBlock;
  for (int64_t b = warp; b < blocks; b += warps) {
    const int64_t lo = b * kActBlock;
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = r < rows ? to_float(src[r * ld + lo + lane + 32 * j]) : 0.0f;
    const float s = r < rows ? warp_block_scale(v) : 1.0f;  // padding rows: zero codes at scale 1
#pragma unroll
    for (int j = 0; j < 4; ++j) codes[r * width + lo + lane + 32 * j] = e4m3_encode(divide(v[j], s));
    if (lane == 0) scales[b * gridDim.x + r] = s;
  }
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

void activation_round_trip(ExecContext& ctx, Tensor x) {
  const int64_t width = x.ndim() >= 1 ? x.size(-1) : 0, rows = width > 0 ? x.numel() / width : 0;
  activation_round_trip_rows(stream_of(ctx), x.dtype(), x.data(), x.data(), rows, width);
}

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
