// Vectorized CPU building blocks of the forward pass (internal to src/core).
#pragma once

#include <cstdint>

namespace ssd_loss {
namespace cpu {

// Softmax statistics {max, sum of clamped exps} of `rows` rows of `num_classes` logits, written
// to stats[2 * r], stats[2 * r + 1].
template <typename T>
void softmax_stats_rows(const T* logits, int64_t rows, int64_t num_classes, T* stats);

}  // namespace cpu
}  // namespace ssd_loss
