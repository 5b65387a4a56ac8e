#include "dsv4/model/state.h"

#include <algorithm>
#include <numeric>

#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/buffer.h"
#include "dsv4/ops/kv_fp8.h"
#include "dsv4/ops/rope_table.h"
#include "model/row_runs.h"

namespace dsv4 {
namespace {

int64_t align_up(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

constexpr int64_t kRowAlign = 16;    // 16-byte vector loads of every row
constexpr int64_t kPageAlign = 256;  // page starts

void fill_rope(RopeTable& t, Arena& arena, const RopeParams& p, int64_t rope_dim, Device device) {
  const std::vector<float> inv = rope_inv_freq(p, rope_dim);
  t.inv_freq = arena.alloc(DType::F32, {rope_dim / 2});
  t.rope_dim = rope_dim;
  t.attention_factor = static_cast<float>(p.attention_factor);
  if (device == Device::kCPU) {
    std::copy(inv.begin(), inv.end(), t.inv_freq.ptr<float>());
  } else {
    cuda::copy_to_device(t.inv_freq.data(), inv.data(), inv.size() * sizeof(float));
  }
}

// Places ring arrays so that each ring page holds ceil(rows / n) rows of every ring; returns the bytes of one
// ring page.
int64_t place_rings(std::vector<StateLayout::Array>& arrays, int64_t n) {
  int64_t offset = 0;
  for (StateLayout::Array& a : arrays) {
    if (!a.ring) continue;
    a.rows_per_page = (a.rows + n - 1) / n;
    a.offset = offset;
    offset = align_up(offset + a.rows_per_page * a.row_bytes, kRowAlign);  // packed fp8 rows are not 16-byte multiples
  }
  return offset;
}

}  // namespace

int64_t default_page_tokens(const ModelConfig& cfg) {
  int64_t l = 1;
  for (AttentionType t : cfg.layer_types) {
    const int64_t r = cfg.compress_rate(t);
    if (r > 0) l = std::lcm(l, r);
  }
  return l * std::max<int64_t>(1, (256 + l - 1) / l);
}

StateLayout StateLayout::make(const ModelConfig& c, const ModelOptions& o, DType keys, bool with_mtp, bool packed_fp8) {
  DSV4_CHECK_ARG(o.max_seqs > 0 && o.max_model_len > 0 && o.max_tokens_ahead >= 1,
                 "model options: max_seqs, max_model_len and max_tokens_ahead must be positive");
  StateLayout L;
  L.page_tokens = o.page_tokens > 0 ? o.page_tokens : default_page_tokens(c);
  const int64_t ahead = o.max_tokens_ahead, P = L.page_tokens;
  for (AttentionType t : c.layer_types) {
    const int64_t r = c.compress_rate(t);
    DSV4_CHECK_ARG(r == 0 || P % r == 0, "page size of ", P, " tokens is not a multiple of the compress rate ", r);
  }
  const int64_t positions = o.max_model_len + ahead;  // a step may write `ahead` positions past the limit
  auto add = [&](std::string name, bool ring, DType dt, int64_t width, int64_t rows) {
    Array a;
    a.name = std::move(name);
    a.ring = ring;
    a.dtype = dt;
    a.width = width;
    a.rows = rows;
    a.row_bytes = align_up(width * static_cast<int64_t>(dtype_size(dt)), kRowAlign);
    L.arrays.push_back(std::move(a));
  };
  // A key store: `keys` elements, or a packed fp8 row (8-byte aligned, the readers' widest load of it).
  auto add_keys = [&](std::string name, bool ring, int64_t width, int64_t rows, KvStorage storage, int64_t rope) {
    if (!packed_fp8) return add(std::move(name), ring, keys, width, rows);
    DSV4_CHECK(kvfp8::shape_ok(storage, width, rope), kUnsupported, "--kv-cache-dtype fp8 on CUDA: ", name, " rows of ",
               width, " values with ", rope,
               " rope values cannot be packed (the no-rope part must be a multiple of 8 values, the rope part "
               "even; indexer keys a power of two, at most ",
               kvfp4::kMaxDeviceWidth, ")");
    add(std::move(name), ring, DType::F8_E4M3, width, rows);
    Array& a = L.arrays.back();
    a.storage = storage;
    a.rope_dim = storage == KvStorage::kFp8Blocks ? rope : 0;
    a.row_bytes = kvfp8::row_bytes(storage, width, a.rope_dim);
  };
  const int64_t rope = c.rope_head_dim;
  bool any_context = false;
  for (size_t l = 0; l < c.layer_types.size(); ++l) {
    const AttentionType t = c.layer_types[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    add_keys(p + "kv_ring", true, c.head_dim, c.sliding_window + ahead, KvStorage::kFp8Blocks, rope);
    const int64_t r = c.compress_rate(t);
    if (r == 0) continue;
    any_context = true;
    auto compressor = [&](const std::string& name, bool overlap, int64_t dim, KvStorage storage) {
      const int64_t width = (overlap ? 2 : 1) * dim, ring = (overlap ? 2 : 1) * r + ahead;
      add(p + name + ".raw_kv", true, DType::F32, width, ring);
      add(p + name + ".raw_gate", true, DType::F32, width, ring);
      add_keys(p + name + ".entries", false, dim, 0, storage, rope);
      L.arrays.back().rate = r;
    };
    compressor("compressor", t == AttentionType::kCompressedSparse, c.head_dim, KvStorage::kFp8Blocks);
    if (t == AttentionType::kCompressedSparse) {
      DSV4_CHECK(o.kv_cache_dtype != KvCacheDtype::kFp8 || kvfp4::width_ok(c.index_head_dim), kUnsupported,
                 "--kv-cache-dtype fp8 holds the indexer's keys Hadamard-rotated in FP4, which needs index_head_dim a "
                 "power of two; this model has ",
                 c.index_head_dim);
      compressor("indexer", true, c.index_head_dim, KvStorage::kFp4Rotated);
    }
  }
  if (with_mtp) add_keys("mtp.kv_ring", true, c.head_dim, c.sliding_window + ahead, KvStorage::kFp8Blocks, rope);

  // Context pages: page_tokens positions of every entry store.
  int64_t context_bytes = 0;
  if (any_context) {
    L.context_columns = (positions + P - 1) / P;
    for (Array& a : L.arrays) {
      if (a.ring) continue;
      a.rows_per_page = P / a.rate;
      a.rows = L.context_columns * a.rows_per_page;
      a.offset = context_bytes;
      context_bytes = align_up(context_bytes + a.rows_per_page * a.row_bytes, kRowAlign);
    }
  }
  // Ring pages: as few as fit in a context page (every ring's rows spread evenly over them); without compressed
  // layers one ring page holds a sequence's rings.
  int64_t max_rows = 1;
  for (const Array& a : L.arrays) {
    if (a.ring) max_rows = std::max(max_rows, a.rows);
  }
  if (context_bytes == 0) {
    L.ring_pages = 1;
    L.page_bytes = align_up(std::max<int64_t>(place_rings(L.arrays, 1), kPageAlign), kPageAlign);
    return L;
  }
  L.page_bytes = align_up(context_bytes, kPageAlign);
  int64_t n = 1;
  while (n < max_rows && place_rings(L.arrays, n) > L.page_bytes) ++n;
  const int64_t ring_bytes = place_rings(L.arrays, n);
  L.ring_pages = n;
  L.page_bytes = align_up(std::max(L.page_bytes, ring_bytes), kPageAlign);  // rows larger than a context page
  return L;
}

const StateLayout::Array& StateLayout::array(const std::string& name) const {
  for (const Array& a : arrays) {
    if (a.name == name) return a;
  }
  fail(StatusCode::kInternal, "state layout: no array named ", name);
}

ModelState::ModelState(const ModelConfig& c, const ModelOptions& o, Device device, bool with_mtp)
    : opt_(o), device_(device), small_("rope-tables", 4 * c.rope_head_dim + 4 * Arena::kAlignment, device) {
  // CUDA keeps the attention keys (kv ring, compressed entries) in the activation dtype (bf16 by default),
  // and the compressor's raw kv/gate rings in f32 (they feed a softmax over tokens); the CPU keeps f32.
  act_ = device == Device::kCUDA ? o.cuda_activation_dtype : DType::F32;
  DSV4_CHECK_ARG(act_ == DType::BF16 || act_ == DType::F32, "model options: CUDA activations must be BF16 or F32");
  layout_ = StateLayout::make(c, o, act_, with_mtp, packs_fp8_cache(o.kv_cache_dtype, device));
  const int64_t cols = layout_.table_columns();
  const bool static_table = o.num_pages == 0;
  num_pages_ = static_table ? o.max_seqs * cols : o.num_pages;
  DSV4_CHECK_ARG(num_pages_ > 0, "model options: the state pool needs at least one page");
  pool_ = Buffer(static_cast<size_t>(num_pages_ * layout_.page_bytes), device);
  host_table_.assign(static_cast<size_t>(o.max_seqs * cols), -1);
  if (static_table) std::iota(host_table_.begin(), host_table_.end(), 0);
  dirty_flag_.assign(static_cast<size_t>(o.max_seqs), 0);
  const int32_t* table = host_table_.data();
  if (device == Device::kCUDA) {
    table_ = Buffer(host_table_.size() * sizeof(int32_t), device);
    cuda::copy_to_device(table_.data(), host_table_.data(), table_bytes());
    table = static_cast<const int32_t*>(table_.data());
  }
  auto view = [&](const std::string& name) {
    const StateLayout::Array& a = layout_.array(name);
    PagedRows p;
    p.base = pool_.data();
    p.dtype = a.dtype;
    p.page_bytes = layout_.page_bytes;
    p.offset = a.offset;
    p.width = a.width;
    p.row_bytes = a.row_bytes;
    p.rows_per_page = a.rows_per_page;
    p.rows = a.rows;
    p.table = table;
    p.table_stride = cols;
    p.first_column = a.ring ? 0 : layout_.ring_pages;
    p.storage = a.storage;
    p.rope_dim = a.rope_dim;
    return p;
  };
  const KvFormats formats = kv_formats(opt_.kv_cache_dtype, device, act_);
  for (size_t l = 0; l < c.layer_types.size(); ++l) {
    const AttentionType t = c.layer_types[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    LayerState ls;
    ls.kv_ring = view(p + "kv_ring");
    ls.kv_format = formats.window;
    const int64_t rate = c.compress_rate(t);
    auto compressor = [&](const std::string& name, bool overlap, int64_t dim) {
      CompressorState cs;
      cs.raw_kv = view(p + name + ".raw_kv");
      cs.raw_gate = view(p + name + ".raw_gate");
      cs.entries = view(p + name + ".entries");
      cs.rate = rate;
      cs.overlap = overlap;
      cs.dim = dim;
      return cs;
    };
    if (rate > 0) {
      ls.compressor = compressor("compressor", t == AttentionType::kCompressedSparse, c.head_dim);
      ls.compressor.entry_format = formats.compressed;
    }
    if (t == AttentionType::kCompressedSparse) {
      ls.indexer = compressor("indexer", true, c.index_head_dim);
      ls.indexer.entry_format = formats.indexer;
    }
    layers.push_back(ls);
  }
  if (with_mtp) {
    mtp.kv_ring = view("mtp.kv_ring");
    mtp.kv_format = formats.window;
  }
  fill_rope(rope_main, small_, c.rope_main, c.rope_head_dim, device);
  fill_rope(rope_compress, small_, c.rope_compress, c.rope_head_dim, device);
}

ActivationQuant parse_activation_quant(const std::string& s) {
  if (s == "none") return ActivationQuant::kNone;
  if (s == "fp8") return ActivationQuant::kFp8;
  fail(StatusCode::kInvalidArgument, "--activation-quant must be none or fp8, got '", s, "'");
}

const char* activation_quant_name(ActivationQuant q) { return q == ActivationQuant::kFp8 ? "fp8" : "none"; }

KvCacheDtype parse_kv_cache_dtype(const std::string& s) {
  if (s == "auto") return KvCacheDtype::kAuto;
  if (s == "bf16") return KvCacheDtype::kBf16;
  if (s == "fp8") return KvCacheDtype::kFp8;
  fail(StatusCode::kInvalidArgument, "--kv-cache-dtype must be auto, bf16 or fp8, got '", s, "'");
}

const char* kv_cache_dtype_name(KvCacheDtype d) {
  switch (d) {
    case KvCacheDtype::kAuto:
      return "auto";
    case KvCacheDtype::kBf16:
      return "bf16";
    case KvCacheDtype::kFp8:
      return "fp8";
  }
  return "?";
}

KvFormats kv_formats(KvCacheDtype d, Device device, DType activations) {
  const bool cuda = device == Device::kCUDA;
  switch (d) {
    case KvCacheDtype::kAuto:
      return {};
    case KvCacheDtype::kBf16:
      if (cuda) {  // a bf16 cache is what bf16 activations give
        DSV4_CHECK(activations == DType::BF16, kUnsupported,
                   "--kv-cache-dtype bf16 with --cuda-precision f32: the CUDA build keeps the cache in the activation "
                   "dtype; use --kv-cache-dtype auto");
        return {};
      }
      return {KvRoundTrip::kBf16, KvRoundTrip::kBf16, KvRoundTrip::kBf16};
    case KvCacheDtype::kFp8:  // CUDA: packed rows (packs_fp8_cache); the batch's own kv rows are round-tripped
      return {KvRoundTrip::kFp8Blocks, KvRoundTrip::kFp8Blocks, KvRoundTrip::kFp4Rotated};
  }
  return {};
}

void ModelState::mark_dirty(int64_t slot) {
  if (dirty_flag_.at(static_cast<size_t>(slot)) != 0) return;
  dirty_flag_[static_cast<size_t>(slot)] = 1;
  dirty_.push_back(slot);
}

void ModelState::sync_table(void* stream, int32_t* staging) {
  if (device_ == Device::kCPU) {  // the kernels read the host copy
    for (int64_t s : dirty_) dirty_flag_[static_cast<size_t>(s)] = 0;
    dirty_.clear();
    return;
  }
  // One copy per run of marked rows rather than per row: a prefill step marks a row for every sequence that takes
  // pages (tens of them), and each copy is a few microseconds of host time the GPU waits for. Unmarked rows inside
  // a run go along: their host rows equal the device's (writers mark every row they change), so restaging and
  // recopying them writes the same bytes; runs merge only across gaps of at most kGapBytes.
  constexpr int64_t kGapBytes = 16 << 10;
  const int64_t cols = layout_.table_columns(), row_bytes = cols * static_cast<int64_t>(sizeof(int32_t));
  const int64_t max_gap = kGapBytes / std::max<int64_t>(row_bytes, 1);  // unmarked rows a run may span
  std::sort(dirty_.begin(), dirty_.end());
  for (const auto& [first, last] : row_runs(dirty_, max_gap)) {
    std::copy(table_row(first), table_row(last) + cols, staging + first * cols);
    cuda::copy_to_device_async(static_cast<int32_t*>(table_.data()) + first * cols, staging + first * cols,
                               static_cast<size_t>((last - first + 1) * row_bytes), stream);
  }
  for (int64_t s : dirty_) dirty_flag_[static_cast<size_t>(s)] = 0;
  dirty_.clear();
}

}  // namespace dsv4
