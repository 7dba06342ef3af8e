// CUDA kernels of the fused SSD loss (no Paddle headers): the device twin of src/core/forward.cc
// and src/core/backward.cc, options included (match_type, mining_type max_negative /
// hard_example, min_negatives_per_image, neg_overlap_mode fluid / caffe, normalization). Build
// with --fmad=false (scripts/check_cuda_compile.sh does): the shared per-element math (IoU, exp of
// a shifted logit) then gives the CPU's bits, and the matching and mining decisions are the CPU's.
//
// Forward, enqueued on one stream, no host synchronization:
//   1. softmax_stats_kernel  8 threads per prior row: {max, sum of clamped exps}, lane c % 8 and
//                            the combine order of src/core/softmax_rows.cc (same bits in float).
//   2. match_kernel          one block per image: rejects the image on bad offsets or a label
//                            outside [0, C) (inputs the op could not check on the host); greedy
//                            bipartite exactly as match_image (match.h), then the per_prediction
//                            stage and the 'caffe' band (best IoU of each unmatched prior); the
//                            image's positive count.
//   3. targets_kernel        one thread per prior: target_class, loc_target, cross-entropy.
//   4. mine_loss_kernel      one block per image: mine_image of forward.cc (the k hardest
//                            candidates by a radix select on unique hardness keys), then the
//                            image's loss (NaN rule, fixed-tree sum).
//   5. normalize_kernel      one block: total positives (integer sum), the divisor, loss /= it.
// Backward: one thread per output element (grad_location, grad_confidence).
// gt inputs the Paddle op holds only on the device: labels_kernel (any label dtype -> int64) and
// gt_offsets_kernel (box counts -> offsets), run before the forward on the same stream.
//
// Determinism: every reduction has a fixed shape (block size is a compile-time constant), integer
// atomics only count histogram bins, and no float atomic reaches an output: two runs give the same
// bits. Against the CPU, decisions (match, target_class) and softmax_stats (float) are identical,
// see "Known differences from the CPU" below for what is not.
//
// Known differences from the CPU (all within the golden tolerances):
//   * The loss of an image is summed in double in a fixed tree over prior index (per thread a
//     strided sequential partial sum, then a shuffle tree), while the CPU sums sequentially in
//     double: the double sums may differ in the last bits, the float loss (rounded from double)
//     rarely. Decisions never depend on the sum.
//   * std::log (encode; in double also the cross-entropy) and, in double, std::exp (softmax
//     stats) are CUDA's libdevice functions on the GPU and glibc's on the CPU; both are within
//     1 ulp but not always equal. loc_target may differ by an ulp, and in double so may a
//     cross-entropy. The float cross-entropy uses softmax.h's own exp and log on both devices, so
//     float mining decisions are the CPU's.
#include <cuda_runtime.h>

#include <cfloat>
#include <cstddef>
#include <cstdint>

#include "ssd_loss/bits.h"
#include "ssd_loss/box.h"
#include "ssd_loss/mine.h"
#include "ssd_loss/policy.h"
#include "ssd_loss/softmax.h"
#include "ssd_loss/ssd_loss.h"
#include "ssd_loss_cuda.h"

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

// ---- workspace ----------------------------------------------------------------------------------

// Stage A state of one gt (indexed by its global row): its candidate prior and whether it is free.
template <typename T>
struct alignas(16) GtState {
  T overlap;      // IoU of the candidate
  int32_t prior;  // best free prior (largest IoU >= 1e-6, lowest index), -1 if none
  int32_t is_free;  // 1 until the gt is matched
};
static_assert(sizeof(GtState<float>) == 16 && sizeof(GtState<double>) == 16, "GtState layout");
constexpr size_t kGtStateBytes = 16;

constexpr size_t kAlign = 256;
inline size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

struct WorkspaceLayout {
  size_t num_pos;   // int64 [N]: positives per image (-1: image rejected, see match_kernel)
  size_t ce;        // T [N * Np] (8 bytes reserved per value): cross-entropy per prior
  size_t eligible;  // uint8 [N * Np]: 0 for an unmatched prior in the 'caffe' neg_overlap band
  size_t gt_state;  // GtState [Ng]
  size_t fixed_end;
};

