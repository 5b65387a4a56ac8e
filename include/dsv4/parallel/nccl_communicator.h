// The NCCL communicator backend (CUDA builds only): one rank per GPU, collectives on the rank's CUDA stream, so they
// can be captured into CUDA graphs with the rest of the forward.
//
// UNVERIFIED: this backend compiles in the CUDA build but has not run — no machine with several GPUs (nor a single-GPU
// budget) was available when it was written. Nothing in the engine uses it yet: the CUDA executor does not run
// several ranks (--tensor-parallel-size > 1 on --device cuda is refused).
//
// Watchdog: the communicator is created non-blocking; every host-side wait (initialisation, broadcast_bytes,
// barrier, synchronize) polls the stream and ncclCommGetAsyncError and gives up after the collective timeout,
// aborting the communicator (ncclCommAbort) and throwing kAborted. A peer that died makes every other rank time out
// at its next wait; abort() here cannot reach the peers by itself (that needs the out-of-band TCP rendezvous store,
// not built yet). NVLink multicast stays off: the constructor sets NCCL_NVLS_ENABLE=0 before NCCL initialises.
#pragma once

#include <array>
#include <chrono>
#include <string>
#include <vector>

#include "dsv4/parallel/communicator.h"

namespace dsv4 {

class NcclCommunicator final : public Communicator {
 public:
  // The bytes of an ncclUniqueId: rank 0 makes one and every rank passes the same to its constructor.
  using UniqueId = std::array<char, 128>;
  static UniqueId make_unique_id();

  // `stream`: the rank's cudaStream_t (its device must be current on the calling thread).
  NcclCommunicator(int rank, int size, const UniqueId& id, void* stream, std::chrono::milliseconds timeout);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  // Device tensors; queued on the stream (no host wait: capturable).
  void all_reduce_sum(Tensor t) override;
  void all_gather(Tensor in, Tensor out) override;
  // Host bytes through a device staging buffer; waits (watchdog) before returning.
  void broadcast_bytes(std::vector<uint8_t>* bytes, int root, Wait wait = Wait::kTimeout) override;
  void barrier() override;
  void abort(const std::string& reason) override;

  // Waits for everything queued on the stream, under the watchdog.
  void synchronize();

 private:
  void wait_stream(const char* what, bool untimed);
  void check_async(const char* what);
  [[noreturn]] void fail_aborted(const std::string& why);
  void* stage(size_t bytes);

  int rank_ = 0, size_ = 1;
  void* comm_ = nullptr;    // ncclComm_t
  void* stream_ = nullptr;  // cudaStream_t
  std::chrono::milliseconds timeout_;
  bool aborted_ = false;
  std::string abort_reason_;
  void* staging_ = nullptr;  // device bytes for broadcast_bytes / barrier
  size_t staging_bytes_ = 0;
};

}  // namespace dsv4
