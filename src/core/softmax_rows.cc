// The softmax rows of the CPU kernels: in the forward, each prior's row statistics and its
// cross-entropy, in the one pass over the logits; in the backward, the gradient rows of the
// priors in the confidence loss.
//
// Each row is processed in blocks of kLanes values with independent accumulators per lane,
// combined in a fixed order, so the compiler vectorizes without reassociating anything: the
// result has the same bits for any vector width, and the AVX2 clone (chosen at run time; no FMA,
// so no contraction) agrees with the baseline SSE2 code bit for bit. A row is read as
// round_up(C, kLanes) values, the ones past its end masked out; the last rows, whose padded read
// would leave the array, go through a padded copy. For C <= 128, full blocks of kLanes rows are
// transposed first (transposed_block): the same per-lane accumulators, held lane = row.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu_kernels.h"
#include "ssd_loss/bits.h"
#include "ssd_loss/softmax.h"

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
// Both reductions across the lanes are butterflies whose lane 0 follows the scalar code: the max
// keeps the lower lane on ties (so even the sign of a zero maximum agrees), and the sum's tree is
// ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)) in every lane, by commutativity alone.
typedef float FloatLanes __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IntLanes __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef uint32_t UintLanes __attribute__((vector_size(kLanes * sizeof(uint32_t))));

// Lanes picked from two vectors by constant indices (0-7: a, 8-15: b), and the lanes of one
// vector permuted (GCC's and Clang's spellings differ).
#if defined(__clang__)
#define SSD_SHUFFLE2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SSD_SHUFFLE2(a, b, ...) __builtin_shuffle(a, b, IntLanes{__VA_ARGS__})
#endif
#define SSD_PERMUTE(a, ...) SSD_SHUFFLE2(a, a, __VA_ARGS__)

SSD_ALWAYS_INLINE FloatLanes load_lanes(const float* x) {
  return bit_cast<FloatLanes>(*reinterpret_cast<const float(*)[kLanes]>(x));
}

// max(a, b), keeping a on ties and when either is NaN (the scalar code's `b > a ? b : a`).
SSD_ALWAYS_INLINE FloatLanes max_lanes(FloatLanes a, FloatLanes b) { return b > a ? b : a; }

// The scalar code's max over lanes 0, 1, ..., 7, broadcast to every lane.
SSD_ALWAYS_INLINE FloatLanes butterfly_max(FloatLanes a) {
  a = max_lanes(a, SSD_PERMUTE(a, 1, 0, 3, 2, 5, 4, 7, 6));
  a = max_lanes(a, SSD_PERMUTE(a, 2, 3, 0, 1, 6, 7, 4, 5));
  a = max_lanes(a, SSD_PERMUTE(a, 4, 5, 6, 7, 0, 1, 2, 3));
  return SSD_PERMUTE(a, 0, 0, 0, 0, 0, 0, 0, 0);
}

SSD_ALWAYS_INLINE FloatLanes butterfly_sum(FloatLanes a) {
  a = a + SSD_PERMUTE(a, 1, 0, 3, 2, 5, 4, 7, 6);
  a = a + SSD_PERMUTE(a, 2, 3, 0, 1, 6, 7, 4, 5);
  return a + SSD_PERMUTE(a, 4, 5, 6, 7, 0, 1, 2, 3);
}

// Clamped shifted logits x - max of one vector, and their exponentials.
SSD_ALWAYS_INLINE FloatLanes exp_lanes(FloatLanes x, FloatLanes max) {
  const FloatLanes floor = FloatLanes{} + kShiftedLogitFloor;
  const FloatLanes z = x - max;
  return exp_shifted_logit_t<FloatLanes, UintLanes>(floor > z ? floor : z);  // NaN stays NaN
}

