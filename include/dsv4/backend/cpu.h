// Process-wide settings of the CPU backend.
#pragma once

namespace dsv4::cpu {

// Threads of the CPU backend's OpenMP loops (n >= 1; throws kInvalidArgument otherwise; default one per core).
// Matrix products run on the calling thread whatever n is (backend/cpu/blas.cc says why).
void set_threads(int n);

}  // namespace dsv4::cpu
