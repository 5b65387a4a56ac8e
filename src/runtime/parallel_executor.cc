// The multi-rank CPU executor: N ranks in one process over the in-process communicator (parallel/in_process.h).
// Rank 0 runs on the engine's thread and owns the scheduler; ranks 1..N-1 run on their own threads and only follow:
// before every executor call rank 0 broadcasts a step plan — the call, its batch, its host inputs and the page table
// — and every rank then runs the same call on its own shard of the weights (parallel/partition.h) and its own state.
// Replicated activations are bit-identical on every rank (the all-reduce sums in rank order), so the followers'
// sampling and acceptance agree with rank 0's; only rank 0's outputs are returned.
#include <cstring>
#include <thread>

#include "backend/cpu/blas.h"
#include "dsv4/core/log.h"
#include "dsv4/model/forward_memory.h"
#include "dsv4/parallel/in_process.h"
#include "dsv4/parallel/partition.h"
#include "runtime/executor.h"

namespace dsv4 {
namespace {

enum class PlanOp : uint8_t { kStop, kForward, kDrafter, kSpecPrefill, kSpecStep, kFillState };

// Step plans as flat bytes: the leader writes, every follower reads the same sequence back.
class PlanWriter {
 public:
  explicit PlanWriter(PlanOp op) { put(static_cast<uint8_t>(op)); }
  template <typename T>
  void put(const T& v) {
    append(&v, sizeof(T));
  }
  template <typename T>
  void put_vector(const std::vector<T>& v) {
    put(static_cast<uint64_t>(v.size()));
    append(v.data(), v.size() * sizeof(T));
  }
  std::vector<uint8_t>& bytes() { return bytes_; }

 private:
  void append(const void* data, size_t n) {
    const size_t at = bytes_.size();
    bytes_.resize(at + n);
    if (n > 0) std::memcpy(bytes_.data() + at, data, n);
  }
  std::vector<uint8_t> bytes_;
};

class PlanReader {
 public:
  explicit PlanReader(const std::vector<uint8_t>& bytes) : p_(bytes.data()), end_(bytes.data() + bytes.size()) {}
  template <typename T>
  T get() {
    T v;
    take(&v, sizeof(T));
    return v;
  }
  template <typename T>
  std::vector<T> get_vector() {
    const uint64_t n = get<uint64_t>();
    DSV4_CHECK(n <= static_cast<uint64_t>(end_ - p_) / sizeof(T), kInternal, "step plan: a vector of ", n,
               " items overruns the plan");
    std::vector<T> v(n);
    take(v.data(), n * sizeof(T));
    return v;
  }

 private:
  void take(void* out, size_t n) {
    DSV4_CHECK(n <= static_cast<size_t>(end_ - p_), kInternal, "step plan: truncated");
    std::memcpy(out, p_, n);
    p_ += n;
  }
  const uint8_t* p_;
  const uint8_t* end_;
};

void put_batch(PlanWriter& w, const BatchBuilder& b) { w.put_vector(b.pack()); }
BatchBuilder get_batch(PlanReader& r) {
  const std::vector<int32_t> packed = r.get_vector<int32_t>();
  return BatchBuilder::unpack(packed.data(), packed.size());
}

class ParallelCpuExecutor final : public Executor {
 public:
  ParallelCpuExecutor(const ExecutorSetup& leader, const ParallelConfig& parallel, const ModelOptions& model_opt,
                      const ForwardShape& shape)
      : group_(parallel.tensor_parallel_size, default_collective_timeout()) {
    DSV4_CHECK_ARG(leader.ctx->device == Device::kCPU, "the in-process multi-rank executor runs on the CPU");
    for (int r = 0; r < parallel.tensor_parallel_size; ++r) {
      auto rank = std::make_unique<Rank>();
      rank->part = partition_for_rank(*leader.cfg, parallel, r);
      rank->cfg = rank_config(*leader.cfg, rank->part);
      rank->weights = shard_weights(*leader.cfg, *leader.weights, rank->part);
      if (r == 0) {
        rank->state = leader.state;  // the scheduler's: its page table is the one every plan carries
      } else {
        rank->own_state =
            std::make_unique<ModelState>(rank->cfg, model_opt, Device::kCPU, rank->weights.mtp.has_value());
        rank->state = rank->own_state.get();
      }
      rank->scratch =
          Arena(str_cat("rank ", r, " activations"),
                measure_forward_scratch(rank->cfg, rank->weights, model_opt, Device::kCPU, shape), Device::kCPU);
      rank->ctx.device = Device::kCPU;
      rank->ctx.scratch = &rank->scratch;
      rank->ctx.comm = &group_.rank(r);
      ExecutorSetup s = leader;
      s.cfg = &rank->cfg;
      s.weights = &rank->weights;
      s.state = rank->state;
      s.ctx = &rank->ctx;
      rank->exec = make_cpu_executor(s);
      ranks_.push_back(std::move(rank));
    }
    for (int r = 1; r < parallel.tensor_parallel_size; ++r) followers_.emplace_back([this, r] { follow(r); });
    log_info("tensor parallel: ", parallel.tensor_parallel_size, " in-process ranks (query heads ", describe_heads(),
             ")", parallel.expert_parallel ? ", routed experts split (e on rank e mod N)" : "");
  }

