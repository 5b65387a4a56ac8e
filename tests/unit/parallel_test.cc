// Multi-rank runs on the CPU: the in-process communicator (collectives, failures, timeouts), the partitioning of
// heads and experts over N ranks (uneven splits), and the sharded model's logits against the single-rank run.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <set>
#include <thread>
#include <tuple>

#include "dsv4/core/dtype.h"
#include "dsv4/model/forward_memory.h"
#include "dsv4/model/mtp.h"
#include "dsv4/parallel/in_process.h"
#include "dsv4/parallel/partition.h"
#include "dsv4/runtime/batch.h"
#include "dsv4/runtime/engine.h"
#include "scheduler_testing.h"
#include "test_util.h"

namespace dsv4 {
namespace {

using std::chrono::milliseconds;

// ---- the in-process communicator ----

TEST(InProcessCommunicator, CollectivesGiveEveryRankTheSameResult) {
  constexpr int kRanks = 4;
  InProcessGroup group(kRanks, milliseconds(10000));
  std::vector<std::vector<float>> sums(kRanks), gathered(kRanks);
  std::vector<std::vector<uint16_t>> bf16_sums(kRanks);
  std::vector<std::vector<uint8_t>> plans(kRanks);
  group.run([&](Communicator& comm) {
    const int r = comm.rank();
    EXPECT_EQ(comm.size(), kRanks);
    for (int round = 0; round < 50; ++round) {  // many back-to-back collectives: no phase mixes with the next
      std::vector<float> v = {1.0f * r, 0.5f * r + round, -2.0f};
      comm.all_reduce_sum(Tensor(v.data(), DType::F32, {3}));
      if (round == 49) sums[r] = v;
      EXPECT_EQ(v[0], 6.0f);
      EXPECT_EQ(v[1], 3.0f + kRanks * round);
    }
    std::vector<uint16_t> b = {float_to_bf16(0.25f * (r + 1))};
    comm.all_reduce_sum(Tensor(b.data(), DType::BF16, {1}));
    bf16_sums[r] = b;
    std::vector<int32_t> mine = {r, 10 * r};
    std::vector<int32_t> all(2 * kRanks);
    comm.all_gather(Tensor(mine.data(), DType::I32, {2}), Tensor(all.data(), DType::I32, {2 * kRanks}));
    for (int q = 0; q < kRanks; ++q) {
      EXPECT_EQ(all[2 * q], q);
      EXPECT_EQ(all[2 * q + 1], 10 * q);
    }
    plans[r] = r == 2 ? std::vector<uint8_t>{7, 8, 9, 10, 11} : std::vector<uint8_t>{};
    comm.broadcast_bytes(&plans[r], /*root=*/2);
    comm.barrier();
  });
  for (int r = 0; r < kRanks; ++r) {
    EXPECT_EQ(sums[r], sums[0]);
    EXPECT_EQ(bf16_to_float(bf16_sums[r][0]), 2.5f);
    EXPECT_EQ(plans[r], (std::vector<uint8_t>{7, 8, 9, 10, 11}));
  }
}

TEST(InProcessCommunicator, ARankThatThrowsAbortsItsPeersWithItsReason) {
  InProcessGroup group(3, milliseconds(5000));
  std::atomic<int> aborted{0};
  const auto t0 = std::chrono::steady_clock::now();
  try {
    group.run([&](Communicator& comm) {
      std::vector<float> v(4, 1.0f);
      comm.all_reduce_sum(Tensor(v.data(), DType::F32, {4}));
      if (comm.rank() == 1) fail(StatusCode::kIoError, "disk gone");
      try {
        comm.all_reduce_sum(Tensor(v.data(), DType::F32, {4}));
      } catch (const Error& e) {
        EXPECT_EQ(e.code(), StatusCode::kAborted);
        EXPECT_NE(std::string(e.what()).find("rank 1 failed: disk gone"), std::string::npos) << e.what();
        ++aborted;
        throw;
      }
    });
    FAIL() << "the failing rank's error must reach the caller";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kIoError) << e.what();  // the cause, not a peer's consequential abort
  }
  EXPECT_EQ(aborted.load(), 2);
  // Peers leave as soon as the failure is known, not at the timeout.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(4000));
}

TEST(InProcessCommunicator, AMissingRankTimesOutOnEveryRank) {
  InProcessGroup group(3, milliseconds(200));
  std::atomic<int> timed_out{0};
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(group.run([&](Communicator& comm) {
    if (comm.rank() == 2) {
      std::this_thread::sleep_for(milliseconds(600));  // a hung peer: never joins in time
    }
    try {
      comm.barrier();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::kAborted);
      const std::string what = e.what();
      EXPECT_TRUE(what.find("timed out after 200 ms waiting for rank(s) 2") != std::string::npos) << what;
      ++timed_out;
      throw;
    }
  }),
               Error);
  EXPECT_EQ(timed_out.load(), 3);  // the late rank too: the job is over when it arrives
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds(3000));
}

