// Paddle registration of the fused SSD loss: shape/dtype inference and dispatch. CPU tensors run
// the framework-free core; GPU tensors run the CUDA kernels when the build has them and they are
// enabled (ssd_loss_op_cuda.h), otherwise a host fallback: copy to the host, run the core, copy
// the results back (correct, but synchronous).
#include <string>
#include <type_traits>
#include <vector>

#include "op_boundary.h"
#include "op_inputs.h"
#include "output_cache.h"
#include "paddle/extension.h"
#include "ssd_loss/parallel.h"
#include "ssd_loss/ssd_loss.h"
#ifdef PADDLE_WITH_CUDA
#include "ssd_loss_op_cuda.h"
#endif

namespace {

// Brings a tensor to the host (the fallback for GPU tensors).
paddle::Tensor on_host(const paddle::Tensor& t) {
  return t.is_cpu() ? t : t.copy_to(paddle::CPUPlace(), true);
}

std::vector<paddle::Tensor> forward(
    const paddle::Tensor& location_in, const paddle::Tensor& confidence_in,
    const paddle::Tensor& gt_box_in, const paddle::Tensor& gt_label_in,
    const paddle::Tensor& prior_box_in, const paddle::optional<paddle::Tensor>& prior_box_var_in,
    const paddle::optional<paddle::Tensor>& gt_lengths, const ssd_loss::Attributes& attributes) {
  ssd_op::check_inputs(location_in, confidence_in, gt_box_in, gt_label_in, prior_box_in,
                       prior_box_var_in);
  const ssd_loss::Options opt = ssd_op::forward_options(attributes, confidence_in.shape()[2]);
#ifdef PADDLE_WITH_CUDA
  if (location_in.is_gpu() && confidence_in.is_gpu() && ssd_op::cuda_kernels_enabled()) {
    return ssd_op::forward_on_gpu(location_in, confidence_in, gt_box_in, gt_label_in,
                                  prior_box_in, prior_box_var_in, gt_lengths, opt);
  }
#endif
  const paddle::Tensor location = on_host(location_in);
  const paddle::Tensor confidence = on_host(confidence_in);
  const paddle::Tensor gt_box = on_host(gt_box_in);
  const paddle::Tensor gt_label = on_host(gt_label_in);
  const paddle::Tensor prior_box = on_host(prior_box_in);

  const int64_t n = location.shape()[0], np = location.shape()[1], nc = confidence.shape()[2];
  // The LoD lives on the tensors handed to the op, so read it before any host copy.
  const std::vector<int64_t> offsets = ssd_op::gt_offsets(gt_box_in, gt_label_in,
      gt_lengths ? paddle::optional<paddle::Tensor>(on_host(*gt_lengths)) : gt_lengths, n);
  const std::vector<int64_t> labels = ssd_op::labels_as_int64(gt_label, nc);

  const auto dtype = location.dtype();
  paddle::Tensor loss = ssd_op::host_output({n, 1}, dtype);
  paddle::Tensor normalizer = ssd_op::host_output({1}, dtype);
  paddle::Tensor match = ssd_op::host_output({n, np}, paddle::DataType::INT32);
  paddle::Tensor target_class = ssd_op::host_output({n, np}, paddle::DataType::INT32);
  paddle::Tensor loc_target = ssd_op::host_output({n, np, 4}, dtype);
  paddle::Tensor softmax_stats = ssd_op::host_output({n, np, 2}, dtype);
  const ssd_loss::Sizes sizes{n, np, nc};

  PD_DISPATCH_FLOATING_TYPES(dtype, "fused_ssd_loss", ([&] {
    std::vector<data_t> unit_var{1, 1, 1, 1};
    paddle::Tensor var_host;
    ssd_loss::ForwardInputs<data_t> in;
    in.location = location.data<data_t>();
    in.confidence = confidence.data<data_t>();
    in.gt_box = gt_box.data<data_t>();
    in.gt_label = labels.data();
    in.gt_offsets = offsets.data();
    in.prior_box = prior_box.data<data_t>();
    if (prior_box_var_in) {
      var_host = on_host(*prior_box_var_in);
      in.prior_var = var_host.data<data_t>();
      in.prior_var_shared = var_host.numel() == 4 && np != 1;
    } else {
      in.prior_var = unit_var.data();
      in.prior_var_shared = true;
    }
    ssd_loss::forward(in, sizes, opt,
                      ssd_op::forward_outputs<data_t>(loss, normalizer, match, target_class,
                                                      loc_target, softmax_stats));
  }));

  const auto place = location_in.place();
  if (!location_in.is_cpu()) {
    return {loss.copy_to(place, false), match.copy_to(place, false),
            target_class.copy_to(place, false), loc_target.copy_to(place, false),
            softmax_stats.copy_to(place, false), normalizer.copy_to(place, true)};
  }
  return {loss, match, target_class, loc_target, softmax_stats, normalizer};
}

std::vector<paddle::Tensor> backward(
    const paddle::Tensor& location_in, const paddle::Tensor& confidence_in,
    const paddle::Tensor& match_in, const paddle::Tensor& target_class_in,
    const paddle::Tensor& loc_target_in, const paddle::Tensor& softmax_stats_in,
    const paddle::Tensor& normalizer_in, const paddle::Tensor& grad_loss_in,
    float loc_loss_weight, float conf_loss_weight) {
  ssd_loss::Options opt;
  opt.loc_loss_weight = loc_loss_weight;
  opt.conf_loss_weight = conf_loss_weight;
#ifdef PADDLE_WITH_CUDA
  if (location_in.is_gpu() && confidence_in.is_gpu() && ssd_op::cuda_kernels_enabled()) {
    return ssd_op::backward_on_gpu(location_in, confidence_in, match_in, target_class_in,
                                   loc_target_in, softmax_stats_in, normalizer_in, grad_loss_in,
                                   opt);
  }
#endif
  const paddle::Tensor location = on_host(location_in);
  const paddle::Tensor confidence = on_host(confidence_in);
  const paddle::Tensor match = on_host(match_in);
  const paddle::Tensor target_class = on_host(target_class_in);
  const paddle::Tensor loc_target = on_host(loc_target_in);
  const paddle::Tensor softmax_stats = on_host(softmax_stats_in);
  const paddle::Tensor normalizer = on_host(normalizer_in);
  const paddle::Tensor grad_loss = on_host(grad_loss_in);
  const int64_t n = location.shape()[0], np = location.shape()[1], nc = confidence.shape()[2];
  SSD_CHECK(grad_loss.numel() == n, "loss gradient: expected ", n, " values, received ",
           grad_loss.numel());
  paddle::Tensor grad_location = ssd_op::host_output(location.shape(), location.dtype());
  paddle::Tensor grad_confidence = ssd_op::host_output(confidence.shape(), confidence.dtype());
  const ssd_loss::Sizes sizes{n, np, nc};

  PD_DISPATCH_FLOATING_TYPES(location.dtype(), "fused_ssd_loss_grad", ([&] {
    const auto in = ssd_op::backward_inputs<data_t>(location, confidence, match, target_class,
                                                    loc_target, softmax_stats, normalizer,
                                                    grad_loss);
    ssd_loss::backward(in, sizes, opt,
                       ssd_op::backward_outputs<data_t>(grad_location, grad_confidence));
  }));

  if (!location_in.is_cpu()) {
    const auto place = location_in.place();
    return {grad_location.copy_to(place, false), grad_confidence.copy_to(place, true)};
  }
  return {grad_location, grad_confidence};
}

// The kernel's trailing parameters, one per attribute of the table (ssd_loss/attributes.h), in
// its order and of its types: Paddle matches them to the .Attrs list below, generated alike.
template <typename T>
using AttrParam = std::conditional_t<std::is_arithmetic<T>::value, T, const T&>;
#define SSD_OP_ATTR_PARAM(name, attr_type, option_type, default_value, rule) \
  , AttrParam<attr_type> name
#define SSD_OP_ATTR_ARG(name, attr_type, option_type, default_value, rule) name,
#define SSD_OP_ATTR_DECL(name, attr_type, option_type, default_value, rule) #name ": " #attr_type,

// The kernels Paddle calls: forward / backward behind the exception boundary.
std::vector<paddle::Tensor> SsdLossForward(
    const paddle::Tensor& location, const paddle::Tensor& confidence, const paddle::Tensor& gt_box,
    const paddle::Tensor& gt_label, const paddle::Tensor& prior_box,
    const paddle::optional<paddle::Tensor>& prior_box_var,
    const paddle::optional<paddle::Tensor>& gt_lengths
    SSD_LOSS_ATTRIBUTES(SSD_OP_ATTR_PARAM)) {
  return ssd_op::at_op_boundary("fused_ssd_loss", [&] {
    return forward(location, confidence, gt_box, gt_label, prior_box, prior_box_var, gt_lengths,
                   ssd_loss::Attributes{SSD_LOSS_ATTRIBUTES(SSD_OP_ATTR_ARG)});
  });
}

std::vector<paddle::Tensor> SsdLossBackward(
    const paddle::Tensor& location, const paddle::Tensor& confidence, const paddle::Tensor& match,
    const paddle::Tensor& target_class, const paddle::Tensor& loc_target,
    const paddle::Tensor& softmax_stats, const paddle::Tensor& normalizer,
    const paddle::Tensor& grad_loss, float loc_loss_weight, float conf_loss_weight) {
  return ssd_op::at_op_boundary("fused_ssd_loss_grad", [&] {
    return backward(location, confidence, match, target_class, loc_target, softmax_stats,
                    normalizer, grad_loss, loc_loss_weight, conf_loss_weight);
  });
}

// The op has no second-order gradient. This node only exists so that differentiating its gradient
// again (paddle.grad(..., create_graph=True), then a second grad) raises an error naming the op,
// instead of Paddle's "does not appear in the backward graph" or a silently missing term.
std::vector<paddle::Tensor> SsdLossDoubleBackward(const paddle::Tensor&, const paddle::Tensor&,
                                                  const paddle::Tensor&, const paddle::Tensor&) {
  PADDLE_THROW(phi::errors::Unimplemented(
      "fused_ssd_loss (paddle_ssd_op.ssd_loss) has no second-order gradient: its gradient cannot "
      "be differentiated again. Take the gradient of the loss without create_graph=True, or keep "
      "the loss out of the part of the graph that is differentiated twice."));
}

std::vector<std::vector<int64_t>> SsdLossDoubleBackwardInferShape(
    const std::vector<int64_t>& location, const std::vector<int64_t>& confidence,
    const std::vector<int64_t>&, const std::vector<int64_t>&) {
  return {location, confidence};
}

std::vector<paddle::DataType> SsdLossDoubleBackwardInferDtype(
    const paddle::DataType& location, const paddle::DataType& confidence,
    const paddle::DataType&, const paddle::DataType&) {
  return {location, confidence};
}

std::vector<std::vector<int64_t>> SsdLossInferShape(
    const std::vector<int64_t>& location, const std::vector<int64_t>& confidence,
    const std::vector<int64_t>& gt_box, const std::vector<int64_t>& gt_label,
    const std::vector<int64_t>& prior_box) {
  const int64_t n = location.empty() ? -1 : location[0];
  const int64_t np = location.size() < 2 ? -1 : location[1];
  return {{n, 1}, {n, np}, {n, np}, {n, np, 4}, {n, np, 2}, {1}};
}

std::vector<paddle::DataType> SsdLossInferDtype(const paddle::DataType& location,
                                                const paddle::DataType& confidence,
                                                const paddle::DataType& gt_box,
                                                const paddle::DataType& gt_label,
                                                const paddle::DataType& prior_box) {
  return {location, paddle::DataType::INT32, paddle::DataType::INT32,
          location, location, location};
}

}  // namespace

