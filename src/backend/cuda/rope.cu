// GPT-J interleaved RoPE on the last rope_dim channels of each head, in place.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/rope.cuh"

namespace dsv4::cuda {
namespace {

// Blocks (token, group of heads): the token's cos/sin are computed once per block into shared memory, then
// each thread rotates one pair of one head (32-bit index math: the pair loop is the whole kernel at decode).
template <typename T>
__global__ void rope_kernel(T* x, const int32_t* __restrict__ pos, const float* __restrict__ inv_freq, int64_t heads,
                            int64_t dim, int half, int heads_per_block, float attention_factor, bool inverse) {
  pdl_wait();
  extern __shared__ float cs[];  // [half] cos, [half] sin
  const int64_t t = blockIdx.x;
  const float p = static_cast<float>(pos[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    rope_cos_sin(inv_freq[i], p, attention_factor, inverse, &cs[i], &cs[half + i]);
  }
  __syncthreads();
  const int64_t h0 = static_cast<int64_t>(blockIdx.y) * heads_per_block;
  T* xt = x + (t * heads + h0) * dim + (dim - 2 * half);
  const int pairs = static_cast<int>(min(static_cast<int64_t>(heads_per_block), heads - h0)) * half;
  for (int k = threadIdx.x; k < pairs; k += blockDim.x) {
    const int h = k / half, i = k - h * half;
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
  constexpr int kThreads = 256;
  const int half = static_cast<int>(R / 2);
  const int heads_per_block = std::max(1, kThreads / half);
  const unsigned head_blocks = static_cast<unsigned>((heads + heads_per_block - 1) / heads_per_block);
  const int threads = static_cast<int>(std::min<int64_t>(kThreads, (int64_t{heads_per_block} * half + 31) / 32 * 32));
  dispatch_float(x.dtype(), "rope x", [&](auto v) {
    using TX = decltype(v);
    check_launch(
        launch_kernel(rope_kernel<TX>, dim3(static_cast<unsigned>(T), head_blocks), dim3(threads), R * sizeof(float),
                      stream_of(ctx), x.ptr<TX>(), pos.ptr<int32_t>(), table.inv_freq.ptr<float>(), heads, dim, half,
                      heads_per_block, table.attention_factor, inverse),
        "rope");
  });
}

}  // namespace dsv4::cuda
