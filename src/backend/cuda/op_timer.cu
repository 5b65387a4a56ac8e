// Event pairs around the timed ops; summed once at stop (no synchronisation while the forwards run).
#include <mutex>
#include <vector>

#include "backend/cuda/common.cuh"
#include "backend/cuda/op_timer.h"

namespace dsv4::cuda {
namespace {

struct Pair {
  cudaEvent_t begin = nullptr, end = nullptr;
  TimedOp op = TimedOp::kIndexer;
};

struct State {
  std::mutex mu;
  bool on = false;
  std::vector<Pair> pairs;  // recorded since start
  bool open = false;        // a begin without its end yet
};

State& state() {
  static State s;
  return s;
}

bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream, &st) != cudaSuccess || st != cudaStreamCaptureStatusNone;
}

}  // namespace

void op_timing_start() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.on = true;
  s.open = false;
  s.pairs.clear();
}

void op_timing_begin(ExecContext& ctx, TimedOp op) {
  if (ctx.measuring) return;  // a measuring pass runs nothing to time
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.on || s.open || capturing(stream_of(ctx))) return;
  Pair p;
  p.op = op;
  throw_if_error(cuda_status(cudaEventCreate(&p.begin), "cudaEventCreate"));
  throw_if_error(cuda_status(cudaEventCreate(&p.end), "cudaEventCreate"));
  throw_if_error(cuda_status(cudaEventRecord(p.begin, stream_of(ctx)), "cudaEventRecord"));
  s.pairs.push_back(p);
  s.open = true;
}

void op_timing_end(ExecContext& ctx, TimedOp op) {
  if (ctx.measuring) return;  // a measuring pass runs nothing to time
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.on || !s.open || s.pairs.back().op != op) return;
  throw_if_error(cuda_status(cudaEventRecord(s.pairs.back().end, stream_of(ctx)), "cudaEventRecord"));
  s.open = false;
}

ops::OpTimes op_timing_stop() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  ops::OpTimes t;
  for (const Pair& p : s.pairs) {
    float ms = 0;
    if (!s.open || &p != &s.pairs.back()) {
      throw_if_error(cuda_status(cudaEventSynchronize(p.end), "cudaEventSynchronize"));
      throw_if_error(cuda_status(cudaEventElapsedTime(&ms, p.begin, p.end), "cudaEventElapsedTime"));
      (p.op == TimedOp::kIndexer ? t.indexer_seconds : t.attention_seconds) += ms * 1e-3;
      ++t.calls;
    }
    cudaEventDestroy(p.begin);
    cudaEventDestroy(p.end);
  }
  s.pairs.clear();
  s.on = false;
  s.open = false;
  return t;
}

}  // namespace dsv4::cuda
