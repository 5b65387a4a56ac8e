// Paged per-sequence state: one pool of fixed-size pages per device and a page table per sequence.
//
// Two kinds of pages share the pool (one size, one free list):
// - context pages: the compressed entries of every compressed layer (and the indexer's keys of every CSA layer)
//   for `page_tokens` consecutive positions — page_tokens is a multiple of every compress rate, so a page holds
//   whole entries; a sequence of n positions holds ceil(n / page_tokens) of them;
// - ring pages: the bounded per-sequence rings (the sliding-window kv of every layer and of the MTP drafter, the
//   compressors' raw kv/gate rings) — each ring page holds the same slice of rows of every ring, and a sequence
//   holds `ring_pages` of them, whatever its length.
// A sequence's table row lists its ring pages (columns [0, ring_pages)) and then its context pages (column
// ring_pages + position / page_tokens). Kernels read rows through PagedRows (ops/paged_rows.h). Nothing is
// sized per sequence for the maximum length: memory = weights + activations (by the chunk) + graphs + pool.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dsv4/core/arena.h"
#include "dsv4/io/config.h"
#include "dsv4/ops/ops.h"

namespace dsv4 {

// --kv-cache-dtype: how the attention caches hold their values. auto = as computed (f32 on the CPU, the activation
// dtype on CUDA); bf16 = rounded to bf16; fp8 = DeepSeek-V4's cache as its reference inference holds it: the window
// and compressed kv as KvRoundTrip::kFp8Blocks, the indexer's keys as kFp4Rotated (Hadamard-rotated, E2M1 per 32
// values with power-of-two scales; the indexer's query goes through the same rotation and round trip). The CPU keeps
// f32 rows and applies the round trips; CUDA stores the rows packed (dsv4/ops/kv_fp8.h, kv_fp4.h: 584 bytes per kv
// row at head_dim 512, rope 64; 68 per indexer key at 128 dims) and runs bf16 with bf16 activations only.
enum class KvCacheDtype : uint8_t { kAuto, kBf16, kFp8 };
KvCacheDtype parse_kv_cache_dtype(const std::string& s);  // kInvalidArgument naming the accepted values
const char* kv_cache_dtype_name(KvCacheDtype d);
// What each cache goes through on `device` with `activations` (the CUDA activation dtype), or kUnsupported.
struct KvFormats {
  KvRoundTrip window = KvRoundTrip::kNone, compressed = KvRoundTrip::kNone, indexer = KvRoundTrip::kNone;
};
KvFormats kv_formats(KvCacheDtype d, Device device, DType activations);
// Whether the state keeps the fp8 cache as packed rows (CUDA; the CPU keeps f32 rows holding the round-tripped values).
inline bool packs_fp8_cache(KvCacheDtype d, Device device) {
  return d == KvCacheDtype::kFp8 && device == Device::kCUDA;
}

// --activation-quant: kFp8 rounds the activations entering every product DeepSeek's checkpoints store in FP8/FP4
// (the query, kv and output projections but wo_a, the indexer's query, the experts, the MTP's e_proj / h_proj)
// through E4M3 per 128 values with power-of-two scales, and applies each routed expert's weight before w2 — the
// numerics of DeepSeek's reference inference. kNone keeps them as computed. The CPU only in this build, and one rank
// only (a rank's share of a row would be quantised in blocks of its own: the engine refuses the combination).
enum class ActivationQuant : uint8_t { kNone, kFp8 };
ActivationQuant parse_activation_quant(const std::string& s);  // kInvalidArgument naming the accepted values
const char* activation_quant_name(ActivationQuant q);

struct ModelOptions {
  int64_t max_seqs = 1;          // page-table rows: sequences resident at once
  int64_t max_model_len = 4096;  // positions per sequence (entry capacity, table columns)
  int64_t max_tokens_ahead = 8;  // tokens a step may write beyond the accepted length (speculation)
  int64_t page_tokens = 0;       // positions per context page; 0 = derived from the config (default_page_tokens)
  // Pages in the pool; 0 = enough for max_seqs sequences of max_model_len, each given its pages up front (a
  // static table: for tools and tests that run forwards without a scheduler).
  int64_t num_pages = 0;
  // CUDA only: activations and the attention keys (kv ring, compressed entries) in BF16 (the default) or F32
  // (full precision, with F32 matrices: LoadOptions::cuda_matrix_dtype). The CPU always runs F32.
  DType cuda_activation_dtype = DType::BF16;
  KvCacheDtype kv_cache_dtype = KvCacheDtype::kAuto;
  ActivationQuant activation_quant = ActivationQuant::kNone;
};

// Positions per context page for a config: the least common multiple of its compress rates, times the smallest
// factor that reaches 256 positions (256 for rates 4 and 128; 256 for 4 and 16).
int64_t default_page_tokens(const ModelConfig& cfg);

// Where every state array lives inside a page; computed once from the config and options.
struct StateLayout {
  struct Array {
    std::string name;                       // "layers.3.compressor.entries", "mtp.kv_ring", …
    bool ring = false;                      // ring page (else context page)
    DType dtype = DType::F32;               // F8_E4M3 for packed rows
    KvStorage storage = KvStorage::kPlain;  // packed fp8 rows (row_bytes from dsv4/ops/kv_fp8.h)
    int64_t rope_dim = 0;                   // kFp8Blocks: the trailing bf16 values
    int64_t width = 0, rows = 0;            // elements per row, logical rows per sequence
    int64_t rate = 0;                       // entry stores: positions per entry
    int64_t offset = 0, row_bytes = 0, rows_per_page = 0;
  };
  int64_t page_tokens = 0, page_bytes = 0;
  int64_t ring_pages = 0;       // per sequence
  int64_t context_columns = 0;  // table columns for context pages (0 when no layer compresses)
  std::vector<Array> arrays;