  ~ParallelCpuExecutor() override {
    try {
      PlanWriter stop(PlanOp::kStop);
      group_.rank(0).broadcast_bytes(&stop.bytes(), 0);
    } catch (const std::exception& e) {  // the followers have left already (an aborted job)
      log_warn("tensor parallel shutdown: ", e.what());
    }
    for (std::thread& t : followers_) t.join();
  }

  void forward(BatchBuilder& batch, bool uniform_decode, std::vector<float>* logits,
               std::vector<float>* residual) override {
    PlanWriter w = plan(PlanOp::kForward);
    put_batch(w, batch);
    w.put(static_cast<uint8_t>(uniform_decode));
    lead(w, [&] { leader().forward(batch, uniform_decode, logits, residual); });
  }

  void drafter(BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
               std::vector<float>* hidden_out) override {
    PlanWriter w = plan(PlanOp::kDrafter);
    put_batch(w, batch);
    w.put_vector(hidden);
    lead(w, [&] { leader().drafter(batch, hidden, logits, hidden_out); });
  }

  void spec_prefill(BatchBuilder& batch, const std::vector<int32_t>& drafter_ids,
                    const std::vector<int32_t>& carry_slot, const std::vector<ops::TokenSamplingParams>& params,
                    std::vector<int32_t>* tokens, std::vector<float>* logits) override {
    PlanWriter w = plan(PlanOp::kSpecPrefill);
    put_batch(w, batch);
    w.put_vector(drafter_ids);
    w.put_vector(carry_slot);
    w.put_vector(params);
    lead(w, [&] { leader().spec_prefill(batch, drafter_ids, carry_slot, params, tokens, logits); });
  }

  void spec_step(const std::vector<SpecSeq>& seqs, int64_t K, std::vector<int32_t>* tokens,
                 std::vector<int32_t>* counts, std::vector<float>* verify_logits) override {
    PlanWriter w = plan(PlanOp::kSpecStep);
    w.put(K);
    w.put(static_cast<uint64_t>(seqs.size()));
    for (const SpecSeq& s : seqs) {
      w.put(s.slot);
      w.put(s.computed);
      w.put_vector(s.carry_ids);
      w.put(s.last);
      w.put(s.sampling);
    }
    lead(w, [&] { leader().spec_step(seqs, K, tokens, counts, verify_logits); });
  }

  int64_t spec_max_seqs(int64_t K) const override { return ranks_[0]->exec->spec_max_seqs(K); }

  void fill_follower_states(uint64_t seed) override {
    PlanWriter w(PlanOp::kFillState);
    w.put(seed);
    lead(w, [] {});
  }

 private:
  struct Rank {
    RankPartition part;
    ModelConfig cfg;
    ModelWeights weights;
    std::unique_ptr<ModelState> own_state;
    ModelState* state = nullptr;
    Arena scratch;
    ExecContext ctx;
    std::unique_ptr<Executor> exec;
  };

  Executor& leader() { return *ranks_[0]->exec; }

  std::string describe_heads() const {
    std::string s;
    for (const auto& r : ranks_)
      s += str_cat(s.empty() ? "" : ", ", "[", r->part.head_begin, ", ", r->part.head_end, ")");
    return s;
  }

  // A plan of a forward-running call: the op, then the leader's page table (the scheduler's pages, which every rank's
  // state must address the same way).
  PlanWriter plan(PlanOp op) {
    PlanWriter w(op);
    const ModelState& st = *ranks_[0]->state;
    const int32_t* table = st.table_row(0);
    w.put_vector(std::vector<int32_t>(table, table + st.table_bytes() / sizeof(int32_t)));
    return w;
  }

