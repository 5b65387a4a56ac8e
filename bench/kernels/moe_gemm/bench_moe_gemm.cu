// Kernel lab of the MoE grouped GEMM: the library's wgmma + TMA prefill products (src/backend/cuda/moe_gemm_wgmma.cuh),
// checked and timed alone.
//
//   build/bench/bench_moe_gemm          check on small problems (PASS / FAIL per variant), then time the Flash shape
//   build/bench/bench_moe_gemm check    the checks only
//
// Checks: random bf16 operands and routing, a host plan of 128-row tiles (moe_plan_reference.h,
// shared expert stacked last), each product against a CPU f32 reference (max |got - want| / max |want|: 1e-2 for the
// bf16 SwiGLU output, 1e-3 for the f32 w2 output), every output written (outputs are poisoned with NaN first), and a
// second run bit-identical. The Flash timing (T = 4,096, 256 routed experts + 1 shared, k = 6, H = 4,096, I = 2,048,
// random routing) first checks 256 sampled outputs of each product against host dot products, then replays one
// launch per CUDA graph (lab_util.h: 2 warm-up launches, median of 30 replays) and prints TFLOP/s of the useful work (2
// * rows * N * K per weight matrix). The same for quantised stacks as DeepSeek's checkpoints hold them (FP4 routed
// experts with one E8M0 scale per 32 inputs, the shared expert FP8 with 128 x 128 block scales; random codes), the
// sampled outputs against the library's exact host dequantisation (dsv4/io/quantization.h).
//
//   build/bench/bench_moe_gemm quant    the quantised Flash timing only (its sampled check included)
//   build/bench/bench_moe_gemm rs       the same, then the operand-swapped variant (moe_gemm_rs.cuh) on the same stacks
//   build/bench/bench_moe_gemm fp8      the same, then the E4M3 products (moe_gemm_fp8.cuh) on E4M3 activations
// The mma.sync fallback (moe.cu's moe_gemm_wide_kernel, private there) is not in this harness: its figures come from a
// CUPTI trace of `dsv4 bench --prefill 4096` (H100, 2026-12-06: 5.26 ms gated, 2.79 ms w2 a layer against 3.17 / 1.71
// here). Exit status: non-zero on any failure.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "../lab_util.h"
#include "backend/cuda/act_quant.h"
#include "backend/cuda/moe_gemm_fp8.cuh"
#include "backend/cuda/moe_gemm_wgmma.cuh"
#include "backend/cuda/moe_plan_reference.h"
#include "dsv4/io/quantization.h"
#include "moe_gemm_rs.cuh"

namespace {

using dsv4::cuda::bf16;

void check_cuda(cudaError_t e, const char* what, int line) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "CUDA error at line %d (%s): %s\n", line, what, cudaGetErrorString(e));
  std::exit(2);
}
#define CK(x) check_cuda((x), #x, __LINE__)

