// The matching kernel: the device twin of include/ssd_loss/match.h (match_image step by step),
// with the per-gt state it keeps in the workspace.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common.cuh"
#include "ssd_loss/box.h"

namespace ssd_loss {
namespace cuda {
namespace {

// Stage A state of one gt (indexed by its global row): its candidate prior and whether it is free.
template <typename T>
struct alignas(16) GtState {
  T overlap;      // IoU of the candidate
  int32_t prior;  // best free prior (largest IoU >= 1e-6, lowest index), -1 if none
  int32_t is_free;  // 1 until the gt is matched
};
static_assert(sizeof(GtState<float>) == 16 && sizeof(GtState<double>) == 16, "GtState layout");
constexpr size_t kGtStateBytes = 16;


// ---- matching -----------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ T gt_prior_iou(const T* g, T g_area, const T* b) {
  // As MatchWorkspace::overlap: gt first, the prior's area from box_area.
  return iou(g[0], g[1], g[2], g[3], g_area, b[0], b[1], b[2], b[3], box_area(b[0], b[1], b[2], b[3]));
}

// (overlap a, prior a) is a better candidate than (overlap b, prior b): valid, then larger IoU,
// then lower prior. A total order (valid overlaps are >= 1e-6, never NaN), so any reduction tree
// finds the same maximum as the CPU's ascending scan with a strict '>'.
template <typename T>
__device__ __forceinline__ bool better_prior(T ao, int32_t ap, T bo, int32_t bp) {
  return ap >= 0 && (bp < 0 || ao > bo || (ao == bo && ap < bp));
}

// The warp's best free prior for gt `g` (best_free_prior in match.h). Every lane of the warp must
// call it; every lane gets the result.
template <typename T>
__device__ void warp_best_free_prior(const T* g, const T* priors, int64_t np, const int32_t* match,
                                     T* best_overlap, int32_t* best_prior) {
  const int lane = threadIdx.x % kWarpSize;
  const T g_area = box_area(g[0], g[1], g[2], g[3]);
  T bo = T(0);
  int32_t bp = -1;
  for (int64_t p = lane; p < np; p += kWarpSize) {
    if (match[p] >= 0) continue;
    const T o = gt_prior_iou(g, g_area, priors + 4 * p);
    if (is_overlap(o) && o > bo) {  // bo starts at 0 < 1e-6: the first hit wins
      bo = o;
      bp = static_cast<int32_t>(p);
    }
  }
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off /= 2) {
    const T oo = __shfl_xor_sync(kFullMask, bo, off);
    const int32_t op = __shfl_xor_sync(kFullMask, bp, off);
    if (better_prior(oo, op, bo, bp)) bo = oo, bp = op;
  }
  *best_overlap = bo;
  *best_prior = bp;
}

// Round winner order of stage A: larger candidate IoU, then lower candidate prior, then lower gt.
template <typename T>
__device__ __forceinline__ bool better_gt(T ao, int32_t ap, int32_t ag, T bo, int32_t bp, int32_t bg) {
  return ag >= 0 && (bg < 0 || ao > bo || (ao == bo && (ap < bp || (ap == bp && ag < bg))));
}

template <typename T>
struct MatchArgs {
  const T* gt_box;
  const int64_t* gt_label;
  const int64_t* gt_offsets;
  int64_t num_classes;
  const T* prior_box;
  int64_t num_images, num_priors;
  bool per_prediction;
  T overlap_threshold;
  bool caffe_band;           // neg_overlap_mode 'caffe'
  T neg_overlap;
  int32_t* match;            // [N, Np]
  uint8_t* eligible;         // [N, Np] (workspace)
  int64_t* num_pos;          // [N] (workspace)
  GtState<T>* gt_state;      // [gt_capacity] (workspace)
  int64_t gt_capacity;
};

// One block per image; match_image in match.h, step by step.
template <typename T>
__global__ void __launch_bounds__(kImageThreads) match_kernel(MatchArgs<T> a) {
  __shared__ T s_overlap[kImageWarps];
  __shared__ int32_t s_prior[kImageWarps];
  __shared__ int32_t s_gt[kImageWarps];
  __shared__ int32_t s_taken;
  __shared__ long long s_count[kImageWarps];

  const int64_t i = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int64_t np = a.num_priors;
  int32_t* match = a.match + i * np;
  uint8_t* eligible = a.eligible + i * np;
  for (int64_t p = tid; p < np; p += kImageThreads) match[p] = -1, eligible[p] = 1;

  const int64_t gt_begin = a.gt_offsets[i], gt_end = a.gt_offsets[i + 1];
  // Offsets that are invalid or beyond the workspace, or a label outside [0, C): the image is
  // rejected (no match, NaN loss). Labels are checked here because the op cannot check labels
  // that live on the device without copying them to the host.
  const bool bad_offsets = gt_begin < 0 || gt_end < gt_begin || gt_end > a.gt_capacity;
  long long bad_labels = 0;
  if (!bad_offsets) {
    for (int64_t g = gt_begin + tid; g < gt_end; g += kImageThreads) {
      bad_labels += a.gt_label[g] < 0 || a.gt_label[g] >= a.num_classes;
    }
  }
  bad_labels = block_sum(bad_labels, s_count);
  const bool rejected = bad_offsets || bad_labels != 0;
  const int64_t n = rejected ? 0 : gt_end - gt_begin;
  const T* gts = a.gt_box + 4 * (rejected ? 0 : gt_begin);
  GtState<T>* st = a.gt_state + (rejected ? 0 : gt_begin);
  __syncthreads();

  if (n > 0) {  // block-uniform
    // Stage A candidates: each gt's best prior (all are free), one warp per gt.
    for (int64_t g = warp; g < n; g += kImageWarps) {
      T o;
      int32_t p;
      warp_best_free_prior(gts + 4 * g, a.prior_box, np, match, &o, &p);
      if (lane == 0) {
        st[g].overlap = o;
        st[g].prior = p;
        st[g].is_free = 1;
      }
    }
    __syncthreads();

    // Stage A rounds.
    for (int64_t round = 0; round < n; ++round) {
      T bo = T(0);
      int32_t bp = -1, bg = -1;
      for (int64_t g = tid; g < n; g += kImageThreads) {
        if (!st[g].is_free || st[g].prior < 0) continue;
        const T o = st[g].overlap;
        const int32_t p = st[g].prior;
        if (better_gt(o, p, static_cast<int32_t>(g), bo, bp, bg)) bo = o, bp = p, bg = static_cast<int32_t>(g);
      }
#pragma unroll
      for (int off = kWarpSize / 2; off > 0; off /= 2) {
        const T oo = __shfl_xor_sync(kFullMask, bo, off);
        const int32_t op = __shfl_xor_sync(kFullMask, bp, off);
        const int32_t og = __shfl_xor_sync(kFullMask, bg, off);
        if (better_gt(oo, op, og, bo, bp, bg)) bo = oo, bp = op, bg = og;
      }
      if (lane == 0) s_overlap[warp] = bo, s_prior[warp] = bp, s_gt[warp] = bg;
      __syncthreads();
      if (warp == 0) {
        bo = lane < kImageWarps ? s_overlap[lane] : T(0);
        bp = lane < kImageWarps ? s_prior[lane] : -1;
        bg = lane < kImageWarps ? s_gt[lane] : -1;
#pragma unroll
        for (int off = kWarpSize / 2; off > 0; off /= 2) {
          const T oo = __shfl_xor_sync(kFullMask, bo, off);
          const int32_t op = __shfl_xor_sync(kFullMask, bp, off);
          const int32_t og = __shfl_xor_sync(kFullMask, bg, off);
          if (better_gt(oo, op, og, bo, bp, bg)) bo = oo, bp = op, bg = og;
        }
        if (lane == 0) {
          if (bg >= 0) {
            match[bp] = bg;
            st[bg].is_free = 0;
          }
          s_taken = bg >= 0 ? bp : -1;
        }
      }
      __syncthreads();
      const int32_t taken = s_taken;
      if (taken < 0) break;  // block-uniform: no free gt has a candidate left
      // Free gts whose candidate was just taken look for their best free prior again. The rescans
      // read only `match`, fixed until the next round, so their order does not matter.
      for (int64_t g = warp; g < n; g += kImageWarps) {
        if (st[g].is_free && st[g].prior == taken) {  // warp-uniform
          T o;
          int32_t p;
          warp_best_free_prior(gts + 4 * g, a.prior_box, np, match, &o, &p);
          if (lane == 0) st[g].overlap = o, st[g].prior = p;
        }
      }
      __syncthreads();
    }

    // Stage B: every still-free prior takes its best gt over all gts (lowest gt on ties) if that
    // IoU >= threshold (inclusive) and >= 1e-6. neg_overlap_mode 'caffe' (image with gts): an
    // unmatched prior whose best IoU (prior_best_overlap in match.h: 0 when none >= 1e-6) is
    // >= neg_overlap is not a negative candidate.
    if (a.per_prediction || a.caffe_band) {
      for (int64_t p = tid; p < np; p += kImageThreads) {
        if (match[p] >= 0) continue;
        const T* b = a.prior_box + 4 * p;
        const T b_area = box_area(b[0], b[1], b[2], b[3]);
        T best = T(0);
        int32_t best_gt = -1;
        for (int64_t g = 0; g < n; ++g) {
          const T* gg = gts + 4 * g;
          const T o = iou(gg[0], gg[1], gg[2], gg[3], box_area(gg[0], gg[1], gg[2], gg[3]), b[0],
                          b[1], b[2], b[3], b_area);
          if (is_overlap(o) && o > best) best = o, best_gt = static_cast<int32_t>(g);
        }
        if (a.per_prediction && best_gt >= 0 && best >= a.overlap_threshold) {
          match[p] = best_gt;
        } else if (a.caffe_band && best >= a.neg_overlap) {
          eligible[p] = 0;
        }
      }
    }
    __syncthreads();
  }

  long long count = 0;
  for (int64_t p = tid; p < np; p += kImageThreads) count += match[p] >= 0;
  count = block_sum(count, s_count);
  if (tid == 0) a.num_pos[i] = rejected ? -1 : count;
}

}  // namespace
}  // namespace cuda
}  // namespace ssd_loss