// ---- partitioning ----

template <typename Fn>
void expect_error(Fn&& fn, StatusCode code, const std::string& text) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << text << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
  }
}

ModelConfig heads_and_experts(int64_t heads, int64_t groups, int64_t experts) {
  ModelConfig c;
  c.num_attention_heads = heads;
  c.o_groups = groups;
  c.n_routed_experts = experts;
  return c;
}

// Every head and every expert on exactly one rank, ranges contiguous and balanced, units within one group.
void expect_cover(const ModelConfig& c, int n, bool ep) {
  std::vector<int> head_owner(static_cast<size_t>(c.num_attention_heads), -1);
  std::vector<int> expert_owner(static_cast<size_t>(c.n_routed_experts), -1);
  int64_t min_heads = c.num_attention_heads, max_heads = 0, unit = 0;
  for (int r = 0; r < n; ++r) {
    const RankPartition p = partition_for_rank(c, {n, ep}, r);
    EXPECT_GE(p.heads(), 1);
    EXPECT_EQ(p.heads() % p.unit_heads, 0);
    EXPECT_EQ((c.num_attention_heads / c.o_groups) % p.unit_heads, 0);  // a unit never straddles two groups
    unit = p.unit_heads;
    min_heads = std::min(min_heads, p.heads());
    max_heads = std::max(max_heads, p.heads());
    for (int64_t h = p.head_begin; h < p.head_end; ++h) {
      EXPECT_EQ(head_owner[h], -1);
      head_owner[h] = r;
    }
    for (int32_t e : p.experts) {
      if (ep) {
        EXPECT_EQ(e % n, r);
        EXPECT_EQ(expert_owner[e], -1);
        expert_owner[e] = r;
      }
    }
    if (!ep) {
      EXPECT_EQ(static_cast<int64_t>(p.experts.size()), c.n_routed_experts);
    }
  }
  for (int owner : head_owner) EXPECT_GE(owner, 0);
  if (ep) {
    for (int owner : expert_owner) EXPECT_GE(owner, 0);
  }
  EXPECT_LE(max_heads - min_heads, unit);  // balanced: ranks differ by one unit at most
}

TEST(Partition, UnevenHeadsAndExperts) {
  // 3 heads in 3 groups over 2 ranks: whole groups, rank 0 takes two.
  RankPartition p0 = partition_for_rank(heads_and_experts(3, 3, 4), {2, true}, 0);
  RankPartition p1 = partition_for_rank(heads_and_experts(3, 3, 4), {2, true}, 1);
  EXPECT_EQ(p0.unit_heads, 1);
  EXPECT_EQ(p0.head_begin, 0);
  EXPECT_EQ(p0.head_end, 2);
  EXPECT_EQ(p1.head_begin, 2);
  EXPECT_EQ(p1.head_end, 3);
  EXPECT_EQ(p0.experts, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(p1.experts, (std::vector<int32_t>{1, 3}));
  // 4 heads in 2 groups over 4 ranks: groups split into single heads.
  const RankPartition q = partition_for_rank(heads_and_experts(4, 2, 8), {4, false}, 3);
  EXPECT_EQ(q.unit_heads, 1);
  EXPECT_EQ(q.head_begin, 3);
  EXPECT_EQ(q.experts.size(), 8u);  // no expert parallelism: every expert everywhere
  // 8 heads in 2 groups over 2 ranks: one whole group each.
  EXPECT_EQ(partition_for_rank(heads_and_experts(8, 2, 8), {2, false}, 1).unit_heads, 4);
  // 6 experts over 4 ranks: {0, 4}, {1, 5}, {2}, {3}.
  EXPECT_EQ(partition_for_rank(heads_and_experts(4, 2, 6), {4, true}, 0).experts, (std::vector<int32_t>{0, 4}));
  EXPECT_EQ(partition_for_rank(heads_and_experts(4, 2, 6), {4, true}, 3).experts, (std::vector<int32_t>{3}));
  for (const auto& [heads, groups, experts] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{3, 3, 4}, {4, 2, 6}, {12, 4, 7}, {64, 8, 256}, {2, 2, 6}}) {
    for (int n = 1; n <= std::min<int64_t>(heads, experts); ++n) {
      SCOPED_TRACE(str_cat(heads, " heads, ", groups, " groups, ", experts, " experts over ", n));
      expect_cover(heads_and_experts(heads, groups, experts), n, true);
      expect_cover(heads_and_experts(heads, groups, experts), n, false);
    }
  }
}

