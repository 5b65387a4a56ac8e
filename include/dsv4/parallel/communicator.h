// Communicator: the collectives a multi-rank run needs (tensor-parallel attention, expert-parallel MoE, the step
// plans rank 0 broadcasts), behind one interface with two backends:
// - InProcessGroup (parallel/in_process.h): threads of one process as ranks over shared memory — the CPU backend;
// - the NCCL backend (parallel/nccl_communicator.h, CUDA builds): one process or thread per GPU.
//
// Every rank calls the same collectives in the same order. A collective that cannot complete — a peer rank failed
// (abort()) or did not arrive within the timeout — throws a kAborted error on every rank that takes part, naming
// the collective and the cause: a multi-rank job never hangs on a dead peer.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/core/tensor.h"

namespace dsv4 {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // In place: t = the sum of every rank's t (same shape on every rank; F32 or BF16, BF16 summed in f32 and rounded
  // once). The result is bit-identical on every rank.
  virtual void all_reduce_sum(Tensor t) = 0;
  // out = the concatenation of every rank's `in` in rank order (in: the same dtype and element count on every rank;
  // out: size() times that).
  virtual void all_gather(Tensor in, Tensor out) = 0;
  // How long a non-root rank of broadcast_bytes waits for the root: the collective timeout, or — a follower waiting
  // for the next step plan while the leader is idle (a server without requests) — until the root comes or the job
  // is aborted.
  enum class Wait { kTimeout, kUntilAborted };
  // `bytes` of rank `root` replace every other rank's (their sizes need not be known in advance: the step plans).
  virtual void broadcast_bytes(std::vector<uint8_t>* bytes, int root, Wait wait = Wait::kTimeout) = 0;
  virtual void barrier() = 0;

  // Marks the job failed (this rank cannot go on): every collective in progress or later throws kAborted on every
  // rank, naming this rank and `reason`. Safe to call from any thread, more than once (the first reason stays).
  virtual void abort(const std::string& reason) = 0;
};

// The collective timeout: DSV4_COLLECTIVE_TIMEOUT_S in the environment (seconds, > 0), else 300 s.
std::chrono::milliseconds default_collective_timeout();

}  // namespace dsv4
