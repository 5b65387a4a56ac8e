// ModelConfig parsing: the fixture configs in transformers' saved format and in their legacy source
// spellings, the defaults transformers' DeepseekV4Config.__post_init__ derives, the released Flash / Pro
// configs, to_json() round trips and every error (code + the field named in the message).
#include "dsv4/io/config.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsv4/ops/rope_table.h"
#include "test_util.h"

namespace dsv4 {
namespace {

using json = nlohmann::json;
using A = AttentionType;
using M = MlpType;

constexpr A kS = A::kSliding;
constexpr A kC = A::kCompressedSparse;
constexpr A kH = A::kHeavilyCompressed;
constexpr M kHash = M::kHashMoe;
constexpr M kMoe = M::kMoe;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ModelConfig parse(const json& j) { return ModelConfig::from_json_text(j.dump(), "test.json"); }

void expect_rope_eq(const RopeParams& a, const RopeParams& b, const char* what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.type, b.type);
  EXPECT_DOUBLE_EQ(a.theta, b.theta);
  EXPECT_DOUBLE_EQ(a.factor, b.factor);
  EXPECT_DOUBLE_EQ(a.original_max_position_embeddings, b.original_max_position_embeddings);
  EXPECT_DOUBLE_EQ(a.beta_fast, b.beta_fast);
  EXPECT_DOUBLE_EQ(a.beta_slow, b.beta_slow);
  EXPECT_EQ(a.truncate, b.truncate);
  EXPECT_DOUBLE_EQ(a.attention_factor, b.attention_factor);
}

// Every field of two configs agrees.
void expect_config_eq(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.architecture, b.architecture);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.moe_intermediate_size, b.moe_intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.rope_head_dim, b.rope_head_dim);
  EXPECT_EQ(a.q_lora_rank, b.q_lora_rank);
  EXPECT_EQ(a.o_lora_rank, b.o_lora_rank);
  EXPECT_EQ(a.o_groups, b.o_groups);
  EXPECT_EQ(a.num_experts_per_tok, b.num_experts_per_tok);
  EXPECT_EQ(a.n_routed_experts, b.n_routed_experts);
  EXPECT_EQ(a.n_shared_experts, b.n_shared_experts);
  EXPECT_EQ(a.scoring_func, b.scoring_func);
  EXPECT_EQ(a.norm_topk_prob, b.norm_topk_prob);
  EXPECT_DOUBLE_EQ(a.routed_scaling_factor, b.routed_scaling_factor);
  EXPECT_DOUBLE_EQ(a.swiglu_limit, b.swiglu_limit);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.layer_types, b.layer_types);
  EXPECT_EQ(a.mlp_layer_types, b.mlp_layer_types);
  EXPECT_EQ(a.compress_rate_csa, b.compress_rate_csa);
  EXPECT_EQ(a.compress_rate_hca, b.compress_rate_hca);
  expect_rope_eq(a.rope_main, b.rope_main, "rope_main");
  expect_rope_eq(a.rope_compress, b.rope_compress, "rope_compress");
  EXPECT_EQ(a.hc_mult, b.hc_mult);
  EXPECT_EQ(a.hc_sinkhorn_iters, b.hc_sinkhorn_iters);
  EXPECT_DOUBLE_EQ(a.hc_eps, b.hc_eps);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.index_n_heads, b.index_n_heads);
  EXPECT_EQ(a.index_head_dim, b.index_head_dim);
  EXPECT_EQ(a.index_topk, b.index_topk);
  EXPECT_EQ(a.num_nextn_predict_layers, b.num_nextn_predict_layers);
  EXPECT_DOUBLE_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
}

// A small valid config in the modern spelling; error tests mutate one field each.
json small_config() {
  return json::parse(R"({
    "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
    "vocab_size": 300, "hidden_size": 64, "moe_intermediate_size": 32, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32, "partial_rotary_factor": 0.25,
    "q_lora_rank": 32, "o_lora_rank": 16, "o_groups": 2, "num_experts_per_tok": 2, "n_routed_experts": 8,
    "n_shared_experts": 1, "index_n_heads": 4, "index_head_dim": 16, "index_topk": 4, "sliding_window": 8,
    "max_position_embeddings": 1024, "hidden_act": "silu"
  })");
}

