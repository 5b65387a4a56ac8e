// Random DeepSeek-V4 checkpoints for tests and the default tiny model (`dsv4 make-tiny`).
#pragma once

#include <cstdint>
#include <string>

#include "dsv4/io/config.h"

namespace dsv4 {

// A tiny config with every layer type (sliding, CSA, HCA), hash and routed MoE layers, YaRN compress
// rope, an MTP layer, and a vocabulary that covers byte-level prompts (>= 256 + specials).
ModelConfig tiny_config();

// The first `layers` layers of DeepSeek-V4-Flash at its released dimensions (hidden 4096, 64 heads of 512,
// rope 64, q_lora 1024, o_lora 1024 x 8 groups, 256 experts top-6 + 1 shared of 2048, vocab 129280, window
// 128, CSA 4 / HCA 128, index 64 x 128 top-512, hc_mult 4, 3 hash layers, YaRN) in Flash's layer order
// ([0, 0] + [4, 128] x 20 + [4]), plus its MTP layer. For synthetic benchmarks with random_weights().
ModelConfig flash_slice_config(int64_t layers);

// The config of a synthetic model by name, as `bench --synthetic` and `serve --synthetic` take it: "tiny"
// (tiny_config) or "flash" (flash_slice_config(layers)); kInvalidArgument for any other name.
ModelConfig synthetic_config(const std::string& name, int64_t layers);
// Its display name: "synthetic-tiny", "synthetic-flash-3" (layers + MTP).
std::string synthetic_model_name(const std::string& name, int64_t layers);

// Writes config.json + model.safetensors (official DeepSeek naming; bf16 matrices, f32 mHC/sink/ape/
// bias, I64 tid2eid; with mtp.0.* when cfg.has_mtp()) with unit-scale random parameters from `seed`.
void write_random_checkpoint(const std::string& dir, const ModelConfig& cfg, uint64_t seed);

}  // namespace dsv4
