// model/flops.h: the product FLOPs of one token equal twice the weights it multiplies (counted here from the loaded
// tensors: every projection, top-k of the routed experts, the shared expert, the router, lm_head), and the attention
// and indexer terms grow with the keys each position sees (window, then the compressed entries).
#include "dsv4/model/flops.h"

#include <gtest/gtest.h>

#include "dsv4/model/random_checkpoint.h"
#include "dsv4/model/weights.h"

namespace dsv4 {
namespace {

TEST(Flops, OneTokensProductsAreTwiceTheWeightsItMultiplies) {
  const ModelConfig c = tiny_config();
  const ModelWeights w = random_weights(c, LoadOptions{}, 3);
  double weights = static_cast<double>(w.head.numel());  // one logit row
  for (const BlockWeights& b : w.layers) {
    const AttentionWeights& a = b.attn;
    for (const Weight* t : {&a.wq_a, &a.wq_b, &a.wkv, &a.wo_a, &a.wo_b, &a.indexer_wq_b, &b.ffn.shared_w1,
                            &b.ffn.shared_w2, &b.ffn.shared_w3}) {
      if (t->plain().data() != nullptr) weights += static_cast<double>(t->plain().numel());
    }
    for (const Tensor* t : {&a.compressor.wkv, &a.compressor.wgate, &a.indexer_compressor.wkv,
                            &a.indexer_compressor.wgate, &a.indexer_weights_proj, &b.ffn.gate}) {
      if (t->data() != nullptr) weights += static_cast<double>(t->numel());
    }
    // The routed stacks hold E + 1 experts (the shared one last); a token uses k of the E.
    const double per_expert =
        static_cast<double>(b.ffn.w1.plain().numel() + b.ffn.w2.plain().numel() + b.ffn.w3.plain().numel()) /
        static_cast<double>(c.n_routed_experts + 1);
    weights += per_expert * static_cast<double>(c.num_experts_per_tok);
  }
  const ForwardFlops f = prefill_flops(c, 1);
  const double products = f.by_part.at("projections") + f.by_part.at("experts") + f.by_part.at("lm_head");
  EXPECT_DOUBLE_EQ(products, 2.0 * weights);
  // Position 0 sees one key (itself) in every layer and no compressed entry.
  EXPECT_DOUBLE_EQ(f.by_part.at("attention"), 2.0 * static_cast<double>(c.layer_types.size()) *
                                                  static_cast<double>(c.num_attention_heads) * 2.0 *
                                                  static_cast<double>(c.head_dim));
  EXPECT_DOUBLE_EQ(f.by_part.at("indexer"), 0.0);
}

TEST(Flops, AttentionGrowsWithTheKeysAndProductsWithTheTokens) {
  const ModelConfig c = tiny_config();
  const ForwardFlops a = prefill_flops(c, 256), b = prefill_flops(c, 512);
  EXPECT_DOUBLE_EQ(b.by_part.at("experts"), 2.0 * a.by_part.at("experts"));
  EXPECT_DOUBLE_EQ(b.by_part.at("lm_head"), a.by_part.at("lm_head"));     // one logit row each
  EXPECT_GT(b.by_part.at("attention"), 2.0 * a.by_part.at("attention"));  // more compressed entries per position
  EXPECT_GT(b.by_part.at("indexer"), 3.0 * a.by_part.at("indexer"));      // visible entries grow with the position
  EXPECT_GT(a.total(), 0.0);
  EXPECT_DOUBLE_EQ(prefill_flops(c, 4, 4).by_part.at("lm_head"), 4.0 * prefill_flops(c, 4).by_part.at("lm_head"));
}

TEST(Flops, PeakTable) {
  EXPECT_DOUBLE_EQ(dense_peak_tflops("NVIDIA H200", "bf16"), 989.4);
  EXPECT_DOUBLE_EQ(dense_peak_tflops("NVIDIA H200", "fp8"), 1978.9);
  EXPECT_DOUBLE_EQ(dense_peak_tflops("NVIDIA H100 PCIe", "bf16"), 756.0);
  EXPECT_DOUBLE_EQ(dense_peak_tflops("NVIDIA H100 80GB HBM3", "bf16"), 989.4);
  EXPECT_DOUBLE_EQ(dense_peak_tflops("Some GPU", "bf16"), 0.0);
}

}  // namespace
}  // namespace dsv4
