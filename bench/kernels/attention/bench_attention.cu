// Kernel lab: the tensor-core attention (cuda::split_attention, which hands prefill-sized batches of the 64-head layout
// to prefill_attention_kernel) at the Flash slice's prefill shapes, one layer kind at a time.
//
// One sequence of T tokens at positions 0 .. T - 1 (slot 0, its chunk starting at 0: every window key is one of the
// batch's own kv rows), 64 query heads of 512, window 128, and per layer kind:
//   sliding — the window only;
//   HCA     — rate 128: (pos + 1) / 128 visible entries;
//   CSA     — rate 4, top-512: min(512, (pos + 1) / 4) selected entries in index order, the rest -1 (as the indexer
//             writes a query whose visible entries all fit).
// Random bf16 queries, keys and entries (never zeros), random sinks. Each case is timed by graph replay (lab_util.h:
// two warm-up launches, median of 15 replays) and printed with the useful work's TFLOP/s: 4 · heads · D FLOPs a present
// key (Q·Kᵀ and P·V, P counted once). Correctness lives in the GPU tests (CudaOps.AttentionFlashPrefill,
// CudaPaged.AttentionSplitKernelFlashShapes); this program checks only that the output is finite and not all zero.
//
// A/B of the kernels: run it twice, the second time with DSV4_PREFILL_ATTENTION=0 (every batch on the split kernel).
//   bench_attention [T=4096] [--json out.json]
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "../lab_util.h"
#include "backend/cuda/attention_prefill.h"
#include "backend/cuda/attention_split.h"
#include "dsv4/core/exec_context.h"
#include "dsv4/ops/paged_rows.h"

namespace {

using dsv4::bench::DeviceAlloc;

constexpr int64_t kHeads = 64, kD = 512, kWindow = 128, kTopk = 512;

struct Case {
  const char* name;
  int64_t rate;  // 0: sliding
  bool csa;
};

void upload_i32(void* dst, const std::vector<int32_t>& v) {
  DSV4_CUDA_CHECK(cudaMemcpy(dst, v.data(), v.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
}

}  // namespace

static int run(int argc, char** argv) {
  int64_t T = 4096;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      T = std::atoll(argv[i]);
    }
  }
  if (T < 1 || T > 65535) {
    std::fprintf(stderr, "bench_attention: T must be in [1, 65535], got %lld\n", static_cast<long long>(T));
    return 2;
  }
  cudaStream_t stream;
  DSV4_CUDA_CHECK(cudaStreamCreate(&stream));
  dsv4::ExecContext ctx;
  ctx.device = dsv4::Device::kCUDA;
  ctx.stream = stream;

