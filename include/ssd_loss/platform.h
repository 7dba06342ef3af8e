// Compiler portability macros of the core, shared by the CPU and CUDA builds.
#pragma once

#if defined(__CUDACC__)
#define SSD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SSD_HOST_DEVICE inline
#endif
#define SSD_RESTRICT __restrict__

// The CPU's hot loops are compiled twice, for AVX2 and for the x86-64 baseline, and the loader
// picks one per machine (no -march=native in distributed builds). Both give the same bits: no FMA
// is enabled (and -ffp-contract=off), and no floating-point reduction is reordered.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__CUDACC__)
#define SSD_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SSD_CPU_CLONES
#endif
#define SSD_ALWAYS_INLINE inline __attribute__((always_inline))
