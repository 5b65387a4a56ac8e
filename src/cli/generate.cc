#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "dsv4/io/file.h"
#include "dsv4/runtime/engine.h"

namespace dsv4::cli {

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "Generate tokens from a prompt");
  struct Opts {
    std::string dir, ids, prompt, prompts_file;
    int64_t n = 32, spec_tokens = 0;
    float temperature = 0.0f, top_p = 1.0f;
    uint64_t seed = 0;
    DeviceFlags flags;
    bool json = false, ignore_eos = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("-m,--model", o->dir, "Model directory")->required();
  auto* ids = cmd->add_option("--ids", o->ids, "Comma-separated prompt token ids");
  auto* prompt = cmd->add_option("-p,--prompt", o->prompt,
                                 "Prompt text (tokenized with the model's tokenizer.json; byte-level ids without one)");
  auto* file = cmd->add_option("--prompts", o->prompts_file, "File with one prompt per line (generated as a batch)");
  ids->excludes(prompt)->excludes(file);
  prompt->excludes(file);
  cmd->add_option("-n,--max-new-tokens", o->n, "Tokens to generate per prompt")->capture_default_str();
  cmd->add_option("--temperature", o->temperature, "Sampling temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-p", o->top_p, "Nucleus sampling mass")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Sampling seed")->check(non_negative_integer())->capture_default_str();
  cmd->add_option("--spec-tokens", o->spec_tokens, "MTP draft tokens per step (0 = off)")
      ->check(CLI::Range(int64_t{0}, kMaxSpecTokens))
      ->capture_default_str();
  o->flags.add_to(cmd);
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past end-of-sequence tokens");
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o, ids, prompt, file] {
    // Given but empty (often an unset shell variable): say which, not "needs --ids, --prompt or --prompts".
    DSV4_CHECK_ARG(ids->count() == 0 || !o->ids.empty(), "--ids is empty");
    DSV4_CHECK_ARG(prompt->count() == 0 || !o->prompt.empty(), "--prompt is empty");
    DSV4_CHECK_ARG(file->count() == 0 || !o->prompts_file.empty(), "--prompts names no file");
    const std::unique_ptr<Tokenizer> tok = load_tokenizer_if_present(o->dir);
    std::vector<std::vector<int32_t>> prompts;
    if (!o->ids.empty()) {
      prompts.push_back(parse_ids(o->ids));
    } else if (!o->prompt.empty()) {
      prompts.push_back(text_to_ids(tok.get(), o->prompt));
    } else if (!o->prompts_file.empty()) {
      // A regular file only (a directory or FIFO is refused at once), up to 1 GiB of text.
      std::istringstream in(read_text_file(o->prompts_file, "--prompts file", int64_t{1} << 30));
      for (std::string line; std::getline(in, line);) {
        if (!line.empty()) prompts.push_back(text_to_ids(tok.get(), line));
      }
      DSV4_CHECK_ARG(!prompts.empty(), "--prompts file '", o->prompts_file, "' has no non-empty line");
    } else {
      fail(StatusCode::kInvalidArgument, "generate needs --ids, --prompt or --prompts");
    }
    GenerateOptions go;
    go.max_new_tokens = o->n;
    go.sampling = {o->temperature, o->top_p, o->seed};
    go.sampling.validate();  // bad sampling flags fail before any weight is read
    go.spec_tokens = o->spec_tokens;
    EngineOptions eo;
    o->flags.apply(eo);
    eo.graph_spec_tokens = o->spec_tokens;
    check_prompts(o->dir, prompts, go.max_new_tokens, eo);  // before the weights and the state are allocated
    Engine engine(o->dir, eo);
    go.stop_at_eos = !o->ignore_eos;
    // One prompt streams to the terminal as it is generated: decoded text with a tokenizer (whole UTF-8
    // characters only), token ids without one.
    const bool stream = !o->json && prompts.size() == 1;
    std::unique_ptr<StreamDecoder> decoder;
    // The prompt is echoed with the first token (or at the end), once generate's checks have passed: a request it
    // rejects prints nothing on stdout.
    bool prompt_shown = false;
    const auto show_prompt = [&] {
      if (!prompt_shown) std::printf("%s", o->prompt.c_str());
      prompt_shown = true;
    };
    if (stream && tok) {
      decoder = std::make_unique<StreamDecoder>(*tok, /*skip_special=*/true);
      go.on_token = [&decoder, &show_prompt](size_t, int32_t token) {
        show_prompt();
        std::printf("%s", decoder->push(token).c_str());
        std::fflush(stdout);
      };
    } else if (stream) {
      go.on_token = [](size_t, int32_t token) {
        std::printf("%d ", token);
        std::fflush(stdout);
      };
    }
    const GenerateResult r = engine.generate(prompts, go);
    const GenerateStats& s = r.stats;
    if (o->json) {
      nlohmann::json j;
      j["tokens"] = r.tokens;
      if (tok) {
        std::vector<std::string> texts;
        for (const auto& t : r.tokens) texts.push_back(tok->decode(t, /*skip_special=*/true));
        j["text"] = texts;
      }
      j["prompt_tokens"] = s.prompt_tokens;
      j["generated_tokens"] = s.generated_tokens;
      j["load_seconds"] = engine.load_seconds();
      j["prefill_seconds"] = s.prefill_seconds;
      j["prefill_wait_seconds"] = s.prefill_wait_seconds;
      j["prefill_steps"] = s.prefill_steps;
      j["decode_seconds"] = s.decode_seconds;
      j["decode_tokens_per_second"] = s.decode_tokens_per_second();
      // The whole run through the scheduler: output tokens per second of wall time, per-request latencies.
      j["total_seconds"] = s.total_seconds;
      j["output_tokens_per_second"] = s.total_seconds > 0 ? s.generated_tokens / s.total_seconds : 0.0;
      auto pct = [](std::vector<double> v, double q) {
        std::sort(v.begin(), v.end());
        return v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
      };
      j["latency_seconds"] = {{"p50", pct(r.latency_seconds, 0.5)}, {"p99", pct(r.latency_seconds, 0.99)}};
      j["first_token_seconds"] = {{"p50", pct(r.first_token_seconds, 0.5)}, {"p99", pct(r.first_token_seconds, 0.99)}};
      j["preemptions"] = s.preemptions;
      j["scheduler_steps"] = s.steps;
      if (eo.device == Device::kCUDA) {
        j["capture_seconds"] = engine.capture_seconds();
        j["graph_bytes"] = engine.graph_bytes();
      }
      // Weights in memory: quantised codes and scales under --cuda-weights quantized.
      j["weights_bytes"] = engine.weights_bytes();
      j["settings"] = {{"device", o->flags.device_used()},
                       {"cuda_weights", o->flags.cuda_weights},
                       {"max_new_tokens", o->n},
                       {"temperature", o->temperature},
                       {"top_p", o->top_p},
                       {"seed", o->seed},
                       {"spec_tokens", o->spec_tokens},
                       {"prompts", prompts.size()},
                       {"tensor_parallel_size", o->flags.tensor_parallel_size},
                       {"expert_parallel", o->flags.expert_parallel}};
      if (o->spec_tokens > 0) {
        j["acceptance_rate"] = s.acceptance_rate();
        j["mean_accepted_length"] = s.mean_accepted_length();
      }
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    if (stream) {
      if (decoder) {
        show_prompt();
        std::printf("%s", decoder->flush().c_str());
      }
      std::printf("\n");
    } else {
      for (size_t i = 0; i < r.tokens.size(); ++i) {
        if (tok) {
          std::printf("[%zu] %s\n", i, tok->decode(r.tokens[i], /*skip_special=*/true).c_str());
        } else {
          std::printf("[%zu]", i);
          for (int32_t t : r.tokens[i]) std::printf(" %d", t);
          std::printf("\n");
        }
      }
    }
    // Statistics go to stderr: stdout holds the generated text alone (flushed first, so that a terminal or a
    // 2>&1 pipe shows the text before the statistics).
    std::fflush(stdout);
    std::fprintf(stderr,
                 "generated %lld tokens (%zu prompt%s, %lld prompt tokens) on %s: load %.3f s, prefill %.3f s, "
                 "decode %.3f s, %.1f tokens/s\n",
                 (long long)s.generated_tokens, prompts.size(), prompts.size() > 1 ? "s" : "",
                 (long long)s.prompt_tokens, o->flags.device_used().c_str(), engine.load_seconds(), s.prefill_seconds,
                 s.decode_seconds, s.decode_tokens_per_second());
    if (o->spec_tokens > 0) {
      std::fprintf(stderr, "speculative decoding: K=%lld, acceptance rate %.3f, mean accepted length %.2f\n",
                   (long long)o->spec_tokens, s.acceptance_rate(), s.mean_accepted_length());
    }
  });
}

}  // namespace dsv4::cli
