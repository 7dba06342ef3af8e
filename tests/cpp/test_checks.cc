// Input checks that only the data can tell (ssd_loss.h): each message must name the argument, the
// expectation and the value received.
#include <cstdint>
#include <string>
#include <vector>

#include "check.h"
#include "ssd_loss/ssd_loss.h"

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string offsets_error(const std::vector<int64_t>& offsets, int64_t num_gt) {
  return ssd_loss::check_gt_offsets(offsets.data(), static_cast<int64_t>(offsets.size()) - 1,
                                    num_gt);
}

}  // namespace

TEST_CASE(checks, valid_gt_offsets_pass) {
  CHECK_EQ(offsets_error({0, 1, 3}, 3), std::string());
  CHECK_EQ(offsets_error({0, 0, 0}, 0), std::string());  // images without gt are allowed
  CHECK_EQ(offsets_error({0, 0, 2, 2}, 2), std::string());
  CHECK_EQ(offsets_error({0}, 0), std::string());  // no image at all
}

TEST_CASE(checks, gt_offsets_must_start_at_zero) {
  const std::string err = offsets_error({1, 3}, 3);
  CHECK(contains(err, "gt offsets"));
  CHECK(contains(err, "expected to start at 0"));
  CHECK(contains(err, "received 1"));
}

TEST_CASE(checks, gt_offsets_must_not_decrease) {
  const std::string err = offsets_error({0, 2, 1, 3}, 3);
  CHECK(contains(err, "gt offsets"));
  CHECK(contains(err, "non-decreasing"));
  CHECK(contains(err, "received 1 after 2 at image 1"));
}

TEST_CASE(checks, gt_offsets_must_end_at_the_gt_count) {
  const std::string err = offsets_error({0, 1, 2}, 3);
  CHECK(contains(err, "gt offsets"));
  CHECK(contains(err, "expected to end at the number of gt_box rows 3"));
  CHECK(contains(err, "received 2"));
  CHECK(contains(offsets_error({0, 4}, 3), "received 4"));
}

TEST_CASE(checks, labels_in_range_pass) {
  const std::vector<int64_t> labels = {0, 2, 1, 2};
  CHECK_EQ(ssd_loss::check_labels(labels.data(), 4, 3), std::string());
  CHECK_EQ(ssd_loss::check_labels(labels.data(), 0, 3), std::string());
}

TEST_CASE(checks, labels_out_of_range_are_reported_with_their_row) {
  const std::vector<int64_t> negative = {0, -1, 1};
  std::string err = ssd_loss::check_labels(negative.data(), 3, 3);
  CHECK(contains(err, "gt_label"));
  CHECK(contains(err, "[0, 3)"));
  CHECK(contains(err, "received -1 at row 1"));

  const std::vector<int64_t> too_big = {0, 1, 2, 3};  // C itself is out of range
  err = ssd_loss::check_labels(too_big.data(), 4, 3);
  CHECK(contains(err, "received 3 at row 3"));

  const std::vector<int64_t> two_bad = {5, -2};  // the first bad row is reported
  err = ssd_loss::check_labels(two_bad.data(), 2, 3);
  CHECK(contains(err, "received 5 at row 0"));
}