inline WorkspaceLayout workspace_layout(const Sizes& s) {
  WorkspaceLayout l;
  const size_t n = static_cast<size_t>(s.num_images > 0 ? s.num_images : 0);
  const size_t np = static_cast<size_t>(s.num_priors > 0 ? s.num_priors : 0);
  l.num_pos = 0;
  l.ce = align_up(l.num_pos + n * sizeof(int64_t));
  l.eligible = align_up(l.ce + n * np * sizeof(double));
  l.gt_state = align_up(l.eligible + n * np * sizeof(uint8_t));
  l.fixed_end = l.gt_state;
  return l;
}

// ---- 1. softmax statistics ----------------------------------------------------------------------

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

// ---- 2. matching --------------------------------------------------------------------------------

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

// ---- 3. targets and cross-entropies -------------------------------------------------------------

template <typename T>
struct TargetArgs {
  const T* confidence;
  const T* gt_box;
  const int64_t* gt_label;
  const int64_t* gt_offsets;
  const T* prior_box;
  const T* prior_var;
  bool prior_var_shared;
  int64_t num_images, num_priors, num_classes, background_label;
  const int32_t* match;
  const T* stats;
  int32_t* target_class;
  T* loc_target;
  T* ce;  // [N, Np] (workspace)
};

// One thread per prior: the loop body of forward_image before mining.
template <typename T>
__global__ void __launch_bounds__(kElementThreads) targets_kernel(TargetArgs<T> a) {
  const int64_t total = a.num_images * a.num_priors;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / a.num_priors, p = idx - i * a.num_priors;
    const int32_t g = a.match[idx];
    int64_t label = a.background_label;
    T* target = a.loc_target + 4 * idx;
    if (g >= 0) {
      const int64_t row = a.gt_offsets[i] + g;
      const T* var = a.prior_var + (a.prior_var_shared ? 0 : 4 * p);
      encode(a.gt_box + 4 * row, a.prior_box + 4 * p, var, target);
      label = a.gt_label[row];
      a.target_class[idx] = static_cast<int32_t>(label);
    } else {
      a.target_class[idx] = -1;
      target[0] = target[1] = target[2] = target[3] = T(0);
    }
    const SoftmaxStats<T> s{a.stats[2 * idx], a.stats[2 * idx + 1]};
    a.ce[idx] = cross_entropy(a.confidence + idx * a.num_classes, label, s);
  }
}

// ---- 4. mining and the per-image loss -----------------------------------------------------------

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

template <typename T>
struct MineArgs {
  const T* location;
  const T* ce;
  const uint8_t* eligible;
  int64_t num_images, num_priors, background_label;
  bool hard_example;               // mining_type 'hard_example' (else 'max_negative')
  float neg_pos_ratio;
  int64_t min_negatives_per_image;  // max_negative
  int64_t sample_size;              // hard_example
  T loc_loss_weight, conf_loss_weight;
  int32_t* match;         // hard_example unmatches the positives it does not keep
  int32_t* target_class;
  T* loc_target;
  int64_t* num_pos;       // updated by hard_example
  T* loss;                // [N], unnormalized here
};

