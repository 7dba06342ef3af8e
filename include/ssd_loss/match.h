// Matching of priors to the gt boxes of one image (docs/semantics.md §3.2).
//
// Stage A, greedy bipartite: repeatedly take the pair (free prior, free gt) of largest IoU
// (IoU >= 1e-6), ties to the lowest prior index, then the lowest gt index. Each gt keeps a
// "candidate": its best free prior (largest IoU, lowest index). The global best pair is the best
// candidate, so a round costs O(n) plus a rescan of the gts whose candidate was just taken —
// O(n * Np) work for an image in practice and O(Np + n) memory, for any gt count.
// Stage B, per_prediction only: every still-free prior takes its best gt over ALL gts of the image
// (largest IoU, lowest gt index) if that IoU >= overlap_threshold (inclusive).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "ssd_loss/box.h"

namespace ssd_loss {

// Priors are scanned in blocks of this many, gt after gt, so that a block's per-prior best stays
// in the L1 cache.
constexpr int64_t kPriorBlock = 512;
// Within a block, runs of this many priors that a gt box cannot intersect are skipped: their IoUs
// are exactly 0 (or NaN), which changes no best overlap. SSD priors are laid out cell by cell, so
// such a run covers a small part of the image.
constexpr int64_t kCullRun = 64;

template <typename T>
struct MatchWorkspace {
  // The priors as structure of arrays, prepared once for all images of a batch.
  const T* priors = nullptr;
  int64_t num_priors = 0;
  std::vector<T> x1, y1, x2, y2, area;
  // Per run of kCullRun priors: the bounding box of their boxes, or +-infinity if one is NaN.
  std::vector<T> run_x1, run_y1, run_x2, run_y2;

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
      const int64_t runs = (np + kCullRun - 1) / kCullRun;
      run_x1.resize(runs), run_y1.resize(runs), run_x2.resize(runs), run_y2.resize(runs);
      for (int64_t r = 0; r < runs; ++r) {
        const int64_t begin = r * kCullRun, end = std::min(np, begin + kCullRun);
        T lo_x = x1[begin], lo_y = y1[begin], hi_x = x2[begin], hi_y = y2[begin];
        bool nan = false;
        for (int64_t q = begin; q < end; ++q) {
          lo_x = std::min(lo_x, x1[q]), lo_y = std::min(lo_y, y1[q]);
          hi_x = std::max(hi_x, x2[q]), hi_y = std::max(hi_y, y2[q]);
          nan |= x1[q] != x1[q] || y1[q] != y1[q] || x2[q] != x2[q] || y2[q] != y2[q];
        }
        const T inf = std::numeric_limits<T>::infinity();
        run_x1[r] = nan ? -inf : lo_x, run_y1[r] = nan ? -inf : lo_y;
        run_x2[r] = nan ? inf : hi_x, run_y2[r] = nan ? inf : hi_y;
      }
      prior_best_overlap.resize(np);
      prior_best_gt.resize(np);
    }
    gt_cand_overlap.assign(num_gt, T(0));
    gt_cand_prior.assign(num_gt, -1);
    gt_free.assign(num_gt, 1);
  }

  T overlap(const T* g, T g_area, int64_t p) const {
    return iou(g[0], g[1], g[2], g[3], g_area, x1[p], y1[p], x2[p], y2[p], area[p]);
  }

  // True when no box of run r meets the gt box (x1, y1, x2, y2): each of their intersections has
  // a width or height <= 0. False for NaN coordinates.
  bool misses_run(int64_t r, T gx1, T gy1, T gx2, T gy2) const {
    return gx2 <= run_x1[r] || gy2 <= run_y1[r] || gx1 >= run_x2[r] || gy1 >= run_y2[r];
  }
};

// The best prior of one gt over a run of priors (largest IoU >= 1e-6, lowest index on ties), as a
// sequential scan finds it, in loops the compiler vectorizes: each of kMatchLanes lanes keeps its
// own best (strict '>' in ascending prior order), and the lanes are merged by IoU, then index.
constexpr int kMatchLanes = 8;

template <typename T>
struct BestPrior {
  T overlap[kMatchLanes];
  int32_t prior[kMatchLanes];

  BestPrior() {
    for (int l = 0; l < kMatchLanes; ++l) overlap[l] = T(0), prior[l] = -1;
  }
  SSD_ALWAYS_INLINE void visit(int lane, T o, int32_t p, bool eligible) {
    const bool better = eligible & is_overlap(o) & (o > overlap[lane]);
    overlap[lane] = better ? o : overlap[lane];
    prior[lane] = better ? p : prior[lane];
  }
  // The best prior (-1 if none) and its IoU (0 if none).
  int32_t merged(T* best_overlap) const {
    int32_t best = -1;
    T best_o = T(0);
    for (int l = 0; l < kMatchLanes; ++l) {
      if (prior[l] < 0) continue;
      if (best < 0 || overlap[l] > best_o || (overlap[l] == best_o && prior[l] < best)) {
        best = prior[l], best_o = overlap[l];
      }
    }
    *best_overlap = best_o;
    return best;
  }
};

