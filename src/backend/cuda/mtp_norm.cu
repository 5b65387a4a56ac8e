// Fused MTP RMSNorm kernels (see mtp_norm.h for the contract).
//
// The work is a list of rows of H elements: first the T "e" rows (inputs_embeds, masked by position,
// normalised with enorm_w), then the T*hc "h" rows (prev_hidden, normalised with hnorm_w). prev_hidden is
// [T, hc, H] contiguous, so h row i is simply prev + i*H, and its output is h_out + i*h_out_stride: the two
// output layouts and the shared-head norm (no e rows) differ only in strides, so one kernel serves all.
//
// The op is memory-bound (read (1+hc)*T*H + 2H, write (1+hc)*T*H elements). The vectorised kernel keeps
// a whole row in registers (16-byte loads, `vecs_per_thread` per thread), so each element is read once,
// and a block reuses the weight vectors it holds in registers for every row it processes, where a
// one-program-per-row kernel re-reads the weights from L2 for every row. Loads of x, positions and weights
// are all issued before the first use, so a small-T call pays one memory round trip, then one block
// reduction. Unaligned rows (odd H) or very large H take the scalar two-pass kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <mutex>
#include <utility>

#include "backend/cuda/launch.h"
#include "backend/cuda/mtp_norm.h"

namespace dsv4::cuda {
namespace {

// Everything a kernel needs, in bytes so that one kernel serves every dtype-independent layout.
struct MtpNormRows {
  const char* e_in;          // e rows: inputs_embeds [num_e_rows, H]
  const int64_t* positions;  // [num_e_rows]; row t is zeroed when positions[t] == 0
  const char* h_in;          // h rows: [num_rows - num_e_rows, H]
  const char* e_weight;
  const char* h_weight;
  char* e_out;
  char* h_out;
  int64_t num_e_rows;
  int64_t num_rows;
  int64_t num_tiles;      // ceil(num_rows / rows_per_block) (vector kernel)
  int64_t hidden;         // elements per row
  int64_t row_bytes;      // hidden * element size (input rows are packed)
  int64_t e_out_stride;   // bytes between the outputs of consecutive e rows
  int64_t e_copy_stride;  // bytes between the copies of one e row (eh layout writes hc copies)
  int64_t h_out_stride;   // bytes between the outputs of consecutive h rows
  int32_t e_copies;
  int32_t num_vecs;  // 16-byte vectors per row (vector kernel)
  float inv_hidden;
  float eps;
};

// ---- element <-> float conversions on 16-byte vectors ----------------------------------------------
template <typename T>
struct Vec16;

template <>
struct Vec16<float> {
  static constexpr int kElems = 4;
  __device__ __forceinline__ static void to_float(const uint4& v, float (&f)[kElems]) {
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
  }
  __device__ __forceinline__ static uint4 from_float(const float (&f)[kElems]) {
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]),
                      __float_as_uint(f[3]));
  }
};

// bf16 -> f32 is a shift; f32 -> bf16 rounds to nearest even (cvt.rn.bf16x2.f32).
template <>
struct Vec16<__nv_bfloat16> {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static void unpack(uint32_t u, float& lo, float& hi) {
    lo = __uint_as_float(u << 16);
    hi = __uint_as_float(u & 0xffff0000u);
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ __forceinline__ static void to_float(const uint4& v, float (&f)[kElems]) {
    unpack(v.x, f[0], f[1]);
    unpack(v.y, f[2], f[3]);
    unpack(v.z, f[4], f[5]);
    unpack(v.w, f[6], f[7]);
  }
  __device__ __forceinline__ static uint4 from_float(const float (&f)[kElems]) {
    return make_uint4(pack(f[0], f[1]), pack(f[2], f[3]), pack(f[4], f[5]), pack(f[6], f[7]));
  }
};

template <>
struct Vec16<__half> {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static void unpack(uint32_t u, float& lo, float& hi) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&u));
    lo = f.x;
    hi = f.y;
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ __forceinline__ static void to_float(const uint4& v, float (&f)[kElems]) {
    unpack(v.x, f[0], f[1]);
    unpack(v.y, f[2], f[3]);
    unpack(v.z, f[4], f[5]);
    unpack(v.w, f[6], f[7]);
  }
  __device__ __forceinline__ static uint4 from_float(const float (&f)[kElems]) {
    return make_uint4(pack(f[0], f[1]), pack(f[2], f[3]), pack(f[4], f[5]), pack(f[6], f[7]));
  }
};

