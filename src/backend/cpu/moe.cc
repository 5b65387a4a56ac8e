// Mixture of experts on the CPU: routing (hash / top-k with selection-only bias) and SwiGLU experts.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/parallel.h"

namespace dsv4::cpu {

void moe_route(Tensor weights, Tensor indices, Tensor logits, Tensor bias, Tensor tid2eid, Tensor ids,
               const ops::RouteParams& params) {
  const int64_t T = logits.size(0), E = logits.size(1), k = weights.size(1);
  std::vector<float> score(E), biased(E);
  std::vector<int32_t> order(E);
  for (int64_t t = 0; t < T; ++t) {
    const float* l = logits.ptr<float>() + t * E;
    switch (params.scoring) {
      case ScoringFunc::kSqrtSoftplus:
        for (int64_t e = 0; e < E; ++e) score[e] = std::sqrt(softplus(l[e]));
        break;
      case ScoringFunc::kSigmoid:
        for (int64_t e = 0; e < E; ++e) score[e] = sigmoid(l[e]);
        break;
      case ScoringFunc::kSoftmax: {
        const float mx = *std::max_element(l, l + E);
        float sum = 0;
        for (int64_t e = 0; e < E; ++e) sum += (score[e] = std::exp(l[e] - mx));
        for (int64_t e = 0; e < E; ++e) score[e] /= sum;
        break;
      }
    }
    int32_t* idx = indices.ptr<int32_t>() + t * k;
    if (tid2eid.data() != nullptr) {
      const int32_t* row = tid2eid.ptr<int32_t>() + static_cast<int64_t>(ids.ptr<int32_t>()[t]) * k;
      std::copy(row, row + k, idx);
    } else {
      for (int64_t e = 0; e < E; ++e) biased[e] = score[e] + (bias.data() ? bias.ptr<float>()[e] : 0.0f);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return biased[a] > biased[b] || (biased[a] == biased[b] && a < b);
      });
      std::copy(order.begin(), order.begin() + k, idx);
    }
    float* w = weights.ptr<float>() + t * k;
    float sum = 0;
    for (int64_t i = 0; i < k; ++i) sum += (w[i] = score[idx[i]]);
    const float scale = params.routed_scaling_factor;
    for (int64_t i = 0; i < k; ++i) w[i] = (params.norm_topk_prob ? w[i] / (sum + 1e-20f) : w[i]) * scale;
  }
}

void moe_experts(Tensor out, Tensor x, Tensor indices, Tensor weights, Tensor w1, Tensor w2, Tensor w3, float limit,
                 bool shared_expert, bool activation_quant) {
  const int64_t T = x.size(0), H = x.size(1), k = indices.size(1), I = w1.size(1);
  const int64_t routed = w1.size(0) - (shared_expert ? 1 : 0);
  // An index past the routed experts would read past w1, or silently run the shared expert twice.
  for (int64_t p = 0; p < T * k; ++p) {
    const int32_t e = indices.ptr<int32_t>()[p];
    DSV4_CHECK_ARG(e >= 0 && e < routed, "moe_experts: expert index ", e, " of token ", p / k, " outside [0, ", routed,
                   ")");
  }
  // Term i < k of token t is the routed expert indices[t, i]; term k the shared expert (index `routed`), weight 1.
  // Each expert's tokens are gathered (in token order) into one product, so its weights are read once per step
  // however many tokens it serves (a batch, a speculative verification); then every token's terms are added in
  // term order. rows[e]: the (token, term) pairs expert e serves, as t * terms + i.
  const int64_t terms = k + (shared_expert ? 1 : 0);
  std::vector<std::vector<int64_t>> rows(routed + 1);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t i = 0; i < terms; ++i)
      rows[i < k ? indices.ptr<int32_t>()[t * k + i] : routed].push_back(t * terms + i);
  }
  // y[t * terms + i]: term i of token t, unweighted (with activation_quant: weighted, the weight applied before w2)
  std::vector<float> y(static_cast<size_t>(T * terms * H));
  auto term_weight = [&](int64_t pair) {  // pair = t * terms + i
    const int64_t t = pair / terms, i = pair % terms;
    return i < k ? weights.ptr<float>()[t * k + i] : 1.0f;
  };
  // Experts run in parallel (each on one thread, its products single-threaded): a prefill's expert is a
  // millisecond of work, far above a fork/join's cost, and every term's bits are the same at any thread count.
  std::vector<int64_t> order;
  for (int64_t e = 0; e <= routed; ++e) {
    if (!rows[e].empty()) order.push_back(e);
  }
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return rows[a].size() > rows[b].size(); });
  parallel_for(static_cast<int64_t>(order.size()), T * terms * 3 * H * I, [&](int64_t o) {
    // A thread's buffers, reused across experts and calls.
    thread_local std::vector<float> xe, gate, up, ye;
    const int64_t e = order[static_cast<size_t>(o)];
    const std::vector<int64_t>& er = rows[e];
    const int64_t n = static_cast<int64_t>(er.size());
    xe.resize(n * H);
    gate.resize(n * I);
    up.resize(n * I);
    ye.resize(n * H);
    for (int64_t r = 0; r < n; ++r) {
      const float* src = x.ptr<float>() + er[r] / terms * H;
      std::copy(src, src + H, xe.data() + r * H);
      if (activation_quant) kv_round_trip_row(xe.data() + r * H, H, 0, KvRoundTrip::kFp8Blocks128);
    }
    product_nt(n, I, H, xe.data(), H, w1.ptr<float>() + e * I * H, H, gate.data(), I);
    product_nt(n, I, H, xe.data(), H, w3.ptr<float>() + e * I * H, H, up.data(), I);
    swiglu_values(gate.data(), gate.data(), up.data(), n * I, limit);
    if (activation_quant) {
      for (int64_t r = 0; r < n; ++r) {
        float* g = gate.data() + r * I;
        const float wt = term_weight(er[r]);
        for (int64_t j = 0; j < I; ++j) g[j] *= wt;
        kv_round_trip_row(g, I, 0, KvRoundTrip::kFp8Blocks128);
      }
    }
    product_nt(n, H, I, gate.data(), I, w2.ptr<float>() + e * H * I, I, ye.data(), H);
    for (int64_t r = 0; r < n; ++r) std::copy(ye.data() + r * H, ye.data() + (r + 1) * H, y.data() + er[r] * H);
  });
  for (int64_t t = 0; t < T; ++t) {
    float* o = out.ptr<float>() + t * H;
    std::fill(o, o + H, 0.0f);
    for (int64_t i = 0; i < terms; ++i) {
      const float wt = activation_quant ? 1.0f : term_weight(t * terms + i);
      const float* yt = y.data() + (t * terms + i) * H;
      for (int64_t h = 0; h < H; ++h) o[h] += wt * yt[h];
    }
  }
}

}  // namespace dsv4::cpu
