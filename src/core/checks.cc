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

}  // namespace ssd_loss
