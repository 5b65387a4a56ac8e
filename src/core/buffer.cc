#include "dsv4/core/buffer.h"

#ifndef DSV4_NO_CUDA
#include <cuda_runtime_api.h>
#endif

#include <cstdlib>
#include <cstring>

namespace dsv4 {

Buffer::Buffer(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (bytes == 0) return;
  if (device == Device::kCPU) {
    const size_t rounded = (bytes + 255) / 256 * 256;
    data_ = std::aligned_alloc(256, rounded);
    DSV4_CHECK(data_ != nullptr, kOutOfMemory, "host allocation of ", bytes, " bytes failed");
  } else {
#ifndef DSV4_NO_CUDA
    const cudaError_t err = cudaMalloc(&data_, bytes);
    if (err != cudaSuccess) {
      data_ = nullptr;
      cudaGetLastError();
      fail(err == cudaErrorMemoryAllocation ? StatusCode::kOutOfMemory : StatusCode::kCudaError, "cudaMalloc of ",
           bytes, " bytes failed: ", cudaGetErrorString(err));
    }
#else
    fail(StatusCode::kCudaError, "device allocation of ", bytes, " bytes: dsv4 was built without CUDA (DSV4_CUDA=OFF)");
#endif
  }
}

Buffer::~Buffer() { reset(); }

Buffer::Buffer(Buffer&& other) noexcept : data_(other.data_), bytes_(other.bytes_), device_(other.device_) {
  other.data_ = nullptr;
  other.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = other.data_;
    bytes_ = other.bytes_;
    device_ = other.device_;
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void Buffer::reset() {
  if (data_ != nullptr) {
    if (device_ == Device::kCPU) {
      std::free(data_);
    } else {
#ifndef DSV4_NO_CUDA
      cudaFree(data_);
#endif
    }
  }
  data_ = nullptr;
  bytes_ = 0;
}

HostTensor::HostTensor(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  buffer_ = Buffer(static_cast<size_t>(n) * dtype_size(dtype), Device::kCPU);
  if (n > 0) std::memset(buffer_.data(), 0, buffer_.size());
  view_ = Tensor(buffer_.data(), dtype, shape, Device::kCPU);
}

}  // namespace dsv4
