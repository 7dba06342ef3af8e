// Matching of one image (docs/semantics.md §3.2): greedy bipartite stage, then the per_prediction
// stage.
//
// Most hand cases use boxes spanning the full height (y from 0 to 1), so an IoU is the 1-D
// overlap of two x intervals divided by their union and is easy to check by hand.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "check.h"
#include "ssd_loss/box.h"
#include "ssd_loss/match.h"

namespace {

using Boxes = std::vector<float>;  // rows of (xmin, ymin, xmax, ymax)

void add_x_box(Boxes& boxes, float x1, float x2) {
  boxes.insert(boxes.end(), {x1, 0.f, x2, 1.f});
}

std::vector<int32_t> match(const Boxes& gts, const Boxes& priors, bool per_prediction,
                           float threshold = 0.5f) {
  const int64_t num_gt = static_cast<int64_t>(gts.size() / 4);
  const int64_t num_priors = static_cast<int64_t>(priors.size() / 4);
  std::vector<int32_t> result(num_priors, -7);  // -7: shows an entry that was never written
  ssd_loss::MatchWorkspace<float> ws;
  ssd_loss::match_image(gts.data(), num_gt, priors.data(), num_priors, per_prediction, threshold,
                        ws, result.data());
  return result;
}

// Straight transcription of semantics §3.2 as a reference, O(n^2 Np) overall: each round scans
// every (free prior, free gt) pair, priors ascending and gts ascending inside, and a pair replaces
// the best only when strictly larger, so ties go to the lowest prior, then the lowest gt.
std::vector<int32_t> brute_force_match(const Boxes& gts, const Boxes& priors, bool per_prediction,
                                       float threshold) {
  const int64_t n = static_cast<int64_t>(gts.size() / 4);
  const int64_t np = static_cast<int64_t>(priors.size() / 4);
  std::vector<float> overlap(np * n);  // [prior][gt]
  for (int64_t p = 0; p < np; ++p) {
    for (int64_t g = 0; g < n; ++g) overlap[p * n + g] = ssd_loss::iou(&gts[4 * g], &priors[4 * p]);
  }
  std::vector<int32_t> m(np, -1);
  std::vector<char> gt_used(n, 0);
  for (int64_t round = 0; round < n; ++round) {
    int64_t best_p = -1, best_g = -1;
    float best = 0.f;
    for (int64_t p = 0; p < np; ++p) {
      if (m[p] >= 0) continue;
      for (int64_t g = 0; g < n; ++g) {
        const float o = overlap[p * n + g];
        if (gt_used[g] || !(o >= 1e-6f)) continue;
        if (best_p < 0 || o > best) {
          best_p = p;
          best_g = g;
          best = o;
        }
      }
    }
    if (best_p < 0) break;
    m[best_p] = static_cast<int32_t>(best_g);
    gt_used[best_g] = 1;
  }
  if (per_prediction) {
    for (int64_t p = 0; p < np; ++p) {
      if (m[p] >= 0) continue;
      int64_t best_g = -1;
      float best = 0.f;
      for (int64_t g = 0; g < n; ++g) {  // all gts, matched or not
        const float o = overlap[p * n + g];
        if (!(o >= 1e-6f) || !(o >= threshold)) continue;
        if (best_g < 0 || o > best) {
          best_g = g;
          best = o;
        }
      }
      m[p] = static_cast<int32_t>(best_g);
    }
  }
  return m;
}

using Ints = std::vector<int32_t>;

}  // namespace

TEST_CASE(match, no_gt_leaves_every_prior_unmatched) {
  Boxes priors;
  add_x_box(priors, 0.f, 0.5f);
  add_x_box(priors, 0.2f, 0.9f);
  CHECK_EQ(match({}, priors, true), (Ints{-1, -1}));
  CHECK_EQ(match({}, priors, false), (Ints{-1, -1}));
}

TEST_CASE(match, greedy_takes_the_global_maximum_first_and_the_loser_falls_back) {
  // IoU        p0=[0,.5]  p1=[0,.3]
  // gt0=[0,.4]   0.8        0.75
  // gt1=[0,.5]   1.0        0.6
  // Greedy takes (p0, gt1) = 1.0 first although gt0 comes first; gt0's candidate p0 is gone, so
  // it falls back to its next best prior p1. A per-gt argmax in gt order would give [0, 1].
  Boxes gts, priors;
  add_x_box(gts, 0.f, 0.4f);
  add_x_box(gts, 0.f, 0.5f);
  add_x_box(priors, 0.f, 0.5f);
  add_x_box(priors, 0.f, 0.3f);
  CHECK_EQ(match(gts, priors, false), (Ints{1, 0}));
}