  // Sends the plan and runs the leader's part. A failure on the leader aborts the job: the followers are inside the
  // same call's collectives and would otherwise wait for it until the timeout.
  template <typename Fn>
  void lead(PlanWriter& w, Fn&& run) {
    Communicator& comm = group_.rank(0);
    try {
      const cpu::BlasOffScope same_bits(true);  // replicated work gives every rank the same bits (cpu/blas.h)
      comm.broadcast_bytes(&w.bytes(), 0);
      run();
    } catch (const std::exception& e) {
      comm.abort(e.what());
      throw;
    }
  }

  void follow(int r) {
    Rank& rank = *ranks_[r];
    Communicator& comm = *rank.ctx.comm;
    const cpu::BlasOffScope same_bits(true);  // as the leader's (lead)
    try {
      for (;;) {
        std::vector<uint8_t> bytes;
        comm.broadcast_bytes(&bytes, 0, Communicator::Wait::kUntilAborted);
        if (!run_plan(rank, bytes)) return;
      }
    } catch (const std::exception& e) {
      comm.abort(e.what());
      log_warn("tensor parallel rank ", r, " stopped: ", e.what());
    }
  }

  // Runs one plan on a follower; false at kStop.
  bool run_plan(Rank& rank, const std::vector<uint8_t>& bytes) {
    PlanReader r(bytes);
    const auto op = static_cast<PlanOp>(r.get<uint8_t>());
    if (op == PlanOp::kStop) return false;
    if (op == PlanOp::kFillState) {
      const uint64_t seed = r.get<uint64_t>();
      const int64_t n = static_cast<int64_t>(rank.state->pool_bytes() / sizeof(float));
      ops::fill_random(rank.ctx, Tensor(rank.state->pool_data(), DType::F32, {n}), seed, 0.0f, 1.0f);
      return true;
    }
    const std::vector<int32_t> table = r.get_vector<int32_t>();
    DSV4_CHECK(table.size() * sizeof(int32_t) == rank.state->table_bytes(), kInternal, "step plan: a page table of ",
               table.size(), " entries for a state of ", rank.state->table_bytes(), " bytes");
    std::memcpy(rank.state->table_row(0), table.data(), rank.state->table_bytes());
    std::vector<float> logits, hidden_out;
    std::vector<int32_t> tokens, counts;
    switch (op) {
      case PlanOp::kForward: {
        BatchBuilder b = get_batch(r);
        const bool uniform = r.get<uint8_t>() != 0;
        rank.exec->forward(b, uniform, &logits, nullptr);
        break;
      }
      case PlanOp::kDrafter: {
        BatchBuilder b = get_batch(r);
        const std::vector<float> hidden = r.get_vector<float>();
        rank.exec->drafter(b, hidden, &logits, &hidden_out);
        break;
      }
      case PlanOp::kSpecPrefill: {
        BatchBuilder b = get_batch(r);
        const auto drafter_ids = r.get_vector<int32_t>();
        const auto carry_slot = r.get_vector<int32_t>();
        const auto params = r.get_vector<ops::TokenSamplingParams>();
        rank.exec->spec_prefill(b, drafter_ids, carry_slot, params, &tokens, nullptr);
        break;
      }
      case PlanOp::kSpecStep: {
        const auto K = r.get<int64_t>();
        std::vector<SpecSeq> seqs(r.get<uint64_t>());
        for (SpecSeq& s : seqs) {
          s.slot = r.get<int32_t>();
          s.computed = r.get<int64_t>();
          s.carry_ids = r.get_vector<int32_t>();
          s.last = r.get<int32_t>();
          s.sampling = r.get<ops::TokenSamplingParams>();
        }
        rank.exec->spec_step(seqs, K, &tokens, &counts, nullptr);
        break;
      }
      default:
        fail(StatusCode::kInternal, "step plan: unknown op ", static_cast<int>(op));
    }
    return true;
  }

  InProcessGroup group_;
  std::vector<std::unique_ptr<Rank>> ranks_;
  std::vector<std::thread> followers_;
};

}  // namespace

std::unique_ptr<Executor> make_parallel_cpu_executor(const ExecutorSetup& leader, const ParallelConfig& parallel,
                                                     const ModelOptions& model_opt, const ForwardShape& shape) {
  return std::make_unique<ParallelCpuExecutor>(leader, parallel, model_opt, shape);
}

}  // namespace dsv4
