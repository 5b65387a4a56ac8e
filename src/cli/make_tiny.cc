#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "dsv4/model/quantize.h"
#include "dsv4/model/random_checkpoint.h"

namespace dsv4::cli {

void register_make_tiny(CLI::App& app) {
  auto* cmd = app.add_subcommand("make-tiny", "Write a random tiny DeepSeek-V4 checkpoint (official naming, with MTP)");
  struct Opts {
    std::string out, expert_dtype = "fp4";
    uint64_t seed = 0;
    bool quantized = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("OUT_DIR", o->out, "Output directory")->required();
  cmd->add_option("--seed", o->seed, "Random seed")->check(non_negative_integer())->capture_default_str();
  cmd->add_flag("--quantized", o->quantized,
                "Write DeepSeek's official quantised layout (FP8 dense projections, --expert-dtype experts), as "
                "`dsv4 quantize` makes it from the bf16 checkpoint of the same seed");
  cmd->add_option("--expert-dtype", o->expert_dtype, "With --quantized: routed experts fp4, fp8 or bf16")
      ->capture_default_str();
  cmd->callback([o] {
    const ModelConfig cfg = tiny_config();
    if (!o->quantized) {
      write_random_checkpoint(o->out, cfg, o->seed);
      std::printf("wrote a random tiny DeepSeek-V4 checkpoint (seed %llu) to %s\n",
                  static_cast<unsigned long long>(o->seed), o->out.c_str());
      return;
    }
    QuantizeOptions qo;
    qo.experts = parse_expert_dtype(o->expert_dtype);
    const std::string tmp = o->out + ".bf16-tmp";
    std::filesystem::remove_all(tmp);
    write_random_checkpoint(tmp, cfg, o->seed);
    try {
      quantize_checkpoint(tmp, o->out, qo);
    } catch (...) {
      std::filesystem::remove_all(tmp);
      throw;
    }
    std::filesystem::remove_all(tmp);
    std::printf(
        "wrote a random tiny DeepSeek-V4 checkpoint (seed %llu) in the official quantised layout "
        "(FP8 dense, %s experts) to %s\n",
        static_cast<unsigned long long>(o->seed), o->expert_dtype.c_str(), o->out.c_str());
  });
}

}  // namespace dsv4::cli
