// The scheduler (continuous batching over the paged state): requests arriving at different steps, chunked
// prefill, preemption when the pool runs out, impossible requests, cancellation and the request API — every
// output token-identical to the same request run alone (greedy).
#include <map>
#include <random>

#include "dsv4/runtime/engine.h"
#include "dsv4/runtime/page_pool.h"
#include "scheduler_testing.h"
#include "test_util.h"

namespace dsv4 {
namespace {

using test::greedy;
using test::mixed_prompts;

std::string model_dir() { return test::source_dir() + "/models/dsv4-tiny-kjv"; }

// Each prompt alone, one engine, in order.
std::vector<std::vector<int32_t>> alone(Engine& e, const std::vector<std::vector<int32_t>>& prompts, int64_t n) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& p : prompts) out.push_back(e.generate({p}, greedy(n)).tokens[0]);
  return out;
}

// Greedy, n tokens each, prompt i arriving at step (i % period) * stride: prompt chunks mixed into decode steps.
GenerateOptions staggered(size_t count, int64_t n, size_t period, int64_t stride) {
  GenerateOptions go = greedy(n);
  for (size_t i = 0; i < count; ++i) go.arrival_steps.push_back(static_cast<int64_t>(i % period) * stride);
  return go;
}

TEST(Scheduler, ContinuousBatchingMatchesRequestsRunAlone) {
  EngineOptions o;
  o.max_seqs = 12;
  o.max_batch_tokens = 96;  // long prompts take several chunks, mixed with other sequences' decode steps
  Engine e(model_dir(), o);
  const auto prompts = mixed_prompts(e.config().vocab_size, 40, 3);
  const int64_t n = 12;
  const auto want = alone(e, prompts, n);
  const GenerateResult got = e.generate(prompts, staggered(prompts.size(), n, 13, 2));
  EXPECT_EQ(got.tokens, want);
  EXPECT_GT(got.stats.steps, 0);
  // Sequences joined running batches: fewer steps than running the waves one after the other.
  std::printf("40 requests: %lld steps, %lld forwards\n", static_cast<long long>(got.stats.steps),
              static_cast<long long>(got.stats.forward_calls));
  EXPECT_TRUE(e.idle());
  EXPECT_EQ(e.scheduler_stats().pages_used, 0);  // every page back in the pool
}

// Prompt steps trimmed to given sizes (EngineOptions::prompt_step_sizes; on CUDA the sizes whose forwards replay a
// graph): the same tokens as each request alone, with the arrivals mixing prompt chunks into decode steps.
TEST(Scheduler, PromptStepsFittedToSizesKeepOutputs) {
  EngineOptions o;
  o.max_seqs = 12;
  o.max_batch_tokens = 96;
  Engine plain(model_dir(), o);
  const auto prompts = mixed_prompts(plain.config().vocab_size, 20, 7);
  const int64_t n = 10;
  const auto want = alone(plain, prompts, n);
  const GenerateOptions go = staggered(prompts.size(), n, 5, 3);
  const GenerateResult unfitted = plain.generate(prompts, go);
  EXPECT_EQ(unfitted.tokens, want);
  EXPECT_EQ(unfitted.stats.prompt_steps_fitted, 0);
  o.prompt_step_sizes = {16, 40, 64};
  Engine fitted(model_dir(), o);
  const GenerateResult got = fitted.generate(prompts, go);
  EXPECT_EQ(got.tokens, want);
  EXPECT_GT(got.stats.prompt_steps_fitted, 0);
  EXPECT_GT(got.stats.prefill_steps, unfitted.stats.prefill_steps);  // the trimmed chunks ran in later steps
  EXPECT_TRUE(fitted.idle());
  EXPECT_EQ(fitted.scheduler_stats().pages_used, 0);
}

