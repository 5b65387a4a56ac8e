// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a counter-based generator, so
// a token draw is a pure function of (seed, stream, counter) — identical on the CPU and the GPU, independent of launch
// order, and replayable inside a CUDA graph without device RNG state.
#pragma once

#include <cstdint>

#include "dsv4/core/hash_random.h"  // DSV4_HD

namespace dsv4 {

struct Philox4x32 {
  uint32_t v[4];
};

// One block of four 32-bit outputs for key (k0, k1) and counter (c0..c3), 10 rounds.
DSV4_HD Philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kMul0) * c0, p1 = static_cast<uint64_t>(kMul1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return {{c0, c1, c2, c3}};
}

// The 24 random bits of one token draw: key = seed, counter = (counter, stream). A draw takes floor(mass * bits / 2^24)
// as its point in the nucleus's integer mass (exact on every device).
DSV4_HD uint32_t sampling_bits24(uint64_t seed, uint64_t stream, uint64_t counter) {
  const Philox4x32 r = philox4x32_10(static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32),
                                     static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32),
                                     static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return r.v[0] >> 8;
}

// A token's weight exp((logit - max) / T) in (0, 1] as an integer mass: round(w · 2^40). Integer masses make every
// sum exact and independent of the reduction order (the nucleus and the draw are deterministic and the same on the CPU
// and the GPU); a weight below 2^-41 of the top token's has no mass. Sums stay below 2^64 for vocabularies up to 2^23.
constexpr float kSamplingMassScale = 1099511627776.0f;  // 2^40
constexpr int64_t kSamplingMaxVocab = int64_t{1} << 23;

}  // namespace dsv4
