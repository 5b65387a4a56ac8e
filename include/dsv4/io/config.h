// ModelConfig: a DeepseekV4ForCausalLM config.json, with every default and legacy spelling resolved
// exactly as transformers' DeepseekV4Config derives them.
#pragma once

#include <string>
#include <vector>

#include "dsv4/io/quantization.h"

namespace dsv4 {

enum class AttentionType { kSliding, kCompressedSparse, kHeavilyCompressed };
enum class MlpType { kHashMoe, kMoe };
enum class ScoringFunc { kSqrtSoftplus, kSoftmax, kSigmoid };
enum class RopeType { kDefault, kYarn };

const char* attention_type_name(AttentionType t);  // "sliding_attention", ...
const char* mlp_type_name(MlpType t);               // "hash_moe" | "moe"
const char* scoring_func_name(ScoringFunc f);

// One rope parameter set ("main" for sliding layers, "compress" for CSA/HCA layers).
struct RopeParams {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  // YaRN only:
  double factor = 1.0;
  double original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  bool truncate = true;
  double attention_factor = 1.0;  // multiplies cos/sin (DeepSeek-V4 forces 1.0 for compress layers)
};

struct ModelConfig {
  std::string architecture = "DeepseekV4ForCausalLM";
  int64_t vocab_size = 129280;
  int64_t hidden_size = 4096;
  int64_t moe_intermediate_size = 2048;
  int64_t num_hidden_layers = 43;
  int64_t num_attention_heads = 64;
  int64_t head_dim = 512;
  int64_t rope_head_dim = 64;  // qk_rope_head_dim = int(head_dim * partial_rotary_factor)
  int64_t q_lora_rank = 1024;
  int64_t o_lora_rank = 1024;
  int64_t o_groups = 8;
  int64_t num_experts_per_tok = 6;
  int64_t n_routed_experts = 256;
  int64_t n_shared_experts = 1;
  ScoringFunc scoring_func = ScoringFunc::kSqrtSoftplus;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.5;
  double swiglu_limit = 10.0;
  int64_t max_position_embeddings = 1048576;
  std::vector<AttentionType> layer_types;
  std::vector<MlpType> mlp_layer_types;
  int64_t compress_rate_csa = 4;
  int64_t compress_rate_hca = 128;
  RopeParams rope_main;
  RopeParams rope_compress;
  int64_t hc_mult = 4;
  int64_t hc_sinkhorn_iters = 20;
  double hc_eps = 1e-6;
  int64_t sliding_window = 128;
  int64_t index_n_heads = 64;
  int64_t index_head_dim = 128;
  int64_t index_topk = 512;
  int64_t num_nextn_predict_layers = 1;
  double rms_norm_eps = 1e-6;
  int64_t bos_token_id = 0;
  std::vector<int64_t> eos_token_ids = {1};
  bool tie_word_embeddings = false;
  // quantization_config / expert_dtype: how the checkpoint stores its matrices (io/quantization.h).
  QuantizationConfig quantization;

  // Derived helpers.
  int64_t hc_dim() const { return hc_mult * hidden_size; }
  int64_t hc_mix_dim() const { return (2 + hc_mult) * hc_mult; }
  int64_t compress_rate(AttentionType t) const;  // 0 for sliding
  const RopeParams& rope_for(AttentionType t) const {
    return t == AttentionType::kSliding ? rope_main : rope_compress;
  }
  bool has_mtp() const { return num_nextn_predict_layers > 0; }

  // Parses config.json text / file. Errors (kParseError / kInvalidArgument) name the field and problem.
  static ModelConfig from_json_text(const std::string& text, const std::string& origin = "config.json");
  static ModelConfig from_file(const std::string& path);
  // Consistency checks (shapes divide, ranges), called by the parsers.
  void validate() const;
  // A config.json in the official DeepSeek style (compress_ratios, num_hash_layers, rope_scaling, ...).
  std::string to_json() const;
};

}  // namespace dsv4
