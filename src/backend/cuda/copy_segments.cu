// copy_segments.h's kernel: 4-byte words, a grid-stride loop per segment. Checked by tests/gpu (CudaCopySegments.*)
// and by every CUDA forward (the executor's metadata upload and token read-back).
#include <algorithm>

#include "backend/cuda/common.cuh"
#include "backend/cuda/copy_segments.h"
#include "dsv4/core/status.h"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 64;

struct Segments {
  CopySegment s[kMaxCopySegments];
  int count;
};

// A system-scope load: the value in host memory as the host last wrote it (no L1 / L2 copy of an earlier read).
__device__ __forceinline__ uint32_t load_sys(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.relaxed.sys.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__global__ void __launch_bounds__(kThreads) copy_segments_kernel(const Segments p) {
  pdl_wait();
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int i = 0; i < p.count; ++i) {
    const CopySegment& c = p.s[i];
    const int64_t words = c.row_bytes / 4, total = words * c.rows;
    for (int64_t w = first; w < total; w += stride) {
      const int64_t r = w / words, k = w % words;
      const auto* src = reinterpret_cast<const uint32_t*>(static_cast<const char*>(c.src) + r * c.src_pitch) + k;
      auto* dst = reinterpret_cast<uint32_t*>(static_cast<char*>(c.dst) + r * c.dst_pitch) + k;
      *dst = load_sys(src);
    }
  }
  __threadfence_system();  // host-memory writes ordered before the grid's completion
}

bool aligned4(const void* p) { return reinterpret_cast<uintptr_t>(p) % 4 == 0; }

}  // namespace

void copy_segments(cudaStream_t stream, const CopySegment* segments, int count) {
  DSV4_CHECK_ARG(count >= 0 && count <= kMaxCopySegments, "copy_segments: ", count, " segments (at most ",
                 kMaxCopySegments, ")");
  Segments p{};
  p.count = count;
  int64_t most = 0;
  for (int i = 0; i < count; ++i) {
    const CopySegment& c = segments[i];
    DSV4_CHECK_ARG(c.row_bytes >= 0 && c.rows >= 0 && c.row_bytes % 4 == 0 && c.src_pitch % 4 == 0 &&
                       c.dst_pitch % 4 == 0 &&
                       (c.rows <= 1 || (c.src_pitch >= c.row_bytes && c.dst_pitch >= c.row_bytes)),
                   "copy_segments: segment ", i, " of ", c.rows, " rows of ", c.row_bytes, " bytes, pitches ",
                   c.src_pitch, " / ", c.dst_pitch, " (multiples of 4, rows apart)");
    if (c.row_bytes == 0 || c.rows == 0) continue;
    DSV4_CHECK_ARG(c.src != nullptr && c.dst != nullptr && aligned4(c.src) && aligned4(c.dst),
                   "copy_segments: segment ", i, " pointers null or not 4-byte aligned");
    p.s[i] = c;
    most = std::max(most, c.row_bytes / 4 * c.rows);
  }
  if (most == 0) return;
  const int64_t blocks = std::min(kMaxBlocks, (most + kThreads - 1) / kThreads);
  check_launch(launch_kernel(copy_segments_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, p),
               "copy_segments");
}

}  // namespace dsv4::cuda
