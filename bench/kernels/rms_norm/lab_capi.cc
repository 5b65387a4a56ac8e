// The kernel lab's C entry points (libdsv4_rms_norm_lab.so, for the lab's Python scripts through ctypes): the
// three MTP norm calls of the public C API with a launch variant forced, and the launch each call resolved to.
// Not part of the library: the variants and launch descriptions are the lab's, production gets the heuristic.
//
//   dsv4_lab_set_rms_norm_launch(kernel, vecs_per_thread, rows_per_block, max_blocks, plain_loads, late_weights,
//                                trigger, blocks_per_sm)   as dsv4::cuda::RmsNormConfig; kernel 0 = the heuristic
//   dsv4_lab_fused_mtp_input_rms_norm / _eh / dsv4_lab_mtp_shared_head_rms_norm   as in include/dsv4/dsv4.h
//   dsv4_lab_last_launch()   the calling thread's last successful launch ("register vpt=4 ..."); "" when none
//   dsv4_lab_last_error()    the calling thread's last failure
// Return codes are dsv4_status values. No pointer checks beyond null: the lab passes torch device tensors.
#include <cuda_runtime_api.h>

#include <exception>
#include <mutex>
#include <string>

#include "backend/cuda/rms_norm.h"
#include "dsv4/dsv4.h"

namespace {

using dsv4::DType;
using dsv4::Status;
using dsv4::StatusCode;
using dsv4::cuda::RmsNormConfig;
using dsv4::cuda::RmsNormKernel;
using dsv4::cuda::RmsNormLaunch;
using dsv4::cuda::RmsNormTrigger;

std::mutex g_mu;
RmsNormConfig g_config;  // kernel kAuto and trigger kAuto: the heuristic
thread_local std::string g_last_error, g_last_launch;

// nullptr (the heuristic's launch) unless a variant or a trigger was forced.
const RmsNormConfig* forced(RmsNormConfig* storage) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_config.kernel == RmsNormKernel::kAuto && g_config.trigger == RmsNormTrigger::kAuto) return nullptr;
  *storage = g_config;
  return storage;
}

template <typename Body>
int guarded(Body&& body) {
  Status s;
  try {
    RmsNormConfig storage;
    RmsNormLaunch launch;
    s = body(forced(&storage), &launch);
    if (s.is_ok()) g_last_launch = launch.to_string();
  } catch (const std::exception& e) {
    s = {StatusCode::kInternal, e.what()};
  }
  g_last_error = s.is_ok() ? "" : s.message();
  return static_cast<int>(s.code());
}

DType dtype_of(int dtype) {
  return dtype == DSV4_DTYPE_F32 ? DType::F32 : dtype == DSV4_DTYPE_BF16 ? DType::BF16 : DType::F16;
}

}  // namespace

extern "C" {

DSV4_API int dsv4_lab_set_rms_norm_launch(int kernel, int vecs_per_thread, int rows_per_block, int max_blocks,
                                          int plain_loads, int late_weights, int trigger, int blocks_per_sm) {
  if (kernel < 0 || kernel > static_cast<int>(RmsNormKernel::kBulk) || trigger < 0 ||
      trigger > static_cast<int>(RmsNormTrigger::kBeforeWait)) {
    g_last_error = "dsv4_lab_set_rms_norm_launch: kernel and trigger must be 0..3";
    return DSV4_ERROR_INVALID_ARGUMENT;
  }
  std::lock_guard<std::mutex> lock(g_mu);
  g_config = {static_cast<RmsNormKernel>(kernel),
              vecs_per_thread,
              rows_per_block,
              max_blocks,
              plain_loads != 0,
              late_weights != 0,
              static_cast<RmsNormTrigger>(trigger),
              blocks_per_sm};
  return DSV4_OK;
}

DSV4_API int dsv4_lab_fused_mtp_input_rms_norm(const void* inputs_embeds, const int64_t* positions,
                                               const void* prev_hidden, const void* enorm_weight,
                                               const void* hnorm_weight, void* enorm_out, void* hnorm_out,
                                               int64_t num_tokens, int64_t hidden, int64_t hc_mult, float eps,
                                               int dtype, void* cuda_stream) {
  return guarded([&](const RmsNormConfig* config, RmsNormLaunch* launch) {
    return dsv4::cuda::fused_mtp_input_rms_norm(inputs_embeds, dsv4::RowPositions{positions, true}, prev_hidden,
                                                enorm_weight, hnorm_weight, enorm_out, hnorm_out, num_tokens, hidden,
                                                hc_mult, eps, dtype_of(dtype), static_cast<cudaStream_t>(cuda_stream),
                                                config, launch);
  });
}

DSV4_API int dsv4_lab_fused_mtp_input_rms_norm_eh(const void* inputs_embeds, const int64_t* positions,
                                                  const void* prev_hidden, const void* enorm_weight,
                                                  const void* hnorm_weight, void* out, int64_t num_tokens,
                                                  int64_t hidden, int64_t hc_mult, float eps, int dtype,
                                                  void* cuda_stream) {
  return guarded([&](const RmsNormConfig* config, RmsNormLaunch* launch) {
    return dsv4::cuda::fused_mtp_input_rms_norm_eh(
        inputs_embeds, dsv4::RowPositions{positions, true}, prev_hidden, enorm_weight, hnorm_weight, out, num_tokens,
        hidden, hc_mult, eps, dtype_of(dtype), static_cast<cudaStream_t>(cuda_stream), config, launch);
  });
}

DSV4_API int dsv4_lab_mtp_shared_head_rms_norm(const void* x, const void* weight, void* out, int64_t num_tokens,
                                               int64_t hidden, float eps, int dtype, void* cuda_stream) {
  return guarded([&](const RmsNormConfig* config, RmsNormLaunch* launch) {
    return dsv4::cuda::rms_norm_rows(x, weight, out, num_tokens, hidden, eps, dtype_of(dtype),
                                     static_cast<cudaStream_t>(cuda_stream), config, launch);
  });
}

DSV4_API const char* dsv4_lab_last_launch(void) { return g_last_launch.c_str(); }

DSV4_API const char* dsv4_lab_last_error(void) { return g_last_error.c_str(); }

}  // extern "C"
