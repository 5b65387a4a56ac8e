#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>

#include "cli/commands.h"
#include "dsv4/backend/cpu.h"
#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/env.h"
#include "dsv4/core/log.h"
#include "dsv4/core/status.h"
#include "dsv4/graph/buckets.h"
#include "dsv4/graph/mode.h"
#include "dsv4/io/config.h"
#include "dsv4/runtime/engine.h"

namespace dsv4::cli {

CLI::Validator output_file_folder() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        if (v.empty()) return "names no file";
        const std::filesystem::path parent = std::filesystem::path(v).parent_path();
        std::error_code ec;
        if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
          return "the folder '" + parent.string() + "' does not exist";
        }
        if (std::filesystem::is_directory(v, ec)) return "'" + v + "' is a directory";
        return std::string();
      },
      "FILE");
}

CLI::Validator non_negative_integer() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        const bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
        if (!digits) return "must be a non-negative integer, got '" + v + "'";
        // Above 2^64 - 1 CLI11 would clamp silently: out of range is an error instead.
        const std::string trimmed = v.substr(std::min(v.find_first_not_of('0'), v.size() - 1));
        const std::string kMax = "18446744073709551615";
        if (trimmed.size() > kMax.size() || (trimmed.size() == kMax.size() && trimmed > kMax)) {
          return "must be at most " + kMax + ", got '" + v + "'";
        }
        return std::string();
      },
      "UINT");
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::kCPU;
  if (name == "cuda") return Device::kCUDA;
  if (name == "auto") {
    // Once per process: the first command that resolves it says what it chose and why.
    static const Device chosen = [] {
      const bool gpu = cuda::device_count() > 0;
      log_info("--device auto: ", gpu ? "cuda, " + cuda::device_summary() : "cpu (" + cuda::unavailable_reason() + ")");
      return gpu ? Device::kCUDA : Device::kCPU;
    }();
    return chosen;
  }
  fail(StatusCode::kInvalidArgument, "--device must be auto, cpu or cuda, got '", name, "'");
}

DType parse_cuda_precision(const std::string& name) {
  if (name == "bf16") return DType::BF16;
  if (name == "f32") return DType::F32;
  fail(StatusCode::kInvalidArgument, "--cuda-precision must be bf16 or f32, got '", name, "'");
}

