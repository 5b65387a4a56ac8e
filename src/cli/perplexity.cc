// dsv4 perplexity: perplexity of a text file, and KL divergence / top-1 agreement against a saved reference run
// (as llama.cpp's `llama-perplexity --kl-divergence`). Uses only the Engine's public score().
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "dsv4/core/buffer.h"
#include "dsv4/io/file.h"
#include "dsv4/io/safetensors.h"
#include "dsv4/runtime/engine.h"
#include "dsv4/runtime/sampler.h"

namespace dsv4::cli {
namespace {

// log_softmax of one row, in double, rounded to f32 (what --save-logits stores, so a run compared with its own
// saved reference gives KL exactly 0).
void log_softmax_row(const float* logits, int64_t V, float* out) {
  const double lz = log_sum_exp(logits, V);
  for (int64_t v = 0; v < V; ++v) out[v] = static_cast<float>(static_cast<double>(logits[v]) - lz);
}

struct Reference {
  std::unique_ptr<SafetensorsFile> file;
  const float* log_probs = nullptr;
  const int64_t* targets = nullptr;
  int64_t rows = 0;
};

Reference open_reference(const std::string& path, int64_t V, int64_t ctx, const std::vector<int32_t>& targets) {
  Reference r;
  r.file = SafetensorsFile::open(path);
  const TensorInfo* lp = r.file->find("log_probs");
  const TensorInfo* tg = r.file->find("targets");
  DSV4_CHECK_ARG(lp != nullptr && tg != nullptr, "--kl-reference '", path,
                 "' is not a `dsv4 perplexity --save-logits` file (needs log_probs and targets)");
  DSV4_CHECK_ARG(lp->dtype == DType::F32 && lp->shape.size() == 2 && tg->dtype == DType::I64 && tg->shape.size() == 1 &&
                     lp->shape[0] == tg->shape[0],
                 "--kl-reference '", path, "': log_probs must be F32 [N, V] and targets I64 [N]");
  DSV4_CHECK_ARG(lp->shape[1] == V, "--kl-reference '", path, "' has vocabulary ", lp->shape[1], ", the model has ", V);
  const auto& meta = r.file->metadata();
  auto it = meta.find("ctx");
  DSV4_CHECK_ARG(it == meta.end() || it->second == std::to_string(ctx), "--kl-reference '", path,
                 "' was made with --ctx ", it == meta.end() ? "" : it->second, ", this run uses --ctx ", ctx);
  r.rows = lp->shape[0];
  DSV4_CHECK_ARG(r.rows == static_cast<int64_t>(targets.size()), "--kl-reference '", path, "' scores ", r.rows,
                 " tokens, this run ", targets.size(), " (same --file, tokenizer, --ctx and --max-tokens?)");
  r.log_probs = static_cast<const float*>(r.file->data(*lp));
  r.targets = static_cast<const int64_t*>(r.file->data(*tg));
  for (int64_t i = 0; i < r.rows; ++i) {
    DSV4_CHECK_ARG(r.targets[i] == targets[static_cast<size_t>(i)], "--kl-reference '", path, "': token ", i, " is ",
                   r.targets[i], " there and ", targets[static_cast<size_t>(i)],
                   " here (a different text or tokenizer)");
  }
  return r;
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "perplexity",
      "Perplexity of a text file; with --kl-reference also KL divergence and top-1 agreement against a saved run");
  struct Opts {
    std::string dir, file, save_logits, kl_reference;
    int64_t ctx = 256, max_tokens = 0;
    DeviceFlags flags;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("-m,--model", o->dir, "Model directory")->required();
  cmd->add_option("--file", o->file, "Text file to score (e.g. models/dsv4-tiny-kjv/heldout.txt)")->required();
  cmd->add_option("--ctx", o->ctx,
                  "Window length: the text is cut into windows of ctx tokens, each scored as BOS + its first ctx - 1 "
                  "tokens, so every token is predicted once")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_option("--max-tokens", o->max_tokens, "Score only the first N tokens of the text (0 = all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  auto* save = cmd->add_option("--save-logits", o->save_logits,
                               "Write this run's log-probabilities [N, V] (F32) and targets to a .safetensors file")
                   ->check(output_file_folder());
  cmd->add_option("--kl-reference", o->kl_reference,
                  "Compare with a --save-logits file: mean and 99th-percentile KL(reference || this run), top-1 "
                  "agreement")
      ->check(CLI::ExistingFile)
      ->excludes(save);
  o->flags.add_to(cmd);
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o] {
    // A regular file only (a directory or FIFO is refused at once), up to 1 GiB of text.
    const std::string text = read_text_file(o->file, "--file", int64_t{1} << 30);
    DSV4_CHECK_ARG(!text.empty(), "--file '", o->file, "' is empty");

    EngineOptions eo;
    o->flags.apply(eo);
    eo.max_seqs = 1;
    eo.load_mtp = false;  // teacher-forced scoring never drafts
    if (eo.max_model_len == 0) eo.max_model_len = o->ctx;
    const std::unique_ptr<Tokenizer> tok = load_tokenizer_if_present(o->dir);
    std::vector<int32_t> tokens = tok ? tok->encode(text, /*add_special=*/false) : byte_level_ids(text);
    if (o->max_tokens > 0 && static_cast<int64_t>(tokens.size()) > o->max_tokens) tokens.resize(o->max_tokens);
    DSV4_CHECK_ARG(!tokens.empty(), "--file '", o->file, "' has no tokens");
    check_token_ids(tokens, model_vocab_size(o->dir));  // a tokenizer larger than the model's fails before loading
    Engine engine(o->dir, eo);
    const int64_t V = engine.config().vocab_size, N = static_cast<int64_t>(tokens.size());
    const int32_t bos = static_cast<int32_t>(engine.config().bos_token_id);

    Reference ref;
    if (!o->kl_reference.empty()) ref = open_reference(o->kl_reference, V, o->ctx, tokens);
    std::vector<float> saved;
    if (!o->save_logits.empty()) saved.resize(static_cast<size_t>(N * V));

    const auto t0 = std::chrono::steady_clock::now();
    const int64_t windows = (N + o->ctx - 1) / o->ctx;
    double nll = 0, ref_nll = 0;
    int64_t agree = 0;
    std::vector<double> kl;
    std::vector<float> lp(static_cast<size_t>(V));
    for (int64_t w = 0; w < windows; ++w) {
      const int64_t begin = w * o->ctx, n = std::min(o->ctx, N - begin);
      std::vector<int32_t> input = {bos};
      input.insert(input.end(), tokens.begin() + begin, tokens.begin() + begin + n - 1);
      const std::vector<float> logits = engine.score(input);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = begin + i;
        const int32_t target = tokens[static_cast<size_t>(row)];
        log_softmax_row(logits.data() + i * V, V, lp.data());
        nll -= lp[static_cast<size_t>(target)];
        if (!saved.empty()) std::copy(lp.begin(), lp.end(), saved.begin() + row * V);
        if (ref.rows > 0) {
          const float* r = ref.log_probs + row * V;
          double k = 0;
          for (int64_t v = 0; v < V; ++v) {
            const double pr = std::exp(static_cast<double>(r[v]));
            k += pr * (static_cast<double>(r[v]) - static_cast<double>(lp[static_cast<size_t>(v)]));
          }
          kl.push_back(std::max(k, 0.0));
          agree += argmax_token(r, V) == argmax_token(lp.data(), V);
          ref_nll -= r[target];
        }
      }
      const int64_t done = begin + n;
      std::fprintf(stderr, "\rperplexity: window %lld/%lld, %lld/%lld tokens, ppl %.4f", (long long)(w + 1),
                   (long long)windows, (long long)done, (long long)N, std::exp(nll / static_cast<double>(done)));
      std::fflush(stderr);
    }
    std::fprintf(stderr, "\n");
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double ppl = std::exp(nll / static_cast<double>(N));

