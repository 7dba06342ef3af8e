// Vectorized CPU building blocks of the forward pass (internal to src/core).
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

// x[0..n) = 0 with streaming stores: the large outputs (gradients, encoded targets) are written
// once and read much later, by another op or the backward, so they need not pass through the cache.
template <typename T>
void zero_fill(T* x, int64_t n);

}  // namespace cpu
}  // namespace ssd_loss
