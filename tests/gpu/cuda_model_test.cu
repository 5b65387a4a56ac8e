// Whole-model parity of the CUDA backend with transformers' token-by-token logits (tests/fixtures/hf),
// greedy agreement with the CPU backend through the Engine, and graph capture of a forward (capture
// safety: no host sync, allocation or host read of device data inside a forward).
//
// Two precisions. F32 (f32 matrices and activations on the GPU) checks the CUDA path itself against the
// reference at full precision: logits within 1e-3, no flipped choice, greedy tokens identical. BF16 (the
// production setting) adds one bf16 rounding per stored activation; on these fixtures (random unit-scale
// weights) that alone moves logits by 2-5% — a CPU emulation of the same roundings gives the same figures
// (docs/cuda-backend.md) — and flips near-tied router/indexer choices, after which a sequence follows
// another path. So the BF16 run is checked with the CPU's discrete choices forced (choice_tap.h): every
// flip must be a near-tie and the forced logits must stay within the bf16 bound; free-run figures are
// reported, and a greedy divergence must happen at a logit near-tie of the reference.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "choice_tap.h"
#include "cuda_test_util.h"
#include "dsv4/model/deepseek_v4.h"
#include "dsv4/model/forward_memory.h"
#include "dsv4/runtime/batch.h"
#include "dsv4/runtime/engine.h"
#include "unit/test_util.h"

namespace dsv4 {
namespace {

constexpr double kLogitTolerance = 2e-2;       // the issue's bound, met at F32 and per bf16 block
constexpr double kF32Tolerance = 1e-3;         // the CUDA path at full precision
constexpr double kBf16ForcedTolerance = 8e-2;  // bf16 with the CPU's choices (CPU emulation: 0.020-0.049)
// A choice the reference made with a score gap above this (relative to its largest score) is not a
// near-tie: flipping it is a bug, not rounding.
// bf16 noise moves deep-layer scores by up to the forced logit error, so a gap below that bound is a near-tie.
constexpr double kNearTie = 8e-2;

const char* precision_name(DType p) { return p == DType::F32 ? "F32" : "BF16"; }

struct Fixture {
  std::string name;
  ModelConfig cfg;
  Checkpoint ckpt;
  ModelWeights weights;      // on the device, bf16 matrices
  ModelWeights weights_f32;  // on the device, f32 matrices
  std::unique_ptr<SafetensorsFile> expected;
  std::vector<int32_t> ids;
  std::vector<float> logits;  // [T, V]
  int64_t T() const { return static_cast<int64_t>(ids.size()); }
  const ModelWeights& gpu(DType p) const { return p == DType::F32 ? weights_f32 : weights; }
};

std::unique_ptr<Fixture> load_fixture(const std::string& name) {
  auto f = std::make_unique<Fixture>();
  f->name = name;
  const std::string dir = test::fixture_dir(name);
  f->cfg = ModelConfig::from_file(dir + "/config.json");
  f->ckpt = Checkpoint::open(dir);
  f->weights = load_weights(f->ckpt, f->cfg, {Device::kCUDA, false, DType::BF16});
  f->weights_f32 = load_weights(f->ckpt, f->cfg, {Device::kCUDA, false, DType::F32});
  f->expected = SafetensorsFile::open(dir + "/expected.safetensors");
  const Tensor ids = f->expected->view(*f->expected->find("input_ids"));
  for (int64_t i = 0; i < ids.numel(); ++i) f->ids.push_back(static_cast<int32_t>(ids.ptr<int64_t>()[i]));
  f->logits = test::to_vector(f->expected->view(*f->expected->find("logits")));
  return f;
}

// A host batch copied to device buffers.
struct DeviceBatch {
  test::DevTensor ids, pos, slot, start, end, rows;
  BatchMeta meta;
  Tensor logit_rows;
  explicit DeviceBatch(BatchBuilder& b) {
    const BatchMeta h = b.meta();
    auto up = [](const Tensor& t) {
      return test::upload_i32(std::vector<int32_t>(t.ptr<int32_t>(), t.ptr<int32_t>() + t.numel()), {t.numel()});
    };
    ids = up(h.ids), pos = up(h.pos), slot = up(h.slot), start = up(h.start), end = up(h.end),
    rows = up(b.logit_rows());
    meta = {ids.t, pos.t, slot.t, start.t, end.t, h.num_tokens};
    logit_rows = rows.t;
  }
};

// The model on one device with its own state and scratch; forwards a host batch, returns [R, V] logits.
class Model {
 public:
  Model(const Fixture& f, const ModelWeights& w, Device device, int64_t max_seqs = 3, DType precision = DType::BF16)
      : f_(f), w_(w), device_(device), state_(f.cfg, options(max_seqs, precision), device, false) {
    const size_t scratch = measure_forward_scratch(f.cfg, w, options(max_seqs, precision), device, {256, 256, false});
    if (device == Device::kCUDA) {
      env_ = std::make_unique<test::DeviceEnv>(scratch);
    } else {
      cpu_scratch_ = Arena("cpu-scratch", scratch, Device::kCPU);
      cpu_ctx_.scratch = &cpu_scratch_;
    }
  }

