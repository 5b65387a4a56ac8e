// The dsv4 command-line interface, run as a process (DSV4_CLI_PATH) in a temporary directory:
// make-tiny, info, score, generate, and a non-zero exit with an "error:" message for every bad input.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_process.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/model/weights.h"
#include "dsv4/runtime/engine.h"
#include "test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using Result = test::CliResult;
using test::slurp;

// One tiny model shared by every test of the suite (make-tiny runs once).
class Cli : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(test::fresh_scratch_dir("dsv4_cli_"));
    const Result r = run(str_cat("make-tiny ", model(), " --seed 3"));
    ASSERT_EQ(r.status, 0) << r.err;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }

  static std::string model() { return *dir_ + "/model"; }
  static std::string path(const std::string& name) { return *dir_ + "/" + name; }

  // Runs `dsv4 <args>` (args are passed through the shell as written).
  // stdout_to: where stdout goes instead of a file that is read back (e.g. /dev/full).
  static Result run(const std::string& args, const std::string& stdout_to = "") {
    return test::run_cli(*dir_, args, stdout_to);
  }
  static json run_json(const std::string& args) { return test::cli_json(run(args), args); }
  // The command fails with dsv4's own exit code (1: error, 2: usage) — never a crash, a signal or a sanitizer
  // report (ASAN exits 86, UBSan 87 in the sanitizer build) — and stderr says "error:" plus every one of `parts`.
  static void expect_failure(const std::string& args, const std::vector<std::string>& parts,
                             const std::string& stdout_to = "") {
    SCOPED_TRACE(args);
    const Result r = run(args, stdout_to);
    EXPECT_TRUE(r.status == 1 || r.status == 2) << "exit status " << r.status << "\n" << r.err;
    EXPECT_EQ(r.err.find("Sanitizer"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("error:"), std::string::npos) << r.err;
    for (const std::string& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << "'" << p << "' in: " << r.err;
  }

  static std::string* dir_;
};

std::string* Cli::dir_ = nullptr;

std::vector<int32_t> ints(const json& j) { return j.get<std::vector<int32_t>>(); }

TEST_F(Cli, MakeTinyWritesAnOfficialNamedCheckpointWithMtp) {
  const ModelConfig cfg = ModelConfig::from_file(model() + "/config.json");
  const ModelConfig tiny = tiny_config();
  EXPECT_EQ(cfg.to_json(), tiny.to_json());
  const Checkpoint ckpt = Checkpoint::open(model());
  EXPECT_NE(ckpt.find("embed.weight"), nullptr);
  EXPECT_NE(ckpt.find("layers.1.attn.indexer.compressor.wkv.weight"), nullptr);
  EXPECT_NE(ckpt.find("mtp.0.e_proj.weight"), nullptr);
  EXPECT_NE(ckpt.find("mtp.0.ffn.gate.bias"), nullptr);
  EXPECT_EQ(ckpt.names().size(), checkpoint_inventory(cfg, true).size());
  const ModelWeights w = load_weights(ckpt, cfg, {});
  EXPECT_TRUE(w.mtp.has_value());

  // Same seed: the same bytes; another seed: other weights.
  const Result again = run(str_cat("make-tiny ", path("again"), " --seed 3"));
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_NE(again.out.find("seed 3"), std::string::npos) << again.out;
  EXPECT_EQ(slurp(path("again/model.safetensors")), slurp(model() + "/model.safetensors"));
  ASSERT_EQ(run(str_cat("make-tiny ", path("other"), " --seed 4")).status, 0);
  EXPECT_NE(slurp(path("other/model.safetensors")), slurp(model() + "/model.safetensors"));
  fs::remove_all(path("again"));
  fs::remove_all(path("other"));
}

TEST_F(Cli, Info) {
  const Result r = run(str_cat("info -m ", model()));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* part : {"DeepseekV4ForCausalLM", "sliding_attention", "compressed_sparse_attention",
                           "heavily_compressed_attention", "hash_moe", "parameters", "total=", "mtp", "YaRN"}) {
    EXPECT_NE(r.out.find(part), std::string::npos) << part << " in:\n" << r.out;
  }
  const json j = run_json(str_cat("info -m ", model(), " --json"));
  for (const char* key : {"model", "architecture", "config", "layer_types", "mlp_layer_types", "parameters", "has_mtp",
                          "checkpoint_bytes"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  const ModelConfig cfg = tiny_config();
  EXPECT_EQ(j["architecture"], "DeepseekV4ForCausalLM");
  EXPECT_EQ(j["has_mtp"], true);
  ASSERT_EQ(j["layer_types"].size(), cfg.layer_types.size());
  for (size_t l = 0; l < cfg.layer_types.size(); ++l) {
    EXPECT_EQ(j["layer_types"][l], attention_type_name(cfg.layer_types[l]));
    EXPECT_EQ(j["mlp_layer_types"][l], mlp_type_name(cfg.mlp_layer_types[l]));
  }
  int64_t total = 0, with_mtp = 0;
  for (const TensorSpec& s : checkpoint_inventory(cfg, true)) {
    if (s.kind == WeightKind::kIndex) continue;  // tid2eid is not counted
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    (s.name.rfind("mtp.", 0) == 0 ? with_mtp : total) += n;
  }
  EXPECT_EQ(j["parameters"]["total"].get<int64_t>(), total);
  EXPECT_EQ(j["parameters"]["total_with_mtp"].get<int64_t>(), total + with_mtp);
  EXPECT_EQ(j["checkpoint_bytes"].get<uint64_t>(), Checkpoint::open(model()).total_bytes());
  EXPECT_EQ(ModelConfig::from_json_text(j["config"].dump()).to_json(), cfg.to_json());
}

TEST_F(Cli, ScoreWritesLogits) {
  const std::vector<int32_t> ids = {256, 72, 101, 108, 108, 111, 33};
  const std::string f = path("logits.safetensors");
  const Result r = run(str_cat("score -m ", model(), " --ids 256,72,101,108,108,111,33 --logits-out ", f));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("scored 7 tokens"), std::string::npos) << r.out;
  auto file = SafetensorsFile::open(f);
  const TensorInfo* logits = file->find("logits");
  ASSERT_NE(logits, nullptr);
  EXPECT_EQ(logits->dtype, DType::F32);
  EXPECT_EQ(logits->shape, (std::vector<int64_t>{7, 512}));
  const TensorInfo* in = file->find("input_ids");
  ASSERT_NE(in, nullptr);
  const Tensor t = file->view(*in);
  ASSERT_EQ(t.numel(), 7);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(t.ptr<int64_t>()[i], ids[i]);
  // The same logits as the engine computes in process.
  Engine engine(model(), {});
  const std::vector<float> want = engine.score(ids);
  const std::vector<float> got = test::to_vector(file->view(*logits));
  EXPECT_LE(test::max_rel_error(got.data(), want.data(), want.size()), 1e-6);

  const json j = run_json(str_cat("score -m ", model(), " --ids 256,72,101,108,108,111,33 --json"));
  EXPECT_EQ(ints(j["tokens"]), ids);
  EXPECT_EQ(j["vocab_size"], 512);
  ASSERT_EQ(j["argmax"].size(), 7u);
  for (int t = 0; t < 7; ++t) {
    const auto row = want.begin() + t * 512;
    EXPECT_EQ(j["argmax"][t].get<int64_t>(), std::max_element(row, row + 512) - row) << t;
  }
  EXPECT_GT(j["mean_nll"].get<double>(), 0.0);
  EXPECT_TRUE(std::isfinite(j["mean_nll"].get<double>()));
  EXPECT_TRUE(j.contains("seconds"));
  // One token: its argmax, and no mean NLL (nothing is predicted), not a zero.
  const json one = run_json(str_cat("score -m ", model(), " --ids 256 --json"));
  EXPECT_EQ(one["argmax"].size(), 1u);
  EXPECT_TRUE(one["mean_nll"].is_null());
  const Result text = run(str_cat("score -m ", model(), " --ids 256"));
  EXPECT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("no next-token NLL"), std::string::npos) << text.out;
  fs::remove(f);
}

