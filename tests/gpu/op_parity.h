// Table-driven CPU-vs-CUDA op parity: a case names its inputs (device dtype, shape, values), its outputs (device
// dtype, shape, tolerance, or the input it overwrites) and one call of the op that serves both backends (the ops
// dispatch on the tensors' device). The harness runs the call on the CPU reference over exactly the values the
// device holds (bf16-rounded where the device keeps bf16), then on the device with every output poisoned, and
// checks every element: written, and within the tolerance (0: bit-exact; ints always exact). Adding an op to the
// parity suite is adding a case (tests/gpu/cuda_op_parity_test.cu).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "cuda_test_util.h"

namespace dsv4::test::parity {

struct Operand {
  DType dtype = DType::F32;  // on the device; the CPU reference gets F32 (I32 for I32)
  std::vector<int64_t> shape;
  std::vector<float> values;  // inputs only; ints as exact floats
  double tol = 0.0;           // outputs only: max |got - want| / max |want|; 0 = exact
  int in_place_of = -1;       // outputs only: the op overwrites input k (the output is that input afterwards)
};

inline Operand input(DType dtype, std::vector<int64_t> shape, std::vector<float> values) {
  return Operand{dtype, std::move(shape), std::move(values), 0.0, -1};
}
inline Operand output(DType dtype, std::vector<int64_t> shape, double tol) {
  return Operand{dtype, std::move(shape), {}, tol, -1};
}
inline Operand in_place(int input_index, double tol) { return Operand{DType::F32, {}, {}, tol, input_index}; }

using OpCall = std::function<void(ExecContext&, const std::vector<Tensor>& in, const std::vector<Tensor>& out)>;

struct OpCase {
  std::string name;
  std::vector<Operand> in, out;
  OpCall call;
};

namespace detail {

inline int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

// One host operand: f32 values (or i32) and the view the CPU reference gets.
struct HostOperand {
  std::vector<float> f;
  std::vector<int32_t> i;
  Tensor view;
  HostOperand(DType device_dtype, const std::vector<int64_t>& shape, const std::vector<float>& values) {
    if (device_dtype == DType::I32) {
      i.resize(values.size());
      for (size_t k = 0; k < values.size(); ++k) i[k] = static_cast<int32_t>(values[k]);
      view = Tensor(i.data(), DType::I32, shape, Device::kCPU);
    } else {
      f = as_stored(values, device_dtype);
      view = Tensor(f.data(), DType::F32, shape, Device::kCPU);
    }
  }
  std::vector<float> as_floats() const {
    if (!i.empty() || view.dtype() == DType::I32) return std::vector<float>(i.begin(), i.end());
    return f;
  }
};

}  // namespace detail

// Runs one case on the CPU and on `dev` (a CUDA DeviceEnv) and checks every output.
inline void run(DeviceEnv& dev, const OpCase& c) {
  SCOPED_TRACE(c.name);
  for (const Operand& o : c.in) ASSERT_EQ(detail::numel(o.shape), static_cast<int64_t>(o.values.size())) << c.name;
  // CPU reference.
  std::vector<detail::HostOperand> host_in, host_out;
  host_in.reserve(c.in.size());
  host_out.reserve(c.out.size());
  for (const Operand& o : c.in) host_in.emplace_back(o.dtype, o.shape, o.values);
  for (const Operand& o : c.out) {
    if (o.in_place_of >= 0) {
      host_out.emplace_back(DType::F32, std::vector<int64_t>{0}, std::vector<float>{});  // unused: aliases the input
    } else {
      host_out.emplace_back(o.dtype, o.shape, std::vector<float>(static_cast<size_t>(detail::numel(o.shape)), 0.0f));
    }
  }
  std::vector<Tensor> cpu_in, cpu_out;
  for (const auto& h : host_in) cpu_in.push_back(h.view);
  for (size_t k = 0; k < c.out.size(); ++k) {
    const int src = c.out[k].in_place_of;
    cpu_out.push_back(src >= 0 ? host_in[static_cast<size_t>(src)].view : host_out[k].view);
  }
  ExecContext cpu;
  c.call(cpu, cpu_in, cpu_out);
  // The device, outputs poisoned.
  std::vector<DevTensor> dev_in, dev_out;
  dev_in.reserve(c.in.size());
  dev_out.reserve(c.out.size());
  for (const Operand& o : c.in) dev_in.push_back(upload(as_stored(o.values, o.dtype), o.dtype, o.shape));
  for (const Operand& o : c.out) dev_out.push_back(o.in_place_of >= 0 ? DevTensor() : DevTensor(o.dtype, o.shape));
  std::vector<Tensor> gpu_in, gpu_out;
  for (const auto& d : dev_in) gpu_in.push_back(d.t);
  for (size_t k = 0; k < c.out.size(); ++k) {
    const int src = c.out[k].in_place_of;
    if (src < 0) poison(dev_out[k].t);
    gpu_out.push_back(src >= 0 ? dev_in[static_cast<size_t>(src)].t : dev_out[k].t);
  }
  dev.scratch().reset();
  c.call(dev.ctx, gpu_in, gpu_out);
  dev.sync();
  for (size_t k = 0; k < c.out.size(); ++k) {
    const std::string what = str_cat(c.name, ": output ", k);
    const int src = c.out[k].in_place_of;
    const std::vector<float> want = src >= 0 ? host_in[static_cast<size_t>(src)].as_floats() : host_out[k].as_floats();
    if (gpu_out[k].dtype() == DType::I32) {
      const std::vector<int32_t> got = download_i32(gpu_out[k]);
      ASSERT_EQ(got.size(), want.size()) << what;
      for (size_t e = 0; e < got.size(); ++e) {
        ASSERT_EQ(static_cast<float>(got[e]), want[e]) << what << " element " << e;
      }
    } else {
      const std::vector<float> got = download(gpu_out[k]);
      DSV4_EXPECT_CLOSE(got, want, c.out[k].tol, what);
    }
  }
}

}  // namespace dsv4::test::parity
