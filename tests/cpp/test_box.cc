// Box geometry (docs/semantics.md §3.1, §3.5, §3.7): IoU, encoding, smooth L1, and the clamped
// softmax.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "check.h"
#include "core/cpu_kernels.h"
#include "ssd_loss/box.h"
#include "ssd_loss/softmax.h"

namespace {

using ssd_loss::is_overlap;
using ssd_loss::iou;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

}  // namespace

// ---- IoU -----------------------------------------------------------------------------------------

TEST_CASE(iou, identical_boxes_give_one) {
  const float a[4] = {0.1f, 0.2f, 0.5f, 0.7f};
  CHECK_NEAR(iou(a, a), 1.0, 1e-6);
  const double b[4] = {0.1, 0.2, 0.5, 0.7};
  CHECK_NEAR(iou(b, b), 1.0, 1e-9);
}

TEST_CASE(iou, disjoint_and_touching_boxes_give_zero) {
  const float a[4] = {0.f, 0.f, 0.5f, 0.5f};
  const float far[4] = {0.6f, 0.6f, 1.f, 1.f};
  const float touching[4] = {0.5f, 0.f, 1.f, 0.5f};  // shares the edge x = 0.5
  CHECK_EQ(iou(a, far), 0.f);
  CHECK_EQ(iou(far, a), 0.f);
  CHECK_EQ(iou(a, touching), 0.f);
  CHECK(!is_overlap(iou(a, far)));
}

TEST_CASE(iou, zero_area_identical_boxes_give_zero_not_nan) {
  // 0 / (0 + 1e-10) = 0: the epsilon is what keeps this from being 0/0.
  const float point[4] = {0.3f, 0.3f, 0.3f, 0.3f};
  const float line[4] = {0.1f, 0.1f, 0.1f, 0.5f};
  CHECK_EQ(iou(point, point), 0.f);
  CHECK_EQ(iou(line, line), 0.f);
  const double dpoint[4] = {0.3, 0.3, 0.3, 0.3};
  CHECK_EQ(iou(dpoint, dpoint), 0.0);
  CHECK(!is_overlap(iou(point, point)));
}

TEST_CASE(iou, tiny_identical_boxes_show_the_epsilon) {
  // Semantics §3.1: identical boxes of area 1e-9 give 1e-9 / (1e-9 + 1e-10) = 1 / 1.1, not 1.
  const double a[4] = {0.0, 0.0, 1e-4, 1e-5};
  CHECK_NEAR(iou(a, a), 1.0 / 1.1, 1e-6);
}

TEST_CASE(iou, hand_computed_partial_overlaps) {
  const float gt[4] = {0.f, 0.f, 0.5f, 0.5f};
  const float tall[4] = {0.f, 0.f, 0.5f, 0.6f};          // 0.25 / 0.3
  const float shifted[4] = {0.25f, 0.25f, 0.75f, 0.75f};  // 0.0625 / 0.4375
  CHECK_NEAR(iou(gt, tall), 0.25 / 0.3, 1e-6);
  CHECK_NEAR(iou(gt, shifted), 1.0 / 7.0, 1e-6);
  // Offset in both axes: areas 0.12 and 0.12, intersection 0.2 x 0.3 = 0.06, union 0.18.
  const float a[4] = {0.1f, 0.2f, 0.4f, 0.6f};
  const float b[4] = {0.2f, 0.1f, 0.5f, 0.5f};
  CHECK_NEAR(iou(a, b), 1.0 / 3.0, 1e-6);
  CHECK_EQ(iou(a, b), iou(b, a));
}

TEST_CASE(iou, inverted_and_nan_boxes_never_match) {
  const float unit[4] = {0.f, 0.f, 1.f, 1.f};
  const float inverted[4] = {0.5f, 0.5f, 0.2f, 0.2f};      // xmax < xmin and ymax < ymin
  const float inverted_x[4] = {0.5f, 0.f, 0.2f, 1.f};      // negative area
  const float inverted_x2[4] = {0.6f, 0.f, 0.1f, 1.f};     // with the above: negative union
  CHECK(!is_overlap(iou(inverted, inverted)));
  CHECK(!is_overlap(iou(inverted, unit)));
  CHECK(!is_overlap(iou(unit, inverted_x)));
  CHECK(!is_overlap(iou(inverted_x, inverted_x2)));
  CHECK(!(iou(inverted_x, inverted_x2) > 0.f));  // 0 / negative union: -0 at most

  const float nan_x[4] = {kNaN, 0.f, 1.f, 1.f};
  const float nan_y[4] = {0.f, 0.f, 1.f, kNaN};
  CHECK(std::isnan(iou(nan_x, unit)));
  CHECK(std::isnan(iou(unit, nan_y)));
  CHECK(!is_overlap(iou(nan_x, unit)));
  CHECK(!is_overlap(iou(unit, nan_y)));
  CHECK(!is_overlap(iou(nan_x, nan_x)));
}

