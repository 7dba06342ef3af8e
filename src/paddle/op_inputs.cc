// Checks of the op's inputs and the host-side reading of its gt layout (see op_inputs.h).
#include "op_inputs.h"

#include <memory>

#include "paddle/phi/core/dense_tensor.h"
#include "ssd_loss/policy.h"

namespace ssd_op {

namespace {

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
std::vector<int64_t> offsets_from_lengths(const I* lengths, int64_t n, int64_t num_gt) {
  std::vector<int64_t> offsets(n + 1, 0);
  const int64_t bad = ssd_loss::offsets_from_lengths(lengths, n, num_gt, offsets.data());
  if (bad >= 0) {
    SSD_CHECK(lengths[bad] >= 0, "gt_lengths: expected non-negative box counts, received ",
              static_cast<int64_t>(lengths[bad]), " for image ", bad);
    throw_invalid("gt_lengths: expected counts summing to the number of gt_box rows ", num_gt,
                  ", received counts past it at image ", bad);
  }
  return offsets;
}

}  // namespace

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
      offsets = offsets_from_lengths(len.data<int64_t>(), num_images, num_gt);
    } else if (len.dtype() == paddle::DataType::INT32) {
      offsets = offsets_from_lengths(len.data<int32_t>(), num_images, num_gt);
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
        SSD_CHECK(ssd_loss::float_label_in_range(v, num_classes), "gt_label: expected class ids ",
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
  // An empty batch is refused: Paddle 2.6 cannot return the op's empty outputs.
  SSD_CHECK(ls[0] > 0, "location: expected at least one image (N > 0), received shape ",
           shape_str(ls));
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

ssd_loss::Options forward_options(const ssd_loss::Attributes& attributes, int64_t num_classes) {
  ssd_loss::Options opt;
  std::string err = ssd_loss::make_options(attributes, &opt);
  if (err.empty()) err = ssd_loss::check_background_label(opt.background_label, num_classes);
  SSD_CHECK(err.empty(), err);
  return opt;
}

}  // namespace ssd_op
