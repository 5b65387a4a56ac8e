// The CPU backend's dot products: one summation order on every machine, and blocks of them that read each weight
// row once for several token rows.
//
// The order: element i of a length-n product goes to partial sum i mod 32 (fused multiply-add), the 32 partials are
// added as a fixed tree (i + i+16, then i + i+8, i + i+4, i + i+2, i + i+1), and the last n mod 32 elements are fused
// into that sum one by one. The AVX-512, AVX2 and portable paths (picked once, at first use, by the CPU's features)
// all compute exactly that, so a product has the same bits whatever the machine, the block it is part of, or how
// many token rows share its weight row: a speculative verification of K + 1 tokens gives each token the logits a
// one-token decode step gives it.
#pragma once

#include <cstdint>

namespace dsv4::cpu {

// sum_i a[i] * b[i], in the order above.
float dot(const float* a, const float* b, int64_t n);

// Y[t * ldy + r] = dot(X + t * ldx, W + r * ldw, n) for t < T, r < R: weight rows outer, a few token rows inner, so
// a weight row is loaded once for all T rows (decode and verification steps are bound by reading the weights).
void dot_rows(int64_t T, int64_t R, int64_t n, const float* X, int64_t ldx, const float* W, int64_t ldw, float* Y,
              int64_t ldy);

// dot_rows on a named path ("avx512", "avx2", "portable"); false when this CPU cannot run it. For the tests that
// hold the paths to the same bits.
bool dot_rows_on(const char* path, int64_t T, int64_t R, int64_t n, const float* X, int64_t ldx, const float* W,
                 int64_t ldw, float* Y, int64_t ldy);

// Which path dot() runs here: "avx512", "avx2" or "portable" (logged by tests and benchmarks).
const char* dot_path();

}  // namespace dsv4::cpu
