// The CUDA state ops against the CPU reference on scattered pages: every per-sequence array (compressor rings,
// entry stores, the sliding-window kv ring, the indexer's keys) lives in a pool of pages addressed through a page
// table that maps each sequence's logical pages to shuffled physical pages, with few rows per page (so windows,
// rings and entry stores cross page boundaries), padded rows, arrays at offsets inside a page, a table whose
// first column is not 0 (the columns around a sequence's own point at a poisoned spare page) and, where an op
// never reaches them, unallocated pages (-1). The device must compute what the CPU computes through the same
// table, and write nothing outside the rows it owns (every other byte of the pool is checked unchanged).
//
// The indexer runs on integer-valued keys and queries (exact in bf16 and in any fp32 summation order), so the
// device's selection must equal the CPU's exactly — set and order, ties to the lower index — for every visible
// count: none, fewer than top-k, top-k + 1, odd counts, one or several 4096-entry chunks, and 262144 entries.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>

#include "cuda_test_util.h"
#include "dsv4/ops/rope_table.h"

namespace dsv4 {
namespace {

using test::DevTensor;
using test::download;
using test::poison;
using test::random_vec;
using test::rng_for;
using test::RopePair;
using test::TestBatch;
using test::upload;

test::DeviceEnv& env() { return test::shared_env<16>(); }

ExecContext cpu_ctx() { return ExecContext{}; }

int64_t align16(int64_t bytes) { return (bytes + 15) / 16 * 16; }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Paged arrays of `slots` sequences in one pool of pages, on the host (f32: the CPU reference's state) and on the
// device (each array in its own dtype), read through one page table [slots, columns + 2]: column 0 and the last
// column hold a spare page (poisoned: a kernel that misses first_column reads NaN), columns 1 .. columns the
// sequence's logical pages. A page holds rows_per_page rows of every array (as the model's pages hold the same
// row range of every array of their kind), each array at its own offset, rows padded by 16 bytes, 16-byte
// guards between arrays. Every byte outside the arrays' rows is 0xff (NaN) on both sides.
class ScatteredPool {
 public:
  using Fill = std::function<void(int64_t slot, int64_t row, float* values)>;

  ScatteredPool(int64_t slots, int64_t columns) : slots_(slots), columns_(columns) {}

  // An array of `rows` rows of `width` elements (`dtype` on the device, f32 on the host), rows_per_page rows per
  // page, in the logical pages [first_column, first_column + ceil(rows / rows_per_page)). Before build().
  int add(int64_t rows, int64_t width, int64_t rows_per_page, DType dtype, int64_t first_column) {
    Array a;
    a.rows = rows, a.width = width, a.rows_per_page = rows_per_page, a.dtype = dtype;
    a.first_column = first_column;
    a.columns = ceil_div(rows, rows_per_page);
    EXPECT_LE(first_column + a.columns, columns_) << "array outside the table's columns";
    a.host_offset = host_page_bytes_;
    a.host_row_bytes = align16(width * 4) + 16;
    host_page_bytes_ += rows_per_page * a.host_row_bytes + 16;
    a.dev_offset = dev_page_bytes_;
    a.dev_row_bytes = align16(width * static_cast<int64_t>(dtype_size(dtype))) + 16;
    dev_page_bytes_ += rows_per_page * a.dev_row_bytes + 16;
    arrays_.push_back(a);
    return static_cast<int>(arrays_.size()) - 1;
  }

  // Maps the first mapped[s] logical pages of each sequence s (all when `mapped` is empty; the others stay -1) to
  // distinct physical pages in a random order, with spare pages among them, and poisons both pools.
  void build(std::mt19937& rng, std::vector<int64_t> mapped = {}) {
    if (mapped.empty()) mapped.assign(static_cast<size_t>(slots_), columns_);
    ASSERT_EQ(static_cast<int64_t>(mapped.size()), slots_);
    int64_t used = 0;
    for (int64_t m : mapped) {
      ASSERT_LE(m, columns_);
      used += m;
    }
    num_pages_ = used + 2 + std::min<int64_t>(used / 8, 64);
    std::vector<int32_t> perm(static_cast<size_t>(num_pages_));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    stride_ = columns_ + 2;
    table_.assign(static_cast<size_t>(slots_ * stride_), -1);
    owner_.assign(static_cast<size_t>(num_pages_), {-1, -1});
    const int32_t decoy = perm[static_cast<size_t>(used)];
    size_t next = 0;
    for (int64_t s = 0; s < slots_; ++s) {
      table_[s * stride_] = decoy;
      table_[s * stride_ + stride_ - 1] = decoy;
      for (int64_t c = 0; c < mapped[s]; ++c) {
        const int32_t page = perm[next++];
        table_[s * stride_ + 1 + c] = page;
        owner_[page] = {s, c};
      }
    }
    host_.assign(static_cast<size_t>(num_pages_ * host_page_bytes_ / 4), 0.0f);
    std::memset(host_.data(), 0xff, host_.size() * sizeof(float));
    shadow_.assign(static_cast<size_t>(num_pages_ * dev_page_bytes_), 0xff);
    dev_ = Buffer(shadow_.size(), Device::kCUDA);
    cuda::copy_to_device(dev_.data(), shadow_.data(), shadow_.size());
    dtable_ = test::upload_i32(table_, {slots_ * stride_});
  }

  // Writes fill(s, r, values) into every mapped row of array a (rounded to the device dtype on both sides).
  void set(int a, const Fill& fill) {
    const Array& A = arrays_[a];
    std::vector<float> v(static_cast<size_t>(A.width));
    for (int64_t s = 0; s < slots_; ++s) {
      for (int64_t r = 0; r < A.rows; ++r) {
        const int32_t page = page_of(A, s, r);
        if (page < 0) continue;
        fill(s, r, v.data());
        if (A.dtype == DType::BF16) {
          for (float& x : v) x = round_to_bf16(x);
        }
        std::memcpy(host_row(A, page, r), v.data(), v.size() * sizeof(float));
        convert_from_f32(v.data(), A.dtype, shadow_.data() + dev_row_at(A, page, r), v.size());
      }
    }
    cuda::copy_to_device(dev_.data(), shadow_.data(), shadow_.size());
  }
  void set_random(int a, std::mt19937& rng, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    set(a, [&](int64_t, int64_t, float* v) {
      for (int64_t i = 0; i < arrays_[a].width; ++i) v[i] = d(rng);
    });
  }

  // Array a's rows as dense [slots, rows, width] values (unmapped rows: 0), from the host or the device pool.
  std::vector<float> host_values(int a) const {
    const Array& A = arrays_[a];
    std::vector<float> out(static_cast<size_t>(slots_ * A.rows * A.width), 0.0f);
    for (int64_t s = 0; s < slots_; ++s) {
      for (int64_t r = 0; r < A.rows; ++r) {
        const int32_t page = page_of(A, s, r);
        if (page >= 0) std::memcpy(&out[(s * A.rows + r) * A.width], host_row(A, page, r), A.width * sizeof(float));
      }
    }
    return out;
  }
  std::vector<float> device_values(int a) const {
    const Array& A = arrays_[a];
    const std::vector<uint8_t> pool = download_pool();
    std::vector<float> out(static_cast<size_t>(slots_ * A.rows * A.width), 0.0f);
    for (int64_t s = 0; s < slots_; ++s) {
      for (int64_t r = 0; r < A.rows; ++r) {
        const int32_t page = page_of(A, s, r);
        if (page >= 0)
          convert_to_f32(A.dtype, pool.data() + dev_row_at(A, page, r), &out[(s * A.rows + r) * A.width], A.width);
      }
    }
    return out;
  }

  // The first device byte outside every array's mapped rows that differs from its initial value ("" if none).
  std::string stray_writes() const {
    const std::vector<uint8_t> pool = download_pool();
    std::vector<char> row_byte(pool.size(), 0);
    for (int64_t p = 0; p < num_pages_; ++p) {
      const int64_t column = owner_[p].second;
      if (column < 0) continue;
      for (const Array& A : arrays_) {
        if (column < A.first_column || column >= A.first_column + A.columns) continue;
        for (int64_t i = 0; i < A.rows_per_page; ++i) {
          const int64_t r = (column - A.first_column) * A.rows_per_page + i;
          if (r >= A.rows) break;
          const int64_t at = p * dev_page_bytes_ + A.dev_offset + i * A.dev_row_bytes;
          std::fill_n(row_byte.begin() + at, A.width * static_cast<int64_t>(dtype_size(A.dtype)), 1);
        }
      }
    }
    for (size_t b = 0; b < pool.size(); ++b) {
      if (row_byte[b] == 0 && pool[b] != shadow_[b]) {
        const int64_t p = static_cast<int64_t>(b) / dev_page_bytes_;
        return str_cat("byte ", static_cast<int64_t>(b) % dev_page_bytes_, " of page ", p, " (sequence ",
                       owner_[p].first, ", logical page ", owner_[p].second, ") changed from ",
                       static_cast<int>(shadow_[b]), " to ", static_cast<int>(pool[b]));
      }
    }
    return "";
  }

  PagedRows cpu(int a) {
    return rows(arrays_[a], host_.data(), host_page_bytes_, arrays_[a].host_offset, arrays_[a].host_row_bytes,
                DType::F32, table_.data());
  }
  PagedRows gpu(int a) const {
    return rows(arrays_[a], dev_.data(), dev_page_bytes_, arrays_[a].dev_offset, arrays_[a].dev_row_bytes,
                arrays_[a].dtype, static_cast<const int32_t*>(dtable_.t.data()));
  }
  int64_t num_pages() const { return num_pages_; }

 private:
  struct Array {
    int64_t rows = 0, width = 0, rows_per_page = 0, first_column = 0, columns = 0;
    DType dtype = DType::F32;
    int64_t host_offset = 0, host_row_bytes = 0, dev_offset = 0, dev_row_bytes = 0;
  };

  PagedRows rows(const Array& A, void* base, int64_t page_bytes, int64_t offset, int64_t row_bytes, DType dtype,
                 const int32_t* table) const {
    PagedRows p;
    p.base = base;
    p.dtype = dtype;
    p.page_bytes = page_bytes;
    p.offset = offset;
    p.width = A.width;
    p.row_bytes = row_bytes;
    p.rows_per_page = A.rows_per_page;
    p.rows = A.rows;
    p.table = table;
    p.table_stride = stride_;
    p.first_column = 1 + A.first_column;
    return p;
  }
  int32_t page_of(const Array& A, int64_t s, int64_t r) const {
    return table_[s * stride_ + 1 + A.first_column + r / A.rows_per_page];
  }
  float* host_row(const Array& A, int32_t page, int64_t r) const {
    const char* base = reinterpret_cast<const char*>(host_.data());
    return const_cast<float*>(reinterpret_cast<const float*>(base + page * host_page_bytes_ + A.host_offset +
                                                             (r % A.rows_per_page) * A.host_row_bytes));
  }
  int64_t dev_row_at(const Array& A, int32_t page, int64_t r) const {
    return page * dev_page_bytes_ + A.dev_offset + (r % A.rows_per_page) * A.dev_row_bytes;
  }
  std::vector<uint8_t> download_pool() const {
    std::vector<uint8_t> pool(shadow_.size());
    cuda::copy_to_host(pool.data(), dev_.data(), pool.size());
    return pool;
  }

  int64_t slots_, columns_;
  int64_t host_page_bytes_ = 16, dev_page_bytes_ = 16;  // a guard before the first array
  std::vector<Array> arrays_;
  int64_t num_pages_ = 0, stride_ = 0;
  std::vector<int32_t> table_;
  std::vector<std::pair<int64_t, int64_t>> owner_;  // (sequence, logical page) of each physical page
  std::vector<float> host_;
  std::vector<uint8_t> shadow_;  // the device pool as written by set()
  Buffer dev_;
  DevTensor dtable_;
};

// ---- compressor ------------------------------------------------------------------------------------

// compressor_emit + compressor_store: raw kv/gate rings (f32) in ring pages of few rows, the entries (bf16) in
// context pages after them in the table. Per rate r: a chunk from position r + 1 over 2r positions (windows
// closing at 2r - 1 and 3r - 1 that mix ring and batch rows; longer than a non-overlap ring), a decode row closing
// entry 9 from the ring alone, a fresh prefill (entry 0; only its first context page is allocated), a 3-token
// chunk closing entry 3, and padding.
TEST(CudaPaged, CompressorEmitAndStore) {
  DSV4_REQUIRE_GPU();
  struct Case {
    int64_t rate;
    bool overlap;
    int64_t dim, rope_dim, ring_rows_per_page, entry_rows_per_page;
  };
  int v = 0;
  for (const Case c : {Case{4, true, 32, 8, 3, 3}, Case{4, true, 128, 64, 4, 1}, Case{8, false, 32, 8, 3, 2},
                       Case{16, false, 512, 64, 5, 3}, Case{128, false, 64, 16, 7, 2}, Case{4, true, 40, 8, 3, 5}}) {
    auto rng = rng_for("paged_compressor", v++);
    const int64_t slots = 4, ahead = 2, r = c.rate, width = (c.overlap ? 2 : 1) * c.dim;
    const int64_t ring = (c.overlap ? 2 : 1) * r + ahead, capacity = 12;
    const int64_t ring_cols = ceil_div(ring, c.ring_rows_per_page);
    const int64_t cols = ring_cols + ceil_div(capacity, c.entry_rows_per_page);
    ScatteredPool pool(slots, cols);
    const int kv_a = pool.add(ring, width, c.ring_rows_per_page, DType::F32, 0);
    const int gate_a = pool.add(ring, width, c.ring_rows_per_page, DType::F32, 0);
    const int entries_a = pool.add(capacity, c.dim, c.entry_rows_per_page, DType::BF16, ring_cols);
    pool.build(rng, {cols, ring_cols + 1, cols, cols});
    pool.set_random(kv_a, rng, -2, 2);
    pool.set_random(gate_a, rng, -2, 2);
    pool.set_random(entries_a, rng, -1, 1);
    CompressorState cpu_c, gpu_c;
    for (CompressorState* s : {&cpu_c, &gpu_c}) {
      s->rate = r;
      s->overlap = c.overlap;
      s->dim = c.dim;
    }
    cpu_c.raw_kv = pool.cpu(kv_a), cpu_c.raw_gate = pool.cpu(gate_a), cpu_c.entries = pool.cpu(entries_a);
    gpu_c.raw_kv = pool.gpu(kv_a), gpu_c.raw_gate = pool.gpu(gate_a), gpu_c.entries = pool.gpu(entries_a);
    RopePair rope(c.rope_dim);
    const auto i32 = [](int64_t x) { return static_cast<int32_t>(x); };
    TestBatch batch({{2, i32(r + 1), i32(2 * r)}, {0, i32(10 * r - 1), 1}, {1, 0, i32(r + 2)}, {3, i32(4 * r - 3), 3}},
                    2, 100, rng);
    const int64_t T = batch.size();
    std::vector<float> kv = random_vec(rng, T * width, -2, 2), gate = random_vec(rng, T * width, -2, 2);
    std::vector<float> ape = random_vec(rng, r * width), norm = random_vec(rng, c.dim, 0.5f, 1.5f);
    ExecContext cpu = cpu_ctx();
    ops::compressor_emit(cpu, cpu_c, test::host_view(kv, {T, width}), test::host_view(gate, {T, width}),
                         test::host_view(ape, {r, width}), test::host_view(norm, {c.dim}), rope.cpu, batch.host(),
                         1e-6f);
    ops::compressor_store(cpu, cpu_c, test::host_view(kv, {T, width}), test::host_view(gate, {T, width}), batch.host());
    DevTensor dkv = upload(kv, DType::F32, {T, width}), dgate = upload(gate, DType::F32, {T, width});
    DevTensor dape = upload(ape, DType::F32, {r, width}), dnorm = upload(norm, DType::F32, {c.dim});
    ops::compressor_emit(env().ctx, gpu_c, dkv.t, dgate.t, dape.t, dnorm.t, rope.gpu, batch.device(), 1e-6f);
    ops::compressor_store(env().ctx, gpu_c, dkv.t, dgate.t, batch.device());
    env().sync();
    const std::string tag = str_cat(" rate=", r, c.overlap ? " overlap" : "", " dim=", c.dim, ", ", pool.num_pages(),
                                    " pages of ", c.ring_rows_per_page, "/", c.entry_rows_per_page, " rows");
    // Untouched rows keep their (identical) initial values, so a write to a wrong row shows as a large error.
    const std::vector<float> entries = pool.device_values(entries_a), raw_kv = pool.device_values(kv_a),
                             raw_gate = pool.device_values(gate_a);
    DSV4_EXPECT_CLOSE(entries, pool.host_values(entries_a), 1e-2, "paged compressor_emit entries" + tag);
    DSV4_EXPECT_CLOSE(raw_kv, pool.host_values(kv_a), 0.0, "paged compressor_store kv" + tag);
    DSV4_EXPECT_CLOSE(raw_gate, pool.host_values(gate_a), 0.0, "paged compressor_store gate" + tag);
    EXPECT_EQ(pool.stray_writes(), "") << tag;
  }
}

// ---- kv ring -----------------------------------------------------------------------------------------

// A 10-row ring in pages of 3 or 4 rows: a chunk longer than the ring (only its last 10 positions are kept, wrapping
// around), a decode row, a short chunk of a sequence that holds only the ring pages its positions reach, padding.
TEST(CudaPaged, KvRingStore) {
  DSV4_REQUIRE_GPU();
  struct Case {
    int64_t D;
    DType dtype;
    int64_t rows_per_page;
  };
  int v = 0;
  for (const Case c : {Case{32, DType::BF16, 3}, Case{512, DType::BF16, 4}, Case{64, DType::F32, 3}}) {
    auto rng = rng_for("paged_kv_ring", v++);
    const int64_t slots = 3, ring = 10, cols = ceil_div(ring, c.rows_per_page);
    ScatteredPool pool(slots, cols);
    const int a = pool.add(ring, c.D, c.rows_per_page, c.dtype, 0);
    pool.build(rng, {cols, cols, 3 / c.rows_per_page + 1});  // slot 2 writes rows 0..3 only
    pool.set_random(a, rng, -1, 1);
    TestBatch batch({{1, 3, 12}, {0, 50, 1}, {2, 0, 4}}, 2, 100, rng);
    const int64_t T = batch.size();
    std::vector<float> rows = test::as_stored(random_vec(rng, T * c.D), c.dtype);
    DevTensor drows = upload(rows, c.dtype, {T, c.D});
    ExecContext cpu = cpu_ctx();
    ops::kv_ring_store(cpu, pool.cpu(a), test::host_view(rows, {T, c.D}), batch.host());
    ops::kv_ring_store(env().ctx, pool.gpu(a), drows.t, batch.device());
    env().sync();
    const std::string tag = str_cat(" D=", c.D, " ", dtype_name(c.dtype), ", ", c.rows_per_page, " rows per page");
    const std::vector<float> got = pool.device_values(a);
    DSV4_EXPECT_CLOSE(got, pool.host_values(a), 0.0, "paged kv_ring_store" + tag);
    EXPECT_EQ(pool.stray_writes(), "") << tag;
  }
}

// ---- attention ---------------------------------------------------------------------------------------

enum class AttnKind { kSliding, kHca, kCsa };

struct AttnCase {
  int64_t D, heads, window;
  AttnKind kind;
  int64_t rate, max_model_len, topk;
  DType dtype;
  int64_t ring_rows_per_page, entry_rows_per_page;
};

// Random ring, entries, queries and selections (distinct visible entries with -1 holes) in scattered pages; the
// device against the CPU, twice (bit-identical), and no write to the state.
void check_attention(const AttnCase& c, const std::vector<TestBatch::Chunk>& chunks, int padding, int variant) {
  auto rng = rng_for("paged_attention", variant);
  const int64_t slots = 3, ahead = 3, ring = c.window + ahead, capacity = c.max_model_len / c.rate, topk = c.topk;
  const int64_t ring_cols = ceil_div(ring, c.ring_rows_per_page);
  ScatteredPool pool(slots, ring_cols + ceil_div(capacity, c.entry_rows_per_page));
  const int ring_a = pool.add(ring, c.D, c.ring_rows_per_page, c.dtype, 0);
  const int entries_a = pool.add(capacity, c.D, c.entry_rows_per_page, c.dtype, ring_cols);
  pool.build(rng);
  pool.set_random(ring_a, rng, -1, 1);
  pool.set_random(entries_a, rng, -1, 1);
  TestBatch batch(chunks, padding, 100, rng);
  const int64_t T = batch.size();
  std::vector<float> q = test::as_stored(random_vec(rng, T * c.heads * c.D, -3, 3), c.dtype);
  std::vector<float> kv = test::as_stored(random_vec(rng, T * c.D), c.dtype);
  std::vector<float> sinks = random_vec(rng, c.heads, -1, 1);
  std::vector<int32_t> selected(T * topk, -1);
  for (int64_t t = 0; t < T; ++t) {
    if (batch.slot[t] < 0) continue;
    std::vector<int32_t> candidates(std::min<int64_t>((batch.pos[t] + 1) / c.rate, capacity));
    std::iota(candidates.begin(), candidates.end(), 0);
    std::shuffle(candidates.begin(), candidates.end(), rng);
    for (int64_t k = 0; k < topk && k < static_cast<int64_t>(candidates.size()); ++k) {
      if (rng() % 4 != 0) selected[t * topk + k] = candidates[k];
    }
  }
  const bool compressed = c.kind != AttnKind::kSliding, csa = c.kind == AttnKind::kCsa;
  CompressorState cpu_c, gpu_c;
  cpu_c.rate = gpu_c.rate = c.rate;
  cpu_c.dim = gpu_c.dim = c.D;
  cpu_c.entries = pool.cpu(entries_a);
  gpu_c.entries = pool.gpu(entries_a);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  std::vector<float> ref(T * c.heads * c.D);
  ExecContext cpu = cpu_ctx();
  ops::attention(cpu, test::host_view(ref, {T, c.heads, c.D}), test::host_view(q, {T, c.heads, c.D}),
                 test::host_view(kv, {T, c.D}), pool.cpu(ring_a), compressed ? &cpu_c : nullptr,
                 csa ? test::host_view_i32(selected, {T, topk}) : Tensor(), test::host_view(sinks, {c.heads}),
                 batch.host(), c.window, scale);
  DevTensor dq = upload(q, c.dtype, {T, c.heads, c.D}), dkv = upload(kv, c.dtype, {T, c.D});
  DevTensor dsinks = upload(sinks, DType::F32, {c.heads}), dsel = test::upload_i32(selected, {T, topk});
  DevTensor dout(c.dtype, {T, c.heads, c.D});
  const char* kind = c.kind == AttnKind::kSliding ? "sliding" : c.kind == AttnKind::kHca ? "HCA" : "CSA";
  const std::string tag = str_cat("paged attention ", kind, " ", dtype_name(c.dtype), " D=", c.D, " heads=", c.heads,
                                  " window=", c.window, " T=", T);
  std::vector<float> first;
  for (int run = 0; run < 2; ++run) {
    poison(dout.t);
    ops::attention(env().ctx, dout.t, dq.t, dkv.t, pool.gpu(ring_a), compressed ? &gpu_c : nullptr,
                   csa ? dsel.t : Tensor(), dsinks.t, batch.device(), c.window, scale);
    env().sync();
    std::vector<float> got = download(dout.t);
    if (run == 1) {
      ASSERT_EQ(std::memcmp(got.data(), first.data(), got.size() * sizeof(float)), 0) << tag << ": not deterministic";
      break;
    }
    DSV4_EXPECT_CLOSE(got, ref, c.dtype == DType::BF16 ? 1e-2 : 1e-4, tag);
    first = std::move(got);
  }
  EXPECT_EQ(pool.stray_writes(), "") << tag;
}

// The split-KV tensor-core kernel (bf16, head dim a multiple of 32) at the Flash slice's shapes (64 × 512, window
// 128; HCA rate 128, CSA rate 4 with top-512 selections): decode rows (split keys) with 64..601 compressed
// entries, a 35-row batch (keys not split) whose chunk windows span ring pages and the batch; then prefill-sized
// batches, which the 64-head prefill kernel takes.
TEST(CudaPaged, AttentionSplitKernelFlashShapes) {
  DSV4_REQUIRE_GPU();
  const AttnCase hca{512, 64, 128, AttnKind::kHca, 128, 81920, 512, DType::BF16, 7, 3};
  const AttnCase csa{512, 64, 128, AttnKind::kCsa, 4, 2560, 512, DType::BF16, 7, 5};
  const AttnCase sliding{512, 64, 128, AttnKind::kSliding, 128, 81920, 512, DType::BF16, 7, 3};
  int v = 0;
  check_attention(hca, {{1, 8200, 1}}, 0, v++);                                // 64 entries, T = 1
  check_attention(hca, {{0, 76900, 1}, {1, 8191, 1}, {2, 40000, 1}}, 1, v++);  // 600, 64, 312 entries
  check_attention(csa, {{2, 2403, 1}}, 0, v++);                                // 601 visible
  check_attention(csa, {{1, 100, 24}, {0, 2403, 1}, {2, 700, 8}}, 2, v++);     // 35 rows: no split
  check_attention(sliding, {{0, 60, 1}, {1, 500, 1}, {2, 127, 1}}, 1, v++);
  // Prefill-sized batches (>= 64 rows): the 64-head kernel (attention_prefill.cu) through the same scattered pages.
  check_attention(csa, {{2, 2300, 80}, {0, 600, 1}, {1, 3, 6}}, 1, v++);
  check_attention(hca, {{0, 76900, 70}}, 0, v++);
  check_attention(sliding, {{1, 500, 66}}, 0, v++);
}

// The split kernel's zero-padded head groups (heads not a multiple of 16, head dim 32 or 64), and the warp kernel:
// f32 (the vectorised D = 512 path and the element-wise ones) and bf16 head dims that are no multiple of 32.
TEST(CudaPaged, AttentionOtherShapesAndWarpKernel) {
  DSV4_REQUIRE_GPU();
  const std::vector<std::pair<std::vector<TestBatch::Chunk>, int>> batches = {
      {{{1, 150, 1}}, 0},                            // T = 1
      {{{1, 100, 24}, {0, 200, 1}, {2, 70, 8}}, 2},  // T = 35
  };
  int v = 100;
  for (const AttnCase& c : {AttnCase{64, 4, 64, AttnKind::kCsa, 4, 512, 16, DType::BF16, 5, 3},
                            AttnCase{32, 20, 8, AttnKind::kHca, 16, 512, 3, DType::BF16, 3, 2},
                            AttnCase{512, 16, 16, AttnKind::kHca, 8, 512, 64, DType::F32, 5, 3},
                            AttnCase{64, 4, 8, AttnKind::kCsa, 4, 512, 16, DType::F32, 3, 2},
                            AttnCase{128, 8, 16, AttnKind::kSliding, 16, 512, 8, DType::F32, 3, 3},
                            AttnCase{40, 2, 8, AttnKind::kHca, 8, 512, 8, DType::BF16, 3, 5}}) {
    for (const auto& [chunks, padding] : batches) check_attention(c, chunks, padding, v++);
  }
}

// ---- indexer -----------------------------------------------------------------------------------------

// Keys and queries are integers in [-amp, amp] and the head weights multiples of 1/8 (softmax scale 1/16), so
// every score is an exact multiple of 2^-7 below 2^17 whatever the summation order: the device's selection must
// equal the CPU reference's exactly, and both must equal the order of the exact (int64) scores, descending with
// ties to the lower index. Each sequence holds the context pages its visible entries reach, no more.
void check_indexer(const char* name, int64_t heads, int64_t Di, int64_t topk, int amp, int64_t slots, int64_t capacity,
                   int64_t rows_per_page, const std::vector<TestBatch::Chunk>& chunks, int padding, int variant) {
  const auto t0 = std::chrono::steady_clock::now();
  auto rng = rng_for("paged_indexer", variant);
  const int64_t rate = 4, wmax = 8;
  ASSERT_LT(heads * Di * amp * amp * wmax, int64_t{1} << 24) << "scores would not be exact in fp32";
  TestBatch batch(chunks, padding, 100, rng);
  const int64_t T = batch.size();
  auto visible_of = [&](int64_t t) {
    return batch.slot[t] < 0 ? int64_t{0} : std::min<int64_t>((batch.pos[t] + 1) / rate, capacity);
  };
  std::vector<int64_t> mapped(static_cast<size_t>(slots), 0);
  for (int64_t t = 0; t < T; ++t) {
    if (batch.slot[t] >= 0)
      mapped[batch.slot[t]] = std::max(mapped[batch.slot[t]], ceil_div(visible_of(t), rows_per_page));
  }
  ScatteredPool pool(slots, ceil_div(capacity, rows_per_page));
  const int a = pool.add(capacity, Di, rows_per_page, DType::BF16, 0);
  pool.build(rng, mapped);
  std::uniform_int_distribution<int> value(-amp, amp), weight(-static_cast<int>(wmax), static_cast<int>(wmax));
  pool.set(a, [&](int64_t, int64_t, float* k) {
    for (int64_t i = 0; i < Di; ++i) k[i] = static_cast<float>(value(rng));
  });
  std::vector<float> q(T * heads * Di), w(T * heads);
  for (float& x : q) x = static_cast<float>(value(rng));
  for (float& x : w) x = static_cast<float>(weight(rng)) / static_cast<float>(wmax);
  const float scale = 1.0f / 16;
  CompressorState cpu_keys, gpu_keys;
  cpu_keys.rate = gpu_keys.rate = rate;
  cpu_keys.overlap = gpu_keys.overlap = true;
  cpu_keys.dim = gpu_keys.dim = Di;
  cpu_keys.entries = pool.cpu(a);
  gpu_keys.entries = pool.gpu(a);
  std::vector<int32_t> ref(T * topk);
  ExecContext cpu = cpu_ctx();
  ops::indexer_topk(cpu, test::host_view_i32(ref, {T, topk}), test::host_view(q, {T, heads, Di}),
                    test::host_view(w, {T, heads}), cpu_keys, batch.host(), scale);
  DevTensor dq = upload(q, DType::F32, {T, heads, Di}), dw = upload(w, DType::F32, {T, heads});
  DevTensor dout(DType::I32, {T, topk});
  poison(dout.t);
  ops::indexer_topk(env().ctx, dout.t, dq.t, dw.t, gpu_keys, batch.device(), scale);
  env().sync();
  const std::vector<int32_t> got = test::download_i32(dout.t);
  // The exact order from int64 scores (in units of 2^-7), and how many entries share the last selected one's score.
  const PagedRows keys = pool.cpu(a);
  std::string summary;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t S = visible_of(t);
    std::vector<int64_t> score(static_cast<size_t>(S), 0);
    for (int64_t s = 0; s < S; ++s) {
      const float* k = keys.row<float>(batch.slot[t], s);
      for (int64_t h = 0; h < heads; ++h) {
        int64_t d = 0;
        for (int64_t i = 0; i < Di; ++i) {
          d += static_cast<int64_t>(q[(t * heads + h) * Di + i]) * static_cast<int64_t>(k[i]);
        }
        score[s] += std::max<int64_t>(d, 0) * static_cast<int64_t>(w[t * heads + h] * wmax);
      }
    }
    std::vector<int32_t> order(static_cast<size_t>(S));
    std::iota(order.begin(), order.end(), 0);
    const int64_t n = std::min(S, topk);
    if (S > topk) {
      std::partial_sort(order.begin(), order.begin() + n, order.end(),
                        [&](int32_t x, int32_t y) { return score[x] > score[y] || (score[x] == score[y] && x < y); });
    }
    std::vector<int32_t> want(static_cast<size_t>(topk), -1);
    std::copy_n(order.begin(), n, want.begin());
    const std::vector<int32_t> cpu_row(ref.begin() + t * topk, ref.begin() + (t + 1) * topk);
    const std::vector<int32_t> gpu_row(got.begin() + t * topk, got.begin() + (t + 1) * topk);
    ASSERT_EQ(cpu_row, want) << name << ": the CPU reference is not the exact order, token " << t << " (S = " << S
                             << ")";
    if (gpu_row != want) {
      int64_t k = 0;
      while (gpu_row[k] == want[k]) ++k;
      ADD_FAILURE() << name << ": token " << t << " (slot " << batch.slot[t] << ", S = " << S << "): rank " << k
                    << " selects " << gpu_row[k] << ", the CPU " << want[k];
    }
    if (S > topk && batch.slot[t] >= 0) {
      const int64_t last = score[want[topk - 1]];
      const int64_t ties = std::count(score.begin(), score.end(), last);
      summary += str_cat(" S=", S, " (", ties, " sharing the k-th score)");
    } else if (batch.slot[t] >= 0) {
      summary += str_cat(" S=", S);
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  %s: heads=%lld Di=%lld top-%lld, %lld pages of %lld entries, %.2f s:%s\n", name,
              static_cast<long long>(heads), static_cast<long long>(Di), static_cast<long long>(topk),
              static_cast<long long>(pool.num_pages()), static_cast<long long>(rows_per_page), secs, summary.c_str());
}

// Visible counts 0, < top-k, top-k + 1, odd, 4095 / 4096 / 4097 around the 4096-entry chunk (a prefill chunk whose
// queries see different counts) and several chunks plus a few entries, in pages of 7 entries: the Flash shape
// (64 × 128, top-512) with few ties, and a top-100 (no power of two) on keys in {-1, 0, 1} where most scores tie.
TEST(CudaPaged, IndexerTopkVisibleCounts) {
  DSV4_REQUIRE_GPU();
  const auto at = [](int64_t S) { return static_cast<int32_t>(4 * S - 1); };  // the first position seeing S entries
  check_indexer(
      "flash shape", 64, 128, 512, 3, 6, 12800, 7,
      {{0, 0, 3}, {1, at(257), 1}, {2, at(513), 1}, {3, at(1001), 1}, {4, at(4096) - 4, 9}, {5, at(3 * 4096 + 7), 1}},
      2, 0);
  check_indexer(
      "ties", 8, 32, 100, 1, 6, 12800, 7,
      {{0, 0, 3}, {1, at(51), 1}, {2, at(101), 1}, {3, at(201), 1}, {4, at(4096) - 4, 9}, {5, at(2 * 4096 + 1), 1}}, 2,
      1);
}

// 262144 visible entries (one query at position 4·262144 − 1; 64 chunks) in pages of 64 entries, wide-ranged
// scores; then mostly tied scores, with a second sequence at 262143 entries.
TEST(CudaPaged, IndexerTopkLongContext) {
  DSV4_REQUIRE_GPU();
  const int64_t S = 262144;
  check_indexer("262144 entries", 16, 64, 512, 40, 2, S, 64, {{1, static_cast<int32_t>(4 * S - 1), 1}}, 1, 2);
  check_indexer("262144 entries, ties", 4, 16, 512, 1, 2, S, 64,
                {{0, static_cast<int32_t>(4 * S - 1), 1}, {1, static_cast<int32_t>(4 * (S - 1) - 1), 1}}, 1, 3);
}

}  // namespace
}  // namespace dsv4
