// Checkpoint inventory, tensor-name normalisation (official hub naming vs transformers' saved naming) and
// load_weights: conversion into storage dtypes and every loading error, reported by name in one error.
#include "dsv4/model/weights.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "dsv4/core/buffer.h"
#include "dsv4/model/random_checkpoint.h"
#include "test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

TEST(CanonicalTensorName, OfficialNamesAreKept) {
  for (const char* name :
       {"embed.weight", "head.weight", "norm.weight", "hc_head_fn", "hc_head_base", "hc_head_scale",
        "layers.0.attn.wq_a.weight", "layers.12.attn.kv_norm.weight", "layers.3.attn_norm.weight",
        "layers.3.ffn_norm.weight", "layers.1.attn.compressor.norm.weight",
        "layers.1.attn.indexer.compressor.norm.weight", "layers.0.ffn.experts.7.w1.weight", "layers.0.ffn.gate.tid2eid",
        "mtp.0.e_proj.weight", "mtp.0.norm.weight", "mtp.0.hc_head_fn", "mtp.0.attn.kv_norm.weight"}) {
    EXPECT_EQ(canonical_tensor_name(name), name);
  }
}

TEST(CanonicalTensorName, TransformersSavedNames) {
  const std::map<std::string, std::string> cases = {
      {"model.embed_tokens.weight", "embed.weight"},
      {"embed_tokens.weight", "embed.weight"},
      {"lm_head.weight", "head.weight"},
      {"head.weight", "head.weight"},
      {"model.norm.weight", "norm.weight"},
      {"model.hc_head.hc_fn", "hc_head_fn"},
      {"model.hc_head.hc_base", "hc_head_base"},
      {"model.hc_head.hc_scale", "hc_head_scale"},
      {"model.layers.0.attn.norm.weight", "layers.0.attn.kv_norm.weight"},
      {"model.layers.42.attn.norm.weight", "layers.42.attn.kv_norm.weight"},
      {"layers.7.attn.norm.weight", "layers.7.attn.kv_norm.weight"},
      {"mtp.0.attn.norm.weight", "mtp.0.attn.kv_norm.weight"},
      {"model.layers.1.attn.wq_b.weight", "layers.1.attn.wq_b.weight"},
      {"model.layers.1.attn_norm.weight", "layers.1.attn_norm.weight"},  // the block norm is not the kv norm
      {"model.layers.1.attn.compressor.norm.weight", "layers.1.attn.compressor.norm.weight"},
      {"model.layers.1.attn.indexer.compressor.norm.weight", "layers.1.attn.indexer.compressor.norm.weight"},
      {"model.layers.2.ffn.experts.5.w3.weight", "layers.2.ffn.experts.5.w3.weight"},
      {"model.layers.2.ffn.shared_experts.w2.weight", "layers.2.ffn.shared_experts.w2.weight"},
      {"model.layers.0.hc_attn_fn", "layers.0.hc_attn_fn"},
  };
  for (const auto& [from, to] : cases) EXPECT_EQ(canonical_tensor_name(from), to) << from;
}

TEST(CanonicalTensorName, EveryFixtureTensorMapsOntoTheInventory) {
  for (const char* f : {"tiny_a", "tiny_b", "tiny_c"}) {
    SCOPED_TRACE(f);
    const std::string dir = test::fixture_dir(f);
    const ModelConfig cfg = ModelConfig::from_file(dir + "/config.json");
    std::set<std::string> want;
    for (const TensorSpec& s : checkpoint_inventory(cfg, false)) want.insert(s.name);
    std::set<std::string> got;
    for (const std::string& n : Checkpoint::open(dir).names()) got.insert(canonical_tensor_name(n));
    EXPECT_EQ(got, want);
  }
}

ModelConfig small_config() {
  ModelConfig c = tiny_config();
  c.vocab_size = 300;
  c.hidden_size = 32;
  c.moe_intermediate_size = 16;
  c.num_hidden_layers = 3;
  c.head_dim = 16;
  c.q_lora_rank = 16;
  c.o_lora_rank = 8;
  c.n_routed_experts = 4;
  c.index_n_heads = 2;
  c.layer_types = {AttentionType::kSliding, AttentionType::kCompressedSparse, AttentionType::kHeavilyCompressed};
  c.mlp_layer_types = {MlpType::kHashMoe, MlpType::kMoe, MlpType::kMoe};
  c.eos_token_ids = {1};
  c.bos_token_id = 0;
  c.validate();
  return c;
}

