// Subcommands of the dsv4 CLI. Each registers its options on the app and runs from a callback; errors
// propagate as dsv4::Error and become "error: ..." with exit code 1 in main().
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/core/tensor.h"
#include "dsv4/io/quantization.h"
#include "dsv4/runtime/engine.h"
#include "dsv4/tokenizer/tokenizer.h"

namespace dsv4::cli {

void register_make_tiny(CLI::App& app);
void register_info(CLI::App& app);
void register_score(CLI::App& app);
void register_generate(CLI::App& app);
void register_bench(CLI::App& app);
void register_serve(CLI::App& app);
void register_quantize(CLI::App& app);
void register_perplexity(CLI::App& app);

// Device options shared by every command that runs the model: --device, --cuda-precision and the CUDA
// graph flags (--cudagraph-mode, --enforce-eager, --capture-sizes).
struct DeviceFlags {
  std::string device = "auto", cuda_precision = "bf16", cudagraph_mode, capture_sizes, kv_cache_dtype = "auto",
              activation_quant = "none", cuda_weights = "bf16";
  bool enforce_eager = false;
  // Scheduler and state pool (0 = the engine's default for the device).
  int64_t max_model_len = 0, max_num_seqs = 0, max_batch_tokens = 0, kv_cache_memory = 0, page_tokens = 0;
  double gpu_memory_utilization = 0.90;
  int threads = 0;  // CPU backend threads (0: one per core)
  // Ranks (--tensor-parallel-size) and expert parallelism over them (--expert-parallel).
  int64_t tensor_parallel_size = 1;
  bool expert_parallel = false;
  void add_to(CLI::App* cmd);
  void apply(EngineOptions& options) const;  // validates and fills the engine options
  // The device the commands run on ("cpu" or "cuda"; --device auto resolved).
  std::string device_used() const;
};

// Shared option parsing.
// Validator for unsigned options (seeds): CLI11 would read "-3" as 2^64 - 3; a sign is an error instead.
CLI::Validator non_negative_integer();
// Validator for output files: the folder they go into exists (checked before the model loads, not after the run).
CLI::Validator output_file_folder();
Device parse_device(const std::string& name);
// --expert-dtype: fp4 | fp8 | bf16.
WeightFormat parse_expert_dtype(const std::string& name);
// --cuda-precision: "bf16" or "f32".
DType parse_cuda_precision(const std::string& name);
// A comma list of non-negative integers (each at most INT32_MAX); errors name `flag` and call each entry `what`.
std::vector<int32_t> parse_ids(const std::string& csv, const char* flag = "--ids", const char* what = "a token id");
// Byte-level ids: each UTF-8 byte b of the text becomes token id b (models without tokenizer.json).
std::vector<int32_t> byte_level_ids(const std::string& text);

// The model directory's tokenizer.json, if it has one.
std::unique_ptr<Tokenizer> load_tokenizer_if_present(const std::string& model_dir);
// Text → ids with the model's tokenizer (special tokens such as BOS added as its post-processor says),
// or byte-level ids when there is none.
std::vector<int32_t> text_to_ids(const Tokenizer* tok, const std::string& text);
// The vocabulary size in the model directory's config.json: prompt ids are checked against it (check_token_ids)
// before the model loads, so an id out of range fails at once, not after the weights and the state are allocated.
int64_t model_vocab_size(const std::string& model_dir);
// Before the model loads (config.json only): check_token_ids on every prompt, and each prompt plus `new_tokens` within
// the max_model_len the engine will have under `eo` (max_model_len_for) — a request too long for the engine fails at
// once, not after the weights and the state are allocated. "prompt i: " prefixes the error where there are several.
void check_prompts(const std::string& model_dir, const std::vector<std::vector<int32_t>>& prompts, int64_t new_tokens,
                   const EngineOptions& eo);

}  // namespace dsv4::cli
