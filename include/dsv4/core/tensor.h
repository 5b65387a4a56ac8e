// Tensor: a non-owning, strided view of memory on one device.
//
// Memory is owned elsewhere: by an Arena (activations, reset every step so identical shapes get identical
// addresses, which is what makes CUDA-graph capture and the shared pool work), by the weight store (an
// mmap'd checkpoint or one device allocation) or by a Buffer.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "dsv4/core/dtype.h"
#include "dsv4/core/status.h"

namespace dsv4 {

enum class Device : uint8_t { kCPU = 0, kCUDA = 1 };
const char* device_name(Device d);

constexpr int kMaxDims = 6;

class Tensor {
 public:
  Tensor() = default;
  Tensor(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device = Device::kCPU);
  Tensor(void* data, DType dtype, const std::vector<int64_t>& shape, Device device = Device::kCPU);

  bool defined() const { return data_ != nullptr || numel() == 0; }
  void* data() const { return data_; }
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_cuda() const { return device_ == Device::kCUDA; }
  int ndim() const { return ndim_; }
  int64_t size(int dim) const { return shape_[wrap(dim)]; }
  int64_t stride(int dim) const { return stride_[wrap(dim)]; }
  std::vector<int64_t> shape() const { return {shape_.begin(), shape_.begin() + ndim_}; }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  std::string shape_string() const;  // "[4, 8]"
  std::string describe() const;      // "bf16[4, 8] cuda"

  // Views (no copies). Each requires what it says and throws kInvalidArgument otherwise.
  Tensor view(std::initializer_list<int64_t> shape) const;  // contiguous only; one dim may be -1
  Tensor view(const std::vector<int64_t>& shape) const;
  Tensor slice(int dim, int64_t begin, int64_t end) const;  // [begin, end) along dim
  Tensor select(int dim, int64_t index) const;              // drops dim
  Tensor rows(int64_t begin, int64_t end) const { return slice(0, begin, end); }
  Tensor row(int64_t index) const { return select(0, index); }

  // Element access for CPU float32 tensors (tests and references).
  float& at(std::initializer_list<int64_t> idx) const;

 private:
  int wrap(int dim) const;
  void set_contiguous_strides();

  void* data_ = nullptr;
  DType dtype_ = DType::F32;
  Device device_ = Device::kCPU;
  int ndim_ = 0;
  std::array<int64_t, kMaxDims> shape_{};
  std::array<int64_t, kMaxDims> stride_{};  // in elements
};

// Shape checks with messages that name the tensor.
void check_shape(const Tensor& t, std::initializer_list<int64_t> shape, const char* what);
void check_dtype(const Tensor& t, DType dtype, const char* what);

}  // namespace dsv4
