// Choice taps for whole-model parity: the fp32 CPU run records every MoE routing and indexer selection
// (with double-precision candidate scores); the CUDA run compares its own choices with the record at the
// same call, reports each flip with the reference's score gap, and — when forcing — overwrites its choice
// with the reference's so that the rest of the forward follows the reference's path. Comparisons are of
// sets (the order of a token's experts or entries does not change the result beyond rounding).
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "cuda_test_util.h"
#include "dsv4/ops/testing.h"

namespace dsv4::test {

class RecordingTap : public ops::ChoiceTap {
 public:
  struct Call {
    bool route = false;
    int64_t T = 0, width = 0;                 // tokens, choices per token (k or topk)
    std::vector<int32_t> choice;              // [T, width]
    std::vector<float> weights;               // routing weights [T, k]
    std::vector<std::vector<double>> scores;  // per token: selection value of every candidate
  };

  void after_moe_route(ExecContext&, Tensor weights, Tensor indices, Tensor logits, Tensor bias,
                       const ops::RouteParams& params) override {
    Call c;
    c.route = true;
    c.T = indices.size(0);
    c.width = indices.size(1);
    c.choice.assign(indices.ptr<int32_t>(), indices.ptr<int32_t>() + indices.numel());
    c.weights.assign(weights.ptr<float>(), weights.ptr<float>() + weights.numel());
    const int64_t E = logits.size(1);
    for (int64_t t = 0; t < c.T; ++t) {
      const float* l = logits.ptr<float>() + t * E;
      double mx = -1e300, sum = 0;
      for (int64_t e = 0; e < E; ++e) mx = std::max(mx, static_cast<double>(l[e]));
      for (int64_t e = 0; e < E; ++e) sum += std::exp(l[e] - mx);
      std::vector<double> s(E);
      for (int64_t e = 0; e < E; ++e) {
        const double x = l[e];
        s[e] = params.scoring == ScoringFunc::kSigmoid   ? 1.0 / (1.0 + std::exp(-x))
               : params.scoring == ScoringFunc::kSoftmax ? std::exp(x - mx) / sum
                                                         : std::sqrt(x > 20 ? x : std::log1p(std::exp(x)));
        if (bias.data() != nullptr) s[e] += bias.ptr<float>()[e];
      }
      c.scores.push_back(std::move(s));
    }
    calls.push_back(std::move(c));
  }

  void after_indexer_topk(ExecContext&, Tensor selected, Tensor q, Tensor w, const CompressorState& keys,
                          const BatchMeta& meta, float softmax_scale) override {
    Call c;
    c.T = selected.size(0);
    c.width = selected.size(1);
    c.choice.assign(selected.ptr<int32_t>(), selected.ptr<int32_t>() + selected.numel());
    const int64_t Hi = q.size(1), Di = q.size(2), max_entries = keys.entries.rows;
    for (int64_t t = 0; t < c.T; ++t) {
      std::vector<double> s;
      const int32_t slot = meta.slot.ptr<int32_t>()[t], pos = meta.pos.ptr<int32_t>()[t];
      const int64_t visible = slot < 0 ? 0 : std::min<int64_t>((pos + 1) / keys.rate, max_entries);
      for (int64_t e = 0; e < visible; ++e) {
        const float* k = keys.entries.row<float>(slot, e);  // the CPU reference's state: every page allocated
        double acc = 0;
        for (int64_t h = 0; h < Hi; ++h) {
          double d = 0;
          for (int64_t i = 0; i < Di; ++i) d += static_cast<double>(q.ptr<float>()[(t * Hi + h) * Di + i]) * k[i];
          acc += std::max(d, 0.0) * softmax_scale * w.ptr<float>()[t * Hi + h];
        }
        s.push_back(acc);
      }
      c.scores.push_back(std::move(s));
    }
    calls.push_back(std::move(c));
  }

  std::vector<Call> calls;
};

class FollowingTap : public ops::ChoiceTap {
 public:
  struct Flip {
    size_t call;
    bool route;
    int64_t token;
    double gap;  // the reference's score gap between a swapped pair, relative to its largest |score|
  };

