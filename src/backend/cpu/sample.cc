// CPU reference of ops::sample_tokens: the semantics the CUDA kernel implements, written plainly — the nucleus by a
// full sort, the draw by a walk in the kernel's lane-major order, integer masses throughout (backend/philox.h), so both
// devices pick the same token unless a weight differs by an expf ulp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/philox.h"

namespace dsv4::cpu {
namespace {

int32_t greedy_token(const float* l, int64_t V) {
  int64_t best = 0;
  for (int64_t v = 1; v < V; ++v) {
    if (l[v] > l[best]) best = v;
  }
  return static_cast<int32_t>(best);
}

int32_t sampled_token(const float* l, int64_t V, const ops::TokenSamplingParams& p) {
  float mx = l[0];
  for (int64_t v = 1; v < V; ++v) mx = std::max(mx, l[v]);
  std::vector<float> w(static_cast<size_t>(V));
  std::vector<uint64_t> mass(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) {
    w[v] = std::exp((l[v] - mx) / p.temperature);
    mass[v] = static_cast<uint64_t>(std::nearbyint(static_cast<double>(w[v] * kSamplingMassScale)));
  }
  if (p.top_p < 1.0f) {
    // Smallest prefix of (weight descending, index ascending) whose mass reaches ceil(top_p * total).
    const uint64_t total = std::accumulate(mass.begin(), mass.end(), uint64_t{0});
    const uint64_t target = std::clamp<uint64_t>(
        static_cast<uint64_t>(std::ceil(static_cast<double>(p.top_p) * static_cast<double>(total))), 1, total);
    std::vector<int32_t> order(static_cast<size_t>(V));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
    uint64_t kept = 0;
    size_t keep = 0;
    while (keep < order.size() && kept < target) kept += mass[order[keep++]];
    for (size_t i = keep; i < order.size(); ++i) mass[order[i]] = 0;
  }
  // The point floor(total * bits / 2^24) of the nucleus mass, walked in lane-major order.
  const uint64_t total = std::accumulate(mass.begin(), mass.end(), uint64_t{0});
  const uint64_t bits = sampling_bits24(p.seed, p.stream, p.counter);
  uint64_t x = static_cast<uint64_t>((static_cast<unsigned __int128>(total) * bits) >> 24);
  const int64_t lanes = ops::kSampleLanes;
  for (int64_t lane = 0; lane < std::min(lanes, V); ++lane) {
    for (int64_t v = lane; v < V; v += lanes) {
      if (mass[v] > x) return static_cast<int32_t>(v);
      x -= mass[v];
    }
  }
  return 0;  // unreachable: x < total
}

}  // namespace

void sample_tokens(Tensor out, Tensor logits, Tensor params) {
  const int64_t R = logits.size(0), V = logits.size(1);
  for (int64_t r = 0; r < R; ++r) {
    ops::TokenSamplingParams p;
    std::memcpy(&p, params.ptr<uint8_t>() + r * sizeof(p), sizeof(p));
    const float* l = logits.ptr<float>() + r * V;
    out.ptr<int32_t>()[r] = p.temperature > 0.0f ? sampled_token(l, V, p) : greedy_token(l, V);
  }
}

}  // namespace dsv4::cpu
