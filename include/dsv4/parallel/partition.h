// How the model is split over N ranks (tensor-parallel attention, expert-parallel MoE) — the one place that knows
// which weights a rank holds and which sublayer outputs are partial sums.
//
// Attention (--tensor-parallel-size N): the query heads are split in contiguous ranges — wq_b's rows, the sinks and
// wo_a's columns of those heads — while the KV latent (wkv, kv_norm), the compressors and the indexer are
// replicated: there is one KV head, and the indexer's top-k needs the sum over all its heads (splitting them would
// cost an all-reduce of [T, entries] scores before the selection, more than its weights save). The heads go out in
// units: a whole wo_a group when N <= o_groups, else the largest part of a group that still gives every rank a unit.
// A rank computes wo_a on its units and wo_b on the matching columns (a unit's group's block); the sum over ranks is
// the attention output, made whole by one all-reduce after wo_b.
//
// MoE (--expert-parallel, on the same ranks): routed expert e runs on rank e mod N; the router (gate, bias,
// tid2eid) is replicated so routing is identical everywhere; each rank runs only its experts' terms and rank 0 adds
// the shared expert; one all-reduce after the MoE. Without --expert-parallel every rank runs the whole MoE.
//
// mHC, norms, the embedding and the LM head are replicated. Heads (or experts) not divisible by N: the first
// ranks take one unit (or expert) more.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/core/exec_context.h"
#include "dsv4/io/config.h"
#include "dsv4/model/weights.h"

namespace dsv4 {

struct ParallelConfig {
  int tensor_parallel_size = 1;  // ranks (attention heads split over them)
  bool expert_parallel = false;  // routed experts split over the same ranks
  bool active() const { return tensor_parallel_size > 1; }
};

// Throws kInvalidArgument (before anything is loaded) unless 1 <= N <= num_attention_heads, and with
// --expert-parallel N <= n_routed_experts (every rank runs at least one expert).
void check_parallel_config(const ModelConfig& cfg, const ParallelConfig& p);

struct RankPartition {
  int rank = 0, size = 1;
  // Query heads [head_begin, head_end), in units of unit_heads consecutive heads within one wo_a group.
  int64_t head_begin = 0, head_end = 0, unit_heads = 0;
  bool expert_parallel = false;
  std::vector<int32_t> experts;  // the routed experts this rank runs (global ids, ascending)

  int64_t heads() const { return head_end - head_begin; }
  int64_t units() const { return heads() / unit_heads; }
};

RankPartition partition_for_rank(const ModelConfig& cfg, const ParallelConfig& p, int rank);

// The config a rank's forward runs with: its heads as num_attention_heads and its units as o_groups (everything
// else, the router's n_routed_experts included, unchanged).
ModelConfig rank_config(const ModelConfig& cfg, const RankPartition& p);

// A rank's weights sliced from the full CPU weights: contiguous slices (wq_b rows, sinks) and replicated tensors
// are views into `full`, which must outlive the result; wo_a / wo_b / the rank's experts are copied into its own
// storage. The attention and MoE of every block (the MTP's too) are marked with the rank's share. parameter_count
// and mtp_parameter_count stay the whole model's.
ModelWeights shard_weights(const ModelConfig& cfg, const ModelWeights& full, const RankPartition& p);

// ---- used by the model (model/deepseek_v4.cc) where a sublayer's output is a partial sum ----
// t = the sum of t over the ranks (ctx.comm); nothing during the measuring pass.
void sum_over_ranks(ExecContext& ctx, Tensor t);
// Routes [T, k] in place to this rank's experts: a route to expert e on this rank becomes its local index
// e / ranks with its weight kept; a route to another rank's expert gets weight 0 (and local index 0). CPU only.
void keep_rank_experts(ExecContext& ctx, Tensor weights, Tensor indices, int rank, int ranks);

}  // namespace dsv4
