#include <cstdio>

#include "cli/commands.h"
#include "dsv4/model/random_checkpoint.h"

namespace dsv4::cli {

void register_make_tiny(CLI::App& app) {
  auto* cmd = app.add_subcommand("make-tiny", "Write a random tiny DeepSeek-V4 checkpoint (official naming, with MTP)");
  auto out = std::make_shared<std::string>();
  auto seed = std::make_shared<uint64_t>(0);
  cmd->add_option("OUT_DIR", *out, "Output directory")->required();
  cmd->add_option("--seed", *seed, "Random seed")->check(non_negative_integer())->capture_default_str();
  cmd->callback([out, seed] {
    const ModelConfig cfg = tiny_config();
    write_random_checkpoint(*out, cfg, *seed);
    std::printf("wrote a random tiny DeepSeek-V4 checkpoint (seed %llu) to %s\n",
                static_cast<unsigned long long>(*seed), out->c_str());
  });
}

}  // namespace dsv4::cli