TEST(Partition, BadSizesAreClearErrors) {
  const ModelConfig c = heads_and_experts(4, 2, 3);
  expect_error(
      [&] {
        check_parallel_config(c, {0, false});
      },
      StatusCode::kInvalidArgument, "--tensor-parallel-size must be >= 1");
  expect_error(
      [&] {
        check_parallel_config(c, {5, false});
      },
      StatusCode::kInvalidArgument, "exceeds the model's 4 attention heads");
  expect_error(
      [&] {
        check_parallel_config(c, {4, true});
      },
      StatusCode::kInvalidArgument, "needs at least 4 routed experts, the model has 3");
  check_parallel_config(c, {4, false});
  check_parallel_config(c, {3, true});
}

// ---- the sharded model against the single-rank run ----

struct Model {
  ModelConfig cfg;
  Checkpoint ckpt;
  ModelWeights weights;
};

std::unique_ptr<Model> load_model(const std::string& dir) {
  auto m = std::make_unique<Model>();
  m->cfg = ModelConfig::from_file(dir + "/config.json");
  m->ckpt = Checkpoint::open(dir);
  m->weights = load_weights(m->ckpt, m->cfg, {Device::kCPU, true});
  return m;
}

struct Logits {
  std::vector<float> target, draft;  // [T, V] each: every position's target logits, then the drafter's
};

// Prefill of `ids` in two chunks, then the MTP drafter over the target's residual (the drafter input of position t
// is ids[t + 1]), on one rank's weights and state; comm null = the single-rank run.
Logits run_rank(const ModelConfig& cfg, const ModelWeights& w, const std::vector<int32_t>& ids, Communicator* comm) {
  const int64_t T = static_cast<int64_t>(ids.size()), V = cfg.vocab_size, n = cfg.hc_mult, H = cfg.hidden_size;
  ModelOptions opt;
  opt.max_model_len = 128;
  ModelState state(cfg, opt, Device::kCPU, w.mtp.has_value());
  Arena scratch("scratch", measure_forward_scratch(cfg, w, opt, Device::kCPU, {T, T, w.mtp.has_value()}), Device::kCPU);
  ExecContext ctx;
  ctx.scratch = &scratch;
  ctx.comm = comm;
  Logits out;
  std::vector<float> residual(static_cast<size_t>(T * n * H));
  const int64_t split = T / 3;
  for (const auto& [begin, end] : {std::pair<int64_t, int64_t>{0, split}, {split, T}}) {
    BatchBuilder b;
    b.add({0, static_cast<int32_t>(begin), std::vector<int32_t>(ids.begin() + begin, ids.begin() + end), true});
    std::vector<float> logits(static_cast<size_t>((end - begin) * V));
    scratch.reset();
    target_forward(ctx, cfg, w, state, b.meta(), b.logit_rows(), Tensor(logits.data(), DType::F32, {end - begin, V}),
                   Tensor(residual.data() + begin * n * H, DType::F32, {end - begin, n, H}));
    out.target.insert(out.target.end(), logits.begin(), logits.end());
  }
  if (w.mtp) {
    BatchBuilder b;
    std::vector<int32_t> next(ids.begin() + 1, ids.end());
    next.push_back(ids[0]);
    b.add({0, 0, next, true});
    std::vector<float> hidden_out(residual.size());
    out.draft.resize(static_cast<size_t>(T * V));
    scratch.reset();
    drafter_forward(ctx, cfg, w, state, b.meta(), Tensor(residual.data(), DType::F32, {T, n, H}),
                    Tensor(hidden_out.data(), DType::F32, {T, n, H}), b.logit_rows(),
                    Tensor(out.draft.data(), DType::F32, {T, V}));
  }
  return out;
}

