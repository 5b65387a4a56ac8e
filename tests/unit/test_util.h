// Shared helpers for dsv4's tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
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

}  // namespace dsv4::test