// Activations are read exactly once: bypass L1 and let L2 fetch whole 256-byte lines. The read-only
// path is safe even in place (out == x): each thread reads its elements before it writes them.
__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Weights are shared by every row: default caching, so blocks on one SM share them through L1.
__device__ __forceinline__ uint4 load_weight(const void* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Register budget: variants that hold more vectors per thread get fewer threads per block, so that the
// compiler may use more registers without spilling (launch bounds of 1024 threads cap it at 64).
constexpr int vec_kernel_max_threads(int vpt, int rows) {
  return vpt * rows <= 2 ? 1024 : (vpt * rows <= 4 ? 512 : 256);
}

__device__ __forceinline__ uint4 select(bool first, uint4 a, uint4 b) {
  return make_uint4(first ? a.x : b.x, first ? a.y : b.y, first ? a.z : b.z, first ? a.w : b.w);
}

// Vectorised kernel: a block of blockDim.x threads normalises kRows rows at a time; thread j holds the
// 16-byte vectors j, j + blockDim.x, ... (kVpt of them) of each row, so a warp's loads are contiguous.
template <typename T, int kVpt, int kRows>
__global__ void __launch_bounds__(vec_kernel_max_threads(kVpt, kRows))
    mtp_rms_norm_vec_kernel(const MtpNormRows p) {
  using V = Vec16<T>;
  constexpr int kE = V::kElems;
  // Double-buffered by step parity: a fast warp may start step i+1 while others still read step i's sums.
  __shared__ float partial[2][kRows][32];

  pdl_wait();
  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int num_warps = blockDim.x >> 5;

  uint4 w_e[kVpt], w_h[kVpt];
#pragma unroll
  for (int k = 0; k < kVpt; ++k) w_e[k] = w_h[k] = make_uint4(0, 0, 0, 0);
  bool have_e = false, have_h = false;
  int parity = 0;

  for (int64_t tile = blockIdx.x; tile < p.num_tiles; tile += gridDim.x) {
    const int64_t row0 = tile * kRows;
    // 1. Issue every load of this step before using any: activations, positions, then (once per block)
    //    the weights.
    uint4 x[kRows][kVpt];
    int64_t position[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + r;
      const bool valid = row < p.num_rows;
      const bool is_e = row < p.num_e_rows;
      const char* src = is_e ? p.e_in + row * p.row_bytes : p.h_in + (row - p.num_e_rows) * p.row_bytes;
      position[r] = (valid && is_e) ? __ldg(p.positions + row) : 1;
#pragma unroll
      for (int k = 0; k < kVpt; ++k) {
        const int v = k * blockDim.x + tid;
        x[r][k] = (valid && v < p.num_vecs) ? load_stream(src + static_cast<int64_t>(v) * 16)
                                            : make_uint4(0, 0, 0, 0);
      }
    }
    const int64_t row_end = min(row0 + kRows, p.num_rows);
    if (row0 < p.num_e_rows && !have_e) {  // block-uniform branch
#pragma unroll
      for (int k = 0; k < kVpt; ++k) {
        const int v = k * blockDim.x + tid;
        if (v < p.num_vecs) w_e[k] = load_weight(p.e_weight + static_cast<int64_t>(v) * 16);
      }
      have_e = true;
    }
    if (row_end > p.num_e_rows && !have_h) {
#pragma unroll
      for (int k = 0; k < kVpt; ++k) {
        const int v = k * blockDim.x + tid;
        if (v < p.num_vecs) w_h[k] = load_weight(p.h_weight + static_cast<int64_t>(v) * 16);
      }
      have_h = true;
    }
    if (tile + gridDim.x >= p.num_tiles) pdl_launch_dependents();  // last loads of this block are issued

    // 2. Sum of squares per row: thread partials -> warp shuffles -> one barrier -> every thread adds
    //    the per-warp sums (broadcast shared-memory reads).
    float sum_sq[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (position[r] == 0) {  // "where(positions == 0, 0, e)": the row is normalised as zeros
#pragma unroll
        for (int k = 0; k < kVpt; ++k) x[r][k] = make_uint4(0, 0, 0, 0);
      }
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < kVpt; ++k) {
        float f[kE];
        V::to_float(x[r][k], f);
#pragma unroll
        for (int i = 0; i < kE; ++i) s = fmaf(f[i], f[i], s);
      }
      sum_sq[r] = warp_sum(s);
    }
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) partial[parity][r][warp] = sum_sq[r];
    }
    __syncthreads();
    float rstd[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      float s = 0.f;
      for (int w = 0; w < num_warps; ++w) s += partial[parity][r][w];
      rstd[r] = rsqrtf(s * p.inv_hidden + p.eps);
    }
    parity ^= 1;

    // 3. y = x * rstd * w, rounded once to the storage dtype.
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + r;
      if (row >= p.num_rows) continue;
      const bool is_e = row < p.num_e_rows;
      char* dst = is_e ? p.e_out + row * p.e_out_stride : p.h_out + (row - p.num_e_rows) * p.h_out_stride;
      const int copies = is_e ? p.e_copies : 1;
