// CUDA MTP norm kernels against the CPU reference and a float64 formula, for every launch variant the
// kernel lab may pick; outputs are poisoned with NaN before each launch so unwritten elements fail.
#include <cuda_runtime.h>

#include <string>
#include <tuple>
#include <vector>

#include "backend/cpu/rms_norm.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/rms_norm.h"
#include "dsv4/dsv4.h"
#include "dsv4/ops/ops.h"
#include "gpu_test_util.h"
#include "unit/rms_norm_testing.h"

namespace dsv4 {
namespace {

using mtp_testing::element_tolerance;
using mtp_testing::MtpInputs;
using mtp_testing::random_mtp_inputs;
using mtp_testing::reference_mtp;
using mtp_testing::relative_error;
using mtp_testing::to_floats;
using mtp_testing::tolerance;

constexpr float kEps = 1e-6f;

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    DSV4_CUDA_CHECK(cudaMalloc(&ptr_, std::max<size_t>(bytes, 16)));
  }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  // cudaMemcpy/cudaMemset from pageable memory run on the legacy stream and may still be in flight when
  // they return; kernels run on non-blocking streams, so synchronise the device before using the data.
  void upload(const void* src) {
    DSV4_CUDA_CHECK(cudaMemcpy(ptr_, src, bytes_, cudaMemcpyHostToDevice));
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::vector<uint8_t> download() const {
    std::vector<uint8_t> out(bytes_);
    DSV4_CUDA_CHECK(cudaMemcpy(out.data(), ptr_, bytes_, cudaMemcpyDeviceToHost));
    return out;
  }
  // 0xff bytes are NaN in F32, BF16 and F16: any element a kernel leaves unwritten fails the checks.
  void poison() {
    DSV4_CUDA_CHECK(cudaMemset(ptr_, 0xff, bytes_));
    DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_;
};

struct DeviceMtp {
  explicit DeviceMtp(const MtpInputs& in)
      : es(dtype_size(in.dtype)),
        e(in.num_tokens * in.hidden * es),
        prev(in.num_tokens * in.hc * in.hidden * es),
        ew(in.hidden * es),
        hw(in.hidden * es),
        pos(in.num_tokens * sizeof(int64_t)),
        e_out(in.num_tokens * in.hidden * es),
        h_out(in.num_tokens * in.hc * in.hidden * es),
        eh_out(in.num_tokens * in.hc * 2 * in.hidden * es),
        head_out(in.num_tokens * in.hc * in.hidden * es) {
    e.upload(in.e.data());
    prev.upload(in.prev.data());
    ew.upload(in.enorm_w.data());
    hw.upload(in.hnorm_w.data());
    pos.upload(in.positions.data());
  }
  void poison_outputs() {
    e_out.poison();
    h_out.poison();
    eh_out.poison();
    head_out.poison();
  }
  size_t es;
  DeviceBuffer e, prev, ew, hw, pos, e_out, h_out, eh_out, head_out;
};

// Runs the three kernels with `config`; returns false when the (explicit) config does not fit this shape.
bool run_all(const MtpInputs& in, DeviceMtp& d, const cuda::RmsNormConfig* config, cudaStream_t stream) {
  const int64_t T = in.num_tokens, H = in.hidden, hc = in.hc;
  Status s =
      cuda::fused_mtp_input_rms_norm(d.e.get(), RowPositions{d.pos.get(), true}, d.prev.get(), d.ew.get(), d.hw.get(),
                                     d.e_out.get(), d.h_out.get(), T, H, hc, kEps, in.dtype, stream, config);
  if (config != nullptr && s.code() == StatusCode::kInvalidArgument) return false;
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  s = cuda::fused_mtp_input_rms_norm_eh(d.e.get(), RowPositions{d.pos.get(), true}, d.prev.get(), d.ew.get(),
                                        d.hw.get(), d.eh_out.get(), T, H, hc, kEps, in.dtype, stream, config);
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  s = cuda::rms_norm_rows(d.prev.get(), d.hw.get(), d.head_out.get(), T * hc, H, kEps, in.dtype, stream, config);
  EXPECT_TRUE(s.is_ok()) << s.to_string();
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  return true;
}

// CUDA output vs the CPU reference (one rounding apart at most) and vs float64 (the acceptance bound).
void expect_matches(const std::vector<uint8_t>& got, const std::vector<uint8_t>& cpu, const std::vector<double>& ref,
                    DType dtype, const std::string& what) {
  const size_t n = ref.size();
  const std::vector<float> g = to_floats(got.data(), n, dtype);
  const std::vector<float> c = to_floats(cpu.data(), n, dtype);
  EXPECT_LE(relative_error(g, ref), tolerance(dtype)) << what;
  int64_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!(std::fabs(g[i] - c[i]) <= element_tolerance(dtype, c[i]))) {  // NaN (unwritten) fails here
      if (bad++ < 5) ADD_FAILURE() << what << "[" << i << "]: cuda " << g[i] << " vs cpu " << c[i];
    }
  }
  EXPECT_EQ(bad, 0) << what;
}

