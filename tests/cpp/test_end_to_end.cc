// Forward and backward through the core API on the worked examples of docs/semantics.md §9
// (numbers printed by the real fluid 1.8.5 CPU operator, 6 significant digits), plus the
// deliberate deviations of §11.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "check.h"
#include "problem.h"
#include "ssd_loss/ssd_loss.h"

namespace {

using Ints = std::vector<int32_t>;

// The agreement criterion of semantics §10 (rtol 2e-5, atol 1e-6); the 6-digit printouts are well
// inside it.
template <typename T>
void expect_close(const char* file, int line, const std::string& what, const std::vector<T>& actual,
                  const std::vector<double>& expected) {
  if (actual.size() != expected.size()) {
    check::fail(file, line, what + ": size " + check::show(actual.size()) + " vs " +
                                check::show(expected.size()));
    return;
  }
  for (size_t k = 0; k < actual.size(); ++k) {
    const double a = static_cast<double>(actual[k]), e = expected[k];
    if (!(std::fabs(a - e) <= 1e-6 + 2e-5 * std::fabs(e))) {
      check::fail(file, line, what + "[" + check::show(k) + "]: " + check::show(a) + " vs " +
                                  check::show(e));
    }
  }
}
#define EXPECT_CLOSE(actual, ...) expect_close(__FILE__, __LINE__, #actual, actual, __VA_ARGS__)

// Common inputs of semantics §9: N = 1, Np = 4, C = 3, one gt of class 1, variances as a [4, 4]
// tensor.
template <typename T>
test::Problem<T> example_e1() {
  test::Problem<T> pb;
  pb.sizes = {1, 4, 3};
  pb.prior_box = {0, 0, .5, .5, 0, 0, .5, .6, .5, .5, 1, 1, .25, .25, .75, .75};
  for (int p = 0; p < 4; ++p) pb.prior_var.insert(pb.prior_var.end(), {.1, .1, .2, .2});
  pb.gt_box = {0, 0, .5, .5};
  pb.gt_label = {1};
  pb.gt_offsets = {0, 1};
  pb.location = {.1, -.2, .3, 0, 0, 0, 0, 0, .5, .5, .5, .5, 1, 2, -3, 0};
  pb.confidence = {1, 2, 0, .5, 0, 0, 0, 1, 3, 2, 0, 1};
  return pb;
}

// E7: image 0 is E1's; image 1 has E1's location/confidence rows in reversed prior order and two
// gts, of classes 2 and 1.
template <typename T>
test::Problem<T> example_e7() {
  test::Problem<T> pb = example_e1<T>();
  pb.sizes.num_images = 2;
  const std::vector<T> loc0 = pb.location, conf0 = pb.confidence;
  for (int p = 3; p >= 0; --p) {
    pb.location.insert(pb.location.end(), loc0.begin() + 4 * p, loc0.begin() + 4 * p + 4);
    pb.confidence.insert(pb.confidence.end(), conf0.begin() + 3 * p, conf0.begin() + 3 * p + 3);
  }
  pb.gt_box.insert(pb.gt_box.end(), {.5, .5, 1, 1, .2, .3, .8, .7});
  pb.gt_label = {1, 2, 1};
  pb.gt_offsets = {0, 1, 3};
  return pb;
}

template <typename T>
void check_e1() {
  const test::Result<T> r = test::run(example_e1<T>());
  CHECK_EQ(r.match, (Ints{0, 0, -1, -1}));
  CHECK_EQ(r.target_class, (Ints{1, 1, 0, 0}));  // positives of class 1, negatives {2, 3}
  CHECK_EQ(r.normalizer[0], T(2));
  EXPECT_CLOSE(r.loss, {3.05609});
  EXPECT_CLOSE(r.loc_target, {0, 0, 0, 0, 0, -.833333, 0, -.911608, 0, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_CLOSE(r.grad_location, {.05, -.1, .15, 0, 0, .416667, 0, .455804, 0, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_CLOSE(r.grad_confidence, {.122364, -.16738, .0450153, .225931, -.362966, .137034,
                                   -.478995, .0570976, .421897, -.16738, .0450153, .122364});
}

// One row of the §9 table: E1 with some options (or the gt label) changed.
struct Variant {
  const char* name;
  void (*apply)(ssd_loss::Options&);
  int64_t gt_label;
  double loss;
  Ints target_class;
};

template <typename T>
void check_variants() {
  using ssd_loss::MatchType;
  const Variant variants[] = {
      {"E2 bipartite", [](ssd_loss::Options& o) { o.match_type = MatchType::kBipartite; }, 1,
       4.84943, {1, 0, 0, 0}},
      {"E3 bipartite ratio 1",
       [](ssd_loss::Options& o) {
         o.match_type = MatchType::kBipartite;
         o.neg_pos_ratio = 1.f;
       },
       1, 3.64745, {1, -1, 0, -1}},
      {"E4 background 2", [](ssd_loss::Options& o) { o.background_label = 2; }, 1, 2.05609,
       {1, 1, 2, 2}},
      {"E5 weights, no normalize",
       [](ssd_loss::Options& o) {
         o.normalization = ssd_loss::Normalization::kNone;
         o.loc_loss_weight = 2.f;
         o.conf_loss_weight = .5f;
       },
       1, 4.30519, {1, 1, 0, 0}},
      {"E6 threshold .9", [](ssd_loss::Options& o) { o.overlap_threshold = .9f; }, 1, 4.84943,
       {1, 0, 0, 0}},
      {"E12 gt of the background class", [](ssd_loss::Options&) {}, 0, 3.30609, {0, 0, 0, 0}},
      {"E13 bipartite ratio .5",
       [](ssd_loss::Options& o) {
         o.match_type = MatchType::kBipartite;
         o.neg_pos_ratio = .5f;
       },
       1, 0.477606, {1, -1, -1, -1}},
      {"E14 threshold 0", [](ssd_loss::Options& o) { o.overlap_threshold = 0.f; }, 1, 7.53739,
       {1, 1, 0, 1}},
  };
  for (const Variant& v : variants) {
    test::Problem<T> pb = example_e1<T>();
    v.apply(pb.options);
    pb.gt_label = {v.gt_label};
    const test::Result<T> r = test::run(pb);
    expect_close(__FILE__, __LINE__, std::string(v.name) + " loss", r.loss, {v.loss});
    if (r.target_class != v.target_class) {
      check::fail(__FILE__, __LINE__, std::string(v.name) + " target_class " +
                                          check::show(r.target_class));
    }
  }
}

}  // namespace

TEST_CASE(examples, e1_forward_and_backward_float) { check_e1<float>(); }
TEST_CASE(examples, e1_forward_and_backward_double) { check_e1<double>(); }
TEST_CASE(examples, e2_to_e14_losses_float) { check_variants<float>(); }
TEST_CASE(examples, e2_to_e14_losses_double) { check_variants<double>(); }

TEST_CASE(examples, e2_and_e3_gradients) {
  test::Problem<float> pb = example_e1<float>();
  pb.options.match_type = ssd_loss::MatchType::kBipartite;
  test::Result<float> r = test::run(pb);
  EXPECT_CLOSE(r.grad_location, {.1, -.2, .3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_CLOSE(r.grad_confidence, {.244728, -.334759, .0900306, -.548137, .274069, .274069,
                                   -.95799, .114195, .843795, -.334759, .0900306, .244728});
  pb.options.neg_pos_ratio = 1.f;
  r = test::run(pb);
  EXPECT_CLOSE(r.grad_confidence,
               {.244728, -.334759, .0900306, 0, 0, 0, -.95799, .114195, .843795, 0, 0, 0});
}

TEST_CASE(examples, e5_gradient_uses_weights_without_normalizer) {
  test::Problem<float> pb = example_e1<float>();
  pb.options.normalization = ssd_loss::Normalization::kNone;
  pb.options.loc_loss_weight = 2.f;
  pb.options.conf_loss_weight = .5f;
  const test::Result<float> r = test::run(pb);
  CHECK_EQ(r.normalizer[0], 1.f);
  EXPECT_CLOSE(r.grad_location, {.2, -.4, .6, 0, 0, 1.66667, 0, 1.82322, 0, 0, 0, 0, 0, 0, 0, 0});
}

TEST_CASE(examples, e7_two_images_share_the_batch_normalizer) {
  const test::Problem<float> pb = example_e7<float>();
  const test::Result<float> r = test::run(pb);
  CHECK_EQ(r.match, (Ints{0, 0, -1, -1, -1, -1, 0, 1}));
  CHECK_EQ(r.normalizer[0], 4.f);  // 2 + 2 positives over the batch
  EXPECT_CLOSE(r.loss, {1.52804, 1.52680});
  const std::vector<float> grad_image1(r.grad_location.begin() + 16, r.grad_location.end());
  EXPECT_CLOSE(grad_image1, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, .025, -.05, -.152902, .25});
}

TEST_CASE(examples, upstream_gradient_scales_each_image) {
  test::Problem<float> pb = example_e7<float>();
  const test::Result<float> ones = test::run(pb);
  pb.grad_loss = {2.f, -1.f};
  const test::Result<float> scaled = test::run(pb);
  // Scaling by 2 and -1 is exact in floating point, so the comparison can be exact too.
  for (size_t k = 0; k < ones.grad_confidence.size(); ++k) {
    const float factor = k < ones.grad_confidence.size() / 2 ? 2.f : -1.f;
    CHECK_EQ(scaled.grad_confidence[k], factor * ones.grad_confidence[k]);
  }
  for (size_t k = 0; k < ones.grad_location.size(); ++k) {
    const float factor = k < ones.grad_location.size() / 2 ? 2.f : -1.f;
    CHECK_EQ(scaled.grad_location[k], factor * ones.grad_location[k]);
  }
}

TEST_CASE(examples, e10_cross_entropy_saturates_at_64) {
  test::Problem<float> pb;
  pb.sizes = {1, 1, 3};
  pb.prior_box = {0, 0, 1, 1};
  pb.prior_var = {1, 1, 1, 1};
  pb.gt_box = {0, 0, 1, 1};
  pb.gt_label = {1};
  pb.gt_offsets = {0, 1};
  pb.location = {0, 0, 0, 0};
  pb.confidence = {100, 0, 0};
  const test::Result<float> r = test::run(pb);
  CHECK_EQ(r.match, (Ints{0}));
  CHECK_EQ(r.loss[0], 64.f);  // the true cross-entropy would be 100
  EXPECT_CLOSE(r.grad_location, {0, 0, 0, 0});
  CHECK_EQ(r.grad_confidence[0], 1.f);
  CHECK_EQ(r.grad_confidence[1], -1.f);
  CHECK_NEAR(r.grad_confidence[2], 1.60381e-28, 1e-32);
}

TEST_CASE(examples, e11_inclusive_threshold) {
  test::Problem<float> pb;
  pb.sizes = {1, 2, 2};
  pb.prior_box = {0, 0, 1, 1, 0, 0, 1, .5};
  pb.prior_var = {1, 1, 1, 1};  // a shared 4-value variance
  pb.gt_box = {0, 0, 1, 1};
  pb.gt_label = {1};
  pb.gt_offsets = {0, 1};
  pb.location.assign(8, 0.f);
  pb.confidence.assign(4, 0.f);
  const test::Result<float> r = test::run(pb);
  CHECK_EQ(r.match, (Ints{0, 0}));
  EXPECT_CLOSE(r.loss, {0.875760});
  EXPECT_CLOSE(r.grad_location, {0, 0, 0, 0, 0, -.25, 0, -.346574});
  EXPECT_CLOSE(r.grad_confidence, {.25, -.25, .25, -.25});
}

TEST_CASE(examples, e8_e9_no_positive_gives_zero_not_nan) {
  // Semantics §11 deviation: fluid gives NaN for E8 (0/0); the divisor is clamped at 1 here.
  for (auto normalization : {ssd_loss::Normalization::kValid, ssd_loss::Normalization::kNone}) {
    test::Problem<float> pb = example_e1<float>();
    pb.gt_box = {2, 2, 3, 3};
    pb.options.normalization = normalization;
    const test::Result<float> r = test::run(pb);
    CHECK_EQ(r.match, (Ints{-1, -1, -1, -1}));
    CHECK_EQ(r.target_class, (Ints{-1, -1, -1, -1}));  // P = 0 mines no negative
    CHECK_EQ(r.normalizer[0], 1.f);
    CHECK_EQ(r.loss[0], 0.f);
    for (float g : r.grad_location) CHECK_EQ(g, 0.f);
    for (float g : r.grad_confidence) CHECK_EQ(g, 0.f);
  }
}

TEST_CASE(examples, image_without_gt_contributes_nothing) {
  // Semantics §11 deviation: an empty image is allowed (fluid crashes when N >= 2). Image 0 is
  // empty, image 1 is E1, so Z = 2 and image 1's loss is E1's.
  test::Problem<float> pb = example_e1<float>();
  pb.sizes.num_images = 2;
  const std::vector<float> loc = pb.location, conf = pb.confidence;
  pb.location.insert(pb.location.end(), loc.begin(), loc.end());
  pb.confidence.insert(pb.confidence.end(), conf.begin(), conf.end());
  pb.gt_offsets = {0, 0, 1};
  const test::Result<float> r = test::run(pb);
  CHECK_EQ(r.normalizer[0], 2.f);
  CHECK_EQ(r.loss[0], 0.f);
  EXPECT_CLOSE(r.loss, {0, 3.05609});
  for (int k = 0; k < 4; ++k) CHECK_EQ(r.target_class[k], -1);
  for (int k = 0; k < 16; ++k) CHECK_EQ(r.grad_location[k], 0.f);
  for (int k = 0; k < 12; ++k) CHECK_EQ(r.grad_confidence[k], 0.f);
}

TEST_CASE(examples, nan_input_reaches_the_loss) {
  // A NaN location of an unmatched prior has weight 0 in the loss, yet still poisons its image
  // (0 * NaN), as in the original; the other image of the batch is unaffected.
  test::Problem<float> pb = example_e7<float>();
  pb.location[4 * 2] = std::nanf("");  // image 0, prior 2: unmatched
  const test::Result<float> r = test::run(pb);
  CHECK_EQ(r.match[2], -1);
  CHECK(std::isnan(r.loss[0]));
  CHECK(!std::isnan(r.loss[1]));
  for (int k = 0; k < 4; ++k) CHECK_EQ(r.grad_location[4 * 2 + k], 0.f);
}

TEST_CASE(examples, backward_outputs_are_optional) {
  const test::Problem<float> pb = example_e1<float>();
  const test::Result<float> full = test::run(pb);
  const std::vector<float> ones(1, 1.f);
  ssd_loss::BackwardInputs<float> in;
  in.location = pb.location.data();
  in.confidence = pb.confidence.data();
  in.grad_loss = ones.data();
  in.normalizer = full.normalizer.data();
  in.match = full.match.data();
  in.target_class = full.target_class.data();
  in.loc_target = full.loc_target.data();
  in.softmax_stats = full.softmax_stats.data();
  std::vector<float> grad_conf(12, -1.f), grad_loc(16, -1.f);
  ssd_loss::BackwardOutputs<float> conf_only;
  conf_only.grad_confidence = grad_conf.data();
  ssd_loss::backward(in, pb.sizes, pb.options, conf_only);
  CHECK_EQ(grad_conf, full.grad_confidence);
  ssd_loss::BackwardOutputs<float> loc_only;
  loc_only.grad_location = grad_loc.data();
  ssd_loss::backward(in, pb.sizes, pb.options, loc_only);
  CHECK_EQ(grad_loc, full.grad_location);
}
