// Lightning indexer top-k on CUDA.
//
// One block per query token. The query's heads and every visible key's score live in shared memory:
// score[s] = sum_h relu(q_h · k_s) * softmax_scale * w_h for s < min((pos+1)/rate, max_entries), then an
// exact rank selection (descending score, ties to the lower index — the CPU reference's order) writes the
// top-k. Visibility is per query, read from the device BatchMeta; the grid depends only on T.
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename TK>
__global__ void __launch_bounds__(kThreads)
    indexer_topk_kernel(int32_t* __restrict__ out, const float* __restrict__ q, const float* __restrict__ w,
                        const TK* __restrict__ keys, const int32_t* __restrict__ pos_of,
                        const int32_t* __restrict__ slot_of, int64_t heads, int64_t Di, int64_t rate,
                        int64_t max_entries, int64_t topk, float softmax_scale) {
  pdl_wait();
  extern __shared__ float smem[];
  const int64_t qs = Di + 1;         // padded query row: lanes read different heads without conflicts
  float* qsh = smem;                 // [heads, Di + 1]
  float* wsh = qsh + heads * qs;     // [heads]
  float* ksh = wsh + heads;          // [kWarps, Di]: each warp's current key
  float* score = ksh + kWarps * Di;  // [max_entries]
  const int64_t t = blockIdx.x;
  const int32_t pos = pos_of[t], slot = slot_of[t];
  int32_t* sel = out + t * topk;
  const int64_t visible = slot < 0 ? 0 : min(static_cast<int64_t>((pos + 1) / rate), max_entries);
  if (visible <= topk) {  // every visible entry, in index order
    for (int64_t k = threadIdx.x; k < topk; k += kThreads) sel[k] = k < visible ? static_cast<int32_t>(k) : -1;
    return;
  }
  for (int64_t i = threadIdx.x; i < heads * Di; i += kThreads) qsh[(i / Di) * qs + i % Di] = q[t * heads * Di + i];
  for (int64_t h = threadIdx.x; h < heads; h += kThreads) wsh[h] = w[t * heads + h] * softmax_scale;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const TK* K = keys + static_cast<int64_t>(slot) * max_entries * Di;
  float* kw = ksh + warp * Di;
  for (int64_t s = warp; s < visible; s += kWarps) {
    for (int64_t d = lane; d < Di; d += 32) kw[d] = to_float(K[s * Di + d]);
    __syncwarp();
    float acc = 0;
    for (int64_t h = lane; h < heads; h += 32) {
      const float* qh = qsh + h * qs;
      float dot = 0;
      for (int64_t d = 0; d < Di; ++d) dot = fmaf(qh[d], kw[d], dot);
      acc = fmaf(fmaxf(dot, 0.0f), wsh[h], acc);
    }
    acc = warp_sum(acc);
    if (lane == 0) score[s] = acc;
    __syncwarp();  // kw is rewritten for the next key
  }
  __syncthreads();
  for (int64_t s = threadIdx.x; s < visible; s += kThreads) {
    const float v = score[s];
    int64_t rank = 0;
    for (int64_t o = 0; o < visible && rank < topk; ++o) {
      const float u = score[o];
      rank += (u > v || (u == v && o < s)) ? 1 : 0;
    }
    if (rank < topk) sel[rank] = static_cast<int32_t>(s);
  }
}

int max_shared_optin() {
  static const int bytes = [] {
    int dev = 0, v = 0;
    throw_if_error(cuda_status(cudaGetDevice(&dev), "cudaGetDevice"));
    throw_if_error(cuda_status(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
                               "cudaDeviceGetAttribute(max shared memory per block)"));
    return v;
  }();
  return bytes;
}

}  // namespace

void indexer_topk(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale) {
  const int64_t T = meta.num_tokens, heads = q.size(1), Di = q.size(2), topk = out.size(1);
  const int64_t max_entries = keys.entries.size(1);
  if (T == 0) return;
  const size_t shared = sizeof(float) * static_cast<size_t>(heads * (Di + 1) + heads + kWarps * Di + max_entries);
  DSV4_CHECK(shared <= static_cast<size_t>(max_shared_optin()), kUnsupported, "indexer_topk on CUDA keeps a query's ",
             max_entries, " candidate scores and its ", heads, "x", Di, " query in shared memory (", shared,
             " bytes), more than the device allows (", max_shared_optin(), "); lower max_seq_len");
  dispatch_float(keys.entries.dtype(), "indexer keys", [&](auto k) {
    using TK = decltype(k);
    if (shared > 48 * 1024) {
      throw_if_error(
          cuda_status(cudaFuncSetAttribute(indexer_topk_kernel<TK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(shared)),
                      "cudaFuncSetAttribute(indexer_topk)"));
    }
    check_launch(launch_kernel(indexer_topk_kernel<TK>, dim3(static_cast<unsigned>(T)), dim3(kThreads), shared,
                               stream_of(ctx), out.ptr<int32_t>(), q.ptr<float>(), w.ptr<float>(),
                               keys.entries.ptr<TK>(), meta.pos.ptr<int32_t>(), meta.slot.ptr<int32_t>(), heads, Di,
                               keys.rate, max_entries, topk, softmax_scale),
                 "indexer_topk");
  });
}

}  // namespace dsv4::cuda