// One block per image: mine_image of forward.cc, then its NaN rule and loss sum.
template <typename T>
__global__ void __launch_bounds__(kImageThreads) mine_loss_kernel(MineArgs<T> a) {
  __shared__ SelectShared sh;
  __shared__ double s_sum[kImageWarps];
  __shared__ long long s_count[kImageWarps];

  const int64_t i = blockIdx.x;
  const int tid = threadIdx.x;
  const int64_t np = a.num_priors;
  int32_t* match = a.match + i * np;
  const T* ce = a.ce + i * np;
  int32_t* target_class = a.target_class + i * np;
  T* loc_target = a.loc_target + i * np * 4;
  const int32_t background = static_cast<int32_t>(a.background_label);

  const int64_t num_pos = a.num_pos[i];
  const bool rejected = num_pos < 0;  // block-uniform, as everything the branches below test
  const Candidates candidate{match, a.eligible + i * np, a.hard_example};
  if (!rejected && !a.hard_example) {
    // max_negative: the k hardest candidates become negatives.
    long long count = 0;
    for (int64_t p = tid; p < np; p += kImageThreads) count += candidate(p);
    count = block_sum(count, s_count);
    const int64_t at_least = a.min_negatives_per_image < count ? a.min_negatives_per_image : count;
    int64_t k = num_negatives(num_pos, a.neg_pos_ratio, count);
    k = k > at_least ? k : at_least;
    if (k > 0 && k < count) {
      const MiningKey kth = select_kth_key(ce, candidate, np, static_cast<long long>(k), sh);
      for (int64_t p = tid; p < np; p += kImageThreads) {
        if (candidate(p) && !key_less(kth, mining_key(ce[p], static_cast<int32_t>(p)))) {
          target_class[p] = background;
        }
      }
    } else if (k > 0) {  // every candidate
      for (int64_t p = tid; p < np; p += kImageThreads) {
        if (candidate(p)) target_class[p] = background;
      }
    }
  } else if (!rejected) {
    // hard_example: keep the sample_size hardest priors of all (apply_hard_example, policy.h).
    const int64_t kept = a.sample_size < np ? a.sample_size : np;
    const bool keep_all = kept >= np, keep_none = kept <= 0;
    MiningKey kth{0ull, 0u};
    if (!keep_all && !keep_none) {
      kth = select_kth_key(ce, candidate, np, static_cast<long long>(kept), sh);
    }
    long long dropped = 0;
    for (int64_t p = tid; p < np; p += kImageThreads) {
      const bool is_kept =
          keep_all || (!keep_none && !key_less(kth, mining_key(ce[p], static_cast<int32_t>(p))));
      if (apply_hard_example(is_kept, background, match + p, target_class + p)) {
        T* t = loc_target + 4 * p;
        t[0] = t[1] = t[2] = t[3] = T(0);
        ++dropped;
      }
    }
    dropped = block_sum(dropped, s_count);
    if (tid == 0) a.num_pos[i] = num_pos - dropped;
  }
  __syncthreads();

  // As in forward_image: any non-finite location value or cross-entropy of the image -> NaN.
  const T* loc = a.location + i * np * 4;
  double sum = 0.0;
  long long bad = 0;
  for (int64_t p = tid; p < np; p += kImageThreads) {
    const T* l = loc + 4 * p;
    bad += !is_finite(l[0]) + !is_finite(l[1]) + !is_finite(l[2]) + !is_finite(l[3]) +
           !is_finite(ce[p]);
    if (target_class[p] < 0) continue;  // neither positive nor mined negative
    T term = a.conf_loss_weight * ce[p];
    if (match[p] >= 0) {
      const T* t = loc_target + 4 * p;
      T loc_loss = T(0);
      for (int c = 0; c < 4; ++c) loc_loss += smooth_l1(l[c] - t[c]);
      term += a.loc_loss_weight * loc_loss;
    }
    sum += static_cast<double>(term);
  }
  sum = block_sum(sum, s_sum);
  bad = block_sum(bad, s_count);
  if (tid == 0) a.loss[i] = (rejected || bad != 0) ? Limits<T>::quiet_nan() : static_cast<T>(sum);
}

// ---- 5. normalization ---------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kImageThreads)
    normalize_kernel(const int64_t* num_pos, int64_t n, int64_t np, Normalization normalization,
                     T* loss, T* divisor_out) {
  __shared__ long long s_count[kImageWarps];
  long long count = 0;
  for (int64_t i = threadIdx.x; i < n; i += kImageThreads) count += num_pos[i] > 0 ? num_pos[i] : 0;
  const long long total = block_sum(count, s_count);  // integer: exact in any order
  const T divisor = static_cast<T>(normalizer(normalization, total, n, np));
  if (threadIdx.x == 0) *divisor_out = divisor;
  for (int64_t i = threadIdx.x; i < n; i += kImageThreads) loss[i] /= divisor;
}

// ---- backward -----------------------------------------------------------------------------------