void expect_sharded_parity(const Model& m, const std::vector<int32_t>& ids, int ranks, bool ep) {
  SCOPED_TRACE(str_cat(ranks, " ranks", ep ? ", expert parallel" : ""));
  const Logits single = run_rank(m.cfg, m.weights, ids, nullptr);
  const ParallelConfig pc{ranks, ep};
  std::vector<RankPartition> parts;
  std::vector<ModelConfig> cfgs;
  std::vector<ModelWeights> shards;
  for (int r = 0; r < ranks; ++r) {
    parts.push_back(partition_for_rank(m.cfg, pc, r));
    cfgs.push_back(rank_config(m.cfg, parts.back()));
    shards.push_back(shard_weights(m.cfg, m.weights, parts.back()));
  }
  std::vector<Logits> per_rank(static_cast<size_t>(ranks));
  InProcessGroup group(ranks, milliseconds(60000));
  group.run([&](Communicator& comm) {
    per_rank[comm.rank()] = run_rank(cfgs[comm.rank()], shards[comm.rank()], ids, &comm);
  });
  ASSERT_EQ(per_rank[0].target.size(), single.target.size());
  EXPECT_LE(test::max_rel_error(per_rank[0].target.data(), single.target.data(), single.target.size()), 1e-5);
  EXPECT_LE(test::max_rel_error(per_rank[0].draft.data(), single.draft.data(), single.draft.size()), 1e-5);
  EXPECT_EQ(per_rank[0].draft.size(), single.draft.size());
  for (int r = 1; r < ranks; ++r) {  // replicated activations are bit-identical on every rank
    EXPECT_EQ(per_rank[r].target, per_rank[0].target) << "rank " << r;
    EXPECT_EQ(per_rank[r].draft, per_rank[0].draft) << "rank " << r;
  }
}

std::vector<int32_t> some_ids(const ModelConfig& cfg, int64_t n) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>((i * 7919 + 13) % cfg.vocab_size));
  return ids;
}

TEST(ShardedModel, HfFixturesMatchTheSingleRank) {
  for (const char* name : {"tiny_a", "tiny_b", "tiny_c"}) {
    SCOPED_TRACE(name);
    const auto m = load_model(test::fixture_dir(name));
    const std::vector<int32_t> ids = some_ids(m->cfg, 40);
    for (int ranks : {2, 4}) {
      if (ranks > m->cfg.num_attention_heads) continue;  // tiny_b (2 heads) and tiny_c (3): N = 2 only
      expect_sharded_parity(*m, ids, ranks, false);
      if (ranks <= m->cfg.n_routed_experts) expect_sharded_parity(*m, ids, ranks, true);
    }
    if (m->cfg.num_attention_heads == 3) expect_sharded_parity(*m, ids, 3, true);  // 3 heads, 4 experts over 3
  }
}

// FP8/FP4 checkpoints (dequantised on the CPU before slicing) and the MTP fixture (a trained drafter).
TEST(ShardedModel, QuantizedAndMtpFixturesMatchTheSingleRank) {
  const std::string fixtures = test::source_dir() + "/tests/fixtures";
  for (const std::string& dir : {fixtures + "/quantized/qtiny_a", fixtures + "/quantized/qtiny_b",
                                 fixtures + "/quantized/qtiny_c", fixtures + "/mtp/mtp_tiny"}) {
    SCOPED_TRACE(dir);
    const auto m = load_model(dir);
    const std::vector<int32_t> ids = some_ids(m->cfg, 32);
    expect_sharded_parity(*m, ids, 2, true);
    const int most = static_cast<int>(std::min<int64_t>(4, m->cfg.num_attention_heads));
    if (most > 2) expect_sharded_parity(*m, ids, most, false);
  }
}

