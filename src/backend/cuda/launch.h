// Kernel launches through cudaLaunchKernelEx, so programmatic dependent launch (PDL) can be switched on.
//
// Every dsv4 kernel starts with pdl_wait() (griddepcontrol.wait: a no-op unless the launch allowed
// overlap) before reading what the previous kernel wrote, and may call pdl_launch_dependents() once its
// inputs are consumed. PDL is on unless DSV4_PDL=0; under stream capture the attribute becomes a
// programmatic graph edge, so captured graphs overlap their launches too.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.h"

namespace dsv4::cuda {

bool pdl_enabled();  // true unless DSV4_PDL=0 (read once)

template <typename... KernelArgs, typename... Args>
Status launch_kernel(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes,
                     cudaStream_t stream, Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return Status::ok();  // nothing to do (e.g. T = 0)
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
  DSV4_CUDA_RETURN_IF_ERROR(
      cudaLaunchKernelEx(&config, kernel, static_cast<KernelArgs>(std::forward<Args>(args))...));
  return Status::ok();
}

#if defined(__CUDACC__)
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
#endif

}  // namespace dsv4::cuda
