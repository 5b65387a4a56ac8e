// Plausible ranges of the model's size fields, checked by ModelConfig::validate() before anything is sized
// from them (issue 21). Each is far above every released DeepSeek-V4 (V4-Flash: vocab 129280, hidden 4096,
// 43 layers, 64 heads of 512, 256 experts, window 128, top-k 512, rates 4/128, hc 4, 20 Sinkhorn iterations)
// and low enough that every size product the engine forms from them (weights, state rows, activations) fits
// in int64 with room to spare, and that no single field asks for an absurd allocation.
#pragma once

#include <cstdint>

namespace dsv4 {

struct ConfigLimits {
  int64_t vocab_size = int64_t{1} << 24;
  int64_t hidden_size = 65536;
  int64_t intermediate_size = int64_t{1} << 18;
  int64_t num_hidden_layers = 1024;
  int64_t num_heads = 1024;  // num_attention_heads, index_n_heads, o_groups
  int64_t head_dim = 4096;   // head_dim, index_head_dim, the rope dimension
  int64_t lora_rank = 65536;
  int64_t num_experts = 8192;  // n_routed_experts, num_experts_per_tok
  int64_t hc_mult = 64;
  int64_t hc_sinkhorn_iters = 1000;
  int64_t sliding_window = 65536;
  int64_t index_topk = 65536;
  int64_t compress_rate = 4096;
  int64_t max_position_embeddings = int64_t{1} << 34;
};
inline constexpr ConfigLimits kConfigLimits{};

// Token ids in tokenizer.json (vocab, added tokens, post-processor ids): the id space is sized by the largest
// one, so a sparse id near 2^31 would ask for gigabytes; vocab_size + 1 must also fit in int32.
inline constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

// Files read whole into memory.
inline constexpr int64_t kMaxConfigBytes = int64_t{16} << 20;    // config.json
inline constexpr int64_t kMaxIndexBytes = int64_t{256} << 20;    // model.safetensors.index.json
inline constexpr int64_t kMaxTokenizerBytes = int64_t{1} << 30;  // tokenizer.json

}  // namespace dsv4
