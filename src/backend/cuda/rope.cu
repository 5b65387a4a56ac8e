// GPT-J interleaved RoPE on the last rope_dim channels of each head, in place.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/rope.cuh"

namespace dsv4::cuda {
namespace {

// One block per token: the token's cos/sin are computed once into shared memory, then every head's
// rotary pairs are rotated.
template <typename T>
__global__ void rope_kernel(T* x, const int32_t* __restrict__ pos, const float* __restrict__ inv_freq, int64_t heads,
                            int64_t dim, int64_t rope_dim, float attention_factor, bool inverse) {
  pdl_wait();
  extern __shared__ float cs[];  // [half] cos, [half] sin
  const int64_t t = blockIdx.x, half = rope_dim / 2;
  const float p = static_cast<float>(pos[t]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    rope_cos_sin(inv_freq[i], p, attention_factor, inverse, &cs[i], &cs[half + i]);
  }
  __syncthreads();
  T* xt = x + t * heads * dim + (dim - rope_dim);
  for (int64_t k = threadIdx.x; k < heads * half; k += blockDim.x) {
    const int64_t h = k / half, i = k % half;
    T* r = xt + h * dim + 2 * i;
    const float x0 = to_float(r[0]), x1 = to_float(r[1]), c = cs[i], s = cs[half + i];
    r[0] = from_float<T>(x0 * c - x1 * s);
    r[1] = from_float<T>(x1 * c + x0 * s);
  }
}

}  // namespace

void rope(ExecContext& ctx, Tensor x, Tensor pos, const RopeTable& table, bool inverse) {
  const int64_t T = x.size(0), heads = x.size(1), dim = x.size(2), R = table.rope_dim;
  if (T == 0 || heads == 0 || R == 0) return;
  const int threads = static_cast<int>(std::min<int64_t>(256, std::max<int64_t>(32, (heads * R / 2 + 31) / 32 * 32)));
  dispatch_float(x.dtype(), "rope x", [&](auto v) {
    using TX = decltype(v);
    check_launch(launch_kernel(rope_kernel<TX>, dim3(static_cast<unsigned>(T)), dim3(threads), R * sizeof(float),
                               stream_of(ctx), x.ptr<TX>(), pos.ptr<int32_t>(), table.inv_freq.ptr<float>(), heads, dim,
                               R, table.attention_factor, inverse),
                 "rope");
  });
}

}  // namespace dsv4::cuda
