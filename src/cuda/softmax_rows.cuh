// The softmax statistics kernel: the device twin of src/core/softmax_rows.cc (the same lanes and
// combine order: the same bits in float).
#pragma once

#include <cstdint>

#include "common.cuh"
#include "ssd_loss/softmax.h"

namespace ssd_loss {
namespace cuda {
namespace {

// ---- softmax statistics -------------------------------------------------------------------------

// kRowLanes threads per row; lane l handles classes l, l + 8, ... as accumulator l of row_stats in
// src/core/softmax_rows.cc, and the 8 lane results are combined in the CPU's order. (The CPU's
// padded slots past C are no-ops: the max there compares x[0], which cannot exceed the lane's
// running max, and the sum adds +0.)
template <typename T>
__global__ void __launch_bounds__(kElementThreads)
    softmax_stats_kernel(const T* __restrict__ conf, int64_t rows, int64_t nc, T* __restrict__ stats) {
  const int lane = threadIdx.x % kRowLanes;
  const int64_t rows_per_block = kElementThreads / kRowLanes;
  for (int64_t row0 = static_cast<int64_t>(blockIdx.x) * rows_per_block; row0 < rows;
       row0 += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    const int64_t row = row0 + threadIdx.x / kRowLanes;
    const bool valid = row < rows;  // every lane stays for the shuffles below
    const T* x = conf + (valid ? row : 0) * nc;

    T acc = x[0];
    if (valid) {
      for (int64_t c = lane; c < nc; c += kRowLanes) {
        const T v = x[c];
        acc = v > acc ? v : acc;
      }
    }
    T m = __shfl_sync(kFullMask, acc, 0, kRowLanes);
#pragma unroll
    for (int l = 1; l < kRowLanes; ++l) {
      const T a = __shfl_sync(kFullMask, acc, l, kRowLanes);
      m = a > m ? a : m;
    }

    T sum = T(0);
    if (valid) {
      for (int64_t c = lane; c < nc; c += kRowLanes) {
        sum += exp_shifted_logit(clamp_shifted_logit(x[c] - m));
      }
    }
    T s[kRowLanes];
#pragma unroll
    for (int l = 0; l < kRowLanes; ++l) s[l] = __shfl_sync(kFullMask, sum, l, kRowLanes);
    if (valid && lane == 0) {
      stats[2 * row] = m;
      stats[2 * row + 1] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    }
  }
}

}  // namespace
}  // namespace cuda
}  // namespace ssd_loss