  // Per-token metadata and operands shared by the cases.
  std::vector<int32_t> pos(T), slot(T, 0), start(T, 0), identity{0};
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(t);
  DeviceAlloc d_pos(T * 4), d_slot(T * 4), d_start(T * 4), d_table(4);
  upload_i32(d_pos.ptr, pos), upload_i32(d_slot.ptr, slot), upload_i32(d_start.ptr, start);
  upload_i32(d_table.ptr, identity);
  const int64_t max_entries = std::max<int64_t>(T / 4, 1);
  DeviceAlloc q(T * kHeads * kD * 2), kv(T * kD * 2), entries(max_entries * kD * 2), ring((kWindow + 3) * kD * 2);
  DeviceAlloc out(T * kHeads * kD * 2), sinks(kHeads * 4), selected(T * kTopk * 4);
  dsv4::bench::fill_random_bf16(q.ptr, T * kHeads * kD, 1, 3.0f);
  dsv4::bench::fill_random_bf16(kv.ptr, T * kD, 2, 1.0f);
  dsv4::bench::fill_random_bf16(entries.ptr, max_entries * kD, 3, 1.0f);
  dsv4::bench::fill_random_bf16(ring.ptr, (kWindow + 3) * kD, 4, 1.0f);
  std::vector<float> host_sinks(kHeads);
  std::mt19937 rng(5);
  for (float& s : host_sinks) s = std::uniform_real_distribution<float>(-1.f, 1.f)(rng);
  DSV4_CUDA_CHECK(cudaMemcpy(sinks.ptr, host_sinks.data(), kHeads * 4, cudaMemcpyHostToDevice));
  std::vector<int32_t> sel(T * kTopk, -1);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t visible = std::min<int64_t>((t + 1) / 4, max_entries);
    for (int64_t j = 0; j < std::min(visible, kTopk); ++j) sel[t * kTopk + j] = static_cast<int32_t>(j);
  }
  upload_i32(selected.ptr, sel);

  const bool prefill_kernel = [&] {
    dsv4::cuda::SplitAttnArgs probe{};
    probe.heads = kHeads, probe.D = kD;
    return dsv4::cuda::prefill_attention_supports(probe, T);
  }();
  std::printf("attention at the Flash prefill shapes: T = %lld, %lld heads x %lld, window %lld; kernel: %s\n",
              static_cast<long long>(T), static_cast<long long>(kHeads), static_cast<long long>(kD),
              static_cast<long long>(kWindow), prefill_kernel ? "prefill_attention (64 heads a block)" : "split");
  nlohmann::json results = nlohmann::json::array();
  for (const Case c : {Case{"sliding", 0, false}, Case{"HCA", 128, false}, Case{"CSA", 4, true}}) {
    dsv4::cuda::SplitAttnArgs a{};
    a.pos = static_cast<const int32_t*>(d_pos.ptr);
    a.slot = static_cast<const int32_t*>(d_slot.ptr);
    a.start = static_cast<const int32_t*>(d_start.ptr);
    a.selected = c.csa ? static_cast<const int32_t*>(selected.ptr) : nullptr;
    a.topk = kTopk;
    a.heads = kHeads, a.D = kD, a.window = kWindow, a.rate = c.rate;
    const int32_t* table = static_cast<const int32_t*>(d_table.ptr);
    a.ring = dsv4::dense_paged_rows(ring.ptr, dsv4::DType::BF16, 1, kWindow + 3, kD, table);
    a.entries = dsv4::dense_paged_rows(entries.ptr, dsv4::DType::BF16, 1, max_entries, kD, table);
    a.scale = 1.0f / std::sqrt(static_cast<float>(kD));
    // Present keys of the layer (the useful work).
    double keys = 0;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t win = std::min<int64_t>(t + 1, kWindow);
      const int64_t comp = c.rate == 0 ? 0
                           : c.csa     ? std::min<int64_t>(std::min<int64_t>((t + 1) / 4, max_entries), kTopk)
                                       : std::min<int64_t>((t + 1) / c.rate, max_entries);
      keys += static_cast<double>(win + comp);
    }
    const auto launch = [&](int, cudaStream_t) {
      dsv4::cuda::split_attention(
          ctx, static_cast<dsv4::cuda::bf16*>(out.ptr), static_cast<const dsv4::cuda::bf16*>(q.ptr),
          static_cast<const dsv4::cuda::bf16*>(kv.ptr), static_cast<const float*>(sinks.ptr), a, T);
    };
    const double s = dsv4::bench::time_graph(launch, stream, 1);
    // The output of the last replay: finite and not all zero.
    std::vector<uint16_t> host(T * kHeads * kD);
    DSV4_CUDA_CHECK(cudaMemcpy(host.data(), out.ptr, host.size() * 2, cudaMemcpyDeviceToHost));
    bool finite = true, nonzero = false;
    for (uint16_t h : host) {
      const float v = dsv4::bf16_to_float(h);
      finite = finite && std::isfinite(v);
      nonzero = nonzero || v != 0.0f;
    }
    const double tflops = 4.0 * kHeads * kD * keys / s / 1e12;
    std::printf("%-8s %9.1f us  %7.1f TFLOP/s  (%.0f keys a token on average)%s\n", c.name, s * 1e6, tflops, keys / T,
                finite && nonzero ? "" : "  OUTPUT NOT FINITE OR ALL ZERO");
    results.push_back({{"layer", c.name},
                       {"us", s * 1e6},
                       {"tflops", tflops},
                       {"keys_per_token", keys / T},
                       {"output_ok", finite && nonzero}});
    if (!(finite && nonzero)) return 1;
  }
  if (!json_path.empty()) {
    nlohmann::json doc{{"T", T}, {"prefill_kernel", prefill_kernel}, {"cases", results}};
    std::FILE* f = std::fopen(json_path.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "bench_attention: cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fputs(doc.dump(1).c_str(), f);
    std::fclose(f);
  }
  DSV4_CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // no device, out of memory: a message, not an abort
    std::fprintf(stderr, "bench_attention: %s\n", e.what());
    return 1;
  }
}
