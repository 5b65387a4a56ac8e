#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "cli/commands.h"
#include "dsv4/core/env.h"
#include "dsv4/io/safetensors.h"
#include "dsv4/model/weights.h"
#include "dsv4/runtime/engine.h"

namespace dsv4::cli {
namespace {

// The component a tensor belongs to (parameter counts and the storage report).
std::string tensor_class(const TensorSpec& s) {
  if (s.name.rfind("mtp.", 0) == 0) return "mtp";
  if (s.name == "embed.weight" || s.name == "head.weight") return "embedding+head";
  if (s.name.find(".ffn.experts.") != std::string::npos) return "routed_experts";
  if (s.name.find(".ffn.shared_experts.") != std::string::npos) return "shared_experts";
  if (s.name.find(".ffn.gate.") != std::string::npos) return "router";
  if (s.name.find(".attn.") != std::string::npos) return "attention";
  if (s.name.find("hc_") != std::string::npos) return "mhc";
  return "norms";
}

// Parameter count per component, from the checkpoint inventory of the config.
std::map<std::string, int64_t> count_parameters(const ModelConfig& cfg, bool with_mtp) {
  std::map<std::string, int64_t> out;
  for (const TensorSpec& s : checkpoint_inventory(cfg, with_mtp)) {
    if (s.kind == WeightKind::kIndex) continue;  // tid2eid is a lookup table, not parameters
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    const std::string part = tensor_class(s);
    out[part] += n;
    out[part == "mtp" ? "total_with_mtp" : "total"] += n;
  }
  out["total_with_mtp"] += out["total"];
  // Active per token: everything but the routed experts, plus top-k of them; one embedding row.
  const int64_t per_expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size;
  out["active_per_token"] = out["total"] - out["routed_experts"] - out["embedding+head"] +
                            cfg.num_hidden_layers * cfg.num_experts_per_tok * per_expert +
                            cfg.vocab_size * cfg.hidden_size + cfg.hidden_size;
  return out;
}

// Per component: the storage formats found in the checkpoint, bytes on disk (weights + scales) and bytes once
// loaded (CPU: f32 matrices; CUDA: bf16 matrices, quantised weights dequantised at load; CUDA with --cuda-weights
// quantized: quantised weights as stored, codes + scales, before the arena's 256-byte alignment).
struct StorageClass {
  std::set<std::string> formats;
  size_t disk_bytes = 0, cpu_bytes = 0, cuda_bytes = 0, cuda_quantized_bytes = 0;
};

std::map<std::string, StorageClass> storage_report(const WeightReader& reader) {
  std::map<std::string, StorageClass> out;
  for (const TensorSpec& s : reader.specs()) {
    StorageClass& c = out[tensor_class(s)];
    const WeightFormat fmt = reader.format(s.name);
    c.formats.insert(fmt == WeightFormat::kPlain ? std::string(dtype_name(reader.raw(s.name).dtype()))
                                                 : std::string(weight_format_name(fmt)));
    c.disk_bytes += reader.stored_bytes(s.name);
    int64_t numel = 1;
    for (int64_t d : s.shape) numel *= d;
    c.cpu_bytes += static_cast<size_t>(numel) * dtype_size(storage_dtype(s.kind, Device::kCPU));
    const size_t cuda = static_cast<size_t>(numel) * dtype_size(storage_dtype(s.kind, Device::kCUDA));
    c.cuda_bytes += cuda;
    // The MTP's h_proj / e_proj are joined into eh_proj, kept quantised only as FP8 with H % 128 == 0
    // (model/weights.h).
    const bool joined_plain = (s.name == "mtp.0.h_proj.weight" || s.name == "mtp.0.e_proj.weight") &&
                              (fmt != WeightFormat::kFp8Block || s.shape[1] % kFp8Block != 0);
    c.cuda_quantized_bytes += fmt != WeightFormat::kPlain && !joined_plain ? reader.stored_bytes(s.name) : cuda;
  }
  StorageClass total;
  for (const auto& [name, c] : out) {
    total.disk_bytes += c.disk_bytes;
    total.cpu_bytes += c.cpu_bytes;
    total.cuda_bytes += c.cuda_bytes;
    total.cuda_quantized_bytes += c.cuda_quantized_bytes;
  }
  out["total"] = total;
  return out;
}

}  // namespace

void register_info(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print the model's config summary, parameter counts and layer types");
  auto dir = std::make_shared<std::string>();
  auto json_out = std::make_shared<bool>(false);
  auto device = std::make_shared<std::string>();
  cmd->add_option("-m,--model", *dir, "Model directory (config.json + safetensors)")->required();
  cmd->add_flag("--json", *json_out, "Print one JSON object");
  cmd->add_option("--device", *device,
                  "cpu or cuda: also load the model there (engine defaults) and report its memory use");
  cmd->callback([dir, json_out, device] {
    const ModelConfig cfg = ModelConfig::from_file(*dir + "/config.json");
    const Checkpoint ckpt = Checkpoint::open(*dir);
    bool has_mtp = false;
    for (const std::string& n : ckpt.names()) has_mtp |= n.rfind("mtp.", 0) == 0;
    // Validates every tensor against the config (quantised formats and scales included).
    const WeightReader reader(ckpt, cfg, /*load_mtp=*/true);
    const auto storage = storage_report(reader);
    const QuantizationConfig& q = cfg.quantization;
    const auto params = count_parameters(cfg, has_mtp && cfg.has_mtp());
    std::vector<std::string> types, mlp;
    for (size_t l = 0; l < cfg.layer_types.size(); ++l) {
      types.push_back(attention_type_name(cfg.layer_types[l]));
      mlp.push_back(mlp_type_name(cfg.mlp_layer_types[l]));
    }
    // Memory of a loaded engine: weights, per-sequence state, activation scratch, device I/O buffers.
    std::map<std::string, size_t> memory;
    if (!device->empty()) {
      EngineOptions eo;
      check_environment();
      eo.device = parse_device(*device);
      Engine engine(*dir, eo);
      memory = {{"weights_bytes", engine.weights_bytes()},
                {"state_bytes", engine.state_bytes()},
                {"activations_bytes", engine.scratch_bytes()},
                {"io_bytes", engine.device_io_bytes()},
                {"graph_bytes", static_cast<size_t>(engine.graph_bytes())}};
      size_t total = 0;
      for (const auto& [k, v] : memory) total += v;
      memory["total_bytes"] = total;
      // The paged state pool: pages, tokens a page holds, tokens the pool holds (ring pages aside).
      const StateLayout& L = engine.state_layout();
      memory["state_pages"] = static_cast<size_t>(engine.pool_pages());
      memory["state_page_bytes"] = static_cast<size_t>(L.page_bytes);
      memory["state_page_tokens"] = static_cast<size_t>(L.page_tokens);
      memory["state_ring_pages_per_sequence"] = static_cast<size_t>(L.ring_pages);
      memory["state_pool_tokens"] =
          static_cast<size_t>(L.context_columns == 0 ? 0 : (engine.pool_pages() - L.ring_pages) * L.page_tokens);
    }
    if (*json_out) {
      nlohmann::json j;
      if (!memory.empty()) {
        j["device"] = *device;
        j["memory"] = memory;
      }
      j["model"] = *dir;
      j["architecture"] = cfg.architecture;
      j["config"] = nlohmann::json::parse(cfg.to_json());
      j["layer_types"] = types;
      j["mlp_layer_types"] = mlp;
      j["parameters"] = params;
      j["has_mtp"] = has_mtp;
      j["checkpoint_bytes"] = ckpt.total_bytes();
      j["quantization"] = {{"quantized", q.quantized},
                           {"dense", weight_format_name(q.dense)},
                           {"experts", weight_format_name(q.experts)},
                           {"expert_dtype", q.expert_dtype}};
      nlohmann::json st = nlohmann::json::object();
      for (const auto& [name, c] : storage) {
        st[name] = {{"disk_bytes", c.disk_bytes},
                    {"cpu_bytes", c.cpu_bytes},
                    {"cuda_bytes", c.cuda_bytes},
                    {"cuda_quantized_bytes", c.cuda_quantized_bytes}};
        if (name != "total") st[name]["formats"] = c.formats;
      }
      j["storage"] = st;
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("model          %s (%s)\n", dir->c_str(), cfg.architecture.c_str());
    std::printf("hidden         %lld, %lld layers, vocab %lld, hc_mult %lld\n", (long long)cfg.hidden_size,
                (long long)cfg.num_hidden_layers, (long long)cfg.vocab_size, (long long)cfg.hc_mult);
    std::printf("attention      %lld heads x %lld (rope %lld), q_lora %lld, o_lora %lld x %lld groups, window %lld\n",
                (long long)cfg.num_attention_heads, (long long)cfg.head_dim, (long long)cfg.rope_head_dim,
                (long long)cfg.q_lora_rank, (long long)cfg.o_lora_rank, (long long)cfg.o_groups,
                (long long)cfg.sliding_window);
    std::printf("compression    CSA rate %lld (indexer %lld x %lld, top-%lld), HCA rate %lld\n",
                (long long)cfg.compress_rate_csa, (long long)cfg.index_n_heads, (long long)cfg.index_head_dim,
                (long long)cfg.index_topk, (long long)cfg.compress_rate_hca);
    std::printf("moe            %lld experts, top-%lld, shared %lld, inter %lld, %s, scale %.3g\n",
                (long long)cfg.n_routed_experts, (long long)cfg.num_experts_per_tok, (long long)cfg.n_shared_experts,
                (long long)cfg.moe_intermediate_size, scoring_func_name(cfg.scoring_func), cfg.routed_scaling_factor);
    std::printf("rope           main theta %.6g; compress theta %.6g%s\n", cfg.rope_main.theta, cfg.rope_compress.theta,
                cfg.rope_compress.type == RopeType::kYarn ? " (YaRN)" : "");
    std::printf("mtp            %s\n", has_mtp ? "yes (mtp.0.*)" : "no");
    std::printf("parameters    ");
    for (const auto& [k, v] : params) std::printf(" %s=%lld", k.c_str(), (long long)v);
    if (!memory.empty()) {
      std::printf("\nmemory (%s)   ", device->c_str());
      for (const auto& [k, v] : memory) {
        if (k.rfind("state_page", 0) == 0 || k.rfind("state_ring", 0) == 0 || k == "state_pool_tokens") {
          std::printf(" %s=%zu", k.c_str(), v);
        } else {
          std::printf(" %s=%.2f MiB", k.c_str(), static_cast<double>(v) / (1 << 20));
        }
      }
    }
    std::printf("\nquantization   %s\n",
                q.quantized ? str_cat("fp8 e4m3 / ue8m0 128x128 dense, experts ", weight_format_name(q.experts),
                                      q.expert_dtype.empty() ? "" : str_cat(" (expert_dtype ", q.expert_dtype, ")"))
                                  .c_str()
                            : "none (plain weights)");
    std::printf("storage        %-16s %10s %12s %12s %12s  %s\n", "component", "disk MiB", "cpu MiB", "cuda MiB",
                "cuda q. MiB", "formats on disk");
    for (const auto& [name, c] : storage) {
      std::string formats;
      for (const std::string& f : c.formats) formats += (formats.empty() ? "" : ", ") + f;
      std::printf("               %-16s %10.2f %12.2f %12.2f %12.2f  %s\n", name.c_str(),
                  static_cast<double>(c.disk_bytes) / (1 << 20), static_cast<double>(c.cpu_bytes) / (1 << 20),
                  static_cast<double>(c.cuda_bytes) / (1 << 20),
                  static_cast<double>(c.cuda_quantized_bytes) / (1 << 20), formats.c_str());
    }
    std::printf("layers\n");
    for (size_t l = 0; l < types.size(); ++l) {
      std::printf("  %2zu  %-30s %s\n", l, types[l].c_str(), mlp[l].c_str());
    }
  });
}

}  // namespace dsv4::cli
