// Random DeepSeek-V4 checkpoints for tests and the default tiny model (`dsv4 make-tiny`).
#pragma once

#include <cstdint>
#include <string>

#include "dsv4/io/config.h"

namespace dsv4 {

// A tiny config with every layer type (sliding, CSA, HCA), hash and routed MoE layers, YaRN compress
// rope, an MTP layer, and a vocabulary that covers byte-level prompts (>= 256 + specials).
ModelConfig tiny_config();

// Writes config.json + model.safetensors (official DeepSeek naming; bf16 matrices, f32 mHC/sink/ape/
// bias, I64 tid2eid; with mtp.0.* when cfg.has_mtp()) with unit-scale random parameters from `seed`.
void write_random_checkpoint(const std::string& dir, const ModelConfig& cfg, uint64_t seed);

}  // namespace dsv4
