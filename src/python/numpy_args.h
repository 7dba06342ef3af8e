// The NumPy arguments of the core's Python bindings (_core, and _core_cuda in src/cuda/): the
// same checks and messages, options and dtype dispatch for both.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "ssd_loss/ssd_loss.h"

namespace ssd_loss {
namespace python {

namespace py = pybind11;

template <typename T>
using Array = py::array_t<T, py::array::c_style | py::array::forcecast>;

inline void require(const std::string& err) {
  if (!err.empty()) throw py::value_error(err);
}

inline void require(bool ok, const std::string& msg) {
  if (!ok) throw py::value_error(msg);
}

// By kind and size, not dtype identity: an unpickled or big-endian float64 array must take the
// double path too (forcecast then brings it to native order).
inline bool is_double(const py::array& a) {
  return a.dtype().kind() == 'f' && a.dtype().itemsize() == 8;
}

// The options of forward(); normalization "" means: from normalize, as in the Python API.
inline Options options_from_args(int64_t background_label, float overlap_threshold,
                                 float neg_pos_ratio, float neg_overlap, float loc_loss_weight,
                                 float conf_loss_weight, const std::string& match_type,
                                 const std::string& mining_type, bool normalize,
                                 int64_t sample_size, const std::string& normalization,
                                 int64_t min_negatives_per_image,
                                 const std::string& neg_overlap_mode) {
  Options opt;
  require(make_options(background_label, overlap_threshold, neg_pos_ratio, neg_overlap,
                       loc_loss_weight, conf_loss_weight, match_type, mining_type,
                       normalization.empty() ? (normalize ? "valid" : "none") : normalization,
                       sample_size, min_negatives_per_image, neg_overlap_mode, &opt));
  return opt;
}

struct ForwardShape {
  int64_t n, np, nc, ng;
  std::vector<int64_t> gt_offsets;  // [n + 1]
};

// Checks forward()'s arrays against each other; returns their sizes and the gt offsets.
template <typename T>
ForwardShape check_forward_args(const Array<T>& location, const Array<T>& confidence,
                                const Array<T>& gt_box, const Array<int64_t>& gt_label,
                                const Array<int64_t>& gt_lengths, const Array<T>& prior_box,
                                const Array<T>& prior_var, const Options& opt) {
  require(location.ndim() == 3 && location.shape(2) == 4, "location: expected shape [N, Np, 4]");
  ForwardShape s;
  s.n = location.shape(0);
  s.np = location.shape(1);
  require(confidence.ndim() == 3 && confidence.shape(0) == s.n && confidence.shape(1) == s.np,
          "confidence: expected shape [N, Np, C]");
  s.nc = confidence.shape(2);
  require(s.np > 0 && s.nc > 0, "location/confidence: expected Np > 0 and C > 0");
  require(gt_box.ndim() == 2 && gt_box.shape(1) == 4, "gt_box: expected shape [Ng, 4]");
  s.ng = gt_box.shape(0);
  require(gt_label.size() == s.ng, "gt_label: expected one label per gt_box row");
  require(gt_lengths.size() == s.n, "gt_lengths: expected one count per image");
  require(prior_box.ndim() == 2 && prior_box.shape(0) == s.np && prior_box.shape(1) == 4,
          "prior_box: expected shape [Np, 4]");
  require(prior_var.size() == 4 || prior_var.size() == s.np * 4,
          "prior_box_var: expected shape [Np, 4] or 4 values");
  require(opt.background_label >= 0 && opt.background_label < s.nc,
          "background_label: expected a class id in [0, C)");
  s.gt_offsets.assign(s.n + 1, 0);
  for (int64_t i = 0; i < s.n; ++i) s.gt_offsets[i + 1] = s.gt_offsets[i] + gt_lengths.data()[i];
  require(check_gt_offsets(s.gt_offsets.data(), s.n, s.ng));
  require(check_labels(gt_label.data(), s.ng, s.nc));
  return s;
}

}  // namespace python
}  // namespace ssd_loss