// Parsing `j` throws dsv4::Error with `code` and a message holding every one of `parts`.
void expect_text_error(const std::string& text, StatusCode code, const std::vector<std::string>& parts) {
  try {
    ModelConfig::from_json_text(text, "test.json");
    ADD_FAILURE() << "expected an error for " << text.substr(0, 200);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const std::string& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}
void expect_error(const json& j, StatusCode code, const std::vector<std::string>& parts) {
  SCOPED_TRACE(j.dump());
  expect_text_error(j.dump(), code, parts);
}

// ---- fixtures ----------------------------------------------------------------------------------------

struct FixtureExpect {
  std::string name;
  std::vector<A> layers;
  std::vector<M> mlp;
  int64_t csa, hca, rope_dim;
  RopeParams compress;
};

RopeParams yarn(double theta, double factor, double orig) {
  RopeParams p;
  p.type = RopeType::kYarn;
  p.theta = theta;
  p.factor = factor;
  p.original_max_position_embeddings = orig;
  p.beta_fast = 32;
  p.beta_slow = 1;
  p.attention_factor = 1.0;
  return p;
}
RopeParams plain(double theta) {
  RopeParams p;
  p.theta = theta;
  return p;
}

std::vector<FixtureExpect> fixture_expectations() {
  // What transformers 5.17 derived (tests/fixtures/hf/*/config.json, written by save_pretrained).
  return {
      {"tiny_a", {kS, kC, kH, kC, kH}, {kHash, kHash, kMoe, kMoe, kMoe}, 4, 8, 8, yarn(160000, 4, 64)},
      {"tiny_b", {kH, kC, kS, kC, kH, kS}, {kHash, kMoe, kMoe, kMoe, kMoe, kMoe}, 4, 16, 16, plain(40000)},
      {"tiny_c", {kC, kS, kH}, {kMoe, kMoe, kMoe}, 4, 8, 8, plain(160000)},
  };
}

TEST(Config, FixturesModernAndLegacySpellingsAgreeWithTransformers) {
  for (const FixtureExpect& e : fixture_expectations()) {
    SCOPED_TRACE(e.name);
    const std::string dir = test::fixture_dir(e.name);
    const ModelConfig modern = ModelConfig::from_file(dir + "/config.json");
    const ModelConfig legacy = ModelConfig::from_file(dir + "/config.source.json");
    for (const ModelConfig* c : {&modern, &legacy}) {
      EXPECT_EQ(c->layer_types, e.layers);
      EXPECT_EQ(c->mlp_layer_types, e.mlp);
      EXPECT_EQ(c->compress_rate_csa, e.csa);
      EXPECT_EQ(c->compress_rate_hca, e.hca);
      EXPECT_EQ(c->rope_head_dim, e.rope_dim);
      expect_rope_eq(c->rope_main, plain(10000), "main");
      expect_rope_eq(c->rope_compress, e.compress, "compress");
    }
    expect_config_eq(modern, legacy);
    // Cross-check against the raw transformers JSON for the scalar fields too.
    const json j = json::parse(read_file(dir + "/config.json"));
    EXPECT_EQ(modern.vocab_size, j["vocab_size"].get<int64_t>());
    EXPECT_EQ(modern.hidden_size, j["hidden_size"].get<int64_t>());
    EXPECT_EQ(modern.index_topk, j["index_topk"].get<int64_t>());
    EXPECT_EQ(modern.rope_head_dim, j["qk_rope_head_dim"].get<int64_t>());
    EXPECT_EQ(scoring_func_name(modern.scoring_func), j["scoring_func"].get<std::string>());
    EXPECT_DOUBLE_EQ(modern.routed_scaling_factor, j["routed_scaling_factor"].get<double>());
    EXPECT_DOUBLE_EQ(modern.swiglu_limit, j["swiglu_limit"].get<double>());
    for (size_t l = 0; l < modern.layer_types.size(); ++l) {
      EXPECT_EQ(attention_type_name(modern.layer_types[l]), j["layer_types"][l].get<std::string>());
      EXPECT_EQ(mlp_type_name(modern.mlp_layer_types[l]), j["mlp_layer_types"][l].get<std::string>());
    }
    EXPECT_EQ(modern.compress_rate(kS), 0);
    EXPECT_EQ(modern.compress_rate(kC), e.csa);
    EXPECT_EQ(modern.compress_rate(kH), e.hca);
    EXPECT_EQ(&modern.rope_for(kS), &modern.rope_main);
    EXPECT_EQ(&modern.rope_for(kC), &modern.rope_compress);
    EXPECT_EQ(&modern.rope_for(kH), &modern.rope_compress);
  }
}

TEST(Config, FixtureScalarFields) {
  const ModelConfig b = ModelConfig::from_file(test::fixture_dir("tiny_b") + "/config.json");
  EXPECT_EQ(b.scoring_func, ScoringFunc::kSigmoid);
  EXPECT_DOUBLE_EQ(b.routed_scaling_factor, 2.5);
  EXPECT_DOUBLE_EQ(b.swiglu_limit, 7.0);
  EXPECT_EQ(b.num_attention_heads, 2);
  EXPECT_EQ(b.head_dim, 64);
  EXPECT_EQ(b.index_n_heads, 12);
  EXPECT_EQ(b.index_head_dim, 32);
  EXPECT_EQ(b.sliding_window, 16);
  EXPECT_EQ(b.hc_dim(), 4 * 96);
  EXPECT_EQ(b.hc_mix_dim(), 24);
  EXPECT_TRUE(b.has_mtp());
  EXPECT_EQ(b.eos_token_ids, std::vector<int64_t>{1});
}

// ---- defaults ---------------------------------------------------------------------------------------

TEST(Config, DefaultLayerScheduleIsTwoHcaThenCsaHcaInterleave) {
  json j = small_config();
  for (int n : {1, 2, 3, 5, 8}) {
    SCOPED_TRACE(n);
    j["num_hidden_layers"] = n;
    const ModelConfig c = parse(j);
    std::vector<A> want;
    for (int i = 0; i < n; ++i) want.push_back(i < 2 ? kH : ((i - 2) % 2 ? kC : kH));
    EXPECT_EQ(c.layer_types, want);
    std::vector<M> mlp;
    for (int i = 0; i < n; ++i) mlp.push_back(i < 3 ? kHash : kMoe);  // num_hash_layers defaults to 3
    EXPECT_EQ(c.mlp_layer_types, mlp);
  }
  j["num_hidden_layers"] = 5;
  EXPECT_EQ(parse(j).layer_types, (std::vector<A>{kH, kH, kH, kC, kH}));
}

TEST(Config, DefaultsOfAnEmptyishConfigMatchTransformers) {
  json j = small_config();
  j.erase("partial_rotary_factor");
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_head_dim, 4);  // int(32 * 64 / 512)
  EXPECT_EQ(c.compress_rate_csa, 4);
  EXPECT_EQ(c.compress_rate_hca, 128);
  expect_rope_eq(c.rope_main, plain(10000), "main");
  expect_rope_eq(c.rope_compress, plain(160000), "compress");
  EXPECT_EQ(c.scoring_func, ScoringFunc::kSqrtSoftplus);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 1.5);
  EXPECT_DOUBLE_EQ(c.swiglu_limit, 10.0);
  EXPECT_EQ(c.hc_mult, 4);
  EXPECT_EQ(c.hc_sinkhorn_iters, 20);
  EXPECT_DOUBLE_EQ(c.hc_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.bos_token_id, 0);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{1});
  EXPECT_FALSE(c.tie_word_embeddings);

  // A config of nothing but the model type gets every transformers default (V4-Flash sizes).
  const ModelConfig d = ModelConfig::from_json_text(R"({"model_type": "deepseek_v4"})");
  EXPECT_EQ(d.vocab_size, 129280);
  EXPECT_EQ(d.hidden_size, 4096);
  EXPECT_EQ(d.num_hidden_layers, 43);
  EXPECT_EQ(d.head_dim, 512);
  EXPECT_EQ(d.rope_head_dim, 64);
  EXPECT_EQ(d.layer_types.size(), 43u);
  EXPECT_EQ(d.layer_types[0], kH);
  EXPECT_EQ(d.layer_types[1], kH);
  EXPECT_EQ(d.layer_types[2], kH);
  EXPECT_EQ(d.layer_types[3], kC);
  EXPECT_EQ(d.layer_types[42], kH);
  EXPECT_EQ(std::count(d.mlp_layer_types.begin(), d.mlp_layer_types.end(), kHash), 3);
}

