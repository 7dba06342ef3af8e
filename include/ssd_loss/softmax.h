// Softmax cross-entropy of one prior's logits, as fluid's CPU kernel computes it (spec §3.7):
// shifted logits z = x - max are clamped at -64 before exp, so one prior's loss saturates near 64.
// The clamp is kept on every device so that CPU and GPU make the same mining decisions.
#pragma once

#include <cmath>
#include <cstdint>
#include "ssd_loss/bits.h"
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

// exp(z) for a clamped shifted logit z in [-64, 0] (or NaN), within about 1 ulp. It uses only
// +, -, * and exponent bits, with no branch: the compiler vectorizes it, and every CPU (any vector
// width) and the GPU (built with --fmad=false) get the same bits, hence the same mining decisions.
// V is float or a GCC vector of floats, U the unsigned integer (vector) of the same size.
template <typename V, typename U>
SSD_HOST_DEVICE V exp_shifted_logit_t(V z) {
  const float kRound = 12582912.f;  // 1.5 * 2^23: t = kRound + round(z * log2(e)), exactly
  const V t = z * 1.44269504088896341f + kRound;
  const V n = t - kRound;
  // Cody-Waite reduction r = z - n * ln(2), then Cephes' expf polynomial on [-ln2/2, ln2/2].
  const V r = (z - n * 0.693359375f) - n * -2.12194440e-4f;
  V p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const V y = (((p * r) * r) + r) + 1.f;
  // 2^n from the integer held in t's low mantissa bits; n in [-93, 0] keeps it a normal float.
  const U two_n = (bit_cast<U>(t) - 0x4B400000u + 127u) << 23;
  return y * bit_cast<V>(two_n);
}

SSD_HOST_DEVICE float exp_shifted_logit(float z) { return exp_shifted_logit_t<float, uint32_t>(z); }

SSD_HOST_DEVICE double exp_shifted_logit(double z) { return std::exp(z); }

template <typename T>
SSD_HOST_DEVICE T softmax_prob(T logit, const SoftmaxStats<T>& s) {
  return exp_shifted_logit(clamp_shifted_logit(logit - s.max)) * (T(1) / s.sum);
}

template <typename T>
SSD_HOST_DEVICE T cross_entropy(const T* logits, int64_t label, const SoftmaxStats<T>& s) {
  return -std::log(softmax_prob(logits[label], s));
}

}  // namespace ssd_loss
