// CPU reference of ops::sample_tokens and ops::speculative_accept: the semantics the CUDA kernels implement, written
// plainly — the nucleus by a full sort, the draw by a walk in the kernel's lane-major order, integer masses throughout
// (backend/philox.h), so both devices pick the same token unless a weight differs by an expf ulp.
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

ops::TokenSamplingParams params_row(const Tensor& params, int64_t r) {
  ops::TokenSamplingParams p;
  std::memcpy(&p, params.ptr<uint8_t>() + r * sizeof(p), sizeof(p));
  return p;
}

ops::NucleusInfo info_row(const Tensor& info, int64_t r) {
  ops::NucleusInfo n;
  std::memcpy(&n, info.ptr<uint8_t>() + r * sizeof(n), sizeof(n));
  return n;
}

// The nucleus of a sampled row: the smallest prefix of (weight descending, index ascending) whose mass reaches
// ceil(top_p * total), described by its last token (boundary weight bits, index) — every token of larger weight and
// the tied ones up to that index are in it.
ops::NucleusInfo find_nucleus(const float* l, int64_t V, const ops::TokenSamplingParams& p) {
  ops::NucleusInfo n;
  n.max = l[0];
  for (int64_t v = 1; v < V; ++v) n.max = std::max(n.max, l[v]);
  n.boundary = 0;
  n.limit = V;
  // Non-finite logits (flagged by sample_tokens): no mass, so the caller falls back to the argmax; a NaN must not
  // reach the sort below (it breaks the comparator's ordering).
  if (!std::all_of(l, l + V, [](float x) { return std::isfinite(x); })) return n;
  if (p.top_p < 1.0f) {
    std::vector<float> w(static_cast<size_t>(V));
    std::vector<uint64_t> mass(static_cast<size_t>(V));
    for (int64_t v = 0; v < V; ++v) {
      w[v] = std::exp((l[v] - n.max) / p.temperature);
      mass[v] = nucleus_mass(l[v], v, n.max, p.temperature, 0, V);
    }
    const uint64_t total = std::accumulate(mass.begin(), mass.end(), uint64_t{0});
    if (total == 0) return n;  // non-finite logits (outside the op's contract): the caller falls back to the argmax
    const uint64_t target = std::clamp<uint64_t>(
        static_cast<uint64_t>(std::ceil(static_cast<double>(p.top_p) * static_cast<double>(total))), 1, total);
    std::vector<int32_t> order(static_cast<size_t>(V));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
    uint64_t kept = 0;
    size_t keep = 0;
    while (keep < order.size() && kept < target) kept += mass[order[keep++]];
    const int32_t last = order[std::max<size_t>(keep, 1) - 1];
    std::memcpy(&n.boundary, &w[last], sizeof(n.boundary));
    n.limit = last;
  }
  uint64_t total = 0;
  for (int64_t v = 0; v < V; ++v) total += nucleus_mass(l[v], v, n.max, p.temperature, n.boundary, n.limit);
  n.total = total;
  return n;
}

// The token at point floor(total * bits / 2^24) of the masses mass(v), walked in lane-major order (v % lanes, then
// v / lanes) — the CUDA kernels' scan order. -1 when total is 0.
template <typename Mass>
int32_t draw_lane_major(int64_t V, uint64_t total, uint32_t bits, Mass&& mass) {
  if (total == 0) return -1;
  uint64_t x = static_cast<uint64_t>((static_cast<unsigned __int128>(total) * bits) >> 24);
  const int64_t lanes = ops::kSampleLanes;
  for (int64_t lane = 0; lane < std::min(lanes, V); ++lane) {
    for (int64_t v = lane; v < V; v += lanes) {
      const uint64_t m = mass(v);
      if (m > x) return static_cast<int32_t>(v);
      x -= m;
    }
  }
  return -1;  // unreachable: x < total
}

int32_t sampled_token(const float* l, int64_t V, const ops::TokenSamplingParams& p, ops::NucleusInfo* info) {
  const ops::NucleusInfo n = find_nucleus(l, V, p);
  if (info != nullptr) *info = n;
  const int32_t t = draw_lane_major(V, n.total, sampling_bits24(p.seed, p.stream, p.counter), [&](int64_t v) {
    return nucleus_mass(l[v], v, n.max, p.temperature, n.boundary, n.limit);
  });
  return t >= 0 ? t : greedy_token(l, V);  // no mass: only for non-finite logits, as the kernel
}

}  // namespace