  static ModelOptions options(int64_t max_seqs, DType precision = DType::BF16) {
    ModelOptions o;
    o.max_seqs = max_seqs;
    o.max_model_len = 256;
    o.cuda_activation_dtype = precision;
    return o;
  }

  std::vector<float> forward(BatchBuilder& b) {
    const int64_t R = b.num_logit_rows(), V = f_.cfg.vocab_size;
    if (device_ == Device::kCPU) {
      std::vector<float> logits(static_cast<size_t>(R * V));
      cpu_scratch_.reset();
      target_forward(cpu_ctx_, f_.cfg, w_, state_, b.meta(), b.logit_rows(), Tensor(logits.data(), DType::F32, {R, V}),
                     Tensor());
      return logits;
    }
    DeviceBatch d(b);
    test::DevTensor logits(DType::F32, {R, V});
    test::poison(logits.t);
    env_->scratch().reset();
    target_forward(env_->ctx, f_.cfg, w_, state_, d.meta, d.logit_rows, logits.t, Tensor());
    env_->sync();
    return test::download(logits.t);
  }

  test::DeviceEnv& env() { return *env_; }
  ModelState& state() { return state_; }

 private:
  const Fixture& f_;
  const ModelWeights& w_;
  Device device_;
  ModelState state_;
  std::unique_ptr<test::DeviceEnv> env_;
  Arena cpu_scratch_;
  ExecContext cpu_ctx_;
};

// A schedule: forwards of chunks (slot, first position, tokens) of the fixture's sequence, plus padding rows.
struct Step {
  struct Chunk {
    int32_t slot;
    int64_t start, n;
  };
  std::vector<Chunk> chunks;
  int64_t padding = 0;
};
using Schedule = std::vector<Step>;

Schedule single_sequence(const std::vector<int64_t>& sizes) {
  Schedule s;
  int64_t done = 0;
  for (int64_t n : sizes) {
    s.push_back({{{0, done, n}}, 0});
    done += n;
  }
  return s;
}

// Runs a schedule (logits for every token); returns the logits in order and, for each row, its position.
std::vector<float> run_schedule(Model& m, const Fixture& f, const Schedule& schedule, std::vector<int64_t>* positions) {
  std::vector<float> out;
  positions->clear();
  for (const Step& step : schedule) {
    BatchBuilder b;
    for (const Step::Chunk& c : step.chunks) {
      b.add({c.slot, static_cast<int32_t>(c.start),
             std::vector<int32_t>(f.ids.begin() + c.start, f.ids.begin() + c.start + c.n), true});
      for (int64_t i = 0; i < c.n; ++i) positions->push_back(c.start + i);
    }
    if (step.padding > 0) b.pad_to(b.num_tokens() + step.padding);
    const std::vector<float> l = m.forward(b);
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

// The fixture's logits for the given rows.
std::vector<float> expected_rows(const Fixture& f, const std::vector<int64_t>& positions) {
  const int64_t V = f.cfg.vocab_size;
  std::vector<float> out;
  for (int64_t p : positions) out.insert(out.end(), f.logits.begin() + p * V, f.logits.begin() + (p + 1) * V);
  return out;
}

// Relative top-2 margin of a logit row: (first - second) / max |logit|.
double relative_margin(const float* row, int64_t V) {
  std::vector<float> sorted(row, row + V);
  std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
  double top = 0;
  for (int64_t v = 0; v < V; ++v) top = std::max(top, std::fabs(static_cast<double>(row[v])));
  return (sorted[0] - sorted[1]) / std::max(top, 1e-30);
}

// Argmax rows that differ, and the reference's relative top-2 margin at each (a near-tie explains a flip).
void report_argmax(const std::vector<float>& got, const std::vector<float>& want, int64_t V, const std::string& what) {
  int64_t differ = 0;
  for (size_t r = 0; r * V < want.size(); ++r) {
    const float* g = got.data() + r * V;
    const float* w = want.data() + r * V;
    const int64_t ag = std::max_element(g, g + V) - g, aw = std::max_element(w, w + V) - w;
    if (ag == aw) continue;
    ++differ;
    std::printf("  %s: row %zu argmax %lld vs reference %lld (reference relative top-2 margin %.3g)\n", what.c_str(), r,
                static_cast<long long>(ag), static_cast<long long>(aw), relative_margin(w, V));
  }
  std::printf("  %s: %lld of %zu rows with a different argmax\n", what.c_str(), static_cast<long long>(differ),
              want.size() / V);
}

// CPU (recording its choices), then CUDA at F32 (strict), at BF16 free (reported) and at BF16 with the
// CPU's choices forced (near-tie flips only, bf16 bound).
void check_schedule(const Fixture& f, const ModelWeights& cpu_w, const std::string& label, const Schedule& schedule) {
  const std::string what = f.name + " " + label;
  std::vector<int64_t> positions;
  test::RecordingTap record;
  std::vector<float> cpu_logits;
  {
    Model cpu(f, cpu_w, Device::kCPU);
    test::ScopedTap scope(&record);
    cpu_logits = run_schedule(cpu, f, schedule, &positions);
  }
  const std::vector<float> want = expected_rows(f, positions);
  const double cpu_err = test::max_rel_error(cpu_logits.data(), want.data(), want.size());
  EXPECT_LE(cpu_err, 1e-4) << what << ": the CPU reference itself";
  struct Run {
    DType precision;
    bool force;
  };
  for (const Run run : {Run{DType::F32, false}, Run{DType::BF16, false}, Run{DType::BF16, true}}) {
    Model gpu(f, f.gpu(run.precision), Device::kCUDA, 3, run.precision);
    test::FollowingTap follow(record, run.force);
    std::vector<float> got;
    {
      test::ScopedTap scope(&follow);
      got = run_schedule(gpu, f, schedule, &positions);
    }
    std::string where;
    ASSERT_TRUE(test::all_written(got, &where)) << what << ": logits not written: " << where;
    ASSERT_FALSE(follow.mismatched_calls) << what << ": the CUDA run made other routing/indexer calls than the CPU";
    const double err = test::max_rel_error(got.data(), want.data(), want.size());
    const std::string tag =
        str_cat(what, " [", precision_name(run.precision), run.force ? ", CPU choices forced" : "", "]");
    std::printf("%s: max rel logit error %.3g; %s\n", tag.c_str(), err, follow.summary().c_str());
    if (run.precision == DType::F32) {
      EXPECT_LE(err, kF32Tolerance) << tag;
      EXPECT_TRUE(follow.flips.empty()) << tag << ": " << follow.summary();
      report_argmax(got, want, f.cfg.vocab_size, tag);
    } else if (run.force) {
      EXPECT_LE(err, kBf16ForcedTolerance) << tag;
      EXPECT_LE(follow.worst_gap(), kNearTie) << tag << ": a choice that is not a near-tie flipped";
    } else if (err > kBf16ForcedTolerance) {
      EXPECT_FALSE(follow.flips.empty()) << tag << ": error " << err << " without any flipped choice";
    }
  }
}

class CudaModelParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!cuda::unavailable_reason().empty()) return;
    f_ = load_fixture(GetParam());
    cpu_w_ = load_weights(f_->ckpt, f_->cfg, {Device::kCPU, false});
  }
  std::unique_ptr<Fixture> f_;
  ModelWeights cpu_w_;
};

TEST_P(CudaModelParity, PrefillDecodeAndChunks) {
  DSV4_REQUIRE_GPU();
  const int64_t T = f_->T();
  std::vector<int64_t> decode = {T / 3};
  while (static_cast<int64_t>(decode.size()) < T - T / 3 + 1) decode.push_back(1);
  check_schedule(*f_, cpu_w_, "prefill", single_sequence({T}));
  check_schedule(*f_, cpu_w_, "prefill+decode", single_sequence(decode));
  check_schedule(*f_, cpu_w_, "chunks 5+rest", single_sequence({5, T - 5}));
  check_schedule(*f_, cpu_w_, str_cat("chunks ", T / 2 + 1, "+rest"), single_sequence({T / 2 + 1, T - T / 2 - 1}));
}

// Two sequences in different slots advance in the same forwards — prefill chunks next to decode rows,
// with padding rows — and every logit row matches the fixture at its position.
TEST_P(CudaModelParity, MixedBatchesWithPadding) {
  DSV4_REQUIRE_GPU();
  const int64_t T = f_->T();
  struct Seq {
    int32_t slot;
    std::vector<int64_t> chunks;
    int64_t done = 0;
    size_t next = 0;
  };
  std::vector<Seq> seqs = {{2, {10, 1, 1, 7, 1}}, {0, {4, 16, 1, 1}}};
  Schedule schedule;
  while (true) {
    Step step;
    for (Seq& s : seqs) {
      if (s.done >= T) continue;
      const int64_t n = s.next < s.chunks.size() ? std::min(s.chunks[s.next++], T - s.done) : T - s.done;
      step.chunks.push_back({s.slot, s.done, n});
      s.done += n;
    }
    if (step.chunks.empty()) break;
    step.padding = 3;
    schedule.push_back(step);
  }
  check_schedule(*f_, cpu_w_, "mixed batches (2 slots + padding)", schedule);
}

// Diagnostics: each decoder block on the GPU from the CPU's input stream (teacher forcing, one prefill
// forward, the CPU's choices forced), so a block's own error is seen without the accumulation of earlier
// blocks. Every block must stay within the bf16 tolerance.
TEST_P(CudaModelParity, EachBlockFromTheReferenceInput) {
  DSV4_REQUIRE_GPU();
  const Fixture& f = *f_;
  const ModelConfig& c = f.cfg;
  const int64_t T = f.T(), n = c.hc_mult, H = c.hidden_size;
  BatchBuilder b;
  b.add({0, 0, f.ids, true});
  // CPU: the stream before and after every block.
  std::vector<std::vector<float>> streams;
  test::RecordingTap record;
  {
    test::ScopedTap scope(&record);
    ModelState state(c, Model::options(1), Device::kCPU, false);
    Arena scratch("cpu", measure_forward_scratch(c, cpu_w_, Model::options(1), Device::kCPU, {T, T, false}), Device::kCPU);
    ExecContext ctx;
    ctx.scratch = &scratch;
    std::vector<float> emb(T * H), x(T * n * H), next(T * n * H);
    ops::embedding(ctx, test::host_view(emb, {T, H}), cpu_w_.embed, b.meta().ids);
    ops::broadcast_streams(ctx, test::host_view(x, {T, n, H}), test::host_view(emb, {T, H}));
    streams.push_back(x);
    for (size_t l = 0; l < cpu_w_.layers.size(); ++l) {
      decoder_block(ctx, c, cpu_w_.layers[l], state.layers[l], state, b.meta(), test::host_view(x, {T, n, H}),
                    test::host_view(next, {T, n, H}));
      std::swap(x, next);
      streams.push_back(x);
    }
  }
  for (DType p : {DType::F32, DType::BF16}) {
    test::FollowingTap follow(record, true);
    test::ScopedTap scope(&follow);
    Model gpu(f, f.gpu(p), Device::kCUDA, 1, p);
    DeviceBatch d(b);
    double worst = 0;
    for (size_t l = 0; l < f.weights.layers.size(); ++l) {
      test::DevTensor in = test::upload(streams[l], p, {T, n, H}), out(p, {T, n, H});
      test::poison(out.t);
      gpu.env().scratch().reset();
      decoder_block(gpu.env().ctx, c, f.gpu(p).layers[l], gpu.state().layers[l], gpu.state(), d.meta, in.t, out.t);
      gpu.env().sync();
      const std::vector<float> got = test::download(out.t);
      const double err = test::rel_error(got, streams[l + 1]);
      worst = std::max(worst, err);
      std::printf("%s [%s] block %zu (%s, %s): max rel error of the output stream %.3g\n", f.name.c_str(),
                  precision_name(p), l, attention_type_name(c.layer_types[l]), mlp_type_name(c.mlp_layer_types[l]),
                  err);
    }
    std::printf("%s [%s]: %s\n", f.name.c_str(), precision_name(p), follow.summary().c_str());
    EXPECT_LE(worst, p == DType::F32 ? 1e-4 : kLogitTolerance) << precision_name(p);
  }
}

// A decode forward captured into a CUDA graph (global capture mode: any capture-unsafe call fails it)
// replays to logits bit-identical to the eager forward.
TEST_P(CudaModelParity, GraphReplayEqualsEager) {
  DSV4_REQUIRE_GPU();
  const Fixture& f = *f_;
  const int64_t T = f.T(), V = f.cfg.vocab_size;
  Model m(f, f.weights, Device::kCUDA);
  BatchBuilder prefix;
  prefix.add({0, 0, std::vector<int32_t>(f.ids.begin(), f.ids.end() - 1), false});
  m.forward(prefix);
  BatchBuilder b;  // a decode row, a prefill chunk of another slot, padding
  b.add({0, static_cast<int32_t>(T - 1), {f.ids[T - 1]}, true});
  b.add({1, 0, {f.ids[0], f.ids[1], f.ids[2]}, false});
  b.pad_to(6);
  DeviceBatch d(b);
  test::DevTensor logits(DType::F32, {b.num_logit_rows(), V});
  // Re-running the same step rewrites the same state entries with the same values, so runs are comparable.
  auto run = [&] {
    m.env().scratch().reset();
    target_forward(m.env().ctx, f.cfg, f.weights, m.state(), d.meta, d.logit_rows, logits.t, Tensor());
  };
  run();  // eager (also warms cuBLASLt's per-shape plans)
  m.env().sync();
  const std::vector<float> eager = test::download(logits.t);
  test::poison(logits.t);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(m.env().stream(), cudaStreamCaptureModeGlobal));
  run();
  DSV4_CUDA_CHECK(cudaStreamEndCapture(m.env().stream(), &graph));
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  size_t nodes = 0;
  DSV4_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes));
  for (int replay = 0; replay < 3; ++replay) DSV4_CUDA_CHECK(cudaGraphLaunch(exec, m.env().stream()));
  m.env().sync();
  const std::vector<float> replayed = test::download(logits.t);
  DSV4_CUDA_CHECK(cudaGraphExecDestroy(exec));
  DSV4_CUDA_CHECK(cudaGraphDestroy(graph));
  std::printf("%s: forward captured as one graph of %zu nodes; replay == eager: %s\n", f.name.c_str(), nodes,
              replayed == eager ? "bit-identical" : "NO");
  ASSERT_EQ(replayed.size(), eager.size());
  for (size_t i = 0; i < eager.size(); ++i) ASSERT_EQ(replayed[i], eager[i]) << "logit " << i;
}

