// The core's checks of the op's attributes (make_options, the one validator of the table in
// ssd_loss/attributes.h) and of the data (gt offsets, labels, background_label against C).
#include <cmath>
#include <sstream>
#include <string>

#include "ssd_loss/ssd_loss.h"

namespace ssd_loss {

std::string check_gt_offsets(const int64_t* gt_offsets, int64_t num_images, int64_t num_gt) {
  std::ostringstream msg;
  if (gt_offsets[0] != 0) {
    msg << "gt offsets (LoD of gt_box or running sum of gt_lengths): expected to start at 0, "
        << "received " << gt_offsets[0];
    return msg.str();
  }
  for (int64_t i = 0; i < num_images; ++i) {
    if (gt_offsets[i + 1] < gt_offsets[i]) {
      msg << "gt offsets (LoD of gt_box or running sum of gt_lengths): expected non-decreasing "
          << "values, received " << gt_offsets[i + 1] << " after " << gt_offsets[i]
          << " at image " << i;
      return msg.str();
    }
  }
  if (gt_offsets[num_images] != num_gt) {
    msg << "gt offsets (LoD of gt_box or running sum of gt_lengths): expected to end at the "
        << "number of gt_box rows " << num_gt << ", received " << gt_offsets[num_images];
    return msg.str();
  }
  return {};
}

std::string check_labels(const int64_t* gt_label, int64_t num_gt, int64_t num_classes) {
  for (int64_t g = 0; g < num_gt; ++g) {
    if (gt_label[g] < 0 || gt_label[g] >= num_classes) {
      std::ostringstream msg;
      msg << "gt_label: expected class ids in [0, " << num_classes << ") (C = confidence.shape[2]), "
          << "received " << gt_label[g] << " at row " << g;
      return msg.str();
    }
  }
  return {};
}

std::string check_background_label(int64_t background_label, int64_t num_classes) {
  if (background_label >= 0 && background_label < num_classes) return {};
  std::ostringstream msg;
  msg << "background_label: expected a class id in [0, " << num_classes
      << ") (C = confidence.shape[2]), received " << background_label;
  return msg.str();
}

namespace {

std::string float_str(float value) {
  std::ostringstream s;
  s << value;
  return s.str();
}

// One check per rule of the table: an empty string, or the message; the value goes to the
// Options field when it passes.
std::string apply(const char*, int value, rule::Any, int64_t* out) {
  *out = value;
  return {};
}

std::string apply(const char* name, int value, rule::AtLeastZero r, int64_t* out) {
  if (value < 0) {
    return std::string(name) + ": expected an int >= 0" + r.note + ", received " +
           std::to_string(value);
  }
  *out = value;
  return {};
}

std::string apply(const char* name, float value, rule::UnitInterval, float* out) {
  if (!(value >= 0.0f && value <= 1.0f)) {
    return std::string(name) + ": expected a number in [0, 1], received " + float_str(value);
  }
  *out = value;
  return {};
}

std::string apply(const char* name, float value, rule::Finite, float* out) {
  if (!std::isfinite(value)) {
    return std::string(name) + ": expected a finite number (as float32), received " +
           float_str(value);
  }
  *out = value;
  return {};
}

std::string apply(const char* name, float value, rule::Positive, float* out) {
  std::string err = apply(name, value, rule::Finite{}, out);
  if (err.empty() && !(value > 0.0f)) {
    err = std::string(name) + ": expected a number > 0, received " + float_str(value);
  }
  return err;
}

template <typename E>
std::string apply(const char* name, const std::string& value, rule::OneOf, E* out) {
  std::string expected;
  for (const auto& choice : choices(*out)) {
    if (value == choice.second) {
      *out = choice.first;
      return {};
    }
    expected += (expected.empty() ? "'" : ", '") + std::string(choice.second) + "'";
  }
  return std::string(name) + ": expected one of " + expected + ", received '" + value + "'";
}

// The rules between attributes.
std::string check_combination(const Attributes& a, const Options& opt) {
  if (opt.mining_type == MiningType::kHardExample) {
    if (opt.sample_size == 0) {
      return "sample_size: expected an int > 0 with mining_type 'hard_example' (the priors kept "
             "per image), received 0 (not given)";
    }
    if (opt.min_negatives_per_image != 0 || opt.neg_overlap_mode != NegOverlapMode::kFluid) {
      return "min_negatives_per_image, neg_overlap_mode: apply to mining_type 'max_negative' "
             "only; received mining_type 'hard_example' with min_negatives_per_image " +
             std::to_string(a.min_negatives_per_image) + ", neg_overlap_mode '" +
             a.neg_overlap_mode + "'";
    }
  }
  return {};
}

}  // namespace

// Every value rule of the op's attributes lives here, so that the Python wrapper (which asks _core
// at graph-build time), the op (also in a saved program run later) and _core give the same message
// for the same value. The floats are checked as the float32 the op receives.
std::string make_options(const Attributes& attributes, Options* options) {
  Options opt;
  std::string err;
#define SSD_LOSS_APPLY_RULE(name, attr_type, option_type, default_value, rule) \
  if (err.empty()) err = apply(#name, attributes.name, rule, &opt.name);
  SSD_LOSS_ATTRIBUTES(SSD_LOSS_APPLY_RULE)
#undef SSD_LOSS_APPLY_RULE
  if (err.empty()) err = check_combination(attributes, opt);
  if (err.empty()) *options = opt;
  return err;
}

}  // namespace ssd_loss