PD_BUILD_OP(fused_ssd_loss)
    .Inputs({"Location", "Confidence", "GtBox", "GtLabel", "PriorBox",
             paddle::Optional("PriorBoxVar"), paddle::Optional("GtLengths")})
    .Outputs({"Loss", "MatchIndices", "TargetClass", "LocTarget", "SoftmaxStats", "Normalizer"})
    .Attrs({SSD_LOSS_ATTRIBUTES(SSD_OP_ATTR_DECL)})
    .SetKernelFn(PD_KERNEL(SsdLossForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SsdLossInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SsdLossInferDtype));

PD_BUILD_GRAD_OP(fused_ssd_loss)
    .Inputs({"Location", "Confidence", "MatchIndices", "TargetClass", "LocTarget", "SoftmaxStats",
             "Normalizer", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("Location"), paddle::Grad("Confidence")})
    .Attrs({"loc_loss_weight: float", "conf_loss_weight: float"})
    .SetKernelFn(PD_KERNEL(SsdLossBackward));

PD_BUILD_DOUBLE_GRAD_OP(fused_ssd_loss)
    .Inputs({"Location", "Confidence", paddle::Grad(paddle::Grad("Location")),
             paddle::Grad(paddle::Grad("Confidence"))})
    .Outputs({paddle::Grad("Location"), paddle::Grad("Confidence")})
    .SetKernelFn(PD_KERNEL(SsdLossDoubleBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(SsdLossDoubleBackwardInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SsdLossDoubleBackwardInferDtype));

// Thread and cache control through ctypes (paddle_ssd_op.empty_cache; the thread count is that of
// the core library, which the op shares with _core: paddle_ssd_op.set_num_threads goes through
// _core, and a C user of the op library alone through these).
extern "C" {
__attribute__((visibility("default"))) void paddle_ssd_op_set_num_threads(int n) {
  ssd_loss::set_num_threads(n);
}
__attribute__((visibility("default"))) int paddle_ssd_op_num_threads() {
  return ssd_loss::num_threads();
}
__attribute__((visibility("default"))) void paddle_ssd_op_empty_cache() {
  ssd_op::release_idle_outputs();
}
// 1 when the library holds the CUDA kernels (then ssd_loss_op_cuda.cc exports their switch).
__attribute__((visibility("default"))) int paddle_ssd_op_cuda_kernels_built() {
#ifdef PADDLE_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}
}