// Greedy generation through the Engine, two sequences batched. At F32 the CUDA engine emits exactly the
// CPU engine's tokens. At BF16 the tokens agree until the first step whose reference logits are nearly
// tied (relative top-2 margin within the bf16 error) or whose routing/selection flipped at a near-tie.
TEST_P(CudaModelParity, GreedyTokensMatchCpuEngine) {
  DSV4_REQUIRE_GPU();
  const std::string dir = test::fixture_dir(GetParam());
  const Fixture& f = *f_;
  const std::vector<std::vector<int32_t>> prompts = {std::vector<int32_t>(f.ids.begin(), f.ids.begin() + 16),
                                                     std::vector<int32_t>(f.ids.begin() + 5, f.ids.begin() + 30)};
  GenerateOptions go;
  go.max_new_tokens = 32;
  go.stop_at_eos = false;
  EngineOptions co;
  co.max_seqs = 2;
  co.max_model_len = 4096;
  co.max_batch_tokens = 512;
  co.kv_cache_memory = int64_t{256} << 20;  // two engines share the device
  test::RecordingTap record;
  Engine cpu(dir, co);
  GenerateResult want;
  {
    test::ScopedTap scope(&record);
    want = cpu.generate(prompts, go);
  }
  for (DType p : {DType::F32, DType::BF16}) {
    EngineOptions o = co;
    o.device = Device::kCUDA;
    o.cuda_precision = p;
    // The choice taps read routing results on the host after each op: eager forwards only (graph replays
    // run no host code; graph-vs-eager bit identity is tested in graph_model_test.cu).
    o.enforce_eager = true;
    Engine gpu(dir, o);
    test::FollowingTap follow(record, false);
    GenerateResult got;
    {
      test::ScopedTap scope(&follow);
      got = gpu.generate(prompts, go);
    }
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_EQ(got.tokens[i].size(), 32u);
      size_t same = 0;
      while (same < 32 && got.tokens[i][same] == want.tokens[i][same]) ++same;
      std::string why;
      if (same < 32) {  // the reference's logits at the first differing step
        std::vector<int32_t> seq = prompts[i];
        seq.insert(seq.end(), want.tokens[i].begin(), want.tokens[i].begin() + same);
        const int64_t V = cpu.config().vocab_size;
        const std::vector<float> l = cpu.score(seq);
        const double margin = relative_margin(l.data() + l.size() - V, V);
        why = str_cat("; step ", same, ": CUDA ", got.tokens[i][same], ", CPU ", want.tokens[i][same],
                      ", reference relative top-2 margin ", margin);
        if (p == DType::BF16) {
          EXPECT_TRUE(margin <= kBf16ForcedTolerance || !follow.flips.empty())
              << GetParam() << " prompt " << i << why << " is neither a logit near-tie nor after a flipped choice";
        }
      }
      std::printf("%s prompt %zu [%s]: %zu of 32 greedy tokens identical to the CPU engine%s; %s\n", GetParam().c_str(),
                  i, precision_name(p), same, why.c_str(), follow.summary().c_str());
      if (p == DType::F32) {
        EXPECT_EQ(same, 32u) << GetParam() << " prompt " << i << why;
        EXPECT_TRUE(follow.flips.empty()) << follow.summary();
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(HfFixtures, CudaModelParity, ::testing::Values("tiny_a", "tiny_b", "tiny_c"));

TEST(CudaEngine, ScoreMatchesFixtureAndReportsMemory) {
  DSV4_REQUIRE_GPU();
  auto f = load_fixture("tiny_b");
  const std::string dir = test::fixture_dir("tiny_b");
  for (DType p : {DType::F32, DType::BF16}) {
    EngineOptions o;
    o.device = Device::kCUDA;
    o.cuda_precision = p;
    o.max_seqs = 2;
    o.max_model_len = 4096;
    o.kv_cache_memory = int64_t{256} << 20;
    o.max_batch_tokens = 24;  // the 64 tokens are scored in 3 chunks
    Engine e(dir, o);
    const std::vector<float> got = e.score(f->ids);
    ASSERT_EQ(got.size(), f->logits.size());
    const double err = test::max_rel_error(got.data(), f->logits.data(), got.size());
    std::printf("tiny_b Engine::score on CUDA [%s] (chunks of 24): max rel logit error %.3g\n", precision_name(p), err);
    if (p == DType::F32) EXPECT_LE(err, kF32Tolerance);
    std::printf("device memory [%s]: weights %zu, state %zu, activations %zu, io %zu bytes\n", precision_name(p),
                e.weights_bytes(), e.state_bytes(), e.scratch_bytes(), e.device_io_bytes());
    EXPECT_GT(e.weights_bytes(), 0u);
    EXPECT_GT(e.device_io_bytes(), 0u);
  }
}

}  // namespace
}  // namespace dsv4
