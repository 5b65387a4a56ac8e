#include "dsv4/core/arena.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace dsv4 {

namespace {
// Where counting arenas' addresses lie: far from any mapping a process gets (a stray dereference faults at once),
// aligned, never null (ops reject null tensors), and a 16 TiB window per arena, so tensors of two counting arenas
// never look aliased to the ops' overlap checks.
constexpr uintptr_t kCountingBase = uintptr_t{1} << 48, kCountingWindow = uintptr_t{1} << 44;
std::atomic<uint32_t> g_counting_arenas{0};
}  // namespace

Arena::Arena(std::string name, size_t bytes, Device device)
    : name_(std::move(name)), buffer_(bytes, device), device_(device) {}

Arena Arena::counting(std::string name, Device device) {
  Arena a;
  a.name_ = std::move(name);
  a.device_ = device;
  a.counting_ = true;
  a.counting_base_ = kCountingBase + (g_counting_arenas.fetch_add(1) % 4096) * kCountingWindow;
  return a;
}

void* Arena::alloc_bytes(size_t bytes) {
  const size_t begin = (offset_ + kAlignment - 1) / kAlignment * kAlignment;
  if (counting_) {
    offset_ = begin + bytes;
    high_water_ = std::max(high_water_, offset_);
    DSV4_CHECK(offset_ <= kCountingWindow, kOutOfMemory, "counting arena '", name_, "': ", offset_,
               " bytes exceed its window");
    return reinterpret_cast<void*>(counting_base_ + begin);
  }
  DSV4_CHECK(begin + bytes <= buffer_.size(), kOutOfMemory, "arena '", name_, "' exhausted: ", bytes,
             " bytes requested with ", buffer_.size() - std::min(begin, buffer_.size()), " of ", buffer_.size(),
             " left");
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
  return Tensor(p, dtype, shape, device_);
}

void Arena::advise_huge_pages() {
  if (device_ != Device::kCPU || counting_ || buffer_.data() == nullptr) return;
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(buffer_.data()) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(buffer_.data()) + buffer_.size()) & ~(kHugePage - 1);
  // Advice only: where it fails (THP compiled out, an old kernel) the pages stay 4 KiB.
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

void Arena::release(size_t mark) {
  DSV4_INTERNAL_CHECK(mark <= offset_, "arena '", name_, "' released past its top");
  offset_ = mark;
}

}  // namespace dsv4
