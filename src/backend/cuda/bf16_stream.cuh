// Device helpers of the weight-streaming GEMVs (moe_decode.cu, gemv.cu): 16-byte loads of bf16 weights that
// bypass L1, and the exact bf16 -> fp32 unpacking of one such load.
#pragma once

#include "backend/cuda/common.cuh"

namespace dsv4::cuda {

constexpr int kBf16PerVec = 8;  // bf16 per 16-byte load

// Weights are read once: bypass L1 (the activation rows live there) and let L2 fetch whole 256-byte sectors.
__device__ __forceinline__ uint4 load_streaming(const bf16* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// p[off] when `in`, else zeros, the guard inside the load: a predicated ld whose address p + off is never read when
// !in. A guard around load_streaming is not enough — it is a non-volatile asm, which the compiler may issue ahead of
// the guard (a double-buffered prefetch read 16 bytes past a weight stack that way) — and selecting a valid address
// instead (p + (in ? off : 0)) cost each load its own address registers: base + constant offsets no longer fold
// into the instruction (moe_decode 69 -> 110 registers, ~1-2% of a decode step).
__device__ __forceinline__ uint4 load_streaming_if(const bf16* p, int64_t off, bool in) {
  uint4 v;
  asm("{\n"
      "  .reg .pred q;\n"
      "  setp.ne.b32 q, %5, 0;\n"
      "  mov.b32 %0, 0;\n"
      "  mov.b32 %1, 0;\n"
      "  mov.b32 %2, 0;\n"
      "  mov.b32 %3, 0;\n"
      "  @q ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];\n"
      "}"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p + off), "r"(static_cast<int>(in)));
  return v;
}

// Eight bf16 to float (exact: a bf16 is the high half of its float).
__device__ __forceinline__ void unpack8(const uint4& v, float (&f)[kBf16PerVec]) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    f[2 * j] = __uint_as_float(u[j] << 16);
    f[2 * j + 1] = __uint_as_float(u[j] & 0xffff0000u);
  }
}

}  // namespace dsv4::cuda