TEST(Scheduler, ChunkedPrefillEqualsOneShot) {
  std::vector<int32_t> long_prompt = {0};
  std::mt19937 rng(5);
  for (int i = 0; i < 300; ++i) long_prompt.push_back(static_cast<int32_t>(2 + rng() % 6000));
  std::vector<float> reference;
  for (int64_t chunk : {512, 5, 64, 129}) {
    EngineOptions o;
    o.max_batch_tokens = chunk;
    o.max_spec_tokens = 2;
    o.max_seqs = 4;
    Engine e(model_dir(), o);
    const std::vector<float> logits = e.score(long_prompt);  // chunked teacher-forced logits
    if (reference.empty()) {
      reference = logits;
      continue;
    }
    EXPECT_LE(test::max_rel_error(logits.data(), reference.data(), reference.size()), 1e-5) << "chunk " << chunk;
    const GenerateResult g = e.generate({long_prompt}, greedy(6));
    EngineOptions big;
    big.max_batch_tokens = 512;
    Engine one(model_dir(), big);
    EXPECT_EQ(g.tokens, one.generate({long_prompt}, greedy(6)).tokens) << "chunk " << chunk;
  }
}

TEST(Scheduler, PreemptionKeepsOutputs) {
  EngineOptions o;
  o.max_seqs = 16;
  o.max_batch_tokens = 128;
  o.page_tokens = 16;  // small pages: sequences grow page by page
  {
    Engine probe(model_dir(), o);
    // A pool for about three sequences at full length: the 16 requests must take turns.
    o.kv_cache_memory = probe.state_layout().bytes_for(120) * 3;
  }
  Engine e(model_dir(), o);
  const auto prompts = mixed_prompts(e.config().vocab_size, 16, 17, 60);
  const int64_t n = 40;
  const GenerateResult got = e.generate(prompts, greedy(n));
  std::printf("preemptions: %lld, pool %lld pages\n", static_cast<long long>(got.stats.preemptions),
              static_cast<long long>(e.pool_pages()));
  EXPECT_GE(got.stats.preemptions, 5);
  EngineOptions roomy;
  roomy.max_seqs = 4;
  Engine ref(model_dir(), roomy);
  EXPECT_EQ(got.tokens, alone(ref, prompts, n));
}

TEST(Scheduler, PreemptionKeepsSpeculativeOutputs) {
  EngineOptions o;
  o.max_seqs = 8;
  o.max_batch_tokens = 128;
  o.page_tokens = 16;
  {
    Engine probe(model_dir(), o);
    o.kv_cache_memory = probe.state_layout().bytes_for(100) * 3;
  }
  Engine e(model_dir(), o);
  const auto prompts = mixed_prompts(e.config().vocab_size, 8, 23, 50);
  const GenerateResult got = e.generate(prompts, greedy(40, 2));
  EXPECT_GE(got.stats.preemptions, 1);
  EXPECT_EQ(got.tokens, e.generate(prompts, greedy(40, 0)).tokens);
}

TEST(Scheduler, ImpossibleRequestIsRejectedOthersComplete) {
  EngineOptions o;
  o.max_model_len = 256;
  o.max_seqs = 4;
  Engine e(model_dir(), o);
  std::map<RequestId, std::vector<int32_t>> out;
  std::map<RequestId, FinishReason> reason;
  auto sink = [&](const TokenEvent& ev) {
    if (ev.token >= 0) out[ev.id].push_back(ev.token);
    if (ev.finished) reason[ev.id] = ev.reason;
  };
  RequestOptions ro;
  ro.max_new_tokens = 8;
  ro.stop_at_eos = false;
  const RequestId a = e.submit({0, 5, 9}, ro, sink);
  RequestOptions too_long = ro;
  too_long.max_new_tokens = 300;
  try {
    e.submit({0, 5, 9}, too_long, sink);
    ADD_FAILURE() << "a request beyond max_model_len was accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("max_model_len (256)"), std::string::npos) << err.what();
  }
  EXPECT_THROW(e.submit({}, ro, sink), Error);
  EXPECT_THROW(e.submit({0, 999999}, ro, sink), Error);
  const RequestId b = e.submit({0, 7}, ro, sink);
  while (e.step()) {
  }
  EXPECT_EQ(out[a].size(), 8u);
  EXPECT_EQ(out[b].size(), 8u);
  EXPECT_EQ(reason[a], FinishReason::kLength);
  EXPECT_EQ(out[a], e.generate({{0, 5, 9}}, greedy(8)).tokens[0]);

  // Beyond the whole pool (but within max_model_len): rejected with the pool named.
  EngineOptions small = o;
  small.page_tokens = 16;
  small.max_model_len = 4096;
  {
    Engine probe(model_dir(), small);
    small.kv_cache_memory = probe.state_layout().bytes_for(64);
  }
  Engine tight(model_dir(), small);
  RequestOptions big = ro;
  big.max_new_tokens = 200;
  try {
    tight.submit({0, 5, 9}, big, sink);
    ADD_FAILURE() << "a request beyond the pool was accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("--kv-cache-memory"), std::string::npos) << err.what();
  }
}

