#include <cmath>
#include <initializer_list>
#include <sstream>
#include <string>
#include <utility>

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

}  // namespace ssd_loss

namespace ssd_loss {
namespace {

std::string float_str(float value) {
  std::ostringstream s;
  s << value;
  return s.str();
}

template <typename E>
std::string parse_enum(const char* name, const std::string& value,
                       std::initializer_list<std::pair<const char*, E>> choices, E* out) {
  std::string expected;
  for (const auto& choice : choices) {
    if (value == choice.first) {
      *out = choice.second;
      return {};
    }
    expected += (expected.empty() ? "'" : ", '") + std::string(choice.first) + "'";
  }
  return std::string(name) + ": expected one of " + expected + ", received '" + value + "'";
}

}  // namespace

std::string make_options(int64_t background_label, float overlap_threshold, float neg_pos_ratio,
                         float neg_overlap, float loc_loss_weight, float conf_loss_weight,
                         const std::string& match_type, const std::string& mining_type,
                         const std::string& normalization, int64_t sample_size,
                         int64_t min_negatives_per_image, const std::string& neg_overlap_mode,
                         Options* opt) {
  std::string err = parse_enum("match_type", match_type,
                               {{"bipartite", MatchType::kBipartite},
                                {"per_prediction", MatchType::kPerPrediction}},
                               &opt->match_type);
  if (err.empty()) {
    err = parse_enum("mining_type", mining_type,
                     {{"max_negative", MiningType::kMaxNegative},
                      {"hard_example", MiningType::kHardExample}},
                     &opt->mining_type);
  }
  if (err.empty()) {
    err = parse_enum("normalization", normalization,
                     {{"valid", Normalization::kValid}, {"full", Normalization::kFull},
                      {"batch_size", Normalization::kBatchSize}, {"none", Normalization::kNone}},
                     &opt->normalization);
  }
  if (err.empty()) {
    err = parse_enum("neg_overlap_mode", neg_overlap_mode,
                     {{"fluid", NegOverlapMode::kFluid}, {"caffe", NegOverlapMode::kCaffe}},
                     &opt->neg_overlap_mode);
  }
  if (!err.empty()) return err;
  // Every value rule of the op's attributes lives here, so that the Python wrapper (which asks
  // _core at graph-build time), the op (also in a saved program run later) and _core give the same
  // message for the same value. The floats are checked as the float32 the op receives.
  for (const auto& attr : {std::make_pair("overlap_threshold", overlap_threshold),
                           std::make_pair("neg_overlap", neg_overlap)}) {
    if (!(attr.second >= 0.0f && attr.second <= 1.0f)) {
      return std::string(attr.first) + ": expected a number in [0, 1], received " +
             float_str(attr.second);
    }
  }
  for (const auto& attr : {std::make_pair("neg_pos_ratio", neg_pos_ratio),
                           std::make_pair("loc_loss_weight", loc_loss_weight),
                           std::make_pair("conf_loss_weight", conf_loss_weight)}) {
    if (!std::isfinite(attr.second)) {
      return std::string(attr.first) + ": expected a finite number (as float32), received " +
             float_str(attr.second);
    }
  }
  if (!(neg_pos_ratio > 0.0f)) {
    return "neg_pos_ratio: expected a number > 0, received " + float_str(neg_pos_ratio);
  }
  if (sample_size < 0) {
    return "sample_size: expected an int >= 0 (0: not given), received " +
           std::to_string(sample_size);
  }
  if (min_negatives_per_image < 0) {
    return "min_negatives_per_image: expected an int >= 0, received " +
           std::to_string(min_negatives_per_image);
  }
  if (opt->mining_type == MiningType::kHardExample) {
    if (sample_size == 0) {
      return "sample_size: expected an int > 0 with mining_type 'hard_example' (the priors kept "
             "per image), received 0 (not given)";
    }
    if (min_negatives_per_image != 0 || opt->neg_overlap_mode != NegOverlapMode::kFluid) {
      return "min_negatives_per_image, neg_overlap_mode: apply to mining_type 'max_negative' "
             "only; received mining_type 'hard_example' with min_negatives_per_image " +
             std::to_string(min_negatives_per_image) + ", neg_overlap_mode '" + neg_overlap_mode +
             "'";
    }
  }
  opt->background_label = background_label;
  opt->overlap_threshold = overlap_threshold;
  opt->neg_pos_ratio = neg_pos_ratio;
  opt->neg_overlap = neg_overlap;
  opt->loc_loss_weight = loc_loss_weight;
  opt->conf_loss_weight = conf_loss_weight;
  opt->sample_size = sample_size;
  opt->min_negatives_per_image = min_negatives_per_image;
  return {};
}

}  // namespace ssd_loss