TEST_F(Cli, ScoreIntoGivesScoresBitsAndChecksFirst) {
  EngineOptions eo;
  eo.max_model_len = 16;
  Engine engine(model(), eo);
  const std::vector<int32_t> ids{256, 72, 101, 108, 108, 111, 33};
  const std::vector<float> want = engine.score(ids);
  std::vector<float> got(want.size(), std::nanf(""));
  engine.score_into(ids, got.data());
  EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * sizeof(float)));
  // Bad input: a clear error before any row is written, and the engine still scores afterwards.
  std::vector<float> untouched(32 * 512, -1.0f);
  auto expect_rejected = [&](const std::vector<int32_t>& bad, const std::string& message) {
    try {
      engine.score_into(bad, untouched.data());
      ADD_FAILURE() << "accepted " << bad.size() << " ids";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
    EXPECT_THROW(engine.score(bad), Error);
  };
  expect_rejected({}, "no token ids");
  expect_rejected({1, 512, 3}, "token id 512 at index 1");
  expect_rejected(std::vector<int32_t>(17, 5), "exceed max_model_len (16)");
  EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](float v) { return v == -1.0f; }));
  EXPECT_EQ(engine.score(ids), want);
}

TEST_F(Cli, GenerateGreedyIsDeterministicAndAgreesWithScore) {
  const std::string args = str_cat("generate -m ", model(), " --ids 256,84,104,101 -n 8 --ignore-eos --json");
  const json a = run_json(args);
  const json b = run_json(args);
  ASSERT_EQ(a["tokens"].size(), 1u);
  const std::vector<int32_t> gen = ints(a["tokens"][0]);
  ASSERT_EQ(gen.size(), 8u);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  EXPECT_EQ(a["generated_tokens"], 8);
  EXPECT_EQ(a["prompt_tokens"], 4);
  for (const char* key : {"load_seconds", "prefill_seconds", "decode_seconds", "decode_tokens_per_second"}) {
    EXPECT_TRUE(a.contains(key)) << key;
  }
  EXPECT_EQ(a["settings"]["max_new_tokens"], 8);
  EXPECT_EQ(a["settings"]["temperature"], 0.0);
  EXPECT_EQ(a["settings"]["device"], "cpu");
  // Greedy decoding = the argmax of the teacher-forced logits of prompt + generated tokens.
  std::string ids = "256,84,104,101";
  for (size_t i = 0; i + 1 < gen.size(); ++i) ids += str_cat(",", gen[i]);
  const json s = run_json(str_cat("score -m ", model(), " --ids ", ids, " --json"));
  for (size_t i = 0; i < gen.size(); ++i) EXPECT_EQ(s["argmax"][3 + i].get<int32_t>(), gen[i]) << i;

  // Without --ignore-eos, generation stops at an end-of-sequence token (257) at the latest after 8 tokens.
  const json c = run_json(str_cat("generate -m ", model(), " --ids 256,84,104,101 -n 8 --json"));
  const std::vector<int32_t> stop = ints(c["tokens"][0]);
  ASSERT_FALSE(stop.empty());
  EXPECT_TRUE(stop.size() == 8 || stop.back() == 257);
  EXPECT_EQ(std::vector<int32_t>(gen.begin(), gen.begin() + stop.size()), stop);

  // The text form prints the tokens on stdout, the speed on stderr.
  const Result r = run(str_cat("generate -m ", model(), " --ids 256,84,104,101 -n 3 --ignore-eos"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find(str_cat(gen[0], " ", gen[1], " ", gen[2])), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("tokens/s"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("tokens/s"), std::string::npos) << r.err;
  // -n 0 generates nothing.
  EXPECT_EQ(run_json(str_cat("generate -m ", model(), " --ids 1 -n 0 --json"))["generated_tokens"], 0);
}

TEST_F(Cli, GenerateFromTextPrompt) {
  const json j = run_json(str_cat("generate -m ", model(), " --prompt 'In the beginning' -n 4 --ignore-eos --json"));
  EXPECT_EQ(j["prompt_tokens"], 16);  // byte-level ids
  EXPECT_EQ(j["tokens"][0].size(), 4u);
  // Byte-level ids: the same as passing the bytes as --ids.
  const json k = run_json(str_cat("generate -m ", model(),
                                  " --ids 73,110,32,116,104,101,32,98,101,103,105,110,110,105,110,103 -n 4 "
                                  "--ignore-eos --json"));
  EXPECT_EQ(j["tokens"], k["tokens"]);
  // A prompts file runs one sequence per line.
  std::ofstream(path("prompts.txt")) << "In the beginning\n\nAnd God said\n";
  const json p =
      run_json(str_cat("generate -m ", model(), " --prompts ", path("prompts.txt"), " -n 4 --ignore-eos --json"));
  ASSERT_EQ(p["tokens"].size(), 2u);
  EXPECT_EQ(p["tokens"][0], j["tokens"][0]);
  EXPECT_EQ(p["settings"]["prompts"], 2);
}

TEST_F(Cli, DefaultModelWithTokenizerAndShardedCheckpoint) {
  const std::string kjv = test::source_dir() + "/models/dsv4-tiny-kjv";
  const json info = run_json(str_cat("info -m ", kjv, " --json"));
  EXPECT_EQ(info["config"]["vocab_size"], 6144);
  EXPECT_EQ(info["layer_types"].size(), 6u);
  EXPECT_EQ(info["has_mtp"], true);
  const std::string args = str_cat("generate -m ", kjv, " --prompt 'In the beginning God' -n 6 --ignore-eos --json");
  const json a = run_json(args);
  ASSERT_EQ(a["tokens"].size(), 1u);
  EXPECT_EQ(a["tokens"][0].size(), 6u);
  ASSERT_TRUE(a.contains("text"));  // decoded with the model's tokenizer.json
  EXPECT_FALSE(a["text"][0].get<std::string>().empty());
  EXPECT_LT(a["prompt_tokens"].get<int>(), 20);  // tokenized, not byte-level
  // The streamed text echoes the prompt, with no tokens too; a prompt generate rejects is not echoed.
  const Result streamed = run(str_cat("generate -m ", kjv, " --prompt 'In the beginning God' -n 3 --ignore-eos"));
  EXPECT_EQ(streamed.status, 0) << streamed.err;
  EXPECT_EQ(streamed.out.rfind("In the beginning God", 0), 0u) << streamed.out;
  EXPECT_GT(streamed.out.size(), std::string("In the beginning God\n").size()) << streamed.out;
  EXPECT_EQ(run(str_cat("generate -m ", kjv, " --prompt 'In the beginning God' -n 0")).out, "In the beginning God\n");
  const Result rejected = run(str_cat("generate -m ", kjv, " --prompt 'In the beginning God' -n 1 --max-model-len 2"));
  EXPECT_EQ(rejected.status, 1) << rejected.err;
  EXPECT_NE(rejected.err.find("max_model_len (2)"), std::string::npos) << rejected.err;
  EXPECT_EQ(rejected.out, "");
  EXPECT_EQ(run_json(args)["tokens"], a["tokens"]);
  // Streaming text output starts with the prompt.
  const Result r = run(str_cat("generate -m ", kjv, " --prompt 'In the beginning God' -n 3 --ignore-eos"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.rfind("In the beginning God", 0), 0u) << r.out;
}

TEST_F(Cli, SamplingIsDeterministicPerSeed) {
  auto sample = [&](int seed) {
    return run_json(str_cat("generate -m ", model(),
                            " --ids 256,65 -n 16 --ignore-eos --temperature 1.5 --top-p 0.95 "
                            "--seed ",
                            seed, " --json"));
  };
  const json a = sample(7), b = sample(7);
  EXPECT_EQ(a["tokens"], b["tokens"]);
  EXPECT_EQ(a["settings"]["seed"], 7);
  EXPECT_DOUBLE_EQ(a["settings"]["temperature"].get<double>(), 1.5);
  EXPECT_NEAR(a["settings"]["top_p"].get<double>(), 0.95, 1e-6);
  bool any_differs = false;
  for (int seed : {8, 9, 10}) any_differs |= sample(seed)["tokens"] != a["tokens"];
  EXPECT_TRUE(any_differs) << "three other seeds all gave the same 16 sampled tokens";
}

TEST_F(Cli, ModelErrors) {
  expect_failure(str_cat("info -m ", path("absent")), {"absent"});
  expect_failure(str_cat("score -m ", path("absent"), " --ids 1,2"), {"absent"});
  expect_failure(str_cat("generate -m ", path("absent"), " --ids 1,2 -n 2"), {"absent"});
  // Malformed config.json.
  fs::create_directories(path("badcfg"));
  fs::copy_file(model() + "/model.safetensors", path("badcfg/model.safetensors"));
  std::ofstream(path("badcfg/config.json")) << "{\"hidden_size\": 64,";
  expect_failure(str_cat("info -m ", path("badcfg")), {"config.json", "invalid JSON"});
  expect_failure(str_cat("generate -m ", path("badcfg"), " --ids 1 -n 1"), {"config.json"});
  std::ofstream(path("badcfg/config.json")) << "{\"model_type\": \"llama\"}";
  expect_failure(str_cat("score -m ", path("badcfg"), " --ids 1"), {"model_type", "llama"});
  // A config that does not match the weights.
  ModelConfig other = tiny_config();
  other.hidden_size = 96;
  std::ofstream(path("badcfg/config.json")) << other.to_json();
  expect_failure(str_cat("generate -m ", path("badcfg"), " --ids 1 -n 1"), {"does not match", "embed.weight"});
  // A truncated checkpoint.
  std::ofstream(path("badcfg/config.json")) << tiny_config().to_json();
  const std::string bytes = slurp(model() + "/model.safetensors");
  std::ofstream(path("badcfg/model.safetensors"), std::ios::binary | std::ios::trunc)
      << bytes.substr(0, bytes.size() / 2);
  expect_failure(str_cat("info -m ", path("badcfg")), {"model.safetensors", "outside"});
  fs::remove_all(path("badcfg"));
  // make-tiny into a path that is a file.
  std::ofstream(path("afile")) << "x";
  expect_failure(str_cat("make-tiny ", path("afile")),
                 {"make-tiny output directory", "exists and is", "not a directory"});
  expect_failure(str_cat("quantize ", model(), " ", path("afile")),
                 {"quantize output directory", "exists and is", "not a directory"});
  expect_failure(str_cat("quantize ", model(), " ", path("afile"), "/sub"),
                 {"cannot create quantize output directory"});
  fs::remove(path("afile"));
}

TEST_F(Cli, InputErrors) {
  const std::string m = model();
  expect_failure(str_cat("score -m ", m, " --ids 1,512"), {"token id 512", "outside the vocabulary"});
  expect_failure(str_cat("generate -m ", m, " --ids 5,100000 -n 2"), {"token id 100000"});
  for (const char* bad : {"1,,3", "a,b", "-1", "1.5", "'1;2'", "'1 2'", "99999999999", "''", "1,"}) {
    expect_failure(str_cat("score -m ", m, " --ids ", bad), {"--ids"});
  }
  expect_failure(str_cat("generate -m ", m, " --ids 1,x -n 2"), {"--ids", "'x'"});
  expect_failure(str_cat("generate -m ", m, " -n 2"), {"generate needs --ids, --prompt or --prompts"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 --prompt hi -n 2"), {"excludes"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n -1"), {"-n must be >= 0"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n abc"), {"-n"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n 5000 --max-model-len 4096"), {"max_model_len (4096)"});
  // Checked without overflow (2 + INT64_MAX), at once, before any step runs.
  expect_failure(str_cat("generate -m ", m, " --ids 1,2 -n 9223372036854775807 --ignore-eos"), {"max_model_len"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n 8 --kv-cache-memory 1000"), {"--kv-cache-memory"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n 8 --max-num-seqs 70000"), {"--max-num-seqs"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n 8 --gpu-memory-utilization 1.5"),
                 {"--gpu-memory-utilization"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 --temperature -1"), {"temperature"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 --top-p 0"), {"top-p"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 --top-p 1.5"), {"top-p"});
  // Bad sampling flags, draft lengths, file paths, token ids and prompts longer than max_model_len fail before the
  // model loads: no KV state is set up, nothing reaches stdout.
  const std::pair<std::string, std::string> early[] = {
      {"generate --ids 5,100000 -n 2", "token id 100000 at index 1"},
      {"score --ids 1,512", "token id 512 at index 1"},
      {"generate --prompt hi --temperature -1", "temperature"},
      {"generate --prompt hi --temperature nan", "temperature"},
      {"generate --prompt hi --top-p 0", "top-p"},
      {"generate --ids 1 --spec-tokens -1", "--spec-tokens"},
      {"generate --ids 1 --spec-tokens 17", "--spec-tokens"},
      {"score --ids 1,2 --logits-out " + path("absent_dir/l.safetensors"), "does not exist"},
      {"score --ids 1,2 --mtp-logits-out " + path("absent_dir/l.safetensors"), "--mtp-logits-out"},
      {"perplexity --file " + path("absent.txt") + " --kl-reference " + path("absent.safetensors"), "--kl-reference"},
      {"generate --ids 1,2 -n 2 --max-model-len 3", "the prompt (2 tokens) + 2 new tokens exceed max_model_len (3"},
      {"generate --ids 1,2 -n 2000000", "+ 2000000 new tokens exceed max_model_len"},
      {"score --ids 1,2,3,4 --max-model-len 3", "the prompt (4 tokens) exceeds max_model_len (3"},
  };
  for (const auto& [args, what] : early) {
    const size_t space = args.find(' ');
    const Result r = run(str_cat(args.substr(0, space), " -m ", m, args.substr(space)));
    EXPECT_TRUE(r.status == 1 || r.status == 2) << args << ": " << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << args << ": " << r.err;
    EXPECT_EQ(r.err.find("KV state"), std::string::npos) << args << ": the model loaded first: " << r.err;
    EXPECT_EQ(r.out, "") << args;
  }
  expect_failure(str_cat("generate -m ", m, " --prompts ", path("absent.txt")), {"absent.txt"});
}

// Issue 21's command-line cases.
TEST_F(Cli, LostOutputIsAFailure) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string m = model();
  // Both exited 0 with their output lost.
  expect_failure(str_cat("info -m ", m), {"writing to standard output failed"}, "/dev/full");
  expect_failure(str_cat("generate -m ", m, " --ids 1,2 -n 2"), {"writing to standard output failed"}, "/dev/full");
  expect_failure(str_cat("generate -m ", m, " --ids 1,2 -n 2 --json"), {"writing to standard output failed"},
                 "/dev/full");
  expect_failure(str_cat("score -m ", m, " --ids 1,2 --logits-out /dev/full"), {"/dev/full"});
  EXPECT_TRUE(fs::is_character_file("/dev/full"));
}

TEST_F(Cli, OutputPaths) {
  const std::string m = model();
  // A directory is refused and no stray X.tmp appears.
  fs::create_directories(path("outdir"));
  expect_failure(str_cat("score -m ", m, " --ids 1,2 --logits-out ", path("outdir")), {"directory"});
  EXPECT_FALSE(fs::exists(path("outdir.tmp")));
  // A symlink stays a symlink; its target receives the logits.
  std::ofstream(path("logits_target")) << "old";
  fs::create_symlink(path("logits_target"), path("logits_link"));
  const Result r = run(str_cat("score -m ", m, " --ids 1,2 --logits-out ", path("logits_link")));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::is_symlink(path("logits_link")));
  EXPECT_GT(fs::file_size(path("logits_target")), 100u);
  // make-tiny into a directory whose model.safetensors is a symlink writes through it as well.
  fs::create_directories(path("tiny_link"));
  std::ofstream(path("tiny_target.safetensors")) << "old";
  fs::create_symlink(path("tiny_target.safetensors"), path("tiny_link/model.safetensors"));
  EXPECT_EQ(run(str_cat("make-tiny ", path("tiny_link"))).status, 0);
  EXPECT_TRUE(fs::is_symlink(path("tiny_link/model.safetensors")));
  EXPECT_GT(fs::file_size(path("tiny_target.safetensors")), 1000u);
}

TEST_F(Cli, NonRegularModelFilesAndImplausibleConfigs) {
  // A FIFO named model.safetensors hung the loader: refused at once (timeout guards the test).
  const std::string fifo_dir = path("fifo_model");
  fs::create_directories(fifo_dir);
  fs::copy_file(model() + "/config.json", fifo_dir + "/config.json");
  ASSERT_EQ(::mkfifo((fifo_dir + "/model.safetensors").c_str(), 0600), 0);
  expect_failure(str_cat("info -m ", fifo_dir), {"not a regular file"});
  expect_failure(str_cat("generate -m ", fifo_dir, " --ids 1 -n 1"), {"not a regular file"});
  // Text inputs too: a FIFO or a directory given as --file / --prompts is refused at once (a directory read as
  // "empty", a FIFO blocked).
  const std::string fifo_text = path("fifo_text");
  ASSERT_EQ(::mkfifo(fifo_text.c_str(), 0600), 0);
  for (const std::string& bad : {fifo_text, fifo_dir}) {
    expect_failure(str_cat("perplexity -m ", model(), " --file ", bad), {"--file '", "not a regular file"});
    expect_failure(str_cat("generate -m ", model(), " --prompts ", bad), {"--prompts file '", "not a regular file"});
  }
  // Implausible config values: a clear error naming the field (a segfault, overflows and hangs before).
  const json base = json::parse(slurp(model() + "/config.json"));
  const std::vector<std::pair<std::string, json>> cases = {
      {"index_topk", int64_t{1} << 62},        {"hc_sinkhorn_iters", int64_t{1000000000000}},
      {"hidden_size", int64_t{1} << 40},       {"num_hidden_layers", int64_t{1000000000}},
      {"sliding_window", int64_t{1000000000}},
  };
  int i = 0;
  for (const auto& [key, value] : cases) {
    const std::string dir = path(str_cat("bad_config_", i++));
    fs::create_directories(dir);
    json j = base;
    j[key] = value;
    std::ofstream(dir + "/config.json") << j.dump();
    fs::copy_file(model() + "/model.safetensors", dir + "/model.safetensors");
    expect_failure(str_cat("info -m ", dir), {key});
    expect_failure(str_cat("generate -m ", dir, " --ids 1 -n 1"), {key});
  }
}

TEST_F(Cli, NumbersOutOfRangeAreErrorsNotClamped) {
  const std::string m = model();
  expect_failure(str_cat("generate -m ", m, " --ids +5 -n 1"), {"--ids", "+5"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n 1 --seed 18446744073709551616"), {"--seed"});
  expect_failure(str_cat("make-tiny ", path("never"), " --seed 99999999999999999999999"), {"--seed"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n 12345678901234567890123"), {"-n"});
  // Graph flags are checked on the CPU too (they were ignored there).
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n 1 --cudagraph-mode bogus"), {"--cudagraph-mode", "bogus"});
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n 1 --capture-sizes garbage"), {"garbage"});
  expect_failure(str_cat("score -m ", m, " --ids 1 --capture-sizes 1,x"), {"capture sizes"});
  expect_failure(str_cat("score -m ", m, " --ids 1 --capture-sizes 0,3"), {"capture size 0", "outside"});
}

TEST_F(Cli, DeviceErrors) {
  const std::string m = model();
  for (const std::string& cmd : {str_cat("score -m ", m, " --ids 1,2"), str_cat("generate -m ", m, " --ids 1 -n 2")}) {
    expect_failure(cmd + " --device tpu", {"--device must be auto, cpu or cuda", "tpu"});
    expect_failure(cmd + " --device ''", {"--device"});
  }
  // This machine has no GPU (the test skips where one exists: there --device cuda may work).
  if (run(str_cat("generate -m ", m, " --ids 1 -n 1 --device cuda")).status == 0) {
    GTEST_SKIP() << "a CUDA device is present";
  }
  expect_failure(str_cat("generate -m ", m, " --ids 1 -n 1 --device cuda"), {"--device cuda", "use --device cpu"});
  expect_failure(str_cat("score -m ", m, " --ids 1 --device cuda"), {"--device cuda", "use --device cpu"});
  // bench measures copy bandwidth before it builds an engine: the same refusal, not a failed cudaMalloc.
  expect_failure(str_cat("bench -m ", m, " --device cuda --prefill 8 --batch 1"),
                 {"--device cuda", "use --device cpu"});
}

TEST_F(Cli, KvCacheDtype) {
  const std::string base = str_cat("generate -m ", model(), " --ids 256,84,104,101,32,119 -n 8 --ignore-eos --json");
  for (const char* d : {"auto", "bf16", "fp8"}) {
    const json r = run_json(str_cat(base, " --kv-cache-dtype ", d));
    EXPECT_EQ(r["tokens"][0].size(), 8u) << d;
  }
  expect_failure(base + " --kv-cache-dtype fp9", {"--kv-cache-dtype must be auto, bf16 or fp8", "fp9"});
  expect_failure(base + " --kv-cache-dtype ''", {"--kv-cache-dtype"});
}

// bench's long-context rows on the CPU: each context's step timed three ways (host logits, sampled, pipelined as
// generate runs it), positive and ordered by context.
TEST_F(Cli, BenchContextRows) {
  const json r = run_json(str_cat("bench -m ", model(),
                                  " --device cpu --prefill 16 --batch 1 --contexts 64,200 --decode-steps 3 --reps 1 "
                                  "--warmup 0 --spec-tokens 0 --json"));
  ASSERT_EQ(r["runs"].size(), 1u) << r.dump();
  const json& rows = r["runs"][0]["context_decode"];
  ASSERT_EQ(rows.size(), 2u) << r.dump();
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i]["context"].get<int64_t>(), i == 0 ? 64 : 200);
    for (const char* k : {"ms_per_step", "sampled_ms_per_step", "pipelined_ms_per_step"}) {
      EXPECT_GT(rows[i][k]["median"].get<double>(), 0.0) << k;
    }
  }
}

// A context row decodes --decode-steps positions from its context: one whose last step would pass --max-model-len is
// skipped with a message, not run past the sequence's positions.
TEST_F(Cli, BenchContextRowsStayWithinMaxModelLen) {
  const std::string args = str_cat("bench -m ", model(),
                                   " --device cpu --prefill 16 --batch 1 --contexts 64,250 --decode-steps 8 --reps 1 "
                                   "--warmup 0 --spec-tokens 0 --max-model-len 256 --json");
  const Result r = run(args);
  const json j = test::cli_json(r, args);
  const json& rows = j["runs"][0]["context_decode"];
  ASSERT_EQ(rows.size(), 1u) << j.dump();
  EXPECT_EQ(rows[0]["context"].get<int64_t>(), 64);
  EXPECT_NE(r.err.find("context 250 skipped: its 8 decode steps reach position 257"), std::string::npos) << r.err;
}

TEST_F(Cli, ActivationQuant) {
  const std::string base = str_cat("generate -m ", model(), " --ids 256,84,104,101,32,119 -n 8 --ignore-eos --json");
  for (const char* q : {"none", "fp8"}) {
    const json r = run_json(str_cat(base, " --activation-quant ", q));
    EXPECT_EQ(r["tokens"][0].size(), 8u) << q;
  }
  expect_failure(base + " --activation-quant int8", {"--activation-quant must be none or fp8", "int8"});
  expect_failure(base + " --activation-quant fp8 --tensor-parallel-size 2",
                 {"--activation-quant fp8 with --tensor-parallel-size 2", "not supported yet"});
}

// --cuda-weights bf16|quantized: refused before the model is loaded wherever quantised weights cannot run; bf16 (the
// default) changes nothing, and generate --json reports the weights' bytes in memory.
TEST_F(Cli, CudaWeights) {
  const std::string base = str_cat("generate -m ", model(), " --ids 256,84,104 -n 2 --ignore-eos --json");
  expect_failure(base + " --cuda-weights int4", {"--cuda-weights must be bf16 or quantized", "int4"});
  expect_failure(base + " --cuda-weights quantized --device cpu", {"--cuda-weights quantized", "--device cpu"});
  expect_failure(base + " --cuda-weights quantized --device cuda --cuda-precision f32", {"--cuda-precision f32"});
  expect_failure(base + " --cuda-weights quantized --device cuda --tensor-parallel-size 2",
                 {"--cuda-weights quantized with --tensor-parallel-size 2"});
  const json r = run_json(base + " --device cpu --cuda-weights bf16");
  EXPECT_EQ(r["tokens"], run_json(base + " --device cpu")["tokens"]);
  EXPECT_GT(r["weights_bytes"].get<int64_t>(), 0);
  EXPECT_EQ(r["settings"]["cuda_weights"], "bf16");
}

// --tensor-parallel-size N [--expert-parallel] on the CPU: in-process ranks, the same greedy tokens as one rank (plain
// and speculative); bad rank counts fail before the model is loaded.
TEST_F(Cli, TensorParallelGenerateMatchesOneRank) {
  const std::string base = str_cat("generate -m ", model(), " --ids 256,84,104,101,32,119 -n 8 --ignore-eos --json");
  const json one = run_json(base), spec = run_json(base + " --spec-tokens 2");
  EXPECT_EQ(spec["tokens"], one["tokens"]);
  // Beyond the engine's default draft room (7) up to the flag's 16: the state is sized for what is asked.
  EXPECT_EQ(run_json(base + " --spec-tokens 16")["tokens"], one["tokens"]);
  for (const auto& [ranks, extra] :
       {std::pair{2, " --expert-parallel"}, std::pair{4, ""}, std::pair{3, " --expert-parallel --spec-tokens 2"}}) {
    const json tp = run_json(str_cat(base, " --tensor-parallel-size ", ranks, extra));
    EXPECT_EQ(tp["tokens"], one["tokens"]) << ranks << extra;
    EXPECT_EQ(tp["settings"]["tensor_parallel_size"], ranks);
  }
  expect_failure(base + " --tensor-parallel-size 0", {"--tensor-parallel-size must be in [1, 1024], got 0"});
  expect_failure(base + " --tensor-parallel-size 5",
                 {"--tensor-parallel-size 5 exceeds the model's 4 attention heads"});
  expect_failure(base + " --expert-parallel", {"--expert-parallel needs --tensor-parallel-size > 1"});
  expect_failure(str_cat("score -m ", model(), " --ids 1,2 --tensor-parallel-size 9"), {"exceeds the model's 4"});
}

TEST_F(Cli, UsageErrors) {
  expect_failure("", {"subcommand"});
  expect_failure("bogus", {});
  expect_failure(str_cat("info -m ", model(), " --bogus"), {"--bogus"});
  expect_failure(str_cat("generate -m ", model(), " --ids 1 --frobnicate 3"), {"--frobnicate"});
  expect_failure("info", {"--model is required"});
  expect_failure("score -m x", {"--ids is required"});
  expect_failure("make-tiny", {"OUT_DIR is required"});
  expect_failure(str_cat("make-tiny ", path("x"), " --seed abc"), {"--seed"});
  expect_failure(str_cat("make-tiny ", path("x"), " --seed -3"), {"--seed", "non-negative"});
  expect_failure(str_cat("generate -m ", model(), " --ids 1 -n 1 --seed -1"), {"--seed", "non-negative"});
  expect_failure(str_cat("bench -m ", model(), " --seed=-7"), {"--seed", "non-negative"});
  // bench's lists name their own flag (they once all said --ids).
  expect_failure(str_cat("bench -m ", model(), " --contexts -5"), {"--contexts: '-5' is not a count"});
  expect_failure(str_cat("bench -m ", model(), " --batch 4,x"), {"--batch: 'x' is not a count"});
  expect_failure(str_cat("bench -m ", model(), " --prefill 0"), {"--prefill: values must be > 0"});
  expect_failure(str_cat("bench -m ", model(), " --spec-tokens 1,,2"), {"--spec-tokens: empty entry"});
  expect_failure(str_cat("bench -m ", model(), " --contexts ''"), {"--contexts is empty"});
  expect_failure(str_cat("bench -m ", model(), " --modes ''"), {"--modes is empty"});
  expect_failure(str_cat("bench -m ", model(), " --modes auto,,full"), {"--modes: empty entry"});
  expect_failure(str_cat("bench -m ", model(), " --modes eager"), {"--modes: 'eager' is not one of"});
  expect_failure(str_cat("bench -m ", model(), " --warmup -1"), {"--warmup must be >= 0, got -1"});
  expect_failure(str_cat("bench -m ", model(), " --reps 0"), {"--reps must be > 0"});
  expect_failure(str_cat("bench -m ", model(), " --decode-steps 1"), {"--decode-steps must be > 1"});
  expect_failure(str_cat("score -m ", model(), " --ids 1,-2"), {"--ids: '-2' is not a token id"});
  expect_failure(str_cat("generate -m ", model(), " --prompt ''"), {"--prompt is empty"});
  expect_failure(str_cat("generate -m ", model(), " --ids ''"), {"--ids is empty"});
  // An explicit empty API key (an unset shell variable) is refused, not taken as "no key".
  expect_failure(str_cat("serve -m ", model(), " --api-key ''"), {"--api-key is empty"});
  expect_failure(str_cat("serve -m ", model(), " --served-model-name ''"), {"--served-model-name is empty"});
  // An address serve cannot listen on fails before the model loads (no KV state set up): an address of another
  // machine (TEST-NET-1, resolved without DNS), a port another socket holds.
  const int held = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(held, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(held, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(held, 1), 0);
  ASSERT_EQ(::getsockname(held, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  for (const auto& [flags, what] :
       {std::pair<std::string, std::string>{"--port 0 --host 192.0.2.1", "not an address of this machine"},
        {str_cat("--host 127.0.0.1 --port ", ntohs(addr.sin_port)), "in use"}}) {
    const Result r = run(str_cat("serve -m ", model(), " --device cpu ", flags));
    EXPECT_EQ(r.status, 1) << flags << ": " << r.err;
    EXPECT_NE(r.err.find(what), std::string::npos) << flags << ": " << r.err;
    EXPECT_EQ(r.err.find("KV state"), std::string::npos) << flags << ": the model loaded first: " << r.err;
  }
  ::close(held);
  // --version names the version and the build.
  const Result v = run("--version");
  EXPECT_EQ(v.status, 0) << v.err;
  EXPECT_EQ(v.out.rfind("dsv4 ", 0), 0u) << v.out;
  // --help is not an error.
  const Result h = run("generate --help");
  EXPECT_EQ(h.status, 0);
  EXPECT_NE(h.out.find("--temperature"), std::string::npos);
}

}  // namespace
}  // namespace dsv4
