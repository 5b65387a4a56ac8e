// Model weights: the checkpoint inventory a config implies, name normalisation between the official
// DeepSeek naming and transformers' saved naming, and loading into one allocation on the target device.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "dsv4/core/arena.h"
#include "dsv4/core/weight.h"
#include "dsv4/io/config.h"
#include "dsv4/io/quantization.h"
#include "dsv4/io/safetensors.h"

namespace dsv4 {

// How a tensor is stored on a device (and initialised by make-tiny).
enum class WeightKind {
  kMatrix,     // projection / embedding: bf16 on CUDA, f32 on CPU
  kNorm,       // RMSNorm weight (f32)
  kPrecision,  // kept in f32 everywhere: mHC parameters, sinks, ape, router bias
  kIndex,      // integer table (tid2eid): i32 on every device
};

// Which matrices a quantised checkpoint stores quantised (DeepSeek's inference code and released inventories):
// the dense projections (attention wq_a, wq_b, wkv, wo_a, wo_b, the indexer's wq_b, the shared expert, the MTP's
// e_proj / h_proj) in FP8, the routed experts as `expert_dtype` says; everything else stays plain.
enum class QuantGroup : uint8_t { kNone, kDense, kRoutedExpert };

struct TensorSpec {
  std::string name;  // official DeepSeek hub name
  std::vector<int64_t> shape;
  WeightKind kind;
  QuantGroup group = QuantGroup::kNone;
};

// The storage format the config implies for a tensor (kPlain for every QuantGroup::kNone tensor).
WeightFormat checkpoint_format(const QuantizationConfig& q, const TensorSpec& spec);
// The official name of a quantised weight's scale: "<prefix>.weight" -> "<prefix>.scale".
std::string scale_tensor_name(const std::string& weight_name);

// Every tensor a checkpoint for `cfg` must hold (official names), with the MTP layer when asked.
std::vector<TensorSpec> checkpoint_inventory(const ModelConfig& cfg, bool with_mtp);

// Maps a checkpoint tensor name to the official name: strips transformers' "model." prefix and maps
// embed_tokens / lm_head / hc_head.hc_* / the attention's saved "attn.norm" (its kv_norm).
std::string canonical_tensor_name(const std::string& name);

// Storage dtype of a tensor of this kind on `device`.
DType storage_dtype(WeightKind kind, Device device);

// A validated view of a checkpoint's weights for a config: every tensor of the inventory checked by name,
// shape, dtype and storage format (quantised weights: their F8_E4M3 / packed-FP4 data and `.scale` siblings),
// every problem reported by name in one kInvalidArgument error. load_weights and `dsv4 quantize` read
// through it.
class WeightReader {
 public:
  // with MTP when `load_mtp`, the config has an MTP layer and the checkpoint holds mtp.0.* tensors.
  WeightReader(const Checkpoint& ckpt, const ModelConfig& cfg, bool load_mtp);

  const Checkpoint& checkpoint() const { return ckpt_; }
  bool with_mtp() const { return with_mtp_; }
  const std::vector<TensorSpec>& specs() const { return specs_; }
  const TensorSpec& spec(const std::string& name) const;
  WeightFormat format(const std::string& name) const;  // as stored (the config's format, validated)
  Tensor raw(const std::string& name) const;           // the checkpoint's tensor (its own dtype and shape)
  Tensor raw_scale(const std::string& name) const;     // the `.scale` sibling of a quantised weight
  size_t stored_bytes(const std::string& name) const;  // bytes on disk: the weight plus its scale
  // The weight's values as f32 in its spec shape, dequantised exactly when it is stored quantised.
  // Not for kIndex tensors (integer tables: read raw()).
  void read_f32(const std::string& name, std::vector<float>* out) const;
  void read_f32(const std::string& name, float* out, size_t n) const;  // n: the tensor's value count

