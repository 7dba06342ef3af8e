// pybind11 binding of the framework-free core (NumPy in, NumPy out): lets the kernels be tested,
// sanitized and benchmarked without Paddle.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "numpy_args.h"
#include "ssd_loss/parallel.h"
#include "ssd_loss/ssd_loss.h"

namespace py = pybind11;

namespace {

using namespace ssd_loss::python;

template <typename T>
py::dict forward(Array<T> location, Array<T> confidence, Array<T> gt_box, Array<int64_t> gt_label,
                 Array<int64_t> gt_lengths, Array<T> prior_box, Array<T> prior_var,
                 const ssd_loss::Options& opt) {
  const ForwardShape shape = check_forward_args(location, confidence, gt_box, gt_label,
                                                gt_lengths, prior_box, prior_var, opt);
  const int64_t n = shape.n, np = shape.np, nc = shape.nc;
  const std::vector<int64_t>& offsets = shape.gt_offsets;

  Array<T> loss({n, int64_t{1}}), normalizer({int64_t{1}}), loc_target({n, np, int64_t{4}}),
      stats({n, np, int64_t{2}});
  Array<int32_t> match({n, np}), target_class({n, np});
  ssd_loss::ForwardInputs<T> in;
  in.location = location.data();
  in.confidence = confidence.data();
  in.gt_box = gt_box.data();
  in.gt_label = gt_label.data();
  in.gt_offsets = offsets.data();
  in.prior_box = prior_box.data();
  in.prior_var = prior_var.data();
  in.prior_var_shared = prior_var.size() == 4 && np != 1;
  ssd_loss::ForwardOutputs<T> out;
  out.loss = loss.mutable_data();
  out.normalizer = normalizer.mutable_data();
  out.saved.match = match.mutable_data();
  out.saved.target_class = target_class.mutable_data();
  out.saved.loc_target = loc_target.mutable_data();
  out.saved.softmax_stats = stats.mutable_data();
  {
    py::gil_scoped_release release;
    ssd_loss::forward(in, {n, np, nc}, opt, out);
  }
  py::dict result;
  result["loss"] = loss;
  result["normalizer"] = normalizer;
  result["match"] = match;
  result["target_class"] = target_class;
  result["loc_target"] = loc_target;
  result["softmax_stats"] = stats;
  return result;
}

template <typename T>
py::tuple backward(Array<T> location, Array<T> confidence, Array<T> grad_loss,
                   const py::dict& saved, const ssd_loss::Options& opt) {
  const int64_t n = location.shape(0), np = location.shape(1), nc = confidence.shape(2);
  require(grad_loss.size() == n, "grad_loss: expected one value per image");
  Array<T> normalizer = saved["normalizer"].cast<Array<T>>();
  Array<int32_t> match = saved["match"].cast<Array<int32_t>>();
  Array<int32_t> target_class = saved["target_class"].cast<Array<int32_t>>();
  Array<T> loc_target = saved["loc_target"].cast<Array<T>>();
  Array<T> stats = saved["softmax_stats"].cast<Array<T>>();
  require(match.size() == n * np && target_class.size() == n * np &&
              loc_target.size() == n * np * 4 && stats.size() == n * np * 2,
          "saved: expected the forward result of these inputs");
  Array<T> grad_location({n, np, int64_t{4}}), grad_confidence({n, np, nc});
  ssd_loss::BackwardInputs<T> in;
  in.location = location.data();
  in.confidence = confidence.data();
  in.grad_loss = grad_loss.data();
  in.normalizer = normalizer.data();
  in.match = match.data();
  in.target_class = target_class.data();
  in.loc_target = loc_target.data();
  in.softmax_stats = stats.data();
  ssd_loss::BackwardOutputs<T> out;
  out.grad_location = grad_location.mutable_data();
  out.grad_confidence = grad_confidence.mutable_data();
  {
    py::gil_scoped_release release;
    ssd_loss::backward(in, {n, np, nc}, opt, out);
  }
  return py::make_tuple(grad_location, grad_confidence);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "Framework-free core of the fused SSD loss (NumPy in, NumPy out).";
  m.def(
      "forward",
      [](py::array location, py::array confidence, py::array gt_box, Array<int64_t> gt_label,
         Array<int64_t> gt_lengths, py::array prior_box, py::array prior_box_var,
         const py::kwargs& attributes) -> py::dict {
        const ssd_loss::Options opt = options_from_kwargs(attributes);
        if (is_double(location)) {
          return forward<double>(location, confidence, gt_box, gt_label, gt_lengths, prior_box,
                                 prior_box_var, opt);
        }
        return forward<float>(location, confidence, gt_box, gt_label, gt_lengths, prior_box,
                              prior_box_var, opt);
      },
      py::arg("location"), py::arg("confidence"), py::arg("gt_box"), py::arg("gt_label"),
      py::arg("gt_lengths"), py::arg("prior_box"), py::arg("prior_box_var"),
      "Forward pass; the op's attributes by keyword (ATTRIBUTES; normalize as in ssd_loss). "
      "Returns a dict with loss [N, 1] and the state saved for backward.");
  m.def(
      "backward",
      [](py::array location, py::array confidence, py::array grad_loss, const py::dict& saved,
         float loc_loss_weight, float conf_loss_weight) -> py::tuple {
        ssd_loss::Options opt;
        opt.loc_loss_weight = loc_loss_weight;
        opt.conf_loss_weight = conf_loss_weight;
        if (is_double(location)) return backward<double>(location, confidence, grad_loss, saved, opt);
        return backward<float>(location, confidence, grad_loss, saved, opt);
      },
      py::arg("location"), py::arg("confidence"), py::arg("grad_loss"), py::arg("saved"),
      py::arg("loc_loss_weight") = 1.0f, py::arg("conf_loss_weight") = 1.0f,
      "Backward pass; returns (grad_location, grad_confidence).");
  m.def(
      "op_attributes",
      [](const py::kwargs& attributes) {
        ssd_loss::Options opt;
        return attribute_values(attributes_from_kwargs(attributes, &opt));
      },
      "The op's attributes (by keyword, defaults for those not given; normalize as in ssd_loss) "
      "cast and checked by the rules the op applies: the tuple of their values in the op's "
      "order, or a TypeError / ValueError naming the first bad one.");
  m.attr("ATTRIBUTES") = attribute_table();
  m.def("set_num_threads", &ssd_loss::set_num_threads, py::arg("n"),
        "Threads of the CPU kernels in this module; n <= 0 restores the default.");
  m.def("num_threads", &ssd_loss::num_threads);
  m.attr("MAX_THREADS") = ssd_loss::kMaxThreads;
}
