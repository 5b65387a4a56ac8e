// Parsing of DeepseekV4ForCausalLM config.json, mirroring transformers' DeepseekV4Config.__post_init__
// (transformers 5.17): legacy fields fold in, defaults derive the same layer/MLP schedules and the same
// per-layer-type rope parameters.
#include "dsv4/io/config.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsv4/core/checked.h"
#include "dsv4/core/status.h"
#include "dsv4/io/file.h"
#include "dsv4/io/json.h"
#include "dsv4/io/limits.h"

namespace dsv4 {
namespace {

using json = nlohmann::json;

const char* json_type(const json& v) { return v.type_name(); }

struct Reader {
  const json& j;
  std::string origin;

  [[noreturn]] void bad(const std::string& key, const std::string& problem) const {
    fail(StatusCode::kParseError, origin, ": field '", key, "' ", problem);
  }
  bool has(const std::string& key) const { return j.contains(key) && !j.at(key).is_null(); }

  int64_t get_int(const std::string& key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const json& v = j.at(key);
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        bad(key, str_cat("is ", v.dump(), ", out of range"));
      }
      return v.get<int64_t>();
    }
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float() && double_is_int64(v.get<double>())) return static_cast<int64_t>(v.get<double>());
    if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()) {
      bad(key, str_cat("is ", v.dump(), ", out of range"));
    }
    bad(key, str_cat("must be an integer, got ", json_type(v), " ", v.dump()));
  }
  double get_double(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = j.at(key);
    if (!v.is_number()) bad(key, str_cat("must be a number, got ", json_type(v)));
    const double d = v.get<double>();
    if (!std::isfinite(d)) bad(key, str_cat("must be finite, got ", v.dump()));
    return d;
  }
  bool get_bool(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = j.at(key);
    if (!v.is_boolean()) bad(key, str_cat("must be true or false, got ", json_type(v)));
    return v.get<bool>();
  }
  std::string get_string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = j.at(key);
    if (!v.is_string()) bad(key, str_cat("must be a string, got ", json_type(v)));
    return v.get<std::string>();
  }
};

AttentionType parse_attention_type(const std::string& s, const Reader& r, const std::string& key) {
  if (s == "sliding_attention") return AttentionType::kSliding;
  if (s == "compressed_sparse_attention") return AttentionType::kCompressedSparse;
  if (s == "heavily_compressed_attention") return AttentionType::kHeavilyCompressed;
  r.bad(key, str_cat("has unknown layer type '", s,
                     "' (expected sliding_attention, compressed_sparse_attention or heavily_compressed_attention)"));
}

// Rope parameters of one rope-type label, from an already-resolved dict (nested form), as
// transformers' default / yarn init functions read them.
RopeParams parse_rope_dict(const json& d, const std::string& label, const ModelConfig& cfg, const std::string& origin,
                           bool force_unit_attention_factor) {
  const Reader r{d, str_cat(origin, " rope_parameters.", label)};
  RopeParams p;
  const std::string type = r.get_string("rope_type", r.get_string("type", "default"));
  p.theta = r.get_double("rope_theta", label == "main" ? 10000.0 : 160000.0);
  if (p.theta <= 1.0) r.bad("rope_theta", "must be > 1");
  if (type == "default") {
    p.type = RopeType::kDefault;
    return p;
  }
  if (type != "yarn") {
    r.bad("rope_type", str_cat("'", type, "' is not supported (dsv4 implements 'default' and 'yarn')"));
  }
  p.type = RopeType::kYarn;
  if (!r.has("original_max_position_embeddings")) r.bad("original_max_position_embeddings", "is required for yarn");
  p.original_max_position_embeddings = r.get_double("original_max_position_embeddings", 0);
  if (p.original_max_position_embeddings <= 0) r.bad("original_max_position_embeddings", "must be > 0");
  p.factor = r.has("factor") ? r.get_double("factor", 1.0)
                             : static_cast<double>(cfg.max_position_embeddings) / p.original_max_position_embeddings;
  if (p.factor <= 0) r.bad("factor", "must be > 0");
  // transformers: `get("beta_fast") or 32` — a 0 also falls back to the default.
  p.beta_fast = r.get_double("beta_fast", 0.0);
  if (p.beta_fast == 0.0) p.beta_fast = 32.0;
  p.beta_slow = r.get_double("beta_slow", 0.0);
  if (p.beta_slow == 0.0) p.beta_slow = 1.0;
  p.truncate = true;  // read from the top-level rope dict, which only holds main/compress
  if (force_unit_attention_factor && !r.has("attention_factor")) {
    p.attention_factor = 1.0;
  } else if (r.has("attention_factor")) {
    p.attention_factor = r.get_double("attention_factor", 1.0);
  } else {
    auto mscale_of = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
    const double mscale = r.get_double("mscale", 0.0);
    const double mscale_all_dim = r.get_double("mscale_all_dim", 0.0);
    p.attention_factor = (mscale != 0.0 && mscale_all_dim != 0.0)
                             ? mscale_of(p.factor, mscale) / mscale_of(p.factor, mscale_all_dim)
                             : mscale_of(p.factor, 1.0);
  }
  return p;
}

