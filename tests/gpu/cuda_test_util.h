// Helpers for CUDA op and model tests: a device execution context (stream, cuBLASLt, scratch arena),
// device tensors built from host float data (converted to bf16/f32/i32), poisoning and downloads.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/blas.h"
#include "backend/cuda/cuda_check.h"
#include "dsv4/core/buffer.h"
#include "dsv4/io/config.h"
#include "dsv4/ops/ops.h"
#include "dsv4/ops/rope_table.h"
#include "gpu_test_util.h"

namespace dsv4::test {

// A CUDA ExecContext that owns its stream, cuBLASLt handle and scratch arena.
class DeviceEnv {
 public:
  explicit DeviceEnv(size_t scratch_bytes = size_t{64} << 20) : scratch_("test-scratch", scratch_bytes, Device::kCUDA) {
    // A blocking stream: it orders with the legacy-stream copies and memsets the tests make around ops.
    DSV4_CUDA_CHECK(cudaStreamCreate(&stream_));
    blas_ = std::make_unique<cuda::BlasHandle>();
    ctx.device = Device::kCUDA;
    ctx.stream = stream_;
    ctx.scratch = &scratch_;
    ctx.blas = blas_.get();
  }
  ~DeviceEnv() {
    cudaStreamSynchronize(stream_);
    blas_.reset();
    cudaStreamDestroy(stream_);
  }
  void sync() { DSV4_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  cudaStream_t stream() const { return stream_; }
  Arena& scratch() { return scratch_; }

  ExecContext ctx;

 private:
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::BlasHandle> blas_;
  Arena scratch_;
};

// The test program's DeviceEnv with a scratch arena of MiB mebibytes, made at first use and never destroyed: the
// CUDA runtime may already be shut down when static destructors run.
template <size_t MiB>
DeviceEnv& shared_env() {
  static DeviceEnv* e = new DeviceEnv(MiB << 20);
  return *e;
}

// A generator seeded by the test's name and a variant number: each case draws its own reproducible values.
inline std::mt19937 rng_for(const char* test, int variant = 0) {
  std::seed_seq seq{static_cast<int>(std::hash<std::string>{}(test)&0x7fffffff), variant};
  return std::mt19937(seq);
}

// DeepSeek-V4's compress-type rope: YaRN, theta 160000, factor 16 over 65536 original positions.
inline RopeParams v4_yarn() {
  RopeParams p;
  p.type = RopeType::kYarn;
  p.theta = 160000;
  p.factor = 16;
  p.original_max_position_embeddings = 65536;
  return p;
}

// An owning device tensor.
struct DevTensor {
  Buffer buf;
  Tensor t;
  DevTensor() = default;
  DevTensor(DType dtype, const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    buf = Buffer(std::max<size_t>(1, static_cast<size_t>(n) * dtype_size(dtype)), Device::kCUDA);
    t = Tensor(buf.data(), dtype, shape, Device::kCUDA);
  }
};

// Host float data → a device tensor of `dtype` (F32, BF16 or I32; ints are converted exactly).
inline DevTensor upload(const std::vector<float>& host, DType dtype, const std::vector<int64_t>& shape) {
  DevTensor d(dtype, shape);
  EXPECT_EQ(static_cast<int64_t>(host.size()), d.t.numel());
  std::vector<char> staging(d.t.nbytes());
  if (dtype == DType::I32) {
    for (size_t i = 0; i < host.size(); ++i)
      reinterpret_cast<int32_t*>(staging.data())[i] = static_cast<int32_t>(host[i]);
  } else {
    convert_from_f32(host.data(), dtype, staging.data(), host.size());
  }
  cuda::copy_to_device(d.t.data(), staging.data(), staging.size());
  return d;
}
inline DevTensor upload_i32(const std::vector<int32_t>& host, const std::vector<int64_t>& shape) {
  DevTensor d(DType::I32, shape);
  cuda::copy_to_device(d.t.data(), host.data(), host.size() * sizeof(int32_t));
  return d;
}

// A device tensor → float values (ints converted exactly).
inline std::vector<float> download(const Tensor& t) {
  std::vector<char> staging(t.nbytes());
  cuda::copy_to_host(staging.data(), t.data(), staging.size());
  std::vector<float> out(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::I32) {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(reinterpret_cast<int32_t*>(staging.data())[i]);
  } else {
    convert_to_f32(t.dtype(), staging.data(), out.data(), out.size());
  }
  return out;
}
inline std::vector<int32_t> download_i32(const Tensor& t) {
  std::vector<int32_t> out(static_cast<size_t>(t.numel()));
  cuda::copy_to_host(out.data(), t.data(), out.size() * sizeof(int32_t));
  return out;
}

// Fills a device tensor with a value no kernel writes: NaN for floats, 0x7b7b7b7b for ints.
inline void poison(const Tensor& t) {
  DSV4_CUDA_CHECK(cudaMemset(t.data(), t.dtype() == DType::I32 ? 0x7b : 0xff, t.nbytes()));
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());  // the memset runs on the legacy stream, the ops on another
}

inline std::vector<float> random_vec(std::mt19937& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}
inline std::vector<float> round_bf16(std::vector<float> v) {
  for (float& x : v) x = round_to_bf16(x);
  return v;
}
// Values as a device tensor of `dtype` will hold them.
inline std::vector<float> as_stored(const std::vector<float>& v, DType dtype) {
  return dtype == DType::BF16 ? round_bf16(v) : v;
}

inline Tensor host_view(std::vector<float>& v, const std::vector<int64_t>& shape) {
  return Tensor(v.data(), DType::F32, shape, Device::kCPU);
}
inline Tensor host_view_i32(std::vector<int32_t>& v, const std::vector<int64_t>& shape) {
  return Tensor(v.data(), DType::I32, shape, Device::kCPU);
}

// Every value finite (a NaN means an unwritten, poisoned element).
inline bool all_written(const std::vector<float>& v, std::string* where) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      *where = "element " + std::to_string(i) + " = " + std::to_string(v[i]);
      return false;
    }
  }
  return true;
}

