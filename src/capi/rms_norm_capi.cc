// C API of the MTP norm kernels (include/dsv4/dsv4.h): argument checks, then the RMSNorm family's CUDA launchers
// (backend/cuda/rms_norm.h), which get the heuristic's launch shape.
// No exception crosses this boundary; every failure becomes a status code plus a thread-local message.
// A CPU-only build (DSV4_CUDA=OFF) checks the arguments the same way, then answers DSV4_ERROR_CUDA ("built
// without CUDA") for any call that has work to do.
#ifndef DSV4_NO_CUDA
#include <cuda_runtime_api.h>
#endif

#include <cmath>
#include <exception>
#include <initializer_list>
#include <string>
#include <utility>

#include "backend/cuda/rms_norm.h"
#include "dsv4/dsv4.h"

namespace {

using dsv4::DType;
using dsv4::Status;
using dsv4::StatusCode;

thread_local std::string g_last_error;

int finish(const Status& s) {
  if (s.is_ok()) {
    g_last_error.clear();
    return DSV4_OK;
  }
  g_last_error = s.message();
  return static_cast<int>(s.code());
}

Status to_dtype(int dtype, DType* out) {
  switch (dtype) {
    case DSV4_DTYPE_F32:
      *out = DType::F32;
      return Status::ok();
    case DSV4_DTYPE_BF16:
      *out = DType::BF16;
      return Status::ok();
    case DSV4_DTYPE_F16:
      *out = DType::F16;
      return Status::ok();
    default:
      return {
          StatusCode::kInvalidArgument,
          dsv4::str_cat("dtype must be DSV4_DTYPE_F32 (0), DSV4_DTYPE_BF16 (1) or DSV4_DTYPE_F16 (2), got ", dtype)};
  }
}

// Size checks that need no device, done before the pointer checks so that a bad size is reported as such
// (the launchers repeat them, with the overflow checks).
Status check_sizes(const char* what, int64_t num_tokens, int64_t hidden, int64_t hc_mult) {
  if (num_tokens < 0 || hidden <= 0 || hc_mult <= 0) {
    return {StatusCode::kInvalidArgument, dsv4::str_cat(what, ": bad sizes (num_tokens=", num_tokens,
                                                        ", hidden=", hidden, ", hc_mult=", hc_mult, ")")};
  }
  return Status::ok();
}

using NamedPointer = std::pair<const char*, const void*>;

#ifndef DSV4_NO_CUDA

// Host memory passed where device memory is needed would fault inside the kernel and poison the CUDA
// context, so pointers are checked first. The check is skipped while the stream is being captured into a
// graph (where such queries are best avoided and the caller's pointers were checked on its eager warm-up).
Status check_device_pointers(const char* what, cudaStream_t stream, std::initializer_list<NamedPointer> ptrs) {
  for (const auto& [name, ptr] : ptrs) {
    if (ptr == nullptr) return {StatusCode::kInvalidArgument, dsv4::str_cat(what, ": ", name, " is null")};
  }
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
    cudaGetLastError();
    return Status::ok();  // the launch itself reports a bad stream
  }
  if (capture != cudaStreamCaptureStatusNone) return Status::ok();
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    const cudaError_t err = cudaGetLastError();
    return {StatusCode::kCudaError, dsv4::str_cat(what, ": no usable CUDA device (", cudaGetErrorString(err), ")")};
  }
  for (const auto& [name, ptr] : ptrs) {
    cudaPointerAttributes attr{};
    if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
      cudaGetLastError();
      return {StatusCode::kInvalidArgument, dsv4::str_cat(what, ": ", name, " is not a CUDA pointer")};
    }
    const bool device_memory = attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged;
    const bool mapped_host = attr.type == cudaMemoryTypeHost && attr.devicePointer != nullptr;
    if (!device_memory && !mapped_host) {
      return {StatusCode::kInvalidArgument, dsv4::str_cat(what, ": ", name, " is not device memory (host pointer?)")};
    }
    if (attr.type == cudaMemoryTypeDevice && attr.device != device) {
      return {StatusCode::kInvalidArgument,
              dsv4::str_cat(what, ": ", name, " lives on device ", attr.device, ", the current device is ", device)};
    }
  }
  return Status::ok();
}
#else
using cudaStream_t = void*;

Status check_device_pointers(const char* what, cudaStream_t, std::initializer_list<NamedPointer> ptrs) {
  for (const auto& [name, ptr] : ptrs) {
    if (ptr == nullptr) return {StatusCode::kInvalidArgument, dsv4::str_cat(what, ": ", name, " is null")};
  }
  return {StatusCode::kCudaError, dsv4::str_cat(what, ": dsv4 was built without CUDA (DSV4_CUDA=OFF)")};
}

// What the launchers check besides the pointers, for the calls a CPU-only build answers itself (T = 0).
Status check_launch_sizes(const char* what, int64_t hidden, int64_t hc_mult, float eps) {
  if (!(eps >= 0.f) || std::isinf(eps)) {
    return {StatusCode::kInvalidArgument, dsv4::str_cat(what, ": eps must be finite and >= 0, got ", eps)};
  }
  int64_t row_elems = 0, bytes = 0;
  if (__builtin_mul_overflow(hc_mult + 1, 2 * hidden, &row_elems) ||
      __builtin_mul_overflow(row_elems, int64_t{8}, &bytes)) {
    return {StatusCode::kInvalidArgument,
            dsv4::str_cat(what, ": sizes overflow int64 (hidden=", hidden, ", hc_mult=", hc_mult, ")")};
  }
  return Status::ok();
}
#endif