#pragma unroll
      for (int k = 0; k < kVpt; ++k) {
        const int v = k * blockDim.x + tid;
        if (v >= p.num_vecs) continue;
        float f[kE], w[kE];
        V::to_float(x[r][k], f);
        V::to_float(select(is_e, w_e[k], w_h[k]), w);
#pragma unroll
        for (int i = 0; i < kE; ++i) f[i] = f[i] * rstd[r] * w[i];
        const uint4 y = V::from_float(f);
        for (int c = 0; c < copies; ++c) {
          *reinterpret_cast<uint4*>(dst + c * p.e_copy_stride + static_cast<int64_t>(v) * 16) = y;
        }
      }
    }
  }
}

// ---- scalar two-pass kernel: any H, any alignment --------------------------------------------------
template <typename T>
__device__ __forceinline__ float to_f32(T v);
template <>
__device__ __forceinline__ float to_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_f32<__half>(__half v) {
  return __half2float(v);
}
template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}

// One block per row (grid-stride): pass 1 sums squares, pass 2 re-reads the row (now in L1/L2) and writes.
template <typename T>
__global__ void __launch_bounds__(256) mtp_rms_norm_scalar_kernel(const MtpNormRows p) {
  __shared__ float partial[2][32];
  pdl_wait();
  const int tid = threadIdx.x;
  int parity = 0;
  for (int64_t row = blockIdx.x; row < p.num_rows; row += gridDim.x) {
    const bool is_e = row < p.num_e_rows;
    const T* src = reinterpret_cast<const T*>(is_e ? p.e_in + row * p.row_bytes
                                                   : p.h_in + (row - p.num_e_rows) * p.row_bytes);
    const T* weight = reinterpret_cast<const T*>(is_e ? p.e_weight : p.h_weight);
    const bool zeroed = is_e && p.positions[row] == 0;
    float s = 0.f;
    if (!zeroed) {
      for (int64_t i = tid; i < p.hidden; i += blockDim.x) {
        const float f = to_f32(src[i]);
        s = fmaf(f, f, s);
      }
    }
    s = warp_sum(s);
    if ((tid & 31) == 0) partial[parity][tid >> 5] = s;
    __syncthreads();
    float total = 0.f;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) total += partial[parity][w];
    parity ^= 1;
    const float rstd = rsqrtf(total * p.inv_hidden + p.eps);
    char* dst = is_e ? p.e_out + row * p.e_out_stride : p.h_out + (row - p.num_e_rows) * p.h_out_stride;
    const int copies = is_e ? p.e_copies : 1;
    for (int64_t i = tid; i < p.hidden; i += blockDim.x) {
      const float f = zeroed ? 0.f : to_f32(src[i]);
      const T y = from_f32<T>(f * rstd * to_f32(weight[i]));
      for (int c = 0; c < copies; ++c) reinterpret_cast<T*>(dst + c * p.e_copy_stride)[i] = y;
    }
  }
}

