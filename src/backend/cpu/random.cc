// Synthetic weights on the CPU (same values as the CUDA fill: core/hash_random.h).
#include "backend/cpu/cpu_ops.h"
#include "dsv4/core/hash_random.h"

namespace dsv4::cpu {

void fill_random(Tensor out, uint64_t seed, float mean, float std) {
  const int64_t n = out.numel();
  if (out.dtype() == DType::F32) {
    for (int64_t i = 0; i < n; ++i) out.ptr<float>()[i] = mean + std * hash_normal(seed, static_cast<uint64_t>(i));
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float v = mean + std * hash_normal(seed, static_cast<uint64_t>(i));
    convert_from_f32(&v, out.dtype(), static_cast<char*>(out.data()) + i * dtype_size(out.dtype()), 1);
  }
}

void fill_expert_table(Tensor out, uint64_t seed, int64_t num_experts) {
  const int64_t rows = out.size(0), k = out.size(1);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t start = static_cast<int64_t>(splitmix64(seed + static_cast<uint64_t>(r)) % num_experts);
    for (int64_t j = 0; j < k; ++j) out.ptr<int32_t>()[r * k + j] = static_cast<int32_t>((start + j) % num_experts);
  }
}

}  // namespace dsv4::cpu