// max |a - b| / max |b|
inline double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::fabs(static_cast<double>(b[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

#define DSV4_EXPECT_CLOSE(got, want, tol, what)                                               \
  do {                                                                                        \
    std::string where_;                                                                       \
    ASSERT_TRUE(::dsv4::test::all_written(got, &where_)) << what << ": unwritten " << where_; \
    ASSERT_EQ((got).size(), (want).size()) << what;                                           \
    const double err_ = ::dsv4::test::rel_error(got, want);                                   \
    std::printf("  %-50s rel err %.3g\n", std::string(what).c_str(), err_);                   \
    EXPECT_LE(err_, tol) << what;                                                             \
  } while (0)

// The BatchMeta of a batch described by chunks, on the host and on the device.
struct TestBatch {
  struct Chunk {
    int32_t slot, start, len;
  };
  std::vector<int32_t> ids, pos, slot, start, end;
  DevTensor d_ids, d_pos, d_slot, d_start, d_end;

  // Chunks in order, then `padding` rows (slot -1, position 0, empty range).
  TestBatch(const std::vector<Chunk>& chunks, int padding, int32_t vocab, std::mt19937& rng) {
    std::uniform_int_distribution<int32_t> tok(0, vocab - 1);
    for (const Chunk& c : chunks) {
      for (int32_t i = 0; i < c.len; ++i) {
        ids.push_back(tok(rng));
        pos.push_back(c.start + i);
        slot.push_back(c.slot);
        start.push_back(c.start);
        end.push_back(c.start + c.len);
      }
    }
    for (int i = 0; i < padding; ++i) {
      ids.push_back(0);
      pos.push_back(0);
      slot.push_back(-1);
      start.push_back(0);
      end.push_back(0);
    }
    const int64_t T = static_cast<int64_t>(ids.size());
    d_ids = upload_i32(ids, {T});
    d_pos = upload_i32(pos, {T});
    d_slot = upload_i32(slot, {T});
    d_start = upload_i32(start, {T});
    d_end = upload_i32(end, {T});
  }
  int64_t size() const { return static_cast<int64_t>(ids.size()); }
  BatchMeta host() {
    const int64_t T = size();
    return {host_view_i32(ids, {T}),   host_view_i32(pos, {T}), host_view_i32(slot, {T}),
            host_view_i32(start, {T}), host_view_i32(end, {T}), T};
  }
  BatchMeta device() const { return {d_ids.t, d_pos.t, d_slot.t, d_start.t, d_end.t, size()}; }
};

// Top-k selections (indexer tests): exact, except where two entries' double-precision scores are within 1e-4 of the
// largest (a near-tie that fp32 rounding may order either way): counted and reported.
inline void check_selection(const std::vector<int32_t>& got, const std::vector<int32_t>& want,
                            const std::vector<std::vector<double>>& scores, int64_t topk, const std::string& what) {
  int near_ties = 0;
  for (size_t t = 0; t < scores.size(); ++t) {
    double top = 0;
    for (double s : scores[t]) top = std::max(top, std::fabs(s));
    for (int64_t k = 0; k < topk; ++k) {
      const int32_t g = got[t * topk + k], w = want[t * topk + k];
      if (g == w) continue;
      ASSERT_TRUE(g >= 0 && w >= 0 && g < static_cast<int32_t>(scores[t].size()) &&
                  w < static_cast<int32_t>(scores[t].size()))
          << what << ": token " << t << " rank " << k << ": got " << g << ", want " << w;
      const double gap = std::fabs(scores[t][g] - scores[t][w]);
      EXPECT_LE(gap, 1e-4 * top) << what << ": token " << t << " rank " << k << " selects " << g << " instead of " << w
                                 << " (score gap " << gap << " of " << top << ")";
      ++near_ties;
    }
  }
  std::printf("  %-50s %d near-tie swaps\n", what.c_str(), near_ties);
}

// A YaRN rope table on both sides (host and device views of the same inverse frequencies).
struct RopePair {
  std::vector<float> inv;
  DevTensor d_inv;
  RopeTable cpu, gpu;
  explicit RopePair(int64_t rope_dim) {
    RopeParams p;
    p.type = RopeType::kYarn;
    p.theta = 160000;
    p.factor = 4;
    p.original_max_position_embeddings = 64;
    inv = rope_inv_freq(p, rope_dim);
    d_inv = upload(inv, DType::F32, {rope_dim / 2});
    cpu = {test::host_view(inv, {rope_dim / 2}), 1.0f, rope_dim};
    gpu = {d_inv.t, 1.0f, rope_dim};
  }
};

}  // namespace dsv4::test
