// dsv4 bench: load time, prefill throughput, decode latency/throughput per batch size, speculative
// decoding; medians of repetitions after warm-up; a table or one JSON object.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/commands.h"
#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/log.h"
#include "dsv4/model/flops.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/ops/op_timer.h"
#include "dsv4/runtime/decode_traffic.h"
#include "dsv4/runtime/engine.h"

namespace dsv4::cli {
namespace {

struct Summary {
  double median = 0, min = 0, max = 0;
};

Summary summarise(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v.front(), v.back()};
}

nlohmann::json to_json(const Summary& s) { return {{"median", s.median}, {"min", s.min}, {"max", s.max}}; }

std::vector<int64_t> parse_list(const std::string& csv, const char* flag) {
  std::vector<int64_t> out;
  for (int32_t v : parse_ids(csv, flag, "a count")) {
    DSV4_CHECK_ARG(v > 0, flag, ": values must be > 0");
    out.push_back(v);
  }
  return out;
}

}  // namespace

void register_bench(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Measure load time, prefill and decode speed, speculative decoding");
  struct Opts {
    std::string dir, synthetic, modes, prefill = "128,1024", batches = "1,4,16,64", spec = "0,1,2,3", spec_batch = "1",
                                       prompt, contexts;
    int64_t layers = 3, context = 16, decode_steps = 32, reps = 5, warmup = 1;
    uint64_t seed = 0;
    DeviceFlags flags;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("-m,--model", o->dir, "Model directory (or --synthetic)");
  cmd->add_option("--synthetic", o->synthetic,
                  "Random weights built on the device instead of a checkpoint: 'flash' (DeepSeek-V4-Flash "
                  "dimensions, the first --layers layers + MTP) or 'tiny'");
  cmd->add_option("--layers", o->layers, "Layers of the synthetic Flash slice")->capture_default_str();
  cmd->add_option("--context", o->context, "Prompt tokens before the decode steps")->capture_default_str();
  CLI::Option* contexts_opt = cmd->add_option(
      "--contexts", o->contexts,
      "Contexts (e.g. 1024,32768,1048576) for a batch-1 decode step on a state filled with random values "
      "(no prefill): ms/step against a floor of the weight and state bytes a step reads");
  o->flags.add_to(cmd);
  cmd->add_option("--prefill", o->prefill, "Prompt lengths for prefill throughput")->capture_default_str();
  cmd->add_option("--batch", o->batches, "Batch sizes for decode")->capture_default_str();
  cmd->add_option(
         "--spec-tokens", o->spec,
         "Draft lengths K for speculative decoding (0 = plain decoding, the baseline); on CUDA each K > 0 also "
         "times one drafter forward and one (K + 1)-token target forward at batch 1 in the same run")
      ->capture_default_str();
  cmd->add_option("--spec-batch", o->spec_batch, "Batch sizes for speculative decoding")->capture_default_str();
  cmd->add_option("--decode-steps", o->decode_steps, "Tokens generated per decode measurement")->capture_default_str();
  cmd->add_option("--reps", o->reps, "Measured repetitions (median reported)")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "Warm-up repetitions")->capture_default_str();
  cmd->add_option("-p,--prompt", o->prompt, "Prompt for speculative decoding (default: random ids)");
  cmd->add_option("--seed", o->seed, "Seed of the random prompts")
      ->check(non_negative_integer())
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "Print one JSON object");
  CLI::Option* modes_opt =
      cmd->add_option("--modes", o->modes,
                      "CUDA graph modes to measure, each with its own engine (none, breakable, full, auto); default "
                      "none,breakable,full on CUDA, auto (eager) on the CPU");
  cmd->callback([o, contexts_opt, modes_opt] {
    // Given but empty (often an unset shell variable): an error, as for every list, not the default.
    DSV4_CHECK_ARG(contexts_opt->count() == 0 || !o->contexts.empty(), "--contexts is empty");
    DSV4_CHECK_ARG(modes_opt->count() == 0 || !o->modes.empty(), "--modes is empty");
    const std::vector<int64_t> prefill = parse_list(o->prefill, "--prefill"),
                               batches = parse_list(o->batches, "--batch");
    const std::vector<int64_t> contexts =
        o->contexts.empty() ? std::vector<int64_t>{} : parse_list(o->contexts, "--contexts");
    std::vector<int64_t> spec;
    for (int32_t k : parse_ids(o->spec, "--spec-tokens", "a draft length")) spec.push_back(k);
    const std::vector<int64_t> spec_batches = parse_list(o->spec_batch, "--spec-batch");
    DSV4_CHECK_ARG(o->reps > 0, "--reps must be > 0, got ", o->reps);
    DSV4_CHECK_ARG(o->warmup >= 0, "--warmup must be >= 0, got ", o->warmup);
    DSV4_CHECK_ARG(o->decode_steps > 1, "--decode-steps must be > 1, got ", o->decode_steps);
    DSV4_CHECK_ARG(o->dir.empty() != o->synthetic.empty(), "bench needs exactly one of -m DIR and --synthetic");
    if (!o->synthetic.empty()) synthetic_config(o->synthetic, o->layers);  // a bad name or layer count, up front
    DSV4_CHECK_ARG(o->context > 0, "--context must be > 0");
    std::vector<std::string> modes;
    const std::string mode_list =
        !o->modes.empty() ? o->modes : (o->flags.device_used() == "cuda" ? "none,breakable,full" : "auto");
    for (size_t i = 0; i <= mode_list.size();) {
      const size_t j = std::min(mode_list.find(',', i), mode_list.size());
      const std::string mode = mode_list.substr(i, j - i);
      DSV4_CHECK_ARG(!mode.empty(), "--modes: empty entry in '", mode_list, "'");
      DSV4_CHECK_ARG(mode == "none" || mode == "breakable" || mode == "full" || mode == "auto", "--modes: '", mode,
                     "' is not one of none, breakable, full, auto");
      modes.push_back(mode);
      i = j + 1;
    }
    nlohmann::json out;
    out["model"] = o->synthetic.empty()
                       ? o->dir
                       : str_cat("synthetic ", o->synthetic,
                                 o->synthetic == "flash" ? str_cat(" (", o->layers, " layers + MTP)") : std::string());
    double copy_bw = 0;
    if (o->flags.device_used() == "cuda") {
      check_device_available(Device::kCUDA);  // before the first device allocation
      copy_bw = cuda::measure_copy_bandwidth();
      out["copy_bandwidth_gbs"] = copy_bw / 1e9;
    }
    out["device"] = o->flags.device_used() == "cuda" ? cuda::device_summary() : std::string("cpu");
    out["settings"] = {{"reps", o->reps},
                       {"warmup", o->warmup},
                       {"decode_steps", o->decode_steps},
                       {"tensor_parallel_size", o->flags.tensor_parallel_size},
                       {"expert_parallel", o->flags.expert_parallel}};
    for (const std::string& mode : modes) {
      EngineOptions eo;
      DeviceFlags flags = o->flags;
      flags.cudagraph_mode = mode == "auto" ? "" : mode;
      flags.apply(eo);
      // Sequences: the largest decode batch unless --max-num-seqs says otherwise; prompts longer than
      // --max-batch-tokens are prefilled in chunks (activations are sized by the chunk, not the prompt).
      if (eo.max_seqs == 0) {
        eo.max_seqs = std::max<int64_t>({1, *std::max_element(batches.begin(), batches.end()),
                                         *std::max_element(spec_batches.begin(), spec_batches.end())});
      }
      for (int64_t k : spec) {  // the speculative steps measured run from captured graphs
        if (k > 0) eo.spec_graph_tokens.push_back(k);
      }
      // Positions the measurements need (the longest prompt + its token, or context + decode + drafts).
      int64_t positions_needed =
          std::max(*std::max_element(prefill.begin(), prefill.end()) + 1, o->context + o->decode_steps + 8);
      // A context row decodes positions c .. c + decode_steps - 1.
      for (int64_t c : contexts) positions_needed = std::max(positions_needed, c + o->decode_steps);
      const auto t0 = std::chrono::steady_clock::now();
      std::unique_ptr<Engine> owned;
      if (o->synthetic.empty()) {
        owned = std::make_unique<Engine>(o->dir, eo);
      } else {
        ModelConfig cfg = synthetic_config(o->synthetic, o->layers);
        // A synthetic model's positions: what the bench needs unless --max-model-len says otherwise.
        if (eo.max_model_len == 0)
          eo.max_model_len = std::min(std::max<int64_t>(positions_needed, 4096), cfg.max_position_embeddings);
        // --cuda-weights quantized: the slice in DeepSeek's official layout (FP8 dense, FP4 routed experts), its
        // codes made by random_weights (the same codes for every matrix of a shape).
        if (eo.cuda_quantized_weights) cfg.quantization = QuantizationConfig::official(WeightFormat::kFp4);
        ModelWeights w =
            random_weights(cfg, {eo.device, true, eo.cuda_precision, eo.cuda_quantized_weights}, o->seed + 1);
        owned = std::make_unique<Engine>(std::move(cfg), std::move(w), eo);
      }
      Engine& engine = *owned;
      const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const int64_t V = engine.config().vocab_size;
      std::mt19937_64 rng(o->seed);
      auto random_ids = [&](int64_t n) {
        std::vector<int32_t> ids(static_cast<size_t>(n));
        for (int32_t& x : ids) x = static_cast<int32_t>(2 + rng() % static_cast<uint64_t>(V - 2));
        return ids;
      };
      auto measure = [&](auto&& fn) {
        for (int64_t i = 0; i < o->warmup; ++i) fn();
        std::vector<double> v;
        for (int64_t i = 0; i < o->reps; ++i) v.push_back(fn());
        return summarise(v);
      };
      nlohmann::json j;
      j["mode"] = mode;
      j["load_seconds"] = load_s;  // includes the graph capture
      j["capture_seconds"] = engine.capture_seconds();
      j["graph_bytes"] = engine.graph_bytes();
      j["graphs"] = engine.graph_summary();
      for (int64_t L : prefill) {  // tokens per second of one prompt's forward passes
        if (L + 1 > engine.max_model_len()) {
          log_info("prefill ", L, " skipped: the engine holds ", engine.max_model_len(), " positions per sequence");
          j["prefill_skipped"].push_back(L);
          continue;
        }
        const std::vector<int32_t> ids = random_ids(L);
        ops::start_op_timing();  // device time of the indexer and attention ops (CUDA, outside graph capture)
        const Summary s = measure([&] {
          GenerateOptions go;
          go.max_new_tokens = 1;
          return engine.generate({ids}, go).stats.prefill_seconds;
        });
        const ops::OpTimes ot = ops::stop_op_timing();
        nlohmann::json p = {{"tokens", L}, {"seconds", to_json(s)}, {"tokens_per_second", L / s.median}};
        // Model FLOPs (model/flops.h) per second, and the MFU against the card's dense peak for the format the
        // products run in, where it is known: FP8 with weights kept quantised and FP8 activations (the FP8 / FP4
        // products on E4M3 tensor cores), else BF16.
        const double flops = prefill_flops(engine.config(), L).total(), tflops = flops / s.median / 1e12;
        p["model_tflop"] = flops / 1e12;
        p["tflops_per_second"] = tflops;
        const std::string format =
            eo.cuda_quantized_weights && eo.activation_quant == ActivationQuant::kFp8 ? "fp8" : "bf16";
        const double peak = o->flags.device_used() == "cuda" && eo.cuda_precision == DType::BF16
                                ? dense_peak_tflops(out["device"].get<std::string>(), format)
                                : 0.0;
        if (peak > 0) p["mfu"] = {{"value", tflops / peak}, {"peak_tflops", peak}, {"format", format}};
        if (ot.calls > 0) {  // per prefill (mean over the warm-up and timed runs); the rest = median wall - the two
          const double runs = static_cast<double>(o->warmup + o->reps), wall = s.median;
          p["split"] = {{"indexer_seconds", ot.indexer_seconds / runs},
                        {"attention_seconds", ot.attention_seconds / runs},
                        {"rest_seconds", wall - (ot.indexer_seconds + ot.attention_seconds) / runs}};
        }
        j["prefill"].push_back(p);
      }
      // The floor's state rows: the activation dtype's elements, or the packed rows of the CUDA fp8 cache.
      const KeyRowBytes key_rows =
          key_row_bytes(engine.config(), eo.cuda_precision == DType::F32 ? DType::F32 : DType::BF16,
                        packs_fp8_cache(eo.kv_cache_dtype, engine.options().device));
      for (int64_t B : batches) {  // B sequences of 16 prompt tokens, decode_steps tokens each
        std::vector<std::vector<int32_t>> prompts;
        for (int64_t b = 0; b < B; ++b) prompts.push_back(random_ids(o->context));
        const Summary s = measure([&] {
          GenerateOptions go;
          go.max_new_tokens = o->decode_steps;
          go.stop_at_eos = false;
          const GenerateStats st = engine.generate(prompts, go).stats;
          return st.decode_seconds / static_cast<double>(o->decode_steps - 1);  // token 1 comes from the prefill
        });
        nlohmann::json d = {{"batch", B},
                            {"ms_per_step", to_json({s.median * 1e3, s.min * 1e3, s.max * 1e3})},
                            {"tokens_per_second", static_cast<double>(B) / s.median}};
        if (copy_bw > 0) {  // HBM floor at the middle of the measured steps
          const DecodeTraffic traffic =
              decode_step_traffic(engine.config(), engine.weights(), B, o->context + o->decode_steps / 2, key_rows);
          const double floor_ms = traffic.total() / copy_bw * 1e3;
          d["floor_ms"] = floor_ms;
          d["floor_bytes"] = traffic.bytes;
          d["measured_over_floor"] = s.median * 1e3 / floor_ms;
        }
        if (engine.options().device == Device::kCUDA) {  // the same step without host work in between
          d["device_ms_per_step"] = engine.device_decode_step_ms(B, 20);
        }
        j["decode"].push_back(d);
      }
      for (int64_t N : contexts) {  // batch-1 decode at position N on a random state (no prefill)
        if (N + o->decode_steps > engine.max_model_len()) {
          log_info("context ", N, " skipped: its ", o->decode_steps, " decode steps reach position ",
                   N + o->decode_steps - 1, ", the engine holds ", engine.max_model_len(), " positions per sequence");
          continue;
        }
        engine.fill_state_random(o->seed + 7);
        std::vector<float> logits;
        // One decode step at position p: the logits copied to the host, or (sampled) the greedy token drawn where
        // the engine draws it in generate — on the device on CUDA, no [1, V] logits copied back: a user's step.
        auto step_at = [&](int64_t p, bool sampled) {
          BatchBuilder b;
          b.add({0, static_cast<int32_t>(p), {random_ids(1)[0]}, false});
          if (sampled) {
            engine.forward_greedy(b, /*uniform_decode=*/true);
          } else {
            engine.forward(b, &logits, nullptr, /*uniform_decode=*/true);
          }
        };
        auto time_steps = [&](bool sampled) {
          return measure([&] {
            const auto t = std::chrono::steady_clock::now();
            for (int64_t i = 0; i < o->decode_steps; ++i) step_at(N + i, sampled);
            return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() /
                   static_cast<double>(o->decode_steps);
          });
        };
        ops::start_op_timing();  // eager steps only: graph replays run no ops
        const Summary s = time_steps(false);
        const ops::OpTimes ot = ops::stop_op_timing();
        const Summary sampled = time_steps(true);
        // generate's decode as it runs: each step queued before the previous one's token is back (CUDA).
        const Summary pipelined = measure([&] {
          const auto t = std::chrono::steady_clock::now();
          engine.decode_greedy(0, N, random_ids(1)[0], o->decode_steps);
          return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() /
                 static_cast<double>(o->decode_steps);
        });
        nlohmann::json d = {
            {"context", N},
            {"ms_per_step", to_json({s.median * 1e3, s.min * 1e3, s.max * 1e3})},
            {"sampled_ms_per_step", to_json({sampled.median * 1e3, sampled.min * 1e3, sampled.max * 1e3})},
            {"pipelined_ms_per_step", to_json({pipelined.median * 1e3, pipelined.min * 1e3, pipelined.max * 1e3})}};
        // The sequence's whole state at this context (pages of the pool; packed rows with the CUDA fp8 cache).
        d["state_bytes"] = engine.state_layout().bytes_for(N + 1);
        if (ot.calls > 0) {  // device time of the indexer / attention ops per step (all layers), eager mode
          const double steps = static_cast<double>((o->warmup + o->reps) * o->decode_steps);
          d["indexer_ms_per_step"] = ot.indexer_seconds / steps * 1e3;
          d["attention_ms_per_step"] = ot.attention_seconds / steps * 1e3;
        }
        if (copy_bw > 0) {
          const DecodeTraffic traffic = decode_step_traffic(engine.config(), engine.weights(), 1, N, key_rows);
          double state_bytes = 0;
          for (const char* part : {"kv window", "compressed entries", "indexer keys"}) {
            if (traffic.bytes.count(part) != 0) state_bytes += traffic.bytes.at(part);
          }
          const double floor_ms = traffic.total() / copy_bw * 1e3;
          d["floor_ms"] = floor_ms;
          d["floor_state_bytes"] = state_bytes;
          d["floor_bytes"] = traffic.total();
          d["measured_over_floor"] = s.median * 1e3 / floor_ms;
          d["sampled_over_floor"] = sampled.median * 1e3 / floor_ms;
          d["pipelined_over_floor"] = pipelined.median * 1e3 / floor_ms;
        }
        if (engine.options().device == Device::kCUDA) {
          step_at(N, false);  // the replayed step is this one
          d["device_ms_per_step"] = engine.device_decode_step_ms(1, 10);
        }
        engine.release_slot(0);
        j["context_decode"].push_back(d);
      }
      if (engine.has_mtp()) {  // speculative decoding: tokens/s, acceptance, and (CUDA) the step against its parts
        std::vector<int32_t> prompt;
        if (!o->prompt.empty()) {
          const std::unique_ptr<Tokenizer> tok = load_tokenizer_if_present(o->dir);
          prompt = text_to_ids(tok.get(), o->prompt);
        } else {
          prompt = random_ids(16);
        }
        const bool cuda = engine.options().device == Device::kCUDA;
        for (int64_t B : spec_batches) {
          std::vector<std::vector<int32_t>> prompts;
          // Every sequence gets --prompt when one is given (its acceptance is the text's), else its own random ids.
          for (int64_t b = 0; b < B; ++b) prompts.push_back(b == 0 || !o->prompt.empty() ? prompt : random_ids(16));
          for (int64_t k : spec) {
            GenerateStats last;
            const Summary s = measure([&] {
              GenerateOptions go;
              go.max_new_tokens = o->decode_steps;
              go.spec_tokens = k;
              go.stop_at_eos = false;
              last = engine.generate(prompts, go).stats;
              return last.decode_seconds;
            });
            // Steps of the decode phase: one per token at K = 0; per speculative round (draft_steps counts rounds of
            // each sequence) otherwise.
            const double steps = k == 0 ? static_cast<double>(o->decode_steps - 1)
                                        : static_cast<double>(last.draft_steps) / static_cast<double>(B);
            nlohmann::json r = {{"spec_tokens", k},
                                {"batch", B},
                                {"acceptance_rate", last.acceptance_rate()},
                                {"mean_accepted_length", k == 0 ? 1.0 : last.mean_accepted_length()},
                                {"tokens_per_second", static_cast<double>(B * (o->decode_steps - 1)) / s.median},
                                {"ms_per_step", s.median * 1e3 / std::max(steps, 1.0)}};
            if (cuda && k > 0) {  // the same step replayed without host work (both graphs, the last step's inputs)
              if (std::any_of(prompts.begin(), prompts.end(), [&](const auto& p) { return p != prompts[0]; })) {
                // Sequences of different prompts finish at different steps: end on a step of all B sequences.
                GenerateOptions go;
                go.max_new_tokens = 4;
                go.spec_tokens = k;
                go.stop_at_eos = false;
                engine.generate(std::vector<std::vector<int32_t>>(static_cast<size_t>(B), prompts[0]), go);
              }
              r["device_ms_per_step"] = engine.device_spec_step_ms(B, k, 20);
            }
            if (cuda && k > 0 && B == 1) {
              // Its parts, timed separately in the same run at the middle of the measured context: one drafter
              // forward (one MTP layer + the shared head, 1 token) and one (K + 1)-token target forward.
              const int32_t pos = static_cast<int32_t>(o->context + o->decode_steps / 2);
              BatchBuilder t;
              t.add({0, pos, random_ids(k + 1), true});
              std::vector<float> logits, hidden_out;
              engine.forward(t, &logits, nullptr, /*uniform_decode=*/true);
              const double target_ms = engine.device_decode_step_ms(k + 1, 20);
              BatchBuilder d;
              d.add({0, pos, random_ids(1), false});
              engine.mtp_forward(d, std::vector<float>(static_cast<size_t>(engine.config().hc_dim()), 0.0f), &logits,
                                 &hidden_out);
              const double drafter_ms = engine.device_drafter_step_ms(1, 20);
              engine.release_slot(0);
              const double reference = static_cast<double>(k) * drafter_ms + target_ms;
              r["drafter_forward_ms"] = drafter_ms;
              r["target_forward_ms"] = target_ms;  // K + 1 tokens
              r["reference_ms"] = reference;       // K drafter forwards + the (K + 1)-token target forward
              r["step_over_reference"] = r["ms_per_step"].get<double>() / reference;
              r["device_step_over_reference"] = r["device_ms_per_step"].get<double>() / reference;
            }
            j["speculative"].push_back(r);
          }
        }
      }
      j["memory"] = {{"weights_bytes", engine.weights_bytes()},
                     {"weights_quantized", engine.weights().quantized},  // --cuda-weights quantized
                     {"activations_bytes", engine.scratch_bytes()},
                     {"state_pool_bytes", engine.state_bytes()},
                     {"state_pages", engine.pool_pages()},
                     {"page_tokens", engine.state_layout().page_tokens},
                     {"io_bytes", engine.device_io_bytes()},
                     {"graph_bytes", engine.graph_bytes()}};
      if (engine.options().device == Device::kCUDA) {
        size_t free_b = 0, total_b = 0;
        cuda::memory_info(&free_b, &total_b);
        j["memory"]["device_in_use_bytes"] = total_b - free_b;  // everything is allocated up front
      }
      out["runs"].push_back(j);
    }
    if (o->json) {
      std::printf("%s\n", out.dump().c_str());
      return;
    }
    std::printf("model %s on %s", out["model"].get<std::string>().c_str(), out["device"].get<std::string>().c_str());
    if (out.contains("copy_bandwidth_gbs"))
      std::printf("; copy bandwidth %.0f GB/s", out["copy_bandwidth_gbs"].get<double>());
    std::printf("\n");
    for (const auto& j : out["runs"]) {
      std::printf("== mode %s: load %.3f s (capture %.3f s, graph memory %.2f MiB)\n",
                  j["mode"].get<std::string>().c_str(), j["load_seconds"].get<double>(),
                  j["capture_seconds"].get<double>(), j["graph_bytes"].get<double>() / (1024.0 * 1024.0));
      if (j.contains("prefill")) {
        for (const auto& p : j["prefill"]) {
          std::printf("prefill %6lld tokens: %10.1f tokens/s, %.3g TFLOP/s", p["tokens"].get<long long>(),
                      p["tokens_per_second"].get<double>(), p["tflops_per_second"].get<double>());
          if (p.contains("mfu")) {
            std::printf(" (MFU %.1f%% of the %s peak)", 100.0 * p["mfu"]["value"].get<double>(),
                        p["mfu"]["format"].get<std::string>().c_str());
          }
          if (p.contains("split")) {
            std::printf(" (indexer %.3f s, attention %.3f s, rest %.3f s)", p["split"]["indexer_seconds"].get<double>(),
                        p["split"]["attention_seconds"].get<double>(), p["split"]["rest_seconds"].get<double>());
          }
          std::printf("\n");
        }
      }
      if (j.contains("decode")) {
        for (const auto& d : j["decode"]) {
          std::printf("decode batch %3lld: %8.3f ms/step [%.3f, %.3f], %10.1f tokens/s", d["batch"].get<long long>(),
                      d["ms_per_step"]["median"].get<double>(), d["ms_per_step"]["min"].get<double>(),
                      d["ms_per_step"]["max"].get<double>(), d["tokens_per_second"].get<double>());
          if (d.contains("floor_ms")) {
            std::printf("; HBM floor %.3f ms, measured/floor %.2f", d["floor_ms"].get<double>(),
                        d["measured_over_floor"].get<double>());
          }
          if (d.contains("device_ms_per_step")) {
            std::printf("; device step %.3f ms", d["device_ms_per_step"].get<double>());
          }
          std::printf("\n");
        }
      }
      if (j.contains("context_decode")) {
        for (const auto& d : j["context_decode"]) {
          std::printf(
              "decode at context %8lld: %8.3f ms/step (sampled on the engine's path %.3f, pipelined as in "
              "generate %.3f)",
              d["context"].get<long long>(), d["ms_per_step"]["median"].get<double>(),
              d["sampled_ms_per_step"]["median"].get<double>(), d["pipelined_ms_per_step"]["median"].get<double>());
          if (d.contains("floor_ms")) {
            std::printf("; floor (weights + state) %.3f ms, measured/floor %.2f (sampled %.2f, pipelined %.2f)",
                        d["floor_ms"].get<double>(), d["measured_over_floor"].get<double>(),
                        d["sampled_over_floor"].get<double>(), d["pipelined_over_floor"].get<double>());
          }
          if (d.contains("device_ms_per_step"))
            std::printf("; device step %.3f ms", d["device_ms_per_step"].get<double>());
          if (d.contains("indexer_ms_per_step")) {
            std::printf("; indexer %.3f ms, attention %.3f ms", d["indexer_ms_per_step"].get<double>(),
                        d["attention_ms_per_step"].get<double>());
          }
          std::printf("\n");
        }
      }
      const auto& mem = j["memory"];
      std::printf("memory: weights %.1f MiB, activations %.1f MiB, state pool %.1f MiB (%lld pages of %lld tokens)",
                  mem["weights_bytes"].get<double>() / 1048576.0, mem["activations_bytes"].get<double>() / 1048576.0,
                  mem["state_pool_bytes"].get<double>() / 1048576.0, mem["state_pages"].get<long long>(),
                  mem["page_tokens"].get<long long>());
      if (mem.contains("device_in_use_bytes")) {
        std::printf(", device in use %.1f MiB", mem["device_in_use_bytes"].get<double>() / 1048576.0);
      }
      std::printf("\n");
      if (j.contains("speculative")) {
        for (const auto& s : j["speculative"]) {
          std::printf("spec b=%lld K=%lld: acceptance %.3f, mean accepted length %.2f, %10.1f tokens/s, %.3f ms/step",
                      s["batch"].get<long long>(), s["spec_tokens"].get<long long>(),
                      s["acceptance_rate"].get<double>(), s["mean_accepted_length"].get<double>(),
                      s["tokens_per_second"].get<double>(), s["ms_per_step"].get<double>());
          if (s.contains("device_ms_per_step")) std::printf("; device %.3f ms", s["device_ms_per_step"].get<double>());
          if (s.contains("reference_ms")) {
            std::printf(
                "; drafter %.3f ms + %lld-token target %.3f ms: step / (K drafter + target) = %.2f (device %.2f)",
                s["drafter_forward_ms"].get<double>(), s["spec_tokens"].get<long long>() + 1,
                s["target_forward_ms"].get<double>(), s["step_over_reference"].get<double>(),
                s["device_step_over_reference"].get<double>());
          }
          std::printf("\n");
        }
      }
    }
  });
}

}  // namespace dsv4::cli