  FollowingTap(const RecordingTap& ref, bool force) : ref_(ref), force_(force) {}

  void after_moe_route(ExecContext& ctx, Tensor weights, Tensor indices, Tensor, Tensor,
                       const ops::RouteParams&) override {
    follow(ctx, true, indices, weights);
  }
  void after_indexer_topk(ExecContext& ctx, Tensor selected, Tensor, Tensor, const CompressorState&, const BatchMeta&,
                          float) override {
    follow(ctx, false, selected, Tensor());
  }

  double worst_gap() const {
    double g = 0;
    for (const Flip& f : flips) g = std::max(g, f.gap);
    return g;
  }
  std::string summary() const {
    std::string s = str_cat(flips.size(), " flipped choice(s)");
    for (size_t i = 0; i < flips.size() && i < 12; ++i) {
      const Flip& f = flips[i];
      s += str_cat(i ? "; " : ": ", f.route ? "router" : "indexer", " call ", f.call, " token ", f.token,
                   " (reference gap ", f.gap, ")");
    }
    return s;
  }

  std::vector<Flip> flips;
  bool mismatched_calls = false;

 private:
  void follow(ExecContext& ctx, bool route, Tensor choice, Tensor weights) {
    const size_t i = next_++;
    if (i >= ref_.calls.size() || ref_.calls[i].route != route || ref_.calls[i].T != choice.size(0)) {
      mismatched_calls = true;  // the two runs made different calls: nothing to compare
      return;
    }
    const RecordingTap::Call& r = ref_.calls[i];
    DSV4_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(ctx.stream)));
    std::vector<int32_t> got = download_i32(choice);
    std::vector<float> w = weights.data() != nullptr ? download(weights) : std::vector<float>();
    bool changed = false;
    for (int64_t t = 0; t < r.T; ++t) {
      const auto row = [&](const std::vector<int32_t>& v) {
        return std::set<int32_t>(v.begin() + t * r.width, v.begin() + (t + 1) * r.width);
      };
      const std::set<int32_t> g = row(got), want = row(r.choice);
      if (g == want) continue;
      double top = 0, gap = 0;
      for (double s : r.scores[t]) top = std::max(top, std::fabs(s));
      for (int32_t a : g) {
        if (want.count(a)) continue;
        for (int32_t b : want) {
          if (g.count(b)) continue;
          const bool valid = a >= 0 && b >= 0 && a < static_cast<int32_t>(r.scores[t].size()) &&
                             b < static_cast<int32_t>(r.scores[t].size());
          gap = std::max(gap, valid ? std::fabs(r.scores[t][a] - r.scores[t][b]) / std::max(top, 1e-30) : 1e30);
        }
      }
      flips.push_back({i, route, t, gap});
      if (force_) {
        std::copy(r.choice.begin() + t * r.width, r.choice.begin() + (t + 1) * r.width, got.begin() + t * r.width);
        if (route)
          std::copy(r.weights.begin() + t * r.width, r.weights.begin() + (t + 1) * r.width, w.begin() + t * r.width);
        changed = true;
      }
    }
    if (changed) {  // complete before the forward's next kernel reads them (copy_to_device synchronises)
      cuda::copy_to_device(choice.data(), got.data(), got.size() * sizeof(int32_t));
      if (route) cuda::copy_to_device(weights.data(), w.data(), w.size() * sizeof(float));
    }
  }

  const RecordingTap& ref_;
  bool force_;
  size_t next_ = 0;
};

// Installs a tap for a scope.
class ScopedTap {
 public:
  explicit ScopedTap(ops::ChoiceTap* tap) : previous_(ops::set_choice_tap(tap)) {}
  ~ScopedTap() { ops::set_choice_tap(previous_); }
  ScopedTap(const ScopedTap&) = delete;
  ScopedTap& operator=(const ScopedTap&) = delete;

 private:
  ops::ChoiceTap* previous_;
};

}  // namespace dsv4::test