TEST_CASE(iou, overlap_cutoff_is_inclusive_1e_6) {
  CHECK(is_overlap(1e-6f));
  CHECK(!is_overlap(std::nextafter(1e-6f, 0.f)));
  CHECK(!is_overlap(0.f));
  CHECK(!is_overlap(-0.f));
  CHECK(!is_overlap(kNaN));
  CHECK(is_overlap(1.0));
}

// ---- encoding ------------------------------------------------------------------------------------

TEST_CASE(encode, hand_computed_with_variances) {
  // prior: w = h = 0.4, centre (0.3, 0.4); gt: w 0.4, h 0.6, centre (0.4, 0.5).
  const double prior[4] = {0.1, 0.2, 0.5, 0.6};
  const double gt[4] = {0.2, 0.2, 0.6, 0.8};
  const double var[4] = {0.1, 0.2, 0.3, 0.4};
  double t[4];
  ssd_loss::encode(gt, prior, var, t);
  CHECK_NEAR(t[0], (0.1 / 0.4) / 0.1, 1e-9);        // 2.5
  CHECK_NEAR(t[1], (0.1 / 0.4) / 0.2, 1e-9);        // 1.25
  CHECK_NEAR(t[2], 0.0, 1e-9);                      // log(1)
  CHECK_NEAR(t[3], std::log(1.5) / 0.4, 1e-9);      // 1.013663

  const float fprior[4] = {0.1f, 0.2f, 0.5f, 0.6f};
  const float fgt[4] = {0.2f, 0.2f, 0.6f, 0.8f};
  const float fvar[4] = {0.1f, 0.2f, 0.3f, 0.4f};
  float ft[4];
  ssd_loss::encode(fgt, fprior, fvar, ft);
  for (int k = 0; k < 4; ++k) CHECK_NEAR(ft[k], t[k], 1e-5);
}

TEST_CASE(encode, spec_e1_target_of_prior_1) {
  // Semantics §9: prior [0,0,.5,.6] against gt [0,0,.5,.5] with variance (.1,.1,.2,.2).
  const float prior[4] = {0.f, 0.f, 0.5f, 0.6f};
  const float gt[4] = {0.f, 0.f, 0.5f, 0.5f};
  const float var[4] = {0.1f, 0.1f, 0.2f, 0.2f};
  float t[4];
  ssd_loss::encode(gt, prior, var, t);
  CHECK_NEAR(t[0], 0.0, 1e-7);
  CHECK_NEAR(t[1], -0.833333, 1e-6);
  CHECK_NEAR(t[2], 0.0, 1e-7);
  CHECK_NEAR(t[3], -0.911608, 1e-6);
}

TEST_CASE(encode, prior_centre_is_min_plus_half_size) {
  // For this prior, float32 min + (max - min)/2 and (min + max)/2 differ by one ulp; the x
  // target must follow the former bit for bit (semantics §3.5), the size division before the
  // variance.
  volatile float xmin = 0.0273875967f, xmax = 0.534413934f;  // volatile: no constant folding
  const float prior[4] = {xmin, 0.f, xmax, 1.f};
  const float gt[4] = {0.1f, 0.2f, 0.7f, 0.9f};
  const float var[4] = {0.1f, 0.2f, 0.3f, 0.4f};
  const float pw = xmax - xmin;
  const float centre_fluid = xmin + pw / 2.f;
  const float centre_other = (xmin + xmax) / 2.f;
  CHECK(centre_fluid != centre_other);  // guard: the case discriminates the two formulas
  const float gcx = (gt[0] + gt[2]) / 2.f;
  volatile float scaled = (gcx - centre_fluid) / pw;
  const float expected = scaled / var[0];
  volatile float scaled_other = (gcx - centre_other) / pw;
  const float other = scaled_other / var[0];
  float t[4];
  ssd_loss::encode(gt, prior, var, t);
  CHECK_EQ(t[0], expected);
  CHECK(t[0] != other);
}

TEST_CASE(encode, identical_boxes_give_zero_targets) {
  const float var[4] = {0.1f, 0.1f, 0.2f, 0.2f};
  float t[4];
  // Exactly representable coordinates: both centre formulas agree, so the targets are exact 0.
  const float dyadic[4] = {0.25f, 0.5f, 0.75f, 1.f};
  ssd_loss::encode(dyadic, dyadic, var, t);
  for (int k = 0; k < 4; ++k) CHECK_EQ(t[k], 0.f);
  // Otherwise the prior centre (min + size/2) and the gt centre ((min + max)/2) may differ in the
  // last bit, so tx, ty are only near 0 (-7.45e-7 here), as in fluid.
  const float box[4] = {0.2f, 0.3f, 0.6f, 0.9f};
  ssd_loss::encode(box, box, var, t);
  for (int k = 0; k < 4; ++k) CHECK_NEAR(t[k], 0.0, 1e-5);
}