// Runs `body` and turns anything it throws into a status (bad_alloc in a message, say).
template <typename Body>
int guarded(Body&& body) {
  try {
    return finish(body());
  } catch (const dsv4::Error& e) {
    return finish(e.status());
  } catch (const std::exception& e) {
    return finish({StatusCode::kInternal, e.what()});
  } catch (...) {
    return finish({StatusCode::kInternal, "unknown exception"});
  }
}

}  // namespace

extern "C" {

const char* dsv4_status_string(int code) {
  if (code < 0 || code > static_cast<int>(StatusCode::kInternal)) return "unknown dsv4 status code";
  return dsv4::status_code_name(static_cast<StatusCode>(code));
}

const char* dsv4_last_error(void) { return g_last_error.c_str(); }

int dsv4_fused_mtp_input_rms_norm(const void* inputs_embeds, const int64_t* positions, const void* prev_hidden,
                                  const void* enorm_weight, const void* hnorm_weight, void* enorm_out, void* hnorm_out,
                                  int64_t num_tokens, int64_t hidden, int64_t hc_mult, float eps, int dtype,
                                  void* cuda_stream) {
  return guarded([&]() -> Status {
    constexpr const char* kWhat = "dsv4_fused_mtp_input_rms_norm";
    DType dt;
    if (Status s = to_dtype(dtype, &dt); !s) return s;
    if (Status s = check_sizes(kWhat, num_tokens, hidden, hc_mult); !s) return s;
    auto stream = static_cast<cudaStream_t>(cuda_stream);
    if (num_tokens != 0) {  // T = 0 (with valid sizes) touches no memory: pointers may be anything
      if (Status s = check_device_pointers(kWhat, stream,
                                           {{"inputs_embeds", inputs_embeds},
                                            {"positions", positions},
                                            {"prev_hidden", prev_hidden},
                                            {"enorm_weight", enorm_weight},
                                            {"hnorm_weight", hnorm_weight},
                                            {"enorm_out", enorm_out},
                                            {"hnorm_out", hnorm_out}});
          !s) {
        return s;
      }
    }
#ifdef DSV4_NO_CUDA
    return check_launch_sizes(kWhat, hidden, hc_mult, eps);  // num_tokens = 0: nothing to launch
#else
    return dsv4::cuda::fused_mtp_input_rms_norm(inputs_embeds, dsv4::RowPositions{positions, true}, prev_hidden,
                                                enorm_weight, hnorm_weight, enorm_out, hnorm_out, num_tokens, hidden,
                                                hc_mult, eps, dt, stream);
#endif
  });
}

int dsv4_fused_mtp_input_rms_norm_eh(const void* inputs_embeds, const int64_t* positions, const void* prev_hidden,
                                     const void* enorm_weight, const void* hnorm_weight, void* out, int64_t num_tokens,
                                     int64_t hidden, int64_t hc_mult, float eps, int dtype, void* cuda_stream) {
  return guarded([&]() -> Status {
    constexpr const char* kWhat = "dsv4_fused_mtp_input_rms_norm_eh";
    DType dt;
    if (Status s = to_dtype(dtype, &dt); !s) return s;
    if (Status s = check_sizes(kWhat, num_tokens, hidden, hc_mult); !s) return s;
    auto stream = static_cast<cudaStream_t>(cuda_stream);
    if (num_tokens != 0) {
      if (Status s = check_device_pointers(kWhat, stream,
                                           {{"inputs_embeds", inputs_embeds},
                                            {"positions", positions},
                                            {"prev_hidden", prev_hidden},
                                            {"enorm_weight", enorm_weight},
                                            {"hnorm_weight", hnorm_weight},
                                            {"out", out}});
          !s) {
        return s;
      }
    }
#ifdef DSV4_NO_CUDA
    return check_launch_sizes(kWhat, hidden, hc_mult, eps);  // num_tokens = 0: nothing to launch
#else
    return dsv4::cuda::fused_mtp_input_rms_norm_eh(inputs_embeds, dsv4::RowPositions{positions, true}, prev_hidden,
                                                   enorm_weight, hnorm_weight, out, num_tokens, hidden, hc_mult, eps,
                                                   dt, stream);
#endif
  });
}

int dsv4_mtp_shared_head_rms_norm(const void* x, const void* weight, void* out, int64_t num_tokens, int64_t hidden,
                                  float eps, int dtype, void* cuda_stream) {
  return guarded([&]() -> Status {
    constexpr const char* kWhat = "dsv4_mtp_shared_head_rms_norm";
    DType dt;
    if (Status s = to_dtype(dtype, &dt); !s) return s;
    if (Status s = check_sizes(kWhat, num_tokens, hidden, 1); !s) return s;
    auto stream = static_cast<cudaStream_t>(cuda_stream);
    if (num_tokens != 0) {
      if (Status s = check_device_pointers(kWhat, stream, {{"x", x}, {"weight", weight}, {"out", out}}); !s) {
        return s;
      }
    }
#ifdef DSV4_NO_CUDA
    return check_launch_sizes(kWhat, hidden, 1, eps);  // num_tokens = 0: nothing to launch
#else
    return dsv4::cuda::rms_norm_rows(x, weight, out, num_tokens, hidden, eps, dt, stream);
#endif
  });
}

}  // extern "C"
