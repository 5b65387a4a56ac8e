// Arena: a bump allocator over one Buffer.
//
// Activations of a forward come from an arena that is reset at the start of every step: the same
// sequence of allocations yields the same addresses, which CUDA-graph replay relies on. Allocation
// never touches the system allocator after construction; running out is an error that names the
// arena and the request.
//
// A counting arena (Arena::counting) has no memory: it hands out addresses that are never dereferenced and
// records the high-water mark. The engine sizes its activation arena by running its largest forwards once
// against one, with ExecContext::measuring set so that no op runs (the measuring pass): the forward code is
// the single source of truth for its scratch bytes.
#pragma once

#include <cstdint>
#include <string>

#include "dsv4/core/buffer.h"

namespace dsv4 {

class Arena {
 public:
  static constexpr size_t kAlignment = 256;

  Arena() = default;
  Arena(std::string name, size_t bytes, Device device);
  static Arena counting(std::string name, Device device);

  Tensor alloc(DType dtype, std::initializer_list<int64_t> shape);
  Tensor alloc(DType dtype, const std::vector<int64_t>& shape);
  void* alloc_bytes(size_t bytes);

  // Host arenas: asks the kernel for transparent huge pages (madvise; a no-op where THP is off). For memory that is
  // written whole, once: the model's weights (a 512-token CPU score's start-up 39 -> 25 ms, its page faults 15k ->
  // 2k; bench/RESULTS.md). Not for the state pool, which is touched sparsely (a 2 MiB page cleared per touch).
  void advise_huge_pages();

  size_t mark() const { return offset_; }
  void release(size_t mark);  // frees everything allocated after `mark`
  void reset() { offset_ = 0; }

  size_t used() const { return offset_; }
  size_t capacity() const { return buffer_.size(); }
  size_t high_water() const { return high_water_; }
  Device device() const { return device_; }
  bool is_counting() const { return counting_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  Buffer buffer_;
  Device device_ = Device::kCPU;
  bool counting_ = false;
  uintptr_t counting_base_ = 0;
  size_t offset_ = 0;
  size_t high_water_ = 0;
};

// RAII scope: releases everything allocated inside it.
class ArenaScope {
 public:
  explicit ArenaScope(Arena& arena) : arena_(arena), mark_(arena.mark()) {}
  ~ArenaScope() { arena_.release(mark_); }
  ArenaScope(const ArenaScope&) = delete;
  ArenaScope& operator=(const ArenaScope&) = delete;

 private:
  Arena& arena_;
  size_t mark_;
};

}  // namespace dsv4
