// Hard negative mining, max_negative mode (docs/semantics.md §3.4, tie rule of §11).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ssd_loss/bits.h"

namespace ssd_loss {

// Number of negatives to mine: trunc(float32(P) * float32(ratio)), at most the candidates.
SSD_HOST_DEVICE int64_t num_negatives(int64_t num_pos, float neg_pos_ratio, int64_t num_candidates) {
  const float wanted = static_cast<float>(num_pos) * neg_pos_ratio;
  // Written so that an out-of-range or NaN product takes every candidate instead of hitting UB.
  if (!(wanted < static_cast<float>(num_candidates))) return num_candidates;
  return static_cast<int64_t>(wanted);
}

// Strict total order "a is a harder negative than b": NaN loss first, then loss descending,
// then prior index ascending. Being total, it makes the selection unique on every device.
template <typename T>
struct HarderNegative {
  const T* loss;
  bool operator()(int32_t a, int32_t b) const {
    const T la = loss[a], lb = loss[b];
    const bool na = std::isnan(la), nb = std::isnan(lb);
    if (na != nb) return na;
    if (!na && la != lb) return la > lb;
    return a < b;
  }
};

// The same order for a float loss as one integer key (smaller = harder), so that selection
// compares plain integers: high word = the loss bits flipped to sort descending (NaN -> 0, first),
// low word = the prior index.
SSD_HOST_DEVICE uint64_t hardness_key(float loss, int32_t prior) {
  const uint32_t b = float_bits(loss + 0.f);  // + 0 turns -0 into +0: they are equal losses
  const uint32_t ascending = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  const uint32_t not_nan = 0u - static_cast<uint32_t>(loss == loss);  // all ones unless NaN
  const uint32_t high = ~ascending & not_nan;  // a mask, not a branch: the key loop vectorizes
  return (static_cast<uint64_t>(high) << 32) | static_cast<uint32_t>(prior);
}

// Moves the k hardest of candidates[0..count) to the front (in no particular order).
template <typename T>
void select_hardest(int32_t* candidates, int64_t count, int64_t k, const T* loss) {
  if (k <= 0 || k >= count) return;
  std::nth_element(candidates, candidates + k, candidates + count, HarderNegative<T>{loss});
}

// The same on keys made by hardness_key, in two passes: a histogram of the keys' top
// kKeyBucketBits bits finds the bucket that holds the k-th smallest key; the keys of the buckets
// before it are all taken, and only those of that bucket go through nth_element. O(count) work
// with a small constant (the buckets split the float losses into 1/16 of an octave).
constexpr int kKeyBucketBits = 13;

inline void select_hardest(uint64_t* keys, int64_t count, int64_t k,
                           std::vector<uint32_t>& histogram, std::vector<uint64_t>& boundary) {
  if (k <= 0 || k >= count) return;
  constexpr int kShift = 64 - kKeyBucketBits;
  histogram.assign(size_t{1} << kKeyBucketBits, 0u);
  for (int64_t c = 0; c < count; ++c) ++histogram[keys[c] >> kShift];
  uint64_t bucket = 0;
  int64_t before = 0;  // keys in the buckets before `bucket`
  while (before + histogram[bucket] < k) before += histogram[bucket++];
  boundary.clear();
  int64_t taken = 0;
  for (int64_t c = 0; c < count; ++c) {
    const uint64_t key = keys[c], b = key >> kShift;
    if (b < bucket) keys[taken++] = key;  // taken <= c: the write never overtakes the read
    else if (b == bucket) boundary.push_back(key);
  }
  const int64_t rest = k - before;
  std::nth_element(boundary.begin(), boundary.begin() + rest, boundary.end());
  std::copy(boundary.begin(), boundary.begin() + rest, keys + taken);
}

}  // namespace ssd_loss
