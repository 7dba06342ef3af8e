// Softmax cross-entropy of one prior's logits, as fluid's CPU kernel computes it
// (docs/semantics.md §3.7): shifted logits z = x - max are clamped at -64 before exp, so one
// prior's loss saturates near 64.
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
  // Cody-Waite reduction r = z - n * ln(2), then Cephes' expf polynomial on [-ln2/2, ln2/2],
  // evaluated in Estrin's scheme: three independent pairs, a shorter dependency chain than
  // Horner's, as accurate.
  const V r = (z - n * 0.693359375f) - n * -2.12194440e-4f;
  const V r2 = r * r;
  const V p45 = r * 1.9875691500e-4f + 1.3981999507e-3f;
  const V p23 = r * 8.3334519073e-3f + 4.1665795894e-2f;
  const V p01 = r * 1.6666665459e-1f + 5.0000001201e-1f;
  const V p = (p45 * r2 + p23) * r2 + p01;
  const V y = (p * r2 + r) + 1.f;
  // 2^n from the integer held in t's low mantissa bits; n in [-93, 0] keeps it a normal float.
  const U two_n = (bit_cast<U>(t) - 0x4B400000u + 127u) << 23;
  return y * bit_cast<V>(two_n);
}

SSD_HOST_DEVICE float exp_shifted_logit(float z) { return exp_shifted_logit_t<float, uint32_t>(z); }

SSD_HOST_DEVICE double exp_shifted_logit(double z) { return std::exp(z); }

// log(s) of a softmax sum s in [1, C] (the row maximum contributes exactly exp(0) = 1), or NaN,
// within about 1 ulp. Like exp_shifted_logit_t it uses only +, -, *, exponent bits and selects, so
// it vectorizes and gives the same bits on every CPU and on the GPU. Valid for any normal s > 0.
// V is float or a GCC vector of floats, U the unsigned integer (vector) of the same size.
template <typename V, typename U>
SSD_HOST_DEVICE V log_softmax_sum_t(V s) {
  const U bits = bit_cast<U>(s);
  // s = 2^e * f with f in [0.5, 1); e as a float, exactly, from the exponent field.
  V e = bit_cast<V>((bits >> 23) | 0x4B000000u) - (8388608.f + 126.f);
  const V f = bit_cast<V>((bits & 0x007FFFFFu) | 0x3F000000u);
  // Cephes' logf: x = f - 1 on [sqrt(1/2), 1), else 2f - 1 with e - 1 (x in [-0.29, 0.41]).
  const auto small = f < 0.707106781186547524f;
  const V x = small ? (f + f) - 1.f : f - 1.f;
  e = small ? e - 1.f : e;
  const V z = x * x;
  V y = x * 7.0376836292e-2f + -1.1514610310e-1f;
  y = y * x + 1.1676998740e-1f;
  y = y * x + -1.2420140846e-1f;
  y = y * x + 1.4249322787e-1f;
  y = y * x + -1.6668057665e-1f;
  y = y * x + 2.0000714765e-1f;
  y = y * x + -2.4999993993e-1f;
  y = y * x + 3.3333331174e-1f;
  y = (y * x) * z;
  y = y + e * -2.12194440e-4f;
  y = y - z * 0.5f;
  const V r = (x + y) + e * 0.693359375f;
  return s == s ? r : s;  // NaN in, NaN out
}

SSD_HOST_DEVICE float log_softmax_sum(float s) { return log_softmax_sum_t<float, uint32_t>(s); }

SSD_HOST_DEVICE double log_softmax_sum(double s) { return std::log(s); }

template <typename T>
SSD_HOST_DEVICE T softmax_prob(T logit, const SoftmaxStats<T>& s) {
  return exp_shifted_logit(clamp_shifted_logit(logit - s.max)) * (T(1) / s.sum);
}

// -log(softmax(x)[label]) = log(sum) - z[label], with the clamped shifted logit z: the same value
// as fluid's -log(prob), without the rounding of the probability.
template <typename T>
SSD_HOST_DEVICE T cross_entropy(T shifted_label_logit, const SoftmaxStats<T>& s) {
  return log_softmax_sum(s.sum) - clamp_shifted_logit(shifted_label_logit);
}

template <typename T>
SSD_HOST_DEVICE T cross_entropy(const T* logits, int64_t label, const SoftmaxStats<T>& s) {
  return cross_entropy(logits[label] - s.max, s);
}

}  // namespace ssd_loss
