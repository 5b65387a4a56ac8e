#pragma once
// A handful of small copies in one kernel launch, between device buffers and mapped pinned host memory: a decode
// step's metadata upload and token read-back took four cudaMemcpy calls (two host-to-device, one device-to-device,
// one device-to-host), each an operation of its own on the stream that the GPU serialises with the step's kernels.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dsv4::cuda {

// rows x row_bytes from src to dst, rows src_pitch / dst_pitch bytes apart. Host pointers are device views of mapped
// pinned memory (cudaHostGetDevicePointer); pointers, pitches and row_bytes are multiples of 4.
struct CopySegment {
  const void* src = nullptr;
  void* dst = nullptr;
  int64_t row_bytes = 0;
  int64_t rows = 1;
  int64_t src_pitch = 0, dst_pitch = 0;
};

constexpr int kMaxCopySegments = 4;

// Copies segments[0, count) on `stream` (count <= kMaxCopySegments; empty segments allowed). Like every dsv4 kernel it
// waits for its predecessor on the stream before it reads or writes; its writes to host memory are visible to the host
// once an event recorded after it has completed. Host memory is read with system-scope loads: what the host wrote
// before the launch, never a cached copy.
void copy_segments(cudaStream_t stream, const CopySegment* segments, int count);

}  // namespace dsv4::cuda
