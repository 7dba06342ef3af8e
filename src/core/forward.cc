// CPU forward of the fused SSD loss: per image, IoU -> matching -> encoding -> cross-entropy ->
// mining -> loss, then the batch-wide normalization (docs/semantics.md §3).
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu_kernels.h"
#include "ssd_loss/bits.h"
#include "ssd_loss/box.h"
#include "ssd_loss/match.h"
#include "ssd_loss/mine.h"
#include "ssd_loss/parallel.h"
#include "ssd_loss/policy.h"
#include "ssd_loss/softmax.h"
#include "ssd_loss/ssd_loss.h"

namespace ssd_loss {
namespace {

template <typename T>
struct ImageWorkspace {
  MatchWorkspace<T> match;
  std::vector<int32_t> label;       // [Np] each prior's provisional label: its gt's, or background
  std::vector<T> mining_loss;       // [Np] cross-entropy against it
  std::vector<int32_t> candidates;  // unmatched priors
  std::vector<uint64_t> keys;       // their hardness keys (float losses)
  std::vector<uint32_t> key_histogram;
  std::vector<uint64_t> boundary_keys;
  std::vector<char> kept;           // hard_example: the priors kept by mining
};

// Moves the k hardest of ws.candidates to its front (selection on unique keys: O(count)).
SSD_CPU_CLONES void select_hardest_candidates(ImageWorkspace<float>& ws, int64_t k) {
  const int64_t count = static_cast<int64_t>(ws.candidates.size());
  if (k <= 0 || k >= count) return;
  ws.keys.resize(count);
  for (int64_t c = 0; c < count; ++c) {
    ws.keys[c] = hardness_key(ws.mining_loss[ws.candidates[c]], ws.candidates[c]);
  }
  select_hardest(ws.keys.data(), count, k, ws.key_histogram, ws.boundary_keys);
  for (int64_t c = 0; c < k; ++c) ws.candidates[c] = static_cast<int32_t>(ws.keys[c]);
}

void select_hardest_candidates(ImageWorkspace<double>& ws, int64_t k) {
  select_hardest(ws.candidates.data(), static_cast<int64_t>(ws.candidates.size()), k,
                 ws.mining_loss.data());
}

// Chooses the image's negatives (semantics §3.4, and fluid's hard_example mode); returns the
// number of positives left (hard_example mining unmatches the positives it does not keep).
template <typename T>
int64_t mine_image(const Options& opt, int64_t num_pos, int64_t np, ImageWorkspace<T>& ws,
                   int32_t* match, int32_t* target_class, T* loc_target) {
  const int32_t background = static_cast<int32_t>(opt.background_label);
  if (opt.mining_type == MiningType::kMaxNegative) {
    const int64_t count = static_cast<int64_t>(ws.candidates.size());
    const int64_t num_neg = std::max(num_negatives(num_pos, opt.neg_pos_ratio, count),
                                     std::min(opt.min_negatives_per_image, count));
    select_hardest_candidates(ws, num_neg);
    for (int64_t k = 0; k < num_neg; ++k) target_class[ws.candidates[k]] = background;
    return num_pos;
  }
  // hard_example: rank every prior; keep the sample_size hardest (apply_hard_example, policy.h).
  ws.candidates.resize(np);
  for (int64_t p = 0; p < np; ++p) ws.candidates[p] = static_cast<int32_t>(p);
  const int64_t kept = std::min(opt.sample_size, np);
  select_hardest_candidates(ws, kept);
  ws.kept.assign(np, 0);
  for (int64_t k = 0; k < kept; ++k) ws.kept[ws.candidates[k]] = 1;
  for (int64_t p = 0; p < np; ++p) {
    if (apply_hard_example(ws.kept[p] != 0, background, match + p, target_class + p)) {
      std::fill(loc_target + 4 * p, loc_target + 4 * p + 4, T(0));
      --num_pos;
    }
  }
  return num_pos;
}

// On the bits (an exponent of all ones is Inf or NaN), so that the loop vectorizes.
template <typename T>
SSD_ALWAYS_INLINE bool all_finite(const T* x, int64_t n) {
  using Bits = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
  const Bits exponent = bit_cast<Bits>(std::numeric_limits<T>::infinity());
  Bits non_finite = 0;
  for (int64_t k = 0; k < n; ++k) {
    non_finite |= static_cast<Bits>((bit_cast<Bits>(x[k]) & exponent) == exponent);
  }
  return non_finite == 0;
}

// Forward of image i; returns its positive count and writes its unnormalized loss sum.
template <typename T>
SSD_CPU_CLONES int64_t forward_image(const ForwardInputs<T>& in, const Sizes& sz,
                                     const Options& opt, int64_t i, ImageWorkspace<T>& ws,
                                     const ForwardOutputs<T>& out) {
  const int64_t np = sz.num_priors, nc = sz.num_classes;
  const int64_t gt_begin = in.gt_offsets[i];
  const int64_t num_gt = in.gt_offsets[i + 1] - gt_begin;
  const T* gts = in.gt_box + 4 * gt_begin;
  const int64_t* labels = in.gt_label + gt_begin;
  const T* loc = in.location + i * np * 4;
  const T* conf = in.confidence + i * np * nc;
  int32_t* match = out.saved.match + i * np;
  int32_t* target_class = out.saved.target_class + i * np;
  T* loc_target = out.saved.loc_target + i * np * 4;
  T* stats = out.saved.softmax_stats + i * np * 2;

  match_image(gts, num_gt, in.prior_box, np, opt.match_type == MatchType::kPerPrediction,
              static_cast<T>(opt.overlap_threshold), ws.match, match);
  // neg_overlap_mode 'caffe': an unmatched prior overlapping some gt by >= neg_overlap is
  // ambiguous, neither positive nor negative.
  const bool caffe_band = opt.neg_overlap_mode == NegOverlapMode::kCaffe && num_gt > 0;
  const T neg_overlap = static_cast<T>(opt.neg_overlap);
  // Targets: encoded boxes and the class of the positives; unmatched priors are candidates, and
  // take the background label in the cross-entropy: one cross-entropy per prior serves mining
  // and the final loss, since max_negative mining gives every unmatched prior that label
  // (semantics §3.3).
  const int32_t background = static_cast<int32_t>(opt.background_label);
  ws.label.resize(np);
  int32_t* SSD_RESTRICT label = ws.label.data();
  std::fill(target_class, target_class + np, -1);
  std::fill(label, label + np, background);
  cpu::zero_fill(loc_target, 4 * np);
  int64_t num_pos = 0;
  cpu::for_each_at_least_zero(match, np, [&](int64_t p) {
    const int32_t g = match[p];
    ++num_pos;
    const T* var = in.prior_var + (in.prior_var_shared ? 0 : 4 * p);
    encode(gts + 4 * g, in.prior_box + 4 * p, var, loc_target + 4 * p);
    target_class[p] = label[p] = static_cast<int32_t>(labels[g]);
  });
  // The candidates, in ascending order, gathered without branches (each index is written, the
  // count advances for the unmatched ones).
  ws.candidates.resize(np);
  int32_t* SSD_RESTRICT candidates = ws.candidates.data();
  int64_t num_candidates = 0;
  for (int64_t p = 0; p < np; ++p) {
    candidates[num_candidates] = static_cast<int32_t>(p);
    num_candidates += match[p] < 0;
  }
  if (caffe_band) {
    const T* best = ws.match.prior_best_overlap.data();
    const auto ambiguous = [best, neg_overlap](int32_t p) { return best[p] >= neg_overlap; };
    num_candidates =
        std::remove_if(candidates, candidates + num_candidates, ambiguous) - candidates;
  }
  ws.candidates.resize(num_candidates);
  ws.mining_loss.resize(np);
  cpu::softmax_rows(conf, np, nc, ws.label.data(), stats, ws.mining_loss.data());
  num_pos = mine_image(opt, num_pos, np, ws, match, target_class, loc_target);

  // As in the original, where every prior contributes weight * loss (0 * NaN = NaN), a NaN or
  // Inf in the image's location or cross-entropies makes its loss NaN.
  if (!all_finite(loc, 4 * np) || !all_finite(ws.mining_loss.data(), np)) {
    out.loss[i] = std::numeric_limits<T>::quiet_NaN();
    return num_pos;
  }
  const T conf_w = static_cast<T>(opt.conf_loss_weight), loc_w = static_cast<T>(opt.loc_loss_weight);
  double sum = 0.0;
  // Only the positives and mined negatives (target_class >= 0) are in the loss, in prior order.
  cpu::for_each_at_least_zero(target_class, np, [&](int64_t p) {
    T term = conf_w * ws.mining_loss[p];
    if (match[p] >= 0) {
      T loc_loss = T(0);
      for (int k = 0; k < 4; ++k) loc_loss += smooth_l1(loc[4 * p + k] - loc_target[4 * p + k]);
      term += loc_w * loc_loss;
    }
    sum += static_cast<double>(term);
  });
  out.loss[i] = static_cast<T>(sum);
  return num_pos;
}

}  // namespace

template <typename T>
void forward(const ForwardInputs<T>& in, const Sizes& sz, const Options& opt,
             const ForwardOutputs<T>& out) {
  const int64_t n = sz.num_images;
  std::vector<int64_t> num_pos(n, 0);
  parallel_for(n, [&](int64_t begin, int64_t end, int) {
    ImageWorkspace<T> ws;
    for (int64_t i = begin; i < end; ++i) num_pos[i] = forward_image(in, sz, opt, i, ws, out);
  });
  int64_t total_pos = 0;
  for (int64_t i = 0; i < n; ++i) total_pos += num_pos[i];
  const T div = static_cast<T>(normalizer(opt.normalization, total_pos, sz.num_images,
                                          sz.num_priors));
  *out.normalizer = div;
  for (int64_t i = 0; i < n; ++i) out.loss[i] /= div;
}

template void forward<float>(const ForwardInputs<float>&, const Sizes&, const Options&,
                             const ForwardOutputs<float>&);
template void forward<double>(const ForwardInputs<double>&, const Sizes&, const Options&,
                              const ForwardOutputs<double>&);

}  // namespace ssd_loss