template <typename T>
struct BackwardArgs {
  const T* location;
  const T* confidence;
  const T* grad_loss;
  const T* normalizer;
  const int32_t* match;
  const int32_t* target_class;
  const T* loc_target;
  const T* stats;
  int64_t num_images, num_priors, num_classes;
  T loc_loss_weight, conf_loss_weight;
  T* grad_location;
  T* grad_confidence;
};

template <typename T>
__global__ void __launch_bounds__(kElementThreads) grad_location_kernel(BackwardArgs<T> a) {
  const int64_t total = a.num_images * a.num_priors * 4;
  const T divisor = *a.normalizer;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ip = idx / 4, i = ip / a.num_priors;
    const T scale = a.grad_loss[i] / divisor;
    const T w = scale * a.loc_loss_weight;
    a.grad_location[idx] =
        a.match[ip] >= 0 ? w * smooth_l1_grad(a.location[idx] - a.loc_target[idx]) : T(0);
  }
}

template <typename T>
__global__ void __launch_bounds__(kElementThreads) grad_confidence_kernel(BackwardArgs<T> a) {
  const int64_t total = a.num_images * a.num_priors * a.num_classes;
  const T divisor = *a.normalizer;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ip = idx / a.num_classes, c = idx - ip * a.num_classes, i = ip / a.num_priors;
    const int32_t label = a.target_class[ip];
    if (label < 0) {
      a.grad_confidence[idx] = T(0);
      continue;
    }
    const T scale = a.grad_loss[i] / divisor;
    const T w = scale * a.conf_loss_weight;
    const SoftmaxStats<T> s{a.stats[2 * ip], a.stats[2 * ip + 1]};
    const T q = softmax_prob(a.confidence[idx], s);
    a.grad_confidence[idx] = c == label ? w * (q - T(1)) : w * q;
  }
}

// ---- gt inputs already on the device --------------------------------------------------------------

__device__ __forceinline__ int64_t label_as_int64(int32_t v, int64_t) { return v; }
__device__ __forceinline__ int64_t label_as_int64(int64_t v, int64_t) { return v; }
// As labels_as_int64 in the op: truncation toward zero, after a range check (truncating NaN or a
// huge value is undefined behaviour). Out of range -> -1, which match_kernel rejects.
__device__ __forceinline__ int64_t label_as_int64(double v, int64_t num_classes) {
  return float_label_in_range(v, num_classes) ? static_cast<int64_t>(v) : -1;
}
__device__ __forceinline__ int64_t label_as_int64(float v, int64_t num_classes) {
  return label_as_int64(static_cast<double>(v), num_classes);
}

template <typename L>
__global__ void __launch_bounds__(kElementThreads)
    labels_kernel(const L* __restrict__ labels, int64_t num_gt, int64_t num_classes,
                  int64_t* __restrict__ out) {
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < num_gt;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[g] = label_as_int64(labels[g], num_classes);
  }
}

// Thread 0 of one warp: N is a batch size, and a sequential running sum needs no scan tree.
template <typename L>
__global__ void gt_offsets_kernel(const L* __restrict__ lengths, int64_t n, int64_t num_gt,
                                  int64_t* __restrict__ offsets) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  if (offsets_from_lengths(lengths, n, num_gt, offsets) >= 0 || offsets[n] != num_gt) {
    for (int64_t i = 0; i <= n; ++i) offsets[i] = -1;
  }
}

}  // namespace

// ---- launchers ----------------------------------------------------------------------------------

