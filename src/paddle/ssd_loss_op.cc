// Paddle registration of the fused SSD loss: shape/dtype inference, reading the per-image gt
// layout (gt_lengths or the LoD of gt_box/gt_label), and dispatch to the framework-free core.
#include <sstream>
#include <string>
#include <vector>

#include "paddle/extension.h"
#include "paddle/phi/core/dense_tensor.h"
#include "paddle/phi/core/enforce.h"
#include "output_cache.h"
#include "ssd_loss/parallel.h"
#include "ssd_loss/ssd_loss.h"

namespace {

// Input errors are raised as Paddle's InvalidArgument, which reaches Python as ValueError with its
// message in every mode of 2.6 and 3.x (PD_CHECK's exception loses its text in 3.x static programs).
void append(std::ostringstream&) {}
template <typename First, typename... Rest>
void append(std::ostringstream& s, const First& first, const Rest&... rest) {
  s << first;
  append(s, rest...);
}

template <typename... Args>
[[noreturn]] void throw_invalid(const Args&... args) {
  std::ostringstream s;
  append(s, args...);
  PADDLE_THROW(phi::errors::InvalidArgument("%s", s.str().c_str()));
}

#define SSD_CHECK(cond, ...)                   \
  do {                                         \
    if (!(cond)) throw_invalid(__VA_ARGS__);   \
  } while (0)

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

// The level-0 LoD of a static-graph LoDTensor as offsets, or empty when it carries none.
std::vector<int64_t> lod_offsets(const paddle::Tensor& t, const char* name) {
  auto dense = std::dynamic_pointer_cast<phi::DenseTensor>(t.impl());
  if (!dense || dense->lod().empty()) return {};
  const auto& lod = dense->lod();
  SSD_CHECK(lod.size() == 1, name, ": expected a LoD of 1 level (one segment per image), received ",
           lod.size(), " levels");
  return std::vector<int64_t>(lod[0].begin(), lod[0].end());
}

template <typename I>
std::vector<int64_t> offsets_from_lengths(const I* lengths, int64_t n) {
  std::vector<int64_t> offsets(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    SSD_CHECK(lengths[i] >= 0, "gt_lengths: expected non-negative box counts, received ",
             static_cast<int64_t>(lengths[i]), " for image ", i);
    offsets[i + 1] = offsets[i] + static_cast<int64_t>(lengths[i]);
  }
  return offsets;
}

// Offsets [N + 1] of each image's gt rows: gt_lengths first, then the LoD, then "one image".
std::vector<int64_t> gt_offsets(const paddle::Tensor& gt_box, const paddle::Tensor& gt_label,
                                const paddle::optional<paddle::Tensor>& gt_lengths,
                                int64_t num_images) {
  const int64_t num_gt = gt_box.shape()[0];
  std::vector<int64_t> offsets;
  if (gt_lengths) {
    const paddle::Tensor& len = *gt_lengths;
    SSD_CHECK(len.is_cpu(), "gt_lengths: expected a CPU tensor");
    SSD_CHECK(len.numel() == num_images, "gt_lengths: expected one count per image (N = ",
             num_images, "), received ", len.numel(), " values");
    if (len.dtype() == paddle::DataType::INT64) {
      offsets = offsets_from_lengths(len.data<int64_t>(), num_images);
    } else if (len.dtype() == paddle::DataType::INT32) {
      offsets = offsets_from_lengths(len.data<int32_t>(), num_images);
    } else {
      throw_invalid("gt_lengths: expected dtype int32 or int64, received ", len.dtype());
    }
    SSD_CHECK(offsets[num_images] == num_gt, "gt_lengths: expected counts summing to the number of ",
             "gt_box rows ", num_gt, ", received a sum of ", offsets[num_images]);
  } else {
    const std::vector<int64_t> box_lod = lod_offsets(gt_box, "gt_box");
    const std::vector<int64_t> label_lod = lod_offsets(gt_label, "gt_label");
    SSD_CHECK(box_lod.empty() || label_lod.empty() || box_lod == label_lod,
             "gt_label: expected the same LoD as gt_box (the same boxes per image)");
    offsets = box_lod.empty() ? label_lod : box_lod;
    if (offsets.empty()) {
      SSD_CHECK(num_images == 1, "gt_box: cannot tell which boxes belong to which of the ",
               num_images, " images: feed gt_box as a LoDTensor with one LoD segment per image, ",
               "or pass gt_lengths (boxes per image)");
      offsets = {0, num_gt};
    }
    SSD_CHECK(static_cast<int64_t>(offsets.size()) == num_images + 1, "gt_box: expected a LoD with ",
             num_images, " segments (one per image, N = location.shape[0]), received ",
             static_cast<int64_t>(offsets.size()) - 1);
  }
  const std::string err = ssd_loss::check_gt_offsets(offsets.data(), num_images, num_gt);
  SSD_CHECK(err.empty(), err);
  return offsets;
}

// Labels of any supported dtype as int64 class ids; float labels are truncated toward zero.
std::vector<int64_t> labels_as_int64(const paddle::Tensor& gt_label, int64_t num_classes) {
  const int64_t n = gt_label.numel();
  std::vector<int64_t> labels(n);
  switch (gt_label.dtype()) {
    case paddle::DataType::INT32: {
      const int32_t* d = gt_label.data<int32_t>();
      for (int64_t g = 0; g < n; ++g) labels[g] = d[g];
      break;
    }
    case paddle::DataType::INT64: {
      const int64_t* d = gt_label.data<int64_t>();
      for (int64_t g = 0; g < n; ++g) labels[g] = d[g];
      break;
    }
    case paddle::DataType::FLOAT32:
    case paddle::DataType::FLOAT64:
      for (int64_t g = 0; g < n; ++g) {
        const double v = gt_label.dtype() == paddle::DataType::FLOAT32
                             ? static_cast<double>(gt_label.data<float>()[g])
                             : gt_label.data<double>()[g];
        // Range check before the cast: truncating NaN or a huge value is undefined behaviour.
        SSD_CHECK(v > -1.0 && v < static_cast<double>(num_classes), "gt_label: expected class ids ",
                 "in [0, ", num_classes, ") (C = confidence.shape[2]), received ", v, " at row ", g);
        labels[g] = static_cast<int64_t>(v);
      }
      break;
    default:
      throw_invalid("gt_label: expected dtype int32, int64, float32 or float64, received ",
               gt_label.dtype());
  }
  const std::string err = ssd_loss::check_labels(labels.data(), n, num_classes);
  SSD_CHECK(err.empty(), err);
  return labels;
}

void check_inputs(const paddle::Tensor& location, const paddle::Tensor& confidence,
                  const paddle::Tensor& gt_box, const paddle::Tensor& gt_label,
                  const paddle::Tensor& prior_box,
                  const paddle::optional<paddle::Tensor>& prior_box_var) {
  const auto& ls = location.shape();
  const auto& cs = confidence.shape();
  SSD_CHECK(ls.size() == 3 && ls[2] == 4, "location: expected shape [N, Np, 4], received ",
           shape_str(ls));
  SSD_CHECK(cs.size() == 3 && cs[0] == ls[0] && cs[1] == ls[1],
           "confidence: expected shape [N, Np, C] = [", ls[0], ", ", ls[1], ", C], received ",
           shape_str(cs));
  SSD_CHECK(ls[1] > 0, "location: expected at least one prior (Np > 0), received shape ",
           shape_str(ls));
  SSD_CHECK(cs[2] > 0, "confidence: expected at least one class (C > 0), received shape ",
           shape_str(cs));
  SSD_CHECK(gt_box.shape().size() == 2 && gt_box.shape()[1] == 4,
           "gt_box: expected shape [Ng, 4], received ", shape_str(gt_box.shape()));
  const auto& gl = gt_label.shape();
  SSD_CHECK((gl.size() == 2 && gl[1] == 1) || gl.size() == 1,
           "gt_label: expected shape [Ng, 1] or [Ng], received ", shape_str(gl));
  SSD_CHECK(gt_label.numel() == gt_box.shape()[0], "gt_label: expected one label per gt_box row (",
           gt_box.shape()[0], "), received ", gt_label.numel());
  SSD_CHECK(prior_box.shape().size() == 2 && prior_box.shape()[0] == ls[1] &&
               prior_box.shape()[1] == 4,
           "prior_box: expected shape [Np, 4] = [", ls[1], ", 4], received ",
           shape_str(prior_box.shape()));
  const auto dtype = location.dtype();
  SSD_CHECK(dtype == paddle::DataType::FLOAT32 || dtype == paddle::DataType::FLOAT64,
           "location: expected dtype float32 or float64, received ", dtype);
  SSD_CHECK(confidence.dtype() == dtype && gt_box.dtype() == dtype && prior_box.dtype() == dtype,
           "confidence, gt_box, prior_box: expected the dtype of location (", dtype,
           "), received ", confidence.dtype(), ", ", gt_box.dtype(), ", ", prior_box.dtype());
  if (prior_box_var) {
    const paddle::Tensor& v = *prior_box_var;
    SSD_CHECK(v.dtype() == dtype, "prior_box_var: expected dtype ", dtype, ", received ", v.dtype());
    SSD_CHECK(v.numel() == 4 || (v.shape().size() == 2 && v.shape()[0] == ls[1] && v.shape()[1] == 4),
             "prior_box_var: expected shape [Np, 4] = [", ls[1], ", 4] or 4 values, received ",
             shape_str(v.shape()));
  }
}

// Brings a tensor to the host; GPU tensors of builds without CUDA kernels take this path.
paddle::Tensor on_host(const paddle::Tensor& t) {
  return t.is_cpu() ? t : t.copy_to(paddle::CPUPlace(), true);
}

std::vector<paddle::Tensor> SsdLossForward(
    const paddle::Tensor& location_in, const paddle::Tensor& confidence_in,
    const paddle::Tensor& gt_box_in, const paddle::Tensor& gt_label_in,
    const paddle::Tensor& prior_box_in, const paddle::optional<paddle::Tensor>& prior_box_var_in,
    const paddle::optional<paddle::Tensor>& gt_lengths, int background_label,
    float overlap_threshold, float neg_pos_ratio, float neg_overlap, float loc_loss_weight,
    float conf_loss_weight, const std::string& match_type, const std::string& mining_type,
    const std::string& normalization, int sample_size, int min_negatives_per_image,
    const std::string& neg_overlap_mode) {
  check_inputs(location_in, confidence_in, gt_box_in, gt_label_in, prior_box_in, prior_box_var_in);
  const paddle::Tensor location = on_host(location_in);
  const paddle::Tensor confidence = on_host(confidence_in);
  const paddle::Tensor gt_box = on_host(gt_box_in);
  const paddle::Tensor gt_label = on_host(gt_label_in);
  const paddle::Tensor prior_box = on_host(prior_box_in);

  const int64_t n = location.shape()[0], np = location.shape()[1], nc = confidence.shape()[2];
  SSD_CHECK(background_label >= 0 && background_label < nc, "background_label: expected a class ",
           "id in [0, ", nc, ") (C = confidence.shape[2]), received ", background_label);
  ssd_loss::Options opt;
  const std::string err = ssd_loss::make_options(
      background_label, overlap_threshold, neg_pos_ratio, neg_overlap, loc_loss_weight,
      conf_loss_weight, match_type, mining_type, normalization, sample_size,
      min_negatives_per_image, neg_overlap_mode, &opt);
  SSD_CHECK(err.empty(), err);
  // The LoD lives on the tensors handed to the op, so read it before any host copy.
  const std::vector<int64_t> offsets = gt_offsets(gt_box_in, gt_label_in,
      gt_lengths ? paddle::optional<paddle::Tensor>(on_host(*gt_lengths)) : gt_lengths, n);
  const std::vector<int64_t> labels = labels_as_int64(gt_label, nc);

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
    ssd_loss::ForwardOutputs<data_t> out;
    out.loss = loss.data<data_t>();
    out.normalizer = normalizer.data<data_t>();
    out.saved.match = match.data<int32_t>();
    out.saved.target_class = target_class.data<int32_t>();
    out.saved.loc_target = loc_target.data<data_t>();
    out.saved.softmax_stats = softmax_stats.data<data_t>();
    ssd_loss::forward(in, sizes, opt, out);
  }));

  const auto place = location_in.place();
  if (!location_in.is_cpu()) {
    return {loss.copy_to(place, false), match.copy_to(place, false),
            target_class.copy_to(place, false), loc_target.copy_to(place, false),
            softmax_stats.copy_to(place, false), normalizer.copy_to(place, true)};
  }
  return {loss, match, target_class, loc_target, softmax_stats, normalizer};
}