void DeviceFlags::add_to(CLI::App* cmd) {
  cmd->add_option("--device", device, "auto (CUDA when a GPU is present, else the CPU), cpu or cuda")
      ->capture_default_str();
  cmd->add_option("--cuda-precision", cuda_precision, "bf16 (default) or f32 weights/activations on --device cuda")
      ->capture_default_str();
  cmd->add_option("--cuda-weights", cuda_weights,
                  "bf16 (default: a quantised checkpoint's FP8 / FP4 matrices dequantised at load) or quantized (kept "
                  "as stored in GPU memory, expanded in the decode kernels' registers; needs a quantised checkpoint, "
                  "--device cuda, --cuda-precision bf16)")
      ->capture_default_str();
  cmd->add_option("--cudagraph-mode", cudagraph_mode,
                  "CUDA graphs: none | breakable | full | auto (default: full for decode and drafter, breakable for "
                  "prefill; env DSV4_USE_BREAKABLE_CUDAGRAPH=0 turns breakable graphs off)");
  cmd->add_flag("--enforce-eager", enforce_eager, "Run every forward eagerly (no CUDA graphs)");
  cmd->add_option("--capture-sizes", capture_sizes, "CUDA graph capture sizes, e.g. 1,2,4,8 (default 1,2,4,8,...,256)");
  cmd->add_option("--max-model-len", max_model_len,
                  "Positions per sequence, prompt + generated (default or 0: the model's max_position_embeddings)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd->add_option("--max-num-seqs", max_num_seqs,
                  "Sequences running at once (default or 0: 256 on CUDA, 64 on the CPU)")
      ->check(CLI::Range(int64_t{0}, int64_t{65536}));
  cmd->add_option(
         "--max-batch-tokens", max_batch_tokens,
         "Tokens per forward; longer prompts are prefilled in chunks (default or 0: 8192 on CUDA, 512 on the CPU)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  cmd->add_option("--kv-cache-memory", kv_cache_memory,
                  "Bytes of the paged KV/state pool (default or 0: --gpu-memory-utilization on CUDA, 2 GiB on the CPU)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 50));
  cmd->add_option("--kv-cache-dtype", kv_cache_dtype,
                  "How the attention caches hold their values: auto (as computed), bf16, or fp8 (DeepSeek-V4's cache: "
                  "E4M3 with per-64 power-of-two scales, RoPE part bf16, indexer keys Hadamard-rotated in FP4 per "
                  "32; stored packed on CUDA, 584 + 68 bytes per CSA position at the Flash shapes)")
      ->capture_default_str();
  cmd->add_option(
         "--activation-quant", activation_quant,
         "none, or fp8: the activations entering the products DeepSeek stores in FP8/FP4 go through E4M3 per "
         "128 values with power-of-two scales, as DeepSeek's reference inference (one rank only in this build)")
      ->capture_default_str();
  cmd->add_option("--gpu-memory-utilization", gpu_memory_utilization,
                  "Share of the GPU's memory the engine may use; the state pool takes what is left after weights, "
                  "activations and graphs")
      ->check(CLI::Range(0.01, 1.0))
      ->capture_default_str();
  cmd->add_option("--tensor-parallel-size", tensor_parallel_size,
                  "Ranks the model is split over: query heads split across them, one all-reduce per attention "
                  "(--device cpu: threads of this process)")
      ->capture_default_str();
  cmd->add_flag("--expert-parallel", expert_parallel,
                "Split the routed experts over the --tensor-parallel-size ranks (expert e on rank e mod N)");
  cmd->add_option("--page-tokens", page_tokens,
                  "Positions per state page, a multiple of every compress rate (default or 0: derived from the config)")
      ->check(CLI::Range(int64_t{0}, int64_t{65536}));
  cmd->add_option("--threads", threads,
                  "CPU backend threads of the OpenMP loops (default: one per core; matrix products run on one)")
      ->check(CLI::Range(1, 4096));
}

std::string DeviceFlags::device_used() const { return device_name(parse_device(device)); }

void DeviceFlags::apply(EngineOptions& o) const {
  check_environment();  // every DSV4_* switch, before any weight is read, whatever the device
  o.device = parse_device(device);
  if (threads > 0) cpu::set_threads(threads);
  // The CUDA graph flags are checked whatever the device, so a typo is never silently ignored.
  if (!cudagraph_mode.empty()) {
    graph::GraphModeInputs inputs;
    inputs.cudagraph_mode_flag = cudagraph_mode;
    inputs.enforce_eager = enforce_eager;
    graph::resolve_graph_policy(inputs);
  }
  if (!capture_sizes.empty()) {  // parsed and range-checked here, before loading, whatever the device
    graph::CaptureSizeOptions sizes;
    sizes.sizes = graph::parse_capture_sizes(capture_sizes);
    graph::CaptureSizes checked(sizes);
  }
  o.cuda_precision = parse_cuda_precision(cuda_precision);
  o.cuda_quantized_weights = parse_cuda_weights(cuda_weights);
  o.kv_cache_dtype = parse_kv_cache_dtype(kv_cache_dtype);
  kv_formats(o.kv_cache_dtype, o.device, o.cuda_precision);  // a format the device cannot run: before loading
  o.activation_quant = parse_activation_quant(activation_quant);
  o.cudagraph_mode = cudagraph_mode;
  o.enforce_eager = enforce_eager;
  o.capture_sizes = capture_sizes;
  o.max_model_len = max_model_len;
  o.max_seqs = max_num_seqs;
  o.max_batch_tokens = max_batch_tokens;
  o.kv_cache_memory = kv_cache_memory;
  o.gpu_memory_utilization = gpu_memory_utilization;
  o.page_tokens = page_tokens;
  // Range errors name the flag here; the model-dependent limits (heads, experts) are checked against the config
  // before anything is loaded (check_parallel_config).
  DSV4_CHECK_ARG(tensor_parallel_size >= 1 && tensor_parallel_size <= 1024,
                 "--tensor-parallel-size must be in [1, 1024], got ", tensor_parallel_size);
  o.parallel.tensor_parallel_size = static_cast<int>(tensor_parallel_size);
  o.parallel.expert_parallel = expert_parallel;
  check_cuda_weights(o);  // the device, precision and ranks; the checkpoint's format when its config is read
}

std::vector<int32_t> parse_ids(const std::string& csv, const char* flag, const char* what) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i <= csv.size()) {
    const size_t j = std::min(csv.find(',', i), csv.size());
    std::string item = csv.substr(i, j - i);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    DSV4_CHECK_ARG(!item.empty(), flag, ": empty entry in '", csv, "'");
    // Digits only: strtoll alone would also take "+5", " 5" and "0x5"-like prefixes.
    const bool digits = item.find_first_not_of("0123456789") == std::string::npos;
    char* end = nullptr;
    errno = 0;
    const long long v = digits ? std::strtoll(item.c_str(), &end, 10) : -1;
    DSV4_CHECK_ARG(digits && end && *end == '\0' && errno == 0 && v >= 0 && v <= INT32_MAX, flag, ": '", item,
                   "' is not ", what, " (non-negative integer)");
    ids.push_back(static_cast<int32_t>(v));
    i = j + 1;
  }
  return ids;
}

