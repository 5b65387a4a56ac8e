// cuBLASLt dense GEMMs (bf16/f32 in, bf16/f32 out, fp32 accumulation) and the fallback tiled kernel.
#include "backend/cuda/blas.h"
#include "backend/cuda/common.cuh"
#include "backend/cuda/cublaslt_api.h"
#include "dsv4/core/log.h"

namespace dsv4::cuda {
namespace {

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    fail(s == CUBLAS_STATUS_ALLOC_FAILED ? StatusCode::kOutOfMemory : StatusCode::kCudaError, what,
         " failed: ", cublaslt().GetStatusName(s), " (", cublaslt().GetStatusString(s), ")");
  }
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::BF16:
      return CUDA_R_16BF;
    case DType::F8_E4M3:
      return CUDA_R_8F_E4M3;
    default:
      fail(StatusCode::kInvalidArgument, "gemm: unsupported dtype ", dtype_name(t));
  }
}

// Largest power of two (<= 256) dividing the address and every per-row / per-batch offset: what
// cuBLASLt may assume about the operand's alignment.
uint32_t alignment(const void* p, int64_t ld, int64_t stride, DType t) {
  const uint64_t es = dtype_size(t);
  uint64_t bits = reinterpret_cast<uint64_t>(p) | (static_cast<uint64_t>(ld) * es) | 256;
  if (stride != 0) bits |= static_cast<uint64_t>(stride) * es;
  return static_cast<uint32_t>(bits & (~bits + 1));
}

template <typename T>
void set_layout_attr(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a, T v) {
  check_lt(cublaslt().MatrixLayoutSetAttribute(l, a, &v, sizeof(v)), "cublasLtMatrixLayoutSetAttribute");
}

cublasLtMatrixLayout_t make_layout(DType t, int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t l = nullptr;
  check_lt(
      cublaslt().MatrixLayoutCreate(&l, cuda_type(t), static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld),
      "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    set_layout_attr(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, static_cast<int32_t>(batch));
    set_layout_attr(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, stride);
  }
  return l;
}

// ---- fallback: 32x32 output tiles, fp32 accumulation, any dtypes/strides/alignment -------------------
constexpr int kTile = 32;

template <typename TX, typename TW, typename TO>
__global__ void gemm_fallback_kernel(const TX* __restrict__ x, const TW* __restrict__ w, TO* __restrict__ out,
                                     int64_t M, int64_t N, int64_t K, int64_t ldx, int64_t ldw, int64_t ldo, int64_t sx,
                                     int64_t sw, int64_t so) {
  pdl_wait();
  __shared__ float xs[kTile][kTile + 1];
  __shared__ float ws[kTile][kTile + 1];
  const int64_t b = blockIdx.z;
  x += b * sx;
  w += b * sw;
  out += b * so;
  const int tx = threadIdx.x, ty = threadIdx.y;  // 32 x 8 threads; each computes 4 rows of the tile
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kTile, n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  float acc[4] = {0, 0, 0, 0};
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    for (int r = ty; r < kTile; r += 8) {
      const int64_t k = k0 + tx;
      xs[r][tx] = (m0 + r < M && k < K) ? to_float(x[(m0 + r) * ldx + k]) : 0.0f;
      ws[r][tx] = (n0 + r < N && k < K) ? to_float(w[(n0 + r) * ldw + k]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kTile; ++k) {
      const float wv = ws[tx][k];
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] = fmaf(xs[ty + 8 * i][k], wv, acc[i]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t m = m0 + ty + 8 * i, n = n0 + tx;
    if (m < M && n < N) out[m * ldo + n] = from_float<TO>(acc[i]);
  }
}

// A block-scaled FP8 product's scale pointers on its descriptor: A = the weights' grid, B = the activations'.
void set_scale_pointers(cublasLtMatmulDesc_t desc, const GemmArgs& g) {
  check_lt(cublaslt().MatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &g.w_scale, sizeof(g.w_scale)),
           "set A_SCALE_POINTER");
  check_lt(cublaslt().MatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &g.x_scale, sizeof(g.x_scale)),
           "set B_SCALE_POINTER");
}

}  // namespace