void sample_tokens(Tensor out, Tensor logits, Tensor params, Tensor info, Tensor nonfinite) {
  const int64_t R = logits.size(0), V = logits.size(1);
  for (int64_t r = 0; r < R; ++r) {
    const ops::TokenSamplingParams p = params_row(params, r);
    const float* l = logits.ptr<float>() + r * V;
    ops::NucleusInfo n;
    out.ptr<int32_t>()[r] = p.temperature > 0.0f ? sampled_token(l, V, p, &n) : greedy_token(l, V);
    if (info.data() != nullptr && p.temperature > 0.0f) std::memcpy(info.ptr<uint8_t>() + r * sizeof(n), &n, sizeof(n));
    if (nonfinite.data() != nullptr) {
      nonfinite.ptr<int32_t>()[r] = std::all_of(l, l + V, [](float x) { return std::isfinite(x); }) ? 0 : 1;
    }
  }
}

void speculative_verify_ids(Tensor ids, Tensor drafts, int64_t K) {
  const int64_t b = ids.numel() / (K + 1);
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t r = 1; r <= K; ++r) ids.ptr<int32_t>()[i * (K + 1) + r] = drafts.ptr<int32_t>()[(r - 1) * b + i];
  }
}

void speculative_accept(Tensor out, Tensor counts, Tensor target_logits, Tensor target_info, Tensor target_tokens,
                        Tensor draft_logits, Tensor draft_info, Tensor draft_tokens, Tensor params) {
  const int64_t b = counts.numel(), K = out.numel() / b - 1, V = target_logits.size(1);
  const float* tl = target_logits.ptr<float>();
  const float* dl = draft_logits.ptr<float>();
  const int32_t* tt = target_tokens.ptr<int32_t>();
  const int32_t* dt = draft_tokens.ptr<int32_t>();
  for (int64_t i = 0; i < b; ++i) {
    const ops::TokenSamplingParams p = params_row(params, i);
    auto draft = [&](int64_t j) { return dt[j * b + i]; };  // d_{j+1}
    const int64_t row0 = i * (K + 1);
    int64_t a = 0;
    int32_t next = 0;
    if (!(p.temperature > 0.0f)) {
      while (a < K && draft(a) == tt[row0 + a]) ++a;
      next = tt[row0 + a];
    } else {
      // Normalised probability of token v in target row r / draft row j.
      auto prob = [&](const float* l, const ops::NucleusInfo& n, int64_t v) {
        return nucleus_probability(nucleus_mass(l[v], v, n.max, p.temperature, n.boundary, n.limit), n.total);
      };
      bool rejected = false;
      for (; a < K; ++a) {
        const ops::NucleusInfo pn = info_row(target_info, row0 + a), qn = info_row(draft_info, a * b + i);
        const float* pl = tl + (row0 + a) * V;
        const float* ql = dl + (a * b + i) * V;
        const int32_t d = draft(a);
        const uint32_t bits = sampling_bits24(p.seed, p.stream, philox_word_counter(p.counter + a, 2));
        if (speculative_accepts(prob(pl, pn, d), prob(ql, qn, d), bits)) continue;
        // The first rejection: the next token from max(0, p - q), or from p where that has no mass.
        auto residual = [&](int64_t v) {
          const uint64_t pv = prob(pl, pn, v), qv = prob(ql, qn, v);
          return pv > qv ? pv - qv : uint64_t{0};
        };
        const uint32_t draw = sampling_bits24(p.seed, p.stream, philox_word_counter(p.counter + a, 3));
        uint64_t total = 0;
        for (int64_t v = 0; v < V; ++v) total += residual(v);
        int32_t t = draw_lane_major(V, total, draw, residual);
        if (t < 0) {
          uint64_t ptotal = 0;
          for (int64_t v = 0; v < V; ++v) ptotal += prob(pl, pn, v);
          t = draw_lane_major(V, ptotal, draw, [&](int64_t v) { return prob(pl, pn, v); });
        }
        next = t >= 0 ? t : tt[row0 + a];
        rejected = true;
        break;
      }
      if (!rejected) next = tt[row0 + K];  // the bonus token: the target's draw of row K
    }
    int32_t* o = out.ptr<int32_t>() + i * (K + 1);
    for (int64_t r = 0; r <= K; ++r) o[r] = r < a ? draft(r) : (r == a ? next : -1);
    counts.ptr<int32_t>()[i] = static_cast<int32_t>(a + 1);
  }
}

void argmax(Tensor out, Tensor logits) {
  const int64_t R = logits.size(0), V = logits.size(1);
  for (int64_t r = 0; r < R; ++r) {
    const float* l = logits.ptr<float>() + r * V;
    int64_t best = 0;
    for (int64_t v = 1; v < V; ++v) {
      if (l[v] > l[best]) best = v;
    }
    out.ptr<int32_t>()[r] = static_cast<int32_t>(best);
  }
}

}  // namespace dsv4::cpu