std::vector<int32_t> byte_level_ids(const std::string& text) {
  std::vector<int32_t> ids;
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

std::unique_ptr<Tokenizer> load_tokenizer_if_present(const std::string& model_dir) {
  const std::filesystem::path path = std::filesystem::path(model_dir) / "tokenizer.json";
  if (!std::filesystem::exists(path)) return nullptr;
  return std::make_unique<Tokenizer>(Tokenizer::from_file(path.string()));
}

std::vector<int32_t> text_to_ids(const Tokenizer* tok, const std::string& text) {
  std::vector<int32_t> ids = tok ? tok->encode(text, /*add_special=*/true) : byte_level_ids(text);
  DSV4_CHECK_ARG(!ids.empty(), "the prompt is empty");
  return ids;
}

int64_t model_vocab_size(const std::string& model_dir) {
  return ModelConfig::from_file((std::filesystem::path(model_dir) / "config.json").string()).vocab_size;
}

void check_prompts(const std::string& model_dir, const std::vector<std::vector<int32_t>>& prompts, int64_t new_tokens,
                   const EngineOptions& eo) {
  const ModelConfig cfg = ModelConfig::from_file((std::filesystem::path(model_dir) / "config.json").string());
  const int64_t limit = max_model_len_for(eo, cfg);
  for (size_t i = 0; i < prompts.size(); ++i) {
    try {
      check_token_ids(prompts[i], cfg.vocab_size);
      const int64_t P = static_cast<int64_t>(prompts[i].size());
      DSV4_CHECK_ARG(P <= limit && new_tokens <= limit - P, "the prompt (", P, " tokens)",
                     new_tokens > 0 ? str_cat(" + ", new_tokens, " new tokens") : std::string(),
                     new_tokens > 0 ? " exceed" : " exceeds", " max_model_len (", limit, ")");
    } catch (const Error& e) {
      if (prompts.size() == 1) throw;
      throw Error(e.code(), str_cat("prompt ", i, ": ", e.what()));
    }
  }
}

}  // namespace dsv4::cli
