// cuBLASLt, opened at the first CUDA matrix product: libdsv4 does not link it, so a process that runs none (every
// CPU run, `dsv4 --help`) never loads it — its start-up alone took 0.08 s and ~200 MiB of the CUDA build's 0.09 s
// and 218 MiB `--help`. Calls go through the table: cublaslt().MatmulDescCreate(...).
#pragma once

#include <cublasLt.h>

namespace dsv4::cuda {

struct CublasLtApi {
  decltype(&cublasLtCreate) Create;
  decltype(&cublasLtDestroy) Destroy;
  decltype(&cublasLtGetStatusName) GetStatusName;
  decltype(&cublasLtGetStatusString) GetStatusString;
  decltype(&cublasLtMatrixLayoutCreate) MatrixLayoutCreate;
  decltype(&cublasLtMatrixLayoutDestroy) MatrixLayoutDestroy;
  decltype(&cublasLtMatrixLayoutSetAttribute) MatrixLayoutSetAttribute;
  decltype(&cublasLtMatmulDescCreate) MatmulDescCreate;
  decltype(&cublasLtMatmulDescDestroy) MatmulDescDestroy;
  decltype(&cublasLtMatmulDescSetAttribute) MatmulDescSetAttribute;
  decltype(&cublasLtMatmulPreferenceCreate) MatmulPreferenceCreate;
  decltype(&cublasLtMatmulPreferenceDestroy) MatmulPreferenceDestroy;
  decltype(&cublasLtMatmulPreferenceSetAttribute) MatmulPreferenceSetAttribute;
  decltype(&cublasLtMatmulAlgoGetHeuristic) MatmulAlgoGetHeuristic;
  decltype(&cublasLtMatmulAlgoCheck) MatmulAlgoCheck;
  decltype(&cublasLtMatmul) Matmul;
};

// The table, filled on the first call (thread-safe): libcublasLt.so.<major of the headers built against>, from the
// loader's search path, else the toolkit's library directory of the build. Fails with kCudaError naming the library
// and dlerror() when it cannot be opened or lacks a function.
const CublasLtApi& cublaslt();

}  // namespace dsv4::cuda
