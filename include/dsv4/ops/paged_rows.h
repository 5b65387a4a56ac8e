// PagedRows: one per-sequence array of state rows (a ring or an entry store of one layer) held in the pages
// of the state pool and addressed through the per-sequence page table.
//
// Row r of the sequence in table row `s` lives in page table[s * table_stride + first_column + r /
// rows_per_page], at byte offset `offset + (r % rows_per_page) * row_bytes` of that page. A page holds the
// same row range of every array of its kind (context pages: the compressed entries of all layers for
// page_tokens positions; ring pages: a slice of every ring), so one page id serves all layers. The table
// lives in memory of the compute device at a fixed address (graph replays read it); page ids < 0 are
// unallocated pages.
//
// The accessor is plain data with inline address arithmetic, usable in host code and CUDA kernels.
#pragma once

#include <cstdint>

#include "dsv4/core/dtype.h"

#ifdef __CUDACC__
#define DSV4_PAGED_HD __host__ __device__ __forceinline__
#else
#define DSV4_PAGED_HD inline
#endif

namespace dsv4 {

// How a row holds its values: plain elements of `dtype`, or a packed row of the --kv-cache-dtype fp8 cache
// (dsv4/ops/kv_fp8.h has the byte layouts and the codec; such rows have dtype F8_E4M3, so code that reads rows
// by element type refuses them instead of misreading them).
enum class KvStorage : uint8_t {
  kPlain,
  kFp8Blocks,   // window / compressed kv: E4M3 per 64 values with a UE8M0 scale, the last rope_dim values in bf16
  kFp8Row,      // indexer keys: E4M3 with one fp32 scale per row
  kFp4Rotated,  // indexer keys: Hadamard-rotated, E2M1 per 32 values with UE8M0 scales (dsv4/ops/kv_fp4.h)
};

struct PagedRows {
  void* base = nullptr;            // the pool's first page
  DType dtype = DType::F32;        // element type
  int64_t page_bytes = 0;          // distance between consecutive pages
  int64_t offset = 0;              // bytes of this array's first row inside a page
  int64_t width = 0;               // elements per row
  int64_t row_bytes = 0;           // distance between rows inside a page (>= width * element size)
  int64_t rows_per_page = 0;       // rows of this array in one page
  int64_t rows = 0;                // logical rows per sequence (ring size, or entry capacity)
  const int32_t* table = nullptr;  // page ids, [sequences, table_stride]
  int64_t table_stride = 0;
  int64_t first_column = 0;  // table column of row 0
  KvStorage storage = KvStorage::kPlain;
  int64_t rope_dim = 0;  // kFp8Blocks: the trailing values kept in bf16

  DSV4_PAGED_HD bool packed() const { return storage != KvStorage::kPlain; }

  bool defined() const { return base != nullptr; }

  // Address of row r (0 <= r < rows) of table row s, or nullptr when its page is not allocated.
  template <typename T>
  DSV4_PAGED_HD T* row(int64_t s, int64_t r) const {
    int64_t page_of_row = 0, in_page = 0;
#ifdef __CUDA_ARCH__
    // On the GPU a 64-bit division is a ~70-instruction routine and the kernels call this per row (the decode
    // indexer's split blocks spent a quarter of their instructions here): 32-bit when both fit, as they always do
    // in practice (rows per sequence < 2^31).
    if (((static_cast<uint64_t>(r) | static_cast<uint64_t>(rows_per_page)) >> 31) == 0) {
      const uint32_t ur = static_cast<uint32_t>(r), per = static_cast<uint32_t>(rows_per_page);
      const uint32_t q = ur / per;
      page_of_row = q;
      in_page = ur - q * per;
    } else {
      page_of_row = r / rows_per_page;
      in_page = r % rows_per_page;
    }
#else
    page_of_row = r / rows_per_page;
    in_page = r % rows_per_page;
#endif
    const int32_t page = table[s * table_stride + first_column + page_of_row];
    if (page < 0) return nullptr;
    return reinterpret_cast<T*>(static_cast<char*>(base) + static_cast<int64_t>(page) * page_bytes + offset +
                                in_page * row_bytes);
  }
};

// A dense [sequences, rows, width] store seen as paged rows: one page per sequence, read through an identity
// table (`identity_table`: sequences int32 values 0, 1, 2, … in the compute device's memory, owned by the
// caller). For op tests and tools that keep unpaged state.
inline PagedRows dense_paged_rows(void* data, DType dtype, int64_t sequences, int64_t rows, int64_t width,
                                  const int32_t* identity_table) {
  PagedRows p;
  p.base = data;
  p.dtype = dtype;
  p.width = width;
  p.row_bytes = width * static_cast<int64_t>(dtype_size(dtype));
  p.rows_per_page = rows;
  p.rows = rows;
  p.page_bytes = rows * p.row_bytes;
  p.table = identity_table;
  p.table_stride = 1;
  (void)sequences;
  return p;
}

}  // namespace dsv4