// ---- smooth L1 -----------------------------------------------------------------------------------

TEST_CASE(smooth_l1, value) {
  using ssd_loss::smooth_l1;
  CHECK_EQ(smooth_l1(0.f), 0.f);
  CHECK_EQ(smooth_l1(0.5f), 0.125f);
  CHECK_EQ(smooth_l1(-0.5f), 0.125f);
  CHECK_EQ(smooth_l1(1.f), 0.5f);  // |x| < 1 is strict: linear branch, continuous at 1
  CHECK_EQ(smooth_l1(-1.f), 0.5f);
  CHECK_EQ(smooth_l1(2.f), 1.5f);
  CHECK_EQ(smooth_l1(-3.f), 2.5f);
  CHECK_NEAR(smooth_l1(0.3), 0.045, 1e-15);
  CHECK(std::isnan(smooth_l1(kNaN)));
}

TEST_CASE(smooth_l1, gradient) {
  using ssd_loss::smooth_l1_grad;
  CHECK_EQ(smooth_l1_grad(0.f), 0.f);
  CHECK_EQ(smooth_l1_grad(0.5f), 0.5f);
  CHECK_EQ(smooth_l1_grad(-0.3f), -0.3f);
  CHECK_EQ(smooth_l1_grad(1.f), 1.f);
  CHECK_EQ(smooth_l1_grad(-1.f), -1.f);
  CHECK_EQ(smooth_l1_grad(2.f), 1.f);
  CHECK_EQ(smooth_l1_grad(-7.5), -1.0);
  CHECK(std::isnan(smooth_l1_grad(kNaN)));
}

TEST_CASE(smooth_l1, gradient_matches_finite_differences) {
  using ssd_loss::smooth_l1;
  using ssd_loss::smooth_l1_grad;
  const double xs[] = {-2.5, -0.7, -0.1, 0.2, 0.9, 1.3, 4.0};
  const double h = 1e-6;
  for (double x : xs) {
    CHECK_NEAR(smooth_l1_grad(x), (smooth_l1(x + h) - smooth_l1(x - h)) / (2 * h), 1e-6);
  }
}

// ---- clamped softmax -----------------------------------------------------------------------------

TEST_CASE(softmax, clamp_keeps_nan_and_floors_at_minus_64) {
  using ssd_loss::clamp_shifted_logit;
  CHECK_EQ(clamp_shifted_logit(-100.f), -64.f);
  CHECK_EQ(clamp_shifted_logit(-64.f), -64.f);
  CHECK_EQ(clamp_shifted_logit(-3.f), -3.f);
  CHECK(std::isnan(clamp_shifted_logit(kNaN)));
}

TEST_CASE(softmax, cross_entropy_saturates_near_64) {
  // Semantics §9, E10: logits (100, 0, 0), label 1: the true CE is 100, the clamped one 64.
  const float logits[3] = {100.f, 0.f, 0.f};
  const float sum = 1.f + 2.f * std::exp(-64.f);
  const ssd_loss::SoftmaxStats<float> s{100.f, sum};
  CHECK_NEAR(ssd_loss::cross_entropy(logits, 1, s), 64.0, 1e-5);
  CHECK_NEAR(ssd_loss::cross_entropy(logits, 0, s), 0.0, 1e-6);
  CHECK_NEAR(ssd_loss::softmax_prob(logits[2], s), 1.60381e-28, 1e-32);
}

TEST_CASE(softmax, log_of_a_sum_is_within_an_ulp) {
  // Softmax sums lie in [1, C]; every 61st float of [1, 2^17) against the double logarithm.
  double worst = 0;
  for (float s = 1.f; s < 131072.f; s = std::nextafter(s + s * 7.3e-6f, 1e30f)) {
    const double exact = std::log(static_cast<double>(s));
    const float got = ssd_loss::log_softmax_sum(s);
    if (s == 1.f) {
      CHECK_EQ(got, 0.f);
      continue;
    }
    const double ulp = std::ldexp(1.0, std::ilogb(static_cast<float>(exact)) - 23);
    worst = std::max(worst, std::fabs(got - exact) / ulp);
  }
  CHECK(worst <= 1.0);
  CHECK(std::isnan(ssd_loss::log_softmax_sum(kNaN)));
}

