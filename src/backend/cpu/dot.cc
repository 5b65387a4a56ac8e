// Dot products of the CPU backend (order and paths: dot.h).
#include "backend/cpu/dot.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#define DSV4_DOT_X86 1
#endif

namespace dsv4::cpu {
namespace {

constexpr int kPartials = 32;
constexpr int kMaxTokenBlock = 3;
constexpr int kMaxRowBlock = 4;

// The last n mod 32 elements, fused into the reduced sum one by one.
inline float finish(float s, const float* a, const float* b, int64_t from, int64_t n) {
  for (int64_t i = from; i < n; ++i) s = std::fma(a[i], b[i], s);
  return s;
}

// One block: Y[t * ldy + r] = dot(X + t * ldx, W + r * ldw, n) for t < TB, r < RB.
using BlockFn = void (*)(const float* X, int64_t ldx, const float* W, int64_t ldw, int64_t n, float* Y, int64_t ldy);

struct Path {
  const char* name;
  int token_block;  // the largest TB / RB this path's blocks are used with (register budget)
  int row_block;
  BlockFn block[kMaxTokenBlock][kMaxRowBlock];
};

// Fills a path's table with Kernel<TB, RB>::run for every TB, RB.
template <template <int, int> class Kernel, int... R>
void fill_row(BlockFn* row, std::integer_sequence<int, R...>, auto tb) {
  ((row[R] = &Kernel<decltype(tb)::value, R + 1>::run), ...);
}
template <template <int, int> class Kernel>
Path make_path(const char* name, int token_block, int row_block) {
  Path p{name, token_block, row_block, {}};
  const auto rows = std::make_integer_sequence<int, kMaxRowBlock>{};
  fill_row<Kernel>(p.block[0], rows, std::integral_constant<int, 1>{});
  fill_row<Kernel>(p.block[1], rows, std::integral_constant<int, 2>{});
  fill_row<Kernel>(p.block[2], rows, std::integral_constant<int, 3>{});
  return p;
}

// ---- portable: 32 scalar partials; std::fma is the same single rounding as the vector FMAs ----
float dot_portable(const float* a, const float* b, int64_t n) {
  float p[kPartials] = {};
  const int64_t n32 = n - n % kPartials;
  for (int64_t i = 0; i < n32; i += kPartials) {
    for (int l = 0; l < kPartials; ++l) p[l] = std::fma(a[i + l], b[i + l], p[l]);
  }
  for (int w = kPartials / 2; w >= 1; w /= 2) {
    for (int l = 0; l < w; ++l) p[l] += p[l + w];
  }
  return finish(p[0], a, b, n32, n);
}

template <int TB, int RB>
struct Portable {
  static void run(const float* X, int64_t ldx, const float* W, int64_t ldw, int64_t n, float* Y, int64_t ldy) {
    for (int t = 0; t < TB; ++t) {
      for (int r = 0; r < RB; ++r) Y[t * ldy + r] = dot_portable(X + t * ldx, W + r * ldw, n);
    }
  }
};

#ifdef DSV4_DOT_X86
// 16 partials in lanes 0..15 (partial i + partial i+16 already added) -> one sum, by the tree of dot.h.
__attribute__((target("avx2"))) inline float reduce16(__m256 lo, __m256 hi) {
  const __m256 s8 = _mm256_add_ps(lo, hi);                                                 // i + i+8
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));  // i + i+4
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));                                 // i + i+2
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));                         // 0 + 1
}

// ---- AVX-512: partials 0..15 and 16..31 in two registers per product ----
__attribute__((target("avx512f,avx2"))) inline float reduce512(__m512 a0, __m512 a1) {
  const __m512 s = _mm512_add_ps(a0, a1);  // i + i+16
  // The zero-masked extracts: GCC 12 warns on the undefined operand of the unmasked ones (and of the casts).
  const __m512d d = _mm512_castps_pd(s);
  return reduce16(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, d, 0)),
                  _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xFF, d, 1)));
}

template <int TB, int RB>
struct Avx512 {
  __attribute__((target("avx512f,avx2"))) static void run(const float* X, int64_t ldx, const float* W, int64_t ldw,
                                                          int64_t n, float* Y, int64_t ldy) {
    __m512 acc[TB][RB][2];
    for (int t = 0; t < TB; ++t) {
      for (int r = 0; r < RB; ++r) acc[t][r][0] = acc[t][r][1] = _mm512_setzero_ps();
    }
    const int64_t n32 = n - n % kPartials;
    for (int64_t i = 0; i < n32; i += kPartials) {
      __m512 w[RB][2];
      for (int r = 0; r < RB; ++r) {
        w[r][0] = _mm512_loadu_ps(W + r * ldw + i);
        w[r][1] = _mm512_loadu_ps(W + r * ldw + i + 16);
      }
      for (int t = 0; t < TB; ++t) {
        const __m512 x0 = _mm512_loadu_ps(X + t * ldx + i);
        const __m512 x1 = _mm512_loadu_ps(X + t * ldx + i + 16);
        for (int r = 0; r < RB; ++r) {
          acc[t][r][0] = _mm512_fmadd_ps(x0, w[r][0], acc[t][r][0]);
          acc[t][r][1] = _mm512_fmadd_ps(x1, w[r][1], acc[t][r][1]);
        }
      }
    }
    for (int t = 0; t < TB; ++t) {
      for (int r = 0; r < RB; ++r) {
        Y[t * ldy + r] = finish(reduce512(acc[t][r][0], acc[t][r][1]), X + t * ldx, W + r * ldw, n32, n);
      }
    }
  }
};

