// Kernel lab: the RMSNorm family's row kernels (dsv4::cuda, rms_norm.h) as the fused MTP norms, timed as
// CUDA-graph replays, median of many, next to the measured device-to-device copy bandwidth of the same card
// in the same run.
//
//   bench_rms_norm [--json PATH] [--sweep] [--hidden 4096,7168,2568] [--tokens 1,4,...] [--hc 4]
//
// Two input regimes per shape:
//   hot:  one buffer set, replayed back to back (what triton.testing.do_bench_cudagraph measures; small
//         shapes stay in L2, as they do in the engine where the previous kernel just wrote them);
//   cold: launches rotate over enough buffer sets (>= 3x L2) that every launch reads from DRAM.
// --sweep also times every launch variant (vectors per thread x rows per block x grid policy), hot, to
// pick the heuristic. Next to each shape: a copy of the same bytes, hot, launched like the norms (PDL on
// unless DSV4_PDL=0): the roofline of the hot timings. Bytes counted: read (1+hc)*T*H + 2H
// activations/weights + 8T positions, write (1+hc)*T*H (the eh layout writes 2*hc*T*H).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../lab_util.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/launch.h"
#include "backend/cuda/rms_norm.h"
#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/dtype.h"

namespace {

using dsv4::DType;
using dsv4::cuda::RmsNormConfig;
using nlohmann::json;

using dsv4::bench::DeviceAlloc;
using dsv4::bench::fill_random_bf16;
using dsv4::bench::parse_list;

// A plain streaming copy, 4 independent 16-byte loads per thread: on some cards it beats
// cudaMemcpyAsync's device-to-device copy, so the copy bandwidth is the better of the two.
__global__ void copy_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, int64_t n) {
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * blockDim.x * 4) + threadIdx.x;
  uint4 v[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t i = base + k * blockDim.x;
    if (i < n) v[k] = src[i];
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t i = base + k * blockDim.x;
    if (i < n) dst[i] = v[k];
  }
}

// The roofline of a norm of B bytes in and B bytes out: a copy of the same bytes with kVecs 16-byte vectors
// per thread, launched through launch_kernel, so with PDL on it overlaps its launch with the previous copy
// exactly as the norm kernels do (wait first, then let the next grid launch).
template <int kVecs>
__global__ void pdl_copy_kernel(const uint4* __restrict__ src, uint4* __restrict__ dst, int64_t n) {
  dsv4::cuda::pdl_wait();
  dsv4::cuda::pdl_launch_dependents();
  const int64_t base = (static_cast<int64_t>(blockIdx.x) * blockDim.x * kVecs) + threadIdx.x;
  uint4 v[kVecs];
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int64_t i = base + k * blockDim.x;
    if (i < n) v[k] = src[i];
  }
#pragma unroll
  for (int k = 0; k < kVecs; ++k) {
    const int64_t i = base + k * blockDim.x;
    if (i < n) dst[i] = v[k];
  }
}

using dsv4::bench::time_graph;

// Launches per graph so that one replay takes ~2 ms (enough to amortise the replay's own launch).
int launches_per_graph(double est_seconds) {
  return static_cast<int>(std::clamp(2e-3 / std::max(est_seconds, 1e-7), 8.0, 400.0));
}

// One set of MTP buffers (inputs and outputs) for one shape.
struct MtpSet {
  DeviceAlloc e, prev, pos, e_out, h_out;
  MtpSet(int64_t T, int64_t H, int64_t hc, uint32_t seed)
      : e(T * H * 2), prev(T * hc * H * 2), pos(T * 8), e_out(T * H * 2), h_out(T * hc * H * 2) {
    fill_random_bf16(e.ptr, T * H, seed, 2.f);
    fill_random_bf16(prev.ptr, T * hc * H, seed + 1, 2.f);
    std::vector<int64_t> p(T);
    for (int64_t t = 0; t < T; ++t) p[t] = t % 7 == 0 ? 0 : 100 + t;  // some masked rows, as in a batch
    DSV4_CUDA_CHECK(cudaMemcpy(pos.ptr, p.data(), T * 8, cudaMemcpyHostToDevice));
  }
};

struct Card {
  std::string name;
  int sms = 0;
  int l2_bytes = 0;
};

