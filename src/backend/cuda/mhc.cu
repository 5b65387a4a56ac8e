// Manifold-constrained hyper-connections (mHC) on CUDA: hc_pre (mixing GEMV + Sinkhorn + collapse),
// hc_post and hc_head. Mixing logits, Sinkhorn and the collapse weights are fp32, as in the reference.
#include <type_traits>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// One block per token. Each thread accumulates, over its slice of the flattened streams x [N*H], the
// sum of squares and the ROWS dot products with fn; one block reduction gives m = (fn @ x) * rsqrt(mean x²).
// HEAD: hc_head (ROWS = N: sigmoid weights only); otherwise hc_pre (ROWS = (2+N)N: pre, post, Sinkhorn comb).
template <int N, bool HEAD, typename TO, typename TI>
__global__ void __launch_bounds__(kThreads)
    hc_mix_kernel(TO* __restrict__ collapsed, float* __restrict__ post, float* __restrict__ comb,
                  const TI* __restrict__ x, const float* __restrict__ fn, const float* __restrict__ base,
                  const float* __restrict__ scale, int64_t H, float eps, float hc_eps, int sinkhorn_iters) {
  constexpr int ROWS = HEAD ? N : (2 + N) * N;
  pdl_wait();
  __shared__ float partial[kThreads / 32][ROWS + 1];
  __shared__ float m[ROWS + 1];
  __shared__ float pre[N];
  const int64_t t = blockIdx.x, width = N * H;
  const TI* xt = x + t * width;
  float acc[ROWS + 1];
#pragma unroll
  for (int k = 0; k <= ROWS; ++k) acc[k] = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += kThreads) {
    const float v = to_float(xt[i]);
    acc[ROWS] = fmaf(v, v, acc[ROWS]);
#pragma unroll
    for (int k = 0; k < ROWS; ++k) acc[k] = fmaf(fn[k * width + i], v, acc[k]);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k <= ROWS; ++k) {
    const float s = warp_sum(acc[k]);
    if (lane == 0) partial[warp][k] = s;
  }
  __syncthreads();
  for (int k = threadIdx.x; k <= ROWS; k += kThreads) {
    float s = 0;
    for (int w = 0; w < kThreads / 32; ++w) s += partial[w][k];
    m[k] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    const float r = 1.0f / sqrtf(m[ROWS] / static_cast<float>(width) + eps);
    if (HEAD) {
      for (int i = 0; i < N; ++i) pre[i] = sigmoidf(m[i] * r * scale[0] + base[i]) + hc_eps;
    } else {
      float mm[ROWS];
      for (int k = 0; k < ROWS; ++k) mm[k] = m[k] * r;
      for (int i = 0; i < N; ++i) {
        pre[i] = sigmoidf(mm[i] * scale[0] + base[i]) + hc_eps;
        post[t * N + i] = 2.0f * sigmoidf(mm[N + i] * scale[1] + base[N + i]);
      }
      float C[N][N];
      for (int i = 0; i < N; ++i) {  // row-wise softmax, then + eps
        float mx = -INFINITY;
        for (int j = 0; j < N; ++j) {
          C[i][j] = mm[2 * N + i * N + j] * scale[2] + base[2 * N + i * N + j];
          mx = fmaxf(mx, C[i][j]);
        }
        float sum = 0;
        for (int j = 0; j < N; ++j) sum += (C[i][j] = expf(C[i][j] - mx));
        for (int j = 0; j < N; ++j) C[i][j] = C[i][j] / sum + hc_eps;
      }
      for (int it = 0; it < sinkhorn_iters; ++it) {  // columns first; then (rows, columns) x (iters - 1)
        if (it > 0) {
          for (int i = 0; i < N; ++i) {
            float sum = 0;
            for (int j = 0; j < N; ++j) sum += C[i][j];
            for (int j = 0; j < N; ++j) C[i][j] /= (sum + hc_eps);
          }
        }
        for (int j = 0; j < N; ++j) {
          float sum = 0;
          for (int i = 0; i < N; ++i) sum += C[i][j];
          for (int i = 0; i < N; ++i) C[i][j] /= (sum + hc_eps);
        }
      }
      for (int i = 0; i < N; ++i) {
        for (int j = 0; j < N; ++j) comb[(t * N + i) * N + j] = C[i][j];
      }
    }
  }
  __syncthreads();
  for (int64_t h = threadIdx.x; h < H; h += kThreads) {
    float a = 0;
#pragma unroll
    for (int i = 0; i < N; ++i) a = fmaf(pre[i], to_float(xt[i * H + h]), a);
    collapsed[t * H + h] = from_float<TO>(a);
  }
}

