// Weight: a matrix (or a stack of expert matrices) as the projections and the MoE consume it — either plain values
// (a Tensor, f32 on the CPU, bf16/f32 on CUDA) or a quantised checkpoint's codes and E8M0 scales kept as stored
// (`--cuda-weights quantized`, issue 17; the formats of io/quantization.h).
//
// Type safety: a quantised weight has no Tensor. Every path that reads plain values goes through plain() (or the
// implicit conversion to `const Tensor&`, which is plain()), and that throws kInternal for a quantised weight: no op
// can read codes as values because it forgot to check. The ops that take quantised weights (ops::linear, linears,
// grouped_linear, moe_experts on CUDA) ask quantized() first.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/core/tensor.h"
#include "dsv4/io/quantization.h"

namespace dsv4 {

// `count` quantised [rows, cols] matrices of one format back to back in device memory: matrix i's codes at
// codes + i * quant_matrix_code_bytes(format, rows, cols), its scale at scale + i * quant_matrix_scale_bytes(...).
// FP8 block: codes [rows, cols] E4M3, scale [ceil(rows/128), ceil(cols/128)]; FP4: codes [rows, cols/2] packed
// E2M1, scale [rows, ceil(cols/32)].
struct QuantMatrices {
  WeightFormat format = WeightFormat::kPlain;
  const uint8_t* codes = nullptr;
  const uint8_t* scale = nullptr;
  int64_t count = 0, rows = 0, cols = 0;
  // FP4: the widest span of one row's group scales over the matrices (fp4_row_scale_span), measured by the loader
  // from the checkpoint's bytes; -1 when not measured (CUDA's E4M3 MoE products then take the bf16 path).
  int32_t fp4_row_span = -1;
};

// The widest FP4 row span CUDA's E4M3 MoE products take (--activation-quant fp8): FP4 codes are expanded to E4M3 with
// each group's scale folded in relative to the row's largest, exact down to 14 binades below it.
constexpr int32_t kE4m3MoeMaxFp4RowSpan = 14;

// Bytes of one quantised [rows, cols] matrix's codes and scale (the checkpoint's shapes); 0 for kPlain.
int64_t quant_matrix_code_bytes(WeightFormat f, int64_t rows, int64_t cols);
int64_t quant_matrix_scale_bytes(WeightFormat f, int64_t rows, int64_t cols);

class Weight {
 public:
  Weight() = default;
  Weight(Tensor plain) : plain_(plain) {}  // NOLINT(google-explicit-constructor): a plain weight is a Tensor

  // A quantised matrix (m.count == 1): shape [rows, cols].
  static Weight quantized_matrix(const QuantMatrices& m, Device device);
  // A quantised expert stack: routed.count experts in one format and, when shared.count == 1, the shared expert in
  // its own format as stack index routed.count (DeepSeek: FP4 or FP8 routed experts, an FP8 shared expert); shape
  // [routed.count + shared.count, rows, cols]. Both parts must have the same [rows, cols]. Throws kInvalidArgument.
  static Weight quantized_stack(const QuantMatrices& routed, const QuantMatrices& shared, Device device);

  bool quantized() const { return quant_.format != WeightFormat::kPlain; }
  bool defined() const { return quantized() || plain_.defined(); }
  Device device() const { return quantized() ? device_ : plain_.device(); }

  // The plain values; kInternal for a quantised weight (the op or tool must handle quantised weights itself).
  const Tensor& plain() const;
  operator const Tensor&() const { return plain(); }  // NOLINT(google-explicit-constructor)

  // The quantised parts (kInternal for a plain weight).
  const QuantMatrices& quant() const;   // a matrix, or the routed experts of a stack
  const QuantMatrices& shared() const;  // count 0 for a matrix or a stack without a shared expert

  // The logical shape, the same whatever the storage: [rows, cols] for a matrix, [experts, rows, cols] for a stack
  // (the shared expert counted).
  std::vector<int64_t> shape() const;
  int ndim() const { return static_cast<int>(shape().size()); }
  int64_t size(int dim) const;
  std::string shape_string() const;
  std::string describe() const;  // "bf16[4, 8] cuda" or "fp8-e4m3 (...)[4, 8] cuda"
  // Bytes in memory: the tensor's, or codes plus scales.
  size_t nbytes() const;

 private:
  Tensor plain_;
  QuantMatrices quant_, shared_;
  Device device_ = Device::kCPU;
  bool stack_ = false;
};

}  // namespace dsv4
