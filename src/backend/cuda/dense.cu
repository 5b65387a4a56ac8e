// Dense CUDA ops: embedding, stream broadcast, projections (GEMV at small T, cuBLASLt otherwise) and
// elementwise ops (RMSNorm: rms_norm.cu).
//
// Every kernel converts its inputs to fp32, computes in fp32 and rounds once on store, so a bf16 result
// differs from the fp32 CPU reference by one rounding of the output (plus the inputs' own rounding).
#include <algorithm>
#include <optional>
#include <type_traits>

#include "backend/cuda/act_quant.h"
#include "backend/cuda/blas.h"
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/quant_matrix.h"
#include "dsv4/core/arena.h"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;

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

// grouped_linear's strided batch over the groups: x_g = x[:, g*K:(g+1)*K], w_g = w[g*N:(g+1)*N], out_g =
// out[:, g*N:...].
GemmArgs grouped_args(Tensor out, Tensor x, Tensor w, int64_t groups) {
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
  return g;
}

// out = x · wᵀ for a quantised w (core/weight.h), in `groups` block-diagonal groups as grouped_linear (1: linear).
// quant_gemv where it serves the shape (decode: T <= 16, the codes expanded on the fly); every other shape
// dequantises the whole matrix to bf16 in the scratch arena (counted by the measuring pass, released on return:
// the product is ordered after the dequantisation on the stream) and runs the bf16 product on cuBLASLt, never on
// gemv.cu's GEMV: that kernel issues its first weight loads before its PDL wait (weights are static there), so
// overlapped with the dequantise kernel it would read the scratch before it is written. No host sync, no
// allocation but the arena's: graph-capturable.
// The block-scaled FP8 product's cuBLASLt arguments for T rows of x times a quantised matrix (rows padded to 16;
// operand and scale pointers left for the caller to set), or false where that product does not apply: a kFp8Block
// matrix in one group, whole scale blocks and scale rows of a multiple of 4 floats (a 384 x 48 x 640 problem gave
// wrong results with the layout that worked at 256 x 64 x 512: docs/checkpoints.md, plan step 3), and an algorithm.
bool fp8_block_shape(const QuantMatrices& q, int64_t groups) {
  return groups == 1 && q.format == WeightFormat::kFp8Block && q.cols % 512 == 0 && q.rows % 128 == 0;
}
bool fp8_block_gemm_args(const ExecContext& ctx, int64_t T, DType out_dtype, const QuantMatrices& q, int64_t groups,
                         GemmArgs& g) {
  const int64_t K = q.cols, N = q.rows;
  if (!fp8_block_shape(q, groups)) return false;
  static const float kScalePlaceholder = 1.0f;  // supports() asks for non-null scales; the caller sets the real ones
  g = GemmArgs{};
  g.x_scale = g.w_scale = &kScalePlaceholder;
  g.x_type = g.w_type = DType::F8_E4M3, g.out_type = out_dtype;
  g.M = (T + 15) / 16 * 16, g.N = N, g.K = K, g.ldx = K, g.ldw = K, g.ldo = N;
  DSV4_CHECK_ARG(ctx.blas != nullptr, "the CUDA execution context has no cuBLASLt handle (ExecContext::blas)");
  return ctx.blas->supports(g);
}

// x's E4M3 codes and per-128 scales for the block-scaled FP8 products (activation_fp8_codes), rows padded to 16:
// codes [Mp, K], scales K-block-major [K / 128, Mp] (blas.h), in ctx.scratch (the caller's scope). The measuring pass
// and dry runs allocate only.
struct Fp8Rows {
  Tensor codes, scales;
};
Fp8Rows fp8_rows(const ExecContext& ctx, Tensor x) {
  const int64_t T = x.size(0), K = x.size(1), Mp = (T + 15) / 16 * 16;
  Fp8Rows r{ctx.scratch->alloc(DType::U8, {Mp, K}), ctx.scratch->alloc(DType::F32, {K / 128, Mp})};
  if (!ctx.measuring && !dry_run()) {
    activation_fp8_codes(stream_of(ctx), x.dtype(), x.data(), x.stride(0), T, K, Mp, r.codes.ptr<uint8_t>(),
                         r.scales.ptr<float>());
  }
  return r;
}