// Calls visit(p, lane) for the priors p in [begin, end) of the runs that the gt box
// (gx1, gy1, gx2, gy2) may meet, with lane = p % kMatchLanes, so that each lane sees its priors in
// ascending order; the other runs are skipped (their IoUs are exactly 0). begin is a multiple of
// kCullRun. The inner loop over lanes is what the compiler vectorizes.
template <typename T, typename Visit>
SSD_ALWAYS_INLINE void for_priors_meeting(const MatchWorkspace<T>& ws, int64_t begin, int64_t end,
                                          T gx1, T gy1, T gx2, T gy2, Visit&& visit) {
  for (int64_t r0 = begin; r0 < end; r0 += kCullRun) {
    if (ws.misses_run(r0 / kCullRun, gx1, gy1, gx2, gy2)) continue;
    const int32_t first = static_cast<int32_t>(r0);
    const int32_t last = static_cast<int32_t>(std::min(end, r0 + kCullRun));
    const int32_t full = first + (last - first) / kMatchLanes * kMatchLanes;
    for (int32_t p = first; p < full; p += kMatchLanes) {
      for (int l = 0; l < kMatchLanes; ++l) visit(p + l, l);
    }
    for (int32_t p = full; p < last; ++p) visit(p, p - full);
  }
}

// Best free prior of a gt (largest IoU >= 1e-6, lowest index on ties), or -1.
template <typename T>
SSD_ALWAYS_INLINE int64_t best_free_prior(const MatchWorkspace<T>& ws, const T* gt,
                                          const int32_t* match, T* best_overlap) {
  const T g_area = box_area(gt[0], gt[1], gt[2], gt[3]);
  BestPrior<T> best;
  for_priors_meeting(ws, 0, ws.num_priors, gt[0], gt[1], gt[2], gt[3], [&](int32_t p, int l) {
    best.visit(l, ws.overlap(gt, g_area, p), p, match[p] < 0);
  });
  return best.merged(best_overlap);
}

// One pass over all (gt, prior) pairs, block by block: the per-prior best gt (stage B) and the
// per-gt best prior (the stage A candidates).
template <typename T>
SSD_ALWAYS_INLINE void scan_overlaps(const T* gts, int64_t num_gt, MatchWorkspace<T>& ws) {
  const int64_t np = ws.num_priors;
  T* SSD_RESTRICT best = ws.prior_best_overlap.data();
  int32_t* SSD_RESTRICT best_gt = ws.prior_best_gt.data();
  const T *x1 = ws.x1.data(), *y1 = ws.y1.data(), *x2 = ws.x2.data(), *y2 = ws.y2.data(),
          *area = ws.area.data();
  for (int64_t p0 = 0; p0 < np; p0 += kPriorBlock) {
    const int64_t p1 = std::min(np, p0 + kPriorBlock);
    for (int64_t p = p0; p < p1; ++p) best[p] = T(0), best_gt[p] = -1;
    for (int64_t g = 0; g < num_gt; ++g) {
      const T gx1 = gts[4 * g], gy1 = gts[4 * g + 1], gx2 = gts[4 * g + 2], gy2 = gts[4 * g + 3];
      const T g_area = box_area(gx1, gy1, gx2, gy2);
      BestPrior<T> cand;
      for_priors_meeting(ws, p0, p1, gx1, gy1, gx2, gy2, [&](int32_t p, int l) {
        const T o = iou(gx1, gy1, gx2, gy2, g_area, x1[p], y1[p], x2[p], y2[p], area[p]);
        // Ascending g with a strict '>': the lowest gt wins ties.
        const bool better = is_overlap(o) & (o > best[p]);
        best[p] = better ? o : best[p];
        best_gt[p] = better ? static_cast<int32_t>(g) : best_gt[p];
        cand.visit(l, o, p, true);
      });
      // The block's best against the candidate of the earlier blocks, which wins ties.
      T block_overlap;
      const int32_t block_prior = cand.merged(&block_overlap);
      if (block_prior >= 0 && block_overlap > ws.gt_cand_overlap[g]) {
        ws.gt_cand_overlap[g] = block_overlap;
        ws.gt_cand_prior[g] = block_prior;
      }
    }
  }
}

// Fills match[0..Np) with the matched gt index (local to the image) or -1.
template <typename T>
SSD_CPU_CLONES void match_image(const T* gts, int64_t num_gt, const T* priors, int64_t num_priors,
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
  // A select per prior, not a branch: the loop vectorizes.
  const int32_t* best_gt = ws.prior_best_gt.data();
  const T* best_overlap = ws.prior_best_overlap.data();
  for (int64_t p = 0; p < num_priors; ++p) {
    const bool take = (match[p] < 0) & (best_gt[p] >= 0) & (best_overlap[p] >= overlap_threshold);
    match[p] = take ? best_gt[p] : match[p];
  }
}

}  // namespace ssd_loss
