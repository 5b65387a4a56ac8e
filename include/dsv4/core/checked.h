// Overflow-checked size arithmetic: every size computed from untrusted input (config fields, tensor shapes,
// header offsets, command-line counts) goes through these, so that a wrapped product can never become a
// small allocation. Failures throw dsv4::Error (kInvalidArgument) naming what was being computed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>

#include "dsv4/core/status.h"

namespace dsv4 {

// a * b, a + b for non-negative int64 sizes; `what` names the quantity ("tensor 'x' bytes", ...).
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  DSV4_CHECK_ARG(a >= 0 && b >= 0 && !__builtin_mul_overflow(a, b, &r), what, ": size ", a, " x ", b,
                 " is negative or overflows int64");
  return r;
}
inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  DSV4_CHECK_ARG(a >= 0 && b >= 0 && !__builtin_add_overflow(a, b, &r), what, ": size ", a, " + ", b,
                 " is negative or overflows int64");
  return r;
}
// Product of the dimensions (1 for none).
inline int64_t checked_product(std::span<const int64_t> dims, const char* what) {
  int64_t r = 1;
  for (int64_t d : dims) r = checked_mul(r, d, what);
  return r;
}
inline int64_t checked_product(std::initializer_list<int64_t> dims, const char* what) {
  return checked_product(std::span<const int64_t>(dims.begin(), dims.size()), what);
}
// An int64 size as size_t (throws when negative).
inline size_t checked_size(int64_t v, const char* what) {
  DSV4_CHECK_ARG(v >= 0, what, ": size ", v, " is negative");
  return static_cast<size_t>(v);
}

// True when `v` (a double, e.g. a JSON number) is an integer that int64 holds exactly: the only doubles that
// may be converted with static_cast<int64_t> (anything else is undefined behaviour).
inline bool double_is_int64(double v) {
  return v == v && v >= -9223372036854775808.0 && v < 9223372036854775808.0 &&
         static_cast<double>(static_cast<int64_t>(v)) == v;
}

}  // namespace dsv4