// Every kernel instance the launchers can pick (both load flavours, weights with the row or late), under
// each grid policy: one block per tile, one resident wave, and a cap of 3 blocks that forces long loops
// over tiles.
std::vector<cuda::RmsNormConfig> all_configs() {
  using cuda::RmsNormKernel;
  using cuda::RmsNormTrigger;
  std::vector<cuda::RmsNormConfig> configs;
  configs.push_back({RmsNormKernel::kScalar, 0, 0, 0, false});
  const int shapes[][2] = {{1, 1}, {1, 2}, {2, 1}, {2, 2}, {4, 1}, {4, 2}, {8, 1}};
  for (const auto& [vpt, rows] : shapes) {
    for (int max_blocks : {-1, -2, 3}) {
      for (bool plain : {false, true}) configs.push_back({RmsNormKernel::kRegister, vpt, rows, max_blocks, plain});
      if (rows != 1) continue;
      for (bool plain : {false, true})
        configs.push_back({RmsNormKernel::kRegister, vpt, rows, max_blocks, plain, true});
    }
  }
  // Each PDL trigger placement (the heuristic's launch and the scalar kernel's).
  for (RmsNormTrigger trigger : {RmsNormTrigger::kAfterWait, RmsNormTrigger::kBeforeWait}) {
    configs.push_back({RmsNormKernel::kAuto, 0, 0, 0, false, false, trigger});
    configs.push_back({RmsNormKernel::kScalar, 0, 0, 0, false, false, trigger});
  }
  // The bulk kernel: every instance and ring size (one block per row; 3 blocks: rings that wrap many
  // times), each trigger.
  int n = 0;
  for (int vpt : {1, 2, 4, 8}) {
    for (int per_sm : {0, 1, 2, 4}) {  // 0: one block per row; else a resident grid
      for (int max_blocks : {0, -1, 3}) {
        const auto trigger = static_cast<RmsNormTrigger>(1 + n++ % 3);
        configs.push_back({RmsNormKernel::kBulk, vpt, 0, max_blocks, false, false, trigger, per_sm});
        if (per_sm == 0) {  // contiguous groups of rows per block: 3, and 32 (rings that wrap at large H)
          for (int rows : {3, 32}) {
            configs.push_back({RmsNormKernel::kBulk, vpt, rows, max_blocks, false, false, trigger, 0});
          }
        }
      }
    }
  }
  // The bulk kernel's late instances (the row read twice from shared memory, at most 128 threads): one
  // block per row, contiguous groups, a resident grid, and 3 blocks whose rings wrap many times.
  for (int vpt : {4, 8}) {
    for (int per_sm : {0, 2}) {
      for (int max_blocks : {0, 3}) {
        const auto trigger = static_cast<RmsNormTrigger>(1 + n++ % 3);
        configs.push_back({RmsNormKernel::kBulk, vpt, 0, max_blocks, false, true, trigger, per_sm});
        if (per_sm == 0) configs.push_back({RmsNormKernel::kBulk, vpt, 3, max_blocks, false, true, trigger, 0});
      }
    }
  }
  return configs;
}