// Under --activation-quant fp8 (ExecContext::fp8_input_rows) an FP8-block matrix past the GEMV's rows runs as
// DeepSeek's block-scaled FP8 product on cuBLASLt: x's codes and per-128 scales (fp8_rows, or `rows` where the caller
// made them once for several products of x), the weight's codes and its scale grid as f32, rows padded to 16
// (cuBLASLt's block-scaled kernels took no other row counts in a probe). Where T is a multiple of 16 and out's rows
// are contiguous the product goes straight into out, else into padded scratch and its T rows are copied out (at a
// 4,096-token Flash prefill that copy moved ~380 MB a layer, the query's 32,768-wide rows most of it). x may be the
// act_quant round trip or the raw rows (linear_reads_fp8_codes): quantising a round trip again gives its values
// back, so the product is the same. False (nothing done) where it does not apply or cuBLASLt has no algorithm. The
// measuring pass counts its scratch and returns false, so that the dequantising path's is counted too (the run may
// take either).
bool fp8_block_product(const ExecContext& ctx, Tensor out, Tensor x, const QuantMatrices& q, int64_t groups,
                       const Fp8Rows* rows = nullptr) {
  const int64_t T = x.size(0), K = q.cols, N = q.rows;
  if (!ctx.fp8_input_rows || !fp8_block_shape(q, groups) || x.size(1) != K || x.stride(1) != 1 || out.size(1) != N) {
    return false;
  }
  const int64_t Mp = (T + 15) / 16 * 16, kb = K / 128, nb = (N + 127) / 128;
  ArenaScope scope(*ctx.scratch);
  const Tensor w_scale = ctx.scratch->alloc(DType::F32, {nb, kb});
  const bool direct = Mp == T && out.stride(0) == N && out.stride(1) == 1;
  const Tensor product = direct ? out : ctx.scratch->alloc(out.dtype(), {Mp, N});
  if (ctx.measuring || dry_run()) {
    if (rows == nullptr) fp8_rows(ctx, x);  // counted
    return false;
  }
  GemmArgs g;
  if (!fp8_block_gemm_args(ctx, T, out.dtype(), q, groups, g)) return false;
  const Fp8Rows own = rows != nullptr ? Fp8Rows{} : fp8_rows(ctx, x);
  const Fp8Rows& r = rows != nullptr ? *rows : own;
  g.x = r.codes.data(), g.w = q.codes, g.out = product.data();
  g.x_scale = r.scales.ptr<float>(), g.w_scale = w_scale.ptr<float>();
  const cudaStream_t s = stream_of(ctx);
  e8m0_scales_to_f32(s, q.scale, nb * kb, w_scale.ptr<float>());
  ctx.blas->gemm(ctx, g);
  if (direct) return true;
  const size_t row_bytes = static_cast<size_t>(N) * dtype_size(out.dtype());
  DSV4_CUDA_CHECK(
      cudaMemcpyAsync(out.data(), product.data(), row_bytes * static_cast<size_t>(T), cudaMemcpyDeviceToDevice, s));
  return true;
}

// The one matrix of a quantised projection, as quant_gemv takes it.
QuantMatrix single_matrix(const QuantMatrices& q, int64_t groups) {
  return QuantMatrix{q.format, q.codes, q.scale, q.rows / groups, q.cols};
}

