// GPT-J interleaved RoPE on the last rope_dim channels of each head, in place.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/rope.cuh"

namespace dsv4::cuda {
namespace {

// Blocks (tokens, group of heads): each token's cos/sin are computed once per block into shared memory, then each
// thread rotates one pair of one head of one token (32-bit index math: the pair loop is the whole kernel at decode).
// With few heads (the tiny model's 4 x 8 pairs) a block takes several tokens, where a block per token left 224 of 256
// threads idle and an 8,192-token prompt took 8,192 blocks of 32 threads (12 us a launch on an H100).
template <typename T>
__global__ void rope_kernel(T* x, const int32_t* __restrict__ pos, const float* __restrict__ inv_freq, int64_t tokens,
                            int64_t heads, int64_t dim, int half, int heads_per_block, int tokens_per_block,
                            float attention_factor, bool inverse) {
  pdl_wait();
  extern __shared__ float cs[];  // per token of the block: [half] cos, [half] sin
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * tokens_per_block;
  const int nt = static_cast<int>(min(static_cast<int64_t>(tokens_per_block), tokens - t0));
  for (int i = threadIdx.x; i < nt * half; i += blockDim.x) {
    const int j = i / half, f = i - j * half;
    rope_cos_sin(inv_freq[f], static_cast<float>(pos[t0 + j]), attention_factor, inverse, &cs[2 * half * j + f],
                 &cs[2 * half * j + half + f]);
  }
  __syncthreads();
  const int64_t h0 = static_cast<int64_t>(blockIdx.y) * heads_per_block;
  const int pairs = static_cast<int>(min(static_cast<int64_t>(heads_per_block), heads - h0)) * half;
  for (int k = threadIdx.x; k < nt * pairs; k += blockDim.x) {
    const int j = k / pairs, kk = k - j * pairs, h = kk / half, i = kk - h * half;
    T* r = x + ((t0 + j) * heads + h0 + h) * dim + (dim - 2 * half) + 2 * i;
    const float x0 = to_float(r[0]), x1 = to_float(r[1]), c = cs[2 * half * j + i], s = cs[2 * half * j + half + i];
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
  // Several tokens a block when one block holds all of a token's pairs in under half its threads.
  const int tokens_per_block = head_blocks == 1 ? std::max<int>(1, kThreads / static_cast<int>(heads * half)) : 1;
  const int threads = static_cast<int>(std::min<int64_t>(
      kThreads, (int64_t{tokens_per_block} * std::min<int64_t>(heads_per_block, heads) * half + 31) / 32 * 32));
  const unsigned token_blocks = static_cast<unsigned>((T + tokens_per_block - 1) / tokens_per_block);
  dispatch_float(x.dtype(), "rope x", [&](auto v) {
    using TX = decltype(v);
    check_launch(launch_kernel(rope_kernel<TX>, dim3(token_blocks, head_blocks), dim3(threads),
                               static_cast<size_t>(tokens_per_block) * R * sizeof(float), stream_of(ctx), x.ptr<TX>(),
                               pos.ptr<int32_t>(), table.inv_freq.ptr<float>(), T, heads, dim, half, heads_per_block,
                               tokens_per_block, table.attention_factor, inverse),
                 "rope");
  });
}

}  // namespace dsv4::cuda
