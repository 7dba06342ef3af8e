// pybind11 binding of the CUDA launchers (NumPy in, NumPy out): the twin of
// src/python/core_module.cc (module `_core`), with the same Python signatures, so that tests can
// compare the CUDA path against the CPU core call for call. Inputs are copied to the device
// (cudaMalloc / cudaMemcpy), the launchers run on the default stream, outputs are copied back.
//
// Link with the kernels (the other src/cuda/*.cu) and the core's host-side checks and option
// parsing (check_gt_offsets, check_labels, make_options: src/core/options.cc), e.g.
// scripts/check_cuda_compile.sh --link. Importing needs no GPU; calls without a CUDA device raise
// RuntimeError. device_count() returns 0 when no device is usable.
#include <cuda_runtime.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "../python/numpy_args.h"
#include "ssd_loss/ssd_loss.h"
#include "ssd_loss_cuda.h"

namespace py = pybind11;

namespace {

using namespace ssd_loss::python;

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(e) +
                             " (" + cudaGetErrorString(e) + ")");
  }
}

// A device allocation freed on scope exit (also when an exception unwinds).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes_ > 0) check_cuda(cudaMalloc(&ptr_, bytes_), "cudaMalloc");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  template <typename U>
  U* as() const {
    return static_cast<U*>(ptr_);
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

template <typename U>
void upload(DeviceBuffer& dst, const U* src, size_t count) {
  if (count > 0) {
    check_cuda(cudaMemcpy(dst.get(), src, count * sizeof(U), cudaMemcpyHostToDevice), "upload");
  }
}

template <typename U>
void download(U* dst, const DeviceBuffer& src, size_t count) {
  if (count > 0) {
    check_cuda(cudaMemcpy(dst, src.get(), count * sizeof(U), cudaMemcpyDeviceToHost), "download");
  }
}

template <typename U>
size_t bytes_of(int64_t count) {
  return static_cast<size_t>(count) * sizeof(U);
}

// A forward pass's inputs uploaded to the device, and device room for its outputs. gt_label and
// gt_offsets are left to the caller: uploaded when checked on the host (upload_gt), or computed
// on the device.
template <typename T>
struct DeviceForward {
  DeviceForward(const ForwardShape& shape, const Array<T>& location, const Array<T>& confidence,
                const Array<T>& gt_box, const Array<T>& prior_box, const Array<T>& prior_var)
      : n(shape.n), np(shape.np), nc(shape.nc),
        location(bytes_of<T>(n * np * 4)), confidence(bytes_of<T>(n * np * nc)),
        gt_box(bytes_of<T>(shape.ng * 4)), gt_label(bytes_of<int64_t>(shape.ng)),
        offsets(bytes_of<int64_t>(n + 1)), prior_box(bytes_of<T>(np * 4)),
        prior_var(bytes_of<T>(prior_var.size())), loss(bytes_of<T>(n)),
        normalizer(bytes_of<T>(1)), match(bytes_of<int32_t>(n * np)),
        target_class(bytes_of<int32_t>(n * np)), loc_target(bytes_of<T>(n * np * 4)),
        stats(bytes_of<T>(n * np * 2)),
        workspace(ssd_loss::cuda::forward_workspace_bytes({n, np, nc}, shape.ng)) {
    upload(this->location, location.data(), n * np * 4);
    upload(this->confidence, confidence.data(), n * np * nc);
    upload(this->gt_box, gt_box.data(), shape.ng * 4);
    upload(this->prior_box, prior_box.data(), np * 4);
    upload(this->prior_var, prior_var.data(), prior_var.size());
    in.location = this->location.template as<T>();
    in.confidence = this->confidence.template as<T>();
    in.gt_box = this->gt_box.template as<T>();
    in.gt_label = this->gt_label.template as<int64_t>();
    in.gt_offsets = offsets.template as<int64_t>();
    in.prior_box = this->prior_box.template as<T>();
    in.prior_var = this->prior_var.template as<T>();
    in.prior_var_shared = prior_var.size() == 4 && np != 1;
    out.loss = loss.template as<T>();
    out.normalizer = normalizer.template as<T>();
    out.saved.match = match.template as<int32_t>();
    out.saved.target_class = target_class.template as<int32_t>();
    out.saved.loc_target = loc_target.template as<T>();
    out.saved.softmax_stats = stats.template as<T>();
  }

  void upload_gt(const ForwardShape& shape, const Array<int64_t>& labels) {
    upload(gt_label, labels.data(), shape.ng);
    upload(offsets, shape.gt_offsets.data(), n + 1);
  }

  // Enqueues the forward pass on `stream`.
  void run(const ssd_loss::Options& opt, cudaStream_t stream) {
    check_cuda(ssd_loss::cuda::forward_cuda(in, {n, np, nc}, opt, out, workspace.get(),
                                            workspace.bytes(), stream),
               "forward_cuda (launch)");
  }

  const int64_t n, np, nc;
  DeviceBuffer location, confidence, gt_box, gt_label, offsets, prior_box, prior_var, loss,
      normalizer, match, target_class, loc_target, stats, workspace;
  ssd_loss::ForwardInputs<T> in;
  ssd_loss::ForwardOutputs<T> out;
};

template <typename T>
py::dict download_forward(const DeviceForward<T>& d) {
  const int64_t n = d.n, np = d.np;
  Array<T> loss({n, int64_t{1}}), normalizer({int64_t{1}}), loc_target({n, np, int64_t{4}}),
      stats({n, np, int64_t{2}});
  Array<int32_t> match({n, np}), target_class({n, np});
  {
    py::gil_scoped_release release;
    check_cuda(cudaDeviceSynchronize(), "forward_cuda (kernels)");
    download(loss.mutable_data(), d.loss, n);
    download(normalizer.mutable_data(), d.normalizer, 1);
    download(match.mutable_data(), d.match, n * np);
    download(target_class.mutable_data(), d.target_class, n * np);
    download(loc_target.mutable_data(), d.loc_target, n * np * 4);
    download(stats.mutable_data(), d.stats, n * np * 2);
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
py::dict forward(Array<T> location, Array<T> confidence, Array<T> gt_box, Array<int64_t> gt_label,
                 Array<int64_t> gt_lengths, Array<T> prior_box, Array<T> prior_var,
                 const ssd_loss::Options& opt) {
  const ForwardShape shape = check_forward_args(location, confidence, gt_box, gt_label,
                                                gt_lengths, prior_box, prior_var, opt);
  py::gil_scoped_release release;
  DeviceForward<T> d(shape, location, confidence, gt_box, prior_box, prior_var);
  d.upload_gt(shape, gt_label);
  d.run(opt, nullptr);
  py::gil_scoped_acquire acquire;
  return download_forward(d);
}

// The Paddle op's path for gt_label / gt_lengths tensors that are already on the device: they are
// uploaded as they are (labels int32, int64, float32 or float64; counts int32 or int64) and
// converted on the device (labels_to_int64_cuda, gt_offsets_from_lengths_cuda), without host
// checks: bad labels or counts give NaN losses (rejected images), not errors.
template <typename T>
py::dict forward_device_gt(Array<T> location, Array<T> confidence, Array<T> gt_box,
                           py::array gt_label, py::array gt_lengths, Array<T> prior_box,
                           Array<T> prior_var, const ssd_loss::Options& opt) {
  require(location.ndim() == 3 && location.shape(2) == 4, "location: expected shape [N, Np, 4]");
  ForwardShape shape;
  shape.n = location.shape(0);
  shape.np = location.shape(1);
  require(confidence.ndim() == 3 && confidence.shape(0) == shape.n &&
              confidence.shape(1) == shape.np,
          "confidence: expected shape [N, Np, C]");
  shape.nc = confidence.shape(2);
  require(shape.np > 0 && shape.nc > 0, "location/confidence: expected Np > 0 and C > 0");
  require(gt_box.ndim() == 2 && gt_box.shape(1) == 4, "gt_box: expected shape [Ng, 4]");
  shape.ng = gt_box.shape(0);
  require(gt_label.size() == shape.ng, "gt_label: expected one label per gt_box row");
  require(gt_lengths.size() == shape.n, "gt_lengths: expected one count per image");
  require(prior_box.ndim() == 2 && prior_box.shape(0) == shape.np && prior_box.shape(1) == 4,
          "prior_box: expected shape [Np, 4]");
  require(prior_var.size() == 4 || prior_var.size() == shape.np * 4,
          "prior_box_var: expected shape [Np, 4] or 4 values");
  require(ssd_loss::check_background_label(opt.background_label, shape.nc));
  ssd_loss::cuda::LabelType label_type;
  const char kind = gt_label.dtype().kind();
  const auto label_size = gt_label.dtype().itemsize();
  if (kind == 'i' && label_size == 4) {
    label_type = ssd_loss::cuda::LabelType::kInt32;
  } else if (kind == 'i' && label_size == 8) {
    label_type = ssd_loss::cuda::LabelType::kInt64;
  } else if (kind == 'f' && label_size == 4) {
    label_type = ssd_loss::cuda::LabelType::kFloat32;
  } else if (kind == 'f' && label_size == 8) {
    label_type = ssd_loss::cuda::LabelType::kFloat64;
  } else {
    throw py::type_error("gt_label: expected dtype int32, int64, float32 or float64");
  }
  const auto lengths_kind = gt_lengths.dtype().kind();
  const auto lengths_size = gt_lengths.dtype().itemsize();
  require(lengths_kind == 'i' && (lengths_size == 4 || lengths_size == 8),
          "gt_lengths: expected dtype int32 or int64");
  const py::array labels = py::array::ensure(gt_label, py::array::c_style);
  const py::array lengths = py::array::ensure(gt_lengths, py::array::c_style);
  require(labels.dtype().byteorder() != '>' && lengths.dtype().byteorder() != '>',
          "gt_label, gt_lengths: expected native byte order");
  py::gil_scoped_release release;
  DeviceForward<T> d(shape, location, confidence, gt_box, prior_box, prior_var);
  DeviceBuffer raw_labels(static_cast<size_t>(shape.ng) * label_size),
      raw_lengths(static_cast<size_t>(shape.n) * lengths_size);
  upload(raw_labels, static_cast<const char*>(labels.data()), raw_labels.bytes());
  upload(raw_lengths, static_cast<const char*>(lengths.data()), raw_lengths.bytes());
  check_cuda(ssd_loss::cuda::labels_to_int64_cuda(raw_labels.get(), label_type, shape.ng,
                                                  shape.nc, d.gt_label.template as<int64_t>(),
                                                  nullptr),
             "labels_to_int64_cuda (launch)");
  check_cuda(ssd_loss::cuda::gt_offsets_from_lengths_cuda(
                 raw_lengths.get(), lengths_size == 8, shape.n, shape.ng,
                 d.offsets.template as<int64_t>(), nullptr),
             "gt_offsets_from_lengths_cuda (launch)");
  d.run(opt, nullptr);
  py::gil_scoped_acquire acquire;
  return download_forward(d);
}

template <typename T>
py::tuple backward(Array<T> location, Array<T> confidence, Array<T> grad_loss,
                   const py::dict& saved, const ssd_loss::Options& opt) {
  require(location.ndim() == 3 && location.shape(2) == 4, "location: expected shape [N, Np, 4]");
  require(confidence.ndim() == 3 && confidence.shape(0) == location.shape(0) &&
              confidence.shape(1) == location.shape(1),
          "confidence: expected shape [N, Np, C]");
  const int64_t n = location.shape(0), np = location.shape(1), nc = confidence.shape(2);
  require(grad_loss.size() == n, "grad_loss: expected one value per image");
  Array<T> normalizer = saved["normalizer"].cast<Array<T>>();
  Array<int32_t> match = saved["match"].cast<Array<int32_t>>();
  Array<int32_t> target_class = saved["target_class"].cast<Array<int32_t>>();
  Array<T> loc_target = saved["loc_target"].cast<Array<T>>();
  Array<T> stats = saved["softmax_stats"].cast<Array<T>>();
  require(normalizer.size() == 1 && match.size() == n * np && target_class.size() == n * np &&
              loc_target.size() == n * np * 4 && stats.size() == n * np * 2,
          "saved: expected the forward result of these inputs");
  Array<T> grad_location({n, np, int64_t{4}}), grad_confidence({n, np, nc});
  {
    py::gil_scoped_release release;
    DeviceBuffer d_location(bytes_of<T>(n * np * 4)), d_confidence(bytes_of<T>(n * np * nc)),
        d_grad_loss(bytes_of<T>(n)), d_normalizer(bytes_of<T>(1)),
        d_match(bytes_of<int32_t>(n * np)), d_target_class(bytes_of<int32_t>(n * np)),
        d_loc_target(bytes_of<T>(n * np * 4)), d_stats(bytes_of<T>(n * np * 2)),
        d_grad_location(bytes_of<T>(n * np * 4)), d_grad_confidence(bytes_of<T>(n * np * nc));
    upload(d_location, location.data(), n * np * 4);
    upload(d_confidence, confidence.data(), n * np * nc);
    upload(d_grad_loss, grad_loss.data(), n);
    upload(d_normalizer, normalizer.data(), 1);
    upload(d_match, match.data(), n * np);
    upload(d_target_class, target_class.data(), n * np);
    upload(d_loc_target, loc_target.data(), n * np * 4);
    upload(d_stats, stats.data(), n * np * 2);

    ssd_loss::BackwardInputs<T> in;
    in.location = d_location.as<T>();
    in.confidence = d_confidence.as<T>();
    in.grad_loss = d_grad_loss.as<T>();
    in.normalizer = d_normalizer.as<T>();
    in.match = d_match.as<int32_t>();
    in.target_class = d_target_class.as<int32_t>();
    in.loc_target = d_loc_target.as<T>();
    in.softmax_stats = d_stats.as<T>();
    ssd_loss::BackwardOutputs<T> out;
    out.grad_location = d_grad_location.as<T>();
    out.grad_confidence = d_grad_confidence.as<T>();
    check_cuda(ssd_loss::cuda::backward_cuda(in, {n, np, nc}, opt, out, nullptr),
               "backward_cuda (launch)");
    check_cuda(cudaDeviceSynchronize(), "backward_cuda (kernels)");
    download(grad_location.mutable_data(), d_grad_location, n * np * 4);
    download(grad_confidence.mutable_data(), d_grad_confidence, n * np * nc);
  }
  return py::make_tuple(grad_location, grad_confidence);
}


int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the error (no driver, no device)
    return 0;
  }
  return count;
}

}  // namespace