void quant_project(const ExecContext& ctx, Tensor out, Tensor x, const Weight& w, int64_t groups) {
  const QuantMatrices& q = w.quant();
  const int64_t T = x.size(0);
  if (T == 0) return;
  DSV4_CHECK_ARG(q.count == 1 && w.ndim() == 2, "quantised projection: ", w.describe(), " is not one matrix");
  const QuantMatrix group = single_matrix(q, groups);
  if (quant_gemv_supports(group, x.data(), x.size(1), T, groups)) {
    return quant_gemv(stream_of(ctx), group, x.data(), x.size(1), out.data(), out.dtype() == DType::F32, out.size(1), T,
                      groups);
  }
  DSV4_CHECK_ARG(ctx.scratch != nullptr && ctx.scratch->device() == Device::kCUDA,
                 "a quantised projection on CUDA needs a device scratch arena (ExecContext::scratch)");
  if (fp8_block_product(ctx, out, x, q, groups)) return;
  ArenaScope scope(*ctx.scratch);
  const Tensor values = ctx.scratch->alloc(DType::BF16, {q.rows, q.cols});
  dequantize_to_bf16(stream_of(ctx), QuantMatrix{q.format, q.codes, q.scale, q.rows, q.cols}, values.data());
  blas_gemm(ctx, groups == 1 ? linear_args(out, x, values) : grouped_args(out, x, values, groups));
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

bool linear_reads_fp8_codes(const ExecContext& ctx, Tensor x, const Weight& w, DType out_dtype) {
  // The measuring pass (no cuBLASLt handle) says no: its callers take the same scratch either way.
  if (ctx.measuring || ctx.blas == nullptr || !w.quantized() || x.ndim() != 2 || x.size(0) == 0 ||
      w.quant().count != 1 || x.size(1) != w.quant().cols) {
    return false;
  }
  const QuantMatrices& q = w.quant();
  GemmArgs g;
  return !quant_gemv_supports(single_matrix(q, 1), x.data(), x.size(1), x.size(0), 1) &&
         fp8_block_gemm_args(ctx, x.size(0), out_dtype, q, 1, g);
}

void linear(ExecContext& ctx, Tensor out, Tensor x, const Weight& w) {
  if (w.quantized()) return quant_project(ctx, out, x, w, 1);
  project(ctx, linear_args(out, x, w.plain()));
}

void linears(ExecContext& ctx, Tensor x, const std::vector<ops::Projection>& projections) {
  // The GEMV-served ones in launches of up to kMaxGemvMatrices, the others one by one on cuBLASLt. Under
  // fp8_input_rows, x's FP8 codes once for all of its block-scaled FP8 products when there are several.
  ArenaScope scope(*ctx.scratch);
  std::vector<bool> reads_codes;
  for (const ops::Projection& p : projections) {
    reads_codes.push_back(ctx.fp8_input_rows && linear_reads_fp8_codes(ctx, x, p.w, p.out.dtype()));
  }
  std::optional<Fp8Rows> shared_rows;
  if (std::count(reads_codes.begin(), reads_codes.end(), true) >= 2) shared_rows = fp8_rows(ctx, x);
  std::vector<GemmArgs> batch;
  auto flush = [&] {
    if (!batch.empty()) gemv_many(stream_of(ctx), batch.data(), static_cast<int>(batch.size()));
    batch.clear();
  };
  for (size_t i = 0; i < projections.size(); ++i) {
    const ops::Projection& p = projections[i];
    if (shared_rows && reads_codes[i] && fp8_block_product(ctx, p.out, x, p.w.quant(), 1, &*shared_rows)) continue;
    if (p.w.quantized()) {  // its own launch (quant_gemv), independent of the batch's
      quant_project(ctx, p.out, x, p.w, 1);
      continue;
    }
    const GemmArgs g = linear_args(p.out, x, p.w.plain());
    if (!gemv_serves(g)) {
      blas_gemm(ctx, g);
      continue;
    }
    batch.push_back(g);
    if (static_cast<int>(batch.size()) == kMaxGemvMatrices) flush();
  }
  flush();
}

void grouped_linear(ExecContext& ctx, Tensor out, Tensor x, const Weight& w, int64_t groups) {
  if (w.quantized()) return quant_project(ctx, out, x, w, groups);
  project(ctx, grouped_args(out, x, w.plain(), groups));
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
