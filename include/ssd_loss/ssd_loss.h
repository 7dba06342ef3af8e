// The framework-free core API of the fused SSD multibox loss (fluid.layers.ssd_loss semantics).
//
// Ground truth is addressed per image through offsets: image i owns gt rows
// gt_offsets[i] .. gt_offsets[i+1]-1. All arrays are dense, row-major, on the host.
#pragma once

#include <cstdint>
#include <string>

namespace ssd_loss {

enum class MatchType { kBipartite, kPerPrediction };
enum class MiningType {
  kMaxNegative,  // fluid's: the hardest unmatched priors, neg_pos_ratio per positive
  kHardExample,  // OHEM as in fluid's mine_hard_examples: the sample_size hardest priors of all
};
// What each image's loss is divided by (Caffe's LossParameter modes).
enum class Normalization {
  kValid,      // positives in the whole batch, at least 1 (fluid's normalize=True)
  kFull,       // all priors of the batch, N * Np
  kBatchSize,  // N
  kNone,       // 1 (fluid's normalize=False)
};
enum class NegOverlapMode {
  kFluid,  // every unmatched prior may be a negative (neg_overlap has no effect, as in fluid)
  kCaffe,  // unmatched priors whose best IoU with a gt is >= neg_overlap are never negatives
};

struct Options {
  int64_t background_label = 0;
  float overlap_threshold = 0.5f;
  float neg_pos_ratio = 3.0f;
  float neg_overlap = 0.5f;
  float loc_loss_weight = 1.0f;
  float conf_loss_weight = 1.0f;
  MatchType match_type = MatchType::kPerPrediction;
  MiningType mining_type = MiningType::kMaxNegative;
  int64_t sample_size = 0;              // hard_example: priors kept per image
  Normalization normalization = Normalization::kValid;
  int64_t min_negatives_per_image = 0;  // max_negative: mine at least this many per image
  NegOverlapMode neg_overlap_mode = NegOverlapMode::kFluid;
};

// Options from the values of the Python API's arguments, checked; returns an empty string, or a
// message naming the argument and the values expected and received.
std::string make_options(int64_t background_label, float overlap_threshold, float neg_pos_ratio,
                         float neg_overlap, float loc_loss_weight, float conf_loss_weight,
                         const std::string& match_type, const std::string& mining_type,
                         const std::string& normalization, int64_t sample_size,
                         int64_t min_negatives_per_image, const std::string& neg_overlap_mode,
                         Options* opt);

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
