// Hard negative mining (docs/semantics.md §3.4 and the tie rule of §11).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "check.h"
#include "ssd_loss/mine.h"

namespace {

// The k priors that select_hardest on hardness keys (the float path of the forward) picks from
// candidates `order`, sorted.
std::vector<int32_t> hardest_by_keys(const std::vector<int32_t>& order, int64_t k,
                                     const std::vector<float>& loss) {
  std::vector<uint64_t> keys;
  for (int32_t p : order) keys.push_back(ssd_loss::hardness_key(loss[p], p));
  std::vector<uint32_t> histogram;
  std::vector<uint64_t> boundary;
  ssd_loss::select_hardest(keys.data(), static_cast<int64_t>(keys.size()), k, histogram, boundary);
  std::vector<int32_t> picked;
  for (int64_t c = 0; c < std::min<int64_t>(k, keys.size()); ++c) {
    picked.push_back(static_cast<int32_t>(keys[c]));
  }
  std::sort(picked.begin(), picked.end());
  return picked;
}

// The k priors select_hardest picks from candidates `order`, sorted for comparison; the key-based
// selection must pick the same.
std::vector<int32_t> hardest(std::vector<int32_t> order, int64_t k, const std::vector<float>& loss) {
  const std::vector<int32_t> by_keys = hardest_by_keys(order, k, loss);
  ssd_loss::select_hardest(order.data(), static_cast<int64_t>(order.size()), k, loss.data());
  std::vector<int32_t> picked(order.begin(), order.begin() + std::min<int64_t>(k, order.size()));
  std::sort(picked.begin(), picked.end());
  CHECK_EQ(by_keys, picked);
  return picked;
}

std::vector<int32_t> iota(int32_t n) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), 0);
  return v;
}

using Ints = std::vector<int32_t>;
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

}  // namespace

TEST_CASE(mine, num_negatives_truncates_the_float32_product) {
  using ssd_loss::num_negatives;
  CHECK_EQ(num_negatives(1, 0.5f, 10), 0);   // trunc(0.5)
  CHECK_EQ(num_negatives(1, 3.7f, 10), 3);   // trunc(3.7)
  CHECK_EQ(num_negatives(0, 3.f, 10), 0);    // no positive, no negative
  CHECK_EQ(num_negatives(2, 3.f, 10), 6);
  CHECK_EQ(num_negatives(3, 0.3f, 100), 0);  // 0.90000004
  CHECK_EQ(num_negatives(10, 0.3f, 100), 3);  // 3.0000001
  // float32(10) * float32(0.7) rounds to exactly 7; the same product in double is 6.99999988.
  CHECK_EQ(num_negatives(10, 0.7f, 100), 7);
}

TEST_CASE(mine, num_negatives_is_capped_by_the_candidates) {
  using ssd_loss::num_negatives;
  CHECK_EQ(num_negatives(2, 3.f, 4), 4);
  CHECK_EQ(num_negatives(1, 3.7f, 2), 2);
  CHECK_EQ(num_negatives(5, 3.f, 0), 0);
  CHECK_EQ(num_negatives(4, 3.f, 12), 12);  // exactly the candidates
  // Out of range or NaN products take every candidate instead of an undefined conversion.
  CHECK_EQ(num_negatives(int64_t{1} << 40, 1e30f, 17), 17);
  CHECK_EQ(num_negatives(1, kNaN, 9), 9);
  CHECK_EQ(num_negatives(1, kInf, 9), 9);
}

TEST_CASE(mine, select_hardest_takes_the_largest_losses) {
  const std::vector<float> loss = {0.1f, 2.f, 0.5f, 3.f, 1.f};
  CHECK_EQ(hardest(iota(5), 1, loss), (Ints{3}));
  CHECK_EQ(hardest(iota(5), 2, loss), (Ints{1, 3}));
  CHECK_EQ(hardest(iota(5), 3, loss), (Ints{1, 3, 4}));
  // Candidates are a subset of the priors (the unmatched ones), given by prior index.
  CHECK_EQ(hardest({0, 2, 4}, 2, loss), (Ints{2, 4}));
}