// kLanes rows at a time, phase by phase (all maxima, then all exponentials, then all sums), so
// that the long dependency chains of different rows (max -> exp polynomial -> sum) overlap in the
// core instead of running one after the other. Only a row's last vector holds lanes past its end,
// so only that one is masked. The sums and the shifted label logits of the block gather in one
// vector each, and the cross-entropies' logarithms are taken kLanes at once.
SSD_ALWAYS_INLINE void row_block(const float* x, int64_t rows, int64_t nc, int64_t width,
                                 const int32_t* labels, float* stats, float* ce) {
  const IntLanes lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const int64_t last = width - kLanes;  // offset of the last vector of a row
  const auto in_row = lane < static_cast<int32_t>(nc - last);
  FloatLanes max[kLanes], sum[kLanes];
  for (int r = 0; r < rows; ++r) {
    const float* row = x + r * nc;
    const FloatLanes first = FloatLanes{} + row[0];
    FloatLanes acc = first;
    for (int64_t c = 0; c < last; c += kLanes) acc = max_lanes(acc, load_lanes(row + c));
    acc = max_lanes(acc, in_row ? load_lanes(row + last) : first);
    max[r] = butterfly_max(acc);
  }
  for (int r = 0; r < rows; ++r) {
    const float* row = x + r * nc;
    FloatLanes s = {};
    for (int64_t c = 0; c < last; c += kLanes) s += exp_lanes(load_lanes(row + c), max[r]);
    s += in_row ? exp_lanes(load_lanes(row + last), max[r]) : FloatLanes{};
    sum[r] = s;
  }
  const FloatLanes floor = FloatLanes{} + kShiftedLogitFloor;
  FloatLanes sums = FloatLanes{} + 1.f, label_z = {};
  for (int r = 0; r < rows; ++r) {
    const FloatLanes s = butterfly_sum(sum[r]);
    stats[2 * r] = max[r][0];
    stats[2 * r + 1] = s[0];
    sums = lane == r ? s : sums;
    label_z = lane == r ? FloatLanes{} + (x[r * nc + labels[r]] - max[r][0]) : label_z;
  }
  const FloatLanes label_z_clamped = floor > label_z ? floor : label_z;
  const FloatLanes loss = log_softmax_sum_t<FloatLanes, UintLanes>(sums) - label_z_clamped;
  for (int r = 0; r < rows; ++r) ce[r] = loss[r];
}

// K vectors that take every operation together, one statement for all of them: the exp polynomial
// instantiated on a group is K independent chains interleaved instruction by instruction, so the
// core keeps them all in flight (a single chain's latency, not the arithmetic, bounds it otherwise:
// the scheduler holds only about two). Each vector gets exactly exp_shifted_logit_t's operations.
template <typename V, int K>
struct Group {
  V v[K];
};

#define SSD_GROUP_OP(op)                                                                \
  template <typename V, int K>                                                          \
  SSD_ALWAYS_INLINE Group<V, K> operator op(const Group<V, K>& a, const Group<V, K>& b) { \
    Group<V, K> r;                                                                      \
    for (int k = 0; k < K; ++k) r.v[k] = a.v[k] op b.v[k];                              \
    return r;                                                                           \
  }                                                                                     \
  template <typename V, int K, typename S>                                              \
  SSD_ALWAYS_INLINE Group<V, K> operator op(const Group<V, K>& a, S b) {                \
    Group<V, K> r;                                                                      \
    for (int k = 0; k < K; ++k) r.v[k] = a.v[k] op b;                                   \
    return r;                                                                           \
  }
SSD_GROUP_OP(+)
SSD_GROUP_OP(-)
SSD_GROUP_OP(*)
SSD_GROUP_OP(<<)
#undef SSD_GROUP_OP

constexpr int kGroup = 8;
typedef Group<FloatLanes, kGroup> FloatGroup;
typedef Group<UintLanes, kGroup> UintGroup;