void parse_rope(const json& j, ModelConfig& cfg, const std::string& origin) {
  const Reader r{j, origin};
  const double rope_theta = r.get_double("rope_theta", 10000.0);
  const double compress_rope_theta = r.get_double("compress_rope_theta", 160000.0);
  json rp = json::object();
  if (r.has("rope_parameters")) {
    rp = j.at("rope_parameters");
  } else if (r.has("rope_scaling")) {  // legacy spelling, folded in by PreTrainedConfig
    rp = j.at("rope_scaling");
  }
  if (!rp.is_object()) r.bad(r.has("rope_parameters") ? "rope_parameters" : "rope_scaling", "must be an object");
  if (rp.contains("main") && rp.contains("compress") && rp.at("main").is_object() && rp.at("compress").is_object()) {
    cfg.rope_main = parse_rope_dict(rp.at("main"), "main", cfg, origin, false);
    cfg.rope_compress = parse_rope_dict(rp.at("compress"), "compress", cfg, origin, false);
    return;
  }
  json main = json::object({{"rope_type", "default"}, {"rope_theta", rope_theta}});
  json compress = json::object();
  for (auto it = rp.begin(); it != rp.end(); ++it) {
    if (it.key() != "main" && it.key() != "compress") compress[it.key()] = it.value();
  }
  compress["rope_theta"] = compress_rope_theta;
  // A legacy "type" key stands in for "rope_type": parse_rope_dict reads either, and checks it is a string.
  cfg.rope_main = parse_rope_dict(main, "main", cfg, origin, false);
  cfg.rope_compress = parse_rope_dict(compress, "compress", cfg, origin, true);
}

}  // namespace

const char* attention_type_name(AttentionType t) {
  switch (t) {
    case AttentionType::kSliding:
      return "sliding_attention";
    case AttentionType::kCompressedSparse:
      return "compressed_sparse_attention";
    case AttentionType::kHeavilyCompressed:
      return "heavily_compressed_attention";
  }
  return "?";
}
const char* mlp_type_name(MlpType t) { return t == MlpType::kHashMoe ? "hash_moe" : "moe"; }
const char* scoring_func_name(ScoringFunc f) {
  switch (f) {
    case ScoringFunc::kSqrtSoftplus:
      return "sqrtsoftplus";
    case ScoringFunc::kSoftmax:
      return "softmax";
    case ScoringFunc::kSigmoid:
      return "sigmoid";
  }
  return "?";
}

int64_t ModelConfig::compress_rate(AttentionType t) const {
  switch (t) {
    case AttentionType::kSliding:
      return 0;
    case AttentionType::kCompressedSparse:
      return compress_rate_csa;
    case AttentionType::kHeavilyCompressed:
      return compress_rate_hca;
  }
  return 0;
}

