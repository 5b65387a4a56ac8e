// What a process pays for loading libdsv4: the CUDA build opens cuBLASLt only at the first CUDA matrix product
// (backend/cuda/cublaslt_api.h), so a CPU run never maps it (its start-up cost 0.08 s and ~200 MiB).
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "dsv4/runtime/engine.h"
#include "test_util.h"

namespace dsv4 {
namespace {

bool mapped(const std::string& library) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find(library) != std::string::npos) return true;
  }
  return false;
}

TEST(Startup, CpuRunsNeverLoadCublasLt) {
  if (!std::ifstream("/proc/self/maps")) GTEST_SKIP() << "no /proc/self/maps on this system";
  EXPECT_FALSE(mapped("libcublasLt")) << "cuBLASLt was loaded with libdsv4";
  // A whole CPU generation (prefill through OpenBLAS, decode, a speculative step) does not open it either.
  Engine e(test::source_dir() + "/models/dsv4-tiny-kjv", EngineOptions{});
  GenerateOptions o;
  o.max_new_tokens = 4;
  o.spec_tokens = 1;
  const GenerateResult r = e.generate({std::vector<int32_t>(16, 7)}, o);
  EXPECT_EQ(r.tokens.size(), 1u);
  EXPECT_FALSE(mapped("libcublasLt")) << "a CPU run loaded cuBLASLt";
}

}  // namespace
}  // namespace dsv4