void check(const dsv4::Status& s) {
  if (!s.is_ok()) {
    std::fprintf(stderr, "launch failed: %s\n", s.to_string().c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  bool sweep = false;
  std::vector<int64_t> hiddens = {4096, 7168, 2568};
  std::vector<int64_t> tokens = {1, 4, 16, 64, 256, 1024, 4096, 16384};
  int64_t hc = 4;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--sweep") {
      sweep = true;
    } else if (a == "--hidden" && i + 1 < argc) {
      hiddens = parse_list(argv[++i]);
    } else if (a == "--tokens" && i + 1 < argc) {
      tokens = parse_list(argv[++i]);
    } else if (a == "--hc" && i + 1 < argc) {
      hc = std::stoll(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--json PATH] [--sweep] [--hidden LIST] [--tokens LIST] [--hc N]\n", argv[0]);
      return 2;
    }
  }
  const std::string why = dsv4::cuda::unavailable_reason();
  if (!why.empty()) {
    std::fprintf(stderr, "bench_mtp_norm: %s\n", why.c_str());
    return 1;
  }
  Card card;
  {
    cudaDeviceProp prop{};
    DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    card = {prop.name, prop.multiProcessorCount, prop.l2CacheSize};
  }
  cudaStream_t stream;
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const char* pdl = dsv4::cuda::pdl_enabled() ? "on" : "off";  // on unless DSV4_PDL=0

  // ---- copy bandwidth: 1 GiB device-to-device, bytes read + written ---------------------------------
  double copy_bw = 0.0;
  {
    const size_t bytes = size_t{1} << 30;
    DeviceAlloc a(bytes), b(bytes);
    DSV4_CUDA_CHECK(cudaMemset(a.ptr, 1, bytes));
    // Let the clocks leave their idle state first (the card idles at a few hundred MHz).
    for (int i = 0; i < 400; ++i)
      DSV4_CUDA_CHECK(cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice, stream));
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
    const double t_memcpy = time_graph(
        [&](int, cudaStream_t s) {
          DSV4_CUDA_CHECK(cudaMemcpyAsync(b.ptr, a.ptr, bytes, cudaMemcpyDeviceToDevice, s));
        },
        stream, 10, 10);
    const int64_t n16 = static_cast<int64_t>(bytes / 16);
    const double t_kernel = time_graph(
        [&](int, cudaStream_t s) {
          copy_kernel<<<static_cast<unsigned>((n16 + 1023) / 1024), 256, 0, s>>>(static_cast<const uint4*>(a.ptr),
                                                                                 static_cast<uint4*>(b.ptr), n16);
          DSV4_CUDA_CHECK(cudaGetLastError());
        },
        stream, 10, 10);
    std::printf("copy: cudaMemcpyAsync %.0f GB/s, copy kernel %.0f GB/s (read+write)\n", 2.0 * bytes / t_memcpy / 1e9,
                2.0 * bytes / t_kernel / 1e9);
    const double t = std::min(t_memcpy, t_kernel);
    copy_bw = 2.0 * bytes / t;
  }
  std::printf("card: %s (%d SMs, L2 %.0f MB), copy bandwidth %.0f GB/s (read+write), PDL %s\n", card.name.c_str(),
              card.sms, card.l2_bytes / 1e6, copy_bw / 1e9, pdl);

  json results = json::array();
  // Launch variants for --sweep: every register-kernel instance, one block per tile and one resident wave
  // looping over tiles, and the plain-load flavour; the bulk kernel's shapes.
  std::vector<RmsNormConfig> variants;
  using dsv4::cuda::RmsNormKernel;
  const int shapes[][2] = {{1, 1}, {1, 2}, {2, 1}, {2, 2}, {4, 1}, {4, 2}, {8, 1}};
  for (const auto& [vpt, rows] : shapes) {
    for (int max_blocks : {-1, -2}) variants.push_back({RmsNormKernel::kRegister, vpt, rows, max_blocks, false});
    if (rows == 1) {
      variants.push_back({RmsNormKernel::kRegister, vpt, rows, -1, true});
      for (int max_blocks : {-1, -2})
        variants.push_back({RmsNormKernel::kRegister, vpt, rows, max_blocks, false, true});  // late weights
    }
  }
  // The bulk (TMA) kernel at each vectors per thread, one block per row or a resident grid with rings.
  for (int vpt : {1, 2, 4}) {
    for (int per_sm : {0, 1, 2, 4}) {  // 0: one block per row (the default); else a resident grid
      variants.push_back({RmsNormKernel::kBulk, vpt, 0, 0, false, false, dsv4::cuda::RmsNormTrigger::kAuto, per_sm});
    }
  }

  std::printf("\n%6s %6s | %9s %9s %6s | %9s %6s | %9s %9s | %9s | %s\n", "H", "T", "hot us", "cold us", "cold%",
              "eh cold", "eh%", "head hot", "head cold", "copy hot", "best sweep variant (hot)");
  for (int64_t H : hiddens) {
    for (int64_t T : tokens) {
      const double set_bytes = 2.0 * (2 * (1 + hc) * T * H);  // inputs + outputs of one set
      const int cold_sets = static_cast<int>(std::clamp(std::ceil(3.0 * card.l2_bytes / set_bytes), 1.0, 32.0));
      std::vector<std::unique_ptr<MtpSet>> sets;
      for (int k = 0; k < cold_sets; ++k) sets.push_back(std::make_unique<MtpSet>(T, H, hc, 1000 + k));
      DeviceAlloc ew(H * 2), hw(H * 2);
      fill_random_bf16(ew.ptr, H, 7, 2.f);
      fill_random_bf16(hw.ptr, H, 8, 2.f);
      std::vector<std::unique_ptr<DeviceAlloc>> eh_out;
      for (int k = 0; k < cold_sets; ++k) eh_out.push_back(std::make_unique<DeviceAlloc>(T * hc * 2 * H * 2));

      const double bytes = 2.0 * (2 * (1 + hc) * T * H + 2 * H) + 8.0 * T;
      const double eh_bytes = 2.0 * ((1 + hc) * T * H + 2 * hc * T * H + 2 * H) + 8.0 * T;
      const double head_bytes = 2.0 * (2 * T * H + H);
      auto mtp = [&](const RmsNormConfig* cfg, int nsets) {
        return [&, cfg, nsets](int i, cudaStream_t s) {
          MtpSet& d = *sets[i % nsets];
          check(dsv4::cuda::fused_mtp_input_rms_norm(d.e.ptr, dsv4::RowPositions{d.pos.ptr, true}, d.prev.ptr, ew.ptr,
                                                     hw.ptr, d.e_out.ptr, d.h_out.ptr, T, H, hc, 1e-6f, DType::BF16, s,
                                                     cfg));
        };
      };
      auto eh = [&](int nsets) {
        return [&, nsets](int i, cudaStream_t s) {
          MtpSet& d = *sets[i % nsets];
          check(dsv4::cuda::fused_mtp_input_rms_norm_eh(d.e.ptr, dsv4::RowPositions{d.pos.ptr, true}, d.prev.ptr,
                                                        ew.ptr, hw.ptr, eh_out[i % nsets]->ptr, T, H, hc, 1e-6f,
                                                        DType::BF16, s));
        };
      };
      auto head = [&](int nsets) {
        return [&, nsets](int i, cudaStream_t s) {
          MtpSet& d = *sets[i % nsets];
          check(dsv4::cuda::rms_norm_rows(d.e.ptr, hw.ptr, d.e_out.ptr, T, H, 1e-6f, DType::BF16, s));
        };
      };
      // Estimate one launch from the copy bandwidth (bytes / bandwidth, at least a few microseconds).
      const int n_mtp = launches_per_graph(std::max(bytes / copy_bw, 3e-6));
      const int n_head = launches_per_graph(std::max(head_bytes / copy_bw, 3e-6));
      dsv4::cuda::RmsNormLaunch chosen;
      check(dsv4::cuda::fused_mtp_input_rms_norm(
          sets[0]->e.ptr, dsv4::RowPositions{sets[0]->pos.ptr, true}, sets[0]->prev.ptr, ew.ptr, hw.ptr,
          sets[0]->e_out.ptr, sets[0]->h_out.ptr, T, H, hc, 1e-6f, DType::BF16, stream, nullptr, &chosen));
      const double hot = time_graph(mtp(nullptr, 1), stream, n_mtp);
      const double cold = time_graph(mtp(nullptr, cold_sets), stream, n_mtp);
      const double eh_cold = time_graph(eh(cold_sets), stream, n_mtp);
      const double head_hot = time_graph(head(1), stream, n_head);
      const double head_cold = time_graph(head(cold_sets), stream, n_head);

      // Roofline: a copy of the norm's bytes ((1+hc)*T*H elements in, as many out), hot, the better of 1 and
      // 4 vectors per thread at 256 threads.
      double copy_hot = 0.0;
      {
        const int64_t n16 = (1 + hc) * T * H * 2 / 16;
        DeviceAlloc src(n16 * 16), dst(n16 * 16);
        DSV4_CUDA_CHECK(cudaMemset(src.ptr, 1, n16 * 16));
        const auto copy = [&](auto kernel, int vecs) {
          return [&, kernel, vecs](int, cudaStream_t s) {
            const dim3 grid(static_cast<unsigned>((n16 + 256 * vecs - 1) / (256 * vecs)));
            check(dsv4::cuda::launch_kernel(kernel, grid, dim3(256), 0, s, static_cast<const uint4*>(src.ptr),
                                            static_cast<uint4*>(dst.ptr), n16));
          };
        };
        copy_hot = std::min(time_graph(copy(pdl_copy_kernel<1>, 1), stream, n_mtp),
                            time_graph(copy(pdl_copy_kernel<4>, 4), stream, n_mtp));
      }

      json sweep_rows = json::array();
      std::string best_desc = "-";
      double best = 0.0;
      if (sweep) {
        for (const RmsNormConfig& cfg : variants) {
          dsv4::cuda::RmsNormLaunch shape;
          const dsv4::Status s = dsv4::cuda::fused_mtp_input_rms_norm(
              sets[0]->e.ptr, dsv4::RowPositions{sets[0]->pos.ptr, true}, sets[0]->prev.ptr, ew.ptr, hw.ptr,
              sets[0]->e_out.ptr, sets[0]->h_out.ptr, T, H, hc, 1e-6f, DType::BF16, stream, &cfg, &shape);
          if (!s.is_ok()) continue;  // this variant does not fit this H
          const double t = time_graph(mtp(&cfg, 1), stream, n_mtp);
          sweep_rows.push_back({{"variant", shape.to_string()},
                                {"kernel", static_cast<int>(cfg.kernel)},
                                {"vecs_per_thread", cfg.vecs_per_thread},
                                {"rows_per_block", cfg.rows_per_block},
                                {"max_blocks", cfg.max_blocks},
                                {"plain_loads", cfg.plain_loads},
                                {"late_weights", cfg.late_weights},
                                {"us", t * 1e6}});
          if (best == 0.0 || t < best) {
            best = t;
            best_desc = shape.to_string();
          }
        }
      }
      char best_col[160];
      std::snprintf(best_col, sizeof(best_col), "%.2f us  %s", best * 1e6, best_desc.c_str());
      std::printf("%6ld %6ld | %9.2f %9.2f %5.1f%% | %9.2f %5.1f%% | %9.2f %9.2f | %9.2f | %s\n", static_cast<long>(H),
                  static_cast<long>(T), hot * 1e6, cold * 1e6, 100.0 * bytes / cold / copy_bw, eh_cold * 1e6,
                  100.0 * eh_bytes / eh_cold / copy_bw, head_hot * 1e6, head_cold * 1e6, copy_hot * 1e6,
                  sweep ? best_col : "-");
      std::fflush(stdout);
      results.push_back({{"hidden", H},
                         {"tokens", T},
                         {"hc", hc},
                         {"dtype", "bf16"},
                         {"launch", chosen.to_string()},
                         {"cold_sets", cold_sets},
                         {"bytes", bytes},
                         {"hot_us", hot * 1e6},
                         {"copy_same_bytes_hot_us", copy_hot * 1e6},
                         {"cold_us", cold * 1e6},
                         {"cold_frac_copy_bw", bytes / cold / copy_bw},
                         {"hot_frac_copy_bw", bytes / hot / copy_bw},
                         {"eh_bytes", eh_bytes},
                         {"eh_cold_us", eh_cold * 1e6},
                         {"eh_cold_frac_copy_bw", eh_bytes / eh_cold / copy_bw},
                         {"head_bytes", head_bytes},
                         {"head_hot_us", head_hot * 1e6},
                         {"head_cold_us", head_cold * 1e6},
                         {"head_cold_frac_copy_bw", head_bytes / head_cold / copy_bw},
                         {"sweep", sweep_rows}});
    }
  }
  if (!json_path.empty()) {
    json doc = {{"card", card.name}, {"sms", card.sms},   {"l2_bytes", card.l2_bytes}, {"copy_bw_bytes_per_s", copy_bw},
                {"pdl", pdl},        {"results", results}};
    std::ofstream(json_path) << doc.dump(1) << "\n";
    std::printf("wrote %s\n", json_path.c_str());
  }
  cudaStreamDestroy(stream);
  return 0;
}
