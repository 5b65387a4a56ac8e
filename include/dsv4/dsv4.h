/* dsv4 C API: a stable, exception-free surface for callers outside C++ (Python through ctypes, tests).
 *
 * Every function returns 0 (DSV4_OK) on success, otherwise a dsv4_status code; dsv4_status_string(code)
 * names the code and dsv4_last_error() gives the detailed message of the calling thread's last failure.
 * Bad arguments (null pointers, bad sizes, an unknown dtype, host memory where device memory is needed)
 * return DSV4_ERROR_INVALID_ARGUMENT; they never crash.
 *
 * Kernel entry points take device pointers (e.g. torch's tensor.data_ptr()) to contiguous tensors, and a
 * cudaStream_t as `cuda_stream` (NULL = the legacy default stream). They are asynchronous and may be
 * captured into CUDA graphs. Weights share the activations' dtype; positions are int64.
 */
#ifndef DSV4_DSV4_H_
#define DSV4_DSV4_H_

#include <stdint.h>

#if defined(_WIN32)
#define DSV4_API __declspec(dllexport)
#else
#define DSV4_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Element types. The entry points take them as an int (any value may arrive from a foreign caller, and an
 * out-of-range value is an error, not undefined behaviour). */
typedef enum { DSV4_DTYPE_F32 = 0, DSV4_DTYPE_BF16 = 1, DSV4_DTYPE_F16 = 2 } dsv4_dtype;

/* Status codes (the values of dsv4::StatusCode). */
typedef enum {
  DSV4_OK = 0,
  DSV4_ERROR_INVALID_ARGUMENT = 1,
  DSV4_ERROR_NOT_FOUND = 2,
  DSV4_ERROR_PARSE = 3,
  DSV4_ERROR_IO = 4,
  DSV4_ERROR_UNSUPPORTED = 5,
  DSV4_ERROR_OUT_OF_MEMORY = 6,
  DSV4_ERROR_CUDA = 7,
  DSV4_ERROR_INTERNAL = 8
} dsv4_status;

/* Text of a status code ("ok", "invalid argument", ...); never NULL, also for unknown codes. */
DSV4_API const char* dsv4_status_string(int code);

/* Detailed message of the calling thread's last failed call ("" when the last call succeeded). */
DSV4_API const char* dsv4_last_error(void);

/* MTP prologue: enorm_out[t] = RMSNorm(positions[t] == 0 ? 0 : inputs_embeds[t]; enorm_weight) and
 * hnorm_out[t, s] = RMSNorm(prev_hidden[t, s]; hnorm_weight), RMSNorm(x; w) = x * rsqrt(mean(x^2) + eps) * w
 * in fp32. Shapes: inputs_embeds, enorm_out [T, H]; positions [T]; prev_hidden, hnorm_out [T, hc_mult, H];
 * weights [H]. num_tokens = 0 returns 0 at once. */
DSV4_API int dsv4_fused_mtp_input_rms_norm(const void* inputs_embeds, const int64_t* positions, const void* prev_hidden,
                                           const void* enorm_weight, const void* hnorm_weight, void* enorm_out,
                                           void* hnorm_out, int64_t num_tokens, int64_t hidden, int64_t hc_mult,
                                           float eps, int dtype, void* cuda_stream);

/* The same norms written as out [T, hc_mult, 2H]: out[t, s, :H] = hnorm(prev_hidden[t, s]) and
 * out[t, s, H:] = enorm(inputs_embeds[t]) (for every s), the input of the MTP's projection
 * out.view(T * hc_mult, 2H) @ [W_h | W_e]^T. */
DSV4_API int dsv4_fused_mtp_input_rms_norm_eh(const void* inputs_embeds, const int64_t* positions,
                                              const void* prev_hidden, const void* enorm_weight,
                                              const void* hnorm_weight, void* out, int64_t num_tokens, int64_t hidden,
                                              int64_t hc_mult, float eps, int dtype, void* cuda_stream);

/* Shared head: out[t] = RMSNorm(x[t]; weight); x, out [T, H], weight [H]. */
DSV4_API int dsv4_mtp_shared_head_rms_norm(const void* x, const void* weight, void* out, int64_t num_tokens,
                                           int64_t hidden, float eps, int dtype, void* cuda_stream);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // DSV4_DSV4_H_
