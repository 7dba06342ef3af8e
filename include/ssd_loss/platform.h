// Compiler portability macros of the core, shared by the CPU and CUDA builds.
#pragma once

// Always inlined on the host too: these helpers also take and return GCC vectors of 32 bytes,
// whose calling convention differs between the AVX2 and the baseline clones below, so an
// out-of-line copy shared by both would be called with the wrong one.
#if defined(__CUDACC__)
#define SSD_HOST_DEVICE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define SSD_HOST_DEVICE inline __attribute__((always_inline))
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
