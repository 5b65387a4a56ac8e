// UNVERIFIED (see the header): compiled in CUDA builds, never run.
#include "dsv4/parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "dsv4/core/status.h"

namespace dsv4 {
namespace {

static_assert(sizeof(ncclUniqueId) == sizeof(NcclCommunicator::UniqueId), "ncclUniqueId is 128 bytes");

ncclComm_t as_comm(void* p) { return static_cast<ncclComm_t>(p); }
cudaStream_t as_stream(void* p) { return static_cast<cudaStream_t>(p); }

void check_cuda(cudaError_t e, const char* what) {
  DSV4_CHECK(e == cudaSuccess, kCudaError, what, ": ", cudaGetErrorString(e));
}

ncclDataType_t nccl_type(DType t, const char* what) {
  switch (t) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    case DType::I32:
      return ncclInt32;
    case DType::U8:
      return ncclUint8;
    default:
      fail(StatusCode::kInvalidArgument, what, ": no NCCL type for ", dtype_name(t));
  }
}

}  // namespace

NcclCommunicator::UniqueId NcclCommunicator::make_unique_id() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  DSV4_CHECK(r == ncclSuccess, kUnsupported, "ncclGetUniqueId: ", ncclGetErrorString(r));
  UniqueId out;
  std::memcpy(out.data(), &id, sizeof(id));
  return out;
}

NcclCommunicator::NcclCommunicator(int rank, int size, const UniqueId& id, void* stream,
                                   std::chrono::milliseconds timeout)
    : rank_(rank), size_(size), stream_(stream), timeout_(timeout) {
  DSV4_CHECK_ARG(size >= 1 && rank >= 0 && rank < size, "NCCL communicator: rank ", rank, " of ", size);
  // NVLink multicast (NVLS) stays off wherever ranks start (its buffers and setup are not wanted on our machines).
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/1);
  ncclUniqueId nid;
  std::memcpy(&nid, id.data(), sizeof(nid));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // the watchdog polls instead of blocking forever
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, size, nid, rank, &config);
  DSV4_CHECK(r == ncclSuccess || r == ncclInProgress, kAborted, "ncclCommInitRankConfig (rank ", rank, " of ", size,
             "): ", ncclGetErrorString(r));
  comm_ = comm;
  check_async("NCCL initialisation");
}

NcclCommunicator::~NcclCommunicator() {
  if (staging_ != nullptr) cudaFree(staging_);
  if (comm_ != nullptr) ncclCommDestroy(as_comm(comm_));  // an aborted communicator is already gone
}

void NcclCommunicator::fail_aborted(const std::string& why) {
  if (!aborted_) {
    aborted_ = true;
    abort_reason_ = why;
    ncclCommAbort(as_comm(comm_));
    comm_ = nullptr;
  }
  fail(StatusCode::kAborted, "rank ", rank_, ": ", abort_reason_);
}