TEST(Scheduler, CancelFreesPagesAndEndsTheRequest) {
  EngineOptions o;
  o.max_seqs = 4;
  Engine e(model_dir(), o);
  std::map<RequestId, int64_t> tokens;
  std::map<RequestId, FinishReason> reason;
  auto sink = [&](const TokenEvent& ev) {
    if (ev.token >= 0) ++tokens[ev.id];
    if (ev.finished) reason[ev.id] = ev.reason;
  };
  RequestOptions ro;
  ro.max_new_tokens = 50;
  ro.stop_at_eos = false;
  const RequestId a = e.submit({0, 11, 12}, ro, sink), b = e.submit({0, 13}, ro, sink);
  for (int i = 0; i < 5; ++i) e.step();
  EXPECT_GT(e.scheduler_stats().pages_used, 0);
  e.cancel(a);
  e.step();
  EXPECT_EQ(reason[a], FinishReason::kCancelled);
  EXPECT_EQ(e.scheduler_stats().running, 1);
  while (e.step()) {
  }
  EXPECT_EQ(reason[b], FinishReason::kLength);
  EXPECT_EQ(tokens[b], 50);
  EXPECT_LT(tokens[a], 50);
  EXPECT_EQ(e.scheduler_stats().pages_used, 0);
}

TEST(Scheduler, StopTokensLogprobsAndZeroTokens) {
  Engine e(model_dir(), EngineOptions{});
  const std::vector<int32_t> prompt = {0, 1035, 509, 456};
  const std::vector<int32_t> plain = e.generate({prompt}, greedy(12)).tokens[0];
  std::vector<TokenEvent> events;
  RequestOptions ro;
  ro.max_new_tokens = 12;
  ro.stop_at_eos = false;
  ro.stop_token_ids = {plain[5]};
  ro.logprobs = 3;
  e.submit(prompt, ro, [&](const TokenEvent& ev) { events.push_back(ev); });
  while (e.step()) {
  }
  ASSERT_FALSE(events.empty());
  const size_t first_stop = static_cast<size_t>(std::find(plain.begin(), plain.end(), plain[5]) - plain.begin());
  ASSERT_EQ(events.size(), first_stop + 1);
  EXPECT_EQ(events.back().reason, FinishReason::kStop);
  const std::vector<float> logits = e.score([&] {
    std::vector<int32_t> ids = prompt;
    ids.insert(ids.end(), plain.begin(), plain.begin() + static_cast<long>(first_stop));
    return ids;
  }());
  const int64_t V = e.config().vocab_size;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].token, plain[i]);
    ASSERT_EQ(events[i].top_logprobs.size(), 3u);
    EXPECT_EQ(events[i].top_logprobs[0].first, plain[i]);  // greedy: the most likely token
    // logprob = log-softmax of score()'s logits at the position before the token.
    const float* row = logits.data() + (prompt.size() - 1 + i) * V;
    double mx = row[0], sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max<double>(mx, row[v]);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - mx);
    EXPECT_NEAR(events[i].logprob, row[plain[i]] - mx - std::log(sum), 1e-4);
  }
  bool finished = false;
  RequestOptions none = ro;
  none.max_new_tokens = 0;
  e.submit(prompt, none, [&](const TokenEvent& ev) {
    EXPECT_EQ(ev.token, -1);
    finished = ev.finished && ev.reason == FinishReason::kLength;
  });
  EXPECT_TRUE(finished);
}