TEST(Config, LegacyFieldsFoldIn) {
  json j = small_config();
  j.erase("partial_rotary_factor");
  j["qk_rope_head_dim"] = 8;
  j["compress_ratios"] = {128, 4, 0, 4};
  j["compress_rate_csa"] = 2;
  j["compress_rate_hca"] = 16;
  j["num_hash_layers"] = 1;
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.rope_head_dim, 8);
  EXPECT_EQ(c.layer_types, (std::vector<A>{kH, kC, kS, kC}));
  EXPECT_EQ(c.compress_rate_csa, 2);  // legacy scalars override the per-type defaults
  EXPECT_EQ(c.compress_rate_hca, 16);
  EXPECT_EQ(c.mlp_layer_types, (std::vector<M>{kHash, kMoe, kMoe, kMoe}));

  // Legacy scalars override an explicit compress_rates dict too (transformers folds them in after).
  j["compress_rates"] = {{"compressed_sparse_attention", 8}, {"heavily_compressed_attention", 64}};
  j.erase("compress_rate_csa");
  EXPECT_EQ(parse(j).compress_rate_csa, 8);
  EXPECT_EQ(parse(j).compress_rate_hca, 16);

  // partial_rotary_factor wins over qk_rope_head_dim.
  j["partial_rotary_factor"] = 0.5;
  EXPECT_EQ(parse(j).rope_head_dim, 16);

  // layer_types wins over compress_ratios, which is then not even interpreted.
  j["layer_types"] = {"sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention"};
  j["compress_ratios"] = {16, 16, 16, 16};
  EXPECT_EQ(parse(j).layer_types, (std::vector<A>(4, kS)));

  // num_hash_layers above num_hidden_layers: every layer hashes; 0: none.
  j["num_hash_layers"] = 10;
  EXPECT_EQ(parse(j).mlp_layer_types, (std::vector<M>(4, kHash)));
  j["num_hash_layers"] = 0;
  EXPECT_EQ(parse(j).mlp_layer_types, (std::vector<M>(4, kMoe)));
  // mlp_layer_types wins over num_hash_layers; longer lists are truncated like transformers does.
  j["mlp_layer_types"] = {"moe", "hash_moe", "moe", "hash_moe", "moe", "moe"};
  EXPECT_EQ(parse(j).mlp_layer_types, (std::vector<M>{kMoe, kHash, kMoe, kHash}));
  j["layer_types"] = {"sliding_attention", "compressed_sparse_attention", "sliding_attention",
                      "heavily_compressed_attention", "sliding_attention"};
  EXPECT_EQ(parse(j).layer_types, (std::vector<A>{kS, kC, kS, kH}));
}

