// Kernel lab: the decode kernels on quantised weights (backend/cuda/quant_matrix.h) on DeepSeek-V4-Flash's decode
// shapes, against the HBM floor of the *quantised* bytes and against the bf16 kernels they replace.
//
// UNVERIFIED ON GPU: written in a session without a GPU (scripts/gpu/run.sh quant runs it).
//
//   bench_quant_gemv [--tokens 1,2,4,8] [--batches 1,16] [--moe-variants] [--json PATH]
//
// Dense rows: FP8-block projections at T rows: quant_gemv for T <= 16, the fallback (dequantize_to_bf16 into a
// scratch matrix, then the bf16 product) above, against what cuda::linear does with bf16 weights (the GEMV where
// gemv_serves says so, else cuBLASLt). T covers --tokens and --batches. MoE rows: one Flash MoE layer's decode (256
// routed FP4 experts + the FP8 shared expert, top-6, H 4096, I 2048) for a batch of b tokens
// (moe_decode_experts_quant) vs the bf16 decode path (moe_decode_experts) on the same plans. Layer totals (per b):
// a CSA layer's FP8 projections (wq_a, wq_b, wkv, wo_a, wo_b, indexer wq_b) at T = b plus the MoE rows: the
// kernel-level stand-in for the issue's "decode b = 1 and b = 16 <= 1.3x the quantised floor" until the engine
// keeps weights quantised. Weights are cold as in a forward: dense launches cycle through copies spanning >= 256 MB,
// MoE launches through 8 random routings. The floor is the bytes a launch must read (codes + scales; for MoE the
// touched experts only) over cuda::measure_copy_bandwidth(); timings are CUDA-graph replays (median of 15).
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../lab_util.h"
#include "backend/cuda/blas.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/launch.h"
#include "backend/cuda/quant_matrix.h"
#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/exec_context.h"
#include "moe_ring_variants.cuh"

namespace {

using dsv4::WeightFormat;
using dsv4::bench::DeviceAlloc;
using dsv4::bench::parse_list;
using dsv4::bench::time_graph;
using nlohmann::json;

// Random bytes on the device (a counter hash): E4M3 codes without the NaN bytes (mode 1), E8M0 scales in
// [120, 127] (mode 2), any byte (mode 0: packed FP4), or bf16 values in (-1, 1) (mode 3, n = elements).
__global__ void fill_kernel(void* dst, size_t n, uint32_t seed, int mode) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B1u ^ seed ^ static_cast<uint32_t>(i >> 32) * 0x85EBCA77u;
    h ^= h >> 15, h *= 0x2C1B3C6Du, h ^= h >> 12, h *= 0x297A2D39u, h ^= h >> 15;
    if (mode == 3) {
      static_cast<uint16_t*>(dst)[i] = static_cast<uint16_t>(0x3f00u | (h & 0x807fu));  // +-[0.5, 1)
    } else {
      uint8_t b = static_cast<uint8_t>(h);
      if (mode == 1 && (b & 0x7f) == 0x7f) b &= 0xfe;
      if (mode == 2) b = static_cast<uint8_t>(120 + (h & 7));
      static_cast<uint8_t*>(dst)[i] = b;
    }
  }
}

void fill(void* dst, size_t n, uint32_t seed, int mode) {
  fill_kernel<<<1024, 256>>>(dst, n, seed, mode);
  DSV4_CUDA_CHECK(cudaGetLastError());
}

// A quantised [N, K] matrix (or `count` back to back) in one allocation: codes, then scales (16-byte aligned).
struct QuantAlloc {
  std::unique_ptr<DeviceAlloc> mem;
  dsv4::cuda::QuantMatrix m;
  int64_t bytes = 0;  // codes + scales
  QuantAlloc(WeightFormat f, int64_t N, int64_t K, int64_t count, uint32_t seed) {
    const int64_t cb = dsv4::cuda::quant_code_bytes(f, N, K) * count;
    const int64_t sb = dsv4::cuda::quant_scale_bytes(f, N, K) * count;
    const int64_t sb_off = (cb + 255) / 256 * 256;
    mem = std::make_unique<DeviceAlloc>(sb_off + sb);
    uint8_t* base = static_cast<uint8_t*>(mem->ptr);
    fill(base, cb, seed, f == WeightFormat::kFp4 ? 0 : 1);
    fill(base + sb_off, sb, seed + 1, 2);
    m.format = f, m.codes = base, m.scale = base + sb_off, m.N = N, m.K = K;
    bytes = cb + sb;
  }
};

