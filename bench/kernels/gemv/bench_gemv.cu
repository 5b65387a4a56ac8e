// Kernel lab: the weight-streaming GEMV (backend/cuda/gemv.h) against cuBLASLt on DeepSeek-V4-Flash's decode
// projections, timed as CUDA-graph replays (median of 15), next to the copy bandwidth of the same card.
//
//   bench_gemv [--tokens 1,2,4,8] [--json PATH]
//
// Weights are cold as in a forward (the model is far larger than L2): each launch reads the next of enough
// copies of the matrix to span >= 256 MB; x and out stay hot (the previous kernel just wrote x). GB/s counts
// the weight bytes; "floor" is weight bytes / cuda::measure_copy_bandwidth() (the divisor of the decode HBM
// floor, runtime/decode_traffic.h). PDL is on unless DSV4_PDL=0, as in the engine.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/blas.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/launch.h"
#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/dtype.h"
#include "dsv4/core/exec_context.h"
#include "../lab_util.h"

namespace {

using dsv4::DType;
using nlohmann::json;

using dsv4::bench::DeviceAlloc;
using dsv4::bench::fill_random_bf16;
using dsv4::bench::parse_list;

using dsv4::bench::time_graph;

// A projection of one Flash layer (per group: x [T, G*K], w [G*N, K]); `count` = uses per layer.
struct Shape {
  const char* name;
  int64_t K, N, G;
  DType out;
  int count;
  bool head;  // the vocabulary head: not part of the per-layer total
};

std::vector<float> download_as_float(const void* p, DType t, int64_t n) {
  std::vector<float> out(n);
  if (t == DType::F32) {
    DSV4_CUDA_CHECK(cudaMemcpy(out.data(), p, n * 4, cudaMemcpyDeviceToHost));
  } else {
    std::vector<uint16_t> h(n);
    DSV4_CUDA_CHECK(cudaMemcpy(h.data(), p, n * 2, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < n; ++i) out[i] = dsv4::bf16_to_float(h[i]);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> tokens = {1, 2, 4, 8};
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--tokens" && i + 1 < argc) {
      tokens = parse_list(argv[++i]);
    } else if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--tokens LIST] [--json PATH]\n", argv[0]);
      return 2;
    }
  }
  const std::string why = dsv4::cuda::unavailable_reason();
  if (!why.empty()) {
    std::fprintf(stderr, "bench_gemv: %s\n", why.c_str());
    return 1;
  }
  cudaDeviceProp prop{};
  DSV4_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const double copy_bw = dsv4::cuda::measure_copy_bandwidth();  // bytes read + written per second
  std::printf("card: %s (%d SMs, L2 %.0f MB), copy bandwidth %.0f GB/s (read+write), PDL %s\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize / 1e6, copy_bw / 1e9,
              dsv4::cuda::pdl_enabled() ? "on" : "off");

  cudaStream_t stream;
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  dsv4::cuda::BlasHandle blas;
  dsv4::ExecContext ctx;
  ctx.device = dsv4::Device::kCUDA;
  ctx.stream = stream;
  ctx.blas = &blas;

  const std::vector<Shape> shapes = {
      {"wq_a", 4096, 1024, 1, DType::BF16, 1, false},
      {"wq_b", 1024, 32768, 1, DType::BF16, 1, false},
      {"wkv", 4096, 512, 1, DType::BF16, 1, false},
      {"wo_a (8 groups)", 4096, 1024, 8, DType::BF16, 1, false},
      {"wo_b", 8192, 4096, 1, DType::BF16, 1, false},
      {"compressor wkv/wgate", 4096, 1024, 1, DType::F32, 2, false},
      {"indexer wq_b", 1024, 8192, 1, DType::F32, 1, false},
      {"router gate", 4096, 256, 1, DType::F32, 1, false},
      {"shared w1/w3", 4096, 2048, 1, DType::BF16, 2, false},
      {"shared w2", 2048, 4096, 1, DType::BF16, 1, false},
      {"head", 4096, 129280, 1, DType::F32, 1, true},
  };
  json results = json::array();
  std::printf("%-22s %2s %8s | %9s %6s %5s | %9s %6s %5s | %6s %8s\n", "shape", "T", "MB", "gemv us", "GB/s", "floor",
              "cublas us", "GB/s", "floor", "speed", "max diff");
  for (int64_t T : tokens) {
    double total_gemv = 0, total_lt = 0, total_floor = 0;
    for (const Shape& s : shapes) {
      const int64_t w_elems = s.G * s.N * s.K, w_bytes = w_elems * 2;
      const int copies = static_cast<int>(std::clamp<int64_t>((int64_t{256} << 20) / w_bytes + 1, 1, 64));
      std::vector<std::unique_ptr<DeviceAlloc>> w;
      for (int c = 0; c < copies; ++c) {
        w.push_back(std::make_unique<DeviceAlloc>(w_bytes));
        fill_random_bf16(w.back()->ptr, w_elems, 17 + c, 1.f);
      }
      DeviceAlloc x(T * s.G * s.K * 2), out_gemv(T * s.G * s.N * 4), out_lt(T * s.G * s.N * 4);
      fill_random_bf16(x.ptr, T * s.G * s.K, 5, 1.f);
      DSV4_CUDA_CHECK(cudaDeviceSynchronize());  // pageable copies may still be landing; kernels run on `stream`
      auto args = [&](int i, void* out) {
        dsv4::cuda::GemmArgs g;
        g.x = x.ptr, g.w = w[i % copies]->ptr, g.out = out;
        g.x_type = DType::BF16, g.w_type = DType::BF16, g.out_type = s.out;
        g.M = T, g.K = s.K, g.N = s.N, g.batch = s.G;
        g.ldx = s.G * s.K, g.ldw = s.K, g.ldo = s.G * s.N;
        g.stride_x = s.K, g.stride_w = s.N * s.K, g.stride_o = s.N;
        return g;
      };
      if (!dsv4::cuda::gemv_supports(args(0, out_gemv.ptr))) {
        std::printf("%-22s %2lld: the GEMV does not take this shape\n", s.name, static_cast<long long>(T));
        continue;
      }
      const double floor_s = static_cast<double>(w_bytes) / copy_bw;
      const int per_graph = static_cast<int>(std::clamp(2e-3 / std::max(floor_s, 1e-7), 8.0, 400.0));
      const double t_gemv =
          time_graph([&](int i, cudaStream_t st) { dsv4::cuda::gemv(st, args(i, out_gemv.ptr)); }, stream, per_graph);
      const double t_lt =
          time_graph([&](int i, cudaStream_t) { blas.gemm(ctx, args(i, out_lt.ptr)); }, stream, per_graph);
      // Both on copy 0, compared: max |gemv - cublas| / max |cublas|.
      dsv4::cuda::gemv(stream, args(0, out_gemv.ptr));
      blas.gemm(ctx, args(0, out_lt.ptr));
      DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
      const int64_t n_out = T * s.G * s.N;
      const std::vector<float> a = download_as_float(out_gemv.ptr, s.out, n_out),
                               b = download_as_float(out_lt.ptr, s.out, n_out);
      double diff = 0, ref = 0;
      for (int64_t i = 0; i < n_out; ++i) {
        diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
        ref = std::max(ref, std::fabs(static_cast<double>(b[i])));
      }
      std::printf("%-22s %2lld %8.1f | %9.2f %6.0f %5.2f | %9.2f %6.0f %5.2f | %5.2fx %8.2g\n", s.name,
                  static_cast<long long>(T), w_bytes / 1e6, t_gemv * 1e6, w_bytes / t_gemv / 1e9, t_gemv / floor_s,
                  t_lt * 1e6, w_bytes / t_lt / 1e9, t_lt / floor_s, t_lt / t_gemv, ref > 0 ? diff / ref : diff);
      if (!s.head) {
        total_gemv += s.count * t_gemv;
        total_lt += s.count * t_lt;
        total_floor += s.count * floor_s;
      }
      results.push_back({{"shape", s.name},
                         {"T", T},
                         {"K", s.K},
                         {"N", s.N},
                         {"groups", s.G},
                         {"out", dsv4::dtype_name(s.out)},
                         {"weight_bytes", w_bytes},
                         {"gemv_us", t_gemv * 1e6},
                         {"cublaslt_us", t_lt * 1e6},
                         {"floor_us", floor_s * 1e6},
                         {"max_rel_diff", ref > 0 ? diff / ref : diff}});
    }
    std::printf("%-22s %2lld %8s | %9.1f %6s %5.2f | %9.1f %6s %5.2f | %5.2fx   (CSA layer main projections)\n",
                "total per layer", static_cast<long long>(T), "", total_gemv * 1e6, "", total_gemv / total_floor,
                total_lt * 1e6, "", total_lt / total_floor, total_lt / total_gemv);
  }
  if (!json_path.empty()) {
    json doc = {{"card", prop.name}, {"copy_bandwidth_gbs", copy_bw / 1e9}, {"results", results}};
    std::ofstream(json_path) << doc.dump(2) << "\n";
  }
  cudaStreamDestroy(stream);
  return 0;
}
