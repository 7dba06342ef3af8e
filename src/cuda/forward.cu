// CUDA forward of the fused SSD loss (no Paddle headers): the device twin of src/core/forward.cc,
// options included (match_type, mining_type max_negative / hard_example, min_negatives_per_image,
// neg_overlap_mode fluid / caffe, normalization). Built with the nvcc flags of compile_flags.env
// (--fmad=false): the shared per-element math (IoU, exp of a shifted logit) then gives the CPU's
// bits, and the matching and mining decisions are the CPU's.
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
// The kernels of steps 1, 2 and 4's selection live in softmax_rows.cuh, match.cuh and mine.cuh
// (the twins of softmax_rows.cc, match.h and mine.h); the backward in backward.cu.
// gt inputs the Paddle op holds only on the device are converted by op_inputs.cu first.
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

#include <cstddef>
#include <cstdint>

#include "common.cuh"
#include "match.cuh"
#include "mine.cuh"
#include "softmax_rows.cuh"
#include "ssd_loss/box.h"
#include "ssd_loss/policy.h"
#include "ssd_loss/softmax.h"
#include "ssd_loss/ssd_loss.h"
#include "ssd_loss_cuda.h"

namespace ssd_loss {
namespace cuda {
namespace {

// ---- workspace ----------------------------------------------------------------------------------

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

}  // namespace

// ---- launcher -----------------------------------------------------------------------------------

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

template cudaError_t forward_cuda<float>(const ForwardInputs<float>&, const Sizes&, const Options&,
                                         const ForwardOutputs<float>&, void*, size_t, cudaStream_t);
template cudaError_t forward_cuda<double>(const ForwardInputs<double>&, const Sizes&,
                                          const Options&, const ForwardOutputs<double>&, void*,
                                          size_t, cudaStream_t);

}  // namespace cuda
}  // namespace ssd_loss
