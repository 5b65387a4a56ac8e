#include "dsv4/model/random_checkpoint.h"
#include "dsv4/runtime/decode_traffic.h"
#include "test_util.h"

namespace dsv4 {
namespace {

TEST(DecodeTraffic, ExpectedDistinctExperts) {
  EXPECT_DOUBLE_EQ(expected_distinct_experts(256, 6, 1), 6.0);
  EXPECT_NEAR(expected_distinct_experts(256, 6, 2), 256 * (1 - std::pow(250.0 / 256, 2)), 1e-9);
  EXPECT_LT(expected_distinct_experts(256, 6, 64), 256.0);
  EXPECT_GT(expected_distinct_experts(256, 6, 64), 6.0 * 32);  // most of 64 tokens' picks are distinct
}

TEST(DecodeTraffic, CountsEveryWeightOnceAndOnlyTheTouchedExperts) {
  const ModelConfig cfg = tiny_config();
  const ModelWeights w = random_weights(cfg, {Device::kCPU, false}, 7);
  const int64_t E = cfg.n_routed_experts, k = cfg.num_experts_per_tok, I = cfg.moe_intermediate_size,
                H = cfg.hidden_size;
  const DecodeTraffic one = decode_step_traffic(cfg, w, 1, 100, DType::F32);
  // Routed experts: k per layer for one token, 3 matrices of I x H floats each.
  EXPECT_DOUBLE_EQ(one.bytes.at("routed experts"), static_cast<double>(cfg.num_hidden_layers * k * 3 * I * H * 4));
  const double lm_head = static_cast<double>(cfg.vocab_size * H * 4);
  EXPECT_DOUBLE_EQ(one.bytes.at("lm_head"), lm_head);
  EXPECT_DOUBLE_EQ(one.bytes.at("embedding rows"), static_cast<double>(H * 4));
  // The window read grows with the position up to the sliding window, then stays.
  const DecodeTraffic early = decode_step_traffic(cfg, w, 1, 3, DType::F32);
  const DecodeTraffic late = decode_step_traffic(cfg, w, 1, 1000, DType::F32);
  EXPECT_LT(early.bytes.at("kv window"), one.bytes.at("kv window"));
  EXPECT_DOUBLE_EQ(late.bytes.at("kv window"), one.bytes.at("kv window"));
  // Compressed entries grow with the context (HCA reads all visible entries).
  EXPECT_GT(late.bytes.at("compressed entries"), one.bytes.at("compressed entries"));
  // A batch multiplies the per-sequence state and touches more experts (never more than all of them).
  const DecodeTraffic batch = decode_step_traffic(cfg, w, 8, 100, DType::F32);
  EXPECT_DOUBLE_EQ(batch.bytes.at("kv window"), 8 * one.bytes.at("kv window"));
  EXPECT_GT(batch.bytes.at("routed experts"), one.bytes.at("routed experts"));
  EXPECT_LE(batch.bytes.at("routed experts"), static_cast<double>(cfg.num_hidden_layers * E * 3 * I * H * 4));
  EXPECT_DOUBLE_EQ(batch.bytes.at("lm_head"), one.bytes.at("lm_head"));
}

TEST(SyntheticWeights, FlashSliceConfigAndRandomWeightsAreValid) {
  const ModelConfig flash = flash_slice_config(3);
  EXPECT_EQ(flash.hidden_size, 4096);
  EXPECT_EQ(flash.layer_types[0], AttentionType::kSliding);
  EXPECT_EQ(flash.layer_types[2], AttentionType::kCompressedSparse);
  EXPECT_EQ(flash_slice_config(4).layer_types[3], AttentionType::kHeavilyCompressed);
  EXPECT_EQ(flash.mlp_layer_types[2], MlpType::kHashMoe);
  EXPECT_THROW(flash_slice_config(0), Error);
  // Random weights: finite, non-zero, deterministic per seed, valid expert tables.
  const ModelConfig cfg = tiny_config();
  const ModelWeights a = random_weights(cfg, {Device::kCPU, true}, 3), b = random_weights(cfg, {Device::kCPU, true}, 3);
  ASSERT_TRUE(a.mtp.has_value());
  const Tensor& q = a.layers[1].attn.wq_b;
  double sum_sq = 0;
  for (int64_t i = 0; i < q.numel(); ++i) {
    ASSERT_TRUE(std::isfinite(q.ptr<float>()[i]));
    sum_sq += q.ptr<float>()[i] * q.ptr<float>()[i];
  }
  EXPECT_NEAR(sum_sq / q.numel(), 1.0 / q.size(1), 0.2 / q.size(1));  // std 1/sqrt(fan_in)
  EXPECT_EQ(std::memcmp(q.data(), b.layers[1].attn.wq_b.plain().data(), q.nbytes()), 0);
  const Tensor& t = a.layers[0].ffn.tid2eid;
  for (int64_t r = 0; r < t.size(0); ++r) {
    for (int64_t j = 0; j < t.size(1); ++j) {
      const int32_t e = t.ptr<int32_t>()[r * t.size(1) + j];
      ASSERT_TRUE(e >= 0 && e < cfg.n_routed_experts);
      for (int64_t i = 0; i < j; ++i) ASSERT_NE(e, t.ptr<int32_t>()[r * t.size(1) + i]);
    }
  }
}

}  // namespace
}  // namespace dsv4