using Shape = std::tuple<int64_t, int64_t, int64_t>;  // T, H, hc

class MtpNormCuda : public ::testing::TestWithParam<DType> {};

TEST_P(MtpNormCuda, EveryLaunchVariantMatchesReference) {
  DSV4_REQUIRE_GPU();
  const DType dtype = GetParam();
  const std::vector<cuda::RmsNormConfig> configs = all_configs();
  for (const auto& [T, H, hc] :
       {Shape{1, 4096, 4}, Shape{2, 7168, 4}, Shape{17, 2568, 4}, Shape{5, 7, 4}, Shape{4, 4097, 2}, Shape{3, 1, 3},
        Shape{9, 1024, 1}, Shape{33, 4096, 2}, Shape{130, 256, 4}, Shape{6, 16384, 4}}) {
    SCOPED_TRACE(::testing::Message() << dtype_name(dtype) << " T=" << T << " H=" << H << " hc=" << hc);
    const MtpInputs in = random_mtp_inputs(T, H, hc, dtype, static_cast<uint32_t>(T * 7919 + H * 31 + hc));
    const auto ref = reference_mtp(in, kEps);
    const size_t es = dtype_size(dtype), row = H * es;
    std::vector<uint8_t> cpu_e(T * row), cpu_h(T * hc * row), cpu_head(T * hc * row);
    cpu::fused_mtp_input_rms_norm(in.e.data(), RowPositions{in.positions.data(), true}, in.prev.data(),
                                  in.enorm_w.data(), in.hnorm_w.data(), cpu_e.data(), cpu_h.data(), T, H, hc, kEps,
                                  dtype);
    cpu::rms_norm_rows(in.prev.data(), in.hnorm_w.data(), cpu_head.data(), T * hc, H, kEps, dtype);
    DeviceMtp d(in);
    int ran = 0;
    for (size_t c = 0; c <= configs.size(); ++c) {
      const cuda::RmsNormConfig* config = c == 0 ? nullptr : &configs[c - 1];
      SCOPED_TRACE(::testing::Message() << "config " << c);
      d.poison_outputs();
      if (!run_all(in, d, config, nullptr)) continue;
      ++ran;
      const std::vector<uint8_t> e_out = d.e_out.download(), h_out = d.h_out.download();
      const std::vector<uint8_t> eh_out = d.eh_out.download(), head = d.head_out.download();
      expect_matches(e_out, cpu_e, ref.enorm, dtype, "enorm");
      expect_matches(h_out, cpu_h, ref.hnorm, dtype, "hnorm");
      expect_matches(head, cpu_head, ref.hnorm, dtype, "shared head");
      const std::vector<float> e_f = to_floats(e_out.data(), T * H, dtype);
      for (int64_t t = 0; t < T; ++t) {
        if (in.positions[t] != 0) continue;
        for (int64_t i = 0; i < H; ++i) ASSERT_EQ(e_f[t * H + i], 0.0f) << "position-0 row " << t;
      }
      // The eh layout holds exactly the bytes of the separate outputs (same kernel, same math).
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t s = 0; s < hc; ++s) {
          const uint8_t* slot = eh_out.data() + (t * hc + s) * 2 * row;
          ASSERT_EQ(std::memcmp(slot, h_out.data() + (t * hc + s) * row, row), 0) << "h half " << t << "," << s;
          ASSERT_EQ(std::memcmp(slot + row, e_out.data() + t * row, row), 0) << "e half " << t << "," << s;
        }
      }
      if (::testing::Test::HasFailure()) return;
    }
    EXPECT_GE(ran, 2) << "too few launch variants fit this shape";  // at least the heuristic and scalar
  }
}

