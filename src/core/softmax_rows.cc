// Row statistics of the softmax over all priors: the one pass over the logits in the forward.
//
// Each row is processed in blocks of kLanes values with independent accumulators per lane,
// combined in a fixed order, so the compiler vectorizes without reassociating anything: the
// result has the same bits for any vector width, and the AVX2 clone (chosen at run time; no FMA,
// so no contraction) agrees with the baseline SSE2 code bit for bit. A row is read as
// round_up(C, kLanes) values, the ones past its end masked out; the last rows, whose padded read
// would leave the array, go through a padded copy.
#include <algorithm>
#include <vector>

#include "cpu_kernels.h"
#include "ssd_loss/bits.h"
#include "ssd_loss/softmax.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define SSD_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SSD_CPU_CLONES
#endif
#define SSD_ALWAYS_INLINE inline __attribute__((always_inline))

namespace ssd_loss {
namespace cpu {
namespace {

constexpr int kLanes = 8;

// {max, sum of clamped exps} of x[0..nc), reading x[0..width) (width = nc rounded up to kLanes).
template <typename T>
SSD_ALWAYS_INLINE void row_stats(const T* x, int64_t nc, int64_t width, T* stats) {
  T acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = x[0];
  for (int64_t c = 0; c < width; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const T raw = x[c + l];  // unconditional load (in bounds by construction): vectorizable
      const T v = c + l < nc ? raw : x[0];
      acc[l] = v > acc[l] ? v : acc[l];
    }
  }
  T m = acc[0];
  for (int l = 1; l < kLanes; ++l) m = acc[l] > m ? acc[l] : m;

  for (int l = 0; l < kLanes; ++l) acc[l] = T(0);
  for (int64_t c = 0; c < width; c += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const T e = exp_shifted_logit(clamp_shifted_logit(x[c + l] - m));
      acc[l] += c + l < nc ? e : T(0);
    }
  }
  stats[0] = m;
  stats[1] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

#if defined(__GNUC__)
// The float path in explicit GCC vectors of kLanes: the same operations, lane by lane, as
// row_stats above, so both give the same bits (row_stats serves float where vectors are absent).
typedef float FloatLanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IntLanes __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef uint32_t UintLanes __attribute__((vector_size(kLanes * sizeof(uint32_t))));

SSD_ALWAYS_INLINE void row_stats(const float* x, int64_t nc, int64_t width, float* stats) {
  const IntLanes lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const FloatLanes first = FloatLanes{} + x[0];
  FloatLanes acc = first;
  for (int64_t c = 0; c < width; c += kLanes) {
    const FloatLanes raw = bit_cast<FloatLanes>(*reinterpret_cast<const float(*)[kLanes]>(x + c));
    const FloatLanes v = lane + static_cast<int32_t>(c) < static_cast<int32_t>(nc) ? raw : first;
    acc = v > acc ? v : acc;
  }
  float m = acc[0];
  for (int l = 1; l < kLanes; ++l) m = acc[l] > m ? acc[l] : m;

  FloatLanes sum = {};
  for (int64_t c = 0; c < width; c += kLanes) {
    const FloatLanes raw = bit_cast<FloatLanes>(*reinterpret_cast<const float(*)[kLanes]>(x + c));
    FloatLanes z = raw - m;
    z = z < kShiftedLogitFloor ? FloatLanes{} + kShiftedLogitFloor : z;
    const FloatLanes e = exp_shifted_logit_t<FloatLanes, UintLanes>(z);
    sum += lane + static_cast<int32_t>(c) < static_cast<int32_t>(nc) ? e : FloatLanes{};
  }
  stats[0] = m;
  stats[1] = ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7]));
}
#endif

template <typename T>
SSD_CPU_CLONES void stats_rows(const T* logits, int64_t rows, int64_t nc, T* stats) {
  const int64_t width = (nc + kLanes - 1) / kLanes * kLanes;
  // Rows whose padded read stays inside the array.
  const int64_t direct_rows =
      rows * nc < width ? 0 : std::min(rows, (rows * nc - width) / nc + 1);
  for (int64_t r = 0; r < direct_rows; ++r) row_stats(logits + r * nc, nc, width, stats + 2 * r);
  std::vector<T> padded(width);
  for (int64_t r = direct_rows; r < rows; ++r) {
    std::copy(logits + r * nc, logits + (r + 1) * nc, padded.begin());
    std::fill(padded.begin() + nc, padded.end(), logits[r * nc]);
    row_stats(padded.data(), nc, width, stats + 2 * r);
  }
}

}  // namespace

template <typename T>
void softmax_stats_rows(const T* logits, int64_t rows, int64_t num_classes, T* stats) {
  stats_rows(logits, rows, num_classes, stats);
}

template void softmax_stats_rows<float>(const float*, int64_t, int64_t, float*);
template void softmax_stats_rows<double>(const double*, int64_t, int64_t, double*);

}  // namespace cpu
}  // namespace ssd_loss