void gemm_fallback(const ExecContext& ctx, const GemmArgs& a) {
  const dim3 grid(blocks_for(a.N, kTile), blocks_for(a.M, kTile), static_cast<unsigned>(a.batch));
  dispatch_float(a.x_type, "gemm x", [&](auto xt) {
    using TX = decltype(xt);
    dispatch_float(a.w_type, "gemm w", [&](auto wt) {
      using TW = decltype(wt);
      dispatch_float(a.out_type, "gemm out", [&](auto ot) {
        using TO = decltype(ot);
        check_launch(launch_kernel(gemm_fallback_kernel<TX, TW, TO>, grid, dim3(kTile, 8), 0, stream_of(ctx),
                                   static_cast<const TX*>(a.x), static_cast<const TW*>(a.w), static_cast<TO*>(a.out),
                                   a.M, a.N, a.K, a.ldx, a.ldw, a.ldo, a.stride_x, a.stride_w, a.stride_o),
                     "gemm_fallback");
      });
    });
  });
}

BlasHandle::BlasHandle(size_t bytes) : workspace_bytes(bytes) {
  check_lt(cublaslt().Create(&lt), "cublasLtCreate");
  const cudaError_t err = cudaMalloc(&workspace, workspace_bytes);
  if (err != cudaSuccess) {
    cublaslt().Destroy(lt);
    throw_if_error(cuda_status(err, "cudaMalloc(cuBLASLt workspace)"));
  }
}

BlasHandle::~BlasHandle() {
  for (auto& [key, p] : plans_) {
    if (p.a) cublaslt().MatrixLayoutDestroy(p.a);
    if (p.b) cublaslt().MatrixLayoutDestroy(p.b);
    if (p.d) cublaslt().MatrixLayoutDestroy(p.d);
    if (p.desc) cublaslt().MatmulDescDestroy(p.desc);
  }
  if (workspace) cudaFree(workspace);
  if (lt) cublaslt().Destroy(lt);
}

namespace {

// The row count whose plan serves M: M itself, or for prefill-sized bf16 / f32 products the next power of two.
int64_t plan_rows(const GemmArgs& g, bool bucket, int64_t exact_rows) {
  const bool fp8 = g.x_type == DType::F8_E4M3 || g.w_type == DType::F8_E4M3;
  if (!bucket || fp8 || g.batch != 1 || g.M <= exact_rows) return g.M;
  int64_t rows = exact_rows;
  while (rows < g.M) rows *= 2;
  return rows;
}

}  // namespace

BlasHandle::Plan& BlasHandle::plan_for(const GemmArgs& call, bool bucket) {
  GemmArgs g = call;
  g.M = plan_rows(call, bucket, kExactPlanRows);
  const uint32_t al_x = alignment(g.x, g.ldx, g.batch > 1 ? g.stride_x : 0, g.x_type);
  const uint32_t al_w = alignment(g.w, g.ldw, g.batch > 1 ? g.stride_w : 0, g.w_type);
  const uint32_t al_o = alignment(g.out, g.ldo, g.batch > 1 ? g.stride_o : 0, g.out_type);
  const Key key = {static_cast<int64_t>(g.x_type),
                   static_cast<int64_t>(g.w_type),
                   static_cast<int64_t>(g.out_type),
                   g.M,
                   g.N,
                   g.K,
                   g.batch,
                   g.ldx,
                   g.ldw,
                   g.ldo,
                   g.batch > 1 ? g.stride_x : 0,
                   g.batch > 1 ? g.stride_w : 0,
                   g.batch > 1 ? g.stride_o : 0,
                   al_x,
                   al_w,
                   al_o};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  Plan p;
  // Row-major out[M,N] = x[M,K] · w[N,K]^T is column-major out^T[N,M] = op(A)·B with A = w viewed [K,N]
  // column-major (transposed), B = x viewed [K,M] column-major.
  check_lt(cublaslt().MatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  check_lt(cublaslt().MatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "set TRANSA");
  check_lt(cublaslt().MatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "set TRANSB");
  if (g.x_type == DType::F8_E4M3) {  // DeepSeek's block scales: A = w per 128 x 128, B = x per 128 along K
    const cublasLtMatmulMatrixScale_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F,
                                      b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    check_lt(cublaslt().MatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode)),
             "set A_SCALE_MODE");
    check_lt(cublaslt().MatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode)),
             "set B_SCALE_MODE");
    // The heuristic sees scale pointers (the first call's; gemm() sets each call's): block-scaled kernels are chosen
    // only for descriptors that carry them.
    set_scale_pointers(p.desc, g);
  }
  p.M = g.M;
  p.a = make_layout(g.w_type, g.K, g.N, g.ldw, g.batch, g.stride_w);
  p.b = make_layout(g.x_type, g.K, g.M, g.ldx, g.batch, g.stride_x);
  p.d = make_layout(g.out_type, g.N, g.M, g.ldo, g.batch, g.stride_o);
  cublasLtMatmulPreference_t pref = nullptr;
  check_lt(cublaslt().MatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t ws = workspace_bytes;
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_w, sizeof(al_w));
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_x, sizeof(al_x));
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_o, sizeof(al_o));
  cublaslt().MatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_o, sizeof(al_o));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t hs = cublaslt().MatmulAlgoGetHeuristic(lt, p.desc, p.a, p.b, p.d, p.d, pref, 1, &result, &found);
  cublaslt().MatmulPreferenceDestroy(pref);
  if (hs == CUBLAS_STATUS_SUCCESS && found > 0) {
    p.algo = result.algo;
    p.use_lt = true;
  } else {
    log_debug("cuBLASLt has no algorithm for ", dtype_name(g.x_type), "x", dtype_name(g.w_type), "->",
              dtype_name(g.out_type), " M=", g.M, " N=", g.N, " K=", g.K, " batch=", g.batch,
              "; using the fallback GEMM kernel");
  }
  return plans_.emplace(key, p).first->second;
}

