// Synthetic weights on the GPU: a grid-stride fill with the counter-based generator of core/hash_random.h,
// so tens of GB of random bf16 weights take milliseconds and equal what the CPU would write.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "dsv4/core/hash_random.h"

namespace dsv4::cuda {
namespace {

template <typename T>
__global__ void fill_random_kernel(T* out, int64_t n, uint64_t seed, float mean, float std) {
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = from_float<T>(mean + std * hash_normal(seed, static_cast<uint64_t>(i)));
  }
}

__global__ void fill_expert_table_kernel(int32_t* out, int64_t rows, int64_t k, uint64_t seed, int64_t experts) {
  pdl_wait();
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t start = static_cast<int64_t>(splitmix64(seed + static_cast<uint64_t>(r)) % experts);
    for (int64_t j = 0; j < k; ++j) out[r * k + j] = static_cast<int32_t>((start + j) % experts);
  }
}

dim3 grid_for(int64_t n) { return dim3(static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 132 * 64))); }

}  // namespace

void fill_random(ExecContext& ctx, Tensor out, uint64_t seed, float mean, float std) {
  const int64_t n = out.numel();
  const cudaStream_t stream = static_cast<cudaStream_t>(ctx.stream);
  if (out.dtype() == DType::BF16) {
    throw_if_error(launch_kernel(fill_random_kernel<bf16>, grid_for(n), dim3(256), 0, stream, out.ptr<bf16>(), n,
                                 seed, mean, std));
  } else {
    throw_if_error(launch_kernel(fill_random_kernel<float>, grid_for(n), dim3(256), 0, stream, out.ptr<float>(), n,
                                 seed, mean, std));
  }
}

void fill_expert_table(ExecContext& ctx, Tensor out, uint64_t seed, int64_t num_experts) {
  const int64_t rows = out.size(0);
  throw_if_error(launch_kernel(fill_expert_table_kernel, grid_for(rows), dim3(256), 0,
                               static_cast<cudaStream_t>(ctx.stream), out.ptr<int32_t>(), rows, out.size(1), seed,
                               num_experts));
}

}  // namespace dsv4::cuda