TEST(Config, RopeScalingYarnAppliesToCompressLayersOnly) {
  json j = small_config();
  j["rope_theta"] = 20000.0;
  j["compress_rope_theta"] = 80000.0;
  j["rope_scaling"] = {{"type", "yarn"}, {"factor", 8}, {"original_max_position_embeddings", 128}};
  ModelConfig c = parse(j);
  expect_rope_eq(c.rope_main, plain(20000), "main");
  RopeParams want = yarn(80000, 8, 128);
  expect_rope_eq(c.rope_compress, want, "compress");  // attention_factor forced to 1.0

  // An explicit attention_factor and betas are kept; a beta of 0 falls back like `get(...) or 32`.
  j["rope_scaling"]["attention_factor"] = 0.75;
  j["rope_scaling"]["beta_fast"] = 0;
  j["rope_scaling"]["beta_slow"] = 2;
  c = parse(j);
  EXPECT_DOUBLE_EQ(c.rope_compress.attention_factor, 0.75);
  EXPECT_DOUBLE_EQ(c.rope_compress.beta_fast, 32);
  EXPECT_DOUBLE_EQ(c.rope_compress.beta_slow, 2);

  // No factor: max_position_embeddings / original_max_position_embeddings.
  j["rope_scaling"].erase("factor");
  EXPECT_DOUBLE_EQ(parse(j).rope_compress.factor, 1024.0 / 128.0);

  // The "default" rope type via rope_scaling leaves both plain.
  j["rope_scaling"] = {{"rope_type", "default"}};
  c = parse(j);
  EXPECT_EQ(c.rope_compress.type, RopeType::kDefault);
  EXPECT_DOUBLE_EQ(c.rope_compress.theta, 80000.0);
}

