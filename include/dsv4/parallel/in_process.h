// The in-process communicator backend: N threads of one process are the ranks, collectives meet in shared memory
// under one mutex and condition variable. Sums run in rank order on every rank, so an all-reduce gives every rank
// the same bits — replicated activations stay identical across ranks, as NCCL's do.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dsv4/parallel/communicator.h"

namespace dsv4 {

class InProcessGroup {
 public:
  InProcessGroup(int size, std::chrono::milliseconds timeout);
  InProcessGroup(const InProcessGroup&) = delete;
  InProcessGroup& operator=(const InProcessGroup&) = delete;
  ~InProcessGroup();

  int size() const { return size_; }
  // The communicator of rank `rank` (owned by the group; one thread uses it at a time).
  Communicator& rank(int rank);

  // Runs fn(communicator) on `size` threads, one per rank, and waits for all of them. A rank that throws aborts the
  // group (its peers' collectives throw kAborted naming it); the first rank's own error is rethrown here, the
  // peers' consequential aborts are not.
  void run(const std::function<void(Communicator&)>& fn);

 private:
  class Rank;
  friend class Rank;
  // One collective's rendezvous: every rank posts its buffer pointer, the last one to arrive releases them, each
  // reads what it needs, then all meet again (leave) before any buffer may change. Returns the phase parity whose
  // posted_ slots hold this rendezvous' pointers: the leave phase posts into the other parity, so a rank that
  // leaves first cannot overwrite what a slower peer is still reading.
  int arrive(int rank, const char* what, const void* data, size_t bytes, bool untimed = false);
  void leave(int rank, const char* what);
  void wait_for_all(std::unique_lock<std::mutex>& lock, int64_t generation, const char* what, bool untimed);
  [[noreturn]] void throw_aborted(const char* what);

  const int size_;
  const std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  int64_t generation_ = 0;
  std::vector<const void*> posted_[2];
  std::vector<size_t> posted_bytes_[2];
  std::vector<char> present_;  // ranks arrived at the current phase (for the timeout message)
  bool aborted_ = false;
  std::string abort_reason_;
  std::vector<std::unique_ptr<Rank>> ranks_;
};

}  // namespace dsv4
