// kv_round_trip on CUDA (--kv-cache-dtype fp8): the batch's own kv rows become the values the packed cache gives
// back, so attention reads the same values from the batch now and from the ring later (as the CPU reference).
// Run on an H200 on 2026-12-05 (CudaKvFp8.*, memcheck and racecheck clean; bench/RESULTS.md).
//
// One block per row, in place. kFp8Blocks: a warp per 64-value block (the packers' quantise_block_warp), the RoPE
// part rounded to bf16; e4m3 values times a power of two are bf16 values, so BF16 rows hold the round trip exactly.
// kFp8Row: warp 0 (the scale is not a power of two: BF16 rows get the round trip rounded to bf16; the model only
// round-trips window rows, kFp8Blocks). kFp4Rotated (the indexer's query when its keys are FP4): a warp per row.
// Also cuda::and_bytes (dsv4/backend/cuda_device.h), which keeps the bench's random fp8 state finite.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/kv_fp8.cuh"
#include "dsv4/backend/cuda_device.h"

namespace dsv4::cuda {
namespace {

using namespace kvfp8_dev;

template <typename T>
__global__ void kv_round_trip_kernel(T* __restrict__ x, int64_t width, int64_t rope, bool row_format) {
  pdl_wait();
  T* row = x + static_cast<int64_t>(blockIdx.x) * width;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  if (row_format) {
    if (warp != 0) return;
    const float s = row_scale_warp(width, [&](int64_t i) { return to_float(row[i]); });
    for (int64_t i = lane; i < width; i += 32) {
      row[i] = from_float<T>(e4m3_value(e4m3_encode(divide(to_float(row[i]), s))) * s);
    }
    return;
  }
  const int64_t plain = width - rope;
  for (int64_t b = warp; b < blocks_of(plain); b += warps) {
    const int64_t lo = b * kBlock, n = min(kBlock, plain - lo);
    const float x0 = lane < n ? to_float(row[lo + lane]) : 0.0f;
    const float x1 = lane + 32 < n ? to_float(row[lo + lane + 32]) : 0.0f;
    uint8_t c0, c1;
    const float s = pow2(quantise_block_warp(x0, x1, &c0, &c1));
    if (lane < n) row[lo + lane] = from_float<T>(e4m3_value(c0) * s);
    if (lane + 32 < n) row[lo + lane + 32] = from_float<T>(e4m3_value(c1) * s);
  }
  for (int64_t i = plain + threadIdx.x; i < width; i += blockDim.x) {
    row[i] = from_float<T>(bf16_value(bf16_bits(to_float(row[i]))));
  }
}

// kFp4Rotated rows (the indexer's query): a warp per row, rotated and quantised as the packers do, the values written
// back (E2M1 values times powers of two: exact in BF16 rows too).
template <typename T, int V>
__global__ void fp4_round_trip_kernel(T* __restrict__ x, int64_t rows, int64_t n) {
  pdl_wait();
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;  // the whole warp: the shuffles below stay among live lanes
  T* row = x + r * n;
  float v[V];
  uint8_t c[V];
  fp4_load_warp<V>(v, n, [&](int64_t i) { return to_float(row[i]); });
  const float s = kvfp4::pow2(fp4_rotated_codes_warp<V>(v, n, c));
  const int64_t first = static_cast<int64_t>(threadIdx.x & 31) * V;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    if (first + i < n) row[first + i] = from_float<T>(kvfp4::e2m1_value(c[i]) * s);
  }
}

__global__ void and_bytes_kernel(uint8_t* p, size_t n, uint8_t keep) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    p[i] &= keep;
  }
}

}  // namespace

void and_bytes(void* data, size_t bytes, unsigned char keep) {
  if (bytes == 0) return;
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());  // the caller's fill ran on its own stream
  and_bytes_kernel<<<static_cast<unsigned>(std::min<size_t>((bytes + 255) / 256, 65536)), 256>>>(
      static_cast<uint8_t*>(data), bytes, keep);
  DSV4_CUDA_CHECK(cudaGetLastError());
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
}

void kv_round_trip(ExecContext& ctx, Tensor x, int64_t rope_dim, KvRoundTrip format) {
  const int64_t width = x.size(-1), rows = width > 0 ? x.numel() / width : 0;
  if (rows == 0) return;
  DSV4_CHECK(format == KvRoundTrip::kFp8Blocks || format == KvRoundTrip::kFp8Row || format == KvRoundTrip::kFp4Rotated,
             kUnsupported, "kv_round_trip on CUDA: ", kv_round_trip_name(format), " is not a cache format CUDA stores");
  DSV4_CHECK_ARG(rows <= 0x7fffffff, "kv_round_trip on CUDA: ", rows, " rows");
  if (format == KvRoundTrip::kFp4Rotated) {
    DSV4_CHECK(kvfp4::width_ok(width) && width <= kvfp4::kMaxDeviceWidth, kUnsupported,
               "kv_round_trip on CUDA: fp4-rotated rows are a power of two wide, at most ", kvfp4::kMaxDeviceWidth,
               ", got ", width);
    constexpr int kRowsPerBlock = 8;
    const dim3 grid(static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock));
    return dispatch_float(x.dtype(), "kv_round_trip", [&](auto tag) {
      using T = decltype(tag);
      with_fp4_lanes(width, [&](auto lanes) {
        check_launch(launch_kernel(fp4_round_trip_kernel<T, decltype(lanes)::value>, grid, dim3(32 * kRowsPerBlock), 0,
                                   stream_of(ctx), x.ptr<T>(), rows, width),
                     "kv_round_trip");
      });
    });
  }
  dispatch_float(x.dtype(), "kv_round_trip", [&](auto tag) {
    using T = decltype(tag);
    check_launch(
        launch_kernel(kv_round_trip_kernel<T>, dim3(static_cast<unsigned>(rows)), dim3(256), 0, stream_of(ctx),
                      x.ptr<T>(), width, format == KvRoundTrip::kFp8Row ? 0 : rope_dim, format == KvRoundTrip::kFp8Row),
        "kv_round_trip");
  });
}

}  // namespace dsv4::cuda