// ---- host side ---------------------------------------------------------------------------------------
constexpr int kScalarThreads = 256;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Multiprocessor count of the current device, cached per device (the launch path must stay cheap and
// must not call anything a stream capture forbids).
Status sm_count(int* out) {
  static std::mutex mu;
  static std::map<int, int> cache;
  int dev = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(dev);
  if (it == cache.end()) {
    int n = 0;
    DSV4_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    it = cache.emplace(dev, n).first;
  }
  *out = it->second;
  return Status::ok();
}

// Resident blocks per SM for (kernel, threads), cached.
Status blocks_per_sm(const void* kernel, int threads, int* out) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> cache;
  int dev = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(kernel, threads * 64 + dev);
  auto it = cache.find(key);
  if (it == cache.end()) {
    int n = 0;
    DSV4_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, 0));
    it = cache.emplace(key, std::max(n, 1)).first;
  }
  *out = it->second;
  return Status::ok();
}

using RowKernel = void (*)(MtpNormRows);

template <typename T>
RowKernel pick_vec_kernel(int vpt, int rows) {
  switch (vpt * 10 + rows) {
    case 11:
      return mtp_rms_norm_vec_kernel<T, 1, 1>;
    case 12:
      return mtp_rms_norm_vec_kernel<T, 1, 2>;
    case 14:
      return mtp_rms_norm_vec_kernel<T, 1, 4>;
    case 21:
      return mtp_rms_norm_vec_kernel<T, 2, 1>;
    case 22:
      return mtp_rms_norm_vec_kernel<T, 2, 2>;
    case 24:
      return mtp_rms_norm_vec_kernel<T, 2, 4>;
    case 41:
      return mtp_rms_norm_vec_kernel<T, 4, 1>;
    case 42:
      return mtp_rms_norm_vec_kernel<T, 4, 2>;
    case 81:
      return mtp_rms_norm_vec_kernel<T, 8, 1>;
    default:
      return nullptr;
  }
}

RowKernel pick_vec_kernel(DType dtype, int vpt, int rows) {
  switch (dtype) {
    case DType::F32:
      return pick_vec_kernel<float>(vpt, rows);
    case DType::BF16:
      return pick_vec_kernel<__nv_bfloat16>(vpt, rows);
    case DType::F16:
      return pick_vec_kernel<__half>(vpt, rows);
    default:
      return nullptr;
  }
}

RowKernel pick_scalar_kernel(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return mtp_rms_norm_scalar_kernel<float>;
    case DType::BF16:
      return mtp_rms_norm_scalar_kernel<__nv_bfloat16>;
    case DType::F16:
      return mtp_rms_norm_scalar_kernel<__half>;
    default:
      return nullptr;
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Shared argument checks. `what` names the entry point in messages.
Status check_sizes(const char* what, int64_t num_tokens, int64_t hidden, int64_t hc_mult, float eps,
                   DType dtype, int64_t out_row_elems_per_token) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16) {
    return {StatusCode::kInvalidArgument,
            str_cat(what, ": dtype must be F32, BF16 or F16, got ", dtype_name(dtype))};
  }
  if (num_tokens < 0)
    return {StatusCode::kInvalidArgument, str_cat(what, ": num_tokens < 0 (", num_tokens, ")")};
  if (hidden <= 0) return {StatusCode::kInvalidArgument, str_cat(what, ": hidden must be > 0, got ", hidden)};
  if (hc_mult <= 0)
    return {StatusCode::kInvalidArgument, str_cat(what, ": hc_mult must be > 0, got ", hc_mult)};
  if (!(eps >= 0.f) || std::isinf(eps)) {
    return {StatusCode::kInvalidArgument, str_cat(what, ": eps must be finite and >= 0, got ", eps)};
  }
  // Every byte offset the kernels form must fit in int64: bytes of the largest tensor touched.
  int64_t elems = 0, bytes = 0;
  if (__builtin_mul_overflow(num_tokens, out_row_elems_per_token, &elems) ||
      __builtin_mul_overflow(elems, static_cast<int64_t>(dtype_size(dtype)), &bytes) ||
      hidden > (INT64_MAX / 4) / static_cast<int64_t>(dtype_size(dtype))) {
    return {StatusCode::kInvalidArgument, str_cat(what, ": sizes overflow int64 (num_tokens=", num_tokens,
                                                  ", hidden=", hidden, ", hc_mult=", hc_mult, ")")};
  }
  return Status::ok();
}