TEST(Config, NestedRopeParametersAreTakenAsGiven) {
  json j = small_config();
  j["rope_parameters"] = {
      {"main", {{"rope_type", "default"}, {"rope_theta", 5000.0}}},
      {"compress",
       {{"rope_type", "yarn"}, {"rope_theta", 90000.0}, {"factor", 4.0}, {"original_max_position_embeddings", 256}}},
  };
  ModelConfig c = parse(j);
  EXPECT_DOUBLE_EQ(c.rope_main.theta, 5000.0);
  EXPECT_EQ(c.rope_compress.type, RopeType::kYarn);
  EXPECT_DOUBLE_EQ(c.rope_compress.theta, 90000.0);
  // Nested without attention_factor: transformers' _compute_yarn_parameters derives 0.1 ln(factor) + 1.
  EXPECT_NEAR(c.rope_compress.attention_factor, 0.1 * std::log(4.0) + 1.0, 1e-12);
  // ... or from mscale / mscale_all_dim when both are set.
  j["rope_parameters"]["compress"]["mscale"] = 2.0;
  j["rope_parameters"]["compress"]["mscale_all_dim"] = 1.0;
  c = parse(j);
  EXPECT_NEAR(c.rope_compress.attention_factor, (0.2 * std::log(4.0) + 1.0) / (0.1 * std::log(4.0) + 1.0), 1e-12);
}

// ---- released configs --------------------------------------------------------------------------------

// V4-Flash / V4-Pro config.json as released (dsv4-architecture.md §4), in the official legacy spelling.
json released_config(bool pro) {
  json ratios = pro ? json::array({128, 128}) : json::array({0, 0});
  for (int i = 0; i < (pro ? 29 : 20); ++i) {
    ratios.push_back(4);
    ratios.push_back(128);
  }
  ratios.push_back(4);
  ratios.push_back(0);  // the MTP layer's entry
  json j = {
      {"architectures", {"DeepseekV4ForCausalLM"}},
      {"model_type", "deepseek_v4"},
      {"vocab_size", 129280},
      {"hidden_size", pro ? 7168 : 4096},
      {"num_hidden_layers", pro ? 61 : 43},
      {"num_attention_heads", pro ? 128 : 64},
      {"num_key_value_heads", 1},
      {"head_dim", 512},
      {"qk_rope_head_dim", 64},
      {"q_lora_rank", pro ? 1536 : 1024},
      {"o_lora_rank", 1024},
      {"o_groups", pro ? 16 : 8},
      {"n_routed_experts", pro ? 384 : 256},
      {"n_shared_experts", 1},
      {"num_experts_per_tok", 6},
      {"moe_intermediate_size", pro ? 3072 : 2048},
      {"scoring_func", "sqrtsoftplus"},
      {"topk_method", "noaux_tc"},
      {"norm_topk_prob", true},
      {"routed_scaling_factor", pro ? 2.5 : 1.5},
      {"num_hash_layers", 3},
      {"compress_ratios", ratios},
      {"sliding_window", 128},
      {"index_n_heads", 64},
      {"index_head_dim", 128},
      {"index_topk", pro ? 1024 : 512},
      {"hc_mult", 4},
      {"hc_sinkhorn_iters", 20},
      {"hc_eps", 1e-6},
      {"rms_norm_eps", 1e-6},
      {"rope_theta", 10000},
      {"compress_rope_theta", 160000},
      {"rope_scaling",
       {{"type", "yarn"},
        {"factor", 16},
        {"original_max_position_embeddings", 65536},
        {"beta_fast", 32},
        {"beta_slow", 1}}},
      {"max_position_embeddings", 1048576},
      {"swiglu_limit", 10.0},
      {"hidden_act", "silu"},
      {"num_nextn_predict_layers", 1},
      {"bos_token_id", 0},
      {"eos_token_id", 1},
      {"tie_word_embeddings", false},
      {"torch_dtype", "bfloat16"},
      {"expert_dtype", "fp4"},
      {"quantization_config", {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}}},
  };
  return j;
}