// ---- AVX2 + FMA: partials 0..7, 8..15, 16..23, 24..31 in four registers per product ----
template <int TB, int RB>
struct Avx2 {
  __attribute__((target("avx2,fma"))) static void run(const float* X, int64_t ldx, const float* W, int64_t ldw,
                                                      int64_t n, float* Y, int64_t ldy) {
    __m256 acc[TB][RB][4];
    for (int t = 0; t < TB; ++t) {
      for (int r = 0; r < RB; ++r) {
        for (int q = 0; q < 4; ++q) acc[t][r][q] = _mm256_setzero_ps();
      }
    }
    const int64_t n32 = n - n % kPartials;
    for (int64_t i = 0; i < n32; i += kPartials) {
      for (int q = 0; q < 4; ++q) {
        __m256 x[TB];
        for (int t = 0; t < TB; ++t) x[t] = _mm256_loadu_ps(X + t * ldx + i + 8 * q);
        for (int r = 0; r < RB; ++r) {
          const __m256 w = _mm256_loadu_ps(W + r * ldw + i + 8 * q);
          for (int t = 0; t < TB; ++t) acc[t][r][q] = _mm256_fmadd_ps(x[t], w, acc[t][r][q]);
        }
      }
    }
    for (int t = 0; t < TB; ++t) {
      for (int r = 0; r < RB; ++r) {
        const __m256 lo = _mm256_add_ps(acc[t][r][0], acc[t][r][2]);  // i + i+16, i < 8
        const __m256 hi = _mm256_add_ps(acc[t][r][1], acc[t][r][3]);  // i + i+16, 8 <= i < 16
        Y[t * ldy + r] = finish(reduce16(lo, hi), X + t * ldx, W + r * ldw, n32, n);
      }
    }
  }
};
#endif

const Path& portable_path() {
  static const Path p = make_path<Portable>("portable", 1, 1);
  return p;
}

// The path of dot(): the widest this CPU runs.
const Path& best_path() {
  static const Path p = [] {
#ifdef DSV4_DOT_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2")) return make_path<Avx512>("avx512", 3, 4);
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return make_path<Avx2>("avx2", 2, 2);
#endif
    return portable_path();
  }();
  return p;
}

void run_blocks(const Path& p, int64_t T, int64_t R, int64_t n, const float* X, int64_t ldx, const float* W,
                int64_t ldw, float* Y, int64_t ldy) {
  for (int64_t r = 0; r < R; r += p.row_block) {
    const int64_t rb = std::min<int64_t>(p.row_block, R - r);
    for (int64_t t = 0; t < T; t += p.token_block) {
      const int64_t tb = std::min<int64_t>(p.token_block, T - t);
      p.block[tb - 1][rb - 1](X + t * ldx, ldx, W + r * ldw, ldw, n, Y + t * ldy + r, ldy);
    }
  }
}

}  // namespace

float dot(const float* a, const float* b, int64_t n) {
  float y;
  best_path().block[0][0](a, 0, b, 0, n, &y, 0);
  return y;
}

void dot_rows(int64_t T, int64_t R, int64_t n, const float* X, int64_t ldx, const float* W, int64_t ldw, float* Y,
              int64_t ldy) {
  run_blocks(best_path(), T, R, n, X, ldx, W, ldw, Y, ldy);
}

const char* dot_path() { return best_path().name; }

bool dot_rows_on(const char* path, int64_t T, int64_t R, int64_t n, const float* X, int64_t ldx, const float* W,
                 int64_t ldw, float* Y, int64_t ldy) {
  const Path& best = best_path();
  const Path* p = nullptr;
  if (std::strcmp(path, "portable") == 0) p = &portable_path();
#ifdef DSV4_DOT_X86
  if (std::strcmp(path, "avx2") == 0 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    static const Path avx2 = make_path<Avx2>("avx2", 2, 2);
    p = &avx2;
  }
#endif
  if (std::strcmp(path, best.name) == 0) p = &best;
  if (p == nullptr) return false;
  run_blocks(*p, T, R, n, X, ldx, W, ldw, Y, ldy);
  return true;
}

}  // namespace dsv4::cpu