TEST(CheckpointInventory, PerLayerTypeTensors) {
  const ModelConfig c = small_config();
  std::map<std::string, std::vector<int64_t>> inv;
  for (const TensorSpec& s : checkpoint_inventory(c, true)) EXPECT_TRUE(inv.emplace(s.name, s.shape).second) << s.name;
  const int64_t H = 32, D = 16, E = 4;
  EXPECT_EQ(inv.at("embed.weight"), (std::vector<int64_t>{300, H}));
  EXPECT_EQ(inv.at("hc_head_fn"), (std::vector<int64_t>{4, 4 * H}));
  EXPECT_EQ(inv.at("layers.0.hc_attn_fn"), (std::vector<int64_t>{24, 4 * H}));
  EXPECT_EQ(inv.at("layers.0.attn.wo_a.weight"), (std::vector<int64_t>{2 * 8, 4 * D / 2}));
  // Sliding: no compressor; hash MoE: tid2eid, no bias.
  EXPECT_FALSE(inv.count("layers.0.attn.compressor.ape"));
  EXPECT_EQ(inv.at("layers.0.ffn.gate.tid2eid"), (std::vector<int64_t>{300, 2}));
  EXPECT_FALSE(inv.count("layers.0.ffn.gate.bias"));
  // CSA: overlapping compressor (2D wide) and the indexer; routed MoE with a bias.
  EXPECT_EQ(inv.at("layers.1.attn.compressor.wkv.weight"), (std::vector<int64_t>{2 * D, H}));
  EXPECT_EQ(inv.at("layers.1.attn.compressor.ape"), (std::vector<int64_t>{4, 2 * D}));
  EXPECT_EQ(inv.at("layers.1.attn.indexer.wq_b.weight"), (std::vector<int64_t>{2 * 16, 16}));
  EXPECT_EQ(inv.at("layers.1.attn.indexer.compressor.ape"), (std::vector<int64_t>{4, 2 * 16}));
  EXPECT_EQ(inv.at("layers.1.ffn.gate.bias"), (std::vector<int64_t>{E}));
  // HCA: a D-wide compressor at its own rate, no indexer.
  EXPECT_EQ(inv.at("layers.2.attn.compressor.wkv.weight"), (std::vector<int64_t>{D, H}));
  EXPECT_EQ(inv.at("layers.2.attn.compressor.ape"), (std::vector<int64_t>{16, D}));
  EXPECT_FALSE(inv.count("layers.2.attn.indexer.wq_b.weight"));
  EXPECT_TRUE(inv.count("layers.2.ffn.experts.3.w2.weight"));
  EXPECT_FALSE(inv.count("layers.2.ffn.experts.4.w2.weight"));
  // MTP: its own heads and a sliding, routed block.
  EXPECT_EQ(inv.at("mtp.0.e_proj.weight"), (std::vector<int64_t>{H, H}));
  EXPECT_TRUE(inv.count("mtp.0.ffn.gate.bias"));
  EXPECT_FALSE(inv.count("mtp.0.attn.compressor.wkv.weight"));
  EXPECT_FALSE(inv.count("mtp.0.ffn.gate.tid2eid"));
  size_t without_mtp = checkpoint_inventory(c, false).size();
  size_t mtp = 0;
  for (const auto& [name, shape] : inv) mtp += name.rfind("mtp.0.", 0) == 0;
  EXPECT_EQ(without_mtp + mtp, inv.size());

  EXPECT_EQ(storage_dtype(WeightKind::kMatrix, Device::kCPU), DType::F32);
  EXPECT_EQ(storage_dtype(WeightKind::kMatrix, Device::kCUDA), DType::BF16);
  EXPECT_EQ(storage_dtype(WeightKind::kNorm, Device::kCUDA), DType::F32);
  EXPECT_EQ(storage_dtype(WeightKind::kPrecision, Device::kCUDA), DType::F32);
  EXPECT_EQ(storage_dtype(WeightKind::kIndex, Device::kCPU), DType::I32);
}

