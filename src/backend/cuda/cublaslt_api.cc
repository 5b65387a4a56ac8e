#include "backend/cuda/cublaslt_api.h"

#include <dlfcn.h>

#include <string>
#include <vector>

#include "dsv4/core/status.h"

namespace dsv4::cuda {
namespace {

void* open_cublaslt() {
  const std::string name = "libcublasLt.so." + std::to_string(CUBLAS_VER_MAJOR);
  std::vector<std::string> candidates = {name};
#ifdef DSV4_CUDA_LIBRARY_DIR
  candidates.push_back(std::string(DSV4_CUDA_LIBRARY_DIR) + "/" + name);
#endif
  std::string errors;
  for (const std::string& c : candidates) {
    if (void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
    const char* e = dlerror();
    errors += "\n  " + c + ": " + (e != nullptr ? e : "not found");
  }
  fail(StatusCode::kCudaError, "cannot open cuBLASLt (", name, ", needed for CUDA matrix products):", errors);
}

template <typename F>
void bind(void* lib, F& fn, const char* symbol) {
  fn = reinterpret_cast<F>(dlsym(lib, symbol));
  DSV4_CHECK(fn != nullptr, kCudaError, "cuBLASLt has no ", symbol,
             " (a library older than the headers of the build?)");
}

CublasLtApi load() {
  void* lib = open_cublaslt();  // kept open for the life of the process
  CublasLtApi a{};
  bind(lib, a.Create, "cublasLtCreate");
  bind(lib, a.Destroy, "cublasLtDestroy");
  bind(lib, a.GetStatusName, "cublasLtGetStatusName");
  bind(lib, a.GetStatusString, "cublasLtGetStatusString");
  bind(lib, a.MatrixLayoutCreate, "cublasLtMatrixLayoutCreate");
  bind(lib, a.MatrixLayoutDestroy, "cublasLtMatrixLayoutDestroy");
  bind(lib, a.MatrixLayoutSetAttribute, "cublasLtMatrixLayoutSetAttribute");
  bind(lib, a.MatmulDescCreate, "cublasLtMatmulDescCreate");
  bind(lib, a.MatmulDescDestroy, "cublasLtMatmulDescDestroy");
  bind(lib, a.MatmulDescSetAttribute, "cublasLtMatmulDescSetAttribute");
  bind(lib, a.MatmulPreferenceCreate, "cublasLtMatmulPreferenceCreate");
  bind(lib, a.MatmulPreferenceDestroy, "cublasLtMatmulPreferenceDestroy");
  bind(lib, a.MatmulPreferenceSetAttribute, "cublasLtMatmulPreferenceSetAttribute");
  bind(lib, a.MatmulAlgoGetHeuristic, "cublasLtMatmulAlgoGetHeuristic");
  bind(lib, a.MatmulAlgoCheck, "cublasLtMatmulAlgoCheck");
  bind(lib, a.Matmul, "cublasLtMatmul");
  return a;
}

}  // namespace

const CublasLtApi& cublaslt() {
  static const CublasLtApi api = load();  // a failed load throws, and the next call tries again
  return api;
}

}  // namespace dsv4::cuda
