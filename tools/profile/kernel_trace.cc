// A kernel timeline where Nsight Systems is unavailable (the GPU machine has ncu but no nsys): loaded with
//   LD_PRELOAD=libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=trace.csv PROGRAM ...
// it records every kernel the program runs through CUPTI's activity API — CUDA-graph nodes one by one, with their
// graph id and node id — and writes one CSV row per kernel at exit: device start and end (ns), stream, graph,
// node, correlation id, grid, block, name. tools/profile/kernel_timeline.py turns it into per-kernel costs inside a
// replayed step (start-to-next-start, which counts the gaps and PDL overlap that ncu's serialised durations miss).
// Without DSV4_KERNEL_TRACE the library does nothing. Built by scripts/gpu/stage.sh (host code only, CUPTI from the
// CUDA toolkit).
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace {

std::FILE* g_out = nullptr;
std::mutex g_mu;
constexpr size_t kBufferBytes = 16u << 20;

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = kBufferBytes;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  std::lock_guard<std::mutex> lock(g_mu);
  CUpti_Activity* rec = nullptr;
  while (g_out != nullptr && cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
    std::fprintf(g_out, "%llu,%llu,%u,%u,%llu,%u,%d,%d,%d,%d,\"%s\"\n", static_cast<unsigned long long>(k->start),
                 static_cast<unsigned long long>(k->end), k->streamId, k->graphId,
                 static_cast<unsigned long long>(k->graphNodeId), k->correlationId, k->gridX, k->gridY, k->gridZ,
                 k->blockX, k->name != nullptr ? k->name : "?");
  }
  size_t dropped = 0;
  if (cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped) == CUPTI_SUCCESS && dropped > 0 && g_out != nullptr) {
    std::fprintf(stderr, "[kernel_trace] %zu records dropped\n", dropped);
  }
  std::free(buffer);
}

void flush() {
  if (g_out == nullptr) return;
  cuptiActivityFlushAll(1);
  std::lock_guard<std::mutex> lock(g_mu);
  std::fclose(g_out);
  g_out = nullptr;
}

__attribute__((constructor)) void start() {
  const char* path = std::getenv("DSV4_KERNEL_TRACE");
  if (path == nullptr || *path == '\0') return;
  g_out = std::fopen(path, "w");
  if (g_out == nullptr) {
    std::fprintf(stderr, "[kernel_trace] cannot write %s\n", path);
    return;
  }
  std::fprintf(g_out, "start_ns,end_ns,stream,graph,node,correlation,grid_x,grid_y,grid_z,block_x,name\n");
  if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
    std::fprintf(stderr, "[kernel_trace] CUPTI refused the kernel activity: no trace\n");
    std::fclose(g_out);
    g_out = nullptr;
    return;
  }
  std::atexit(flush);
}

}  // namespace