TEST_CASE(match, fallback_skips_priors_taken_in_earlier_rounds) {
  // IoU          p0=[0,1]  p1=[0,.8]  p2=[0,.45]
  // gt0=[0,.9]     .9        .889       .5
  // gt1=[0,.8]     .8        1          .5625
  // gt2=[0,1]      1         .8         .45
  // Round 1 takes (p0, gt2) (IoU 1, prior 0 first on the tie), round 2 (p1, gt1). gt0's first
  // and second choices are both gone, so it falls back to its third, p2.
  Boxes gts, priors;
  add_x_box(gts, 0.f, 0.9f);
  add_x_box(gts, 0.f, 0.8f);
  add_x_box(gts, 0.f, 1.f);
  add_x_box(priors, 0.f, 1.f);
  add_x_box(priors, 0.f, 0.8f);
  add_x_box(priors, 0.f, 0.45f);
  CHECK_EQ(match(gts, priors, false), (Ints{2, 1, 0}));
  CHECK_EQ(brute_force_match(gts, priors, false, 0.5f), (Ints{2, 1, 0}));
}

TEST_CASE(match, ties_go_to_lowest_prior_then_lowest_gt) {
  // Two identical priors and two identical gts: all four IoUs are 1. Round 1 takes prior 0 with
  // gt 0, round 2 prior 1 with gt 1.
  Boxes gts, priors;
  add_x_box(gts, 0.f, 0.5f);
  add_x_box(gts, 0.f, 0.5f);
  add_x_box(priors, 0.f, 0.5f);
  add_x_box(priors, 0.f, 0.5f);
  CHECK_EQ(match(gts, priors, false), (Ints{0, 1}));

  // A lower-IoU prior placed first does not change who gets the exact prior: gt 0 (lowest index)
  // takes prior 1, gt 1 gets prior 0.
  Boxes priors2;
  add_x_box(priors2, 0.f, 0.4f);  // IoU .8 with both gts
  add_x_box(priors2, 0.f, 0.5f);  // IoU 1 with both gts
  CHECK_EQ(match(gts, priors2, false), (Ints{1, 0}));

  // Tie between two priors for one gt: the lowest prior index wins, the other stays unmatched.
  Boxes one_gt;
  add_x_box(one_gt, 0.25f, 0.75f);
  Boxes sym;
  add_x_box(sym, 0.f, 0.5f);  // IoU 1/3 exactly like the next one
  add_x_box(sym, 0.5f, 1.f);
  CHECK_EQ(match(one_gt, sym, false), (Ints{0, -1}));
}

TEST_CASE(match, gt_without_overlap_stays_unmatched) {
  Boxes gts, priors;
  add_x_box(gts, 0.f, 0.5f);
  gts.insert(gts.end(), {2.f, 2.f, 3.f, 3.f});  // outside every prior
  gts.insert(gts.end(), {0.1f, 0.1f, 0.1f, 0.1f});  // zero area
  add_x_box(priors, 0.f, 0.5f);
  add_x_box(priors, 0.5f, 1.f);  // touches gt0 only: IoU 0
  CHECK_EQ(match(gts, priors, false), (Ints{0, -1}));
  CHECK_EQ(match(gts, priors, true, 0.f), (Ints{0, -1}));
}

TEST_CASE(match, bipartite_leaves_a_high_iou_loser_unmatched) {
  // p1 has IoU 0.833 with the only gt but loses to p0 (IoU 1); per_prediction then adds it.
  Boxes gts, priors;
  add_x_box(gts, 0.f, 0.5f);
  add_x_box(priors, 0.f, 0.5f);
  add_x_box(priors, 0.f, 0.6f);
  CHECK_EQ(match(gts, priors, false), (Ints{0, -1}));
  CHECK_EQ(match(gts, priors, true, 0.5f), (Ints{0, 0}));
  CHECK_EQ(match(gts, priors, true, 0.9f), (Ints{0, -1}));
}