INSTANTIATE_TEST_SUITE_P(DTypes, MtpNormCuda, ::testing::Values(DType::F32, DType::BF16, DType::F16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(MtpNormCudaEdge, ZeroTokensLaunchNothing) {
  DSV4_REQUIRE_GPU();
  DeviceBuffer out(256);
  out.poison();
  ASSERT_TRUE(cuda::fused_mtp_input_rms_norm(nullptr, RowPositions{}, nullptr, nullptr, nullptr, out.get(), out.get(),
                                             0, 8, 4, kEps, DType::BF16, nullptr)
                  .is_ok());
  ASSERT_TRUE(cuda::fused_mtp_input_rms_norm_eh(nullptr, RowPositions{}, nullptr, nullptr, nullptr, out.get(), 0, 8, 4,
                                                kEps, DType::F32, nullptr)
                  .is_ok());
  ASSERT_TRUE(cuda::rms_norm_rows(nullptr, nullptr, out.get(), 0, 8, kEps, DType::F16, nullptr).is_ok());
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  for (uint8_t b : out.download()) ASSERT_EQ(b, 0xff);
}

TEST(MtpNormCudaEdge, GraphReplayReadsNewInputs) {
  DSV4_REQUIRE_GPU();
  const int64_t T = 8, H = 4096, hc = 4;
  MtpInputs in = random_mtp_inputs(T, H, hc, DType::BF16, 99);
  DeviceMtp d(in);
  cudaStream_t stream;
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  ASSERT_TRUE(cuda::fused_mtp_input_rms_norm_eh(d.e.get(), RowPositions{d.pos.get(), true}, d.prev.get(), d.ew.get(),
                                                d.hw.get(), d.eh_out.get(), T, H, hc, kEps, DType::BF16, stream)
                  .is_ok());
  DSV4_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  // New inputs at the same addresses, then replay: the graph must compute on them.
  in = random_mtp_inputs(T, H, hc, DType::BF16, 100);
  d.e.upload(in.e.data());
  d.ew.upload(in.enorm_w.data());
  d.hw.upload(in.hnorm_w.data());
  d.prev.upload(in.prev.data());
  d.pos.upload(in.positions.data());
  d.eh_out.poison();
  DSV4_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<uint8_t> cpu(T * hc * 2 * H * 2);
  cpu::fused_mtp_input_rms_norm_eh(in.e.data(), RowPositions{in.positions.data(), true}, in.prev.data(),
                                   in.enorm_w.data(), in.hnorm_w.data(), cpu.data(), T, H, hc, kEps, DType::BF16);
  const auto ref = reference_mtp(in, kEps);
  std::vector<double> ref_eh(T * hc * 2 * H);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t s = 0; s < hc; ++s) {
      for (int64_t i = 0; i < H; ++i) {
        ref_eh[((t * hc + s) * 2) * H + i] = ref.hnorm[(t * hc + s) * H + i];
        ref_eh[((t * hc + s) * 2 + 1) * H + i] = ref.enorm[t * H + i];
      }
    }
  }
  expect_matches(d.eh_out.download(), cpu, ref_eh, DType::BF16, "graph replay eh");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

// PDL is on by default: captured back-to-back launches are joined by a programmatic edge, and a launch
// that reads the previous one's output still sees all of it (griddepcontrol.wait waits for the whole
// grid, however early that grid let its dependents launch). The chain is poison -> MTP norm -> shared-head
// norm of the MTP norm's h output, replayed several times.
TEST(MtpNormCudaEdge, ProgrammaticLaunchChainInGraph) {
  DSV4_REQUIRE_GPU();
  const int64_t T = 64, H = 4096, hc = 4;
  const MtpInputs in = random_mtp_inputs(T, H, hc, DType::BF16, 7);
  DeviceMtp d(in);
  cudaStream_t stream;
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  DSV4_CUDA_CHECK(cudaMemsetAsync(d.h_out.get(), 0xff, T * hc * H * 2, stream));
  DSV4_CUDA_CHECK(cudaMemsetAsync(d.head_out.get(), 0xff, T * hc * H * 2, stream));
  ASSERT_TRUE(cuda::fused_mtp_input_rms_norm(d.e.get(), RowPositions{d.pos.get(), true}, d.prev.get(), d.ew.get(),
                                             d.hw.get(), d.e_out.get(), d.h_out.get(), T, H, hc, kEps, DType::BF16,
                                             stream)
                  .is_ok());
  ASSERT_TRUE(
      cuda::rms_norm_rows(d.h_out.get(), d.ew.get(), d.head_out.get(), T * hc, H, kEps, DType::BF16, stream).is_ok());
  DSV4_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  size_t num_edges = 0;
  DSV4_CUDA_CHECK(cudaGraphGetEdges(graph, nullptr, nullptr, nullptr, &num_edges));
  std::vector<cudaGraphNode_t> from(num_edges), to(num_edges);
  std::vector<cudaGraphEdgeData> edges(num_edges);
  DSV4_CUDA_CHECK(cudaGraphGetEdges(graph, from.data(), to.data(), edges.data(), &num_edges));
  int programmatic = 0;
  for (const cudaGraphEdgeData& e : edges) programmatic += e.type == cudaGraphDependencyTypeProgrammatic;
  EXPECT_GE(programmatic, 1) << "no programmatic norm -> norm edge (with DSV4_PDL=0 this fails)";
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 20; ++replay) DSV4_CUDA_CHECK(cudaGraphLaunch(exec, stream));
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  // The second norm must have read the first one's complete output: compare with the CPU norm of it.
  const std::vector<uint8_t> h_out = d.h_out.download(), head = d.head_out.download();
  std::vector<uint8_t> cpu_head(head.size());
  cpu::rms_norm_rows(h_out.data(), in.enorm_w.data(), cpu_head.data(), T * hc, H, kEps, DType::BF16);
  const std::vector<float> g = to_floats(head.data(), T * hc * H, DType::BF16);
  const std::vector<float> c = to_floats(cpu_head.data(), T * hc * H, DType::BF16);
  int64_t bad = 0;
  for (size_t i = 0; i < g.size(); ++i) bad += !(std::fabs(g[i] - c[i]) <= element_tolerance(DType::BF16, c[i]));
  EXPECT_EQ(bad, 0) << "the chained norm read an incomplete (poisoned) input";
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
}

