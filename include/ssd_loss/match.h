// Matching of priors to the gt boxes of one image (spec §3.2).
//
// Stage A, greedy bipartite: repeatedly take the pair (free prior, free gt) of largest IoU
// (IoU >= 1e-6), ties to the lowest prior index, then the lowest gt index. Each gt keeps a
// "candidate": its best free prior (largest IoU, lowest index). The global best pair is the best
// candidate, so a round costs O(n) plus a rescan of the gts whose candidate was just taken —
// O(n * Np) work for an image in practice and O(Np + n) memory, for any gt count.
// Stage B, per_prediction only: every still-free prior takes its best gt over ALL gts of the image
// (largest IoU, lowest gt index) if that IoU >= overlap_threshold (inclusive).
#pragma once

#include <cstdint>
#include <vector>

#include "ssd_loss/box.h"

namespace ssd_loss {

template <typename T>
struct MatchWorkspace {
  std::vector<T> prior_best_overlap;    // [Np] best IoU over all gts (stage B)
  std::vector<int32_t> prior_best_gt;   // [Np] its gt, -1 if no IoU >= 1e-6
  std::vector<T> gt_cand_overlap;       // [n] IoU of the gt's candidate prior
  std::vector<int64_t> gt_cand_prior;   // [n] best free prior of the gt, -1 if none
  std::vector<char> gt_free;            // [n]

  void resize(int64_t num_priors, int64_t num_gt) {
    prior_best_overlap.resize(num_priors);
    prior_best_gt.resize(num_priors);
    gt_cand_overlap.resize(num_gt);
    gt_cand_prior.resize(num_gt);
    gt_free.resize(num_gt);
  }
};

// Best free prior of gt `g` (largest IoU >= 1e-6, lowest index on ties), or -1.
template <typename T>
int64_t best_free_prior(const T* gt, const T* priors, int64_t num_priors, const int32_t* match,
                        T* best_overlap) {
  int64_t best = -1;
  T best_iou = T(0);
  for (int64_t p = 0; p < num_priors; ++p) {
    if (match[p] >= 0) continue;
    const T o = iou(gt, priors + 4 * p);
    if (is_overlap(o) && (best < 0 || o > best_iou)) {
      best = p;
      best_iou = o;
    }
  }
  *best_overlap = best_iou;
  return best;
}

// Fills match[0..Np) with the matched gt index (local to the image) or -1.
template <typename T>
void match_image(const T* gts, int64_t num_gt, const T* priors, int64_t num_priors,
                 bool per_prediction, T overlap_threshold, MatchWorkspace<T>& ws, int32_t* match) {
  for (int64_t p = 0; p < num_priors; ++p) match[p] = -1;
  if (num_gt == 0) return;
  ws.resize(num_priors, num_gt);
  for (int64_t g = 0; g < num_gt; ++g) {
    ws.gt_cand_prior[g] = -1;
    ws.gt_cand_overlap[g] = T(0);
    ws.gt_free[g] = 1;
  }

  // One pass over all pairs: per-prior best gt (stage B) and per-gt best prior (stage A).
  for (int64_t p = 0; p < num_priors; ++p) {
    const T* prior = priors + 4 * p;
    int32_t best_gt = -1;
    T best = T(0);
    for (int64_t g = 0; g < num_gt; ++g) {
      const T o = iou(gts + 4 * g, prior);
      if (!is_overlap(o)) continue;
      if (best_gt < 0 || o > best) {
        best_gt = static_cast<int32_t>(g);
        best = o;
      }
      if (ws.gt_cand_prior[g] < 0 || o > ws.gt_cand_overlap[g]) {
        ws.gt_cand_prior[g] = p;
        ws.gt_cand_overlap[g] = o;
      }
    }
    ws.prior_best_gt[p] = best_gt;
    ws.prior_best_overlap[p] = best;
  }

  // Stage A: at most num_gt rounds.
  for (int64_t round = 0; round < num_gt; ++round) {
    int64_t g_star = -1;
    for (int64_t g = 0; g < num_gt; ++g) {
      if (!ws.gt_free[g] || ws.gt_cand_prior[g] < 0) continue;
      if (g_star < 0 || ws.gt_cand_overlap[g] > ws.gt_cand_overlap[g_star] ||
          (ws.gt_cand_overlap[g] == ws.gt_cand_overlap[g_star] &&
           ws.gt_cand_prior[g] < ws.gt_cand_prior[g_star])) {
        g_star = g;
      }
    }
    if (g_star < 0) break;
    const int64_t p_star = ws.gt_cand_prior[g_star];
    match[p_star] = static_cast<int32_t>(g_star);
    ws.gt_free[g_star] = 0;
    for (int64_t g = 0; g < num_gt; ++g) {
      if (ws.gt_free[g] && ws.gt_cand_prior[g] == p_star) {
        ws.gt_cand_prior[g] =
            best_free_prior(gts + 4 * g, priors, num_priors, match, &ws.gt_cand_overlap[g]);
      }
    }
  }

  if (!per_prediction) return;
  for (int64_t p = 0; p < num_priors; ++p) {
    if (match[p] < 0 && ws.prior_best_gt[p] >= 0 && ws.prior_best_overlap[p] >= overlap_threshold) {
      match[p] = ws.prior_best_gt[p];
    }
  }
}

}  // namespace ssd_loss