std::vector<paddle::Tensor> SsdLossBackward(
    const paddle::Tensor& location_in, const paddle::Tensor& confidence_in,
    const paddle::Tensor& match_in, const paddle::Tensor& target_class_in,
    const paddle::Tensor& loc_target_in, const paddle::Tensor& softmax_stats_in,
    const paddle::Tensor& normalizer_in, const paddle::Tensor& grad_loss_in,
    float loc_loss_weight, float conf_loss_weight) {
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
  ssd_loss::Options opt;
  opt.loc_loss_weight = loc_loss_weight;
  opt.conf_loss_weight = conf_loss_weight;
  const ssd_loss::Sizes sizes{n, np, nc};

  PD_DISPATCH_FLOATING_TYPES(location.dtype(), "fused_ssd_loss_grad", ([&] {
    ssd_loss::BackwardInputs<data_t> in;
    in.location = location.data<data_t>();
    in.confidence = confidence.data<data_t>();
    in.grad_loss = grad_loss.data<data_t>();
    in.normalizer = normalizer.data<data_t>();
    in.match = match.data<int32_t>();
    in.target_class = target_class.data<int32_t>();
    in.loc_target = loc_target.data<data_t>();
    in.softmax_stats = softmax_stats.data<data_t>();
    ssd_loss::BackwardOutputs<data_t> out;
    out.grad_location = grad_location.data<data_t>();
    out.grad_confidence = grad_confidence.data<data_t>();
    ssd_loss::backward(in, sizes, opt, out);
  }));

  if (!location_in.is_cpu()) {
    const auto place = location_in.place();
    return {grad_location.copy_to(place, false), grad_confidence.copy_to(place, true)};
  }
  return {grad_location, grad_confidence};
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
    .Attrs({"background_label: int", "overlap_threshold: float", "neg_pos_ratio: float",
            "neg_overlap: float", "loc_loss_weight: float", "conf_loss_weight: float",
            "match_type: std::string", "mining_type: std::string", "normalization: std::string",
            "sample_size: int", "min_negatives_per_image: int", "neg_overlap_mode: std::string"})
    .SetKernelFn(PD_KERNEL(SsdLossForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SsdLossInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SsdLossInferDtype));

PD_BUILD_GRAD_OP(fused_ssd_loss)
    .Inputs({"Location", "Confidence", "MatchIndices", "TargetClass", "LocTarget", "SoftmaxStats",
             "Normalizer", paddle::Grad("Loss")})
    .Outputs({paddle::Grad("Location"), paddle::Grad("Confidence")})
    .Attrs({"loc_loss_weight: float", "conf_loss_weight: float"})
    .SetKernelFn(PD_KERNEL(SsdLossBackward));

// Thread and cache control for Python (paddle_ssd_op.set_num_threads, empty_cache), via ctypes.
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
}