Status check_pointer(const char* what, const char* name, const void* p) {
  if (p == nullptr) return {StatusCode::kInvalidArgument, str_cat(what, ": ", name, " is null")};
  return Status::ok();
}

// Chooses the kernel and launch shape, then launches. `p` has everything but num_tiles / num_vecs.
Status launch_rows(const char* what, MtpNormRows p, DType dtype, std::initializer_list<const void*> pointers,
                   cudaStream_t stream, const MtpNormConfig* config, MtpNormLaunch* launched) {
  if (p.num_rows == 0) {
    if (launched != nullptr) *launched = MtpNormLaunch{};
    return Status::ok();
  }
  const MtpNormConfig cfg = config != nullptr ? *config : MtpNormConfig{};
  int sms = 0;
  if (Status s = sm_count(&sms); !s) return s;

  // Vector path: rows (and so every row start) 16-byte aligned, and a launch shape that fits. The eh
  // layout's e half starts H elements into each output row, which is aligned when row_bytes is.
  bool vector_ok = !cfg.force_scalar && p.row_bytes % 16 == 0;
  for (const void* ptr : pointers) vector_ok = vector_ok && aligned16(ptr);
  const int64_t num_vecs = p.row_bytes / 16;
  const auto threads_for = [&](int vpt) { return (ceil_div(num_vecs, vpt) + 31) / 32 * 32; };
  int vpt = cfg.vecs_per_thread;
  const int rows = cfg.rows_per_block == 0 ? 1 : cfg.rows_per_block;
  if (vector_ok && vpt == 0) {
    // Smallest vector count that keeps a row within 512 threads: short per-thread chains for latency,
    // and up to 16 warps per row for the reduction. Rows too long for 8 vectors per thread go scalar.
    vpt = 1;
    while (vpt < 8 && threads_for(vpt) > 512) vpt *= 2;
    vector_ok = threads_for(vpt) <= vec_kernel_max_threads(vpt, rows);
  }

  MtpNormLaunch shape;
  RowKernel kernel = nullptr;
  if (vector_ok) {
    kernel = pick_vec_kernel(dtype, vpt, rows);
    if (kernel == nullptr) {
      return {StatusCode::kInvalidArgument,
              str_cat(what, ": no vector kernel for vecs_per_thread=", vpt, ", rows_per_block=", rows)};
    }
    const int64_t threads = threads_for(vpt);
    if (threads > vec_kernel_max_threads(vpt, rows)) {
      return {StatusCode::kInvalidArgument,
              str_cat(what, ": vecs_per_thread=", vpt, ", rows_per_block=", rows, " needs ", threads,
                      " threads for hidden=", p.hidden, " (max ", vec_kernel_max_threads(vpt, rows), ")")};
    }
    p.num_vecs = static_cast<int32_t>(num_vecs);
    p.num_tiles = ceil_div(p.num_rows, rows);
    shape.vectorized = true;
    shape.vecs_per_thread = vpt;
    shape.rows_per_block = rows;
    shape.threads = static_cast<int>(threads);
    shape.blocks = p.num_tiles;
  } else {
    kernel = pick_scalar_kernel(dtype);
    p.num_vecs = 0;
    p.num_tiles = p.num_rows;
    shape.threads = p.hidden >= kScalarThreads ? kScalarThreads : static_cast<int>((p.hidden + 31) / 32 * 32);
    shape.rows_per_block = 1;
    shape.blocks = std::min<int64_t>(p.num_rows, static_cast<int64_t>(sms) * 16);
  }
  if (vector_ok) {
    int64_t cap = cfg.max_blocks;
    if (cap == 0 || cap == -1) {
      cap = INT_MAX;  // one block per tile: the hardware scheduler balances uneven blocks
    } else if (cap == -2) {
      int per_sm = 0;  // exactly one resident wave; each block loops over tiles
      if (Status s = blocks_per_sm(reinterpret_cast<const void*>(kernel), shape.threads, &per_sm); !s)
        return s;
      cap = static_cast<int64_t>(per_sm) * sms;
    } else if (cap < 0) {
      return {StatusCode::kInvalidArgument, str_cat(what, ": max_blocks must be >= -2, got ", cap)};
    }
    shape.blocks = std::min<int64_t>(shape.blocks, cap);
  }
  shape.blocks = std::min<int64_t>(shape.blocks, INT_MAX);
  if (launched != nullptr) *launched = shape;
  return launch_kernel(kernel, dim3(static_cast<unsigned>(shape.blocks)), dim3(shape.threads), 0, stream, p);
}

