// Shared by the CPU and GPU scheduler tests: prompts of mixed lengths and greedy generation options.
#pragma once

#include <random>
#include <vector>

#include "dsv4/runtime/engine.h"

namespace dsv4::test {

// `count` prompts of 1..max_len tokens: BOS (0), then random ids in [2, vocab).
inline std::vector<std::vector<int32_t>> mixed_prompts(int64_t vocab, size_t count, uint64_t seed, int max_len = 90) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::vector<std::vector<int32_t>> out;
  for (size_t i = 0; i < count; ++i) {
    const int len = 1 + static_cast<int>(rng() % static_cast<uint32_t>(max_len));
    std::vector<int32_t> p = {0};
    for (int j = 1; j < len; ++j) p.push_back(static_cast<int32_t>(2 + rng() % static_cast<uint32_t>(vocab - 2)));
    out.push_back(p);
  }
  return out;
}

// n tokens per prompt, greedy, past end-of-sequence tokens; k draft tokens per step.
inline GenerateOptions greedy(int64_t n, int64_t k = 0) {
  GenerateOptions go;
  go.max_new_tokens = n;
  go.stop_at_eos = false;
  go.spec_tokens = k;
  return go;
}

}  // namespace dsv4::test