TEST(PagePool, AllOrNothingAllocationAndReuse) {
  const ModelConfig cfg = ModelConfig::from_file(model_dir() + "/config.json");
  ModelOptions mo;
  mo.max_seqs = 3;
  mo.max_model_len = 1024;
  mo.page_tokens = 16;
  const StateLayout layout = StateLayout::make(cfg, mo, DType::F32, true);
  mo.num_pages = layout.pages_for(100) + 2;
  ModelState state(cfg, mo, Device::kCPU, true);
  PagePool pool(state);
  EXPECT_EQ(pool.free_pages(), mo.num_pages);
  EXPECT_TRUE(pool.ensure(0, 100));
  EXPECT_EQ(pool.capacity(0), layout.context_pages_for(100) * 16);
  EXPECT_EQ(pool.free_pages(), 2);
  EXPECT_FALSE(pool.ensure(1, 10));  // a second sequence needs its ring pages too: nothing taken
  EXPECT_EQ(pool.free_pages(), 2);
  EXPECT_TRUE(pool.ensure(0, 130));  // two more context pages
  EXPECT_EQ(pool.free_pages(), 0);
  for (int64_t c = 0; c < layout.pages_for(130); ++c) EXPECT_GE(state.table_row(0)[c], 0);
  pool.release(0);
  EXPECT_EQ(pool.free_pages(), mo.num_pages);
  EXPECT_EQ(state.table_row(0)[0], -1);
  EXPECT_TRUE(pool.ensure(2, 50));
  EXPECT_THROW(pool.ensure(2, 1024 + 100), Error);  // beyond the state's capacity
}

}  // namespace
}  // namespace dsv4

namespace dsv4 {
namespace {

// Penalties and top-k need the host sampler: the scheduler gives such requests host logits, and the greedy tokens
// follow argmax(logits − presence · [seen] − frequency · count) over the generated tokens.
TEST(Scheduler, PenaltiesFollowTheGeneratedTokens) {
  Engine e(model_dir(), EngineOptions{});
  const std::vector<int32_t> prompt = {0, 1035, 509, 456};
  RequestOptions ro;
  ro.max_new_tokens = 16;
  ro.stop_at_eos = false;
  ro.sampling.frequency_penalty = 1.5f;
  ro.sampling.presence_penalty = 0.5f;
  std::vector<int32_t> got;
  e.submit(prompt, ro, [&](const TokenEvent& ev) {
    if (ev.token >= 0) got.push_back(ev.token);
  });
  while (e.step()) {
  }
  ASSERT_EQ(got.size(), 16u);
  std::vector<int32_t> ids = prompt;
  ids.insert(ids.end(), got.begin(), got.end() - 1);
  const std::vector<float> logits = e.score(ids);
  const int64_t V = e.config().vocab_size;
  std::vector<int> count(static_cast<size_t>(V), 0);
  for (size_t i = 0; i < got.size(); ++i) {
    std::vector<float> row(logits.begin() + (prompt.size() - 1 + i) * V, logits.begin() + (prompt.size() + i) * V);
    for (int64_t v = 0; v < V; ++v) row[v] -= (count[v] > 0 ? 0.5f : 0.0f) + 1.5f * static_cast<float>(count[v]);
    EXPECT_EQ(got[i], argmax_token(row.data(), V)) << "token " << i;
    ++count[static_cast<size_t>(got[i])];
  }
  // Penalties under speculative decoding are refused at submission.
  e.set_spec_tokens(2);
  EXPECT_THROW(e.submit(prompt, ro, [](const TokenEvent&) {}), Error);
  e.set_spec_tokens(0);
}

}  // namespace
}  // namespace dsv4