// A random checkpoint written once per test into its own directory, plus helpers to rewrite it.
class LoadWeights : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::path(testing::TempDir()) /
            str_cat("dsv4_weights_", ::getpid(), "_", testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    fs::remove_all(dir_);
    cfg_ = small_config();
    write_random_checkpoint(dir_ + "/orig", cfg_, 5);
    auto file = SafetensorsFile::open(dir_ + "/orig/model.safetensors");
    for (const TensorInfo& info : file->tensors()) {
      HostTensor t(info.dtype, info.shape);
      std::memcpy(t.t().data(), file->data(info), info.nbytes);
      tensors_.emplace_back(info.name, std::move(t));
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  HostTensor& tensor(const std::string& name) {
    for (auto& [n, t] : tensors_) {
      if (n == name) return t;
    }
    throw std::runtime_error("no tensor " + name);
  }
  void erase(const std::string& name) {
    std::erase_if(tensors_, [&](const auto& p) { return p.first == name; });
  }
  void rename(const std::string& from, const std::string& to) {
    for (auto& [n, t] : tensors_) {
      if (n == from) n = to;
    }
  }
  void replace(const std::string& name, DType dtype, std::vector<int64_t> shape) {
    for (auto& [n, t] : tensors_) {
      if (n == name) t = HostTensor(dtype, std::move(shape));
    }
  }
  // Writes the (edited) tensors as a checkpoint directory and opens it.
  Checkpoint write(const std::string& name) {
    const std::string d = dir_ + "/" + name;
    fs::create_directories(d);
    std::vector<std::pair<std::string, Tensor>> list;
    for (const auto& [n, t] : tensors_) list.emplace_back(n, t.t());
    save_safetensors(d + "/model.safetensors", list);
    return Checkpoint::open(d);
  }
  std::string load_error(const Checkpoint& ckpt, LoadOptions opt = {}) {
    try {
      load_weights(ckpt, cfg_, opt);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::kInvalidArgument) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "expected load_weights to fail";
    return "";
  }

  std::string dir_;
  ModelConfig cfg_;
  std::vector<std::pair<std::string, HostTensor>> tensors_;
};

std::vector<float> floats(const Tensor& t) { return test::to_vector(t); }

TEST_F(LoadWeights, RandomCheckpointLoadsAndConverts) {
  const Checkpoint ckpt = Checkpoint::open(dir_ + "/orig");
  const ModelWeights w = load_weights(ckpt, cfg_, {Device::kCPU, true});
  ASSERT_TRUE(w.mtp.has_value());
  size_t params = 0, mtp_params = 0;
  for (const TensorSpec& s : checkpoint_inventory(cfg_, true)) {
    if (s.kind == WeightKind::kIndex) continue;  // tid2eid is a lookup table, not parameters
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    (s.name.rfind("mtp.", 0) == 0 ? mtp_params : params) += static_cast<size_t>(n);
  }
  EXPECT_EQ(w.parameter_count, params);
  EXPECT_EQ(w.mtp_parameter_count, mtp_params);
  ASSERT_EQ(w.layers.size(), 3u);
  // bf16 matrices become f32 on the CPU; values survive.
  EXPECT_EQ(w.embed.dtype(), DType::F32);
  EXPECT_EQ(floats(w.embed), floats(ckpt.view("embed.weight")));
  EXPECT_EQ(floats(w.layers[1].attn.indexer_wq_b), floats(ckpt.view("layers.1.attn.indexer.wq_b.weight")));
  // Experts are stacked [E + 1, I, H]: the routed ones, then the shared expert, which shared_w1 views.
  const MoeWeights& f = w.layers[2].ffn;
  EXPECT_EQ(f.w1.shape(), (std::vector<int64_t>{5, 16, 32}));
  EXPECT_EQ(f.w2.shape(), (std::vector<int64_t>{5, 32, 16}));
  const std::vector<float> stacked = floats(f.w1);
  const std::vector<float> e3 = floats(ckpt.view("layers.2.ffn.experts.3.w1.weight"));
  EXPECT_EQ(std::vector<float>(stacked.begin() + 3 * 16 * 32, stacked.begin() + 4 * 16 * 32), e3);
  EXPECT_EQ(std::vector<float>(stacked.begin() + 4 * 16 * 32, stacked.end()),
            floats(ckpt.view("layers.2.ffn.shared_experts.w1.weight")));
  for (const auto& [stack, shared] :
       {std::pair{f.w1.plain(), f.shared_w1.plain()}, std::pair{f.w2.plain(), f.shared_w2.plain()},
        std::pair{f.w3.plain(), f.shared_w3.plain()}}) {
    EXPECT_EQ(shared.data(), stack.select(0, 4).data());
    EXPECT_EQ(shared.shape(), stack.select(0, 4).shape());
  }
  // tid2eid: I64 in the file, I32 in memory.
  EXPECT_EQ(w.layers[0].ffn.tid2eid.dtype(), DType::I32);
  const Tensor t64 = ckpt.view("layers.0.ffn.gate.tid2eid");
  for (int64_t i = 0; i < t64.numel(); ++i) {
    int64_t id = 0;  // the mmap'd table is not 8-byte aligned: memcpy, as the loader does
    std::memcpy(&id, static_cast<const char*>(t64.data()) + 8 * i, 8);
    ASSERT_EQ(w.layers[0].ffn.tid2eid.ptr<int32_t>()[i], id);
  }
  EXPECT_EQ(w.layers[0].ffn.bias.data(), nullptr);
  EXPECT_NE(w.layers[1].ffn.bias.data(), nullptr);
  EXPECT_EQ(w.layers[2].compress_rate, 16);
  EXPECT_EQ(w.layers[1].attention_type, AttentionType::kCompressedSparse);
  // The MTP's h_proj and e_proj are fused side by side: eh_proj [H, 2H] = [h_proj | e_proj].
  ASSERT_EQ(w.mtp->eh_proj.shape(), (std::vector<int64_t>{32, 64}));
  const std::vector<float> eh = floats(w.mtp->eh_proj), hp = floats(ckpt.view("mtp.0.h_proj.weight")),
                           ep = floats(ckpt.view("mtp.0.e_proj.weight"));
  for (int64_t r = 0; r < 32; ++r) {
    for (int64_t c = 0; c < 32; ++c) {
      ASSERT_EQ(eh[r * 64 + c], hp[r * 32 + c]);
      ASSERT_EQ(eh[r * 64 + 32 + c], ep[r * 32 + c]);
    }
  }

  // load_mtp = false: the mtp.0.* tensors are skipped, not "unexpected".
  const ModelWeights nomtp = load_weights(ckpt, cfg_, {Device::kCPU, false});
  EXPECT_FALSE(nomtp.mtp.has_value());
  EXPECT_EQ(nomtp.mtp_parameter_count, 0u);
  EXPECT_EQ(nomtp.parameter_count, params);
}

TEST_F(LoadWeights, TransformersNamingLoadsTheSameWeights) {
  const ModelWeights ref = load_weights(Checkpoint::open(dir_ + "/orig"), cfg_, {Device::kCPU, false});
  for (auto& [n, t] : tensors_) {
    if (n.rfind("mtp.", 0) == 0) continue;
    if (n == "embed.weight") {
      n = "model.embed_tokens.weight";
    } else if (n == "hc_head_fn" || n == "hc_head_base" || n == "hc_head_scale") {
      n = "model.hc_head.hc_" + n.substr(8);
    } else if (n != "head.weight") {
      const size_t kv = n.find(".attn.kv_norm.");
      if (kv != std::string::npos) n = n.substr(0, kv) + ".attn.norm." + n.substr(kv + 14);
      n = "model." + n;
    }
  }
  std::erase_if(tensors_, [](const auto& p) { return p.first.rfind("mtp.", 0) == 0; });
  const Checkpoint ckpt = write("hf");
  EXPECT_NE(ckpt.find("model.layers.1.attn.norm.weight"), nullptr);
  EXPECT_NE(ckpt.find("model.hc_head.hc_fn"), nullptr);
  const ModelWeights w = load_weights(ckpt, cfg_, {Device::kCPU, true});  // no mtp tensors: loads without
  EXPECT_FALSE(w.mtp.has_value());
  EXPECT_EQ(w.parameter_count, ref.parameter_count);
  EXPECT_EQ(floats(w.embed), floats(ref.embed));
  EXPECT_EQ(floats(w.hc_head.fn), floats(ref.hc_head.fn));
  EXPECT_EQ(floats(w.norm), floats(ref.norm));
  for (int l = 0; l < 3; ++l) EXPECT_EQ(floats(w.layers[l].attn.kv_norm), floats(ref.layers[l].attn.kv_norm)) << l;
}

TEST_F(LoadWeights, FixtureCheckpointLoads) {
  const std::string dir = test::fixture_dir("tiny_c");
  const ModelConfig cfg = ModelConfig::from_file(dir + "/config.json");
  const ModelWeights w = load_weights(Checkpoint::open(dir), cfg, {Device::kCPU, true});
  EXPECT_FALSE(w.mtp.has_value());  // transformers does not save the MTP layer
  size_t params = 0;
  for (const TensorSpec& s : checkpoint_inventory(cfg, false)) {
    if (s.kind == WeightKind::kIndex) continue;
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    params += static_cast<size_t>(n);
  }
  EXPECT_EQ(w.parameter_count, params);
}

TEST_F(LoadWeights, EveryProblemIsReportedByNameInOneError) {
  erase("layers.1.attn.wq_a.weight");                                         // missing
  tensors_.emplace_back("layers.0.attn.bogus", HostTensor(DType::F32, {2}));  // unexpected
  replace("layers.2.ffn.gate.weight", DType::BF16, {4, 31});                  // mis-shaped
  replace("norm.weight", DType::F8_E4M3, {32});                               // FP8 weight
  replace("layers.0.ffn.gate.tid2eid", DType::F32, {300, 2});                 // float index table
  replace("layers.1.attn.attn_sink", DType::I32, {4});                        // integer float tensor
  const std::string msg = load_error(write("broken"));
  for (const char* part :
       {"(6 problems)", "missing tensor 'layers.1.attn.wq_a.weight'", "expected shape [16, 32]",
        "unexpected tensor 'layers.0.attn.bogus'", "'layers.2.ffn.gate.weight' has shape [4, 31]", "expected [4, 32]",
        "'norm.weight' has dtype F8_E4M3", "FP8", "'layers.0.ffn.gate.tid2eid' has dtype F32", "I64 or I32",
        "'layers.1.attn.attn_sink' has dtype I32"}) {
    EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in:\n" << msg;
  }
  EXPECT_NE(msg.find(dir_ + "/broken"), std::string::npos) << msg;
}

TEST_F(LoadWeights, ManyProblemsAreSummarised) {
  ModelConfig other = cfg_;
  other.hidden_size = 48;  // every tensor touching H is mis-shaped
  try {
    load_weights(Checkpoint::open(dir_ + "/orig"), other, {});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(msg.find("more"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'embed.weight' has shape [300, 32], expected [300, 48]"), std::string::npos) << msg;
    EXPECT_LE(std::count(msg.begin(), msg.end(), '\n'), 26) << "at most 25 problems listed, then a count";
  }
}

TEST_F(LoadWeights, BothNamingsOfOneTensorConflict) {
  HostTensor copy(DType::BF16, {300, 32});
  std::memcpy(copy.t().data(), tensor("embed.weight").t().data(), copy.t().nbytes());
  tensors_.emplace_back("model.embed_tokens.weight", std::move(copy));
  const std::string msg = load_error(write("dup"));
  EXPECT_NE(msg.find("'embed.weight' and 'model.embed_tokens.weight' name the same weight"), std::string::npos) << msg;
}

TEST_F(LoadWeights, Tid2eidOutOfRange) {
  for (int64_t bad : {4, -1, 1000}) {
    SCOPED_TRACE(bad);
    tensor("layers.0.ffn.gate.tid2eid").ptr<int64_t>()[17] = bad;
    const std::string msg = load_error(write(str_cat("tid", bad + 10)));
    EXPECT_NE(msg.find("'layers.0.ffn.gate.tid2eid'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(str_cat("expert id ", bad)), std::string::npos) << msg;
    EXPECT_NE(msg.find("[0, 4)"), std::string::npos) << msg;
  }
  // I32 tables load as well (and are range-checked the same way).
  HostTensor t32(DType::I32, {300, 2});
  for (int64_t i = 0; i < 600; ++i) t32.ptr<int32_t>()[i] = static_cast<int32_t>(i % 4);
  tensor("layers.0.ffn.gate.tid2eid") = std::move(t32);
  const ModelWeights w = load_weights(write("tid32"), cfg_, {});
  EXPECT_EQ(w.layers[0].ffn.tid2eid.ptr<int32_t>()[599], 3);
  tensor("layers.0.ffn.gate.tid2eid").ptr<int32_t>()[0] = 9;
  EXPECT_NE(load_error(write("tid32bad")).find("expert id 9"), std::string::npos);
}

TEST_F(LoadWeights, PartialMtpLayerIsReported) {
  erase("mtp.0.e_proj.weight");
  const Checkpoint ckpt = write("partial_mtp");
  EXPECT_NE(load_error(ckpt).find("missing tensor 'mtp.0.e_proj.weight'"), std::string::npos);
  // Without MTP loading, the leftover mtp.0.* tensors are ignored.
  EXPECT_FALSE(load_weights(ckpt, cfg_, {Device::kCPU, false}).mtp.has_value());
  // A config without an MTP layer treats mtp.0.* as not wanted either.
  cfg_.num_nextn_predict_layers = 0;
  EXPECT_FALSE(load_weights(ckpt, cfg_, {}).mtp.has_value());
}

}  // namespace
}  // namespace dsv4