TEST(MtpNormCudaEdge, OpsDispatchToCuda) {
  DSV4_REQUIRE_GPU();
  const int64_t T = 5, H = 7168, hc = 4;
  const MtpInputs in = random_mtp_inputs(T, H, hc, DType::BF16, 3);
  DeviceMtp d(in);
  d.poison_outputs();
  // The engine's positions are int32.
  const std::vector<int32_t> positions32(in.positions.begin(), in.positions.end());
  DeviceBuffer pos32(T * sizeof(int32_t));
  pos32.upload(positions32.data());
  ExecContext ctx;
  ctx.device = Device::kCUDA;
  const Device g = Device::kCUDA;
  ops::fused_mtp_input_rms_norm(ctx, Tensor(d.e_out.get(), DType::BF16, {T, H}, g),
                                Tensor(d.h_out.get(), DType::BF16, {T, hc, H}, g),
                                Tensor(d.e.get(), DType::BF16, {T, H}, g), Tensor(pos32.get(), DType::I32, {T}, g),
                                Tensor(d.prev.get(), DType::BF16, {T, hc * H}, g),
                                Tensor(d.ew.get(), DType::BF16, {H}, g), Tensor(d.hw.get(), DType::BF16, {H}, g), kEps);
  // The shared head's norm is the plain op (rows of 14 KB: the row kernels' path).
  ops::rms_norm(ctx, Tensor(d.head_out.get(), DType::BF16, {T * hc, H}, g),
                Tensor(d.prev.get(), DType::BF16, {T * hc, H}, g), Tensor(d.hw.get(), DType::BF16, {H}, g), kEps);
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto ref = reference_mtp(in, kEps);
  std::vector<uint8_t> cpu_e(T * H * 2), cpu_h(T * hc * H * 2);
  cpu::fused_mtp_input_rms_norm(in.e.data(), RowPositions{in.positions.data(), true}, in.prev.data(), in.enorm_w.data(),
                                in.hnorm_w.data(), cpu_e.data(), cpu_h.data(), T, H, hc, kEps, DType::BF16);
  expect_matches(d.e_out.download(), cpu_e, ref.enorm, DType::BF16, "ops enorm");
  expect_matches(d.h_out.download(), cpu_h, ref.hnorm, DType::BF16, "ops hnorm");
  expect_matches(d.head_out.download(), cpu_h, ref.hnorm, DType::BF16, "ops shared head");
}