MtpNormRows base_rows(int64_t hidden, float eps, DType dtype) {
  MtpNormRows p{};
  p.hidden = hidden;
  p.row_bytes = hidden * static_cast<int64_t>(dtype_size(dtype));
  p.inv_hidden = static_cast<float>(1.0 / static_cast<double>(hidden));
  p.eps = eps;
  p.e_copies = 1;
  return p;
}

}  // namespace

std::string MtpNormLaunch::to_string() const {
  if (blocks == 0) return "none";
  if (!vectorized) return str_cat("scalar threads=", threads, " blocks=", blocks);
  return str_cat("vec vpt=", vecs_per_thread, " rows=", rows_per_block, " threads=", threads,
                 " blocks=", blocks);
}

Status fused_mtp_input_rms_norm(const void* inputs_embeds, const int64_t* positions, const void* prev_hidden,
                                const void* enorm_weight, const void* hnorm_weight, void* enorm_out,
                                void* hnorm_out, int64_t num_tokens, int64_t hidden, int64_t hc_mult,
                                float eps, DType dtype, cudaStream_t stream, const MtpNormConfig* config,
                                MtpNormLaunch* launched) {
  constexpr const char* kWhat = "fused_mtp_input_rms_norm";
  if (Status s = check_sizes(kWhat, num_tokens, hidden, hc_mult, eps, dtype, (hc_mult + 1) * hidden); !s) {
    return s;
  }
  if (num_tokens == 0) return launch_rows(kWhat, MtpNormRows{}, dtype, {}, stream, config, launched);
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"inputs_embeds", inputs_embeds},
                           {"positions", positions},
                           {"prev_hidden", prev_hidden},
                           {"enorm_weight", enorm_weight},
                           {"hnorm_weight", hnorm_weight},
                           {"enorm_out", enorm_out},
                           {"hnorm_out", hnorm_out}}) {
    if (Status s = check_pointer(kWhat, name, ptr); !s) return s;
  }
  MtpNormRows p = base_rows(hidden, eps, dtype);
  p.e_in = static_cast<const char*>(inputs_embeds);
  p.positions = positions;
  p.h_in = static_cast<const char*>(prev_hidden);
  p.e_weight = static_cast<const char*>(enorm_weight);
  p.h_weight = static_cast<const char*>(hnorm_weight);
  p.e_out = static_cast<char*>(enorm_out);
  p.h_out = static_cast<char*>(hnorm_out);
  p.num_e_rows = num_tokens;
  p.num_rows = num_tokens * (hc_mult + 1);
  p.e_out_stride = p.row_bytes;
  p.h_out_stride = p.row_bytes;
  p.e_copy_stride = 0;
  return launch_rows(kWhat, p, dtype,
                     {inputs_embeds, prev_hidden, enorm_weight, hnorm_weight, enorm_out, hnorm_out}, stream,
                     config, launched);
}

