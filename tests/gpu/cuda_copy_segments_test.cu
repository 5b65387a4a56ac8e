// copy_segments (backend/cuda/copy_segments.h): strided rows from mapped host memory, device to device, device to
// mapped host memory, several segments in one launch, a host rewrite seen by the next launch, bad segments refused.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

#include "backend/cuda/copy_segments.h"
#include "backend/cuda/cuda_check.h"
#include "dsv4/core/status.h"
#include "gpu_test_util.h"

namespace {

using dsv4::cuda::copy_segments;
using dsv4::cuda::CopySegment;

struct Mapped {
  int32_t* host = nullptr;
  int32_t* device_view = nullptr;
  explicit Mapped(size_t n) {
    DSV4_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host), n * sizeof(int32_t), cudaHostAllocMapped));
    DSV4_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&device_view), host, 0));
  }
  ~Mapped() { cudaFreeHost(host); }
};

TEST(CudaCopySegments, StridedRowsHostToDeviceToHost) {
  DSV4_REQUIRE_GPU();
  cudaStream_t stream = nullptr;
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const int64_t pitch = 1000, rows = 5, width = 37;  // ints; rows of 37 of every 1,000
  Mapped in(static_cast<size_t>(pitch * rows + 64)), out(static_cast<size_t>(2 * width * rows + 64));
  std::iota(in.host, in.host + pitch * rows + 64, 1);
  std::fill(out.host, out.host + 2 * width * rows + 64, -7);
  const int64_t device_ints = pitch * rows + 64 + width;  // the rows, the tail, a spare row
  int32_t* d = nullptr;
  DSV4_CUDA_CHECK(cudaMalloc(&d, device_ints * sizeof(int32_t)));
  DSV4_CUDA_CHECK(cudaMemset(d, 0, device_ints * sizeof(int32_t)));
  int32_t* spare = d + pitch * rows + 64;
  for (int round = 0; round < 2; ++round) {
    if (round == 1) {  // the host rewrites its buffer: the next launch reads the new values
      for (int64_t i = 0; i < pitch * rows + 64; ++i) in.host[i] = static_cast<int32_t>(-i);
    }
    // Host -> device: rows 1..4 strided (row 0 left alone, as the executor leaves the ids the device wrote) and a
    // 64-int tail; then, in one more launch, device -> host (all five rows packed, and the tail) and device -> device
    // (row 1 into the spare row).
    const CopySegment up[2] = {
        {in.device_view + pitch, d + pitch, width * 4, rows - 1, pitch * 4, pitch * 4},
        {in.device_view + pitch * rows, d + pitch * rows, 64 * 4},
    };
    copy_segments(stream, up, 2);
    const CopySegment down[3] = {
        {d, out.device_view, width * 4, rows, pitch * 4, width * 4},
        {d + pitch * rows, out.device_view + width * rows, 64 * 4},
        {d + pitch, spare, width * 4},
    };
    copy_segments(stream, down, 3);
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
    for (int64_t k = 0; k < width; ++k) ASSERT_EQ(out.host[k], 0) << "row 0 was not to be copied, " << k;
    for (int64_t r = 1; r < rows; ++r) {
      for (int64_t k = 0; k < width; ++k) ASSERT_EQ(out.host[r * width + k], in.host[r * pitch + k]) << r << "," << k;
    }
    for (int64_t k = 0; k < 64; ++k) ASSERT_EQ(out.host[width * rows + k], in.host[pitch * rows + k]) << k;
    std::vector<int32_t> copied(width);
    DSV4_CUDA_CHECK(cudaMemcpy(copied.data(), spare, width * 4, cudaMemcpyDeviceToHost));
    for (int64_t k = 0; k < width; ++k) ASSERT_EQ(copied[k], in.host[pitch + k]) << k;
  }
  DSV4_CUDA_CHECK(cudaFree(d));
  DSV4_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST(CudaCopySegments, RefusesBadSegments) {
  DSV4_REQUIRE_GPU();
  int32_t* d = nullptr;
  DSV4_CUDA_CHECK(cudaMalloc(&d, 256));
  const CopySegment odd_bytes[1] = {{d, d + 32, 6}};
  EXPECT_THROW(copy_segments(nullptr, odd_bytes, 1), dsv4::Error);
  const CopySegment misaligned[1] = {{reinterpret_cast<const char*>(d) + 2, d + 32, 8}};
  EXPECT_THROW(copy_segments(nullptr, misaligned, 1), dsv4::Error);
  const CopySegment overlapping_rows[1] = {{d, d + 32, 16, 2, 8, 16}};  // src rows closer than a row
  EXPECT_THROW(copy_segments(nullptr, overlapping_rows, 1), dsv4::Error);
  const CopySegment five[5] = {};
  EXPECT_THROW(copy_segments(nullptr, five, 5), dsv4::Error);
  const CopySegment empty[1] = {{nullptr, nullptr, 0}};
  EXPECT_NO_THROW(copy_segments(nullptr, empty, 1));  // nothing to copy: no launch
  DSV4_CUDA_CHECK(cudaFree(d));
}

}  // namespace
