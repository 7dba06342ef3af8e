// Mining on the device, the twin of include/ssd_loss/mine.h: unique hardness keys and the radix
// select of the k hardest candidates of an image.
#pragma once

#include <cstdint>

#include "common.cuh"
#include "ssd_loss/mine.h"

namespace ssd_loss {
namespace cuda {
namespace {

// A mining key: smaller = harder negative, unique per prior. float: hardness_key (mine.h) in
// `hi`, lo = 0, 8 radix digits. double: the order of HarderNegative<double> (NaN first, loss
// descending, -0 == +0) in `hi`, the prior index in `lo`, 12 radix digits.
struct MiningKey {
  uint64_t hi;
  uint32_t lo;
};

__device__ __forceinline__ bool key_less(const MiningKey& a, const MiningKey& b) {
  return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo);
}

__device__ __forceinline__ MiningKey mining_key(float loss, int32_t prior) {
  return MiningKey{hardness_key(loss, prior), 0u};
}

__device__ __forceinline__ MiningKey mining_key(double loss, int32_t prior) {
  const uint64_t b = static_cast<uint64_t>(__double_as_longlong(loss + 0.0));  // -0 -> +0
  const uint64_t ascending = (b & 0x8000000000000000ull) ? ~b : (b | 0x8000000000000000ull);
  const uint64_t high = loss != loss ? 0ull : ~ascending;
  return MiningKey{high, static_cast<uint32_t>(prior)};
}

template <typename T>
struct KeyDigits {
  static constexpr int value = sizeof(T) == 4 ? 8 : 12;
};

__device__ __forceinline__ unsigned key_digit(const MiningKey& k, int pass) {
  return pass < 8 ? static_cast<unsigned>(k.hi >> (56 - 8 * pass)) & 0xffu
                  : (k.lo >> (24 - 8 * (pass - 8))) & 0xffu;
}

// Masks of the digits fixed before pass `pass`.
__device__ __forceinline__ uint64_t hi_mask(int pass) {
  return pass >= 8 ? ~0ull : (pass == 0 ? 0ull : ~0ull << (64 - 8 * pass));
}
__device__ __forceinline__ uint32_t lo_mask(int pass) {
  return pass <= 8 ? 0u : ~0u << (32 - 8 * (pass - 8));
}

struct SelectShared {
  unsigned hist[kRadixBins];
  MiningKey prefix;
  long long rank;
};

// The priors mining chooses from: all of them (hard_example), or the unmatched ones outside the
// 'caffe' neg_overlap band (max_negative).
struct Candidates {
  const int32_t* match;
  const uint8_t* eligible;
  bool all;
  __device__ __forceinline__ bool operator()(int64_t p) const {
    return all || (match[p] < 0 && eligible[p]);
  }
};

// The k-th smallest key (1-based) among the candidates of the image, 0 < k <= their count, by a
// most-significant-digit radix select; every thread gets it. Keys are unique, so exactly k
// candidates have a key <= the result.
template <typename T>
__device__ MiningKey select_kth_key(const T* ce, const Candidates& candidate, int64_t np,
                                    long long k, SelectShared& sh) {
  const int tid = threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  MiningKey prefix{0ull, 0u};
  long long rank = k;
  for (int pass = 0; pass < KeyDigits<T>::value; ++pass) {
    const uint64_t hm = hi_mask(pass);
    const uint32_t lm = lo_mask(pass);
    for (int b = tid; b < kRadixBins; b += kImageThreads) sh.hist[b] = 0u;
    __syncthreads();
    for (int64_t p = tid; p < np; p += kImageThreads) {
      if (!candidate(p)) continue;
      const MiningKey key = mining_key(ce[p], static_cast<int32_t>(p));
      if ((key.hi & hm) != prefix.hi || (key.lo & lm) != prefix.lo) continue;
      atomicAdd(&sh.hist[key_digit(key, pass)], 1u);  // an integer count: order-independent
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l owns bins 8l .. 8l+7; an inclusive scan over lanes finds the bin holding `rank`.
      constexpr int kPerLane = kRadixBins / kWarpSize;
      unsigned local[kPerLane];
      long long lane_sum = 0;
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) local[j] = sh.hist[kPerLane * lane + j], lane_sum += local[j];
      long long inclusive = lane_sum;
#pragma unroll
      for (int off = 1; off < kWarpSize; off *= 2) {
        const long long up = __shfl_up_sync(kFullMask, inclusive, off);
        if (lane >= off) inclusive += up;
      }
      const unsigned ballot = __ballot_sync(kFullMask, inclusive >= rank);
      const int owner = ballot ? __ffs(ballot) - 1 : kWarpSize - 1;  // never 0 when k is valid
      if (lane == owner) {
        long long before = inclusive - lane_sum;
        int bin = kPerLane * lane + kPerLane - 1;
#pragma unroll
        for (int j = 0; j < kPerLane; ++j) {
          if (before + local[j] >= rank) {
            bin = kPerLane * lane + j;
            break;
          }
          before += local[j];
        }
        MiningKey next = prefix;
        if (pass < 8) {
          next.hi |= static_cast<uint64_t>(bin) << (56 - 8 * pass);
        } else {
          next.lo |= static_cast<uint32_t>(bin) << (24 - 8 * (pass - 8));
        }
        sh.prefix = next;
        sh.rank = rank - before;
      }
    }
    __syncthreads();
    prefix = sh.prefix;
    rank = sh.rank;
    // The next write of sh.prefix / sh.rank comes after two more barriers: no race.
  }
  return prefix;
}

}  // namespace
}  // namespace cuda
}  // namespace ssd_loss