ModelConfig ModelConfig::from_json_text(const std::string& text, const std::string& origin) {
  const json j = parse_json(text, origin);
  if (!j.is_object()) fail(StatusCode::kParseError, origin, ": top level must be a JSON object");
  const Reader r{j, origin};
  ModelConfig c;

  const std::string model_type = r.get_string("model_type", "deepseek_v4");
  if (model_type != "deepseek_v4") r.bad("model_type", str_cat("is '", model_type, "', dsv4 runs 'deepseek_v4'"));
  if (r.has("architectures")) {
    const json& a = j.at("architectures");
    if (!a.is_array() || a.empty() || !a.at(0).is_string()) r.bad("architectures", "must be a list of strings");
    c.architecture = a.at(0).get<std::string>();
    if (c.architecture != "DeepseekV4ForCausalLM" && c.architecture != "DeepSeekV4ForCausalLM") {
      r.bad("architectures", str_cat("is '", c.architecture, "', dsv4 runs DeepseekV4ForCausalLM"));
    }
  }
  const std::string act = r.get_string("hidden_act", "silu");
  if (act != "silu") r.bad("hidden_act", str_cat("is '", act, "', DeepSeek-V4 uses 'silu'"));

  c.vocab_size = r.get_int("vocab_size", c.vocab_size);
  c.hidden_size = r.get_int("hidden_size", c.hidden_size);
  c.moe_intermediate_size = r.get_int("moe_intermediate_size", c.moe_intermediate_size);
  c.num_hidden_layers = r.get_int("num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = r.get_int("num_attention_heads", c.num_attention_heads);
  if (r.get_int("num_key_value_heads", 1) != 1) r.bad("num_key_value_heads", "must be 1 (shared-KV MQA)");
  c.head_dim = r.get_int("head_dim", c.head_dim);
  c.q_lora_rank = r.get_int("q_lora_rank", c.q_lora_rank);
  c.o_lora_rank = r.get_int("o_lora_rank", c.o_lora_rank);
  c.o_groups = r.get_int("o_groups", c.o_groups);
  c.num_experts_per_tok = r.get_int("num_experts_per_tok", c.num_experts_per_tok);
  c.n_routed_experts = r.get_int("n_routed_experts", c.n_routed_experts);
  c.n_shared_experts = r.get_int("n_shared_experts", c.n_shared_experts);
  const std::string scoring = r.get_string("scoring_func", "sqrtsoftplus");
  if (scoring == "sqrtsoftplus") {
    c.scoring_func = ScoringFunc::kSqrtSoftplus;
  } else if (scoring == "softmax") {
    c.scoring_func = ScoringFunc::kSoftmax;
  } else if (scoring == "sigmoid") {
    c.scoring_func = ScoringFunc::kSigmoid;
  } else {
    r.bad("scoring_func", str_cat("is '", scoring, "' (expected sqrtsoftplus, softmax or sigmoid)"));
  }
  c.norm_topk_prob = r.get_bool("norm_topk_prob", true);
  c.routed_scaling_factor = r.get_double("routed_scaling_factor", c.routed_scaling_factor);
  c.swiglu_limit = r.get_double("swiglu_limit", c.swiglu_limit);
  c.max_position_embeddings = r.get_int("max_position_embeddings", c.max_position_embeddings);
  c.hc_mult = r.get_int("hc_mult", c.hc_mult);
  c.hc_sinkhorn_iters = r.get_int("hc_sinkhorn_iters", c.hc_sinkhorn_iters);
  c.hc_eps = r.get_double("hc_eps", c.hc_eps);
  c.sliding_window = r.get_int("sliding_window", c.sliding_window);
  c.index_n_heads = r.get_int("index_n_heads", c.index_n_heads);
  c.index_head_dim = r.get_int("index_head_dim", c.index_head_dim);
  c.index_topk = r.get_int("index_topk", c.index_topk);
  c.num_nextn_predict_layers = r.get_int("num_nextn_predict_layers", c.num_nextn_predict_layers);
  c.rms_norm_eps = r.get_double("rms_norm_eps", c.rms_norm_eps);
  c.bos_token_id = r.get_int("bos_token_id", c.bos_token_id);
  c.tie_word_embeddings = r.get_bool("tie_word_embeddings", false);
  if (c.tie_word_embeddings) r.bad("tie_word_embeddings", "is true; DeepSeek-V4 has a separate head");
  if (j.contains("eos_token_id")) {
    const json& e = j.at("eos_token_id");
    c.eos_token_ids.clear();
    auto token_id = [&](const json& v) -> int64_t {
      if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > (uint64_t{1} << 62))) {
        r.bad("eos_token_id", str_cat("must hold token ids (integers), got ", v.dump()));
      }
      return v.get<int64_t>();
    };
    if (e.is_number_integer()) {
      c.eos_token_ids.push_back(token_id(e));
    } else if (e.is_array()) {
      if (e.size() > 1024) r.bad("eos_token_id", str_cat("has ", e.size(), " entries (at most 1024)"));
      for (const json& v : e) c.eos_token_ids.push_back(token_id(v));
    } else if (!e.is_null()) {
      r.bad("eos_token_id", "must be an integer, a list of integers or null");
    }
  }
  const int64_t n = c.num_hidden_layers;
  if (n <= 0 || n > kConfigLimits.num_hidden_layers) {
    r.bad("num_hidden_layers", str_cat("is ", n, ", outside [1, ", kConfigLimits.num_hidden_layers, "]"));
  }

  // compress_rates: dict per attention type, defaults {CSA: 4, HCA: 128}; legacy scalars fold in.
  if (r.has("compress_rates")) {
    const json& cr = j.at("compress_rates");
    if (!cr.is_object()) r.bad("compress_rates", "must be an object");
    const Reader rr{cr, origin + " compress_rates"};
    c.compress_rate_csa = rr.get_int("compressed_sparse_attention", 4);
    c.compress_rate_hca = rr.get_int("heavily_compressed_attention", 128);
  }
  c.compress_rate_csa = r.get_int("compress_rate_csa", c.compress_rate_csa);
  c.compress_rate_hca = r.get_int("compress_rate_hca", c.compress_rate_hca);

  // layer_types: explicit > legacy compress_ratios (0/4/128) > default (2x HCA then CSA/HCA interleave).
  if (r.has("layer_types")) {
    const json& lt = j.at("layer_types");
    if (!lt.is_array()) r.bad("layer_types", "must be a list");
    for (const json& v : lt) {
      if (!v.is_string()) r.bad("layer_types", "must be a list of strings");
      c.layer_types.push_back(parse_attention_type(v.get<std::string>(), r, "layer_types"));
    }
  } else if (r.has("compress_ratios")) {
    const json& cr = j.at("compress_ratios");
    if (!cr.is_array()) r.bad("compress_ratios", "must be a list of integers");
    for (const json& v : cr) {
      if (!v.is_number_integer()) r.bad("compress_ratios", "must be a list of integers");
      const int64_t ratio = v.is_number_unsigned() && v.get<uint64_t>() > 128 ? -1 : v.get<int64_t>();
      AttentionType type = AttentionType::kSliding;
      if (ratio == 4) {
        type = AttentionType::kCompressedSparse;
      } else if (ratio == 128) {
        type = AttentionType::kHeavilyCompressed;
      } else if (ratio != 0) {  // checked for every entry, the MTP layers' trailing ones too
        r.bad("compress_ratios", str_cat("holds ", ratio,
                                         "; only 0, 4 and 128 map to layer types (use "
                                         "layer_types + compress_rates for other rates)"));
      }
      if (static_cast<int64_t>(c.layer_types.size()) < n) c.layer_types.push_back(type);  // MTP entries: unused
    }
  } else {
    c.layer_types.assign(std::min<int64_t>(n, 2), AttentionType::kHeavilyCompressed);
    for (int64_t i = 0; i < std::max<int64_t>(n - 2, 0); ++i) {
      c.layer_types.push_back(i % 2 ? AttentionType::kCompressedSparse : AttentionType::kHeavilyCompressed);
    }
  }
  if (static_cast<int64_t>(c.layer_types.size()) > n) c.layer_types.resize(n);
  if (static_cast<int64_t>(c.layer_types.size()) != n) {
    r.bad(r.has("layer_types") ? "layer_types" : "compress_ratios",
          str_cat("has ", c.layer_types.size(), " entries, num_hidden_layers is ", n));
  }

  // mlp_layer_types: explicit > first num_hash_layers (default 3) hash_moe, the rest moe.
  if (r.has("mlp_layer_types")) {
    const json& mt = j.at("mlp_layer_types");
    if (!mt.is_array()) r.bad("mlp_layer_types", "must be a list");
    for (const json& v : mt) {
      const std::string s = v.is_string() ? v.get<std::string>() : std::string();
      if (s == "hash_moe") {
        c.mlp_layer_types.push_back(MlpType::kHashMoe);
      } else if (s == "moe") {
        c.mlp_layer_types.push_back(MlpType::kMoe);
      } else {
        r.bad("mlp_layer_types", str_cat("has entry ", v.dump(), " (expected \"hash_moe\" or \"moe\")"));
      }
    }
    if (static_cast<int64_t>(c.mlp_layer_types.size()) > n) c.mlp_layer_types.resize(n);
    if (static_cast<int64_t>(c.mlp_layer_types.size()) != n) {
      r.bad("mlp_layer_types", str_cat("has ", c.mlp_layer_types.size(), " entries, num_hidden_layers is ", n));
    }
  } else {
    const int64_t n_hash = r.get_int("num_hash_layers", 3);
    if (n_hash < 0 || n_hash > kConfigLimits.num_hidden_layers) {
      r.bad("num_hash_layers", str_cat("is ", n_hash, ", outside [0, ", kConfigLimits.num_hidden_layers, "]"));
    }
    for (int64_t i = 0; i < n; ++i) c.mlp_layer_types.push_back(i < n_hash ? MlpType::kHashMoe : MlpType::kMoe);
  }

  // partial_rotary_factor: explicit > legacy qk_rope_head_dim / head_dim > 64 / 512.
  double prf = 64.0 / 512.0;
  if (r.has("partial_rotary_factor")) {
    prf = r.get_double("partial_rotary_factor", prf);
  } else if (r.has("qk_rope_head_dim")) {
    const int64_t rope_dim = r.get_int("qk_rope_head_dim", 64);
    if (rope_dim <= 0 || rope_dim > kConfigLimits.head_dim) {
      r.bad("qk_rope_head_dim", str_cat("is ", rope_dim, ", outside [1, ", kConfigLimits.head_dim, "]"));
    }
    if (c.head_dim <= 0 || c.head_dim > kConfigLimits.head_dim) {
      r.bad("head_dim", str_cat("is ", c.head_dim, ", outside [1, ", kConfigLimits.head_dim, "]"));
    }
    prf = static_cast<double>(rope_dim) / static_cast<double>(c.head_dim);
  }
  // head_dim is range-checked by validate(); a wild one must not make this conversion undefined.
  const double rope_dim = static_cast<double>(c.head_dim) * prf + 1e-9;
  c.rope_head_dim = double_is_int64(std::floor(rope_dim)) ? static_cast<int64_t>(rope_dim) : -1;

  parse_rope(j, c, origin);
  c.quantization = parse_quantization_config(j, origin);
  c.validate();
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  return from_json_text(read_text_file(path, "config file", kMaxConfigBytes), path);
}