TEST(Config, ReleasedFlashAndProConfigs) {
  for (bool pro : {false, true}) {
    SCOPED_TRACE(pro ? "pro" : "flash");
    const ModelConfig c = parse(released_config(pro));
    const int64_t n = pro ? 61 : 43;
    ASSERT_EQ(c.num_hidden_layers, n);
    ASSERT_EQ(static_cast<int64_t>(c.layer_types.size()), n);  // trailing MTP entry dropped
    EXPECT_EQ(c.layer_types[0], pro ? kH : kS);
    EXPECT_EQ(c.layer_types[1], pro ? kH : kS);
    for (int64_t l = 2; l < n - 1; ++l) EXPECT_EQ(c.layer_types[l], l % 2 == 0 ? kC : kH) << l;
    EXPECT_EQ(c.layer_types[n - 1], kC);
    EXPECT_EQ(c.compress_rate_csa, 4);
    EXPECT_EQ(c.compress_rate_hca, 128);
    for (int64_t l = 0; l < n; ++l) EXPECT_EQ(c.mlp_layer_types[l], l < 3 ? kHash : kMoe);
    EXPECT_EQ(c.rope_head_dim, 64);
    expect_rope_eq(c.rope_main, plain(10000), "main");
    expect_rope_eq(c.rope_compress, yarn(160000, 16, 65536), "compress");
    EXPECT_EQ(c.hidden_size, pro ? 7168 : 4096);
    EXPECT_EQ(c.o_groups, pro ? 16 : 8);
    EXPECT_EQ(c.q_lora_rank, pro ? 1536 : 1024);
    EXPECT_EQ(c.n_routed_experts, pro ? 384 : 256);
    EXPECT_EQ(c.index_topk, pro ? 1024 : 512);
    EXPECT_DOUBLE_EQ(c.routed_scaling_factor, pro ? 2.5 : 1.5);
    EXPECT_EQ(c.max_position_embeddings, 1048576);
    EXPECT_EQ(c.hc_mix_dim(), 24);
    EXPECT_EQ(c.hc_dim(), 4 * c.hidden_size);
  }
  // Flash-0731 ships 46 compress_ratios entries: extra trailing entries are ignored.
  json j = released_config(false);
  j["compress_ratios"].push_back(0);
  j["compress_ratios"].push_back(0);
  EXPECT_EQ(parse(j).layer_types, parse(released_config(false)).layer_types);
}

TEST(Config, DefaultTinyKjvModel) {
  const ModelConfig c = ModelConfig::from_file(test::source_dir() + "/models/dsv4-tiny-kjv/config.json");
  EXPECT_EQ(c.vocab_size, 6144);
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.num_hidden_layers, 6);
  EXPECT_EQ(c.rope_head_dim, 16);
  EXPECT_EQ(c.layer_types, (std::vector<A>{kS, kC, kH, kC, kH, kC}));
  EXPECT_EQ(c.mlp_layer_types, (std::vector<M>{kHash, kHash, kMoe, kMoe, kMoe, kMoe}));
  EXPECT_EQ(c.compress_rate_csa, 4);
  EXPECT_EQ(c.compress_rate_hca, 16);
  expect_rope_eq(c.rope_main, plain(10000), "main");
  expect_rope_eq(c.rope_compress, yarn(160000, 16, 65536), "compress");
  EXPECT_EQ(c.index_topk, 16);
  EXPECT_EQ(c.sliding_window, 64);
}

// ---- to_json --------------------------------------------------------------------------------------

TEST(Config, ToJsonRoundTrips) {
  std::vector<ModelConfig> configs;
  for (const char* f : {"tiny_a", "tiny_b", "tiny_c"}) {
    configs.push_back(ModelConfig::from_file(test::fixture_dir(f) + "/config.source.json"));
  }
  configs.push_back(parse(released_config(true)));
  json nested = small_config();
  nested["rope_parameters"] = {{"main", {{"rope_type", "default"}, {"rope_theta", 5000.0}}},
                               {"compress",
                                {{"rope_type", "yarn"},
                                 {"rope_theta", 90000.0},
                                 {"factor", 4.0},
                                 {"original_max_position_embeddings", 256},
                                 {"beta_fast", 16},
                                 {"beta_slow", 2}}}};
  nested["eos_token_id"] = {1, 2};
  nested["scoring_func"] = "softmax";
  nested["norm_topk_prob"] = false;
  configs.push_back(parse(nested));
  for (const ModelConfig& c : configs) {
    const std::string text = c.to_json();
    const json j = json::parse(text);
    EXPECT_EQ(j["model_type"], "deepseek_v4");
    EXPECT_EQ(j["layer_types"].size(), c.layer_types.size());
    const ModelConfig back = ModelConfig::from_json_text(text);
    expect_config_eq(back, c);
    EXPECT_EQ(back.to_json(), text);  // stable
  }
}

// ---- errors -----------------------------------------------------------------------------------------

