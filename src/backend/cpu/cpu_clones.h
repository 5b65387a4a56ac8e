// The function attribute of the CPU backend's hot elementwise loops: one clone per x86-64 level (AVX-512, AVX2,
// baseline), picked at load time by the CPU's features. The files that use it are compiled with -ffp-contract=off
// (CMakeLists.txt), so no clone fuses a multiply into an add: every clone gives the baseline loop's bits, except
// where a loop says otherwise (`omp simd` reductions and libmvec's exp, vector_exp.h).
#pragma once

// -fsanitize=thread: GCC says so with __SANITIZE_THREAD__, clang 14 only through __has_feature.
#if defined(__SANITIZE_THREAD__)
#define DSV4_THREAD_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DSV4_THREAD_SANITIZER 1
#endif
#endif

#if defined(DSV4_THREAD_SANITIZER)
// ThreadSanitizer instruments the clones' ifunc resolvers, which the dynamic loader runs before its runtime is up (a
// crash while relocating libdsv4.so): a TSAN build keeps the baseline loops only.
#define DSV4_CPU_CLONES
#else
#define DSV4_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