void ModelConfig::validate() const {
  // Every size field within a plausible range (kConfigLimits), so that no product of them overflows and no
  // allocation is sized by an absurd value: the error names the field.
  auto in_range = [](int64_t v, int64_t lo, int64_t hi, const char* name) {
    DSV4_CHECK_ARG(v >= lo && v <= hi, "config: ", name, " is ", v, ", outside the plausible range [", lo, ", ", hi,
                   "]");
  };
  const ConfigLimits& L = kConfigLimits;
  in_range(vocab_size, 1, L.vocab_size, "vocab_size");
  in_range(hidden_size, 1, L.hidden_size, "hidden_size");
  in_range(moe_intermediate_size, 1, L.intermediate_size, "moe_intermediate_size");
  in_range(num_hidden_layers, 1, L.num_hidden_layers, "num_hidden_layers");
  in_range(num_attention_heads, 1, L.num_heads, "num_attention_heads");
  in_range(head_dim, 1, L.head_dim, "head_dim");
  in_range(q_lora_rank, 1, L.lora_rank, "q_lora_rank");
  in_range(o_lora_rank, 1, L.lora_rank, "o_lora_rank");
  in_range(o_groups, 1, L.num_heads, "o_groups");
  in_range(num_experts_per_tok, 1, L.num_experts, "num_experts_per_tok");
  in_range(n_routed_experts, 1, L.num_experts, "n_routed_experts");
  in_range(hc_mult, 1, L.hc_mult, "hc_mult");
  in_range(hc_sinkhorn_iters, 1, L.hc_sinkhorn_iters, "hc_sinkhorn_iters");
  in_range(sliding_window, 1, L.sliding_window, "sliding_window");
  in_range(index_n_heads, 1, L.num_heads, "index_n_heads");
  in_range(index_head_dim, 1, L.head_dim, "index_head_dim");
  in_range(index_topk, 1, L.index_topk, "index_topk");
  in_range(compress_rate_csa, 1, L.compress_rate, "compress_rates.compressed_sparse_attention");
  in_range(compress_rate_hca, 1, L.compress_rate, "compress_rates.heavily_compressed_attention");
  in_range(max_position_embeddings, 1, L.max_position_embeddings, "max_position_embeddings");
  in_range(bos_token_id, 0, vocab_size - 1, "bos_token_id");
  DSV4_CHECK_ARG(static_cast<int64_t>(layer_types.size()) == num_hidden_layers &&
                     static_cast<int64_t>(mlp_layer_types.size()) == num_hidden_layers,
                 "config: layer_types (", layer_types.size(), ") and mlp_layer_types (", mlp_layer_types.size(),
                 ") must have num_hidden_layers (", num_hidden_layers, ") entries");
  auto finite = [](double v, const char* name) {
    DSV4_CHECK_ARG(std::isfinite(v), "config: ", name, " must be finite, got ", v);
  };
  finite(routed_scaling_factor, "routed_scaling_factor");
  finite(swiglu_limit, "swiglu_limit");
  finite(hc_eps, "hc_eps");
  finite(rms_norm_eps, "rms_norm_eps");
  for (const RopeParams* p : {&rope_main, &rope_compress}) {
    const char* which = p == &rope_main ? "rope_parameters.main" : "rope_parameters.compress";
    DSV4_CHECK_ARG(std::isfinite(p->theta) && std::isfinite(p->factor) && p->factor > 0 &&
                       std::isfinite(p->original_max_position_embeddings) && std::isfinite(p->beta_fast) &&
                       std::isfinite(p->beta_slow) && std::isfinite(p->attention_factor),
                   "config: ", which, " holds a non-finite or non-positive value (rope_theta ", p->theta, ", factor ",
                   p->factor, ")");
  }
  DSV4_CHECK_ARG(num_experts_per_tok <= n_routed_experts, "config: num_experts_per_tok (", num_experts_per_tok,
                 ") exceeds n_routed_experts (", n_routed_experts, ")");
  DSV4_CHECK_ARG(n_shared_experts == 1, "config: n_shared_experts must be 1 (DeepSeek-V4 has one shared expert), got ",
                 n_shared_experts);
  DSV4_CHECK_ARG(rope_head_dim > 0 && rope_head_dim % 2 == 0 && rope_head_dim <= head_dim,
                 "config: the rope dimension (head_dim * partial_rotary_factor = ", rope_head_dim,
                 ") must be even, > 0 and <= head_dim (", head_dim, ")");
  DSV4_CHECK_ARG(rope_head_dim <= index_head_dim, "config: index_head_dim (", index_head_dim,
                 ") must be >= the rope dimension (", rope_head_dim, ")");
  DSV4_CHECK_ARG((num_attention_heads * head_dim) % o_groups == 0 && num_attention_heads % o_groups == 0,
                 "config: num_attention_heads (", num_attention_heads, ") must be divisible by o_groups (", o_groups,
                 ")");
  DSV4_CHECK_ARG(num_nextn_predict_layers >= 0 && num_nextn_predict_layers <= 1,
                 "config: num_nextn_predict_layers must be 0 or 1, got ", num_nextn_predict_layers);
  DSV4_CHECK_ARG(rms_norm_eps > 0 && hc_eps >= 0, "config: rms_norm_eps must be > 0 and hc_eps >= 0");
  for (int64_t id : eos_token_ids) {
    DSV4_CHECK_ARG(id >= 0 && id < vocab_size, "config: eos_token_id ", id, " is outside the vocabulary");
  }
}