TEST(ConfigErrors, SyntaxAndTopLevel) {
  expect_text_error("{\"vocab_size\": 12,", StatusCode::kParseError, {"test.json", "invalid JSON"});
  expect_text_error("", StatusCode::kParseError, {"invalid JSON"});
  expect_text_error("[1, 2]", StatusCode::kParseError, {"top level", "object"});
  expect_text_error("\"deepseek\"", StatusCode::kParseError, {"top level"});
}

TEST(ConfigErrors, WrongFieldTypes) {
  struct Case {
    const char* field;
    json value;
  };
  for (const Case& k : std::vector<Case>{{"vocab_size", "129280"},
                                         {"hidden_size", 64.5},
                                         {"num_hidden_layers", true},
                                         {"routed_scaling_factor", "1.5"},
                                         {"norm_topk_prob", 1},
                                         {"scoring_func", 3},
                                         {"layer_types", "sliding_attention"},
                                         {"mlp_layer_types", 3},
                                         {"compress_ratios", {0, "4", 0, 0}},
                                         {"compress_rates", {4, 128}},
                                         {"rope_scaling", "yarn"},
                                         {"eos_token_id", "1"},
                                         {"architectures", "DeepseekV4ForCausalLM"}}) {
    json j = small_config();
    j[k.field] = k.value;
    expect_error(j, StatusCode::kParseError, {"test.json", str_cat("'", k.field, "'")});
  }
  json j = small_config();
  j["compress_rates"] = {{"compressed_sparse_attention", "4"}};
  expect_error(j, StatusCode::kParseError, {"compressed_sparse_attention"});
  j = small_config();
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", "16"}, {"original_max_position_embeddings", 64}};
  expect_error(j, StatusCode::kParseError, {"'factor'"});
  // The legacy "type" spelling is type-checked like "rope_type" (found by fuzz_config: it used to escape
  // as a json type_error).
  j = small_config();
  j["rope_scaling"] = {{"type", 5}};
  expect_error(j, StatusCode::kParseError, {"rope_parameters.compress", "'type'", "string"});
}

TEST(ConfigErrors, LayerSchedules) {
  json j = small_config();
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention", "sliding_attention"};
  expect_error(j, StatusCode::kParseError, {"'layer_types'", "full_attention"});
  j["layer_types"] = {"sliding_attention", "sliding_attention", "sliding_attention"};
  expect_error(j, StatusCode::kParseError, {"'layer_types'", "3 entries", "num_hidden_layers is 4"});
  j["layer_types"] = {"sliding_attention", 1, "sliding_attention", "sliding_attention"};
  expect_error(j, StatusCode::kParseError, {"'layer_types'"});

  j = small_config();
  j["compress_ratios"] = {0, 4, 16, 128};
  expect_error(j, StatusCode::kParseError, {"'compress_ratios'", "16"});
  j["compress_ratios"] = {0, 4, 0, 128, 7};  // a trailing (MTP) entry is checked too
  expect_error(j, StatusCode::kParseError, {"'compress_ratios'", "7"});
  j["compress_ratios"] = {0, 4, 128};
  expect_error(j, StatusCode::kParseError, {"'compress_ratios'", "3 entries"});

  j = small_config();
  j["mlp_layer_types"] = {"hash_moe", "dense", "moe", "moe"};
  expect_error(j, StatusCode::kParseError, {"'mlp_layer_types'", "dense"});
  j["mlp_layer_types"] = {"hash_moe", "moe"};
  expect_error(j, StatusCode::kParseError, {"'mlp_layer_types'", "2 entries"});
  j["mlp_layer_types"] = {"hash_moe", nullptr, "moe", "moe"};
  expect_error(j, StatusCode::kParseError, {"'mlp_layer_types'"});

  j = small_config();
  j["num_hidden_layers"] = 0;
  expect_error(j, StatusCode::kParseError, {"'num_hidden_layers'"});
}

TEST(ConfigErrors, Rope) {
  json j = small_config();
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  expect_error(j, StatusCode::kParseError, {"'rope_type'", "linear"});
  j["rope_scaling"] = {{"type", "llama3"}, {"factor", 2.0}};
  expect_error(j, StatusCode::kParseError, {"'rope_type'", "llama3"});
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 16}};
  expect_error(j, StatusCode::kParseError, {"'original_max_position_embeddings'", "yarn"});
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", -1}, {"original_max_position_embeddings", 64}};
  expect_error(j, StatusCode::kParseError, {"'factor'"});
  j = small_config();
  j["rope_parameters"] = {{"main", {{"rope_type", "dynamic"}}}, {"compress", {{"rope_type", "default"}}}};
  expect_error(j, StatusCode::kParseError, {"rope_parameters.main", "'rope_type'", "dynamic"});
  j = small_config();
  j["rope_theta"] = 0.5;
  expect_error(j, StatusCode::kParseError, {"'rope_theta'"});
}

