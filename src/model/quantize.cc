#include "dsv4/model/quantize.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsv4/core/buffer.h"
#include "dsv4/io/config.h"
#include "dsv4/io/file.h"
#include "dsv4/io/safetensors.h"
#include "dsv4/model/weights.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

// One tensor of the output: its name, dtype, shape and how to produce its bytes.
struct OutTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::string source;  // inventory name it comes from
  bool is_scale = false;
  size_t nbytes() const {
    size_t n = dtype_size(dtype);
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  }
};

}  // namespace

QuantizeReport quantize_checkpoint(const std::string& in_dir, const std::string& out_dir,
                                   const QuantizeOptions& options) {
  DSV4_CHECK_ARG(options.shard_bytes > 0, "quantize: the shard size must be > 0");
  DSV4_CHECK_ARG(!fs::exists(out_dir) || !fs::equivalent(in_dir, out_dir),
                 "quantize: the output directory must differ from the input '", in_dir, "'");
  const ModelConfig in_cfg = ModelConfig::from_file((fs::path(in_dir) / "config.json").string());
  const Checkpoint ckpt = Checkpoint::open(in_dir);
  const WeightReader reader(ckpt, in_cfg, /*load_mtp=*/true);
  ModelConfig out_cfg = in_cfg;
  out_cfg.quantization = QuantizationConfig::official(options.experts);

  // Plan every output tensor, then cut shards.
  std::vector<OutTensor> plan;
  for (const TensorSpec& s : reader.specs()) {
    const WeightFormat fmt = checkpoint_format(out_cfg.quantization, s);
    if (fmt == WeightFormat::kPlain) {
      const Tensor src = reader.raw(s.name);
      // Unquantised: unchanged, unless the source stored it quantised (then bf16, which holds it exactly).
      const DType dt = reader.format(s.name) == WeightFormat::kPlain ? src.dtype() : DType::BF16;
      plan.push_back({s.name, dt, s.shape, s.name});
      continue;
    }
    const int64_t out = s.shape[0], in = s.shape[1];
    DSV4_CHECK_ARG(fmt != WeightFormat::kFp4 || in % 2 == 0, "quantize: '", s.name, "' has an odd input dimension ", in,
                   ": packed FP4 needs an even one (use --expert-dtype fp8 or bf16)");
    plan.push_back(
        {s.name, fmt == WeightFormat::kFp4 ? DType::I8 : DType::F8_E4M3, quantized_weight_shape(fmt, out, in), s.name});
    plan.push_back({scale_tensor_name(s.name), DType::F8_E8M0, quantized_scale_shape(fmt, out, in), s.name, true});
  }
  std::vector<std::vector<size_t>> shards(1);
  size_t shard_size = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const size_t n = plan[i].nbytes();
    // A scale stays in its weight's shard.
    if (!shards.back().empty() && !plan[i].is_scale && shard_size + n > options.shard_bytes) {
      shards.emplace_back();
      shard_size = 0;
    }
    shards.back().push_back(i);
    shard_size += n;
  }

  create_output_directory(out_dir, "quantize output directory");
  QuantizeReport report;
  report.input_bytes = ckpt.total_bytes();
  report.shards = static_cast<int>(shards.size());
  nlohmann::json weight_map = nlohmann::json::object();
  std::vector<float> values;
  for (size_t k = 0; k < shards.size(); ++k) {
    char file[64];
    std::snprintf(file, sizeof(file), "model-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    std::vector<HostTensor> storage;
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (size_t i : shards[k]) {
      const OutTensor& o = plan[i];
      if (o.is_scale) continue;  // written with its weight, just below
      const TensorSpec& s = reader.spec(o.source);
      const WeightFormat fmt = checkpoint_format(out_cfg.quantization, s);
      if (fmt == WeightFormat::kPlain) {
        HostTensor t(o.dtype, o.shape);
        const Tensor src = reader.raw(o.source);
        if (src.dtype() == o.dtype && reader.format(o.source) == WeightFormat::kPlain) {
          std::memcpy(t.t().data(), src.data(), src.nbytes());
        } else {
          reader.read_f32(o.source, &values);
          convert_from_f32(values.data(), o.dtype, t.t().data(), values.size());
        }
        tensors.emplace_back(o.name, t.t());
        storage.push_back(std::move(t));
        continue;
      }
      reader.read_f32(o.source, &values);
      const int64_t out = s.shape[0], in = s.shape[1];
      HostTensor q(o.dtype, o.shape);
      HostTensor sc(DType::F8_E8M0, quantized_scale_shape(fmt, out, in));
      const std::string what = str_cat("quantize: '", o.source, "'");
      if (fmt == WeightFormat::kFp8Block) {
        quantize_fp8_block(values.data(), out, in, q.ptr<uint8_t>(), sc.ptr<uint8_t>(), what);
      } else {
        quantize_fp4(values.data(), out, in, q.ptr<uint8_t>(), sc.ptr<uint8_t>(), what);
      }
      tensors.emplace_back(o.name, q.t());
      tensors.emplace_back(scale_tensor_name(o.name), sc.t());
      storage.push_back(std::move(q));
      storage.push_back(std::move(sc));
    }
    for (const auto& [name, t] : tensors) {
      weight_map[name] = file;
      report.output_bytes += t.nbytes();
      ++report.tensors;
    }
    save_safetensors((fs::path(out_dir) / file).string(), tensors, {{"format", "pt"}});
  }
  nlohmann::json index = {{"metadata", {{"total_size", report.output_bytes}}}, {"weight_map", weight_map}};
  std::ofstream(fs::path(out_dir) / "model.safetensors.index.json") << index.dump(2) << "\n";
  // A stale single-file checkpoint would be shadowed by the index but confuse readers: remove it.
  fs::remove(fs::path(out_dir) / "model.safetensors");
  // config.json: the source's own text with the quantisation fields replaced (fields dsv4 ignores survive).
  nlohmann::json cfg_json;
  {
    std::ifstream in(fs::path(in_dir) / "config.json");
    cfg_json = nlohmann::json::parse(in);
  }
  cfg_json.erase("quantization_config");
  cfg_json.erase("expert_dtype");
  write_quantization_config(out_cfg.quantization, cfg_json);
  std::ofstream(fs::path(out_dir) / "config.json") << cfg_json.dump(2) << "\n";
  for (const char* extra : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}) {
    const fs::path src = fs::path(in_dir) / extra;
    if (fs::exists(src)) fs::copy_file(src, fs::path(out_dir) / extra, fs::copy_options::overwrite_existing);
  }
  return report;
}

}  // namespace dsv4
