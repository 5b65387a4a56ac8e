#include "dsv4/model/quantize.h"

#include <chrono>
#include <cstdio>

#include "cli/commands.h"

namespace dsv4::cli {

WeightFormat parse_expert_dtype(const std::string& name) {
  if (name == "fp4") return WeightFormat::kFp4;
  if (name == "fp8") return WeightFormat::kFp8Block;
  if (name == "bf16") return WeightFormat::kPlain;
  fail(StatusCode::kInvalidArgument, "--expert-dtype must be fp4, fp8 or bf16, got '", name, "'");
}

void register_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "quantize",
      "Write DeepSeek's official quantised layout (FP8 dense projections with UE8M0 128x128 block scales, FP4 "
      "routed experts with UE8M0 per-32 scales, shards + index) from any checkpoint dsv4 loads");
  struct Opts {
    std::string in, out, expert_dtype = "fp4";
    double shard_gib = 5.0;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("IN", o->in, "Source model directory (config.json + safetensors)")->required();
  cmd->add_option("OUT", o->out, "Output directory")->required();
  cmd->add_option("--expert-dtype", o->expert_dtype, "Routed experts: fp4 (Flash/Pro), fp8 (-Base) or bf16")
      ->capture_default_str();
  cmd->add_option("--shard-size", o->shard_gib, "Largest shard in GiB")
      ->check(CLI::Range(1e-6, 1e6))
      ->capture_default_str();
  cmd->callback([o] {
    QuantizeOptions qo;
    qo.experts = parse_expert_dtype(o->expert_dtype);
    qo.shard_bytes = static_cast<size_t>(o->shard_gib * static_cast<double>(size_t{1} << 30));
    const auto t0 = std::chrono::steady_clock::now();
    const QuantizeReport r = quantize_checkpoint(o->in, o->out, qo);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("quantized %s -> %s: %zu tensors in %d shard%s, %.2f MiB -> %.2f MiB (experts %s) in %.1f s\n",
                o->in.c_str(), o->out.c_str(), r.tensors, r.shards, r.shards == 1 ? "" : "s",
                static_cast<double>(r.input_bytes) / (1 << 20), static_cast<double>(r.output_bytes) / (1 << 20),
                o->expert_dtype.c_str(), s);
  });
}

}  // namespace dsv4::cli