Status fused_mtp_input_rms_norm_eh(const void* inputs_embeds, const int64_t* positions,
                                   const void* prev_hidden, const void* enorm_weight,
                                   const void* hnorm_weight, void* out, int64_t num_tokens, int64_t hidden,
                                   int64_t hc_mult, float eps, DType dtype, cudaStream_t stream,
                                   const MtpNormConfig* config, MtpNormLaunch* launched) {
  constexpr const char* kWhat = "fused_mtp_input_rms_norm_eh";
  if (Status s = check_sizes(kWhat, num_tokens, hidden, hc_mult, eps, dtype, 2 * hc_mult * hidden); !s)
    return s;
  if (num_tokens == 0) return launch_rows(kWhat, MtpNormRows{}, dtype, {}, stream, config, launched);
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"inputs_embeds", inputs_embeds},
                           {"positions", positions},
                           {"prev_hidden", prev_hidden},
                           {"enorm_weight", enorm_weight},
                           {"hnorm_weight", hnorm_weight},
                           {"out", out}}) {
    if (Status s = check_pointer(kWhat, name, ptr); !s) return s;
  }
  MtpNormRows p = base_rows(hidden, eps, dtype);
  p.e_in = static_cast<const char*>(inputs_embeds);
  p.positions = positions;
  p.h_in = static_cast<const char*>(prev_hidden);
  p.e_weight = static_cast<const char*>(enorm_weight);
  p.h_weight = static_cast<const char*>(hnorm_weight);
  // out[t, s, :H] = hnorm(prev[t, s]); out[t, s, H:] = enorm(e[t]) for every s.
  p.h_out = static_cast<char*>(out);
  p.e_out = static_cast<char*>(out) + p.row_bytes;
  p.num_e_rows = num_tokens;
  p.num_rows = num_tokens * (hc_mult + 1);
  p.h_out_stride = 2 * p.row_bytes;
  p.e_out_stride = 2 * p.row_bytes * hc_mult;
  p.e_copy_stride = 2 * p.row_bytes;
  p.e_copies = static_cast<int32_t>(std::min<int64_t>(hc_mult, INT32_MAX));
  return launch_rows(kWhat, p, dtype, {inputs_embeds, prev_hidden, enorm_weight, hnorm_weight, out}, stream,
                     config, launched);
}

Status mtp_shared_head_rms_norm(const void* x, const void* weight, void* out, int64_t num_tokens,
                                int64_t hidden, float eps, DType dtype, cudaStream_t stream,
                                const MtpNormConfig* config, MtpNormLaunch* launched) {
  constexpr const char* kWhat = "mtp_shared_head_rms_norm";
  if (Status s = check_sizes(kWhat, num_tokens, hidden, 1, eps, dtype, hidden); !s) return s;
  if (num_tokens == 0) return launch_rows(kWhat, MtpNormRows{}, dtype, {}, stream, config, launched);
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"x", x}, {"weight", weight}, {"out", out}}) {
    if (Status s = check_pointer(kWhat, name, ptr); !s) return s;
  }
  // A plain per-row norm is the h-row half of the MTP kernel with no e rows.
  MtpNormRows p = base_rows(hidden, eps, dtype);
  p.h_in = static_cast<const char*>(x);
  p.h_weight = static_cast<const char*>(weight);
  p.e_weight = p.h_weight;
  p.h_out = static_cast<char*>(out);
  p.num_e_rows = 0;
  p.num_rows = num_tokens;
  p.h_out_stride = p.row_bytes;
  return launch_rows(kWhat, p, dtype, {x, weight, out}, stream, config, launched);
}

}  // namespace dsv4::cuda
