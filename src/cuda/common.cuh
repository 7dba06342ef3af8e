// What every CUDA source of the loss shares (the device side of src/core/cpu_kernels.h): block
// sizes, numeric limits, grid sizing and the fixed-tree block sum. Compiled with the nvcc flags of
// compile_flags.env (--fmad=false: the CPU's bits for the shared math).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace ssd_loss {
namespace cuda {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarpSize = 32;
// Threads of the per-image kernels (match, mining/loss) and of the normalize kernel. The
// reduction trees, hence the loss bits, depend on it: keep it a constant.
constexpr int kImageThreads = 256;
constexpr int kImageWarps = kImageThreads / kWarpSize;
// Threads per block of the element-wise kernels.
constexpr int kElementThreads = 256;
// Softmax statistics: threads per prior row (= kLanes of src/core/softmax_rows.cc).
constexpr int kRowLanes = 8;
// Radix select: 8-bit digits.
constexpr int kRadixBins = 256;

// ---- small helpers ------------------------------------------------------------------------------

template <typename T>
struct Limits;
template <>
struct Limits<float> {
  static __device__ __forceinline__ float max() { return FLT_MAX; }
  static __device__ __forceinline__ float quiet_nan() { return __int_as_float(0x7fc00000); }
};
template <>
struct Limits<double> {
  static __device__ __forceinline__ double max() { return DBL_MAX; }
  static __device__ __forceinline__ double quiet_nan() {
    return __longlong_as_double(0x7ff8000000000000LL);
  }
};

template <typename T>
__device__ __forceinline__ bool is_finite(T x) {
  return std::fabs(x) <= Limits<T>::max();  // as all_finite in forward.cc: false for NaN and Inf
}

// A grid-stride loop needs no more blocks than this.
inline unsigned grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  const int64_t cap = int64_t{1} << 20;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

// Sum over the block in a fixed tree (warp shuffles, then warp 0 over the warp sums). Every thread
// of the block must call it; every thread gets the result. `smem` holds kImageWarps values.
template <typename V>
__device__ V block_sum(V v, V* smem) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off /= 2) v += __shfl_down_sync(kFullMask, v, off);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  if (warp == 0) {
    V w = lane < kImageWarps ? smem[lane] : V(0);
#pragma unroll
    for (int off = kWarpSize / 2; off > 0; off /= 2) w += __shfl_down_sync(kFullMask, w, off);
    if (lane == 0) smem[0] = w;
  }
  __syncthreads();
  const V total = smem[0];
  __syncthreads();  // smem may be reused right after
  return total;
}

}  // namespace
}  // namespace cuda
}  // namespace ssd_loss