struct Dense {
  const char* name;
  int64_t K, N;  // per group
  bool out_f32;
  int64_t G;      // groups (grouped_linear: wo_a)
  bool in_layer;  // counted in the layer totals (the shared expert runs inside the MoE rows instead)
};

// The expert-sorted plan (moe.cu's moe_plan_kernel, on the host): routed pairs t*k + i, then the shared expert's
// T*k + t as expert E; each expert's rows consecutive, tiles of at most kPlanTileRows rows.
struct Plan {
  std::vector<int32_t> token_of, tile_info;
  int32_t tiles = 0;
  std::set<int32_t> touched;
};

Plan make_plan(std::mt19937& rng, int64_t T, int64_t k, int64_t E) {
  std::vector<int32_t> idx(T * k);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> all(E);
    for (int32_t e = 0; e < E; ++e) all[e] = e;
    std::shuffle(all.begin(), all.end(), rng);
    std::copy(all.begin(), all.begin() + k, idx.begin() + t * k);
  }
  Plan p;
  int32_t row = 0;
  for (int32_t e = 0; e <= E; ++e) {
    const int32_t start = row;
    for (int64_t q = 0; q < T * k + T; ++q) {
      const int32_t eq = q < T * k ? idx[q] : static_cast<int32_t>(E);
      if (eq != e) continue;
      p.token_of.push_back(static_cast<int32_t>(q < T * k ? q / k : q - T * k));
      ++row;
    }
    for (int32_t r = start; r < row; r += dsv4::cuda::kPlanTileRows) {
      p.tile_info.insert(p.tile_info.end(), {e, r, row});
      ++p.tiles;
    }
    if (row > start && e < E) p.touched.insert(e);
  }
  return p;
}

