// The framework-free core API of the fused SSD multibox loss (fluid.layers.ssd_loss semantics).
//
// Ground truth is addressed per image through offsets: image i owns gt rows
// gt_offsets[i] .. gt_offsets[i+1]-1. All arrays are dense, row-major, on the host.
#pragma once

#include <cstdint>
#include <string>

#include "ssd_loss/attributes.h"

namespace ssd_loss {

struct Sizes {
  int64_t num_images = 0;   // N
  int64_t num_priors = 0;   // Np
  int64_t num_classes = 0;  // C
};

template <typename T>
struct ForwardInputs {
  const T* location = nullptr;           // [N, Np, 4] encoded offsets
  const T* confidence = nullptr;         // [N, Np, C] logits
  const T* gt_box = nullptr;             // [Ng, 4]
  const int64_t* gt_label = nullptr;     // [Ng], each in [0, C)
  const int64_t* gt_offsets = nullptr;   // [N + 1], non-decreasing, from 0 to Ng
  const T* prior_box = nullptr;          // [Np, 4]
  const T* prior_var = nullptr;          // [Np, 4], or [4] if prior_var_shared
  bool prior_var_shared = false;
};

// What the forward pass keeps for backward: O(N * Np), no [N, Np, C] tensor.
template <typename T>
struct SavedState {
  int32_t* match = nullptr;         // [N, Np] matched gt (index local to the image), -1 if none;
                                    // hard_example mining unmatches the positives it drops
  int32_t* target_class = nullptr;  // [N, Np] class of the confidence loss, -1 if not in it
  T* loc_target = nullptr;          // [N, Np, 4] encoded targets of positives, 0 elsewhere
  T* softmax_stats = nullptr;       // [N, Np, 2] row max and sum of clamped exps
};

template <typename T>
struct ForwardOutputs {
  T* loss = nullptr;        // [N] per-image summed loss, divided by `normalizer`
  T* normalizer = nullptr;  // [1] the divisor used (see Normalization)
  SavedState<T> saved;
};

template <typename T>
struct BackwardInputs {
  const T* location = nullptr;
  const T* confidence = nullptr;
  const T* grad_loss = nullptr;   // [N] upstream gradient of each image's loss
  const T* normalizer = nullptr;  // [1]
  const int32_t* match = nullptr;
  const int32_t* target_class = nullptr;
  const T* loc_target = nullptr;
  const T* softmax_stats = nullptr;
};

// grad_location / grad_confidence may be null when that gradient is not needed.
template <typename T>
struct BackwardOutputs {
  T* grad_location = nullptr;    // [N, Np, 4]
  T* grad_confidence = nullptr;  // [N, Np, C]
};

// Checks that only the data can tell; each returns an empty string when valid, otherwise a
// message naming the argument, the expectation and the value received.
std::string check_gt_offsets(const int64_t* gt_offsets, int64_t num_images, int64_t num_gt);
std::string check_labels(const int64_t* gt_label, int64_t num_gt, int64_t num_classes);

template <typename T>
void forward(const ForwardInputs<T>& in, const Sizes& sizes, const Options& opt,
             const ForwardOutputs<T>& out);

template <typename T>
void backward(const BackwardInputs<T>& in, const Sizes& sizes, const Options& opt,
              const BackwardOutputs<T>& out);

}  // namespace ssd_loss
