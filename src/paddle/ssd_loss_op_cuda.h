// The op's GPU path: GPU tensors run the CUDA kernels of src/cuda on their stream, with nothing
// copied to the host and no device synchronization. Built only when Paddle is built with CUDA
// (setup.py then compiles this file with the kernels, src/cuda/*.cu); other GPU inputs take
// the host fallback of ssd_loss_op.cc.
#pragma once

#include <vector>

#include "paddle/extension.h"
#include "ssd_loss/ssd_loss.h"

namespace ssd_op {

// Whether GPU inputs run the CUDA kernels. Opt-in until the kernels have passed `make test-gpu`
// on a real GPU: PADDLE_SSD_OP_CUDA_KERNELS=1, read at the first call; the Python API
// (paddle_ssd_op.cuda.set_kernels_enabled) overrides it for the process.
bool cuda_kernels_enabled();
void set_cuda_kernels_enabled(bool enabled);

// Forward on the GPU of `location` (confidence there too; the other inputs are copied there if
// they are elsewhere). The inputs have passed check_inputs; `opt` is checked.
std::vector<paddle::Tensor> forward_on_gpu(const paddle::Tensor& location,
                                           const paddle::Tensor& confidence,
                                           const paddle::Tensor& gt_box,
                                           const paddle::Tensor& gt_label,
                                           const paddle::Tensor& prior_box,
                                           const paddle::optional<paddle::Tensor>& prior_box_var,
                                           const paddle::optional<paddle::Tensor>& gt_lengths,
                                           const ssd_loss::Options& opt);

// Backward on the GPU of `location`; uses opt.loc_loss_weight and opt.conf_loss_weight only.
std::vector<paddle::Tensor> backward_on_gpu(
    const paddle::Tensor& location, const paddle::Tensor& confidence, const paddle::Tensor& match,
    const paddle::Tensor& target_class, const paddle::Tensor& loc_target,
    const paddle::Tensor& softmax_stats, const paddle::Tensor& normalizer,
    const paddle::Tensor& grad_loss, const ssd_loss::Options& opt);

}  // namespace ssd_op