// Polls the communicator's asynchronous state until it is no longer in progress (initialisation, a non-blocking
// call's enqueue), under the timeout.
void NcclCommunicator::check_async(const char* what) {
  if (aborted_) fail(StatusCode::kAborted, what, " abandoned: ", abort_reason_);
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(as_comm(comm_), &state);
    if (r != ncclSuccess) fail_aborted(str_cat(what, ": ncclCommGetAsyncError: ", ncclGetErrorString(r)));
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) fail_aborted(str_cat(what, ": ", ncclGetErrorString(state)));
    if (std::chrono::steady_clock::now() > deadline) {
      fail_aborted(str_cat(what, " timed out after ", timeout_.count(), " ms"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

void NcclCommunicator::wait_stream(const char* what, bool untimed) {
  if (aborted_) fail(StatusCode::kAborted, what, " abandoned: ", abort_reason_);
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    const cudaError_t e = cudaStreamQuery(as_stream(stream_));
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) check_cuda(e, what);
    ncclResult_t state = ncclSuccess;
    ncclCommGetAsyncError(as_comm(comm_), &state);
    if (state != ncclSuccess && state != ncclInProgress) fail_aborted(str_cat(what, ": ", ncclGetErrorString(state)));
    if (!untimed && std::chrono::steady_clock::now() > deadline) {
      fail_aborted(str_cat(what, " timed out after ", timeout_.count(), " ms (a peer rank died or hangs)"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void* NcclCommunicator::stage(size_t bytes) {
  if (bytes > staging_bytes_) {
    if (staging_ != nullptr) check_cuda(cudaFree(staging_), "cudaFree");
    staging_ = nullptr;
    check_cuda(cudaMalloc(&staging_, bytes), "NCCL staging buffer");
    staging_bytes_ = bytes;
  }
  return staging_;
}

void NcclCommunicator::all_reduce_sum(Tensor t) {
  DSV4_CHECK_ARG(t.device() == Device::kCUDA && (t.dtype() == DType::F32 || t.dtype() == DType::BF16),
                 "NCCL all_reduce_sum: an F32 or BF16 device tensor, got ", t.describe());
  if (aborted_) fail(StatusCode::kAborted, "all_reduce_sum abandoned: ", abort_reason_);
  const ncclResult_t r =
      ncclAllReduce(t.data(), t.data(), static_cast<size_t>(t.numel()), nccl_type(t.dtype(), "all_reduce_sum"), ncclSum,
                    as_comm(comm_), as_stream(stream_));
  if (r != ncclSuccess && r != ncclInProgress) fail_aborted(str_cat("ncclAllReduce: ", ncclGetErrorString(r)));
}

void NcclCommunicator::all_gather(Tensor in, Tensor out) {
  DSV4_CHECK_ARG(in.device() == Device::kCUDA && out.device() == Device::kCUDA && in.dtype() == out.dtype() &&
                     out.numel() == in.numel() * size_,
                 "NCCL all_gather: in ", in.describe(), ", out ", out.describe());
  if (aborted_) fail(StatusCode::kAborted, "all_gather abandoned: ", abort_reason_);
  const ncclResult_t r = ncclAllGather(in.data(), out.data(), static_cast<size_t>(in.numel()),
                                       nccl_type(in.dtype(), "all_gather"), as_comm(comm_), as_stream(stream_));
  if (r != ncclSuccess && r != ncclInProgress) fail_aborted(str_cat("ncclAllGather: ", ncclGetErrorString(r)));
}

void NcclCommunicator::broadcast_bytes(std::vector<uint8_t>* bytes, int root, Wait wait) {
  DSV4_CHECK_ARG(root >= 0 && root < size_, "broadcast_bytes: root ", root, " outside [0, ", size_, ")");
  if (aborted_) fail(StatusCode::kAborted, "broadcast_bytes abandoned: ", abort_reason_);
  const bool untimed = rank_ != root && wait == Wait::kUntilAborted;
  // The size first, then the bytes: followers do not know a plan's size in advance.
  uint64_t n = bytes->size();
  auto* dev = static_cast<uint8_t*>(stage(std::max<size_t>(sizeof(uint64_t), 4096)));
  check_cuda(cudaMemcpyAsync(dev, &n, sizeof(n), cudaMemcpyHostToDevice, as_stream(stream_)), "broadcast_bytes");
  ncclResult_t r = ncclBroadcast(dev, dev, sizeof(n), ncclUint8, root, as_comm(comm_), as_stream(stream_));
  if (r != ncclSuccess && r != ncclInProgress) fail_aborted(str_cat("ncclBroadcast: ", ncclGetErrorString(r)));
  check_cuda(cudaMemcpyAsync(&n, dev, sizeof(n), cudaMemcpyDeviceToHost, as_stream(stream_)), "broadcast_bytes");
  wait_stream("broadcast_bytes (size)", untimed);
  if (rank_ != root) bytes->resize(n);
  if (n == 0) return;
  dev = static_cast<uint8_t*>(stage(n));
  if (rank_ == root) {
    check_cuda(cudaMemcpyAsync(dev, bytes->data(), n, cudaMemcpyHostToDevice, as_stream(stream_)), "broadcast_bytes");
  }
  r = ncclBroadcast(dev, dev, n, ncclUint8, root, as_comm(comm_), as_stream(stream_));
  if (r != ncclSuccess && r != ncclInProgress) fail_aborted(str_cat("ncclBroadcast: ", ncclGetErrorString(r)));
  if (rank_ != root) {
    check_cuda(cudaMemcpyAsync(bytes->data(), dev, n, cudaMemcpyDeviceToHost, as_stream(stream_)), "broadcast_bytes");
  }
  wait_stream("broadcast_bytes", false);
}

void NcclCommunicator::barrier() {
  if (aborted_) fail(StatusCode::kAborted, "barrier abandoned: ", abort_reason_);
  auto* dev = static_cast<float*>(stage(sizeof(float)));
  const ncclResult_t r = ncclAllReduce(dev, dev, 1, ncclFloat32, ncclSum, as_comm(comm_), as_stream(stream_));
  if (r != ncclSuccess && r != ncclInProgress) fail_aborted(str_cat("barrier: ", ncclGetErrorString(r)));
  wait_stream("barrier", false);
}

void NcclCommunicator::synchronize() { wait_stream("synchronize", false); }

void NcclCommunicator::abort(const std::string& reason) {
  if (aborted_) return;
  aborted_ = true;
  abort_reason_ = str_cat("rank ", rank_, " failed: ", reason);
  if (comm_ != nullptr) ncclCommAbort(as_comm(comm_));
  comm_ = nullptr;
}

}  // namespace dsv4