// Device times of the op, inputs uploaded once: per run, forward alone and forward+backward
// (upstream gradient 1), each between two events on one stream, nothing copied in between.
template <typename T>
py::dict time_forward_backward(Array<T> location, Array<T> confidence, Array<T> gt_box,
                               Array<int64_t> gt_label, Array<int64_t> gt_lengths,
                               Array<T> prior_box, Array<T> prior_var,
                               const ssd_loss::Options& opt, int runs, int warmup) {
  require(runs > 0 && warmup >= 0, "runs: expected > 0 (and warmup >= 0)");
  const ForwardShape shape = check_forward_args(location, confidence, gt_box, gt_label,
                                                gt_lengths, prior_box, prior_var, opt);
  const int64_t n = shape.n, np = shape.np, nc = shape.nc;
  std::vector<double> forward_ms, forward_backward_ms;
  {
    py::gil_scoped_release release;
    DeviceForward<T> d(shape, location, confidence, gt_box, prior_box, prior_var);
    d.upload_gt(shape, gt_label);
    DeviceBuffer grad_loss(bytes_of<T>(n)), grad_location(bytes_of<T>(n * np * 4)),
        grad_confidence(bytes_of<T>(n * np * nc));
    const std::vector<T> ones(n, T(1));
    upload(grad_loss, ones.data(), n);
    ssd_loss::BackwardInputs<T> in;
    in.location = d.in.location;
    in.confidence = d.in.confidence;
    in.grad_loss = grad_loss.as<T>();
    in.normalizer = d.out.normalizer;
    in.match = d.out.saved.match;
    in.target_class = d.out.saved.target_class;
    in.loc_target = d.out.saved.loc_target;
    in.softmax_stats = d.out.saved.softmax_stats;
    ssd_loss::BackwardOutputs<T> out;
    out.grad_location = grad_location.as<T>();
    out.grad_confidence = grad_confidence.as<T>();

    cudaStream_t stream;
    check_cuda(cudaStreamCreate(&stream), "cudaStreamCreate");
    cudaEvent_t start, forwarded, done;
    check_cuda(cudaEventCreate(&start), "cudaEventCreate");
    check_cuda(cudaEventCreate(&forwarded), "cudaEventCreate");
    check_cuda(cudaEventCreate(&done), "cudaEventCreate");
    for (int r = 0; r < warmup + runs; ++r) {
      check_cuda(cudaEventRecord(start, stream), "cudaEventRecord");
      d.run(opt, stream);
      check_cuda(cudaEventRecord(forwarded, stream), "cudaEventRecord");
      check_cuda(ssd_loss::cuda::backward_cuda(in, {n, np, nc}, opt, out, stream),
                 "backward_cuda (launch)");
      check_cuda(cudaEventRecord(done, stream), "cudaEventRecord");
      check_cuda(cudaEventSynchronize(done), "kernels");
      float fwd = 0.f, total = 0.f;
      check_cuda(cudaEventElapsedTime(&fwd, start, forwarded), "cudaEventElapsedTime");
      check_cuda(cudaEventElapsedTime(&total, start, done), "cudaEventElapsedTime");
      if (r >= warmup) forward_ms.push_back(fwd), forward_backward_ms.push_back(total);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(forwarded);
    cudaEventDestroy(done);
    cudaStreamDestroy(stream);
  }
  py::dict result;
  result["forward_ms"] = py::array_t<double>(forward_ms.size(), forward_ms.data());
  result["forward_backward_ms"] =
      py::array_t<double>(forward_backward_ms.size(), forward_backward_ms.data());
  return result;
}

PYBIND11_MODULE(_core_cuda, m) {
  m.doc() = "CUDA path of the fused SSD loss core (NumPy in, NumPy out; device copies inside).";
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
      "Forward pass on the GPU; the op's attributes by keyword as in _core.forward. Returns a "
      "dict with loss [N, 1] and the state saved for backward.");
  m.def(
      "forward_device_gt",
      [](py::array location, py::array confidence, py::array gt_box, py::array gt_label,
         py::array gt_lengths, py::array prior_box, py::array prior_box_var,
         const py::kwargs& attributes) -> py::dict {
        const ssd_loss::Options opt = options_from_kwargs(attributes);
        if (is_double(location)) {
          return forward_device_gt<double>(location, confidence, gt_box, gt_label, gt_lengths,
                                           prior_box, prior_box_var, opt);
        }
        return forward_device_gt<float>(location, confidence, gt_box, gt_label, gt_lengths,
                                        prior_box, prior_box_var, opt);
      },
      py::arg("location"), py::arg("confidence"), py::arg("gt_box"), py::arg("gt_label"),
      py::arg("gt_lengths"), py::arg("prior_box"), py::arg("prior_box_var"),
      "forward() with gt_label (int32/int64/float32/float64) and gt_lengths (int32/int64) "
      "converted and checked on the device, as the Paddle op does for GPU tensors: bad labels "
      "or counts give NaN losses instead of errors.");
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
      "Backward pass on the GPU; returns (grad_location, grad_confidence).");
  m.def(
      "time_forward_backward",
      [](py::array location, py::array confidence, py::array gt_box, Array<int64_t> gt_label,
         Array<int64_t> gt_lengths, py::array prior_box, py::array prior_box_var, int runs,
         int warmup) -> py::dict {
        const ssd_loss::Options opt;  // fluid's defaults
        if (is_double(location)) {
          return time_forward_backward<double>(location, confidence, gt_box, gt_label,
                                               gt_lengths, prior_box, prior_box_var, opt, runs,
                                               warmup);
        }
        return time_forward_backward<float>(location, confidence, gt_box, gt_label, gt_lengths,
                                            prior_box, prior_box_var, opt, runs, warmup);
      },
      py::arg("location"), py::arg("confidence"), py::arg("gt_box"), py::arg("gt_label"),
      py::arg("gt_lengths"), py::arg("prior_box"), py::arg("prior_box_var"), py::arg("runs") = 20,
      py::arg("warmup") = 3,
      "Device milliseconds of `runs` forward and forward+backward passes (default attributes), "
      "inputs uploaded once: dict(forward_ms=array, forward_backward_ms=array).");
  m.def("device_count", &device_count, "Number of usable CUDA devices (0 without driver/device).");
  m.def(
      "forward_workspace_bytes",
      [](int64_t n, int64_t np, int64_t nc, int64_t num_gt) {
        return ssd_loss::cuda::forward_workspace_bytes({n, np, nc}, num_gt);
      },
      py::arg("num_images"), py::arg("num_priors"), py::arg("num_classes"), py::arg("num_gt"));
}
