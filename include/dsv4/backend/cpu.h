// Process-wide settings of the CPU backend.
#pragma once

namespace dsv4::cpu {

// Threads of the CPU backend, its OpenMP loops and OpenBLAS's matrix products alike (n >= 1; throws
// kInvalidArgument otherwise). The default: OpenMP one per core, OpenBLAS one (backend/cpu/blas.cc says why).
void set_threads(int n);

}  // namespace dsv4::cpu