struct DevicePlan {
  std::unique_ptr<DeviceAlloc> mem;
  dsv4::cuda::MoePlan plan{};
  int64_t max_tiles = 0;
  explicit DevicePlan(const Plan& p) {
    const int64_t P = static_cast<int64_t>(p.token_of.size());
    mem = std::make_unique<DeviceAlloc>((2 * P + p.tile_info.size() + 1) * 4);
    int32_t* base = static_cast<int32_t*>(mem->ptr);
    plan.row_of = base;  // unused by the decode kernels
    plan.token_of = base + P;
    plan.tile_info = base + 2 * P;
    plan.num_tiles = plan.tile_info + p.tile_info.size();
    DSV4_CUDA_CHECK(cudaMemcpy(plan.token_of, p.token_of.data(), P * 4, cudaMemcpyHostToDevice));
    DSV4_CUDA_CHECK(cudaMemcpy(plan.tile_info, p.tile_info.data(), p.tile_info.size() * 4, cudaMemcpyHostToDevice));
    DSV4_CUDA_CHECK(cudaMemcpy(plan.num_tiles, &p.tiles, 4, cudaMemcpyHostToDevice));
    max_tiles = p.tiles;
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> tokens = {1, 2, 4, 8}, batches = {1, 16};
  std::string json_path;
  bool moe_variants = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--moe-variants") {
      moe_variants = true;
    } else if (a == "--tokens" && i + 1 < argc) {
      tokens = parse_list(argv[++i]);
    } else if (a == "--batches" && i + 1 < argc) {
      batches = parse_list(argv[++i]);
    } else if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--tokens LIST] [--batches LIST] [--moe-variants] [--json PATH]\n", argv[0]);
      return 2;
    }
  }
  const std::string why = dsv4::cuda::unavailable_reason();
  if (!why.empty()) {
    std::fprintf(stderr, "bench_quant_gemv: %s\n", why.c_str());
    return 1;
  }
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double copy_bw = dsv4::cuda::measure_copy_bandwidth();
  std::printf("card: %s (%d SMs), copy bandwidth %.0f GB/s, PDL %s\n", prop.name, prop.multiProcessorCount,
              copy_bw / 1e9, dsv4::cuda::pdl_enabled() ? "on" : "off");
  cudaStream_t stream;
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  json results = json::array();

  dsv4::cuda::BlasHandle blas;
  dsv4::ExecContext ctx;
  ctx.device = dsv4::Device::kCUDA;
  ctx.stream = stream;
  ctx.blas = &blas;

  // ---- dense FP8 projections ----
  // T <= 16: quant_gemv. Larger T: the fallback (dequantize_to_bf16 into a scratch matrix, then cuBLASLt). bf16: what
  // cuda::linear does (the GEMV where gemv_serves says so, else cuBLASLt).
  const std::vector<Dense> dense = {{"wq_a", 4096, 1024, false, 1, true},
                                    {"wq_b", 1024, 32768, false, 1, true},
                                    {"wkv", 4096, 512, false, 1, true},
                                    {"wo_b", 8192, 4096, false, 1, true},
                                    {"wo_a (8 groups)", 4096, 1024, false, 8, true},
                                    {"indexer wq_b", 1024, 8192, true, 1, true},
                                    {"shared w1/w3", 4096, 2048, false, 1, false},
                                    {"shared w2", 2048, 4096, false, 1, false}};
  std::vector<int64_t> all_tokens = tokens;
  for (int64_t b : batches) {
    if (std::find(all_tokens.begin(), all_tokens.end(), b) == all_tokens.end()) all_tokens.push_back(b);
  }
  // Per T: summed times and floors of the per-layer projections (Dense::in_layer) for the layer totals.
  std::map<int64_t, std::array<double, 4>> layer;  // quant us, quant floor, bf16 us, bf16 floor
  std::printf("%-16s %3s %7s %10s | %9s %6s %5s | %9s %5s | %6s\n", "fp8 dense", "T", "MB", "path", "quant us", "GB/s",
              "floor", "bf16 us", "floor", "speed");
  for (const Dense& s : dense) {
    const int64_t q_bytes = s.G * (dsv4::cuda::quant_code_bytes(WeightFormat::kFp8Block, s.N, s.K) +
                                   dsv4::cuda::quant_scale_bytes(WeightFormat::kFp8Block, s.N, s.K));
    const int64_t b_bytes = s.G * s.N * s.K * 2;
    const int copies = static_cast<int>(std::clamp<int64_t>((int64_t{256} << 20) / q_bytes + 1, 1, 64));
    const int bcopies = static_cast<int>(std::clamp<int64_t>((int64_t{256} << 20) / b_bytes + 1, 1, 64));
    std::vector<std::unique_ptr<QuantAlloc>> q;
    std::vector<std::unique_ptr<DeviceAlloc>> b;
    for (int c = 0; c < copies; ++c) {
      q.push_back(std::make_unique<QuantAlloc>(WeightFormat::kFp8Block, s.N, s.K, s.G, 7 + c));
    }
    for (int c = 0; c < bcopies; ++c) {
      b.push_back(std::make_unique<DeviceAlloc>(b_bytes));
      fill(b.back()->ptr, s.G * s.N * s.K, 99 + c, 3);
    }
    DeviceAlloc scratch(b_bytes);  // the fallback's dequantised matrix
    for (int64_t T : all_tokens) {
      DeviceAlloc x(T * s.G * s.K * 2), out(T * s.G * s.N * 4);
      fill(x.ptr, T * s.G * s.K, 5, 3);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());
      auto args = [&](const void* w) {
        dsv4::cuda::GemmArgs g;
        g.x = x.ptr, g.w = w, g.out = out.ptr;
        g.out_type = s.out_f32 ? dsv4::DType::F32 : dsv4::DType::BF16;
        g.M = T, g.K = s.K, g.N = s.N, g.batch = s.G;
        g.ldx = s.G * s.K, g.ldw = s.K, g.ldo = s.G * s.N;
        g.stride_x = s.K, g.stride_w = s.N * s.K, g.stride_o = s.N;
        return g;
      };
      auto linear = [&](const dsv4::cuda::GemmArgs& g, cudaStream_t st) {
        if (dsv4::cuda::gemv_serves(g)) {
          dsv4::cuda::gemv(st, g);
        } else {
          blas.gemm(ctx, g);
        }
      };
      const bool direct = T <= dsv4::cuda::kQuantGemvMaxTokens;
      const double floor_q = q_bytes / copy_bw, floor_b = b_bytes / copy_bw;
      const int per_graph = static_cast<int>(std::clamp(2e-3 / std::max(floor_q, 1e-7), 8.0, 400.0));
      const double t_q = time_graph(
          [&](int i, cudaStream_t st) {
            const dsv4::cuda::QuantMatrix& m = q[i % copies]->m;
            if (direct) {
              dsv4::cuda::quant_gemv(st, m, x.ptr, s.G * s.K, out.ptr, s.out_f32, s.G * s.N, T, s.G);
            } else {
              dsv4::cuda::QuantMatrix whole = m;  // the groups' FP8 blocks are one [G*N, K] matrix's
              whole.N = s.G * s.N;
              dsv4::cuda::dequantize_to_bf16(st, whole, scratch.ptr);
              linear(args(scratch.ptr), st);
            }
          },
          stream, per_graph);
      const double t_b =
          time_graph([&](int i, cudaStream_t st) { linear(args(b[i % bcopies]->ptr), st); }, stream, per_graph);
      std::printf("%-16s %3lld %7.1f %10s | %9.2f %6.0f %5.2f | %9.2f %5.2f | %5.2fx\n", s.name,
                  static_cast<long long>(T), q_bytes / 1e6, direct ? "gemv" : "dequant+lt", t_q * 1e6,
                  q_bytes / t_q / 1e9, t_q / floor_q, t_b * 1e6, t_b / floor_b, t_b / t_q);
      if (s.in_layer) {
        auto& l = layer[T];
        l[0] += t_q, l[1] += floor_q, l[2] += t_b, l[3] += floor_b;
      }
      results.push_back({{"kind", "dense_fp8"},
                         {"shape", s.name},
                         {"T", T},
                         {"path", direct ? "quant_gemv" : "dequantize_to_bf16 + linear"},
                         {"K", s.K},
                         {"N", s.N},
                         {"groups", s.G},
                         {"quant_bytes", q_bytes},
                         {"quant_us", t_q * 1e6},
                         {"quant_floor_us", floor_q * 1e6},
                         {"bf16_us", t_b * 1e6},
                         {"bf16_floor_us", floor_b * 1e6}});
    }
  }

  // ---- one Flash MoE layer ----
  const int64_t H = 4096, I = 2048, E = 256, k = 6;
  QuantAlloc r1(WeightFormat::kFp4, I, H, E, 1001), r3(WeightFormat::kFp4, I, H, E, 1003),
      r2(WeightFormat::kFp4, H, I, E, 1005);
  QuantAlloc s1(WeightFormat::kFp8Block, I, H, 1, 2001), s3(WeightFormat::kFp8Block, I, H, 1, 2003),
      s2(WeightFormat::kFp8Block, H, I, 1, 2005);
  auto stack = [&](const QuantAlloc& r, const QuantAlloc& s) {
    dsv4::cuda::QuantExperts q;
    q.routed = r.m, q.count = static_cast<int32_t>(E), q.shared = s.m;
    return q;
  };
  const dsv4::cuda::QuantExperts q1 = stack(r1, s1), q3 = stack(r3, s3), q2 = stack(r2, s2);
  const int64_t expert_q_bytes = (r1.bytes + r3.bytes + r2.bytes) / E, shared_q_bytes = s1.bytes + s3.bytes + s2.bytes;
  // bf16 stacks [E + 1, ...] for the reference path.
  const int64_t expert_elems = I * H;
  DeviceAlloc b1((E + 1) * expert_elems * 2), b3((E + 1) * expert_elems * 2), b2((E + 1) * expert_elems * 2);
  fill(b1.ptr, (E + 1) * expert_elems, 11, 3);
  fill(b3.ptr, (E + 1) * expert_elems, 13, 3);
  fill(b2.ptr, (E + 1) * expert_elems, 15, 3);
  std::printf("%-14s %3s %7s | %9s %6s %5s | %9s %5s | %6s\n", "moe layer", "b", "experts", "quant us", "GB/s", "floor",
              "bf16 us", "floor", "speed");
  for (int64_t T : batches) {
    if (T * k + T > dsv4::cuda::kMoeDecodeMaxPairs) {
      std::printf("moe b=%lld: %lld pairs, past the decode path's %lld\n", static_cast<long long>(T),
                  static_cast<long long>(T * k + T), static_cast<long long>(dsv4::cuda::kMoeDecodeMaxPairs));
      continue;
    }
    std::mt19937 rng(static_cast<uint32_t>(T));
    constexpr int kRoutings = 8;
    std::vector<std::unique_ptr<DevicePlan>> plans;
    double touched = 0;
    for (int i = 0; i < kRoutings; ++i) {
      const Plan p = make_plan(rng, T, k, E);
      touched += static_cast<double>(p.touched.size()) / kRoutings;
      plans.push_back(std::make_unique<DevicePlan>(p));
    }
    const int64_t P = T * k + T;
    DeviceAlloc x(T * H * 2), act(P * I * 2), y(P * H * 4);
    fill(x.ptr, T * H, 5, 3);
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
    const double q_bytes = touched * expert_q_bytes + shared_q_bytes;
    const double b_bytes = (touched + 1) * 3 * expert_elems * 2;
    const double floor_q = q_bytes / copy_bw, floor_b = b_bytes / copy_bw;
    const double t_q = time_graph(
        [&](int i, cudaStream_t st) {
          const DevicePlan& p = *plans[i % kRoutings];
          dsv4::cuda::moe_decode_experts_quant(st, static_cast<dsv4::cuda::bf16*>(act.ptr), static_cast<float*>(y.ptr),
                                               static_cast<const dsv4::cuda::bf16*>(x.ptr), q1, q3, q2, p.plan,
                                               p.max_tiles, T, H, I, 10.0f);
        },
        stream, 40);
    const double t_b = time_graph(
        [&](int i, cudaStream_t st) {
          const DevicePlan& p = *plans[i % kRoutings];
          dsv4::cuda::moe_decode_experts(
              st, static_cast<dsv4::cuda::bf16*>(act.ptr), static_cast<float*>(y.ptr),
              static_cast<const dsv4::cuda::bf16*>(x.ptr), static_cast<const dsv4::cuda::bf16*>(b1.ptr),
              static_cast<const dsv4::cuda::bf16*>(b3.ptr), static_cast<const dsv4::cuda::bf16*>(b2.ptr), p.plan,
              p.max_tiles, T, H, I, 10.0f);
        },
        stream, 40);
    std::printf("%-14s %3lld %7.1f | %9.2f %6.0f %5.2f | %9.2f %5.2f | %5.2fx\n", "flash moe",
                static_cast<long long>(T), touched, t_q * 1e6, q_bytes / t_q / 1e9, t_q / floor_q, t_b * 1e6,
                t_b / floor_b, t_b / t_q);
    if (layer.count(T)) {
      auto& l = layer[T];
      l[0] += t_q, l[1] += floor_q, l[2] += t_b, l[3] += floor_b;
      const double ratio_q = l[0] / l[1], ratio_b = l[2] / l[3];
      std::printf(
          "%-14s %3lld         | %9.2f        %5.2f | %9.2f %5.2f | %5.2fx   (CSA layer: FP8 projections + MoE)\n",
          "layer total", static_cast<long long>(T), l[0] * 1e6, ratio_q, l[2] * 1e6, ratio_b, l[2] / l[0]);
      results.push_back({{"kind", "layer_total"},
                         {"batch", T},
                         {"quant_us", l[0] * 1e6},
                         {"quant_floor_us", l[1] * 1e6},
                         {"bf16_us", l[2] * 1e6},
                         {"bf16_floor_us", l[3] * 1e6}});
    }
    if (moe_variants) {
      // The library kernel's output on routing 0, then each variant's on the same inputs and its time.
      const DevicePlan& p0 = *plans[0];
      auto run_library = [&](cudaStream_t st, const DevicePlan& p) {
        dsv4::cuda::moe_decode_experts_quant(st, static_cast<dsv4::cuda::bf16*>(act.ptr), static_cast<float*>(y.ptr),
                                             static_cast<const dsv4::cuda::bf16*>(x.ptr), q1, q3, q2, p.plan,
                                             p.max_tiles, T, H, I, 10.0f);
      };
      auto run_variant = [&](int v, cudaStream_t st, const DevicePlan& p) {
        dsv4::lab::ring_moe_decode(v, st, static_cast<dsv4::cuda::bf16*>(act.ptr), static_cast<float*>(y.ptr),
                                   static_cast<const dsv4::cuda::bf16*>(x.ptr), q1, q3, q2, p.plan, p.max_tiles, T, H,
                                   I, 10.0f);
      };
      auto download_y = [&] {
        std::vector<float> h(P * H);
        DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
        DSV4_CUDA_CHECK(cudaMemcpy(h.data(), y.ptr, h.size() * 4, cudaMemcpyDeviceToHost));
        return h;
      };
      run_library(stream, p0);
      const std::vector<float> ref = download_y();
      double ref_max = 0;
      for (float v : ref) ref_max = std::max(ref_max, static_cast<double>(std::fabs(v)));
      for (int v = 0; v < static_cast<int>(std::size(dsv4::lab::kRingVariants)); ++v) {
        DSV4_CUDA_CHECK(cudaMemset(y.ptr, 0xff, P * H * 4));  // NaN: an unwritten row fails the check
        run_variant(v, stream, p0);
        const std::vector<float> got = download_y();
        double diff = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          const double d = std::fabs(static_cast<double>(got[i]) - ref[i]);
          diff = std::isnan(d) ? INFINITY : std::max(diff, d);
        }
        const double rel = diff / std::max(ref_max, 1e-30);
        const double t_v =
            time_graph([&](int i, cudaStream_t st) { run_variant(v, st, *plans[i % kRoutings]); }, stream, 40);
        std::printf("  %-12s %3lld %7.1f | %9.2f %6.0f %5.2f | vs library %5.2fx | y max rel diff %.2e %s\n",
                    dsv4::lab::kRingVariants[v].name, static_cast<long long>(T), touched, t_v * 1e6,
                    q_bytes / t_v / 1e9, t_v / floor_q, t_q / t_v, rel, rel <= 2e-2 ? "ok" : "MISMATCH");
        results.push_back({{"kind", "moe_variant"},
                           {"variant", dsv4::lab::kRingVariants[v].name},
                           {"batch", T},
                           {"quant_us", t_v * 1e6},
                           {"library_us", t_q * 1e6},
                           {"max_rel_diff", rel}});
      }
    }
    results.push_back({{"kind", "moe_decode"},
                       {"batch", T},
                       {"touched_experts", touched},
                       {"quant_bytes", q_bytes},
                       {"quant_us", t_q * 1e6},
                       {"quant_floor_us", floor_q * 1e6},
                       {"bf16_us", t_b * 1e6},
                       {"bf16_floor_us", floor_b * 1e6}});
  }
  if (!json_path.empty()) {
    json doc = {{"card", prop.name}, {"copy_bandwidth_gbs", copy_bw / 1e9}, {"results", results}};
    std::ofstream(json_path) << doc.dump(2) << "\n";
  }
  cudaStreamDestroy(stream);
  return 0;
}
