// Checks of the op's inputs and the host-side reading of its gt layout, shared by the CPU path
// (ssd_loss_op.cc) and the GPU dispatch (ssd_loss_op_cuda.cc).
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "paddle/extension.h"
#include "paddle/phi/core/enforce.h"
#include "ssd_loss/ssd_loss.h"

namespace ssd_op {

// Input errors are raised as Paddle's InvalidArgument, which reaches Python as ValueError with its
// message in every mode of 2.6 and 3.x (PD_CHECK's exception loses its text in 3.x static programs).
inline void append(std::ostringstream&) {}
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

#define SSD_CHECK(cond, ...)                           \
  do {                                                 \
    if (!(cond)) ::ssd_op::throw_invalid(__VA_ARGS__); \
  } while (0)

// Shapes and dtypes of the forward inputs against each other.
void check_inputs(const paddle::Tensor& location, const paddle::Tensor& confidence,
                  const paddle::Tensor& gt_box, const paddle::Tensor& gt_label,
                  const paddle::Tensor& prior_box,
                  const paddle::optional<paddle::Tensor>& prior_box_var);

// The attributes as core options, checked (background_label against C = num_classes too).
ssd_loss::Options forward_options(const ssd_loss::Attributes& attributes, int64_t num_classes);

// Offsets [N + 1] of each image's gt rows, checked: a CPU gt_lengths tensor first, then the LoD of
// gt_box / gt_label (host metadata whatever their place), then "one image". gt_lengths, when
// present, must be a CPU tensor.
std::vector<int64_t> gt_offsets(const paddle::Tensor& gt_box, const paddle::Tensor& gt_label,
                                const paddle::optional<paddle::Tensor>& gt_lengths,
                                int64_t num_images);

// Labels of a CPU tensor of any supported dtype as int64 class ids in [0, C), checked; float
// labels are truncated toward zero.
std::vector<int64_t> labels_as_int64(const paddle::Tensor& gt_label, int64_t num_classes);

// The core's views of the op's tensors (host or device pointers alike): the forward's outputs,
// which are the saved state, and the backward's inputs and outputs. Outputs are taken by non-const
// reference: Paddle 2.6's const Tensor::data gives const pointers.
template <typename T>
ssd_loss::ForwardOutputs<T> forward_outputs(paddle::Tensor& loss, paddle::Tensor& normalizer,
                                            paddle::Tensor& match, paddle::Tensor& target_class,
                                            paddle::Tensor& loc_target,
                                            paddle::Tensor& softmax_stats) {
  ssd_loss::ForwardOutputs<T> out;
  out.loss = loss.data<T>();
  out.normalizer = normalizer.data<T>();
  out.saved.match = match.data<int32_t>();
  out.saved.target_class = target_class.data<int32_t>();
  out.saved.loc_target = loc_target.data<T>();
  out.saved.softmax_stats = softmax_stats.data<T>();
  return out;
}

template <typename T>
ssd_loss::BackwardInputs<T> backward_inputs(
    const paddle::Tensor& location, const paddle::Tensor& confidence, const paddle::Tensor& match,
    const paddle::Tensor& target_class, const paddle::Tensor& loc_target,
    const paddle::Tensor& softmax_stats, const paddle::Tensor& normalizer,
    const paddle::Tensor& grad_loss) {
  ssd_loss::BackwardInputs<T> in;
  in.location = location.data<T>();
  in.confidence = confidence.data<T>();
  in.grad_loss = grad_loss.data<T>();
  in.normalizer = normalizer.data<T>();
  in.match = match.data<int32_t>();
  in.target_class = target_class.data<int32_t>();
  in.loc_target = loc_target.data<T>();
  in.softmax_stats = softmax_stats.data<T>();
  return in;
}

template <typename T>
ssd_loss::BackwardOutputs<T> backward_outputs(paddle::Tensor& grad_location,
                                              paddle::Tensor& grad_confidence) {
  ssd_loss::BackwardOutputs<T> out;
  out.grad_location = grad_location.data<T>();
  out.grad_confidence = grad_confidence.data<T>();
  return out;
}

}  // namespace ssd_op