    if (!saved.empty()) {
      std::vector<int64_t> targets(tokens.begin(), tokens.end());
      save_safetensors(o->save_logits,
                       {{"log_probs", Tensor(saved.data(), DType::F32, {N, V})},
                        {"targets", Tensor(targets.data(), DType::I64, {N})}},
                       {{"ctx", std::to_string(o->ctx)}, {"model", o->dir}, {"perplexity", std::to_string(ppl)}});
    }
    nlohmann::json j;
    j["perplexity"] = ppl;
    j["mean_nll"] = nll / static_cast<double>(N);
    j["tokens"] = N;
    j["windows"] = windows;
    j["ctx"] = o->ctx;
    j["seconds"] = seconds;
    j["device"] = o->flags.device_used();
    if (ref.rows > 0) {
      std::vector<double> sorted = kl;
      std::sort(sorted.begin(), sorted.end());
      double mean = 0;
      for (double k : kl) mean += k;
      mean /= static_cast<double>(kl.size());
      // 99th percentile, nearest rank.
      const size_t rank = static_cast<size_t>(std::ceil(0.99 * static_cast<double>(sorted.size())));
      j["kl_mean"] = mean;
      j["kl_p99"] = sorted[std::max<size_t>(rank, 1) - 1];
      j["kl_max"] = sorted.back();
      j["top1_agreement"] = static_cast<double>(agree) / static_cast<double>(N);
      j["reference_perplexity"] = std::exp(ref_nll / static_cast<double>(N));
    }
    if (o->json) {
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("perplexity %.4f over %lld tokens (%lld windows of %lld) in %.2f s on %s\n", ppl, (long long)N,
                (long long)windows, (long long)o->ctx, seconds, o->flags.device_used().c_str());
    if (ref.rows > 0) {
      std::printf("vs reference (perplexity %.4f): KL mean %.6g, p99 %.6g, max %.6g; top-1 agreement %.4f\n",
                  j["reference_perplexity"].get<double>(), j["kl_mean"].get<double>(), j["kl_p99"].get<double>(),
                  j["kl_max"].get<double>(), j["top1_agreement"].get<double>());
    }
    if (!o->save_logits.empty())
      std::printf("log-probabilities [%lld, %lld] written to %s\n", (long long)N, (long long)V, o->save_logits.c_str());
  });
}

}  // namespace dsv4::cli
