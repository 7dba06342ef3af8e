// Box geometry shared by the CPU and CUDA kernels: IoU, centre-size encoding, smooth L1.
//
// Every formula follows fluid 1.8.5 operation by operation (docs/semantics.md §3.1, §3.5, §3.7),
// because the matching and mining decisions depend on the exact float results: a re-ordered
// expression can flip a tie-break at the threshold. Do not "simplify" the arithmetic.
#pragma once

#include <cmath>

#include "ssd_loss/platform.h"

namespace ssd_loss {

// IoU below this counts as no overlap (fluid's bipartite_match cut-off).
constexpr float kMinOverlap = 1e-6f;

template <typename T>
SSD_HOST_DEVICE T clamp_min_zero(T x) {
  return x > T(0) ? x : T(0);
}

template <typename T>
SSD_HOST_DEVICE T box_area(T x1, T y1, T x2, T y2) {
  return (y2 - y1) * (x2 - x1);
}

// IoU of two (xmin, ymin, xmax, ymax) boxes in normalized coordinates (no "+1" pixel convention),
// given their areas (box_area). Areas are not clamped; the 1e-10 term keeps two identical
// zero-area boxes at IoU 0. Degenerate, inverted or NaN boxes give 0, a negative value or NaN,
// all of which fail `is_overlap`. Written branch-free so that loops over priors vectorize.
template <typename T>
SSD_HOST_DEVICE T iou(T ax1, T ay1, T ax2, T ay2, T area_a, T bx1, T by1, T bx2, T by2, T area_b) {
  const T iw = clamp_min_zero((ax2 < bx2 ? ax2 : bx2) - (ax1 > bx1 ? ax1 : bx1));
  const T ih = clamp_min_zero((ay2 < by2 ? ay2 : by2) - (ay1 > by1 ? ay1 : by1));
  const T inter = iw * ih;
  return inter / (((area_a + area_b) - inter) + T(1e-10));
}

template <typename T>
SSD_HOST_DEVICE T iou(const T* a, const T* b) {
  return iou(a[0], a[1], a[2], a[3], box_area(a[0], a[1], a[2], a[3]), b[0], b[1], b[2], b[3],
             box_area(b[0], b[1], b[2], b[3]));
}

// True when `overlap` is a usable match (also false for NaN).
template <typename T>
SSD_HOST_DEVICE bool is_overlap(T overlap) {
  return overlap >= T(kMinOverlap);
}

// SSD centre-size encoding of gt box `g` against prior `p` with variance `v`, written to out[4].
// The prior centre is min + size/2 and the division by the size precedes the one by the variance,
// as in fluid's box_coder.
template <typename T>
SSD_HOST_DEVICE void encode(const T* g, const T* p, const T* v, T* out) {
  const T pw = p[2] - p[0];
  const T ph = p[3] - p[1];
  const T pcx = p[0] + pw / T(2);
  const T pcy = p[1] + ph / T(2);
  const T gw = g[2] - g[0];
  const T gh = g[3] - g[1];
  const T gcx = (g[0] + g[2]) / T(2);
  const T gcy = (g[1] + g[3]) / T(2);
  out[0] = ((gcx - pcx) / pw) / v[0];
  out[1] = ((gcy - pcy) / ph) / v[1];
  out[2] = std::log(std::fabs(gw / pw)) / v[2];
  out[3] = std::log(std::fabs(gh / ph)) / v[3];
}

// Smooth L1 with sigma = 1 and its derivative.
template <typename T>
SSD_HOST_DEVICE T smooth_l1(T x) {
  const T ax = std::fabs(x);
  return ax < T(1) ? T(0.5) * x * x : ax - T(0.5);
}

template <typename T>
SSD_HOST_DEVICE T smooth_l1_grad(T x) {
  if (std::fabs(x) < T(1)) return x;
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x);
}

}  // namespace ssd_loss
