// Element type conversion on the CPU (dtype pairs validated by ops::convert).
#include <vector>

#include "backend/cpu/cpu_ops.h"

namespace dsv4::cpu {

void convert(Tensor out, Tensor x) {
  const size_t n = static_cast<size_t>(x.numel());
  if (out.dtype() == DType::I64) {
    for (size_t i = 0; i < n; ++i) out.ptr<int64_t>()[i] = x.ptr<int32_t>()[i];
    return;
  }
  if (x.dtype() == DType::F32) {
    convert_from_f32(x.ptr<float>(), out.dtype(), out.data(), n);
  } else if (out.dtype() == DType::F32) {
    convert_to_f32(x.dtype(), x.data(), out.ptr<float>(), n);
  } else {
    std::vector<float> tmp(n);
    convert_to_f32(x.dtype(), x.data(), tmp.data(), n);
    convert_from_f32(tmp.data(), out.dtype(), out.data(), n);
  }
}

}  // namespace dsv4::cpu
