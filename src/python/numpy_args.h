// The NumPy arguments of the core's Python bindings (_core, and _core_cuda in src/cuda/): the
// same checks and messages, options and dtype dispatch for both.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ssd_loss/policy.h"
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

// -- the op's attributes from Python values ---------------------------------------------------
// The casts of the Python API (its wrapper passes the user's values through here), with its
// messages: a TypeError for a wrong type, a ValueError for a value the attribute type cannot hold.
// The value rules are the core's (make_options).

inline std::string describe(py::handle value) {
  return std::string(py::str(py::type::handle_of(value).attr("__name__"))) + " " +
         std::string(py::repr(value));
}

inline bool is_bool(py::handle value) {
  return PyBool_Check(value.ptr()) ||
         py::isinstance(value, py::module_::import("numpy").attr("bool_"));
}

inline void from_python(const char* name, py::handle value, int* out) {
  if (is_bool(value) ||
      !py::isinstance(value, py::module_::import("numbers").attr("Integral"))) {
    throw py::type_error(std::string(name) + ": expected an int, received " + describe(value));
  }
  const py::int_ wide = py::reinterpret_steal<py::int_>(PyNumber_Index(value.ptr()));
  if (!wide) throw py::error_already_set();
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(wide.ptr(), &overflow);
  if (overflow != 0 || v < INT32_MIN || v > INT32_MAX) {
    throw py::value_error(std::string(name) + ": expected a 32-bit int, received " +
                          std::string(py::str(wide)));
  }
  *out = static_cast<int>(v);
}

// Checked as the float32 attribute it becomes: 1e39 is inf there. NaN and infinities pass on to
// the attribute's rule.
inline void from_python(const char* name, py::handle value, float* out) {
  if (is_bool(value) || !py::isinstance(value, py::module_::import("numbers").attr("Real"))) {
    throw py::type_error(std::string(name) + ": expected a number, received " + describe(value));
  }
  const double v = PyFloat_AsDouble(value.ptr());
  if (v == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  // The smallest magnitude that rounds to infinity as float32 (converting it is undefined).
  const double overflow = std::ldexp(2.0 - std::ldexp(1.0, -24), 127);
  if (std::isfinite(v) && std::fabs(v) >= overflow) {
    throw py::value_error(std::string(name) + ": expected a finite number (as float32), received " +
                          std::string(py::repr(py::float_(v))) + (v > 0 ? " (inf" : " (-inf") +
                          " as float32)");
  }
  *out = static_cast<float>(v);
}

inline void from_python(const char* name, py::handle value, std::string* out) {
  if (!py::isinstance<py::str>(value)) {
    throw py::type_error(std::string(name) + ": expected a str, received " + describe(value));
  }
  *out = value.cast<std::string>();
}

inline bool bool_from_python(const char* name, py::handle value) {
  if (is_bool(value)) return value.cast<bool>();
  if (py::isinstance(value, py::module_::import("numbers").attr("Integral"))) {
    const py::int_ v = py::reinterpret_steal<py::int_>(PyNumber_Index(value.ptr()));
    if (v && (v.equal(py::int_(0)) || v.equal(py::int_(1)))) return v.equal(py::int_(1));
    PyErr_Clear();
  }
  throw py::type_error(std::string(name) + ": expected a bool, received " + describe(value));
}

// The attributes from keyword arguments (the table's defaults for those not given), cast and
// checked; `normalize` (the Python API's bool form of normalization: 'valid' or 'none') applies
// when normalization is not given.
inline Attributes attributes_from_kwargs(const py::kwargs& kwargs, Options* options) {
  Attributes attributes;
  size_t known = 0;
#define SSD_LOSS_FROM_KWARG(name, attr_type, option_type, default_value, rule) \
  if (kwargs.contains(#name)) {                                               \
    from_python(#name, kwargs[#name], &attributes.name);                      \
    ++known;                                                                  \
  }
  SSD_LOSS_ATTRIBUTES(SSD_LOSS_FROM_KWARG)
#undef SSD_LOSS_FROM_KWARG
  if (kwargs.contains("normalize")) {
    const bool normalize = bool_from_python("normalize", kwargs["normalize"]);
    if (!kwargs.contains("normalization")) attributes.normalization = normalize ? "valid" : "none";
    ++known;
  }
  if (known != kwargs.size()) {
    for (const auto& item : kwargs) {
      const std::string key = py::str(item.first);
      bool listed = key == "normalize";
#define SSD_LOSS_IS_LISTED(name, attr_type, option_type, default_value, rule) \
  listed = listed || key == #name;
      SSD_LOSS_ATTRIBUTES(SSD_LOSS_IS_LISTED)
#undef SSD_LOSS_IS_LISTED
      if (!listed) throw py::type_error("unexpected keyword argument '" + key + "'");
    }
  }
  require(make_options(attributes, options));
  return attributes;
}

inline Options options_from_kwargs(const py::kwargs& kwargs) {
  Options options;
  attributes_from_kwargs(kwargs, &options);
  return options;
}

// The table for Python: ((name, attribute type, default), ...) in the op's attribute order.
inline py::tuple attribute_table() {
  py::list rows;
#define SSD_LOSS_TABLE_ROW(name, attr_type, option_type, default_value, rule) \
  rows.append(py::make_tuple(#name, #attr_type, attribute_default(default_value)));
  SSD_LOSS_ATTRIBUTES(SSD_LOSS_TABLE_ROW)
#undef SSD_LOSS_TABLE_ROW
  return py::tuple(rows);
}

// The attributes as the tuple of Python values the op receives, in its attribute order.
inline py::tuple attribute_values(const Attributes& attributes) {
  py::list values;
#define SSD_LOSS_VALUE(name, attr_type, option_type, default_value, rule) \
  values.append(py::cast(attributes.name));
  SSD_LOSS_ATTRIBUTES(SSD_LOSS_VALUE)
#undef SSD_LOSS_VALUE
  return py::tuple(values);
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
  require(check_background_label(opt.background_label, s.nc));
  s.gt_offsets.assign(s.n + 1, 0);
  const int64_t bad = offsets_from_lengths(gt_lengths.data(), s.n, s.ng, s.gt_offsets.data());
  if (bad >= 0) {
    require(false, "gt_lengths: expected counts >= 0 summing to the number of gt_box rows " +
                       std::to_string(s.ng) + ", received " +
                       std::to_string(gt_lengths.data()[bad]) + " at image " + std::to_string(bad));
  }
  require(check_gt_offsets(s.gt_offsets.data(), s.n, s.ng));
  require(check_labels(gt_label.data(), s.ng, s.nc));
  return s;
}

}  // namespace python
}  // namespace ssd_loss