TEST(ShardedModel, DefaultModelMatchesTheSingleRank) {
  const auto m = load_model(test::source_dir() + "/models/dsv4-tiny-kjv");
  const std::vector<int32_t> ids = some_ids(m->cfg, 48);
  for (int ranks : {2, 4}) {
    expect_sharded_parity(*m, ids, ranks, false);
    expect_sharded_parity(*m, ids, ranks, true);
  }
  expect_sharded_parity(*m, ids, 3, true);  // 4 heads and 8 experts over 3 ranks: uneven both ways
  // The control: one rank's share alone (summed over a group of one) is far from the model — the shards do split
  // the work, and the parity above comes from the all-reduces.
  const RankPartition half = partition_for_rank(m->cfg, {2, true}, 0);
  const ModelWeights shard = shard_weights(m->cfg, m->weights, half);
  InProcessGroup alone(1, milliseconds(1000));
  const Logits single = run_rank(m->cfg, m->weights, ids, nullptr);
  const Logits partial = run_rank(rank_config(m->cfg, half), shard, ids, &alone.rank(0));
  EXPECT_GT(test::max_rel_error(partial.target.data(), single.target.data(), single.target.size()), 1e-2);
}

// ---- the engine: rank 0 schedules, the followers replay its step plans ----

EngineOptions small_engine(int ranks, bool ep) {
  EngineOptions o;
  o.max_seqs = 4;
  o.max_model_len = 160;
  o.max_batch_tokens = 64;  // prompts prefill in several chunks
  o.max_spec_tokens = 3;
  o.kv_cache_memory = int64_t{64} << 20;
  o.parallel = {ranks, ep};
  return o;
}

struct Generated {
  GenerateResult result;
  std::vector<float> logits;  // every target forward's logit rows, in order
};

Generated generate(Engine& e, const std::vector<std::vector<int32_t>>& prompts, int64_t spec_tokens) {
  Generated run;
  GenerateOptions go = test::greedy(12, spec_tokens);
  go.on_target_logits = [&](const std::vector<float>& l) { run.logits.insert(run.logits.end(), l.begin(), l.end()); };
  run.result = e.generate(prompts, go);
  return run;
}

TEST(ParallelEngine, GenerateAndSpeculativeDecodingMatchOneRank) {
  const std::string dir = test::source_dir() + "/models/dsv4-tiny-kjv";
  Engine single(dir, small_engine(1, false));
  const auto prompts = test::mixed_prompts(single.config().vocab_size, 3, 5, 80);
  const Generated plain = generate(single, prompts, 0), spec = generate(single, prompts, 2);
  for (const auto& [ranks, ep] : {std::pair{2, true}, std::pair{4, false}}) {
    SCOPED_TRACE(str_cat(ranks, " ranks", ep ? ", expert parallel" : ""));
    Engine tp(dir, small_engine(ranks, ep));
    const Generated tp_plain = generate(tp, prompts, 0);
    EXPECT_EQ(tp_plain.result.tokens, plain.result.tokens);
    ASSERT_EQ(tp_plain.logits.size(), plain.logits.size());
    ASSERT_FALSE(plain.logits.empty());
    EXPECT_LE(test::max_rel_error(tp_plain.logits.data(), plain.logits.data(), plain.logits.size()), 1e-5);
    const Generated tp_spec = generate(tp, prompts, 2);  // drafter, verification and acceptance on every rank
    EXPECT_EQ(tp_spec.result.tokens, spec.result.tokens);
    EXPECT_EQ(tp_spec.result.stats.accepted_tokens, spec.result.stats.accepted_tokens);
    EXPECT_GT(tp_spec.result.stats.draft_steps, 0);
    ASSERT_EQ(tp_spec.logits.size(), spec.logits.size());
    EXPECT_LE(test::max_rel_error(tp_spec.logits.data(), spec.logits.data(), spec.logits.size()), 1e-5);
    EXPECT_LE(test::max_rel_error(tp.score(prompts[0]).data(), single.score(prompts[0]).data(),
                                  single.score(prompts[0]).size()),
              1e-5);
  }
}

TEST(ParallelEngine, BadRankCountsFailBeforeLoading) {
  const std::string dir = test::source_dir() + "/models/dsv4-tiny-kjv";  // 4 heads, 8 experts
  expect_error([&] { Engine e(dir, small_engine(5, false)); }, StatusCode::kInvalidArgument,
               "--tensor-parallel-size 5 exceeds the model's 4 attention heads");
  expect_error([&] { Engine e(dir, small_engine(0, false)); }, StatusCode::kInvalidArgument,
               "--tensor-parallel-size must be >= 1");
  expect_error([&] { Engine e(dir, small_engine(1, true)); }, StatusCode::kInvalidArgument,
               "--expert-parallel needs --tensor-parallel-size > 1");
}

}  // namespace
}  // namespace dsv4
