// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a counter-based generator, so
// a token draw is a pure function of (seed, stream, counter) — identical on the CPU and the GPU, independent of launch
// order, and replayable inside a CUDA graph without device RNG state.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

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

// Which of a Philox block's four words a draw uses: the top two bits of its counter (a token index is far below
// 2^62). Plain sampling uses word 0; speculative decoding draws a token index's draft (word 1), its acceptance
// test (word 2) and its recovered or bonus token (word 3) from the same block, so every draw of one token index is
// independent of the others and of every other index (docs/speculative.md).
constexpr int kPhiloxWordShift = 62;
constexpr uint64_t kPhiloxCounterMask = (uint64_t{1} << kPhiloxWordShift) - 1;
DSV4_HD uint64_t philox_word_counter(uint64_t counter, int word) {
  return (counter & kPhiloxCounterMask) | (static_cast<uint64_t>(word) << kPhiloxWordShift);
}

// The 24 random bits of one token draw: key = seed, counter = (counter, stream), word = counter >> 62 (see above).
// A draw takes floor(mass * bits / 2^24) as its point in the nucleus's integer mass (exact on every device).
DSV4_HD uint32_t sampling_bits24(uint64_t seed, uint64_t stream, uint64_t counter) {
  const uint64_t c = counter & kPhiloxCounterMask;
  const Philox4x32 r = philox4x32_10(static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32),
                                     static_cast<uint32_t>(stream), static_cast<uint32_t>(stream >> 32),
                                     static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return r.v[counter >> kPhiloxWordShift] >> 8;
}

// A token's weight exp((logit - max) / T) in (0, 1] as an integer mass: round(w · 2^40). Integer masses make every
// sum exact and independent of the reduction order (the nucleus and the draw are deterministic and the same on the CPU
// and the GPU); a weight below 2^-41 of the top token's has no mass. Sums stay below 2^64 for vocabularies up to 2^23.
constexpr float kSamplingMassScale = 1099511627776.0f;  // 2^40
constexpr int64_t kSamplingMaxVocab = int64_t{1} << 23;

// The integer mass of token v of a sampled row whose nucleus is (max, boundary, limit) (ops::NucleusInfo): its
// weight w = exp((logit - max) / T) as round(w * 2^40) inside the nucleus, else 0. The same float operations on
// both devices (an expf ulp may differ).
DSV4_HD uint64_t nucleus_mass(float logit, int64_t v, float max, float temperature, uint32_t boundary, int64_t limit) {
  const float w = expf((logit - max) / temperature);
#ifdef __CUDA_ARCH__
  const uint32_t key = __float_as_uint(w);
#else
  uint32_t key;
  std::memcpy(&key, &w, sizeof(key));
#endif
  if (!(key > boundary || (key == boundary && v <= limit))) return 0;
#ifdef __CUDA_ARCH__
  return __float2ull_rn(w * kSamplingMassScale);
#else
  // A NaN or an infinity (non-finite logits, which the sampler flags) has no mass here: converting it is undefined.
  const double m = std::nearbyint(static_cast<double>(w * kSamplingMassScale));
  return m >= 0.0 && m <= static_cast<double>(kSamplingMassScale) ? static_cast<uint64_t>(m) : 0;
#endif
}

// A mass as a probability in units of 2^-40: round(mass / total * 2^40) (0 when total is 0). Double division and
// round-to-nearest-even are exact IEEE operations on both devices, so both compute the same integer.
DSV4_HD uint64_t nucleus_probability(uint64_t mass, uint64_t total) {
  if (total == 0) return 0;
  const double p = static_cast<double>(mass) / static_cast<double>(total) * 1099511627776.0;
#ifdef __CUDA_ARCH__
  return __double2ull_rn(p);
#else
  return static_cast<uint64_t>(std::nearbyint(p));
#endif
}

// Speculative acceptance of a draft with target probability p and draft probability q (units of 2^-40) and 24 random
// bits u: accepted with probability min(1, p / q), i.e. when u / 2^24 < p / q (exact in 64 bits: q <= 2^40, p < q);
// never when p is 0 (a token outside the target's nucleus).
DSV4_HD bool speculative_accepts(uint64_t p, uint64_t q, uint32_t bits24) {
  return p != 0 && (p >= q || static_cast<uint64_t>(bits24) * q < (p << 24));
}

}  // namespace dsv4
