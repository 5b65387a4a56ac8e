// Placeholder bodies for CUDA ops whose kernels have not landed yet: each refuses clearly (kUnsupported)
// instead of silently computing nothing. Removed op by op as backend/cuda/*.cu kernels land.
#include "backend/cuda/cuda_ops.h"

namespace dsv4::cuda {
namespace {
[[noreturn]] void not_yet(const char* op) {
  fail(StatusCode::kUnsupported, "the CUDA backend has no kernel for '", op, "' yet; use --device cpu");
}
}  // namespace

void embedding(ExecContext&, Tensor, Tensor, Tensor) { not_yet("embedding"); }
void broadcast_streams(ExecContext&, Tensor, Tensor) { not_yet("broadcast_streams"); }
void linear(ExecContext&, Tensor, Tensor, Tensor) { not_yet("linear"); }
void grouped_linear(ExecContext&, Tensor, Tensor, Tensor, int64_t) { not_yet("grouped_linear"); }
void rms_norm(ExecContext&, Tensor, Tensor, Tensor, float) { not_yet("rms_norm"); }
void add(ExecContext&, Tensor, Tensor, Tensor) { not_yet("add"); }
void copy(ExecContext&, Tensor, Tensor) { not_yet("copy"); }
void gather_rows(ExecContext&, Tensor, Tensor, Tensor) { not_yet("gather_rows"); }
void swiglu(ExecContext&, Tensor, Tensor, Tensor, float) { not_yet("swiglu"); }
void argmax(ExecContext&, Tensor, Tensor) { not_yet("argmax"); }
void rope(ExecContext&, Tensor, Tensor, const RopeTable&, bool) { not_yet("rope"); }
void hc_pre(ExecContext&, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, const ModelConfig&) {
  not_yet("hc_pre");
}
void hc_post(ExecContext&, Tensor, Tensor, Tensor, Tensor, Tensor) { not_yet("hc_post"); }
void hc_head(ExecContext&, Tensor, Tensor, Tensor, Tensor, Tensor, const ModelConfig&) { not_yet("hc_head"); }
void compressor_emit(ExecContext&, CompressorState&, Tensor, Tensor, Tensor, Tensor, const RopeTable&,
                     const BatchMeta&, float) {
  not_yet("compressor_emit");
}
void compressor_store(ExecContext&, CompressorState&, Tensor, Tensor, const BatchMeta&) { not_yet("compressor_store"); }
void indexer_topk(ExecContext&, Tensor, Tensor, Tensor, const CompressorState&, const BatchMeta&, float) {
  not_yet("indexer_topk");
}
void attention(ExecContext&, Tensor, Tensor, Tensor, Tensor, const CompressorState*, Tensor, Tensor,
               const BatchMeta&, int64_t, float) {
  not_yet("attention");
}
void kv_ring_store(ExecContext&, Tensor, Tensor, const BatchMeta&) { not_yet("kv_ring_store"); }
void moe_route(ExecContext&, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, const ModelConfig&) {
  not_yet("moe_route");
}
void moe_experts(ExecContext&, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, float) {
  not_yet("moe_experts");
}

}  // namespace dsv4::cuda