TEST_CASE(match, per_prediction_threshold_is_inclusive) {
  // Semantics §9, E11: priors [0,0,1,1] and [0,0,1,.5] against gt [0,0,1,1]; the second IoU is
  // exactly 0.5.
  const Boxes gts = {0.f, 0.f, 1.f, 1.f};
  const Boxes priors = {0.f, 0.f, 1.f, 1.f, 0.f, 0.f, 1.f, 0.5f};
  CHECK_EQ(ssd_loss::iou(&gts[0], &priors[4]), 0.5f);
  CHECK_EQ(match(gts, priors, true, 0.5f), (Ints{0, 0}));
  CHECK_EQ(match(gts, priors, true, std::nextafter(0.5f, 1.f)), (Ints{0, -1}));
  // A threshold <= 1e-6 matches every prior with a usable overlap, one above 1 adds nothing.
  CHECK_EQ(match(gts, priors, true, 0.f), (Ints{0, 0}));
  CHECK_EQ(match(gts, priors, true, 1.5f), (Ints{0, -1}));
}

TEST_CASE(match, per_prediction_considers_already_matched_gts) {
  //                 gt0=[0,.5]  gt1=[.3,.9]
  // p0 = [0,.5]        1          .222
  // p1 = [.3,.9]       .222       1
  // p2 = [0,.55]       .909       .278   -> stage B: gt0, although gt0 is already matched
  // p3 = [.35,.9]      .167       .917   -> gt1
  Boxes gts, priors;
  add_x_box(gts, 0.f, 0.5f);
  add_x_box(gts, 0.3f, 0.9f);
  add_x_box(priors, 0.f, 0.5f);
  add_x_box(priors, 0.3f, 0.9f);
  add_x_box(priors, 0.f, 0.55f);
  add_x_box(priors, 0.35f, 0.9f);
  CHECK_EQ(match(gts, priors, false), (Ints{0, 1, -1, -1}));
  CHECK_EQ(match(gts, priors, true, 0.5f), (Ints{0, 1, 0, 1}));
}

TEST_CASE(match, per_prediction_tie_goes_to_lowest_gt) {
  // p2 = [.25,.75] has IoU 1/3 (bit-identical) with both gts; both gts are matched in stage A.
  Boxes gts, priors;
  add_x_box(gts, 0.5f, 1.f);
  add_x_box(gts, 0.f, 0.5f);
  add_x_box(priors, 0.f, 0.5f);
  add_x_box(priors, 0.5f, 1.f);
  add_x_box(priors, 0.25f, 0.75f);
  CHECK_EQ(ssd_loss::iou(&gts[0], &priors[8]), ssd_loss::iou(&gts[4], &priors[8]));
  CHECK_EQ(match(gts, priors, true, 0.3f), (Ints{1, 0, 0}));
}

TEST_CASE(match, nan_and_inverted_boxes_are_never_matched) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Boxes gts = {nan, 0.f, 0.5f, 1.f, 0.5f, 0.f, 0.f, 1.f};  // NaN gt, inverted gt
  Boxes priors;
  add_x_box(priors, 0.f, 0.5f);
  priors.insert(priors.end(), {0.f, 0.f, nan, 1.f});
  CHECK_EQ(match(gts, priors, true, 0.f), (Ints{-1, -1}));
  add_x_box(gts, 0.f, 0.5f);  // a good gt: only the good prior takes it
  CHECK_EQ(match(gts, priors, true, 0.f), (Ints{2, -1}));
}

TEST_CASE(match, workspace_reuse_across_images) {
  // The forward pass reuses one workspace for all images of a thread: a big image then a small
  // one must give the same result as a fresh workspace.
  Boxes gts_big, gts_small, priors;
  for (int k = 0; k < 8; ++k) add_x_box(gts_big, 0.1f * k, 0.1f * k + 0.3f);
  add_x_box(gts_small, 0.f, 0.35f);
  for (int k = 0; k < 10; ++k) add_x_box(priors, 0.08f * k, 0.08f * k + 0.25f);
  ssd_loss::MatchWorkspace<float> ws;
  std::vector<int32_t> out(10);
  ssd_loss::match_image(gts_big.data(), 8, priors.data(), 10, true, 0.5f, ws, out.data());
  CHECK_EQ(out, brute_force_match(gts_big, priors, true, 0.5f));
  ssd_loss::match_image(gts_small.data(), 1, priors.data(), 10, true, 0.5f, ws, out.data());
  CHECK_EQ(out, match(gts_small, priors, true, 0.5f));
}

// ---- comparison with the brute-force reference ---------------------------------------------------