bool BlasHandle::supports(const GemmArgs& g) {
  const bool fp8 = g.x_type == DType::F8_E4M3 || g.w_type == DType::F8_E4M3;
  if (fp8 && (g.x_type != g.w_type || g.batch != 1 || g.K % 128 != 0 || g.x_scale == nullptr || g.w_scale == nullptr)) {
    return false;
  }
  return g.M > 0 && g.N > 0 && g.K > 0 ? plan_for(g).use_lt : !fp8;
}

void BlasHandle::gemm(const ExecContext& ctx, const GemmArgs& g) {
  if (g.M == 0 || g.N == 0) return;
  const bool fp8 = g.x_type == DType::F8_E4M3 || g.w_type == DType::F8_E4M3;
  DSV4_CHECK_ARG(!fp8 || supports(g), "gemm: no cuBLASLt algorithm for the block-scaled FP8 product M=", g.M,
                 " N=", g.N, " K=", g.K, " (BlasHandle::supports first)");
  if (g.K == 0) return gemm_fallback(ctx, g);  // writes the zeros an empty sum gives
  Plan* p = &plan_for(g);
  if (!p->use_lt) return gemm_fallback(ctx, g);
  if (fp8) set_scale_pointers(p->desc, g);  // this call's scales (the plan's descriptor serves every call of the shape)
  const float alpha = 1.0f, beta = 0.0f;
  cublasLtMatrixLayout_t b = p->b, d = p->d;
  if (p->M != g.M) {  // a bucket's plan: this M's layouts, if the bucket's algorithm runs them
    b = make_layout(g.x_type, g.K, g.M, g.ldx, g.batch, g.stride_x);
    d = make_layout(g.out_type, g.N, g.M, g.ldo, g.batch, g.stride_o);
    auto [it, fresh] = p->serves.try_emplace(g.M, false);
    if (fresh) {
      cublasLtMatmulHeuristicResult_t check{};
      it->second = cublaslt().MatmulAlgoCheck(lt, p->desc, p->a, b, d, d, &p->algo, &check) == CUBLAS_STATUS_SUCCESS &&
                   check.workspaceSize <= workspace_bytes;
    }
    if (!it->second) {  // rare: the exact M's own plan
      cublaslt().MatrixLayoutDestroy(b);
      cublaslt().MatrixLayoutDestroy(d);
      p = &plan_for(g, /*bucket=*/false);
      if (!p->use_lt) return gemm_fallback(ctx, g);
      b = p->b, d = p->d;
    }
  }
  const cublasStatus_t st = cublaslt().Matmul(lt, p->desc, &alpha, g.w, p->a, g.x, b, &beta, g.out, d, g.out, d,
                                              &p->algo, workspace, workspace_bytes, stream_of(ctx));
  if (b != p->b) {
    cublaslt().MatrixLayoutDestroy(b);
    cublaslt().MatrixLayoutDestroy(d);
  }
  check_lt(st, "cublasLtMatmul");
}

}  // namespace dsv4::cuda
