#include "dsv4/model/flops.h"

#include <algorithm>

namespace dsv4 {

double ForwardFlops::total() const {
  double t = 0;
  for (const auto& [part, f] : by_part) t += f;
  return t;
}

ForwardFlops prefill_flops(const ModelConfig& c, int64_t tokens, int64_t logit_rows) {
  const double H = static_cast<double>(c.hidden_size), D = static_cast<double>(c.head_dim);
  const double heads = static_cast<double>(c.num_attention_heads), n = static_cast<double>(c.hc_mult);
  const double T = static_cast<double>(tokens);
  ForwardFlops f;
  auto add = [&](const char* part, double macs) { f.by_part[part] += 2.0 * macs; };
  for (const AttentionType type : c.layer_types) {
    // mHC around attention and around the MoE: the mixing logits (fn · x), the collapse and the post mix.
    add("mhc", 2.0 * T * (static_cast<double>(c.hc_mix_dim()) * n * H + n * H + n * n * H + n * H));
    // Attention projections: q down / up, kv, grouped o (G groups of heads*D/G -> o_lora), o up.
    const double q_lora = static_cast<double>(c.q_lora_rank), o_lora = static_cast<double>(c.o_lora_rank);
    add("projections", T * (H * q_lora + q_lora * heads * D + H * D + heads * D * o_lora +
                            static_cast<double>(c.o_groups) * o_lora * H));
    const int64_t rate = c.compress_rate(type);
    const bool csa = type == AttentionType::kCompressedSparse;
    const double Hi = static_cast<double>(c.index_n_heads), Di = static_cast<double>(c.index_head_dim);
    if (rate > 0) add("projections", T * 2.0 * H * (csa ? 2.0 : 1.0) * D);              // compressor kv, gate
    if (csa) add("projections", T * (2.0 * H * 2.0 * Di + q_lora * Hi * Di + H * Hi));  // indexer kv/gate, q, w
    // Per position p: keys = window + compressed entries; q·k and p·v per head over each key; the indexer's
    // q·k over every visible entry of a CSA layer.
    double keys = 0, scored = 0;
    for (int64_t p = 0; p < tokens; ++p) {
      const double window = static_cast<double>(std::min<int64_t>(c.sliding_window, p + 1));
      const double visible = rate > 0 ? static_cast<double>((p + 1) / rate) : 0.0;
      keys += window + (csa ? std::min(visible, static_cast<double>(c.index_topk)) : visible);
      if (csa) scored += visible;
    }
    add("attention", keys * heads * 2.0 * D);
    add("indexer", scored * Hi * Di);
    // MoE: the router, top-k routed experts and the shared ones (gate, up, down: 3 H I each).
    const double I = static_cast<double>(c.moe_intermediate_size);
    add("projections", T * H * static_cast<double>(c.n_routed_experts));
    add("experts", T * static_cast<double>(c.num_experts_per_tok + c.n_shared_experts) * 3.0 * H * I);
  }
  add("mhc", static_cast<double>(logit_rows) * (n * n * H + n * H));  // hc_head of the logit rows
  add("lm_head", static_cast<double>(logit_rows) * H * static_cast<double>(c.vocab_size));
  return f;
}

double dense_peak_tflops(const std::string& device_name, const std::string& format) {
  struct Card {
    const char* name;  // a substring of cudaDeviceProp::name
    double bf16, fp8;
  };
  // NVIDIA's published dense figures (half the sparse ones).
  static const Card cards[] = {
      {"H200", 989.4, 1978.9}, {"H100 NVL", 835.0, 1670.0}, {"H100 PCIe", 756.0, 1513.0}, {"H100", 989.4, 1978.9},
      {"H20", 148.0, 296.0},   {"B200", 2250.0, 4500.0},    {"A100", 312.0, 0.0},
  };
  for (const Card& card : cards) {
    if (device_name.find(card.name) != std::string::npos) return format == "fp8" ? card.fp8 : card.bf16;
  }
  return 0.0;
}

}  // namespace dsv4
