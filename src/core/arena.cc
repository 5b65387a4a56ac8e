#include "dsv4/core/arena.h"

namespace dsv4 {

Arena::Arena(std::string name, size_t bytes, Device device)
    : name_(std::move(name)), buffer_(bytes, device) {}

void* Arena::alloc_bytes(size_t bytes) {
  const size_t begin = (offset_ + kAlignment - 1) / kAlignment * kAlignment;
  DSV4_CHECK(begin + bytes <= buffer_.size(), kOutOfMemory, "arena '", name_, "' exhausted: ", bytes,
             " bytes requested with ", buffer_.size() - std::min(begin, buffer_.size()), " of ",
             buffer_.size(), " left");
  offset_ = begin + bytes;
  if (offset_ > high_water_) high_water_ = offset_;
  return static_cast<char*>(buffer_.data()) + begin;
}

Tensor Arena::alloc(DType dtype, std::initializer_list<int64_t> shape) {
  return alloc(dtype, std::vector<int64_t>(shape));
}

Tensor Arena::alloc(DType dtype, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  void* p = alloc_bytes(static_cast<size_t>(n) * dtype_size(dtype));
  return Tensor(p, dtype, shape, buffer_.device());
}

void Arena::release(size_t mark) {
  DSV4_INTERNAL_CHECK(mark <= offset_, "arena '", name_, "' released past its top");
  offset_ = mark;
}

}  // namespace dsv4
