#include "dsv4/core/dtype.h"

#include <cmath>
#include <cstring>

#include "dsv4/core/status.h"

namespace dsv4 {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I64: return 8;
    case DType::I32: return 4;
    case DType::F8_E4M3: return 1;
    case DType::U8: return 1;
    case DType::BOOL: return 1;
    case DType::F8_E8M0:
      return 1;
    case DType::I8:
      return 1;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
    case DType::F8_E8M0:
      return "F8_E8M0";
    case DType::I8:
      return "I8";
  }
  return "?";
}

bool parse_dtype(std::string_view s, DType* out) {
  static constexpr struct {
    const char* name;
    DType type;
  } kTable[] = {{"F32", DType::F32}, {"BF16", DType::BF16}, {"F16", DType::F16},
                {"I64", DType::I64}, {"I32", DType::I32},   {"F8_E4M3", DType::F8_E4M3},
                {"U8", DType::U8},   {"BOOL", DType::BOOL}, {"F8_E8M0", DType::F8_E8M0},
                {"I8", DType::I8}};
  for (const auto& e : kTable) {
    if (s == e.name) {
      *out = e.type;
      return true;
    }
  }
  return false;
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  return bits_to_float(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t float_to_f16(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;  // rounds to inf
  if (a < 6.103515625e-05f) {                 // subnormal half: round(a / 2^-24)
    const float q = std::nearbyint(a * 16777216.0f);
    return sign | static_cast<uint16_t>(q);
  }
  // Normal: round-to-nearest-even on the 13 dropped mantissa bits.
  uint32_t v = u & 0x7fffffffu;
  v += 0x0fffu + ((v >> 13) & 1u);
  const uint32_t exp = (v >> 23) - 112;
  return sign | static_cast<uint16_t>((exp << 10) | ((v >> 13) & 0x3ffu));
}

float f8e4m3_to_float(uint8_t v) {
  const uint32_t sign = v >> 7;
  const uint32_t exp = (v >> 3) & 0xfu;
  const uint32_t mant = v & 0x7u;
  float r;
  if (exp == 0xf && mant == 0x7) {
    r = NAN;  // e4m3fn has no infinities; S.1111.111 is NaN
  } else if (exp == 0) {
    r = std::ldexp(static_cast<float>(mant), -9);
  } else {
    r = std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, static_cast<int>(exp) - 7);
  }
  return sign ? -r : r;
}

namespace {
inline uint16_t load_u16(const unsigned char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline void store_u16(unsigned char* p, uint16_t v) { std::memcpy(p, &v, 2); }
}  // namespace

void convert_to_f32(DType src_type, const void* src, float* dst, size_t n) {
  switch (src_type) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    // Sources may sit at any byte offset (safetensors does not align tensors): 16-bit loads go through
    // memcpy, which compiles to plain (unaligned-safe) loads.
    case DType::BF16: {
      const auto* s = static_cast<const unsigned char*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(load_u16(s + 2 * i));
      return;
    }
    case DType::F16: {
      const auto* s = static_cast<const unsigned char*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_float(load_u16(s + 2 * i));
      return;
    }
    case DType::F8_E4M3: {
      const auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f8e4m3_to_float(s[i]);
      return;
    }
    default:
      fail(StatusCode::kInvalidArgument, "cannot convert ", dtype_name(src_type), " to F32");
  }
}

void convert_from_f32(const float* src, DType dst_type, void* dst, size_t n) {
  switch (dst_type) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16: {
      auto* d = static_cast<unsigned char*>(dst);
      for (size_t i = 0; i < n; ++i) store_u16(d + 2 * i, float_to_bf16(src[i]));
      return;
    }
    case DType::F16: {
      auto* d = static_cast<unsigned char*>(dst);
      for (size_t i = 0; i < n; ++i) store_u16(d + 2 * i, float_to_f16(src[i]));
      return;
    }
    default:
      fail(StatusCode::kInvalidArgument, "cannot convert F32 to ", dtype_name(dst_type));
  }
}

}  // namespace dsv4