  // packed_fp8: the kv rings and compressed entries as KvStorage::kFp8Blocks rows, the indexer's keys as
  // kFp4Rotated (packs_fp8_cache); else every key row holds `keys` elements.
  static StateLayout make(const ModelConfig& cfg, const ModelOptions& opt, DType keys, bool with_mtp,
                          bool packed_fp8 = false);
  int64_t table_columns() const { return ring_pages + context_columns; }
  // Context pages a sequence needs to hold positions [0, tokens).
  int64_t context_pages_for(int64_t tokens) const {
    return context_columns == 0 ? 0 : (tokens + page_tokens - 1) / page_tokens;
  }
  int64_t pages_for(int64_t tokens) const { return ring_pages + context_pages_for(tokens); }
  // State bytes one sequence of `tokens` positions holds (whole pages).
  int64_t bytes_for(int64_t tokens) const { return pages_for(tokens) * page_bytes; }
  const Array& array(const std::string& name) const;
};

// Per-layer state views into the pool.
struct LayerState {
  PagedRows kv_ring;                           // sliding-window kv, window + ahead rows
  KvRoundTrip kv_format = KvRoundTrip::kNone;  // what the window kv goes through before attention reads it
  CompressorState compressor;
  CompressorState indexer;
};

// Everything a forward needs besides weights: the paged state and the rope tables.
class ModelState {
 public:
  ModelState(const ModelConfig& cfg, const ModelOptions& opt, Device device, bool with_mtp);
  ModelState(const ModelState&) = delete;
  ModelState& operator=(const ModelState&) = delete;

  std::vector<LayerState> layers;
  LayerState mtp;  // the drafter's own sliding-window state
  RopeTable rope_main, rope_compress;

  const StateLayout& layout() const { return layout_; }
  const ModelOptions& options() const { return opt_; }
  int64_t num_pages() const { return num_pages_; }
  size_t bytes() const { return pool_.size() + table_.size(); }  // pool + page table
  size_t pool_bytes() const { return pool_.size(); }
  void* pool_data() const { return pool_.data(); }
  DType activation_dtype() const { return act_; }  // of the forwards on this state
  Device device() const { return device_; }

  // The page table, host copy ([max_seqs, table_columns] page ids, -1 = none). Writers mark the rows they
  // change; sync_table() copies marked rows to the device copy (CUDA; on the CPU the kernels read the host copy).
  int32_t* table_row(int64_t slot) { return host_table_.data() + slot * layout_.table_columns(); }
  const int32_t* table_row(int64_t slot) const { return host_table_.data() + slot * layout_.table_columns(); }
  void mark_dirty(int64_t slot);
  // Copies the marked rows to the device copy on `stream` (cudaStream_t; ordered before the work queued after
  // it) through `staging`, a pinned host buffer of table_bytes() that stays untouched until the copy has run.
  void sync_table(void* stream, int32_t* staging);
  size_t table_bytes() const { return host_table_.size() * sizeof(int32_t); }
  bool table_dirty() const { return !dirty_.empty(); }

 private:
  ModelOptions opt_;
  StateLayout layout_;
  Device device_;
  DType act_ = DType::F32;
  int64_t num_pages_ = 0;
  Buffer pool_, table_;
  Arena small_;  // rope tables
  std::vector<int32_t> host_table_;
  std::vector<int64_t> dirty_;
  std::vector<char> dirty_flag_;
};

}  // namespace dsv4