cudaError_t labels_to_int64_cuda(const void* labels, LabelType type, int64_t num_gt,
                                 int64_t num_classes, int64_t* out, cudaStream_t stream) {
  if (num_gt < 0 || num_classes <= 0) return cudaErrorInvalidValue;
  if (num_gt == 0) return cudaSuccess;
  const unsigned grid = grid_for(num_gt, kElementThreads);
  switch (type) {
    case LabelType::kInt32:
      labels_kernel<int32_t><<<grid, kElementThreads, 0, stream>>>(
          static_cast<const int32_t*>(labels), num_gt, num_classes, out);
      break;
    case LabelType::kInt64:
      labels_kernel<int64_t><<<grid, kElementThreads, 0, stream>>>(
          static_cast<const int64_t*>(labels), num_gt, num_classes, out);
      break;
    case LabelType::kFloat32:
      labels_kernel<float><<<grid, kElementThreads, 0, stream>>>(
          static_cast<const float*>(labels), num_gt, num_classes, out);
      break;
    case LabelType::kFloat64:
      labels_kernel<double><<<grid, kElementThreads, 0, stream>>>(
          static_cast<const double*>(labels), num_gt, num_classes, out);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t gt_offsets_from_lengths_cuda(const void* lengths, bool lengths_int64, int64_t n,
                                         int64_t num_gt, int64_t* offsets, cudaStream_t stream) {
  if (n < 0 || num_gt < 0) return cudaErrorInvalidValue;
  if (lengths_int64) {
    gt_offsets_kernel<int64_t><<<1, kWarpSize, 0, stream>>>(static_cast<const int64_t*>(lengths), n,
                                                     num_gt, offsets);
  } else {
    gt_offsets_kernel<int32_t><<<1, kWarpSize, 0, stream>>>(static_cast<const int32_t*>(lengths), n,
                                                     num_gt, offsets);
  }
  return cudaGetLastError();
}

size_t forward_workspace_bytes(const Sizes& sizes, int64_t num_gt) {
  return workspace_layout(sizes).fixed_end +
         static_cast<size_t>(num_gt > 0 ? num_gt : 0) * kGtStateBytes;
}

template <typename T>
cudaError_t forward_cuda(const ForwardInputs<T>& in, const Sizes& sz, const Options& opt,
                         const ForwardOutputs<T>& out, void* workspace, size_t workspace_bytes,
                         cudaStream_t stream) {
  const int64_t n = sz.num_images, np = sz.num_priors, nc = sz.num_classes;
  if (n < 0 || np <= 0 || nc <= 0 || np > INT32_MAX) return cudaErrorInvalidValue;
  if (n > INT32_MAX) return cudaErrorInvalidValue;  // one block per image
  const WorkspaceLayout layout = workspace_layout(sz);
  if (workspace_bytes < layout.fixed_end || (workspace == nullptr && layout.fixed_end > 0)) {
    return cudaErrorInvalidValue;
  }
  char* ws = static_cast<char*>(workspace);
  int64_t* num_pos = reinterpret_cast<int64_t*>(ws + layout.num_pos);
  T* ce = reinterpret_cast<T*>(ws + layout.ce);
  uint8_t* eligible = reinterpret_cast<uint8_t*>(ws + layout.eligible);
  GtState<T>* gt_state = reinterpret_cast<GtState<T>*>(ws + layout.gt_state);
  const int64_t gt_capacity =
      static_cast<int64_t>((workspace_bytes - layout.gt_state) / kGtStateBytes);

  if (n > 0) {
    const int64_t rows = n * np;
    softmax_stats_kernel<T><<<grid_for(rows * kRowLanes, kElementThreads), kElementThreads, 0,
                              stream>>>(in.confidence, rows, nc, out.saved.softmax_stats);

    MatchArgs<T> m;
    m.gt_box = in.gt_box;
    m.gt_label = in.gt_label;
    m.gt_offsets = in.gt_offsets;
    m.num_classes = nc;
    m.prior_box = in.prior_box;
    m.num_images = n;
    m.num_priors = np;
    m.per_prediction = opt.match_type == MatchType::kPerPrediction;
    m.overlap_threshold = static_cast<T>(opt.overlap_threshold);
    m.caffe_band = opt.neg_overlap_mode == NegOverlapMode::kCaffe;
    m.neg_overlap = static_cast<T>(opt.neg_overlap);
    m.match = out.saved.match;
    m.eligible = eligible;
    m.num_pos = num_pos;
    m.gt_state = gt_state;
    m.gt_capacity = gt_capacity;
    match_kernel<T><<<static_cast<unsigned>(n), kImageThreads, 0, stream>>>(m);

    TargetArgs<T> t;
    t.confidence = in.confidence;
    t.gt_box = in.gt_box;
    t.gt_label = in.gt_label;
    t.gt_offsets = in.gt_offsets;
    t.prior_box = in.prior_box;
    t.prior_var = in.prior_var;
    t.prior_var_shared = in.prior_var_shared;
    t.num_images = n;
    t.num_priors = np;
    t.num_classes = nc;
    t.background_label = opt.background_label;
    t.match = out.saved.match;
    t.stats = out.saved.softmax_stats;
    t.target_class = out.saved.target_class;
    t.loc_target = out.saved.loc_target;
    t.ce = ce;
    targets_kernel<T><<<grid_for(rows, kElementThreads), kElementThreads, 0, stream>>>(t);

    MineArgs<T> mine;
    mine.location = in.location;
    mine.ce = ce;
    mine.eligible = eligible;
    mine.num_images = n;
    mine.num_priors = np;
    mine.background_label = opt.background_label;
    mine.hard_example = opt.mining_type == MiningType::kHardExample;
    mine.neg_pos_ratio = opt.neg_pos_ratio;
    mine.min_negatives_per_image = opt.min_negatives_per_image;
    mine.sample_size = opt.sample_size;
    mine.loc_loss_weight = static_cast<T>(opt.loc_loss_weight);
    mine.conf_loss_weight = static_cast<T>(opt.conf_loss_weight);
    mine.match = out.saved.match;
    mine.target_class = out.saved.target_class;
    mine.loc_target = out.saved.loc_target;
    mine.num_pos = num_pos;
    mine.loss = out.loss;
    mine_loss_kernel<T><<<static_cast<unsigned>(n), kImageThreads, 0, stream>>>(mine);
  }
  normalize_kernel<T><<<1, kImageThreads, 0, stream>>>(
      num_pos, n, np, opt.normalization, out.loss, out.normalizer);
  return cudaGetLastError();
}

template <typename T>
cudaError_t backward_cuda(const BackwardInputs<T>& in, const Sizes& sz, const Options& opt,
                          const BackwardOutputs<T>& out, cudaStream_t stream) {
  const int64_t n = sz.num_images, np = sz.num_priors, nc = sz.num_classes;
  if (n < 0 || np < 0 || nc < 0) return cudaErrorInvalidValue;
  if (n == 0 || np == 0) return cudaSuccess;
  BackwardArgs<T> a;
  a.location = in.location;
  a.confidence = in.confidence;
  a.grad_loss = in.grad_loss;
  a.normalizer = in.normalizer;
  a.match = in.match;
  a.target_class = in.target_class;
  a.loc_target = in.loc_target;
  a.stats = in.softmax_stats;
  a.num_images = n;
  a.num_priors = np;
  a.num_classes = nc;
  a.loc_loss_weight = static_cast<T>(opt.loc_loss_weight);
  a.conf_loss_weight = static_cast<T>(opt.conf_loss_weight);
  a.grad_location = out.grad_location;
  a.grad_confidence = out.grad_confidence;
  if (out.grad_location) {
    grad_location_kernel<T><<<grid_for(n * np * 4, kElementThreads), kElementThreads, 0, stream>>>(a);
  }
  if (out.grad_confidence && nc > 0) {
    grad_confidence_kernel<T>
        <<<grid_for(n * np * nc, kElementThreads), kElementThreads, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

template cudaError_t forward_cuda<float>(const ForwardInputs<float>&, const Sizes&, const Options&,
                                         const ForwardOutputs<float>&, void*, size_t, cudaStream_t);
template cudaError_t forward_cuda<double>(const ForwardInputs<double>&, const Sizes&,
                                          const Options&, const ForwardOutputs<double>&, void*,
                                          size_t, cudaStream_t);
template cudaError_t backward_cuda<float>(const BackwardInputs<float>&, const Sizes&,
                                          const Options&, const BackwardOutputs<float>&,
                                          cudaStream_t);
template cudaError_t backward_cuda<double>(const BackwardInputs<double>&, const Sizes&,
                                           const Options&, const BackwardOutputs<double>&,
                                           cudaStream_t);

}  // namespace cuda
}  // namespace ssd_loss
