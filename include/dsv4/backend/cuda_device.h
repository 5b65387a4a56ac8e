// Host-side queries about CUDA devices that every layer (and every GPU test) may ask.
#pragma once

#include <cstddef>
#include <string>

namespace dsv4::cuda {

// Number of usable CUDA devices; 0 when there is no driver or no device (never throws).
int device_count();
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)" or an explanation of why none is available.
std::string device_summary();
// The reason GPU tests skip / the CLI refuses --device cuda on this machine ("" if a device exists).
std::string unavailable_reason();

// Copies between host and device memory, complete with respect to every stream when they return (throw
// kCudaError on failure). Not for use inside a forward.
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
// Host -> device on `stream` (cudaStream_t), ordered with the work queued there; `src` may be reused as soon as
// the call returns (pageable memory is staged by the driver before it returns).
void copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream);
// Device-to-device copy bandwidth in bytes/s (bytes read + written) of a vectorised copy kernel over
// 2 x `bytes` of device memory, median of `reps` timed runs after a warm-up (the HBM floor's divisor).
double measure_copy_bandwidth(size_t bytes = size_t{1} << 30, int reps = 10);
// Waits for all work on the device (throws kCudaError on a failed kernel).
void synchronize_device();
// Every byte of `bytes` of device memory ANDed with `keep`, synchronously: Engine::fill_state_random's random state
// made finite for the packed fp8 cache (keep 0x37: no NaN E4M3 code, scales <= 2^-72, bf16 / f32 bytes of small
// positive values). kv_fp8.cu.
void and_bytes(void* data, size_t bytes, unsigned char keep);
// Free and total memory of the current device (cudaMemGetInfo).
void memory_info(size_t* free_bytes, size_t* total_bytes);

}  // namespace dsv4::cuda
