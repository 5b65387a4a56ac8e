// Dense CUDA ops: embedding, stream broadcast, projections (GEMV at small T, cuBLASLt otherwise), RMSNorm and
// elementwise ops.
//
// Every kernel converts its inputs to fp32, computes in fp32 and rounds once on store, so a bf16 result
// differs from the fp32 CPU reference by one rounding of the output (plus the inputs' own rounding).
#include <algorithm>
#include <type_traits>

#include "backend/cuda/blas.h"
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/rope.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxNormThreads = 1024;  // rms_norm: threads of a block (one row)

// cuBLASLt GEMMs; none in a measuring pass (launch.h), which needs no handle.
void blas_gemm(const ExecContext& ctx, const GemmArgs& g) {
  if (dry_run()) return;
  DSV4_CHECK_ARG(ctx.blas != nullptr, "the CUDA execution context has no cuBLASLt handle (ExecContext::blas)");
  ctx.blas->gemm(ctx, g);
}

template <typename TO, typename TI>
__global__ void embedding_kernel(TO* __restrict__ out, const TI* __restrict__ table, const int32_t* __restrict__ ids,
                                 int64_t H) {
  pdl_wait();
  const int64_t t = blockIdx.y;
  const TI* row = table + static_cast<int64_t>(ids[t]) * H;
  for (int64_t h = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; h < H;
       h += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[t * H + h] = from_float<TO>(to_float(row[h]));
  }
}

template <typename TO, typename TI>
__global__ void broadcast_kernel(TO* __restrict__ out, const TI* __restrict__ x, int64_t n, int64_t H) {
  pdl_wait();
  const int64_t t = blockIdx.y;
  for (int64_t h = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; h < H;
       h += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const TO v = from_float<TO>(to_float(x[t * H + h]));
    for (int64_t s = 0; s < n; ++s) out[(t * n + s) * H + h] = v;
  }
}

template <typename TO, typename TA, typename TB>
__global__ void add_kernel(TO* out, const TA* a, const TB* b, int64_t n) {  // out may alias a or b
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = from_float<TO>(to_float(a[i]) + to_float(b[i]));
  }
}

template <typename TO, typename TI>
__global__ void gather_rows_kernel(TO* __restrict__ out, const TI* __restrict__ x, const int32_t* __restrict__ rows,
                                   int64_t width) {
  pdl_wait();
  const int64_t r = blockIdx.y;
  const TI* src = x + static_cast<int64_t>(rows[r]) * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < width;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[r * width + i] = from_float<TO>(to_float(src[i]));
  }
}

// out[rows[r]] = x[r]; rows < 0 are skipped (same element type: a row copy).
template <typename T>
__global__ void scatter_rows_kernel(T* __restrict__ out, const T* __restrict__ x, const int32_t* __restrict__ rows,
                                    int64_t width) {
  pdl_wait();
  const int64_t r = blockIdx.y;
  const int32_t to = rows[r];
  if (to < 0) return;
  T* dst = out + static_cast<int64_t>(to) * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < width;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = x[r * width + i];
  }
}

template <typename TO, typename TG, typename TU>
__global__ void swiglu_kernel(TO* out, const TG* gate, const TU* up, int64_t n, float limit) {
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = fminf(to_float(gate[i]), limit);
    const float u = fminf(fmaxf(to_float(up[i]), -limit), limit);
    out[i] = from_float<TO>(g / (1.0f + expf(-g)) * u);
  }
}

template <typename TO, typename TI>
__global__ void convert_kernel(TO* __restrict__ out, const TI* __restrict__ x, int64_t n) {
  pdl_wait();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (std::is_integral_v<TO>) {
      out[i] = static_cast<TO>(x[i]);
    } else {
      out[i] = from_float<TO>(to_float(x[i]));
    }
  }
}

// One block per row, sized so that each thread holds K of the row's values in registers (blockDim ≈ dim / K,
// at most 1024): all loads of a row are in flight at once and x is read once; the weights are loaded with
// them (before pdl_wait: no earlier kernel writes them), not after the reduction (K = 8 only). Rows longer
// than K·1024 loop over the rest (read again for the store). fp32 sum of squares, y = w * (x * rsqrt(mean +
// eps)), one rounding on store. out may be x: every element is read before the block reduction and written
// after it (a tail element by the same thread).
//
// ROPE (rms_norm_rope): rows are heads of x [T, heads, dim]; after the norm each value is rounded to TO as the
// unfused op stores it, and the last rope.rope_dim channels are rotated at the row's token position. A pair
// (2i, 2i+1) sits on lanes (2l, 2l+1) of one warp (blockDim and dim - rope_dim even), so it meets through one
// shuffle; the row is then stored once.
struct NormRope {
  const int32_t* pos = nullptr;
  const float* inv_freq = nullptr;
  int64_t heads = 1, rope_dim = 0;
  float attention_factor = 1.0f;
};

