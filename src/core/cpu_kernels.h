// Vectorized CPU building blocks of the forward and backward passes (internal to src/core).
#pragma once

#include <cstdint>

#include "ssd_loss/platform.h"

namespace ssd_loss {
namespace cpu {

// Softmax statistics {max, sum of clamped exps} of `rows` rows of `num_classes` logits, written
// to stats[2 * r], stats[2 * r + 1], and each row's cross-entropy against class labels[r].
template <typename T>
void softmax_rows(const T* logits, int64_t rows, int64_t num_classes, const int32_t* labels,
                  T* stats, T* cross_entropy);

// Gradient rows scale * (softmax(x) - onehot(labels[p])) of the listed priors p = rows[k], from
// their saved statistics; the other rows of `grad` are left as they are.
template <typename T>
void softmax_grad_rows(const T* logits, int64_t num_classes, const int32_t* rows, int64_t count,
                       const T* stats, const int32_t* labels, T scale, T* grad);

// Calls f(p), in ascending order, for each p with x[p] >= 0: few of them (the positives, the
// priors in the loss) among many -1, so blocks of 8 all negative (sign bits all set in their AND)
// are skipped with one test.
template <typename F>
SSD_ALWAYS_INLINE void for_each_at_least_zero(const int32_t* x, int64_t n, F&& f) {
  constexpr int64_t kBlock = 8;
  int64_t p = 0;
  for (; p + kBlock <= n; p += kBlock) {
    int32_t all = x[p];
    for (int64_t k = 1; k < kBlock; ++k) all &= x[p + k];
    if (all < 0) continue;
    for (int64_t k = p; k < p + kBlock; ++k) {
      if (x[k] >= 0) f(k);
    }
  }
  for (; p < n; ++p) {
    if (x[p] >= 0) f(p);
  }
}

// x[0..n) = 0 with streaming stores: the large outputs (gradients, encoded targets) are written
// once and read much later, by another op or the backward, so they need not pass through the cache.
template <typename T>
void zero_fill(T* x, int64_t n);

}  // namespace cpu
}  // namespace ssd_loss
