// Kernel launches through cudaLaunchKernelEx, so programmatic dependent launch (PDL) can be switched on.
//
// Every dsv4 kernel starts with pdl_wait() (griddepcontrol.wait: a no-op unless the launch allowed
// overlap) before reading what the previous kernel wrote or writing anything. pdl_wait() then at once lets
// the next kernel launch (griddepcontrol.launch_dependents): once every block of this grid has passed its
// wait, the next grid's blocks take the SM slots this grid's finishing blocks free and run their prologue
// (the weight-streaming kernels issue their first weight loads before their own pdl_wait), so a kernel's
// tail overlaps the next one's ramp-up. Safe whatever the kernels do: the next grid's pdl_wait still waits
// for this grid's completion and memory flush, and at most one grid runs ahead (this grid's wait has
// returned, so the one before it is complete). PDL is on unless DSV4_PDL=0; under stream capture the
// attribute becomes a programmatic graph edge, so captured graphs overlap their launches too.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"

namespace dsv4::cuda {

bool pdl_enabled();  // true unless DSV4_PDL=0 (read once)
bool dry_run();      // the measuring pass: launches are skipped (cuda_ops.h, DryRunScope)

// Multiprocessors of the current device (cached per device; safe during stream capture).
int multiprocessor_count();

template <typename... KernelArgs, typename... Args>
Status launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                     Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return Status::ok();  // nothing to do (e.g. T = 0)
  if (dry_run()) return Status::ok();
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared_bytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  config.attrs = attribute;
  config.numAttrs = 1;
  DSV4_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(&config, kernel, static_cast<KernelArgs>(std::forward<Args>(args))...));
  return Status::ok();
}

// Raises Kernel's dynamic shared-memory limit to `bytes` (above the default 48 KB) once, at its first launch outside
// the measuring pass (which runs without a device).
template <auto Kernel>
void allow_dynamic_shared(int bytes, const char* what) {
  if (dry_run()) return;
  static const bool done = [&] {
    throw_if_error(cuda_status(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), what));
    return true;
  }();
  (void)done;
}

#if defined(__CUDACC__)
// The wait alone: for kernels that pick their own trigger point (mtp_norm.cu's persistent kernels trigger
// once their last loads are issued).
__device__ __forceinline__ void pdl_wait_only() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
#endif

}  // namespace dsv4::cuda
