// CPU forward of the fused SSD loss: per image, IoU -> matching -> encoding -> cross-entropy ->
// mining -> loss, then the batch-wide normalization (spec §3).
#include <algorithm>
#include <vector>

#include "ssd_loss/box.h"
#include "ssd_loss/match.h"
#include "ssd_loss/mine.h"
#include "ssd_loss/parallel.h"
#include "ssd_loss/softmax.h"
#include "ssd_loss/ssd_loss.h"

namespace ssd_loss {
namespace {

template <typename T>
struct ImageWorkspace {
  MatchWorkspace<T> match;
  std::vector<T> mining_loss;        // [Np] cross-entropy against each prior's provisional label
  std::vector<int32_t> candidates;   // unmatched priors
};

template <typename T>
SoftmaxStats<T> softmax_stats(const T* logits, int64_t num_classes) {
  T m = logits[0];
  for (int64_t c = 1; c < num_classes; ++c) m = logits[c] > m ? logits[c] : m;
  T sum = T(0);
  for (int64_t c = 0; c < num_classes; ++c) sum += std::exp(clamp_shifted_logit(logits[c] - m));
  return {m, sum};
}

// Forward of image i; returns its positive count and writes its unnormalized loss sum.
template <typename T>
int64_t forward_image(const ForwardInputs<T>& in, const Sizes& sz, const Options& opt, int64_t i,
                      ImageWorkspace<T>& ws, const ForwardOutputs<T>& out) {
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

  // Targets and the mining loss: one cross-entropy per prior serves mining and the final loss,
  // since max_negative mining gives every unmatched prior the background label (spec §3.3).
  ws.mining_loss.resize(np);
  ws.candidates.clear();
  int64_t num_pos = 0;
  for (int64_t p = 0; p < np; ++p) {
    const int32_t g = match[p];
    T* t = loc_target + 4 * p;
    int64_t label;
    if (g >= 0) {
      ++num_pos;
      const T* var = in.prior_var + (in.prior_var_shared ? 0 : 4 * p);
      encode(gts + 4 * g, in.prior_box + 4 * p, var, t);
      label = labels[g];
      target_class[p] = static_cast<int32_t>(label);
    } else {
      t[0] = t[1] = t[2] = t[3] = T(0);
      label = opt.background_label;
      target_class[p] = -1;
      ws.candidates.push_back(static_cast<int32_t>(p));
    }
    const SoftmaxStats<T> s = softmax_stats(conf + p * nc, nc);
    stats[2 * p] = s.max;
    stats[2 * p + 1] = s.sum;
    ws.mining_loss[p] = cross_entropy(conf + p * nc, label, s);
  }

  const int64_t num_cand = static_cast<int64_t>(ws.candidates.size());
  const int64_t num_neg = num_negatives(num_pos, opt.neg_pos_ratio, num_cand);
  select_hardest(ws.candidates.data(), num_cand, num_neg, ws.mining_loss.data());
  for (int64_t k = 0; k < num_neg; ++k) {
    target_class[ws.candidates[k]] = static_cast<int32_t>(opt.background_label);
  }

  // Every prior contributes weight * loss, so a NaN/Inf input anywhere in the image reaches its
  // loss (0 * NaN = NaN), as in the original.
  const T conf_w = static_cast<T>(opt.conf_loss_weight), loc_w = static_cast<T>(opt.loc_loss_weight);
  double sum = 0.0;
  for (int64_t p = 0; p < np; ++p) {
    T loc_loss = T(0);
    for (int k = 0; k < 4; ++k) loc_loss += smooth_l1(loc[4 * p + k] - loc_target[4 * p + k]);
    const T w_conf = target_class[p] >= 0 ? T(1) : T(0);
    const T w_loc = match[p] >= 0 ? T(1) : T(0);
    sum += static_cast<double>(conf_w * (w_conf * ws.mining_loss[p]) + loc_w * (w_loc * loc_loss));
  }
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
  // Deviation from fluid (spec §11): the divisor is clamped at 1, so no positives gives 0, not NaN.
  const T divisor = opt.normalize ? static_cast<T>(std::max<int64_t>(total_pos, 1)) : T(1);
  *out.normalizer = divisor;
  for (int64_t i = 0; i < n; ++i) out.loss[i] /= divisor;
}

template void forward<float>(const ForwardInputs<float>&, const Sizes&, const Options&,
                             const ForwardOutputs<float>&);
template void forward<double>(const ForwardInputs<double>&, const Sizes&, const Options&,
                              const ForwardOutputs<double>&);

}  // namespace ssd_loss
