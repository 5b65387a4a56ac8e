#include "dsv4/core/tensor.h"

#include <sstream>

namespace dsv4 {

const char* device_name(Device d) { return d == Device::kCUDA ? "cuda" : "cpu"; }

Tensor::Tensor(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device)
    : Tensor(data, dtype, std::vector<int64_t>(shape), device) {}

Tensor::Tensor(void* data, DType dtype, const std::vector<int64_t>& shape, Device device)
    : data_(data), dtype_(dtype), device_(device) {
  DSV4_CHECK_ARG(shape.size() <= kMaxDims, "tensor rank ", shape.size(), " exceeds ", kMaxDims);
  ndim_ = static_cast<int>(shape.size());
  for (int i = 0; i < ndim_; ++i) {
    DSV4_CHECK_ARG(shape[i] >= 0, "negative dimension in tensor shape");
    shape_[i] = shape[i];
  }
  set_contiguous_strides();
}

void Tensor::set_contiguous_strides() {
  int64_t s = 1;
  for (int i = ndim_ - 1; i >= 0; --i) {
    stride_[i] = s;
    s *= shape_[i];
  }
}

int Tensor::wrap(int dim) const {
  const int d = dim < 0 ? dim + ndim_ : dim;
  DSV4_CHECK_ARG(d >= 0 && d < ndim_, "dimension ", dim, " out of range for ", shape_string());
  return d;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= shape_[i];
  return n;
}

bool Tensor::is_contiguous() const {
  int64_t s = 1;
  for (int i = ndim_ - 1; i >= 0; --i) {
    if (shape_[i] != 1 && stride_[i] != s) return false;
    s *= shape_[i];
  }
  return true;
}

std::string Tensor::shape_string() const {
  std::ostringstream os;
  os << "[";
  for (int i = 0; i < ndim_; ++i) os << (i ? ", " : "") << shape_[i];
  os << "]";
  return os.str();
}

std::string Tensor::describe() const {
  return str_cat(dtype_name(dtype_), shape_string(), " ", device_name(device_));
}

Tensor Tensor::view(std::initializer_list<int64_t> shape) const {
  return view(std::vector<int64_t>(shape));
}

Tensor Tensor::view(const std::vector<int64_t>& shape) const {
  DSV4_CHECK_ARG(is_contiguous(), "view of a non-contiguous tensor ", describe());
  std::vector<int64_t> s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      DSV4_CHECK_ARG(infer < 0, "view: more than one -1");
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    DSV4_CHECK_ARG(known > 0 && numel() % known == 0, "view: cannot infer dimension of ", describe());
    s[infer] = numel() / known;
    known *= s[infer];
  }
  DSV4_CHECK_ARG(known == numel(), "view: ", describe(), " has ", numel(), " elements, target has ", known);
  return Tensor(data_, dtype_, s, device_);
}

Tensor Tensor::slice(int dim, int64_t begin, int64_t end) const {
  const int d = wrap(dim);
  DSV4_CHECK_ARG(0 <= begin && begin <= end && end <= shape_[d], "slice [", begin, ", ", end,
                 ") out of range for dim ", d, " of ", describe());
  Tensor t = *this;
  t.data_ = static_cast<char*>(data_) + begin * stride_[d] * static_cast<int64_t>(dtype_size(dtype_));
  t.shape_[d] = end - begin;
  return t;
}

Tensor Tensor::select(int dim, int64_t index) const {
  const int d = wrap(dim);
  DSV4_CHECK_ARG(0 <= index && index < shape_[d], "index ", index, " out of range for dim ", d, " of ",
                 describe());
  Tensor t = *this;
  t.data_ = static_cast<char*>(data_) + index * stride_[d] * static_cast<int64_t>(dtype_size(dtype_));
  for (int i = d; i < ndim_ - 1; ++i) {
    t.shape_[i] = shape_[i + 1];
    t.stride_[i] = stride_[i + 1];
  }
  t.ndim_ = ndim_ - 1;
  return t;
}

float& Tensor::at(std::initializer_list<int64_t> idx) const {
  DSV4_CHECK_ARG(dtype_ == DType::F32 && device_ == Device::kCPU, "at() needs a CPU F32 tensor");
  DSV4_CHECK_ARG(static_cast<int>(idx.size()) == ndim_, "at(): rank mismatch");
  int64_t off = 0;
  int i = 0;
  for (int64_t v : idx) {
    DSV4_CHECK_ARG(v >= 0 && v < shape_[i], "at(): index out of range");
    off += v * stride_[i++];
  }
  return static_cast<float*>(data_)[off];
}

void check_shape(const Tensor& t, std::initializer_list<int64_t> shape, const char* what) {
  bool ok = t.ndim() == static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) {
    if (!ok) break;
    if (s >= 0 && t.size(i) != s) ok = false;
    ++i;
  }
  if (!ok) {
    std::ostringstream os;
    os << "[";
    i = 0;
    for (int64_t s : shape) os << (i++ ? ", " : "") << (s < 0 ? std::string("*") : std::to_string(s));
    os << "]";
    fail(StatusCode::kInvalidArgument, what, ": expected shape ", os.str(), ", got ", t.shape_string());
  }
}

void check_dtype(const Tensor& t, DType dtype, const char* what) {
  DSV4_CHECK_ARG(t.dtype() == dtype, what, ": expected dtype ", dtype_name(dtype), ", got ",
                 dtype_name(t.dtype()));
}

}  // namespace dsv4