TEST_CASE(mine, ties_go_to_the_lowest_prior_index) {
  const std::vector<float> loss = {1.f, 3.f, 3.f, 3.f, 2.f, 3.f};
  CHECK_EQ(hardest(iota(6), 2, loss), (Ints{1, 2}));
  CHECK_EQ(hardest(iota(6), 3, loss), (Ints{1, 2, 3}));
  CHECK_EQ(hardest(iota(6), 4, loss), (Ints{1, 2, 3, 5}));
  // The candidates' order does not matter, only the prior index does.
  CHECK_EQ(hardest({5, 3, 2, 1, 4, 0}, 2, loss), (Ints{1, 2}));
  CHECK_EQ(hardest({5, 4, 3}, 1, loss), (Ints{3}));
  // -0 and +0 are the same loss: a tie, broken by index.
  const std::vector<float> zeros = {0.f, -0.f, 0.f, -0.f};
  CHECK_EQ(hardest({3, 2, 1, 0}, 2, zeros), (Ints{0, 1}));
  // All equal, many candidates: the lowest k indices.
  const std::vector<float> flat(100, 0.25f);
  std::vector<int32_t> reversed = iota(100);
  std::reverse(reversed.begin(), reversed.end());
  CHECK_EQ(hardest(reversed, 5, flat), (Ints{0, 1, 2, 3, 4}));
}

TEST_CASE(mine, nan_ranks_first_then_infinity) {
  const std::vector<float> loss = {1.f, kNaN, 5.f, kNaN, kInf};
  CHECK_EQ(hardest(iota(5), 1, loss), (Ints{1}));
  CHECK_EQ(hardest(iota(5), 2, loss), (Ints{1, 3}));
  CHECK_EQ(hardest(iota(5), 3, loss), (Ints{1, 3, 4}));
  CHECK_EQ(hardest(iota(5), 4, loss), (Ints{1, 2, 3, 4}));
}

TEST_CASE(mine, k_outside_zero_to_count_leaves_the_candidates_alone) {
  const std::vector<float> loss = {1.f, 2.f, 3.f};
  std::vector<int32_t> order = {2, 0, 1};
  ssd_loss::select_hardest(order.data(), 3, 0, loss.data());
  CHECK_EQ(order, (Ints{2, 0, 1}));
  ssd_loss::select_hardest(order.data(), 3, 3, loss.data());
  CHECK_EQ(order, (Ints{2, 0, 1}));
  ssd_loss::select_hardest(order.data(), 3, 5, loss.data());
  CHECK_EQ(order, (Ints{2, 0, 1}));
  ssd_loss::select_hardest(order.data(), 0, 0, loss.data());  // empty: nothing to do
}

TEST_CASE(mine, order_is_strict_and_total) {
  // A strict weak order that is also total is what makes the selection unique.
  const std::vector<float> loss = {kNaN, 2.f, 2.f, kNaN, -kInf};
  const ssd_loss::HarderNegative<float> harder{loss.data()};
  for (int32_t a = 0; a < 5; ++a) {
    CHECK(!harder(a, a));
    for (int32_t b = 0; b < 5; ++b) {
      if (a != b) CHECK(harder(a, b) != harder(b, a));
    }
  }
  CHECK(harder(0, 3));  // two NaNs: lower index first
  CHECK(harder(3, 1));  // NaN before any number
  CHECK(harder(1, 2));
  CHECK(harder(2, 4));
}

TEST_CASE(mine, key_selection_equals_a_full_sort_on_random_losses) {
  // Many exact ties (losses from a small set), NaN and infinity, losses spread over many octaves
  // (several histogram buckets) or packed into one (a crowded boundary bucket), every k.
  std::mt19937 rng(11);
  int mismatches = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::uniform_int_distribution<int> count_dist(1, trial % 3 == 0 ? 5000 : 60);
    const int count = count_dist(rng);
    std::vector<float> loss(count);
    std::uniform_int_distribution<int> kind(0, 9), small_set(0, 7);
    std::uniform_real_distribution<float> wide(-30.f, 30.f), narrow(2.f, 2.001f);
    for (float& l : loss) {
      const int what = kind(rng);
      l = what == 0 ? kNaN : what == 1 ? kInf : what < 5 ? 0.25f * small_set(rng)
          : trial % 2 ? std::exp2(wide(rng)) : narrow(rng);
    }
    std::vector<int32_t> order = iota(count);
    std::shuffle(order.begin(), order.end(), rng);
    std::uniform_int_distribution<int> k_dist(0, count);
    const int k = k_dist(rng);
    // Reference: sort by the strict total order, take the first k.
    std::vector<int32_t> sorted = order;
    std::sort(sorted.begin(), sorted.end(), ssd_loss::HarderNegative<float>{loss.data()});
    std::vector<int32_t> expected(sorted.begin(), sorted.begin() + k);
    std::sort(expected.begin(), expected.end());
    if (hardest_by_keys(order, k, loss) != expected && ++mismatches <= 3) {
      CHECK_EQ(hardest_by_keys(order, k, loss), expected);
    }
  }
  CHECK_EQ(mismatches, 0);
}