// col[j] lane r = rows[r] lane j: the 8 x 8 transpose in three rounds of two-vector shuffles.
SSD_ALWAYS_INLINE void transpose(const FloatLanes (&rows)[kLanes], FloatLanes* col) {
  FloatLanes t[kLanes], u[kLanes];
  for (int k = 0; k < kLanes; k += 2) {
    t[k] = SSD_SHUFFLE2(rows[k], rows[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[k + 1] = SSD_SHUFFLE2(rows[k], rows[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int k = 0; k < kLanes; k += 4) {
    u[k] = SSD_SHUFFLE2(t[k], t[k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[k + 1] = SSD_SHUFFLE2(t[k], t[k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[k + 2] = SSD_SHUFFLE2(t[k + 1], t[k + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[k + 3] = SSD_SHUFFLE2(t[k + 1], t[k + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int k = 0; k < 4; ++k) {
    col[k] = SSD_SHUFFLE2(u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    col[k + 4] = SSD_SHUFFLE2(u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// A block's cross-entropies waiting for their logarithm, which is taken while the next block is
// loaded and transposed: the logarithm is one long chain of dependent operations, and next to
// independent work the core runs it without stalling.
struct PendingLog {
  FloatLanes sums, label_z;  // label_z clamped
  float* ce = nullptr;

  SSD_ALWAYS_INLINE void finish() {
    if (!ce) return;
    const FloatLanes loss = log_softmax_sum_t<FloatLanes, UintLanes>(sums) - label_z;
    std::memcpy(ce, &loss, sizeof loss);
    ce = nullptr;
  }
};

// Classes of the rows that transposed_block handles (its columns live on the stack).
constexpr int64_t kMaxTransposedClasses = 128;

// kLanes full rows at once, transposed: lane r of column vector c holds x[r][c], so the rows'
// per-lane accumulators of row_block (lane l: classes l, l + 8, ... in order) become kLanes vectors
// and the fixed trees across lanes become vector operations, with the same bits as row_block. No
// exp is spent on padding (C = 21: 21 vectors per 8 rows instead of 24) and nothing is reduced
// across lanes. Reads x[r * nc + c] for c < width, like row_block.
SSD_ALWAYS_INLINE void transposed_block(const float* x, int64_t nc, int64_t width,
                                        const int32_t* labels, float* stats, float* ce,
                                        PendingLog& pending) {
  const int64_t full = nc / kLanes, rem = nc % kLanes;
  FloatLanes col[kMaxTransposedClasses];
  for (int64_t c = 0; c < width; c += kLanes) {
    FloatLanes rows[kLanes];
    for (int r = 0; r < kLanes; ++r) rows[r] = load_lanes(x + r * nc + c);
    transpose(rows, col + c);
  }
  pending.finish();  // the previous block's
  FloatLanes acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = col[0];
  for (int64_t t = 0; t < full; ++t) {
    for (int l = 0; l < kLanes; ++l) acc[l] = max_lanes(acc[l], col[t * kLanes + l]);
  }
  // (l < rem inside the loop, not as its bound: constant indices keep acc and sum in registers)
  for (int l = 0; l < kLanes; ++l) {
    if (l < rem) acc[l] = max_lanes(acc[l], col[full * kLanes + l]);
  }
  const FloatLanes max =
      max_lanes(max_lanes(max_lanes(acc[0], acc[1]), max_lanes(acc[2], acc[3])),
                max_lanes(max_lanes(acc[4], acc[5]), max_lanes(acc[6], acc[7])));

  const FloatLanes floor = FloatLanes{} + kShiftedLogitFloor;
  FloatLanes sum[kLanes] = {};
  static_assert(kGroup == kLanes, "one group per column tile");
  for (int64_t t = 0; t < full; ++t) {
    FloatGroup z;
    for (int l = 0; l < kLanes; ++l) {
      const FloatLanes d = col[t * kLanes + l] - max;
      z.v[l] = floor > d ? floor : d;
    }
    const FloatGroup e = exp_shifted_logit_t<FloatGroup, UintGroup>(z);
    for (int l = 0; l < kLanes; ++l) sum[l] += e.v[l];
  }
  for (int l = 0; l < kLanes; ++l) {
    if (l < rem) sum[l] += exp_lanes(col[full * kLanes + l], max);
  }
  const FloatLanes sums = ((sum[0] + sum[1]) + (sum[2] + sum[3])) +
                          ((sum[4] + sum[5]) + (sum[6] + sum[7]));

  FloatLanes label_x;
  for (int r = 0; r < kLanes; ++r) label_x[r] = x[r * nc + labels[r]];
  const FloatLanes label_z = label_x - max;
  const FloatLanes stats_lo = SSD_SHUFFLE2(max, sums, 0, 8, 1, 9, 2, 10, 3, 11);
  const FloatLanes stats_hi = SSD_SHUFFLE2(max, sums, 4, 12, 5, 13, 6, 14, 7, 15);
  std::memcpy(stats, &stats_lo, sizeof stats_lo);
  std::memcpy(stats + kLanes, &stats_hi, sizeof stats_hi);
  pending.sums = sums;
  pending.label_z = floor > label_z ? floor : label_z;
  pending.ce = ce;
}

// Full blocks of kLanes rows go through transposed_block when C allows; returns the rows done.
SSD_ALWAYS_INLINE int64_t transposed_rows(const float* x, int64_t rows, int64_t nc, int64_t width,
                                          const int32_t* labels, float* stats, float* ce) {
  if (width > kMaxTransposedClasses) return 0;
  int64_t r = 0;
  PendingLog pending;
  for (; r + kLanes <= rows; r += kLanes) {
    transposed_block(x + r * nc, nc, width, labels + r, stats + 2 * r, ce + r, pending);
  }
  pending.finish();
  return r;
}

// The gradient row a * (softmax(x) - onehot(label)) of one prior: whole vectors, then the last
// values one by one (the row's end is not a vector boundary, and the next row is not ours).
SSD_ALWAYS_INLINE void grad_row(const float* x, int64_t nc, SoftmaxStats<float> s, int32_t label,
                                float a, float* g) {
  const FloatLanes max = FloatLanes{} + s.max;
  const float inv_sum = 1.f / s.sum;
  int64_t c = 0;
  for (; c + kLanes <= nc; c += kLanes) {
    const FloatLanes v = a * (exp_lanes(load_lanes(x + c), max) * inv_sum);
    std::memcpy(g + c, &v, sizeof v);
  }
  for (; c < nc; ++c) g[c] = a * softmax_prob(x[c], s);
  g[label] = a * (softmax_prob(x[label], s) - 1.f);
}
#endif

template <typename T>
SSD_ALWAYS_INLINE void grad_row(const T* x, int64_t nc, SoftmaxStats<T> s, int32_t label, T a,
                                T* g) {
  for (int64_t c = 0; c < nc; ++c) g[c] = a * softmax_prob(x[c], s);
  g[label] = a * (softmax_prob(x[label], s) - T(1));
}

// The generic path (double, and float without GCC vectors): one row at a time.
template <typename T>
SSD_ALWAYS_INLINE void row_block(const T* x, int64_t rows, int64_t nc, int64_t width,
                                 const int32_t* labels, T* stats, T* ce) {
  for (int64_t r = 0; r < rows; ++r) {
    row_stats(x + r * nc, nc, width, stats + 2 * r);
    ce[r] = cross_entropy(x + r * nc, labels[r], SoftmaxStats<T>{stats[2 * r], stats[2 * r + 1]});
  }
}

template <typename T>
SSD_ALWAYS_INLINE int64_t transposed_rows(const T*, int64_t, int64_t, int64_t, const int32_t*, T*,
                                          T*) {
  return 0;  // double, and float without GCC vectors: row by row
}

template <typename T>
SSD_CPU_CLONES void stats_rows(const T* logits, int64_t rows, int64_t nc, const int32_t* labels,
                               T* stats, T* ce) {
  const int64_t width = (nc + kLanes - 1) / kLanes * kLanes;
  // Rows whose padded read stays inside the array.
  const int64_t direct_rows =
      rows * nc < width ? 0 : std::min(rows, (rows * nc - width) / nc + 1);
  const int64_t transposed =
      transposed_rows(logits, direct_rows, nc, width, labels, stats, ce);
  for (int64_t r = transposed; r < direct_rows; r += kLanes) {
    row_block(logits + r * nc, std::min<int64_t>(kLanes, direct_rows - r), nc, width, labels + r,
              stats + 2 * r, ce + r);
  }
  std::vector<T> padded(width);
  for (int64_t r = direct_rows; r < rows; ++r) {
    std::copy(logits + r * nc, logits + (r + 1) * nc, padded.begin());
    std::fill(padded.begin() + nc, padded.end(), logits[r * nc]);
    row_block(padded.data(), 1, nc, width, labels + r, stats + 2 * r, ce + r);
  }
}


// The rows are scattered over the logits, which are no longer in the cache since the forward:
// prefetching a few rows ahead overlaps those misses.
template <typename T>
SSD_CPU_CLONES void grad_rows(const T* logits, int64_t nc, const int32_t* rows, int64_t count,
                              const T* stats, const int32_t* labels, T a, T* grad) {
  constexpr int64_t kAhead = 8;
  for (int64_t k = 0; k < count; ++k) {
    if (k + kAhead < count) {
      const T* next = logits + rows[k + kAhead] * nc;
      __builtin_prefetch(next);
      __builtin_prefetch(next + nc - 1);
    }
    const int64_t p = rows[k];
    grad_row(logits + p * nc, nc, SoftmaxStats<T>{stats[2 * p], stats[2 * p + 1]}, labels[p], a,
             grad + p * nc);
  }
}

}  // namespace

template <typename T>
void softmax_rows(const T* logits, int64_t rows, int64_t num_classes, const int32_t* labels,
                  T* stats, T* cross_entropy) {
  stats_rows(logits, rows, num_classes, labels, stats, cross_entropy);
}

template void softmax_rows<float>(const float*, int64_t, int64_t, const int32_t*, float*, float*);
template void softmax_rows<double>(const double*, int64_t, int64_t, const int32_t*, double*,
                                   double*);

template <typename T>
void softmax_grad_rows(const T* logits, int64_t num_classes, const int32_t* rows, int64_t count,
                       const T* stats, const int32_t* labels, T scale, T* grad) {
  grad_rows(logits, num_classes, rows, count, stats, labels, scale, grad);
}

template void softmax_grad_rows<float>(const float*, int64_t, const int32_t*, int64_t, const float*,
                                       const int32_t*, float, float*);
template void softmax_grad_rows<double>(const double*, int64_t, const int32_t*, int64_t,
                                        const double*, const int32_t*, double, double*);

}  // namespace cpu
}  // namespace ssd_loss