template <int K, bool ROPE, typename TO, typename TI, typename TW>
__global__ void __launch_bounds__(kMaxNormThreads)
    rms_norm_kernel(TO* out, const TI* x, const TW* __restrict__ w, int64_t dim, float eps, NormRope rope) {
  constexpr bool kPrefetchWeights = K <= 8;  // at K = 16, 2K values per thread would spill at 1024 threads
  __shared__ float scratch[33];
  const int64_t r = blockIdx.x, stride = blockDim.x;
  float wv[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int64_t i = threadIdx.x + j * stride;
    wv[j] = kPrefetchWeights && w != nullptr && i < dim ? to_float(w[i]) : 1.0f;
  }
  pdl_wait();
  const TI* xr = x + r * dim;
  float v[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int64_t i = threadIdx.x + j * stride;
    v[j] = i < dim ? to_float(xr[i]) : 0.0f;
  }
  float ss = 0;
#pragma unroll
  for (int j = 0; j < K; ++j) ss = fmaf(v[j], v[j], ss);
  for (int64_t i = threadIdx.x + K * stride; i < dim; i += stride) {
    const float a = to_float(xr[i]);
    ss = fmaf(a, a, ss);
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  TO* yr = out + r * dim;
  if constexpr (ROPE) {
    const float p = static_cast<float>(rope.pos[r / rope.heads]);
    const int64_t first = dim - rope.rope_dim;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t i = threadIdx.x + j * stride;
      const float wj = w == nullptr || i >= dim ? 1.0f : kPrefetchWeights ? wv[j] : to_float(w[i]);
      const float y = to_float(from_float<TO>(w != nullptr ? wj * (v[j] * inv) : v[j] * inv));
      const float partner = __shfl_xor_sync(0xffffffffu, y, 1);  // every lane: i >= dim lanes carry zeros
      if (i >= dim) continue;
      float o = y;
      if (i >= first) {
        float c, sn;
        rope_cos_sin(rope.inv_freq[(i - first) >> 1], p, rope.attention_factor, false, &c, &sn);
        o = ((i - first) & 1) == 0 ? y * c - partner * sn : y * c + partner * sn;
      }
      yr[i] = from_float<TO>(o);
    }
  } else {
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t i = threadIdx.x + j * stride;
      if (i >= dim) continue;
      const float wj = w == nullptr ? 1.0f : kPrefetchWeights ? wv[j] : to_float(w[i]);
      yr[i] = from_float<TO>(w != nullptr ? wj * (v[j] * inv) : v[j] * inv);
    }
  }
  for (int64_t i = threadIdx.x + K * stride; i < dim; i += stride) {
    const float a = to_float(xr[i]) * inv;
    yr[i] = from_float<TO>(w != nullptr ? to_float(w[i]) * a : a);
  }
}

// Small-T bf16 projections stream their weights through the GEMV (gemv.h), the rest runs on cuBLASLt.
void project(const ExecContext& ctx, const GemmArgs& g) {
  if (gemv_serves(g)) return gemv(stream_of(ctx), g);
  blas_gemm(ctx, g);
}

// out = x · w^T as GemmArgs (x [M, K], w [N, K], out [M, N], contiguous).
GemmArgs linear_args(Tensor out, Tensor x, Tensor w) {
  GemmArgs g;
  g.x = x.data();
  g.w = w.data();
  g.out = out.data();
  g.x_type = x.dtype();
  g.w_type = w.dtype();
  g.out_type = out.dtype();
  g.M = x.size(0);
  g.K = x.size(1);
  g.N = w.size(0);
  g.ldx = g.K;
  g.ldw = g.K;
  g.ldo = g.N;
  return g;
}

// Blocks in x for a loop over `width` elements of each of `rows` rows (grid.y = rows).
dim3 row_grid(int64_t width, int64_t rows) {
  return dim3(std::max(1u, std::min(blocks_for(width, kThreads), 64u)), static_cast<unsigned>(rows));
}
unsigned flat_blocks(int64_t n) { return std::max(1u, std::min(blocks_for(n, kThreads), 8192u)); }

}  // namespace

void embedding(ExecContext& ctx, Tensor out, Tensor table, Tensor ids) {
  const int64_t T = out.size(0), H = out.size(1);
  if (T == 0) return;
  dispatch_float(out.dtype(), "embedding out", [&](auto o) {
    dispatch_float(table.dtype(), "embedding table", [&](auto i) {
      using TO = decltype(o);
      using TI = decltype(i);
      check_launch(launch_kernel(embedding_kernel<TO, TI>, row_grid(H, T), dim3(kThreads), 0, stream_of(ctx),
                                 out.ptr<TO>(), table.ptr<TI>(), ids.ptr<int32_t>(), H),
                   "embedding");
    });
  });
}

