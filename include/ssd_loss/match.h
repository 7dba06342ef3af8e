// Matching of priors to the gt boxes of one image (spec §3.2).
//
// Stage A, greedy bipartite: repeatedly take the pair (free prior, free gt) of largest IoU
// (IoU >= 1e-6), ties to the lowest prior index, then the lowest gt index. Each gt keeps a
// "candidate": its best free prior (largest IoU, lowest index). The global best pair is the best
// candidate, so a round costs O(n) plus a rescan of the gts whose candidate was just taken —
// O(n * Np) work for an image in practice and O(Np + n * kPriorBlock) memory, for any gt count.
// Stage B, per_prediction only: every still-free prior takes its best gt over ALL gts of the image
// (largest IoU, lowest gt index) if that IoU >= overlap_threshold (inclusive).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ssd_loss/box.h"

namespace ssd_loss {

// Priors are scanned in blocks of this many: the IoU of every gt with one block is computed by
// loops the compiler vectorizes, in a buffer of n_gt * kPriorBlock values.
constexpr int64_t kPriorBlock = 512;

template <typename T>
struct MatchWorkspace {
  // The priors as structure of arrays, prepared once for all images of a batch.
  const T* priors = nullptr;
  int64_t num_priors = 0;
  std::vector<T> x1, y1, x2, y2, area;

  std::vector<T> overlap_block;         // [n, kPriorBlock]
  std::vector<T> prior_best_overlap;    // [Np] best IoU over all gts (stage B)
  std::vector<int32_t> prior_best_gt;   // [Np] its gt, -1 if no IoU >= 1e-6
  std::vector<T> gt_cand_overlap;       // [n] IoU of the gt's candidate prior
  std::vector<int64_t> gt_cand_prior;   // [n] best free prior of the gt, -1 if none
  std::vector<char> gt_free;            // [n]

  void prepare(const T* prior_boxes, int64_t np, int64_t num_gt) {
    if (priors != prior_boxes || num_priors != np) {
      priors = prior_boxes;
      num_priors = np;
      x1.resize(np), y1.resize(np), x2.resize(np), y2.resize(np), area.resize(np);
      for (int64_t p = 0; p < np; ++p) {
        const T* b = prior_boxes + 4 * p;
        x1[p] = b[0], y1[p] = b[1], x2[p] = b[2], y2[p] = b[3];
        area[p] = box_area(b[0], b[1], b[2], b[3]);
      }
      prior_best_overlap.resize(np);
      prior_best_gt.resize(np);
    }
    overlap_block.resize(static_cast<size_t>(num_gt) * kPriorBlock);
    gt_cand_overlap.assign(num_gt, T(0));
    gt_cand_prior.assign(num_gt, -1);
    gt_free.assign(num_gt, 1);
  }

  T overlap(const T* g, T g_area, int64_t p) const {
    return iou(g[0], g[1], g[2], g[3], g_area, x1[p], y1[p], x2[p], y2[p], area[p]);
  }
};

// Best free prior of a gt (largest IoU >= 1e-6, lowest index on ties), or -1.
template <typename T>
int64_t best_free_prior(const MatchWorkspace<T>& ws, const T* gt, const int32_t* match,
                        T* best_overlap) {
  const T g_area = box_area(gt[0], gt[1], gt[2], gt[3]);
  int64_t best = -1;
  T best_iou = T(0);
  for (int64_t p = 0; p < ws.num_priors; ++p) {
    if (match[p] >= 0) continue;
    const T o = ws.overlap(gt, g_area, p);
    if (is_overlap(o) && o > best_iou) {  // best_iou starts at 0 < 1e-6: the first hit wins
      best = p;
      best_iou = o;
    }
  }
  *best_overlap = best_iou;
  return best;
}

// One pass over all (gt, prior) pairs, block by block: the per-prior best gt (stage B) and the
// per-gt best prior (the stage A candidates).
template <typename T>
void scan_overlaps(const T* gts, int64_t num_gt, MatchWorkspace<T>& ws) {
  const int64_t np = ws.num_priors;
  for (int64_t p0 = 0; p0 < np; p0 += kPriorBlock) {
    const int64_t nb = std::min(kPriorBlock, np - p0);
    T* SSD_RESTRICT best = ws.prior_best_overlap.data() + p0;
    int32_t* SSD_RESTRICT best_gt = ws.prior_best_gt.data() + p0;
    for (int64_t j = 0; j < nb; ++j) best[j] = T(0), best_gt[j] = -1;
    for (int64_t g = 0; g < num_gt; ++g) {
      const T gx1 = gts[4 * g], gy1 = gts[4 * g + 1], gx2 = gts[4 * g + 2], gy2 = gts[4 * g + 3];
      const T g_area = box_area(gx1, gy1, gx2, gy2);
      T* SSD_RESTRICT o = ws.overlap_block.data() + g * kPriorBlock;
      const T *x1 = ws.x1.data() + p0, *y1 = ws.y1.data() + p0, *x2 = ws.x2.data() + p0,
              *y2 = ws.y2.data() + p0, *area = ws.area.data() + p0;
      for (int64_t j = 0; j < nb; ++j) {
        o[j] = iou(gx1, gy1, gx2, gy2, g_area, x1[j], y1[j], x2[j], y2[j], area[j]);
      }
      // Ascending g with a strict '>': the lowest gt wins ties.
      for (int64_t j = 0; j < nb; ++j) {
        const bool better = is_overlap(o[j]) & (o[j] > best[j]);
        best[j] = better ? o[j] : best[j];
        best_gt[j] = better ? static_cast<int32_t>(g) : best_gt[j];
      }
      // Ascending p with a strict '>': the lowest prior wins ties.
      T cand = ws.gt_cand_overlap[g];
      int64_t cand_prior = ws.gt_cand_prior[g];
      for (int64_t j = 0; j < nb; ++j) {
        if (is_overlap(o[j]) && o[j] > cand) cand = o[j], cand_prior = p0 + j;
      }
      ws.gt_cand_overlap[g] = cand;
      ws.gt_cand_prior[g] = cand_prior;
    }
  }
}

// Fills match[0..Np) with the matched gt index (local to the image) or -1.
template <typename T>
void match_image(const T* gts, int64_t num_gt, const T* priors, int64_t num_priors,
                 bool per_prediction, T overlap_threshold, MatchWorkspace<T>& ws, int32_t* match) {
  std::fill(match, match + num_priors, -1);
  if (num_gt == 0) return;
  ws.prepare(priors, num_priors, num_gt);
  scan_overlaps(gts, num_gt, ws);

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
        ws.gt_cand_prior[g] = best_free_prior(ws, gts + 4 * g, match, &ws.gt_cand_overlap[g]);
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
