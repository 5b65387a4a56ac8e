#include "dsv4/core/weight.h"

#include "dsv4/core/status.h"

namespace dsv4 {
namespace {

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

// Byte-sized elements (E4M3 codes, packed E2M1 pairs, E8M0 scales): the storage shapes' element counts are bytes.
int64_t quant_matrix_code_bytes(WeightFormat f, int64_t rows, int64_t cols) {
  return f == WeightFormat::kPlain ? 0 : product(quantized_weight_shape(f, rows, cols));
}

int64_t quant_matrix_scale_bytes(WeightFormat f, int64_t rows, int64_t cols) {
  return f == WeightFormat::kPlain ? 0 : product(quantized_scale_shape(f, rows, cols));
}

Weight Weight::quantized_matrix(const QuantMatrices& m, Device device) {
  DSV4_CHECK_ARG(m.count == 1, "quantised matrix: count ", m.count, ", expected 1");
  Weight w = quantized_stack(m, QuantMatrices{}, device);
  w.stack_ = false;
  return w;
}

Weight Weight::quantized_stack(const QuantMatrices& routed, const QuantMatrices& shared, Device device) {
  auto valid = [](const QuantMatrices& m) {
    return (m.format == WeightFormat::kFp8Block || m.format == WeightFormat::kFp4) && m.codes != nullptr &&
           m.scale != nullptr && m.count >= 1 && m.rows >= 1 && m.cols >= 1 &&
           (m.format != WeightFormat::kFp4 || m.cols % 2 == 0);
  };
  DSV4_CHECK_ARG(valid(routed), "quantised weight: ", weight_format_name(routed.format), " x", routed.count, " [",
                 routed.rows, ", ", routed.cols, "] is not a quantised matrix set");
  if (shared.count != 0) {
    DSV4_CHECK_ARG(valid(shared) && shared.count == 1 && shared.rows == routed.rows && shared.cols == routed.cols,
                   "quantised weight: the shared expert ", weight_format_name(shared.format), " x", shared.count, " [",
                   shared.rows, ", ", shared.cols, "] must be one matrix of the routed experts' shape [", routed.rows,
                   ", ", routed.cols, "]");
  }
  Weight w;
  w.quant_ = routed;
  w.shared_ = shared.count != 0 ? shared : QuantMatrices{};
  w.device_ = device;
  w.stack_ = true;
  return w;
}

const Tensor& Weight::plain() const {
  DSV4_INTERNAL_CHECK(!quantized(), "a quantised weight (", describe(),
                      ") reached an op that reads plain values; quantised weights run on CUDA's linear, linears, "
                      "grouped_linear and moe_experts only");
  return plain_;
}

const QuantMatrices& Weight::quant() const {
  DSV4_INTERNAL_CHECK(quantized(), "Weight::quant() of a plain weight ", plain_.describe());
  return quant_;
}

const QuantMatrices& Weight::shared() const {
  DSV4_INTERNAL_CHECK(quantized(), "Weight::shared() of a plain weight ", plain_.describe());
  return shared_;
}

std::vector<int64_t> Weight::shape() const {
  if (!quantized()) return plain_.shape();
  if (!stack_) return {quant_.rows, quant_.cols};
  return {quant_.count + shared_.count, quant_.rows, quant_.cols};
}

int64_t Weight::size(int dim) const {
  const std::vector<int64_t> s = shape();
  const int n = static_cast<int>(s.size());
  const int d = dim < 0 ? dim + n : dim;
  DSV4_CHECK_ARG(d >= 0 && d < n, "dimension ", dim, " out of range for weight ", shape_string());
  return s[d];
}

std::string Weight::shape_string() const {
  const std::vector<int64_t> s = shape();
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string Weight::describe() const {
  if (!quantized()) return plain_.describe();
  std::string d = str_cat(weight_format_name(quant_.format), shape_string());
  if (shared_.count != 0) d += str_cat(" (shared expert ", weight_format_name(shared_.format), ")");
  return str_cat(d, " ", device_name(device_));
}

size_t Weight::nbytes() const {
  if (!quantized()) return plain_.defined() ? plain_.nbytes() : 0;
  auto bytes = [](const QuantMatrices& m) {
    return m.count *
           (quant_matrix_code_bytes(m.format, m.rows, m.cols) + quant_matrix_scale_bytes(m.format, m.rows, m.cols));
  };
  return static_cast<size_t>(bytes(quant_) + bytes(shared_));
}

}  // namespace dsv4