void broadcast_streams(ExecContext& ctx, Tensor out, Tensor x) {
  const int64_t T = out.size(0), n = out.size(1), H = out.size(2);
  if (T == 0) return;
  dispatch_float(out.dtype(), "broadcast out", [&](auto o) {
    dispatch_float(x.dtype(), "broadcast x", [&](auto i) {
      using TO = decltype(o);
      using TI = decltype(i);
      check_launch(launch_kernel(broadcast_kernel<TO, TI>, row_grid(H, T), dim3(kThreads), 0, stream_of(ctx),
                                 out.ptr<TO>(), x.ptr<TI>(), n, H),
                   "broadcast_streams");
    });
  });
}

void linear(ExecContext& ctx, Tensor out, Tensor x, Tensor w) { project(ctx, linear_args(out, x, w)); }

void linears(ExecContext& ctx, Tensor x, const std::vector<ops::Projection>& projections) {
  // The GEMV-served ones in launches of up to kMaxGemvMatrices, the others one by one on cuBLASLt.
  std::vector<GemmArgs> batch;
  auto flush = [&] {
    if (!batch.empty()) gemv_many(stream_of(ctx), batch.data(), static_cast<int>(batch.size()));
    batch.clear();
  };
  for (const ops::Projection& p : projections) {
    const GemmArgs g = linear_args(p.out, x, p.w);
    if (!gemv_serves(g)) {
      blas_gemm(ctx, g);
      continue;
    }
    batch.push_back(g);
    if (static_cast<int>(batch.size()) == kMaxGemvMatrices) flush();
  }
  flush();
}

void grouped_linear(ExecContext& ctx, Tensor out, Tensor x, Tensor w, int64_t groups) {
  // A strided batch over the groups: x_g = x[:, g*K:(g+1)*K], w_g = w[g*N:(g+1)*N], out_g = out[:, g*N:...].
  GemmArgs g = linear_args(out, x, w);
  g.K = x.size(1) / groups;
  g.N = w.size(0) / groups;
  g.batch = groups;
  g.ldx = groups * g.K;
  g.ldw = g.K;
  g.ldo = groups * g.N;
  g.stride_x = g.K;
  g.stride_w = g.N * g.K;
  g.stride_o = g.N;
  project(ctx, g);
}

namespace {

// One block per row of x (rows of `dim`), out may be x. rope.rope_dim > 0: the ROPE variant (dim <= 8192).
void launch_rms_norm(const ExecContext& ctx, Tensor out, Tensor x, Tensor w, float eps, const NormRope& rope) {
  const int64_t dim = x.size(-1), rows = x.numel() / std::max<int64_t>(dim, 1);
  if (rows == 0) return;
  // K = 8 values per thread up to 8192-wide rows (512 threads for H = 4096, 64 for a 512-wide head), K = 16
  // beyond, so that a row of n·H = 16384 is held in registers too.
  const bool wide = dim > 8 * 1024, with_rope = rope.rope_dim > 0;
  DSV4_INTERNAL_CHECK(!(wide && with_rope), "rms_norm_rope: rows of at most 8192");
  const int64_t per_thread = wide ? 16 : 8;
  const int64_t warps = ((dim + per_thread - 1) / per_thread + 31) / 32;
  const int threads = static_cast<int>(std::clamp<int64_t>(warps * 32, 32, kMaxNormThreads));
  dispatch_float(out.dtype(), "rms_norm out", [&](auto o) {
    dispatch_float(x.dtype(), "rms_norm x", [&](auto i) {
      dispatch_float(w.data() != nullptr ? w.dtype() : DType::F32, "rms_norm weight", [&](auto wt) {
        using TO = decltype(o);
        using TI = decltype(i);
        using TW = decltype(wt);
        auto kernel = with_rope ? rms_norm_kernel<8, true, TO, TI, TW>
                      : wide    ? rms_norm_kernel<16, false, TO, TI, TW>
                                : rms_norm_kernel<8, false, TO, TI, TW>;
        check_launch(launch_kernel(kernel, dim3(static_cast<unsigned>(rows)), dim3(threads), 0, stream_of(ctx),
                                   out.ptr<TO>(), x.ptr<TI>(), w.ptr<TW>(), dim, eps, rope),
                     with_rope ? "rms_norm_rope" : "rms_norm");
      });
    });
  });
}

}  // namespace

void rms_norm(ExecContext& ctx, Tensor out, Tensor x, Tensor w, float eps) {
  launch_rms_norm(ctx, out, x, w, eps, NormRope{});
}

