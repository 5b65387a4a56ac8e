// Counter-based pseudo-random numbers: value i of stream `seed` is a pure function of (seed, i), so the
// CPU and the GPU fill a tensor with identical values and a fill can run in parallel in any order.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DSV4_HD __host__ __device__ __forceinline__
#else
#define DSV4_HD inline
#endif

namespace dsv4 {

DSV4_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1) from 24 random bits.
DSV4_HD float hash_uniform(uint64_t seed, uint64_t i, uint64_t lane) {
  const uint64_t h = splitmix64(splitmix64(seed ^ (lane * 0xD1B54A32D192ED03ull)) + i);
  return (static_cast<float>(h >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

// Approximately standard normal: the sum of four uniforms, centred and scaled (variance 1). Cheap, bounded
// (|z| < 3.5), and enough for synthetic weights.
DSV4_HD float hash_normal(uint64_t seed, uint64_t i) {
  float s = 0.0f;
  for (uint64_t lane = 0; lane < 4; ++lane) s += hash_uniform(seed, i, lane);
  return (s - 2.0f) * 1.7320508f;  // sqrt(12 / 4)
}

}  // namespace dsv4