std::string ModelConfig::to_json() const {
  json j;
  j["architectures"] = {architecture};
  j["model_type"] = "deepseek_v4";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["moe_intermediate_size"] = moe_intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = 1;
  j["head_dim"] = head_dim;
  j["qk_rope_head_dim"] = rope_head_dim;
  j["q_lora_rank"] = q_lora_rank;
  j["o_lora_rank"] = o_lora_rank;
  j["o_groups"] = o_groups;
  j["num_experts_per_tok"] = num_experts_per_tok;
  j["n_routed_experts"] = n_routed_experts;
  j["n_shared_experts"] = n_shared_experts;
  j["scoring_func"] = scoring_func_name(scoring_func);
  j["norm_topk_prob"] = norm_topk_prob;
  j["routed_scaling_factor"] = routed_scaling_factor;
  j["swiglu_limit"] = swiglu_limit;
  j["max_position_embeddings"] = max_position_embeddings;
  json lt = json::array();
  for (AttentionType t : layer_types) lt.push_back(attention_type_name(t));
  j["layer_types"] = lt;
  json mt = json::array();
  for (MlpType t : mlp_layer_types) mt.push_back(mlp_type_name(t));
  j["mlp_layer_types"] = mt;
  j["compress_rates"] = {{"compressed_sparse_attention", compress_rate_csa},
                         {"heavily_compressed_attention", compress_rate_hca}};
  j["rope_theta"] = rope_main.theta;
  j["compress_rope_theta"] = rope_compress.theta;
  auto rope_json = [](const RopeParams& p) {
    json d = {{"rope_theta", p.theta}};
    if (p.type == RopeType::kDefault) {
      d["rope_type"] = "default";
    } else {
      d["rope_type"] = "yarn";
      d["factor"] = p.factor;
      d["original_max_position_embeddings"] = p.original_max_position_embeddings;
      d["beta_fast"] = p.beta_fast;
      d["beta_slow"] = p.beta_slow;
      d["attention_factor"] = p.attention_factor;
    }
    return d;
  };
  j["rope_parameters"] = {{"main", rope_json(rope_main)}, {"compress", rope_json(rope_compress)}};
  j["hc_mult"] = hc_mult;
  j["hc_sinkhorn_iters"] = hc_sinkhorn_iters;
  j["hc_eps"] = hc_eps;
  j["sliding_window"] = sliding_window;
  j["index_n_heads"] = index_n_heads;
  j["index_head_dim"] = index_head_dim;
  j["index_topk"] = index_topk;
  j["num_nextn_predict_layers"] = num_nextn_predict_layers;
  j["rms_norm_eps"] = rms_norm_eps;
  j["hidden_act"] = "silu";
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_ids.size() == 1 ? json(eos_token_ids[0]) : json(eos_token_ids);
  j["tie_word_embeddings"] = false;
  write_quantization_config(quantization, j);
  return j.dump(2);
}

}  // namespace dsv4
