// Validation and device dispatch for dsv4::ops.
#include "dsv4/ops/ops.h"

#include <cmath>
#include <utility>

#include "backend/cpu/cpu_ops.h"
#include "dsv4/ops/indexer_workspace.h"
#include "dsv4/ops/kv_fp4.h"
#include "dsv4/ops/op_timer.h"
#include "dsv4/ops/testing.h"
#ifndef DSV4_NO_CUDA
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/indexer.h"
#include "backend/cuda/op_timer.h"
#endif
#include "backend/philox.h"

namespace dsv4::ops {
namespace {

void require(const ExecContext& ctx, const Tensor& t, DType dtype, const char* op, const char* what) {
  DSV4_CHECK_ARG(t.data() != nullptr || t.numel() == 0, op, ": ", what, " is undefined");
  DSV4_CHECK_ARG(t.device() == ctx.device, op, ": ", what, " is on ", device_name(t.device()), " but the op runs on ",
                 device_name(ctx.device));
  DSV4_CHECK_ARG(t.dtype() == dtype, op, ": ", what, " must be ", dtype_name(dtype), ", got ", t.describe());
  DSV4_CHECK_ARG(t.is_contiguous(), op, ": ", what, " must be contiguous, got ", t.describe());
}

// Activations and weights: float32 on the CPU; bf16 (activations/weights) or f32 on CUDA.
void require_float(const ExecContext& ctx, const Tensor& t, const char* op, const char* what) {
  if (!ctx.is_cuda()) return require(ctx, t, DType::F32, op, what);
  DSV4_CHECK_ARG(t.dtype() == DType::F32 || t.dtype() == DType::BF16, op, ": ", what, " must be F32 or BF16, got ",
                 t.describe());
  require(ctx, t, t.dtype(), op, what);
}

// A weight operand: plain (the float checks above), or quantised (core/weight.h) — the CUDA ops only, with bf16
// activations. The CPU backend never holds quantised weights (its loader dequantises), so one reaching it is a bug.
void require_weight(const ExecContext& ctx, const Weight& w, const Tensor& x, const char* op, const char* what) {
  if (!w.quantized()) return require_float(ctx, w.plain(), op, what);
  DSV4_INTERNAL_CHECK(ctx.is_cuda(), op, ": ", what, " ", w.describe(),
                      " is quantised, but the CPU backend takes plain weights only");
  DSV4_CHECK_ARG(w.device() == ctx.device, op, ": ", what, " is on ", device_name(w.device()), " but the op runs on ",
                 device_name(ctx.device));
  DSV4_CHECK_ARG(x.dtype() == DType::BF16, op, ": quantised ", what, " ", w.describe(),
                 " takes bf16 activations, got x ", x.describe());
}

void require_meta(const ExecContext& ctx, const BatchMeta& m, const char* op) {
  for (const Tensor* t : {&m.ids, &m.pos, &m.slot, &m.start, &m.end}) {
    require(ctx, *t, DType::I32, op, "batch metadata");
    DSV4_CHECK_ARG(t->numel() >= m.num_tokens, op, ": batch metadata shorter than num_tokens");
  }
}

bool optional(const Tensor& t) { return t.data() != nullptr; }

// The storage a key array's readers take: plain rows of the activation dtype, or (CUDA) the packed fp8 rows of
// `format` (dsv4/ops/kv_fp8.h).
bool key_rows_ok(const ExecContext& ctx, const PagedRows& rows, DType activation, KvStorage format) {
  if (rows.packed()) return ctx.is_cuda() && rows.storage == format;
  return rows.dtype == activation;
}

thread_local ChoiceTap* g_choice_tap = nullptr;

}  // namespace

ChoiceTap* set_choice_tap(ChoiceTap* tap) { return std::exchange(g_choice_tap, tap); }

#ifndef DSV4_NO_CUDA
// A measuring pass (ExecContext::measuring) runs the CUDA backend with launches suppressed (its scratch
// allocations count) and skips the CPU backend, which takes no scratch.
#define DSV4_DISPATCH(name, ...)                \
  do {                                          \
    if (ctx.is_cuda()) {                        \
      cuda::DryRunScope dry_run(ctx.measuring); \
      cuda::name(ctx, __VA_ARGS__);             \
    } else if (!ctx.measuring) {                \
      cpu::name(__VA_ARGS__);                   \
    }                                           \
  } while (0)
#else
// CPU-only build (DSV4_CUDA=OFF): no CUDA kernels to dispatch to.
#define DSV4_DISPATCH(name, ...)                                                                   \
  do {                                                                                             \
    DSV4_CHECK(!ctx.is_cuda(), kCudaError, #name ": dsv4 was built without CUDA (DSV4_CUDA=OFF)"); \
    if (!ctx.measuring) cpu::name(__VA_ARGS__);                                                    \
  } while (0)
#endif

void embedding(ExecContext& ctx, Tensor out, Tensor table, Tensor ids) {
  require_float(ctx, out, "embedding", "out");
  require_float(ctx, table, "embedding", "table");
  require(ctx, ids, DType::I32, "embedding", "ids");
  DSV4_CHECK_ARG(out.ndim() == 2 && table.ndim() == 2 && out.size(1) == table.size(1) && ids.numel() == out.size(0),
                 "embedding: shapes out ", out.shape_string(), ", table ", table.shape_string(), ", ids ",
                 ids.shape_string());
  DSV4_DISPATCH(embedding, out, table, ids);
}

void broadcast_streams(ExecContext& ctx, Tensor out, Tensor x) {
  require_float(ctx, out, "broadcast_streams", "out");
  require_float(ctx, x, "broadcast_streams", "x");
  DSV4_CHECK_ARG(out.ndim() == 3 && x.ndim() == 2 && out.size(0) == x.size(0) && out.size(2) == x.size(1),
                 "broadcast_streams: out ", out.shape_string(), " vs x ", x.shape_string());
  DSV4_DISPATCH(broadcast_streams, out, x);
}

void linear(ExecContext& ctx, Tensor out, Tensor x, const Weight& w) {
  require_float(ctx, out, "linear", "out");
  require_float(ctx, x, "linear", "x");
  require_weight(ctx, w, x, "linear", "weight");
  DSV4_CHECK_ARG(x.ndim() == 2 && w.ndim() == 2 && out.ndim() == 2 && x.size(1) == w.size(1) &&
                     out.size(0) == x.size(0) && out.size(1) == w.size(0),
                 "linear: x ", x.shape_string(), " @ w ", w.shape_string(), "^T -> out ", out.shape_string());
  DSV4_DISPATCH(linear, out, x, w);
}

void linears(ExecContext& ctx, Tensor x, const std::vector<Projection>& projections) {
  require_float(ctx, x, "linears", "x");
  for (const Projection& p : projections) {
    require_float(ctx, p.out, "linears", "out");
    require_weight(ctx, p.w, x, "linears", "weight");
    DSV4_CHECK_ARG(x.ndim() == 2 && p.w.ndim() == 2 && p.out.ndim() == 2 && x.size(1) == p.w.size(1) &&
                       p.out.size(0) == x.size(0) && p.out.size(1) == p.w.size(0),
                   "linears: x ", x.shape_string(), " @ w ", p.w.shape_string(), "^T -> out ", p.out.shape_string());
  }
  DSV4_DISPATCH(linears, x, projections);
}

void grouped_linear(ExecContext& ctx, Tensor out, Tensor x, const Weight& w, int64_t groups) {
  require_float(ctx, out, "grouped_linear", "out");
  require_float(ctx, x, "grouped_linear", "x");
  require_weight(ctx, w, x, "grouped_linear", "weight");
  DSV4_CHECK_ARG(groups > 0 && x.ndim() == 2 && w.ndim() == 2 && x.size(1) % groups == 0 && w.size(0) % groups == 0 &&
                     w.size(1) == x.size(1) / groups && out.size(0) == x.size(0) && out.size(1) == w.size(0),
                 "grouped_linear: x ", x.shape_string(), ", w ", w.shape_string(), ", out ", out.shape_string(),
                 ", groups ", groups);
  DSV4_DISPATCH(grouped_linear, out, x, w, groups);
}

void rms_norm(ExecContext& ctx, Tensor out, Tensor x, Tensor w, float eps) {
  require_float(ctx, out, "rms_norm", "out");
  require_float(ctx, x, "rms_norm", "x");
  if (optional(w)) {
    require_float(ctx, w, "rms_norm", "weight");
    DSV4_CHECK_ARG(w.numel() == x.size(-1), "rms_norm: weight ", w.shape_string(), " vs x ", x.shape_string());
  }
  DSV4_CHECK_ARG(out.numel() == x.numel(), "rms_norm: out ", out.shape_string(), " vs x ", x.shape_string());
  DSV4_DISPATCH(rms_norm, out, x, w, eps);
}

namespace {

// The MTP norms' operands: activations, weights and outputs share the dtype of inputs_embeds.
void require_like(const ExecContext& ctx, const Tensor& t, DType dtype, const char* op, const char* what) {
  require_float(ctx, t, op, what);
  DSV4_CHECK_ARG(t.dtype() == dtype, op, ": ", what, " must be ", dtype_name(dtype), " like inputs_embeds, got ",
                 t.describe());
}

// Checks the inputs both MTP layouts share against hc; returns {T, H}.
std::pair<int64_t, int64_t> check_mtp_inputs(const ExecContext& ctx, const char* op, const Tensor& inputs_embeds,
                                             const Tensor& positions, const Tensor& prev_hidden, const Tensor& enorm_w,
                                             const Tensor& hnorm_w, int64_t hc, float eps) {
  DSV4_CHECK_ARG(inputs_embeds.ndim() == 2, op, ": inputs_embeds: expected [T, H], got ", inputs_embeds.shape_string());
  require_float(ctx, inputs_embeds, op, "inputs_embeds");
  const DType dtype = inputs_embeds.dtype();
  const int64_t T = inputs_embeds.size(0), H = inputs_embeds.size(1);
  DSV4_CHECK_ARG(H > 0, op, ": inputs_embeds: hidden size must be > 0");
  DSV4_CHECK_ARG(hc > 0, op, ": hc must be > 0");
  require(ctx, positions, DType::I32, op, "positions");
  check_shape(positions, {T}, "positions");
  if (prev_hidden.ndim() == 2) {
    check_shape(prev_hidden, {T, hc * H}, "prev_hidden");
  } else {
    check_shape(prev_hidden, {T, hc, H}, "prev_hidden");
  }
  require_like(ctx, prev_hidden, dtype, op, "prev_hidden");
  check_shape(enorm_w, {H}, "enorm_w");
  require_like(ctx, enorm_w, dtype, op, "enorm_w");
  check_shape(hnorm_w, {H}, "hnorm_w");
  require_like(ctx, hnorm_w, dtype, op, "hnorm_w");
  DSV4_CHECK_ARG(eps >= 0.f && std::isfinite(eps), op, ": eps must be finite and >= 0");
  return {T, H};
}

}  // namespace

void fused_mtp_input_rms_norm(ExecContext& ctx, Tensor enorm_out, Tensor hnorm_out, Tensor inputs_embeds,
                              Tensor positions, Tensor prev_hidden, Tensor enorm_w, Tensor hnorm_w, float eps) {
  constexpr const char* kOp = "fused_mtp_input_rms_norm";
  DSV4_CHECK_ARG(hnorm_out.ndim() == 3, kOp, ": hnorm_out: expected [T, hc, H], got ", hnorm_out.shape_string());
  const int64_t hc = hnorm_out.size(1);
  const auto [T, H] = check_mtp_inputs(ctx, kOp, inputs_embeds, positions, prev_hidden, enorm_w, hnorm_w, hc, eps);
  check_shape(enorm_out, {T, H}, "enorm_out");
  require_like(ctx, enorm_out, inputs_embeds.dtype(), kOp, "enorm_out");
  check_shape(hnorm_out, {T, hc, H}, "hnorm_out");
  require_like(ctx, hnorm_out, inputs_embeds.dtype(), kOp, "hnorm_out");
  DSV4_DISPATCH(fused_mtp_input_rms_norm, enorm_out, hnorm_out, inputs_embeds, positions, prev_hidden, enorm_w, hnorm_w,
                eps);
}

void fused_mtp_input_rms_norm_eh(ExecContext& ctx, Tensor out, Tensor inputs_embeds, Tensor positions,
                                 Tensor prev_hidden, Tensor enorm_w, Tensor hnorm_w, float eps) {
  constexpr const char* kOp = "fused_mtp_input_rms_norm_eh";
  DSV4_CHECK_ARG(out.ndim() == 3, kOp, ": out: expected [T, hc, 2H], got ", out.shape_string());
  const int64_t hc = out.size(1);
  const auto [T, H] = check_mtp_inputs(ctx, kOp, inputs_embeds, positions, prev_hidden, enorm_w, hnorm_w, hc, eps);
  check_shape(out, {T, hc, 2 * H}, "out");
  require_like(ctx, out, inputs_embeds.dtype(), kOp, "out");
  DSV4_DISPATCH(fused_mtp_input_rms_norm_eh, out, inputs_embeds, positions, prev_hidden, enorm_w, hnorm_w, eps);
}

void add(ExecContext& ctx, Tensor out, Tensor a, Tensor b) {
  require_float(ctx, out, "add", "out");
  require_float(ctx, a, "add", "a");
  require_float(ctx, b, "add", "b");
  DSV4_CHECK_ARG(out.numel() == a.numel() && a.numel() == b.numel(), "add: shape mismatch");
  DSV4_DISPATCH(add, out, a, b);
}

void copy(ExecContext& ctx, Tensor out, Tensor x) {
  require(ctx, out, x.dtype(), "copy", "out");
  require(ctx, x, x.dtype(), "copy", "x");
  DSV4_CHECK_ARG(out.numel() == x.numel(), "copy: out ", out.shape_string(), " vs x ", x.shape_string());
  DSV4_DISPATCH(copy, out, x);
}

void convert(ExecContext& ctx, Tensor out, Tensor x) {
  const bool floats = (out.dtype() == DType::F32 || out.dtype() == DType::BF16) &&
                      (x.dtype() == DType::F32 || x.dtype() == DType::BF16);
  const bool widen = out.dtype() == DType::I64 && x.dtype() == DType::I32;
  DSV4_CHECK_ARG(floats || widen, "convert: ", x.describe(), " -> ", out.describe(), " is not supported");
  require(ctx, out, out.dtype(), "convert", "out");
  require(ctx, x, x.dtype(), "convert", "x");
  DSV4_CHECK_ARG(out.numel() == x.numel(), "convert: out ", out.shape_string(), " vs x ", x.shape_string());
  DSV4_DISPATCH(convert, out, x);
}

void gather_rows(ExecContext& ctx, Tensor out, Tensor x, Tensor rows) {
  require_float(ctx, out, "gather_rows", "out");
  require_float(ctx, x, "gather_rows", "x");
  require(ctx, rows, DType::I32, "gather_rows", "rows");
  DSV4_CHECK_ARG(out.size(0) == rows.numel() &&
                     out.numel() / std::max<int64_t>(out.size(0), 1) == x.numel() / std::max<int64_t>(x.size(0), 1),
                 "gather_rows: out ", out.shape_string(), ", x ", x.shape_string(), ", rows ", rows.shape_string());
  DSV4_DISPATCH(gather_rows, out, x, rows);
}

void rope(ExecContext& ctx, Tensor x, Tensor pos, const RopeTable& table, bool inverse) {
  require_float(ctx, x, "rope", "x");
  require(ctx, pos, DType::I32, "rope", "positions");
  require(ctx, table.inv_freq, DType::F32, "rope", "inv_freq");
  DSV4_CHECK_ARG(x.ndim() == 3 && pos.numel() >= x.size(0) && table.rope_dim % 2 == 0 && table.rope_dim <= x.size(2) &&
                     table.inv_freq.numel() == table.rope_dim / 2,
                 "rope: x ", x.shape_string(), ", rope_dim ", table.rope_dim);
  DSV4_DISPATCH(rope, x, pos, table, inverse);
}

void rms_norm_rope(ExecContext& ctx, std::span<const NormRopeHeads> parts, float eps, Tensor pos,
                   const RopeTable& table) {
  require(ctx, pos, DType::I32, "rms_norm_rope", "positions");
  require(ctx, table.inv_freq, DType::F32, "rms_norm_rope", "inv_freq");
  for (const NormRopeHeads& p : parts) {
    const Tensor& x = p.x;
    require_float(ctx, x, "rms_norm_rope", "x");
    if (optional(p.w)) {
      require_float(ctx, p.w, "rms_norm_rope", "weight");
      DSV4_CHECK_ARG(p.w.numel() == x.size(-1), "rms_norm_rope: weight ", p.w.shape_string(), " vs x ",
                     x.shape_string());
    }
    DSV4_CHECK_ARG(x.ndim() == 3 && pos.numel() >= x.size(0) && table.rope_dim % 2 == 0 &&
                       table.rope_dim <= x.size(2) && table.inv_freq.numel() == table.rope_dim / 2,
                   "rms_norm_rope: x ", x.shape_string(), ", rope_dim ", table.rope_dim);
    DSV4_CHECK_ARG(x.size(0) == parts[0].x.size(0) && x.size(2) == parts[0].x.size(2),
                   "rms_norm_rope: parts of different tokens or widths: ", x.shape_string(), " vs ",
                   parts[0].x.shape_string());
  }
  DSV4_DISPATCH(rms_norm_rope, parts, eps, pos, table);
}

// An optional fused RMSNorm of hc_pre / hc_head: a float weight of H values and a positive epsilon.
static void require_hc_norm(ExecContext& ctx, const HcNorm& norm, int64_t H, const char* op) {
  if (norm.weight.data() == nullptr) return;
  require_float(ctx, norm.weight, op, "norm weight");
  DSV4_CHECK_ARG(norm.weight.numel() == H && norm.eps > 0, op, ": norm weight ", norm.weight.shape_string(),
                 " for rows of ", H, ", eps ", norm.eps);
}

void hc_pre(ExecContext& ctx, Tensor collapsed, Tensor post, Tensor comb, Tensor x, Tensor fn, Tensor base,
            Tensor scale, const MhcParams& params, const HcNorm& norm) {
  require_float(ctx, x, "hc_pre", "x");
  DSV4_CHECK_ARG(x.ndim() == 3, "hc_pre: x ", x.shape_string(), " must be [T, streams, H]");
  DSV4_CHECK_ARG(params.sinkhorn_iters >= 1 && params.norm_eps > 0 && params.hc_eps >= 0,
                 "hc_pre: Sinkhorn iterations ", params.sinkhorn_iters, ", eps ", params.norm_eps, ", hc_eps ",
                 params.hc_eps);
  const int64_t n = x.size(1);
  require_float(ctx, collapsed, "hc_pre", "collapsed");
  for (const Tensor* t : {&post, &comb, &fn, &base, &scale}) require(ctx, *t, DType::F32, "hc_pre", "mHC tensor");
  DSV4_CHECK_ARG(x.ndim() == 3 && x.size(1) == n && fn.size(0) == (2 + n) * n && fn.size(1) == n * x.size(2) &&
                     base.numel() == (2 + n) * n && scale.numel() == 3 && post.numel() == x.size(0) * n &&
                     comb.numel() == x.size(0) * n * n && collapsed.numel() == x.size(0) * x.size(2),
                 "hc_pre: x ", x.shape_string(), ", fn ", fn.shape_string());
  require_hc_norm(ctx, norm, x.size(2), "hc_pre");
  DSV4_DISPATCH(hc_pre, collapsed, post, comb, x, fn, base, scale, params, norm);
}

void hc_post(ExecContext& ctx, Tensor out, Tensor y, Tensor x, Tensor post, Tensor comb) {
  require_float(ctx, out, "hc_post", "out");
  require_float(ctx, y, "hc_post", "y");
  require_float(ctx, x, "hc_post", "x");
  require(ctx, post, DType::F32, "hc_post", "post");
  require(ctx, comb, DType::F32, "hc_post", "comb");
  DSV4_CHECK_ARG(out.data() != x.data(), "hc_post: out must not alias x");
  DSV4_CHECK_ARG(x.ndim() == 3 && out.numel() == x.numel() && y.numel() == x.size(0) * x.size(2) &&
                     post.numel() == x.size(0) * x.size(1) && comb.numel() == x.size(0) * x.size(1) * x.size(1),
                 "hc_post: x ", x.shape_string(), ", y ", y.shape_string(), ", post ", post.shape_string(), ", comb ",
                 comb.shape_string());
  DSV4_DISPATCH(hc_post, out, y, x, post, comb);
}

void hc_head(ExecContext& ctx, Tensor out, Tensor x, Tensor fn, Tensor base, Tensor scale, const MhcParams& params,
             const HcNorm& norm) {
  require_float(ctx, out, "hc_head", "out");
  require_float(ctx, x, "hc_head", "x");
  for (const Tensor* t : {&fn, &base, &scale}) require(ctx, *t, DType::F32, "hc_head", "hc_head tensor");
  DSV4_CHECK_ARG(x.ndim() == 3 && fn.ndim() == 2 && fn.size(0) == x.size(1) && fn.size(1) == x.size(1) * x.size(2) &&
                     base.numel() == x.size(1) && scale.numel() == 1 && out.numel() == x.size(0) * x.size(2),
                 "hc_head: x ", x.shape_string(), ", fn ", fn.shape_string(), ", base ", base.shape_string(),
                 ", scale ", scale.shape_string());
  require_hc_norm(ctx, norm, x.size(2), "hc_head");
  DSV4_DISPATCH(hc_head, out, x, fn, base, scale, params, norm);
}

void compressor_emit(ExecContext& ctx, CompressorState& state, Tensor kv, Tensor gate, Tensor ape, Tensor norm_w,
                     const RopeTable& rope, const BatchMeta& meta, float eps) {
  require_meta(ctx, meta, "compressor_emit");
  require(ctx, kv, DType::F32, "compressor_emit", "kv");
  require(ctx, gate, DType::F32, "compressor_emit", "gate");
  require(ctx, ape, DType::F32, "compressor_emit", "ape");
  require(ctx, norm_w, DType::F32, "compressor_emit", "norm weight");
  const int64_t width = (state.overlap ? 2 : 1) * state.dim;
  DSV4_CHECK_ARG(kv.ndim() == 2 && gate.ndim() == 2 && kv.size(0) >= meta.num_tokens &&
                     gate.size(0) >= meta.num_tokens && state.entries.width == state.dim,
                 "compressor_emit: kv ", kv.shape_string(), " and gate ", gate.shape_string(), " for ", meta.num_tokens,
                 " tokens");
  DSV4_CHECK_ARG(kv.size(1) == width && gate.size(1) == width && ape.size(0) == state.rate && ape.size(1) == width &&
                     norm_w.numel() == state.dim && state.raw_kv.width == width && state.raw_gate.width == width &&
                     state.raw_kv.dtype == DType::F32 && state.raw_gate.dtype == DType::F32,
                 "compressor_emit: kv ", kv.shape_string(), ", ape ", ape.shape_string(), " for width ", width);
  // CUDA stores a cache format as packed rows of that format (the state's layout), or none.
  const bool packed_match =
      (state.entry_format == KvRoundTrip::kFp8Blocks && state.entries.storage == KvStorage::kFp8Blocks) ||
      (state.entry_format == KvRoundTrip::kFp8Row && state.entries.storage == KvStorage::kFp8Row) ||
      (state.entry_format == KvRoundTrip::kFp4Rotated && state.entries.storage == KvStorage::kFp4Rotated);
  DSV4_CHECK(!ctx.is_cuda() || (state.entry_format == KvRoundTrip::kNone && !state.entries.packed()) || packed_match,
             kUnsupported, "compressor_emit on CUDA: the ", kv_round_trip_name(state.entry_format),
             " cache needs entries stored in that format (packed rows), got ",
             state.entries.packed() ? "other packed rows" : dtype_name(state.entries.dtype));
  DSV4_CHECK(ctx.is_cuda() || !state.entries.packed(), kUnsupported,
             "compressor_emit on the CPU: packed fp8 entries (the CPU keeps f32 rows)");
  DSV4_DISPATCH(compressor_emit, state, kv, gate, ape, norm_w, rope, meta, eps);
}

void activation_round_trip(ExecContext& ctx, Tensor x) { activation_round_trip(ctx, x, x); }

void activation_round_trip(ExecContext& ctx, Tensor out, Tensor x) {
  if (ctx.is_cuda()) {
    require_float(ctx, x, "activation_round_trip", "x");  // F32 or BF16 rows: the round trip is exact in both
  } else {
    require(ctx, x, DType::F32, "activation_round_trip", "x");
  }
  require(ctx, out, x.dtype(), "activation_round_trip", "out");
  DSV4_CHECK_ARG(x.ndim() >= 1 && out.shape() == x.shape() && x.is_contiguous() && out.is_contiguous(),
                 "activation_round_trip: x ", x.shape_string(), ", out ", out.shape_string(), " (contiguous rows)");
#ifndef DSV4_NO_CUDA
  if (ctx.is_cuda()) {
    cuda::DryRunScope dry_run(ctx.measuring);
    cuda::activation_round_trip(ctx, out, x);
    return;
  }
#endif
  DSV4_CHECK(!ctx.is_cuda(), kCudaError, "activation_round_trip: dsv4 was built without CUDA (DSV4_CUDA=OFF)");
  if (ctx.measuring) return;
  if (out.data() != x.data()) copy(ctx, out, x);
  cpu::kv_round_trip(out, 0, KvRoundTrip::kFp8Blocks128);
}

bool linear_reads_fp8_codes(ExecContext& ctx, Tensor x, const Weight& w, DType out_dtype) {
#ifndef DSV4_NO_CUDA
  if (ctx.is_cuda()) return cuda::linear_reads_fp8_codes(ctx, x, w, out_dtype);
#endif
  (void)x, (void)w, (void)out_dtype;
  return false;
}

void kv_round_trip(ExecContext& ctx, Tensor x, int64_t rope_dim, KvRoundTrip format) {
  require_float(ctx, x, "kv_round_trip", "x");
  DSV4_CHECK_ARG(x.ndim() >= 1 && rope_dim >= 0 && rope_dim <= x.size(-1), "kv_round_trip: rope_dim ", rope_dim,
                 " for rows of ", x.ndim() >= 1 ? x.size(-1) : 0);
  if (format == KvRoundTrip::kNone) return;
  DSV4_CHECK_ARG(format != KvRoundTrip::kFp4Rotated || kvfp4::width_ok(x.size(-1)),
                 "kv_round_trip: the fp4-rotated format takes rows a power of two wide (the Hadamard rotation), got ",
                 x.size(-1));
  DSV4_CHECK(!ctx.is_cuda() || format == KvRoundTrip::kFp8Blocks || format == KvRoundTrip::kFp8Row ||
                 format == KvRoundTrip::kFp4Rotated,
             kUnsupported, "kv_round_trip on CUDA: the ", kv_round_trip_name(format),
             " format runs on the CPU only (CUDA: the fp8 cache's formats)");
  DSV4_DISPATCH(kv_round_trip, x, rope_dim, format);
}

void compressor_store(ExecContext& ctx, CompressorState& state, Tensor kv, Tensor gate, const BatchMeta& meta) {
  require_meta(ctx, meta, "compressor_store");
  DSV4_CHECK_ARG(kv.size(1) == state.raw_kv.width && gate.size(1) == state.raw_gate.width,
                 "compressor_store: width mismatch");
  DSV4_CHECK_ARG(kv.size(0) >= meta.num_tokens && gate.size(0) >= meta.num_tokens, "compressor_store: kv ",
                 kv.shape_string(), " and gate ", gate.shape_string(), " for ", meta.num_tokens, " tokens");
  ring_stores(ctx, {{state.raw_kv, kv}, {state.raw_gate, gate}}, meta);
}

void indexer_topk(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale) {
  indexer_topk(ctx, out, q, w, keys, meta, softmax_scale, Tensor());
}

void indexer_topk(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale, Tensor workspace) {
  require_meta(ctx, meta, "indexer_topk");
  require(ctx, out, DType::I32, "indexer_topk", "out");
  require(ctx, q, DType::F32, "indexer_topk", "q");
  require(ctx, w, DType::F32, "indexer_topk", "weights");
  DSV4_CHECK_ARG(q.ndim() == 3 && q.size(2) == keys.dim && keys.entries.width == keys.dim && w.ndim() == 2 &&
                     w.size(1) == q.size(1) && out.ndim() == 2 && q.size(0) >= meta.num_tokens &&
                     w.size(0) >= meta.num_tokens && out.size(0) >= meta.num_tokens,
                 "indexer_topk: q ", q.shape_string(), ", weights ", w.shape_string(), ", out ", out.shape_string(),
                 " for ", meta.num_tokens, " tokens");
  if (optional(workspace)) require(ctx, workspace, workspace.dtype(), "indexer_topk", "workspace");
  DSV4_CHECK_ARG(!keys.entries.packed() || (ctx.is_cuda() && (keys.entries.storage == KvStorage::kFp8Row ||
                                                              keys.entries.storage == KvStorage::kFp4Rotated)),
                 "indexer_topk: packed keys must be fp8 or fp4 rows, on CUDA");
#ifndef DSV4_NO_CUDA
  if (ctx.is_cuda()) {
    cuda::DryRunScope dry_run(ctx.measuring);  // see DSV4_DISPATCH
    cuda::op_timing_begin(ctx, cuda::TimedOp::kIndexer);
    cuda::indexer_topk(ctx, out, q, w, keys, meta, softmax_scale, workspace);
    cuda::op_timing_end(ctx, cuda::TimedOp::kIndexer);
  } else if (!ctx.measuring) {
    cpu::indexer_topk(out, q, w, keys, meta, softmax_scale);  // no workspace needed
  }
#else
  DSV4_DISPATCH(indexer_topk, out, q, w, keys, meta, softmax_scale);
#endif
  if (g_choice_tap != nullptr && !ctx.measuring)
    g_choice_tap->after_indexer_topk(ctx, out, q, w, keys, meta, softmax_scale);
}

void start_op_timing() {
#ifndef DSV4_NO_CUDA
  cuda::op_timing_start();
#endif
}

OpTimes stop_op_timing() {
#ifndef DSV4_NO_CUDA
  return cuda::op_timing_stop();
#else
  return {};
#endif
}

int64_t indexer_workspace_bytes(const ExecContext& ctx, int64_t tokens, int64_t topk) {
#ifndef DSV4_NO_CUDA
  if (ctx.is_cuda()) return cuda::indexer_workspace_bytes(tokens, topk);
#endif
  (void)ctx, (void)tokens, (void)topk;
  return 0;
}

void attention(ExecContext& ctx, Tensor out, Tensor q, Tensor kv, const PagedRows& kv_ring,
               const CompressorState* compressed, Tensor selected, Tensor sinks, const BatchMeta& meta, int64_t window,
               float scale) {
  require_meta(ctx, meta, "attention");
  require_float(ctx, out, "attention", "out");
  require_float(ctx, q, "attention", "q");
  require_float(ctx, kv, "attention", "kv");
  require(ctx, sinks, DType::F32, "attention", "sinks");
  DSV4_CHECK_ARG(q.ndim() == 3 && kv.ndim() == 2 && kv.size(1) == q.size(2) && kv_ring.width == q.size(2) &&
                     key_rows_ok(ctx, kv_ring, kv.dtype(), KvStorage::kFp8Blocks) && sinks.numel() == q.size(1) &&
                     out.numel() == q.numel(),
                 "attention: q ", q.shape_string(), ", kv ", kv.shape_string(), ", ring rows of ", kv_ring.width, " ",
                 dtype_name(kv_ring.dtype));
  DSV4_CHECK_ARG(kv_ring.rows >= window, "attention: the kv ring (", kv_ring.rows, ") is smaller than the window (",
                 window, ")");
  DSV4_CHECK_ARG(q.size(0) >= meta.num_tokens && kv.size(0) >= meta.num_tokens, "attention: q ", q.shape_string(),
                 " and kv ", kv.shape_string(), " for ", meta.num_tokens, " tokens");
  DSV4_CHECK_ARG(compressed == nullptr || (compressed->dim == q.size(2) && compressed->entries.width == q.size(2) &&
                                           key_rows_ok(ctx, compressed->entries, kv.dtype(), KvStorage::kFp8Blocks)),
                 "attention: compressed entries of width ", compressed ? compressed->dim : 0, " for heads of ",
                 q.size(2));
  if (optional(selected)) {
    require(ctx, selected, DType::I32, "attention", "selected");
    DSV4_CHECK_ARG(selected.ndim() == 2 && selected.size(0) >= meta.num_tokens, "attention: selected ",
                   selected.shape_string(), " for ", meta.num_tokens, " tokens");
  }
#ifndef DSV4_NO_CUDA
  if (ctx.is_cuda()) cuda::op_timing_begin(ctx, cuda::TimedOp::kAttention);
#endif
  DSV4_DISPATCH(attention, out, q, kv, kv_ring, compressed, selected, sinks, meta, window, scale);
#ifndef DSV4_NO_CUDA
  if (ctx.is_cuda()) cuda::op_timing_end(ctx, cuda::TimedOp::kAttention);
#endif
}

void kv_ring_store(ExecContext& ctx, const PagedRows& kv_ring, Tensor kv, const BatchMeta& meta) {
  require_meta(ctx, meta, "kv_ring_store");
  DSV4_CHECK_ARG(kv.ndim() == 2 && kv.size(1) == kv_ring.width, "kv_ring_store: width mismatch");
  DSV4_CHECK_ARG(kv.size(0) >= meta.num_tokens, "kv_ring_store: kv ", kv.shape_string(), " for ", meta.num_tokens,
                 " tokens");
  ring_stores(ctx, {{kv_ring, kv}}, meta);
}

void ring_stores(ExecContext& ctx, const std::vector<RingStore>& stores, const BatchMeta& meta) {
  require_meta(ctx, meta, "ring_stores");
  for (size_t i = 0; i < stores.size(); ++i) {
    const RingStore& s = stores[i];
    DSV4_CHECK_ARG(s.ring.defined() && s.ring.rows > 0, "ring_stores: store ", i, " has no ring");
    DSV4_CHECK_ARG(s.rows.ndim() == 2 && s.rows.size(1) == s.ring.width, "ring_stores: store ", i, ": rows ",
                   s.rows.shape_string(), " for a ring of width ", s.ring.width);
    DSV4_CHECK_ARG(s.rows.size(0) >= meta.num_tokens, "ring_stores: store ", i, ": rows ", s.rows.shape_string(),
                   " for ", meta.num_tokens, " tokens");
    require_float(ctx, s.rows, "ring_stores", "rows");
    DSV4_CHECK_ARG(s.ring.dtype == DType::F32 ||
                       (ctx.is_cuda() && (s.ring.dtype == DType::BF16 || s.ring.storage == KvStorage::kFp8Blocks)),
                   "ring_stores: store ", i, ": a ", dtype_name(s.ring.dtype),
                   " ring (F32, or on CUDA BF16 or packed fp8 blocks)");
  }
  if (stores.empty()) return;
  DSV4_DISPATCH(ring_stores, stores, meta);
}

void moe_route(ExecContext& ctx, Tensor weights, Tensor indices, Tensor logits, Tensor bias, Tensor tid2eid, Tensor ids,
               const RouteParams& params) {
  require(ctx, weights, DType::F32, "moe_route", "weights");
  require(ctx, indices, DType::I32, "moe_route", "indices");
  require(ctx, logits, DType::F32, "moe_route", "logits");
  require(ctx, ids, DType::I32, "moe_route", "ids");
  if (optional(tid2eid)) require(ctx, tid2eid, DType::I32, "moe_route", "tid2eid");
  if (optional(bias)) require(ctx, bias, DType::F32, "moe_route", "bias");
  // E experts (the logits' columns), top-k (the weights' columns): every other operand must agree.
  DSV4_CHECK_ARG(logits.ndim() == 2 && weights.ndim() == 2 && indices.ndim() == 2 && weights.size(1) >= 1 &&
                     weights.size(1) <= logits.size(1) && indices.size(1) == weights.size(1) &&
                     weights.size(0) == logits.size(0) && indices.size(0) == logits.size(0) &&
                     ids.numel() >= logits.size(0),
                 "moe_route: logits ", logits.shape_string(), ", weights ", weights.shape_string(), ", indices ",
                 indices.shape_string());
  const int64_t E = logits.size(1), k = weights.size(1);
  DSV4_CHECK_ARG(!optional(bias) || bias.numel() == E, "moe_route: bias ", bias.shape_string(), " for ", E, " experts");
  DSV4_CHECK_ARG(!optional(tid2eid) || (tid2eid.ndim() == 2 && tid2eid.size(1) == k), "moe_route: tid2eid ",
                 tid2eid.shape_string(), " for top-", k);
  DSV4_CHECK_ARG(std::isfinite(params.routed_scaling_factor), "moe_route: routed scaling factor ",
                 params.routed_scaling_factor);
  DSV4_DISPATCH(moe_route, weights, indices, logits, bias, tid2eid, ids, params);
  if (g_choice_tap != nullptr && !ctx.measuring && !optional(tid2eid)) {
    g_choice_tap->after_moe_route(ctx, weights, indices, logits, bias, params);
  }
}

void moe_experts(ExecContext& ctx, Tensor out, Tensor x, Tensor indices, Tensor weights, const Weight& w1,
                 const Weight& w2, const Weight& w3, float limit, bool shared_expert, bool activation_quant) {
  require_float(ctx, out, "moe_experts", "out");
  require_float(ctx, x, "moe_experts", "x");
  require(ctx, indices, DType::I32, "moe_experts", "indices");
  require(ctx, weights, DType::F32, "moe_experts", "weights");
  for (const Weight* w : {&w1, &w2, &w3}) require_weight(ctx, *w, x, "moe_experts", "expert weight");
  DSV4_CHECK_ARG(w1.ndim() == 3 && w2.ndim() == 3 && w1.shape() == w3.shape() && w1.size(0) == w2.size(0) &&
                     x.ndim() == 2 && w1.size(2) == x.size(1) && w2.size(1) == x.size(1) && w2.size(2) == w1.size(1),
                 "moe_experts: w1 ", w1.shape_string(), ", w2 ", w2.shape_string(), ", w3 ", w3.shape_string(), ", x ",
                 x.shape_string());
  DSV4_CHECK_ARG(indices.ndim() == 2 && indices.size(0) == x.size(0) && weights.shape() == indices.shape() &&
                     out.numel() == x.numel(),
                 "moe_experts: indices ", indices.shape_string(), ", weights ", weights.shape_string(), ", out ",
                 out.shape_string(), " for x ", x.shape_string());
  DSV4_CHECK_ARG(!shared_expert || w1.size(0) >= 2,
                 "moe_experts: a shared expert needs w1 [E + 1, I, H] with E >= 1 routed experts, got w1 ",
                 w1.shape_string());
  if (activation_quant && !ctx.is_cuda()) require(ctx, x, DType::F32, "moe_experts", "x");
  DSV4_DISPATCH(moe_experts, out, x, indices, weights, w1, w2, w3, limit, shared_expert, activation_quant);
}

void swiglu(ExecContext& ctx, Tensor out, Tensor gate, Tensor up, float limit) {
  require_float(ctx, out, "swiglu", "out");
  require_float(ctx, gate, "swiglu", "gate");
  require_float(ctx, up, "swiglu", "up");
  DSV4_CHECK_ARG(out.numel() == gate.numel() && gate.numel() == up.numel(), "swiglu: shape mismatch");
  DSV4_DISPATCH(swiglu, out, gate, up, limit);
}

void fill_random(ExecContext& ctx, Tensor out, uint64_t seed, float mean, float std) {
  require_float(ctx, out, "fill_random", "out");
  DSV4_DISPATCH(fill_random, out, seed, mean, std);
}

void fill_expert_table(ExecContext& ctx, Tensor out, uint64_t seed, int64_t num_experts) {
  require(ctx, out, DType::I32, "fill_expert_table", "out");
  DSV4_CHECK_ARG(out.ndim() == 2 && num_experts > 0 && out.size(1) <= num_experts, "fill_expert_table: out ",
                 out.shape_string(), " needs k <= num_experts (", num_experts, ")");
  DSV4_DISPATCH(fill_expert_table, out, seed, num_experts);
}

void argmax(ExecContext& ctx, Tensor out, Tensor logits) {
  require(ctx, out, DType::I32, "argmax", "out");
  require(ctx, logits, DType::F32, "argmax", "logits");
  DSV4_CHECK_ARG(logits.ndim() == 2 && out.numel() == logits.size(0), "argmax: logits ", logits.shape_string());
  DSV4_DISPATCH(argmax, out, logits);
}

void sample_tokens(ExecContext& ctx, Tensor out, Tensor logits, Tensor params, Tensor info, Tensor nonfinite) {
  require(ctx, out, DType::I32, "sample_tokens", "out");
  require(ctx, logits, DType::F32, "sample_tokens", "logits");
  require(ctx, params, DType::U8, "sample_tokens", "params");
  DSV4_CHECK_ARG(logits.ndim() == 2 && logits.size(1) > 0 && logits.size(1) <= kSamplingMaxVocab &&
                     out.numel() == logits.size(0) &&
                     params.numel() == logits.size(0) * static_cast<int64_t>(sizeof(TokenSamplingParams)),
                 "sample_tokens: logits ", logits.shape_string(), ", out ", out.shape_string(), ", params ",
                 params.shape_string(), " (", sizeof(TokenSamplingParams), " bytes per row)");
  if (optional(info)) {
    require(ctx, info, DType::U8, "sample_tokens", "info");
    DSV4_CHECK_ARG(info.numel() == logits.size(0) * static_cast<int64_t>(sizeof(NucleusInfo)), "sample_tokens: info ",
                   info.shape_string(), " for ", logits.size(0), " rows of ", sizeof(NucleusInfo), " bytes");
  }
  if (optional(nonfinite)) {
    require(ctx, nonfinite, DType::I32, "sample_tokens", "nonfinite");
    DSV4_CHECK_ARG(nonfinite.numel() == logits.size(0), "sample_tokens: nonfinite ", nonfinite.shape_string(), " for ",
                   logits.size(0), " rows");
  }
  DSV4_DISPATCH(sample_tokens, out, logits, params, info, nonfinite);
}

void scatter_rows(ExecContext& ctx, Tensor out, Tensor x, Tensor rows) {
  require_float(ctx, out, "scatter_rows", "out");
  require_float(ctx, x, "scatter_rows", "x");
  require(ctx, rows, DType::I32, "scatter_rows", "rows");
  DSV4_CHECK_ARG(out.dtype() == x.dtype() && out.ndim() >= 1 && x.ndim() == out.ndim() && x.size(0) == rows.numel() &&
                     (x.size(0) == 0 || x.numel() / x.size(0) == out.numel() / std::max<int64_t>(out.size(0), 1)),
                 "scatter_rows: out ", out.describe(), ", x ", x.describe(), ", rows ", rows.shape_string());
  DSV4_DISPATCH(scatter_rows, out, x, rows);
}

void speculative_verify_ids(ExecContext& ctx, Tensor ids, Tensor drafts, int64_t K) {
  require(ctx, ids, DType::I32, "speculative_verify_ids", "ids");
  require(ctx, drafts, DType::I32, "speculative_verify_ids", "drafts");
  DSV4_CHECK_ARG(K >= 1 && ids.numel() % (K + 1) == 0 && drafts.numel() == ids.numel() / (K + 1) * K,
                 "speculative_verify_ids: ids ", ids.shape_string(), ", drafts ", drafts.shape_string(), ", K ", K);
  DSV4_DISPATCH(speculative_verify_ids, ids, drafts, K);
}

void speculative_accept(ExecContext& ctx, Tensor out, Tensor counts, Tensor target_logits, Tensor target_info,
                        Tensor target_tokens, Tensor draft_logits, Tensor draft_info, Tensor draft_tokens,
                        Tensor params) {
  require(ctx, out, DType::I32, "speculative_accept", "out");
  require(ctx, counts, DType::I32, "speculative_accept", "counts");
  require(ctx, target_logits, DType::F32, "speculative_accept", "target logits");
  require(ctx, target_info, DType::U8, "speculative_accept", "target info");
  require(ctx, target_tokens, DType::I32, "speculative_accept", "target tokens");
  require(ctx, draft_logits, DType::F32, "speculative_accept", "draft logits");
  require(ctx, draft_info, DType::U8, "speculative_accept", "draft info");
  require(ctx, draft_tokens, DType::I32, "speculative_accept", "draft tokens");
  require(ctx, params, DType::U8, "speculative_accept", "params");
  const int64_t b = counts.numel(), info = sizeof(NucleusInfo), prm = sizeof(TokenSamplingParams);
  DSV4_CHECK_ARG(b > 0 && out.numel() % b == 0 && out.numel() / b >= 2, "speculative_accept: out ", out.shape_string(),
                 " for ", b, " sequences");
  const int64_t K = out.numel() / b - 1;
  DSV4_CHECK_ARG(target_logits.ndim() == 2 && target_logits.size(0) == b * (K + 1) && draft_logits.ndim() == 2 &&
                     draft_logits.size(0) == b * K && draft_logits.size(1) == target_logits.size(1) &&
                     target_logits.size(1) <= kSamplingMaxVocab && target_tokens.numel() == b * (K + 1) &&
                     target_info.numel() == b * (K + 1) * info && draft_tokens.numel() == b * K &&
                     draft_info.numel() == b * K * info && params.numel() == b * prm,
                 "speculative_accept: shapes for ", b, " sequences of K = ", K, " drafts: target logits ",
                 target_logits.shape_string(), ", draft logits ", draft_logits.shape_string(), ", target tokens ",
                 target_tokens.shape_string(), ", draft tokens ", draft_tokens.shape_string());
  DSV4_DISPATCH(speculative_accept, out, counts, target_logits, target_info, target_tokens, draft_logits, draft_info,
                draft_tokens, params);
}

}  // namespace dsv4::ops

namespace dsv4 {

const char* kv_round_trip_name(KvRoundTrip f) {
  switch (f) {
    case KvRoundTrip::kNone:
      return "none";
    case KvRoundTrip::kBf16:
      return "bf16";
    case KvRoundTrip::kFp8Blocks:
      return "fp8 (e4m3 per 64, ue8m0 scales; RoPE part bf16)";
    case KvRoundTrip::kFp8Row:
      return "fp8 (e4m3, one fp32 scale per row)";
    case KvRoundTrip::kFp4Rotated:
      return "fp4 (Hadamard-rotated, e2m1 per 32, ue8m0 scales)";
    case KvRoundTrip::kFp8Blocks128:
      return "fp8 activations (e4m3 per 128, ue8m0 scales)";
  }
  return "?";
}

}  // namespace dsv4