// out[t, j] = post[t, j] * y[t] + sum_i comb[t, i, j] * x[t, i]
template <int N, typename TO, typename TY, typename TX>
__global__ void hc_post_kernel(TO* __restrict__ out, const TY* __restrict__ y, const TX* __restrict__ x,
                               const float* __restrict__ post, const float* __restrict__ comb, int64_t H) {
  pdl_wait();
  const int64_t t = blockIdx.y;
  __shared__ float P[N], C[N * N];
  if (threadIdx.x < N) P[threadIdx.x] = post[t * N + threadIdx.x];
  if (threadIdx.x < N * N) C[threadIdx.x] = comb[t * N * N + threadIdx.x];
  __syncthreads();
  for (int64_t h = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; h < H;
       h += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float xv[N];
#pragma unroll
    for (int i = 0; i < N; ++i) xv[i] = to_float(x[(t * N + i) * H + h]);
    const float yv = to_float(y[t * H + h]);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      float a = P[j] * yv;
#pragma unroll
      for (int i = 0; i < N; ++i) a = fmaf(C[i * N + j], xv[i], a);
      out[(t * N + j) * H + h] = from_float<TO>(a);
    }
  }
}

// Calls f(std::integral_constant<int, n>) for the supported stream counts.
template <typename F>
void dispatch_streams(int64_t n, F&& f) {
  switch (n) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    default:
      fail(StatusCode::kUnsupported, "mHC on CUDA supports hc_mult 1..4, got ", n);
  }
}

template <bool HEAD>
void launch_mix(ExecContext& ctx, Tensor collapsed, Tensor post, Tensor comb, Tensor x, Tensor fn, Tensor base,
                Tensor scale, const ModelConfig& cfg, const char* name) {
  const int64_t T = x.size(0), H = x.size(2);
  if (T == 0) return;
  dispatch_streams(x.size(1), [&](auto nc) {
    constexpr int N = decltype(nc)::value;
    dispatch_float(collapsed.dtype(), name, [&](auto o) {
      dispatch_float(x.dtype(), name, [&](auto i) {
        using TO = decltype(o);
        using TI = decltype(i);
        check_launch(launch_kernel(hc_mix_kernel<N, HEAD, TO, TI>, dim3(static_cast<unsigned>(T)), dim3(kThreads), 0,
                                   stream_of(ctx), collapsed.ptr<TO>(), post.ptr<float>(), comb.ptr<float>(),
                                   x.ptr<TI>(), fn.ptr<float>(), base.ptr<float>(), scale.ptr<float>(), H,
                                   static_cast<float>(cfg.rms_norm_eps), static_cast<float>(cfg.hc_eps),
                                   static_cast<int>(cfg.hc_sinkhorn_iters)),
                     name);
      });
    });
  });
}

}  // namespace

void hc_pre(ExecContext& ctx, Tensor collapsed, Tensor post, Tensor comb, Tensor x, Tensor fn, Tensor base,
            Tensor scale, const ModelConfig& cfg) {
  DSV4_CHECK_ARG(cfg.hc_sinkhorn_iters >= 1, "hc_pre: hc_sinkhorn_iters must be >= 1");
  launch_mix<false>(ctx, collapsed, post, comb, x, fn, base, scale, cfg, "hc_pre");
}

void hc_head(ExecContext& ctx, Tensor out, Tensor x, Tensor fn, Tensor base, Tensor scale, const ModelConfig& cfg) {
  launch_mix<true>(ctx, out, Tensor(), Tensor(), x, fn, base, scale, cfg, "hc_head");
}

void hc_post(ExecContext& ctx, Tensor out, Tensor y, Tensor x, Tensor post, Tensor comb) {
  const int64_t T = x.size(0), H = x.size(2);
  if (T == 0) return;
  dispatch_streams(x.size(1), [&](auto nc) {
    constexpr int N = decltype(nc)::value;
    dispatch_float(out.dtype(), "hc_post out", [&](auto o) {
      dispatch_float(y.dtype(), "hc_post y", [&](auto yv) {
        dispatch_float(x.dtype(), "hc_post x", [&](auto xv) {
          using TO = decltype(o);
          using TY = decltype(yv);
          using TX = decltype(xv);
          const dim3 grid(std::max(1u, std::min(blocks_for(H, kThreads), 64u)), static_cast<unsigned>(T));
          check_launch(launch_kernel(hc_post_kernel<N, TO, TY, TX>, grid, dim3(kThreads), 0, stream_of(ctx),
                                     out.ptr<TO>(), y.ptr<TY>(), x.ptr<TX>(), post.ptr<float>(), comb.ptr<float>(), H),
                       "hc_post");
        });
      });
    });
  });
}

}  // namespace dsv4::cuda
