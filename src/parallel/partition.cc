#include "dsv4/parallel/partition.h"

#include <algorithm>
#include <cstring>

#include "dsv4/core/status.h"
#include "dsv4/parallel/communicator.h"

namespace dsv4 {
namespace {

// [begin, end) of part `index` of `count` items over `parts` parts, the first count % parts parts one larger.
std::pair<int64_t, int64_t> balanced_range(int64_t count, int64_t parts, int64_t index) {
  const int64_t base = count / parts, extra = count % parts;
  const int64_t begin = index * base + std::min(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

// Heads per unit: a whole group while there are at least as many groups as ranks, else the largest divisor of the
// group's heads that still yields >= N units (N <= heads guarantees one: a single head).
int64_t unit_heads_for(const ModelConfig& cfg, int64_t ranks) {
  const int64_t heads = cfg.num_attention_heads, per_group = heads / cfg.o_groups;
  for (int64_t s = per_group; s >= 1; --s) {
    if (per_group % s == 0 && heads / s >= ranks) return s;
  }
  return 1;
}

void copy_rows(Tensor dst, Tensor src) {
  DSV4_CHECK(dst.nbytes() == src.nbytes() && src.is_contiguous() && dst.is_contiguous(), kInternal,
             "shard_weights: copying ", src.describe(), " into ", dst.describe());
  std::memcpy(dst.data(), src.data(), src.nbytes());
}

}  // namespace

void check_parallel_config(const ModelConfig& cfg, const ParallelConfig& p) {
  const int n = p.tensor_parallel_size;
  DSV4_CHECK_ARG(n >= 1, "--tensor-parallel-size must be >= 1, got ", n);
  DSV4_CHECK_ARG(n <= cfg.num_attention_heads, "--tensor-parallel-size ", n, " exceeds the model's ",
                 cfg.num_attention_heads, " attention heads (every rank needs at least one)");
  DSV4_CHECK_ARG(!p.expert_parallel || n <= cfg.n_routed_experts, "--expert-parallel over ", n,
                 " ranks needs at least ", n, " routed experts, the model has ", cfg.n_routed_experts);
}

RankPartition partition_for_rank(const ModelConfig& cfg, const ParallelConfig& p, int rank) {
  check_parallel_config(cfg, p);
  DSV4_CHECK_ARG(rank >= 0 && rank < p.tensor_parallel_size, "rank ", rank, " outside [0, ", p.tensor_parallel_size,
                 ")");
  RankPartition r;
  r.rank = rank;
  r.size = p.tensor_parallel_size;
  r.unit_heads = unit_heads_for(cfg, r.size);
  const auto [u0, u1] = balanced_range(cfg.num_attention_heads / r.unit_heads, r.size, rank);
  r.head_begin = u0 * r.unit_heads;
  r.head_end = u1 * r.unit_heads;
  r.expert_parallel = p.expert_parallel && r.size > 1;
  for (int64_t e = 0; e < cfg.n_routed_experts; ++e) {
    if (!r.expert_parallel || e % r.size == rank) r.experts.push_back(static_cast<int32_t>(e));
  }
  return r;
}

ModelConfig rank_config(const ModelConfig& cfg, const RankPartition& p) {
  ModelConfig c = cfg;
  c.num_attention_heads = p.heads();
  c.o_groups = p.units();
  return c;
}

ModelWeights shard_weights(const ModelConfig& cfg, const ModelWeights& full, const RankPartition& p) {
  DSV4_CHECK_ARG(full.storage.device() == Device::kCPU, "shard_weights: CPU weights only (the model is on ",
                 device_name(full.storage.device()), ")");
  // Plain f32 weights only (plain() refuses quantised ones): the CPU loader dequantises.
  DSV4_CHECK_ARG(full.layers.empty() || full.layers[0].attn.wo_a.plain().dtype() == DType::F32,
                 "shard_weights: f32 CPU weights only (wo_a is ", full.layers[0].attn.wo_a.describe(), ")");
  const int64_t D = cfg.head_dim, R = cfg.o_lora_rank, per_group = cfg.num_attention_heads / cfg.o_groups;
  const int64_t s = p.unit_heads, units = p.units(), H = cfg.hidden_size, I = cfg.moe_intermediate_size;
  const bool split_heads = p.size > 1;
  const int64_t local_experts = static_cast<int64_t>(p.experts.size());
  const bool with_shared = !p.expert_parallel || p.rank == 0;

  // Bytes this rank copies: wo_a [units R, s D] and wo_b [H, units R] per block, and its expert stacks.
  const int64_t blocks = static_cast<int64_t>(full.layers.size()) + (full.mtp ? 1 : 0);
  const int64_t stack = p.expert_parallel ? (local_experts + (with_shared ? 1 : 0)) * I * H : 0;
  const int64_t floats = split_heads ? blocks * (units * R * s * D + H * units * R) : 0;
  const size_t bytes = static_cast<size_t>(floats + 3 * blocks * stack) * sizeof(float) + 64 * 1024 * blocks;

  ModelWeights w;
  w.storage = Arena(str_cat("rank ", p.rank, " weights"), bytes, Device::kCPU);
  w.embed = full.embed;
  w.head = full.head;
  w.norm = full.norm;
  w.hc_head = full.hc_head;
  w.parameter_count = full.parameter_count;
  w.mtp_parameter_count = full.mtp_parameter_count;

  auto shard_block = [&](const BlockWeights& b) {
    BlockWeights o = b;
    if (split_heads) {
      AttentionWeights& a = o.attn;
      a.wq_b = b.attn.wq_b.plain().rows(p.head_begin * D, p.head_end * D);
      a.sink = b.attn.sink.rows(p.head_begin, p.head_end);
      // Unit u covers heads [h, h + s) of group g = h / per_group: wo_a's rows of g, its columns of those heads;
      // wo_b's column block of g.
      const Tensor& wo_a = b.attn.wo_a.plain();
      const Tensor& wo_b = b.attn.wo_b.plain();
      const Tensor rank_wo_a = w.storage.alloc(wo_a.dtype(), {units * R, s * D});
      const Tensor rank_wo_b = w.storage.alloc(wo_b.dtype(), {H, units * R});
      a.wo_a = rank_wo_a;
      a.wo_b = rank_wo_b;
      for (int64_t u = 0; u < units; ++u) {
        const int64_t h = p.head_begin + u * s, g = h / per_group, col = (h - g * per_group) * D;
        for (int64_t r = 0; r < R; ++r) {
          const float* src = wo_a.ptr<float>() + (g * R + r) * per_group * D + col;
          std::memcpy(rank_wo_a.ptr<float>() + (u * R + r) * s * D, src, static_cast<size_t>(s * D) * sizeof(float));
        }
        for (int64_t row = 0; row < H; ++row) {
          const float* src = wo_b.ptr<float>() + row * cfg.o_groups * R + g * R;
          std::memcpy(rank_wo_b.ptr<float>() + row * units * R + u * R, src, static_cast<size_t>(R) * sizeof(float));
        }
      }
      a.partial_output = true;
    }
    if (p.expert_parallel) {
      MoeWeights& f = o.ffn;
      const int64_t E = cfg.n_routed_experts;
      auto stack_of = [&](const Tensor& all, Weight* shared) {
        Tensor t = w.storage.alloc(all.dtype(), {local_experts + (with_shared ? 1 : 0), all.size(1), all.size(2)});
        for (int64_t i = 0; i < local_experts; ++i) copy_rows(t.select(0, i), all.select(0, p.experts[i]));
        if (with_shared) {
          const Tensor slice = t.select(0, local_experts);
          copy_rows(slice, all.select(0, E));
          *shared = slice;
        } else {
          *shared = Tensor();
        }
        return t;
      };
      f.w1 = stack_of(b.ffn.w1, &f.shared_w1);
      f.w2 = stack_of(b.ffn.w2, &f.shared_w2);
      f.w3 = stack_of(b.ffn.w3, &f.shared_w3);
      f.expert_rank = p.rank;
      f.expert_ranks = p.size;
      f.shared_expert_here = with_shared;
    }
    return o;
  };
  for (const BlockWeights& b : full.layers) w.layers.push_back(shard_block(b));
  if (full.mtp) {
    MtpWeights m = *full.mtp;
    m.block = shard_block(full.mtp->block);
    w.mtp = std::move(m);
  }
  return w;
}

void sum_over_ranks(ExecContext& ctx, Tensor t) {
  if (ctx.measuring) return;
  DSV4_CHECK(ctx.comm != nullptr, kInternal, "a rank's partial sum (", t.describe(),
             ") needs the context's communicator: the weights are sharded but the context has none");
  ctx.comm->all_reduce_sum(t);
}

void keep_rank_experts(ExecContext& ctx, Tensor weights, Tensor indices, int rank, int ranks) {
  if (ctx.measuring) return;
  DSV4_CHECK(ctx.device == Device::kCPU, kUnsupported,
             "--expert-parallel runs on the CPU only in this build (no device kernel maps routes to a rank's experts)");
  DSV4_CHECK_ARG(weights.dtype() == DType::F32 && indices.dtype() == DType::I32 && weights.numel() == indices.numel(),
                 "keep_rank_experts: weights ", weights.describe(), ", indices ", indices.describe());
  float* wt = weights.ptr<float>();
  int32_t* idx = indices.ptr<int32_t>();
  for (int64_t i = 0; i < indices.numel(); ++i) {
    if (idx[i] % ranks == rank) {
      idx[i] /= ranks;
    } else {
      idx[i] = 0;
      wt[i] = 0.0f;
    }
  }
}

}  // namespace dsv4