 private:
  const Checkpoint& ckpt_;
  bool with_mtp_ = false;
  std::vector<TensorSpec> specs_;
  std::map<std::string, size_t> spec_index_;
  std::map<std::string, std::string> by_canonical_;  // official name -> checkpoint name
  std::map<std::string, WeightFormat> formats_;
  const std::string& raw_name(const std::string& name) const;
};

struct HcWeights {
  Tensor fn, base, scale;
};

struct CompressorWeights {
  Tensor wkv, wgate, ape, norm;
};

// The matrices a quantised checkpoint stores in FP8 / FP4 (QuantGroup kDense / kRoutedExpert) are Weights: kept
// quantised on CUDA under LoadOptions::keep_quantized, plain otherwise.
struct AttentionWeights {
  Weight wq_a, wq_b, wkv, wo_a, wo_b;
  Tensor q_norm, kv_norm, sink;
  CompressorWeights compressor;          // CSA / HCA layers
  CompressorWeights indexer_compressor;  // CSA layers
  Weight indexer_wq_b;
  Tensor indexer_weights_proj;
  // Tensor parallelism (parallel/partition.h): this rank holds a share of the query heads, so wo_b's output is its
  // share of the sum over ranks.
  bool partial_output = false;
};

struct MoeWeights {
  Tensor gate, bias, tid2eid;  // bias for routed layers, tid2eid for hash layers
  // Stacked experts [E + 1, I, H], [E + 1, H, I], [E + 1, I, H]: the E routed experts, then the shared expert
  // at index E, so one moe_experts call (shared flag) runs both. shared_w* are views of slice E. Kept quantised: the
  // routed experts in the checkpoint's expert format and the shared expert (FP8) in its own allocation, one Weight
  // stack (core/weight.h) whose index E is the shared expert; shared_w* are that shared part alone.
  Weight w1, w2, w3;
  Weight shared_w1, shared_w2, shared_w3;
  // Expert parallelism (parallel/partition.h): the stacks hold only the routed experts e with e mod expert_ranks ==
  // expert_rank (local index e / expert_ranks), plus the shared expert where shared_expert_here; the output is this
  // rank's share of the sum over ranks. expert_ranks 1: every expert, the shared one last (the layout above).
  int32_t expert_rank = 0, expert_ranks = 1;
  bool shared_expert_here = true;
};

struct BlockWeights {
  AttentionType attention_type = AttentionType::kSliding;
  MlpType mlp_type = MlpType::kMoe;
  int64_t compress_rate = 0;
  Tensor attn_norm, ffn_norm;
  HcWeights hc_attn, hc_ffn;
  AttentionWeights attn;
  MoeWeights ffn;
};

struct MtpWeights {
  Tensor enorm, hnorm, norm;
  // [H, 2H] = [h_proj | e_proj]: one GEMM over [hnorm(prev) | enorm(e)] rows. Kept quantised (FP8) when both are
  // FP8 and H % 128 == 0 (the two matrices' scale blocks then sit side by side); plain otherwise.
  Weight eh_proj;
  HcWeights hc_head;
  BlockWeights block;
};

struct ModelWeights {
  Tensor embed, head, norm;
  HcWeights hc_head;
  std::vector<BlockWeights> layers;
  std::optional<MtpWeights> mtp;
  Arena storage;  // owns every tensor above
  size_t parameter_count = 0;
  size_t mtp_parameter_count = 0;
  bool quantized = false;  // loaded with keep_quantized from a quantised checkpoint
};

struct LoadOptions {
  Device device = Device::kCPU;
  bool load_mtp = true;  // load mtp.0.* when the config and the checkpoint have it
  // kMatrix storage on CUDA: BF16 (the default), or F32 for full-precision runs (parity checks).
  DType cuda_matrix_dtype = DType::BF16;
  // --cuda-weights quantized: the matrices a quantised checkpoint stores in FP8 / FP4 keep their codes and scales as
  // stored (validated: no NaN codes or scales, no scale that overflows f32), every other tensor as above. Needs a
  // quantised checkpoint and bf16 matrices (kInvalidArgument otherwise). The loader does this on any device (the CPU
  // for the layout's tests), but only the CUDA ops compute with quantised weights.
  bool keep_quantized = false;
};

// Validates the checkpoint against the inventory — missing, unexpected and mis-shaped tensors are all
// reported by name in one kInvalidArgument error — then converts and copies every tensor.
ModelWeights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg, const LoadOptions& options);

// Synthetic weights for `cfg` (benchmarks at real dimensions without a checkpoint): every tensor of the
// inventory generated directly on the device from a counter-based generator, with make-tiny's unit-scale
// rules; tid2eid tables with k distinct experts per token.
ModelWeights random_weights(const ModelConfig& cfg, const LoadOptions& options, uint64_t seed);
// Under --activation-quant fp8 on CUDA the MoE products past the decode path run on E4M3 MMAs only where every FP4
// stack of the layer spans at most kE4m3MoeMaxFp4RowSpan binades a row (QuantMatrices::fp4_row_span, measured at
// load; -1: not measured). Empty when every layer (and the MTP layer) qualifies or no stack is FP4, else one line
// naming how many layers keep the slower bf16 MMAs and the widest span, for the engine to log at start-up.
std::string bf16_moe_layers_note(const ModelWeights& w);

}  // namespace dsv4