TEST(ConfigErrors, ModelIdentityAndUnsupportedFeatures) {
  json j = small_config();
  j["model_type"] = "deepseek_v3";
  expect_error(j, StatusCode::kParseError, {"'model_type'", "deepseek_v3"});
  j = small_config();
  j["architectures"] = {"DeepseekV3ForCausalLM"};
  expect_error(j, StatusCode::kParseError, {"'architectures'", "DeepseekV3ForCausalLM"});
  j["architectures"] = json::array();
  expect_error(j, StatusCode::kParseError, {"'architectures'"});
  j = small_config();
  j["hidden_act"] = "gelu";
  expect_error(j, StatusCode::kParseError, {"'hidden_act'", "gelu"});
  j = small_config();
  j["num_key_value_heads"] = 4;
  expect_error(j, StatusCode::kParseError, {"'num_key_value_heads'"});
  j = small_config();
  j["scoring_func"] = "relu";
  expect_error(j, StatusCode::kParseError, {"'scoring_func'", "relu"});
  j = small_config();
  j["tie_word_embeddings"] = true;
  expect_error(j, StatusCode::kParseError, {"'tie_word_embeddings'"});
}

TEST(ConfigErrors, InconsistentSizes) {
  auto with = [](const char* field, json v) {
    json j = small_config();
    j[field] = std::move(v);
    return j;
  };
  expect_error(with("num_experts_per_tok", 9), StatusCode::kInvalidArgument,
               {"num_experts_per_tok", "n_routed_experts"});
  // rope dim = head_dim * partial_rotary_factor: odd, above head_dim, zero.
  json j = small_config();
  j.erase("partial_rotary_factor");
  j["qk_rope_head_dim"] = 7;
  expect_error(j, StatusCode::kInvalidArgument, {"rope dimension", "partial_rotary_factor", "7"});
  j["qk_rope_head_dim"] = 64;
  expect_error(j, StatusCode::kInvalidArgument, {"rope dimension", "64", "head_dim"});
  expect_error(with("partial_rotary_factor", 1.5), StatusCode::kInvalidArgument, {"rope dimension", "48"});
  expect_error(with("partial_rotary_factor", 0.0), StatusCode::kInvalidArgument, {"rope dimension"});
  expect_error(with("o_groups", 3), StatusCode::kInvalidArgument, {"num_attention_heads", "o_groups"});
  expect_error(with("index_head_dim", 4), StatusCode::kInvalidArgument, {"index_head_dim"});
  expect_error(with("n_shared_experts", 2), StatusCode::kInvalidArgument, {"n_shared_experts"});
  expect_error(with("num_nextn_predict_layers", 2), StatusCode::kInvalidArgument, {"num_nextn_predict_layers"});
  expect_error(with("eos_token_id", 300), StatusCode::kInvalidArgument, {"eos_token_id", "300"});
  for (const char* f : {"vocab_size", "hidden_size", "head_dim", "q_lora_rank", "index_topk", "sliding_window",
                        "hc_sinkhorn_iters", "n_routed_experts"}) {
    expect_error(with(f, 0), StatusCode::kInvalidArgument, {f});
  }
  j = small_config();
  j["compress_rates"] = {{"compressed_sparse_attention", 0}};
  expect_error(j, StatusCode::kInvalidArgument, {"compressed_sparse_attention"});
}

TEST(ConfigErrors, MissingFile) {
  const std::string path = test::source_dir() + "/tests/fixtures/hf/no_such_model/config.json";
  try {
    ModelConfig::from_file(path);
    ADD_FAILURE() << "expected kNotFound";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  // An error in a file names the file.
  const std::string dir = testing::TempDir() + str_cat("/dsv4_config_test_", ::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/config.json") << "{\"hidden_act\": \"relu\"}";
  try {
    ModelConfig::from_file(dir + "/config.json");
    ADD_FAILURE() << "expected kParseError";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kParseError);
    EXPECT_NE(std::string(e.what()).find(dir + "/config.json"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dsv4
