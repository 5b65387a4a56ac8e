#include "dsv4/model/random_checkpoint.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "dsv4/core/buffer.h"
#include "dsv4/io/file.h"
#include "dsv4/io/safetensors.h"
#include "dsv4/model/weights.h"

namespace dsv4 {

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.moe_intermediate_size = 32;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.head_dim = 32;
  c.rope_head_dim = 8;
  c.q_lora_rank = 32;
  c.o_lora_rank = 16;
  c.o_groups = 2;
  c.num_experts_per_tok = 2;
  c.n_routed_experts = 8;
  c.routed_scaling_factor = 1.5;
  c.max_position_embeddings = 4096;
  c.layer_types = {AttentionType::kSliding, AttentionType::kCompressedSparse, AttentionType::kHeavilyCompressed,
                   AttentionType::kCompressedSparse};
  c.mlp_layer_types = {MlpType::kHashMoe, MlpType::kMoe, MlpType::kMoe, MlpType::kMoe};
  c.compress_rate_csa = 4;
  c.compress_rate_hca = 16;
  c.rope_main = {RopeType::kDefault, 10000.0};
  c.rope_compress.type = RopeType::kYarn;
  c.rope_compress.theta = 160000.0;
  c.rope_compress.factor = 4.0;
  c.rope_compress.original_max_position_embeddings = 1024;
  c.sliding_window = 16;
  c.index_n_heads = 8;
  c.index_head_dim = 16;
  c.index_topk = 4;
  c.bos_token_id = 256;
  c.eos_token_ids = {257};
  c.validate();
  return c;
}

ModelConfig synthetic_config(const std::string& name, int64_t layers) {
  if (name == "tiny") return tiny_config();
  if (name == "flash") return flash_slice_config(layers);
  fail(StatusCode::kInvalidArgument, "--synthetic must be flash or tiny, got '", name, "'");
}

std::string synthetic_model_name(const std::string& name, int64_t layers) {
  return name == "flash" ? str_cat("synthetic-flash-", layers) : "synthetic-" + name;
}

ModelConfig flash_slice_config(int64_t layers) {
  DSV4_CHECK_ARG(layers >= 1 && layers <= 43, "the Flash slice has 1 to 43 layers, got ", layers);
  ModelConfig c;  // the defaults are DeepSeek-V4-Flash's (io/config.h)
  c.num_hidden_layers = layers;
  for (int64_t l = 0; l < layers; ++l) {
    c.layer_types.push_back(l < 2
                                ? AttentionType::kSliding
                                : (l % 2 == 0 ? AttentionType::kCompressedSparse : AttentionType::kHeavilyCompressed));
    c.mlp_layer_types.push_back(l < 3 ? MlpType::kHashMoe : MlpType::kMoe);
  }
  c.rope_compress.type = RopeType::kYarn;
  c.rope_compress.theta = 160000.0;
  c.rope_compress.factor = 16.0;
  c.rope_compress.original_max_position_embeddings = 65536;
  c.validate();
  return c;
}

void write_random_checkpoint(const std::string& dir, const ModelConfig& cfg, uint64_t seed) {
  namespace fs = std::filesystem;
  create_output_directory(dir, "make-tiny output directory");
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<HostTensor> storage;
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const TensorSpec& s : checkpoint_inventory(cfg, cfg.has_mtp())) {
    int64_t numel = 1;
    for (int64_t d : s.shape) numel *= d;
    const std::string leaf = s.name.substr(s.name.rfind('.') + 1);
    if (s.kind == WeightKind::kIndex) {  // tid2eid: k distinct experts per token
      HostTensor t(DType::I64, s.shape);
      std::vector<int64_t> experts(static_cast<size_t>(cfg.n_routed_experts));
      for (int64_t row = 0; row < s.shape[0]; ++row) {
        std::iota(experts.begin(), experts.end(), 0);
        std::shuffle(experts.begin(), experts.end(), rng);
        for (int64_t k = 0; k < s.shape[1]; ++k) t.ptr<int64_t>()[row * s.shape[1] + k] = experts[k];
      }
      tensors.emplace_back(s.name, t.t());
      storage.push_back(std::move(t));
      continue;
    }
    // Unit-scale values: matrices ~ N(0, 1/fan_in) keep activations O(1); mHC mixing logits O(1);
    // norms around 1; sinks, ape and router bias O(1) so they matter.
    std::vector<float> v(static_cast<size_t>(numel));
    float mean = 0.0f, std = 1.0f;
    if (s.kind == WeightKind::kMatrix) {
      std = 1.0f / std::sqrt(static_cast<float>(s.shape.back()));
      if (s.name.find("ffn.gate.weight") != std::string::npos) std *= 2.0f;
    } else if (s.kind == WeightKind::kNorm) {
      mean = 1.0f;
      std = 0.1f;
    } else if (s.name.find("_fn") != std::string::npos) {
      std = 1.0f / std::sqrt(static_cast<float>(s.shape.back()));
    } else if (s.name.find("_scale") != std::string::npos) {
      mean = 1.0f;
      std = 0.3f;
    } else if (leaf == "bias") {
      std = 0.5f;
    }
    for (float& x : v) x = mean + std * normal(rng);
    const DType dtype = s.kind == WeightKind::kMatrix || s.kind == WeightKind::kNorm ? DType::BF16 : DType::F32;
    HostTensor t(dtype, s.shape);
    convert_from_f32(v.data(), dtype, t.t().data(), v.size());
    tensors.emplace_back(s.name, t.t());
    storage.push_back(std::move(t));
  }
  save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
  write_output_file((fs::path(dir) / "config.json").string(), [&](std::ostream& out) { out << cfg.to_json() << "\n"; });
}

}  // namespace dsv4
