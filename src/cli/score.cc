#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "dsv4/io/safetensors.h"
#include "dsv4/runtime/engine.h"
#include "dsv4/runtime/sampler.h"

namespace dsv4::cli {

void register_score(CLI::App& app) {
  auto* cmd = app.add_subcommand("score", "Teacher-forced logits of a token sequence");
  struct Opts {
    std::string dir, ids, logits_out, mtp_logits_out;
    DeviceFlags flags;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("-m,--model", o->dir, "Model directory")->required();
  cmd->add_option("--ids", o->ids, "Comma-separated token ids")->required();
  cmd->add_option("--logits-out", o->logits_out, "Write logits [T, V] (F32) and input_ids to a .safetensors file")
      ->check(output_file_folder());
  cmd->add_option(
         "--mtp-logits-out", o->mtp_logits_out,
         "Write the MTP drafter's step-0 logits [T-1, V] (position p predicts token p+2) to a .safetensors file")
      ->check(output_file_folder());
  o->flags.add_to(cmd);
  cmd->add_flag("--json", o->json, "Print one JSON object");
  cmd->callback([o] {
    const std::vector<int32_t> ids = parse_ids(o->ids);
    EngineOptions eo;
    o->flags.apply(eo);
    eo.max_seqs = 1;
    check_prompts(o->dir, {ids}, 0, eo);       // before the weights and the state are allocated
    eo.load_mtp = !o->mtp_logits_out.empty();  // the drafter's weights only when its logits are asked for
    Engine engine(o->dir, eo);
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t T = static_cast<int64_t>(ids.size()), V = engine.config().vocab_size;
    engine.check_score(ids);                                                       // before the T x V allocation
    const std::unique_ptr<float[]> logits(new float[static_cast<size_t>(T * V)]);  // written whole by score_into
    engine.score_into(ids, logits.get());
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // Next-token negative log-likelihood of the given continuation (positions 0..T-2 predict 1..T-1).
    const TokenScores scores = teacher_forced_scores(logits.get(), ids, V);
    double nll = 0;
    for (double x : scores.nll) nll += x;
    const std::vector<int32_t>& argmax = scores.argmax;
    if (!o->logits_out.empty()) {
      std::vector<int64_t> ids64(ids.begin(), ids.end());
      save_safetensors(o->logits_out, {{"logits", Tensor(logits.get(), DType::F32, {T, V})},
                                       {"input_ids", Tensor(ids64.data(), DType::I64, {T})}});
    }
    if (!o->mtp_logits_out.empty()) {
      // Drafter step 0 over positions 0..T-2: (target residual at p, token p+1) -> logits for token p+2.
      DSV4_CHECK(engine.has_mtp(), kUnsupported, "--mtp-logits-out: the checkpoint has no MTP layer (mtp.0.*)");
      DSV4_CHECK_ARG(T >= 2 && T <= engine.options().max_batch_tokens,
                     "--mtp-logits-out needs 2 to max_batch_tokens token ids");
      BatchBuilder target;
      target.add({0, 0, ids, true});
      std::vector<float> unused, residual, mtp_logits, mtp_hidden;
      engine.forward(target, &unused, &residual);
      residual.resize(static_cast<size_t>((T - 1) * engine.config().hc_dim()));
      BatchBuilder draft;
      draft.add({0, 0, std::vector<int32_t>(ids.begin() + 1, ids.end()), true});
      engine.mtp_forward(draft, residual, &mtp_logits, &mtp_hidden);
      save_safetensors(o->mtp_logits_out, {{"mtp_logits", Tensor(mtp_logits.data(), DType::F32, {T - 1, V})}});
    }
    // One token predicts nothing: no mean (null in JSON), not a zero that reads as a perfect score.
    const double mean_nll = T > 1 ? nll / static_cast<double>(T - 1) : 0.0;
    if (o->json) {
      nlohmann::json j;
      j["tokens"] = ids;
      j["argmax"] = argmax;
      j["mean_nll"] = T > 1 ? nlohmann::json(mean_nll) : nlohmann::json(nullptr);
      j["seconds"] = seconds;
      j["device"] = o->flags.device_used();
      j["vocab_size"] = V;
      if (!o->logits_out.empty()) j["logits_out"] = o->logits_out;
      if (!o->mtp_logits_out.empty()) j["mtp_logits_out"] = o->mtp_logits_out;
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    std::printf("scored %lld tokens in %.3f s on %s; ", (long long)T, seconds, o->flags.device_used().c_str());
    if (T > 1) {
      std::printf("mean next-token NLL %.4f\n", mean_nll);
    } else {
      std::printf("no next-token NLL (a single token predicts none)\n");
    }
    std::printf("argmax:");
    for (int32_t a : argmax) std::printf(" %d", a);
    std::printf("\n");
    if (!o->logits_out.empty())
      std::printf("logits [%lld, %lld] written to %s\n", (long long)T, (long long)V, o->logits_out.c_str());
  });
}

}  // namespace dsv4::cli