namespace {

// Boxes on a coarse grid, so that many IoUs tie exactly; a few are degenerate or inverted.
Boxes random_grid_boxes(std::mt19937& rng, int count, int grid) {
  std::uniform_int_distribution<int> coord(0, grid);
  std::uniform_int_distribution<int> kind(0, 19);
  Boxes boxes;
  for (int k = 0; k < count; ++k) {
    int x1 = coord(rng), x2 = coord(rng), y1 = coord(rng), y2 = coord(rng);
    if (kind(rng) != 0) {  // mostly proper boxes; 1 in 20 keeps whatever order it drew
      if (x1 > x2) std::swap(x1, x2);
      if (y1 > y2) std::swap(y1, y2);
    }
    boxes.insert(boxes.end(), {static_cast<float>(x1) / grid, static_cast<float>(y1) / grid,
                               static_cast<float>(x2) / grid, static_cast<float>(y2) / grid});
  }
  return boxes;
}

}  // namespace

TEST_CASE(match_bruteforce, small_tie_heavy_images) {
  std::mt19937 rng(20240601);
  std::uniform_int_distribution<int> num_gt(0, 8), num_priors(1, 12), grid(2, 6);
  const float thresholds[] = {0.f, 0.3f, 0.5f, 1.f / 3.f, 0.9f};
  int mismatches = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int g = grid(rng);
    const Boxes gts = random_grid_boxes(rng, num_gt(rng), g);
    const Boxes priors = random_grid_boxes(rng, num_priors(rng), g);
    const bool per_prediction = trial % 2 == 0;
    const float threshold = thresholds[trial % 5];
    if (match(gts, priors, per_prediction, threshold) !=
        brute_force_match(gts, priors, per_prediction, threshold)) {
      if (++mismatches <= 3) {
        CHECK_EQ(match(gts, priors, per_prediction, threshold),
                 brute_force_match(gts, priors, per_prediction, threshold));
      }
    }
  }
  CHECK_EQ(mismatches, 0);
}

TEST_CASE(match_bruteforce, image_with_500_gts) {
  // Far above the original's 130-gt switch to its sort-based path; the new operator keeps the
  // greedy rule for every gt count (semantics §11). Random boxes plus a few duplicates for ties.
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> pos(0.f, 0.9f), size(0.02f, 0.3f);
  auto random_boxes = [&](int count) {
    Boxes boxes;
    for (int k = 0; k < count; ++k) {
      const float x = pos(rng), y = pos(rng);
      boxes.insert(boxes.end(), {x, y, x + size(rng), y + size(rng)});
    }
    return boxes;
  };
  Boxes gts = random_boxes(500);
  Boxes priors = random_boxes(600);
  // Exact ties: gts 500..519 repeat gts 0..19, priors 600..619 repeat gts 0, 2, ..., 38.
  const Boxes originals(gts.begin(), gts.begin() + 4 * 40);
  for (int k = 0; k < 20; ++k) {
    gts.insert(gts.end(), originals.begin() + 4 * k, originals.begin() + 4 * k + 4);
    priors.insert(priors.end(), originals.begin() + 8 * k, originals.begin() + 8 * k + 4);
  }
  for (bool per_prediction : {false, true}) {
    const Ints expected = brute_force_match(gts, priors, per_prediction, 0.5f);
    CHECK_EQ(match(gts, priors, per_prediction, 0.5f), expected);
    int matched = 0;
    for (int32_t m : expected) matched += m >= 0 ? 1 : 0;
    CHECK(matched > 400);  // guard: many rounds are exercised (506 priors matched in bipartite)
  }
}

TEST_CASE(match_bruteforce, grid_priors_with_skipped_runs) {
  // SSD-like priors, cell by cell on two feature maps with 3 shapes per cell, against small and
  // large gts: most runs of priors miss a small gt and are skipped by the scan.
  Boxes priors;
  for (int grid : {24, 6}) {
    for (int i = 0; i < grid; ++i) {
      for (int j = 0; j < grid; ++j) {
        const float cx = (j + 0.5f) / grid, cy = (i + 0.5f) / grid;
        for (float size : {1.f / grid, 2.f / grid, 1.5f / grid}) {
          priors.insert(priors.end(), {cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2});
        }
      }
    }
  }
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> pos(0.f, 1.f), size(0.01f, 0.4f);
  std::uniform_int_distribution<int> num_gt(1, 12);
  for (int trial = 0; trial < 60; ++trial) {
    Boxes gts;
    for (int g = num_gt(rng); g > 0; --g) {
      const float x = pos(rng), y = pos(rng), w = size(rng), h = size(rng);
      gts.insert(gts.end(), {x, y, x + w, y + h});
    }
    const bool per_prediction = trial % 2 == 0;
    CHECK_EQ(match(gts, priors, per_prediction, 0.5f),
             brute_force_match(gts, priors, per_prediction, 0.5f));
  }
}