void rms_norm_rope(ExecContext& ctx, Tensor x, Tensor w, float eps, Tensor pos, const RopeTable& table) {
  const int64_t T = x.size(0), heads = x.size(1), dim = x.size(2);
  if (T == 0 || heads == 0) return;
  // Nothing to rotate, rows beyond the one-pass kernel, or pairs not on even lanes: the two ops.
  if (table.rope_dim == 0 || dim > 8 * 1024 || dim % 2 != 0) {
    rms_norm(ctx, x, x, w, eps);
    rope(ctx, x, pos, table, false);
    return;
  }
  NormRope r;
  r.pos = pos.ptr<int32_t>();
  r.inv_freq = table.inv_freq.ptr<float>();
  r.heads = heads;
  r.rope_dim = table.rope_dim;
  r.attention_factor = table.attention_factor;
  launch_rms_norm(ctx, x, x, w, eps, r);
}

void add(ExecContext& ctx, Tensor out, Tensor a, Tensor b) {
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(out.dtype(), "add out", [&](auto o) {
    dispatch_float(a.dtype(), "add a", [&](auto av) {
      dispatch_float(b.dtype(), "add b", [&](auto bv) {
        using TO = decltype(o);
        using TA = decltype(av);
        using TB = decltype(bv);
        check_launch(launch_kernel(add_kernel<TO, TA, TB>, dim3(flat_blocks(n)), dim3(kThreads), 0, stream_of(ctx),
                                   out.ptr<TO>(), a.ptr<TA>(), b.ptr<TB>(), n),
                     "add");
      });
    });
  });
}

void copy(ExecContext& ctx, Tensor out, Tensor x) {
  if (x.nbytes() == 0 || dry_run()) return;
  throw_if_error(
      cuda_status(cudaMemcpyAsync(out.data(), x.data(), x.nbytes(), cudaMemcpyDeviceToDevice, stream_of(ctx)),
                  "copy: cudaMemcpyAsync"));
}

void convert(ExecContext& ctx, Tensor out, Tensor x) {
  const int64_t n = x.numel();
  if (n == 0) return;
  if (out.dtype() == DType::I64) {  // positions for the MTP prologue (validated: x is I32)
    check_launch(launch_kernel(convert_kernel<int64_t, int32_t>, dim3(flat_blocks(n)), dim3(kThreads), 0,
                               stream_of(ctx), out.ptr<int64_t>(), x.ptr<int32_t>(), n),
                 "convert");
    return;
  }
  dispatch_float(out.dtype(), "convert out", [&](auto o) {
    dispatch_float(x.dtype(), "convert x", [&](auto i) {
      using TO = decltype(o);
      using TI = decltype(i);
      check_launch(launch_kernel(convert_kernel<TO, TI>, dim3(flat_blocks(n)), dim3(kThreads), 0, stream_of(ctx),
                                 out.ptr<TO>(), x.ptr<TI>(), n),
                   "convert");
    });
  });
}

void gather_rows(ExecContext& ctx, Tensor out, Tensor x, Tensor rows) {
  const int64_t R = out.size(0), width = out.numel() / std::max<int64_t>(R, 1);
  if (R == 0) return;
  dispatch_float(out.dtype(), "gather_rows out", [&](auto o) {
    dispatch_float(x.dtype(), "gather_rows x", [&](auto i) {
      using TO = decltype(o);
      using TI = decltype(i);
      check_launch(launch_kernel(gather_rows_kernel<TO, TI>, row_grid(width, R), dim3(kThreads), 0, stream_of(ctx),
                                 out.ptr<TO>(), x.ptr<TI>(), rows.ptr<int32_t>(), width),
                   "gather_rows");
    });
  });
}

void scatter_rows(ExecContext& ctx, Tensor out, Tensor x, Tensor rows) {
  const int64_t R = x.size(0), width = x.numel() / std::max<int64_t>(R, 1);
  if (R == 0) return;
  dispatch_float(x.dtype(), "scatter_rows", [&](auto tag) {
    using T = decltype(tag);
    check_launch(launch_kernel(scatter_rows_kernel<T>, row_grid(width, R), dim3(kThreads), 0, stream_of(ctx),
                               out.ptr<T>(), x.ptr<T>(), rows.ptr<int32_t>(), width),
                 "scatter_rows");
  });
}

void swiglu(ExecContext& ctx, Tensor out, Tensor gate, Tensor up, float limit) {
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_float(out.dtype(), "swiglu out", [&](auto o) {
    dispatch_float(gate.dtype(), "swiglu gate", [&](auto g) {
      dispatch_float(up.dtype(), "swiglu up", [&](auto u) {
        using TO = decltype(o);
        using TG = decltype(g);
        using TU = decltype(u);
        check_launch(launch_kernel(swiglu_kernel<TO, TG, TU>, dim3(flat_blocks(n)), dim3(kThreads), 0, stream_of(ctx),
                                   out.ptr<TO>(), gate.ptr<TG>(), up.ptr<TU>(), n, limit),
                     "swiglu");
      });
    });
  });
}

}  // namespace dsv4::cuda