template <typename T>
struct DevBuf {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { CK(cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T))); }
  ~DevBuf() { cudaFree(ptr); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void upload(const std::vector<T>& h) { CK(cudaMemcpy(ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice)); }
  std::vector<T> download() const {
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  void poison() { CK(cudaMemset(ptr, 0xFF, n * sizeof(T))); }  // NaN in bf16 and f32
};

// The expert-sorted plan, built on the host (backend/cuda/moe_plan_reference.h).
using HostPlan = dsv4::cuda::MoePlanReference;
HostPlan make_plan(const std::vector<int32_t>& indices, int64_t T, int64_t k, int64_t E, bool shared,
                   int32_t tile_rows) {
  return dsv4::cuda::moe_plan_reference(indices, T, k, E, shared, tile_rows);
}

std::vector<int32_t> random_routing(std::mt19937& rng, int64_t T, int64_t E, int64_t k) {
  std::vector<int32_t> indices(T * k), all(E);
  for (int64_t t = 0; t < T; ++t) {  // k distinct experts per token
    for (int32_t e = 0; e < E; ++e) all[e] = e;
    for (int64_t i = 0; i < k; ++i) {  // partial Fisher-Yates
      std::uniform_int_distribution<int64_t> pick(i, E - 1);
      std::swap(all[i], all[pick(rng)]);
      indices[t * k + i] = all[i];
    }
  }
  return indices;
}

float to_f(bf16 v) { return __bfloat162float(v); }
std::vector<bf16> random_bf16(std::mt19937& rng, size_t n, float range) {
  std::uniform_real_distribution<float> u(-range, range);
  std::vector<bf16> v(n);
  for (auto& x : v) x = __float2bfloat16(u(rng));
  return v;
}

float swiglu(float g, float u, float limit) {
  g = std::min(g, limit);
  u = std::min(std::max(u, -limit), limit);
  return g / (1.0f + std::exp(-g)) * u;
}

double dot(const bf16* a, const bf16* b, int64_t K) {
  double s = 0;
  for (int64_t i = 0; i < K; ++i) s += static_cast<double>(to_f(a[i])) * to_f(b[i]);
  return s;
}

// The plan on the device.
struct DevPlan {
  DevBuf<int32_t> token_of, tile_info, num_tiles;
  explicit DevPlan(const HostPlan& hp) : token_of(hp.token_of.size()), tile_info(hp.tile_info.size()), num_tiles(1) {
    token_of.upload(hp.token_of);
    tile_info.upload(hp.tile_info);
    num_tiles.upload({hp.num_tiles});
  }
  dsv4::cuda::MoePlan view() const { return {nullptr, token_of.ptr, tile_info.ptr, num_tiles.ptr}; }
};

// The launch grid's tile bound, as moe.cu sizes it: min(P, ceil(P / 128) + experts); blocks past the count exit.
int tile_bound(int64_t P, int64_t experts) {
  return static_cast<int>(std::min<int64_t>(P, (P + dsv4::cuda::kWgBM - 1) / dsv4::cuda::kWgBM + experts));
}

struct Maps {
  CUtensorMap w13[2], w2[2];
};

template <bool GATED>
void make_maps(CUtensorMap (&m)[2], const bf16* w, const bf16* w3, int64_t experts, int N, int K) {
  if (!dsv4::cuda::make_product_maps<GATED>(&m[0], &m[1], w, w3, experts, N, K)) {
    std::fprintf(stderr, "cuTensorMapEncodeTiled failed (or is unavailable)\n");
    std::exit(2);
  }
}

double rel_error(const std::vector<float>& got, const std::vector<float>& want, bool* finite) {
  double diff = 0, ref = 0;
  *finite = true;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) *finite = false;
    diff = std::max(diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    ref = std::max(ref, std::fabs(static_cast<double>(want[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

bool report(const std::string& what, double err, bool finite, double tol, bool repeat_same) {
  const bool ok = finite && err <= tol && repeat_same;
  std::printf("%s  %-64s rel err %.3g (tol %.0e)%s%s\n", ok ? "PASS" : "FAIL", what.c_str(), err, tol,
              finite ? "" : ", unwritten / non-finite outputs", repeat_same ? "" : ", second run differs");
  return ok;
}

// One small problem, both products against the CPU. The w2 product takes its own random activations (so that its
// check does not inherit the SwiGLU output's bf16 rounding).
bool check_case(int64_t T, int64_t E, int64_t k, int H, int I, uint32_t seed) {
  std::mt19937 rng(seed);
  const float limit = 1.0f;  // gate / up values have std ~0.7 here: both sides of the clamp are exercised
  const int64_t experts = E + 1;
  const std::vector<bf16> x = random_bf16(rng, T * H, 1.0f);
  const std::vector<bf16> w1 = random_bf16(rng, experts * I * H, 2.0f / std::sqrt(static_cast<float>(H)));
  const std::vector<bf16> w3 = random_bf16(rng, experts * I * H, 2.0f / std::sqrt(static_cast<float>(H)));
  const std::vector<bf16> w2 = random_bf16(rng, experts * H * I, 2.0f / std::sqrt(static_cast<float>(I)));
  const std::vector<int32_t> indices = random_routing(rng, T, E, k);
  const HostPlan hp = make_plan(indices, T, k, E, true, dsv4::cuda::kWgBM);
  const int64_t P = static_cast<int64_t>(hp.token_of.size());
  const std::vector<bf16> act_in = random_bf16(rng, P * I, 1.0f);

  DevBuf<bf16> dx(x.size()), dw1(w1.size()), dw3(w3.size()), dw2(w2.size()), dact_in(act_in.size()), dact(P * I);
  DevBuf<float> dy(P * H);
  dx.upload(x);
  dw1.upload(w1);
  dw3.upload(w3);
  dw2.upload(w2);
  dact_in.upload(act_in);
  const DevPlan plan(hp);
  Maps maps;
  make_maps<true>(maps.w13, dw1.ptr, dw3.ptr, experts, I, H);
  make_maps<false>(maps.w2, dw2.ptr, dw2.ptr, experts, H, I);
  const int bound = tile_bound(P, experts);

  std::vector<float> act_ref(P * I), y_ref(P * H);
  for (int32_t tile = 0; tile < hp.num_tiles; ++tile) {
    const int32_t e = hp.tile_info[3 * tile], r0 = hp.tile_info[3 * tile + 1], r1 = hp.tile_info[3 * tile + 2];
    for (int32_t r = r0; r < std::min(r1, r0 + dsv4::cuda::kWgBM); ++r) {
      const bf16* xr = x.data() + static_cast<int64_t>(hp.token_of[r]) * H;
      for (int n = 0; n < I; ++n) {
        const int64_t wr = (static_cast<int64_t>(e) * I + n) * H;
        act_ref[r * I + n] = swiglu(static_cast<float>(dot(xr, w1.data() + wr, H)),
                                    static_cast<float>(dot(xr, w3.data() + wr, H)), limit);
      }
      for (int n = 0; n < H; ++n)
        y_ref[r * H + n] =
            static_cast<float>(dot(act_in.data() + r * I, w2.data() + (static_cast<int64_t>(e) * H + n) * I, I));
    }
  }

  std::vector<bf16> act_first;
  std::vector<float> y_first;
  bool act_same = true, y_same = true;
  for (int run = 0; run < 2; ++run) {
    dact.poison();
    dy.poison();
    dsv4::cuda::launch_moe_gemm_wgmma<true>(nullptr, dact.ptr, dx.ptr, maps.w13[0], maps.w13[1], plan.view(), bound, I,
                                            H, limit, "moe_gemm_wgmma");
    dsv4::cuda::launch_moe_gemm_wgmma<false>(nullptr, dy.ptr, dact_in.ptr, maps.w2[0], maps.w2[1], plan.view(), bound,
                                             H, I, limit, "moe_gemm_wgmma");
    CK(cudaDeviceSynchronize());
    const std::vector<bf16> act = dact.download();
    const std::vector<float> y = dy.download();
    if (run == 0) {
      act_first = act;
      y_first = y;
    } else {
      act_same = std::memcmp(act.data(), act_first.data(), act.size() * sizeof(bf16)) == 0;
      y_same = std::memcmp(y.data(), y_first.data(), y.size() * sizeof(float)) == 0;
    }
  }
  std::vector<float> act_got(act_first.size());
  for (size_t i = 0; i < act_got.size(); ++i) act_got[i] = to_f(act_first[i]);
  const std::string shape = " T=" + std::to_string(T) + " E=" + std::to_string(E) + "+1 k=" + std::to_string(k) +
                            " H=" + std::to_string(H) + " I=" + std::to_string(I);
  bool finite = true;
  double err = rel_error(act_got, act_ref, &finite);
  bool ok = report("wgmma gated (w1/w3 + SwiGLU, bf16)" + shape, err, finite, 1e-2, act_same);
  err = rel_error(y_first, y_ref, &finite);
  ok = report("wgmma w2 (f32)" + shape, err, finite, 1e-3, y_same) && ok;
  return ok;
}

// A well-mixed 32-bit hash of element i under `seed` (the fill kernels' random source).
__device__ __forceinline__ uint32_t hash_index(size_t i, uint32_t seed) {
  uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B9u ^ static_cast<uint32_t>(i >> 32) * 0x85EBCA6Bu ^ seed;
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return h;
}

__global__ void fill_random_bf16_kernel(bf16* p, size_t n, uint32_t seed, float range) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint32_t h = hash_index(i, seed);
    const float u = static_cast<float>(h >> 8) * (1.0f / 16777216.0f);  // [0, 1)
    p[i] = __float2bfloat16((2.0f * u - 1.0f) * range);
  }
}
void fill_random(bf16* p, size_t n, uint32_t seed, float range) {
  fill_random_bf16_kernel<<<1024, 256>>>(p, n, seed, range);
  CK(cudaGetLastError());
}

// Random bytes; FP8 codes skip E4M3's NaN codes (0x7F / 0xFF become 0x7E / 0xFE), scale bytes lie in [lo, lo + span).
__global__ void fill_random_bytes_kernel(uint8_t* p, size_t n, uint32_t seed, int mode, int lo, int span) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint32_t h = hash_index(i, seed);
    uint8_t b = static_cast<uint8_t>(h >> 8);
    if (mode == 1 && (b & 0x7F) == 0x7F) b = static_cast<uint8_t>(b - 1);
    if (mode == 2) b = static_cast<uint8_t>(lo + static_cast<int>((h >> 8) % static_cast<uint32_t>(span)));
    p[i] = b;
  }
}
enum class ByteFill { kFp4Codes = 0, kFp8Codes = 1, kScales = 2 };
void fill_bytes(uint8_t* p, size_t n, uint32_t seed, ByteFill mode, int lo = 0, int span = 1) {
  fill_random_bytes_kernel<<<1024, 256>>>(p, n, seed, static_cast<int>(mode), lo, span);
  CK(cudaGetLastError());
}

// One quantised stack on the device: `experts` FP4 matrices [N, K] and the shared expert FP8 (block scales).
struct QuantStack {
  DevBuf<uint8_t> codes, scale, shared_codes, shared_scale;
  int64_t N, K, experts;
  QuantStack(int64_t n, int64_t k, int64_t e, uint32_t seed)
      : codes(e * dsv4::cuda::quant_code_bytes(dsv4::WeightFormat::kFp4, n, k)),
        scale(e * dsv4::cuda::quant_scale_bytes(dsv4::WeightFormat::kFp4, n, k)),
        shared_codes(dsv4::cuda::quant_code_bytes(dsv4::WeightFormat::kFp8Block, n, k)),
        shared_scale(dsv4::cuda::quant_scale_bytes(dsv4::WeightFormat::kFp8Block, n, k)),
        N(n),
        K(k),
        experts(e) {
    // FP4 values reach 6: scales 2^-7 .. 2^-4 give weights of the bf16 stacks' size; FP8 values reach 448: 2^-12 ..
    // 2^-10.
    fill_bytes(codes.ptr, codes.n, seed, ByteFill::kFp4Codes);
    fill_bytes(scale.ptr, scale.n, seed + 1, ByteFill::kScales, 120, 4);
    fill_bytes(shared_codes.ptr, shared_codes.n, seed + 2, ByteFill::kFp8Codes);
    fill_bytes(shared_scale.ptr, shared_scale.n, seed + 3, ByteFill::kScales, 115, 3);
  }
  dsv4::cuda::QuantExperts view() const {
    dsv4::cuda::QuantExperts q;
    q.routed = {dsv4::WeightFormat::kFp4, codes.ptr, scale.ptr, N, K};
    q.count = static_cast<int32_t>(experts);
    q.shared = {dsv4::WeightFormat::kFp8Block, shared_codes.ptr, shared_scale.ptr, N, K};
    return q;
  }
  // Row n of expert e (e == experts: the shared one), dequantised exactly on the host.
  std::vector<float> row(int64_t e, int64_t n) const {
    std::vector<float> out(K);
    if (e < experts) {
      const int64_t cb = K / 2, sc = dsv4::cuda::quant_scale_cols(dsv4::WeightFormat::kFp4, K);
      std::vector<uint8_t> q(cb), s(sc);
      CK(cudaMemcpy(q.data(), codes.ptr + (e * N + n) * cb, cb, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(s.data(), scale.ptr + (e * N + n) * sc, sc, cudaMemcpyDeviceToHost));
      dsv4::dequantize_fp4(q.data(), s.data(), 1, K, out.data(), "lab row");
    } else {
      const int64_t sc = dsv4::cuda::quant_scale_cols(dsv4::WeightFormat::kFp8Block, K);
      std::vector<uint8_t> q(K), s(sc);
      CK(cudaMemcpy(q.data(), shared_codes.ptr + n * K, K, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(s.data(), shared_scale.ptr + (n / dsv4::kFp8Block) * sc, sc, cudaMemcpyDeviceToHost));
      dsv4::dequantize_fp8_block(q.data(), s.data(), 1, K, out.data(), "lab row");
    }
    return out;
  }
};

// The Flash shape (T = 4,096, 256 routed experts + 1 shared, k = 6, H = 4,096, I = 2,048) and its random plan.
struct FlashProblem {
  static constexpr int64_t T = 4096, E = 256, k = 6, experts = E + 1;
  static constexpr int H = 4096, I = 2048;
  static constexpr float limit = 7.0f;
  std::mt19937 rng;
  HostPlan hp;
  int64_t P;
  int bound;
  DevPlan plan;
  DevBuf<bf16> x, act;
  DevBuf<float> y;
  explicit FlashProblem(uint32_t seed)
      : rng(seed),
        hp(make_plan(random_routing(rng, T, E, k), T, k, E, true, dsv4::cuda::kWgBM)),
        P(static_cast<int64_t>(hp.token_of.size())),
        bound(tile_bound(P, experts)),
        plan(hp),
        x(T * H),
        act(P * I),
        y(P * H) {}
};

double dot_ff(const float* a, const float* w, int64_t K) {
  double s = 0;
  for (int64_t i = 0; i < K; ++i) s += static_cast<double>(a[i]) * w[i];
  return s;
}

// Runs both products once (outputs poisoned first), checks 256 sampled outputs of each against host dot products
// with the weight rows `row(matrix, e, n)` gives (matrix 1 = w1, 3 = w3, 2 = w2; f32 values), then times each by
// graph replay and prints the figures under `name`. shared_half: every other sample from the shared expert's rows.
// The activation rows the products read, as f32 values: x row t (GATED) and act row r (w2). By default the bf16 rows
// of f.x / f.act; the FP8 variant's are its E4M3 codes times their scales.
struct ActRows {
  std::function<std::vector<float>(int64_t)> x, act;
  std::function<void()> between;  // after the gated product, before w2 (untimed): the FP8 variant quantises act
};
using WeightRow = std::function<std::vector<float>(int, int64_t, int64_t)>;
bool check_and_time(const std::string& name, FlashProblem& f, const WeightRow& row,
                    const std::function<void(cudaStream_t)>& gated, const std::function<void(cudaStream_t)>& down,
                    bool shared_half, ActRows rows = {}) {
  constexpr int H = FlashProblem::H, I = FlashProblem::I;
  const auto bf16_row = [](const bf16* src, int64_t n) {
    std::vector<bf16> h(n);
    CK(cudaMemcpy(h.data(), src, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    std::vector<float> v(n);
    for (int64_t i = 0; i < n; ++i) v[i] = to_f(h[i]);
    return v;
  };
  if (!rows.x) rows.x = [&](int64_t t) { return bf16_row(f.x.ptr + t * H, H); };
  if (!rows.act) rows.act = [&](int64_t r) { return bf16_row(f.act.ptr + r * I, I); };
  f.act.poison();
  f.y.poison();
  gated(nullptr);
  CK(cudaDeviceSynchronize());
  if (rows.between) rows.between();
  down(nullptr);
  CK(cudaDeviceSynchronize());
  std::vector<int32_t> expert_of_row(f.P);
  for (int32_t t = 0; t < f.hp.num_tiles; ++t)
    for (int32_t r = f.hp.tile_info[3 * t + 1]; r < f.hp.tile_info[3 * t + 2]; ++r)
      expert_of_row[r] = f.hp.tile_info[3 * t];
  const auto fetch = [](const bf16* src, int64_t n) {
    std::vector<bf16> h(n);
    CK(cudaMemcpy(h.data(), src, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    return h;
  };
  std::uniform_int_distribution<int64_t> pick_row(0, f.P - 1);
  std::vector<float> act_got, act_want, y_got, y_want;
  for (int s = 0; s < 256; ++s) {
    int64_t r = pick_row(f.rng);
    while (shared_half && (s % 2 == 0) != (expert_of_row[r] == FlashProblem::E)) r = pick_row(f.rng);
    const int64_t e = expert_of_row[r];
    const int n = static_cast<int>(f.rng() % I), m = static_cast<int>(f.rng() % H);
    const std::vector<float> xr = rows.x(f.hp.token_of[r]);
    act_want.push_back(swiglu(static_cast<float>(dot_ff(xr.data(), row(1, e, n).data(), H)),
                              static_cast<float>(dot_ff(xr.data(), row(3, e, n).data(), H)), FlashProblem::limit));
    act_got.push_back(to_f(fetch(f.act.ptr + r * I + n, 1)[0]));
    const std::vector<float> ar = rows.act(r);
    y_want.push_back(static_cast<float>(dot_ff(ar.data(), row(2, e, m).data(), I)));
    float yv = 0;
    CK(cudaMemcpy(&yv, f.y.ptr + r * H + m, sizeof(float), cudaMemcpyDeviceToHost));
    y_got.push_back(yv);
  }
  bool finite = true;
  double err = rel_error(act_got, act_want, &finite);
  bool ok = report(name + " gated, Flash shape (256 sampled outputs)", err, finite, 1e-2, true);
  err = rel_error(y_got, y_want, &finite);
  ok = report(name + " w2, Flash shape (256 sampled outputs)", err, finite, 1e-3, true) && ok;

  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const double t_gated = dsv4::bench::time_graph([&](int, cudaStream_t st) { gated(st); }, stream, 1, 30),
               t_down = dsv4::bench::time_graph([&](int, cudaStream_t st) { down(st); }, stream, 1, 30);
  CK(cudaStreamDestroy(stream));
  const double f_gated = 2.0 * f.P * (2.0 * I) * H, f_down = 2.0 * f.P * static_cast<double>(H) * I;
  std::printf(
      "%s, Flash shape: T=%lld, %lld routed + 1 shared experts, k=%lld, H=%d, I=%d: %lld rows, %d tiles "
      "(grid.y %d)\n",
      name.c_str(), static_cast<long long>(FlashProblem::T), static_cast<long long>(FlashProblem::E),
      static_cast<long long>(FlashProblem::k), H, I, static_cast<long long>(f.P), f.hp.num_tiles, f.bound);
  std::printf("  %s gated (w1/w3 + SwiGLU): %8.3f ms  %7.1f TFLOP/s\n", name.c_str(), t_gated * 1e3,
              f_gated / t_gated * 1e-12);
  std::printf("  %s w2:                     %8.3f ms  %7.1f TFLOP/s\n", name.c_str(), t_down * 1e3,
              f_down / t_down * 1e-12);
  std::printf("  %s both:                   %8.3f ms\n", name.c_str(), (t_gated + t_down) * 1e3);
  return ok;
}

// bf16 stacks at the Flash shape.
bool time_flash() {
  FlashProblem f(1234);
  constexpr int64_t experts = FlashProblem::experts;
  constexpr int H = FlashProblem::H, I = FlashProblem::I;
  DevBuf<bf16> w1(experts * I * H), w3(experts * I * H), w2(experts * H * I);
  fill_random(f.x.ptr, f.x.n, 1, 1.0f);
  fill_random(w1.ptr, w1.n, 2, 2.0f / std::sqrt(static_cast<float>(H)));
  fill_random(w3.ptr, w3.n, 3, 2.0f / std::sqrt(static_cast<float>(H)));
  fill_random(w2.ptr, w2.n, 4, 2.0f / std::sqrt(static_cast<float>(I)));
  Maps maps;
  make_maps<true>(maps.w13, w1.ptr, w3.ptr, experts, I, H);
  make_maps<false>(maps.w2, w2.ptr, w2.ptr, experts, H, I);
  const auto row = [&](int matrix, int64_t e, int64_t n) {
    const int64_t K = matrix == 2 ? I : H, N = matrix == 2 ? H : I;
    const bf16* w = matrix == 1 ? w1.ptr : matrix == 3 ? w3.ptr : w2.ptr;
    std::vector<bf16> h(K);
    CK(cudaMemcpy(h.data(), w + (e * N + n) * K, K * sizeof(bf16), cudaMemcpyDeviceToHost));
    std::vector<float> out(K);
    for (int64_t i = 0; i < K; ++i) out[i] = to_f(h[i]);
    return out;
  };
  return check_and_time(
      "wgmma", f, row,
      [&](cudaStream_t s) {
        dsv4::cuda::launch_moe_gemm_wgmma<true>(s, f.act.ptr, f.x.ptr, maps.w13[0], maps.w13[1], f.plan.view(), f.bound,
                                                I, H, FlashProblem::limit, "moe_gemm_wgmma");
      },
      [&](cudaStream_t s) {
        dsv4::cuda::launch_moe_gemm_wgmma<false>(s, f.y.ptr, f.act.ptr, maps.w2[0], maps.w2[1], f.plan.view(), f.bound,
                                                 H, I, FlashProblem::limit, "moe_gemm_wgmma");
      },
      false);
}

// Quantised stacks (FP4 routed, FP8 shared) at the Flash shape; half the samples from the shared expert's FP8 tiles.
bool time_flash_quant() {
  FlashProblem f(4321);
  constexpr int H = FlashProblem::H, I = FlashProblem::I;
  fill_random(f.x.ptr, f.x.n, 11, 1.0f);
  const QuantStack w1(I, H, FlashProblem::E, 100), w3(I, H, FlashProblem::E, 200), w2(H, I, FlashProblem::E, 300);
  const auto row = [&](int matrix, int64_t e, int64_t n) {
    return (matrix == 1 ? w1 : matrix == 3 ? w3 : w2).row(e, n);
  };
  return check_and_time(
      "wgmma quantised", f, row,
      [&](cudaStream_t s) {
        dsv4::cuda::launch_moe_gemm_wgmma_quant<true>(s, f.act.ptr, f.x.ptr, w1.view(), w3.view(), f.plan.view(),
                                                      f.bound, I, H, FlashProblem::limit, "moe_gemm_wgmma quantised");
      },
      [&](cudaStream_t s) {
        dsv4::cuda::launch_moe_gemm_wgmma_quant<false>(s, f.y.ptr, f.act.ptr, w2.view(), w2.view(), f.plan.view(),
                                                       f.bound, H, I, FlashProblem::limit, "moe_gemm_wgmma quantised");
      },
      true);
}

// The operand-swapped variant (moe_gemm_rs.cuh: weights as wgmma's register operand) on the same quantised stacks.
bool time_flash_quant_rs() {
  FlashProblem f(4321);
  constexpr int H = FlashProblem::H, I = FlashProblem::I;
  fill_random(f.x.ptr, f.x.n, 11, 1.0f);
  const QuantStack w1(I, H, FlashProblem::E, 100), w3(I, H, FlashProblem::E, 200), w2(H, I, FlashProblem::E, 300);
  const auto row = [&](int matrix, int64_t e, int64_t n) {
    return (matrix == 1 ? w1 : matrix == 3 ? w3 : w2).row(e, n);
  };
  return check_and_time(
      "rs quantised", f, row,
      [&](cudaStream_t s) {
        dsv4::cuda::lab::launch_moe_gemm_rs<true>(s, f.act.ptr, f.x.ptr, w1.view(), w3.view(), f.plan.view(), f.bound,
                                                  I, H, FlashProblem::limit, false);
      },
      [&](cudaStream_t s) {
        dsv4::cuda::lab::launch_moe_gemm_rs<false>(s, f.y.ptr, f.act.ptr, w2.view(), w2.view(), f.plan.view(), f.bound,
                                                   H, I, FlashProblem::limit, false);
      },
      true);
}

// The E4M3 variant (moe_gemm_fp8.cuh) on the same quantised stacks, activations as --activation-quant fp8 leaves them
// (activation_fp8_codes: E4M3 codes, a power-of-two scale per 128 values): the check's reference reads those codes
// times their scales (x before the gated product, act before w2) and the exact host dequantisation of the weights.
bool time_flash_fp8() {
  FlashProblem f(4321);
  constexpr int64_t T = FlashProblem::T;
  constexpr int H = FlashProblem::H, I = FlashProblem::I;
  fill_random(f.x.ptr, f.x.n, 11, 1.0f);
  const QuantStack w1(I, H, FlashProblem::E, 100), w3(I, H, FlashProblem::E, 200), w2(H, I, FlashProblem::E, 300);
  DevBuf<uint8_t> xc(T * H), ac(f.P * I);
  DevBuf<float> xs(H / 128 * T), as(I / 128 * f.P);
  // The loader's measurement of each stack's FP4 row spans, on the scale bytes.
  const auto with_span = [](const QuantStack& w) {
    const std::vector<uint8_t> sc = w.scale.download();
    dsv4::cuda::QuantExperts q = w.view();
    q.fp4_row_span = dsv4::fp4_row_scale_span(sc.data(), w.experts * w.N, w.K);
    return q;
  };
  const dsv4::cuda::QuantExperts q1 = with_span(w1), q3 = with_span(w3), q2 = with_span(w2);
  if (!dsv4::cuda::moe_gemm_fp8_supports(q1, q3, q2, xc.ptr, H, I)) {
    std::printf("FAIL fp8: moe_gemm_fp8_supports refuses the stacks (FP4 row spans %d / %d / %d)\n", q1.fp4_row_span,
                q3.fp4_row_span, q2.fp4_row_span);
    return false;
  }
  dsv4::cuda::activation_fp8_codes(nullptr, dsv4::DType::BF16, f.x.ptr, H, T, H, T, xc.ptr, xs.ptr);
  const auto quantise_act = [&](cudaStream_t s) {
    dsv4::cuda::activation_fp8_codes(s, dsv4::DType::BF16, f.act.ptr, I, f.P, I, f.P, ac.ptr, as.ptr);
  };
  // Row r of codes [rows, width] with scales [width / 128][rows], as f32.
  const auto fp8_row = [](const DevBuf<uint8_t>& codes, const DevBuf<float>& scales, int64_t rows, int64_t width,
                          int64_t r) {
    std::vector<uint8_t> c(width);
    CK(cudaMemcpy(c.data(), codes.ptr + r * width, width, cudaMemcpyDeviceToHost));
    std::vector<float> v(width);
    for (int64_t b = 0; b < width / 128; ++b) {
      float sc = 0;
      CK(cudaMemcpy(&sc, scales.ptr + b * rows + r, sizeof(float), cudaMemcpyDeviceToHost));
      for (int64_t i = 128 * b; i < 128 * (b + 1); ++i) v[i] = dsv4::f8e4m3_to_float(c[i]) * sc;
    }
    return v;
  };
  ActRows rows;
  rows.x = [&](int64_t t) { return fp8_row(xc, xs, T, H, t); };
  rows.act = [&](int64_t r) { return fp8_row(ac, as, f.P, I, r); };
  rows.between = [&] {
    quantise_act(nullptr);
    CK(cudaDeviceSynchronize());
  };
  const auto row = [&](int matrix, int64_t e, int64_t n) {
    return (matrix == 1 ? w1 : matrix == 3 ? w3 : w2).row(e, n);
  };
  const dsv4::cuda::Fp8Activations xa{xc.ptr, xs.ptr, T}, aa{ac.ptr, as.ptr, f.P};
  // The library's ring depth, then one stage less and one more.
  const auto variant = [&](const char* name, auto stages) {
    constexpr int S = decltype(stages)::value;
    return check_and_time(
        name, f, row,
        [&](cudaStream_t s) {
          dsv4::cuda::launch_moe_gemm_fp8<true, bf16, S>(s, f.act.ptr, xa, q1, q3, f.plan.view(), f.bound, I, H,
                                                         FlashProblem::limit);
        },
        [&](cudaStream_t s) {
          dsv4::cuda::launch_moe_gemm_fp8<false, float, S>(s, f.y.ptr, aa, q2, q2, f.plan.view(), f.bound, H, I,
                                                           FlashProblem::limit);
        },
        true, rows);
  };
  constexpr int kS = dsv4::cuda::kF8Stages;
  bool ok = variant("fp8", std::integral_constant<int, kS>{});
  ok = variant("fp8 stages-1", std::integral_constant<int, kS - 1>{}) && ok;
  ok = variant("fp8 stages+1", std::integral_constant<int, kS + 1>{}) && ok;
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const double t_q = dsv4::bench::time_graph([&](int, cudaStream_t st) { quantise_act(st); }, stream, 1, 30);
  CK(cudaStreamDestroy(stream));
  std::printf("  fp8 act quantisation (activation_fp8_codes, %lld x %d): %8.3f ms\n", static_cast<long long>(f.P), I,
              t_q * 1e3);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const bool check_only = argc > 1 && std::strcmp(argv[1], "check") == 0;
  const bool quant_only = argc > 1 && std::strcmp(argv[1], "quant") == 0;
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  if (prop.major != 9) {
    std::fprintf(stderr, "wgmma needs sm_90a (Hopper)\n");
    return 2;
  }
  bool ok = true;
  if (argc > 1 && std::strcmp(argv[1], "rs") == 0) {  // the operand-swapped variant beside the current kernel
    ok = time_flash_quant();
    ok = time_flash_quant_rs() && ok;
    std::printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
    return ok ? 0 : 1;
  }
  if (argc > 1 && std::strcmp(argv[1], "fp8") == 0) {  // the E4M3 variant beside the current quantised kernel
    ok = time_flash_quant();
    ok = time_flash_fp8() && ok;
    std::printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
    return ok ? 0 : 1;
  }
  if (quant_only) {
    ok = time_flash_quant();
    std::printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
    return ok ? 0 : 1;
  }
  // The brief's shape (K = 256: 4 k stages, the ring never wraps), then one whose K runs 16 stages past a ragged end
  // (the ring wraps twice: mbarrier phases) with ragged N in both products.
  ok = check_case(300, 8, 2, 256, 192, 1) && ok;
  ok = check_case(257, 5, 2, 1000, 328, 2) && ok;
  if (!check_only) ok = time_flash() && ok;
  if (!check_only) ok = time_flash_quant() && ok;
  std::printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
  return ok ? 0 : 1;
}
