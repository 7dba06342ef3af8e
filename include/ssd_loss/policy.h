// The per-image and per-batch policies of the loss, written once for the CPU core (src/core/,
// src/paddle/, src/python/) and the CUDA kernels (src/cuda/): what hard_example mining does to a
// prior, the batch normalizer, which float labels are class ids, and gt offsets from box counts.
#pragma once

#include <cstdint>

#include "ssd_loss/attributes.h"
#include "ssd_loss/platform.h"

namespace ssd_loss {

// hard_example mining (fluid's mine_hard_examples): a kept unmatched prior becomes a negative (of
// the background class), a matched prior that is not kept loses its match and leaves the loss.
// Returns true when the prior lost its match: the caller then zeroes its loc_target and counts it
// off the image's positives.
SSD_HOST_DEVICE bool apply_hard_example(bool kept, int32_t background, int32_t* match,
                                        int32_t* target_class) {
  if (*match < 0) {
    if (kept) *target_class = background;
    return false;
  }
  if (kept) return false;
  *match = -1;
  *target_class = -1;
  return true;
}

// What every image's loss is divided by (docs/semantics.md §3.8), at least 1. 'valid' is clamped
// at 1, unlike fluid (docs/semantics.md §11): a batch without positives gives 0, not NaN.
SSD_HOST_DEVICE int64_t normalizer(Normalization normalization, int64_t total_positives,
                                   int64_t num_images, int64_t num_priors) {
  int64_t d = 1;
  switch (normalization) {
    case Normalization::kValid: d = total_positives; break;
    case Normalization::kFull: d = num_images * num_priors; break;
    case Normalization::kBatchSize: d = num_images; break;
    case Normalization::kNone: break;
  }
  return d > 1 ? d : 1;
}

// A float label is a class id when it truncates into [0, C); checked before the truncation, which
// is undefined behaviour for NaN or a huge value.
SSD_HOST_DEVICE bool float_label_in_range(double label, int64_t num_classes) {
  return label > -1.0 && label < static_cast<double>(num_classes);
}

// gt offsets [n + 1] as running sums of the box counts `lengths` [n]. Returns -1 when every count
// is >= 0 and the running sum never passes num_gt; otherwise the first image whose count is
// negative or takes the sum past num_gt (offsets from there on are not written). The total is
// offsets[n], which the caller compares with num_gt.
template <typename L>
SSD_HOST_DEVICE int64_t offsets_from_lengths(const L* lengths, int64_t n, int64_t num_gt,
                                             int64_t* offsets) {
  offsets[0] = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = static_cast<int64_t>(lengths[i]);
    if (len < 0 || len > num_gt - offsets[i]) return i;  // no overflow: never past num_gt
    offsets[i + 1] = offsets[i] + len;
  }
  return -1;
}

}  // namespace ssd_loss
