// glibc's vector exp (libmvec): <math.h> declares its SIMD variants under -ffast-math only; declared here, GCC calls
// them from `omp simd` loops in files compiled with -fno-math-errno (CMakeLists.txt), on the lanes of the
// function's target (target_clones: AVX-512 / AVX2 where the CPU has them). <= 4 ulp; a loop's remainder takes the
// scalar exp, so a value's result depends on its position in the loop, never on the rest of the data.
#pragma once

extern "C" {
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
float expf(float);
}