TEST_CASE(softmax, cross_entropy_is_log_sum_minus_the_shifted_logit) {
  const float logits[4] = {0.5f, -1.f, 2.f, -70.f};
  float sum = 0.f;
  for (float x : logits) sum += std::exp(ssd_loss::clamp_shifted_logit(x - 2.f));
  const ssd_loss::SoftmaxStats<float> s{2.f, sum};
  for (int label = 0; label < 4; ++label) {
    const double expected = std::log(static_cast<double>(sum)) -
                            std::max(static_cast<double>(logits[label]) - 2.0, -64.0);
    CHECK_NEAR(ssd_loss::cross_entropy(logits, label, s), expected, 2e-6);
  }
  const ssd_loss::SoftmaxStats<double> sd{2.0, static_cast<double>(sum)};
  const double logits_d[2] = {0.5, 2.0};
  CHECK_NEAR(ssd_loss::cross_entropy(logits_d, 0, sd), std::log(sd.sum) + 1.5, 1e-12);
}

TEST_CASE(softmax, vector_rows_equal_the_scalar_formula_bit_for_bit) {
  // softmax_rows (8 lanes per vector, 8 rows per block, transposed or not, padded copies for the
  // last rows) against the one-row-at-a-time definition: lane l sums the exps of classes l, l + 8,
  // ... in order, the lanes combine as ((0+1)+(2+3))+((4+5)+(6+7)), the max keeps the first of
  // equal values.
  const float kInf = std::numeric_limits<float>::infinity();
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 3.f);
  std::uniform_int_distribution<int> special(0, 40);
  const float specials[] = {kNaN, kInf, -kInf, 0.f, -0.f, 100.f, -100.f};
  // Up to C = 128 full blocks of 8 rows go through the transposed path, larger C row by row.
  std::vector<int> class_counts;
  for (int nc = 1; nc <= 41; ++nc) class_counts.push_back(nc);
  for (int nc : {63, 64, 65, 81, 120, 127, 128, 129, 130}) class_counts.push_back(nc);
  for (int nc : class_counts) {
    for (int rows : {1, 7, 8, 9, 16, 23}) {
      std::vector<float> x(rows * nc);
      for (float& v : x) {
        const int k = special(rng);
        v = k < 7 ? specials[k] : normal(rng);
      }
      std::vector<int32_t> labels(rows);
      for (int r = 0; r < rows; ++r) labels[r] = (r * 7 + nc) % nc;
      std::vector<float> stats(2 * rows), ce(rows);
      ssd_loss::cpu::softmax_rows(x.data(), rows, nc, labels.data(), stats.data(), ce.data());
      for (int r = 0; r < rows; ++r) {
        const float* row = x.data() + r * nc;
        float lane_max[8], lane_sum[8] = {};
        for (int l = 0; l < 8; ++l) lane_max[l] = row[0];
        for (int c = 0; c < nc; ++c) {
          lane_max[c % 8] = row[c] > lane_max[c % 8] ? row[c] : lane_max[c % 8];
        }
        float m = lane_max[0];
        for (int l = 1; l < 8; ++l) m = lane_max[l] > m ? lane_max[l] : m;
        for (int c = 0; c < nc; ++c) {
          lane_sum[c % 8] += ssd_loss::exp_shifted_logit(ssd_loss::clamp_shifted_logit(row[c] - m));
        }
        const float sum = ((lane_sum[0] + lane_sum[1]) + (lane_sum[2] + lane_sum[3])) +
                          ((lane_sum[4] + lane_sum[5]) + (lane_sum[6] + lane_sum[7]));
        const float loss = ssd_loss::cross_entropy(row, labels[r], {m, sum});
        const auto same = [](float a, float b) {
          return (a != a && b != b) || ssd_loss::float_bits(a) == ssd_loss::float_bits(b);
        };
        if (!same(stats[2 * r], m) || !same(stats[2 * r + 1], sum) || !same(ce[r], loss)) {
          CHECK_EQ(stats[2 * r], m);
          CHECK_EQ(stats[2 * r + 1], sum);
          CHECK_EQ(ce[r], loss);
        }
      }
    }
  }
}

TEST_CASE(softmax, exp_of_a_shifted_logit_is_within_an_ulp) {
  // Every 7th float of [-64, 0] against the double exponential.
  double worst = 0;
  int count = 0;
  for (float z = -64.f; z <= 0.f; ++count) {
    const double exact = std::exp(static_cast<double>(z));
    const double ulp = std::ldexp(1.0, std::ilogb(static_cast<float>(exact)) - 23);
    worst = std::max(worst, std::fabs(ssd_loss::exp_shifted_logit(z) - exact) / ulp);
    for (int k = 0; k < 7; ++k) z = std::nextafter(z, 1.f);
  }
  CHECK(count > 1000000);
  CHECK(worst <= 1.0);  // 0.999 ulp at worst over every float of [-64, 0]
  CHECK_EQ(ssd_loss::exp_shifted_logit(0.f), 1.f);
  CHECK(std::isnan(ssd_loss::exp_shifted_logit(kNaN)));
}
