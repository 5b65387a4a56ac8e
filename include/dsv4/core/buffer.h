// Buffer: an owning allocation on the host (256-byte aligned, like cudaMalloc) or on a CUDA device.
#pragma once

#include <cstddef>

#include "dsv4/core/tensor.h"

namespace dsv4 {

class Buffer {
 public:
  Buffer() = default;
  Buffer(size_t bytes, Device device);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return bytes_; }
  Device device() const { return device_; }
  void reset();

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_ = Device::kCPU;
};

// A contiguous float32 tensor that owns its memory (tests, references, host staging).
class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, std::vector<int64_t> shape);
  const Tensor& t() const { return view_; }
  Tensor& t() { return view_; }
  template <typename T>
  T* ptr() const {
    return view_.ptr<T>();
  }
  int64_t numel() const { return view_.numel(); }

 private:
  Buffer buffer_;
  Tensor view_;
};

}  // namespace dsv4
