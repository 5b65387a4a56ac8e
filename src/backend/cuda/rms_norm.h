// The RMSNorm family's row kernels: every RMSNorm whose rows are too long for the one-pass small-row kernel
// (rms_norm.cu), and the MTP draft layer's fused norms, which are RMSNorms over two kinds of rows.
//
//   rms_norm_rows:               out[r] = RMSNorm(x[r]; w)                                       (r < rows)
//   fused_mtp_input_rms_norm:    enorm_out[t]   = RMSNorm(positions[t] == 0 ? 0 : inputs_embeds[t]; enorm_w)
//                                hnorm_out[t,s] = RMSNorm(prev_hidden[t,s]; hnorm_w)           (s < hc)
//   fused_mtp_input_rms_norm_eh: the same values written as out[T, hc, 2H] with
//                                out[t,s,:H] = hnorm(prev[t,s]) and out[t,s,H:] = enorm(e[t]), so that
//                                out.view(T*hc, 2H) @ [W_h | W_e]^T is the MTP's single input projection.
//
// RMSNorm(x; w) = x * rsqrt(mean(x^2) + eps) * w, in fp32, stored in the activation dtype (F32, BF16 or
// F16; weights share it). All pointers are device pointers; rows are contiguous. Zero rows launch
// nothing. Every launcher validates its arguments and returns a Status (never throws): the C API calls
// them directly.
#pragma once

#ifndef DSV4_NO_CUDA
#include <cuda_runtime_api.h>
#endif

#include <cstdint>
#include <string>

#include "backend/row_positions.h"
#include "dsv4/core/dtype.h"
#include "dsv4/core/status.h"

namespace dsv4::cuda {

// Kernels behind the launchers (see rms_norm.cu):
//   kRegister  rows held in registers, one block per (group of) row(s); the launch shape adapts it from
//              latency-bound small T to bandwidth-bound large T.
//   kScalar    two passes with scalar accesses: any H and any alignment (odd H).
//   kBulk      rows loaded into shared memory by bulk asynchronous copies (TMA, one instruction per row):
//              by default one block per row, the heuristic's choice up to 4 rows per SM; the lab's resident
//              grid streams several rows per block through a shared-memory ring instead.
enum class RmsNormKernel { kAuto = 0, kRegister = 1, kScalar = 2, kBulk = 3 };

// Where a kernel launched with programmatic dependent launch lets the next grid launch (nothing without
// PDL): after its last loads are issued, right after its griddepcontrol.wait, or before it (the next grid
// is then scheduled as soon as this one is, and waits on the device).
enum class RmsNormTrigger { kAuto = 0, kAfterLoads = 1, kAfterWait = 2, kBeforeWait = 3 };

// Launch shape. Production callers pass nullptr and get the heuristic; the kernel lab and the tests pass
// explicit values to sweep / cover every variant. 0 means "choose" everywhere.
struct RmsNormConfig {
  RmsNormKernel kernel = RmsNormKernel::kAuto;
  int vecs_per_thread = 0;    // 16-byte vectors per thread per row: 1, 2, 4 or 8
  int rows_per_block = 0;     // rows a block normalises together: 1 or 2 (2 only with <= 4 vectors);
                              // kBulk: 1..32 consecutive rows per block (one weight load)
  int max_blocks = 0;         // grid: -1 = one block per tile, -2 = one resident wave, > 0 = at most this
                              // many blocks; capped grids loop over tiles (kBulk: -1 is its default,
                              // > 0 caps a one-row-per-block grid)
  bool plain_loads = false;   // plain loads instead of read-only / no-L1 / L2-prefetch ones (with
                              // vecs_per_thread 0 the heuristic decides; it picks them at large T)
  bool late_weights = false;  // read the weights after the reduction (fewer registers, more resident
                              // rows); instances exist for rows_per_block 1 without plain loads; kBulk:
                              // also reads the row from shared memory twice instead of holding it
                              // (4 or 8 vectors per thread, at most 128 threads)
  RmsNormTrigger trigger = RmsNormTrigger::kAuto;  // with PDL (default): kAfterLoads
  int blocks_per_sm = 0;  // kBulk: 0 = one block per row; 1..4 = a resident grid of that many blocks per
                          // SM, each streaming its rows through a shared-memory ring
};

// What a launch resolved to (for logs and the kernel lab's JSON).
struct RmsNormLaunch {
  RmsNormKernel kernel = RmsNormKernel::kAuto;  // kAuto: nothing launched (T = 0)
  int vecs_per_thread = 0;
  int rows_per_block = 0;
  bool plain_loads = false;
  bool late_weights = false;
  RmsNormTrigger trigger = RmsNormTrigger::kAuto;  // kAuto: launched without PDL
  int stages = 0;                                  // kBulk: rows in flight per block
  int threads = 0;
  int64_t blocks = 0;
  std::string to_string() const;
};

#ifndef DSV4_NO_CUDA
// out [rows, hidden] = RMSNorm(x [rows, hidden]; weight [hidden]); out may be x.
Status rms_norm_rows(const void* x, const void* weight, void* out, int64_t rows, int64_t hidden, float eps, DType dtype,
                     cudaStream_t stream, const RmsNormConfig* config = nullptr, RmsNormLaunch* launched = nullptr);

Status fused_mtp_input_rms_norm(const void* inputs_embeds, RowPositions positions, const void* prev_hidden,
                                const void* enorm_weight, const void* hnorm_weight, void* enorm_out, void* hnorm_out,
                                int64_t num_tokens, int64_t hidden, int64_t hc_mult, float eps, DType dtype,
                                cudaStream_t stream, const RmsNormConfig* config = nullptr,
                                RmsNormLaunch* launched = nullptr);

// out: [num_tokens, hc_mult, 2 * hidden].
Status fused_mtp_input_rms_norm_eh(const void* inputs_embeds, RowPositions positions, const void* prev_hidden,
                                   const void* enorm_weight, const void* hnorm_weight, void* out, int64_t num_tokens,
                                   int64_t hidden, int64_t hc_mult, float eps, DType dtype, cudaStream_t stream,
                                   const RmsNormConfig* config = nullptr, RmsNormLaunch* launched = nullptr);

#endif  // !DSV4_NO_CUDA

}  // namespace dsv4::cuda
