// Softmax cross-entropy of one prior's logits, as fluid's CPU kernel computes it (spec §3.7):
// shifted logits z = x - max are clamped at -64 before exp, so one prior's loss saturates near 64.
// The clamp is kept on every device so that CPU and GPU make the same mining decisions.
#pragma once

#include <cmath>
#include <cstdint>

#include "ssd_loss/box.h"

namespace ssd_loss {

constexpr float kShiftedLogitFloor = -64.f;

// max and sum of clamped exps of one row: enough to recompute any softmax entry later.
template <typename T>
struct SoftmaxStats {
  T max;
  T sum;
};

// NaN-preserving clamp: a NaN logit must reach the loss, not be replaced by the floor.
template <typename T>
SSD_HOST_DEVICE T clamp_shifted_logit(T z) {
  return z < T(kShiftedLogitFloor) ? T(kShiftedLogitFloor) : z;
}

template <typename T>
SSD_HOST_DEVICE T softmax_prob(T logit, const SoftmaxStats<T>& s) {
  return std::exp(clamp_shifted_logit(logit - s.max)) * (T(1) / s.sum);
}

template <typename T>
SSD_HOST_DEVICE T cross_entropy(const T* logits, int64_t label, const SoftmaxStats<T>& s) {
  return -std::log(softmax_prob(logits[label], s));
}

}  // namespace ssd_loss
