// Shared helpers for dsv4's tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "dsv4/core/tensor.h"
#include "dsv4/io/safetensors.h"

namespace dsv4::test {

// The source tree (fixtures): $DSV4_SOURCE_DIR when set (tests run from a staged copy on a GPU machine),
// else the tree the tests were built from.
inline std::string source_dir() {
  const char* env = std::getenv("DSV4_SOURCE_DIR");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string(DSV4_SOURCE_DIR);
}
inline std::string fixture_dir(const std::string& name) { return source_dir() + "/tests/fixtures/hf/" + name; }

// A whole file's bytes ("" when it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// max |a - b| / max |b|
inline double max_rel_error(const float* a, const float* b, size_t n) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::fabs(static_cast<double>(b[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

inline std::vector<float> to_vector(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  convert_to_f32(t.dtype(), t.data(), v.data(), v.size());
  return v;
}

// How close two runs' next-token distributions are, over rows of V logits: top-1 agreement, the mean KL divergence
// KL(want || got) and the largest logit difference.
struct LogitAgreement {
  double top1 = 0, kl = 0, max_diff = 0;
};
inline LogitAgreement compare_logits(const std::vector<float>& want, const std::vector<float>& got, int64_t V) {
  LogitAgreement r;
  const int64_t T = static_cast<int64_t>(want.size()) / V;
  int64_t agree = 0;
  for (int64_t t = 0; t < T; ++t) {
    const float* w = want.data() + t * V;
    const float* g = got.data() + t * V;
    agree += std::max_element(w, w + V) - w == std::max_element(g, g + V) - g;
    const double mw = *std::max_element(w, w + V), mg = *std::max_element(g, g + V);
    double zw = 0, zg = 0;
    for (int64_t v = 0; v < V; ++v) {
      zw += std::exp(w[v] - mw);
      zg += std::exp(g[v] - mg);
      r.max_diff = std::max(r.max_diff, static_cast<double>(std::fabs(w[v] - g[v])));
    }
    for (int64_t v = 0; v < V; ++v) {
      const double lp = w[v] - mw - std::log(zw), lq = g[v] - mg - std::log(zg);
      r.kl += std::exp(lp) * (lp - lq);
    }
  }
  r.kl /= static_cast<double>(std::max<int64_t>(T, 1));
  r.top1 = static_cast<double>(agree) / static_cast<double>(std::max<int64_t>(T, 1));
  return r;
}

// A fixture of expected token-by-token logits (input_ids [T] I64, logits [T, V] F32) made with a quantiser outside
// dsv4 (tools/reference/make_fp8_*_fixtures.py), and how far `got` is from it: per position the largest logit
// difference relative to the largest logit of the whole fixture (as max_rel_error), summarised by the median and
// the maximum over positions. An fp32-noise flip of one E4M3 code moves only the positions that read it, by ~1e-4
// at most; a format mistake moves every position by ~1.
struct LogitFixture {
  std::vector<int32_t> ids;
  std::vector<float> logits;
};
inline LogitFixture load_logit_fixture(const std::string& path) {
  const auto f = SafetensorsFile::open(path);
  const Tensor ids_t = f->view(*f->find("input_ids"));
  LogitFixture r;
  for (int64_t i = 0; i < ids_t.numel(); ++i) r.ids.push_back(static_cast<int32_t>(ids_t.ptr<int64_t>()[i]));
  const Tensor l = f->view(*f->find("logits"));
  r.logits.resize(static_cast<size_t>(l.numel()));
  convert_to_f32(l.dtype(), l.data(), r.logits.data(), r.logits.size());
  return r;
}
struct PositionErrors {
  double median = 0, max = 0;
};
inline PositionErrors position_errors(const std::vector<float>& got, const std::vector<float>& want, size_t T) {
  const size_t V = want.size() / T;
  double ref = 0;
  for (const float w : want) ref = std::max(ref, static_cast<double>(std::fabs(w)));
  std::vector<double> per_position(T, 0.0);
  for (size_t i = 0; i < want.size() && i < got.size(); ++i)
    per_position[i / V] = std::max(per_position[i / V], std::fabs(static_cast<double>(got[i]) - want[i]) / ref);
  PositionErrors e;
  e.max = *std::max_element(per_position.begin(), per_position.end());
  std::nth_element(per_position.begin(), per_position.begin() + T / 2, per_position.end());
  e.median = per_position[T / 2];
  return e;
}

}  // namespace dsv4::test