TEST(MtpNormCudaEdge, CApiRunsAndRejectsHostMemory) {
  DSV4_REQUIRE_GPU();
  const int64_t T = 3, H = 2568, hc = 4;
  const MtpInputs in = random_mtp_inputs(T, H, hc, DType::F32, 21);
  DeviceMtp d(in);
  d.poison_outputs();
  ASSERT_EQ(dsv4_fused_mtp_input_rms_norm(d.e.get(), d.pos.as<int64_t>(), d.prev.get(), d.ew.get(), d.hw.get(),
                                          d.e_out.get(), d.h_out.get(), T, H, hc, kEps, DSV4_DTYPE_F32, nullptr),
            DSV4_OK)
      << dsv4_last_error();
  ASSERT_EQ(dsv4_fused_mtp_input_rms_norm_eh(d.e.get(), d.pos.as<int64_t>(), d.prev.get(), d.ew.get(), d.hw.get(),
                                             d.eh_out.get(), T, H, hc, kEps, DSV4_DTYPE_F32, nullptr),
            DSV4_OK)
      << dsv4_last_error();
  ASSERT_EQ(dsv4_mtp_shared_head_rms_norm(d.prev.get(), d.hw.get(), d.head_out.get(), T * hc, H, kEps, DSV4_DTYPE_F32,
                                          nullptr),
            DSV4_OK)
      << dsv4_last_error();
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  const auto ref = reference_mtp(in, kEps);
  std::vector<uint8_t> cpu_e(T * H * 4), cpu_h(T * hc * H * 4);
  cpu::fused_mtp_input_rms_norm(in.e.data(), RowPositions{in.positions.data(), true}, in.prev.data(), in.enorm_w.data(),
                                in.hnorm_w.data(), cpu_e.data(), cpu_h.data(), T, H, hc, kEps, DType::F32);
  expect_matches(d.e_out.download(), cpu_e, ref.enorm, DType::F32, "capi enorm");
  expect_matches(d.h_out.download(), cpu_h, ref.hnorm, DType::F32, "capi hnorm");
  expect_matches(d.head_out.download(), cpu_h, ref.hnorm, DType::F32, "capi shared head");

  // Host memory where device memory is needed: an error code, and the context stays usable.
  std::vector<float> host(T * hc * H);
  EXPECT_EQ(dsv4_fused_mtp_input_rms_norm(host.data(), d.pos.as<int64_t>(), d.prev.get(), d.ew.get(), d.hw.get(),
                                          d.e_out.get(), d.h_out.get(), T, H, hc, kEps, DSV4_DTYPE_F32, nullptr),
            DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(dsv4_last_error()).find("inputs_embeds"), std::string::npos) << dsv4_last_error();
  EXPECT_EQ(dsv4_mtp_shared_head_rms_norm(d.prev.get(), d.hw.get(), host.data(), T, H, kEps, DSV4_DTYPE_F32, nullptr),
            DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(dsv4_mtp_shared_head_rms_norm(d.prev.get(), d.hw.get(), d.head_out.get(), T, H, kEps, 9, nullptr),
            DSV4_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace dsv4
