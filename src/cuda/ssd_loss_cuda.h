// CUDA launchers of the fused SSD loss: the same contract as the core API (ssd_loss.h), with every
// pointer a DEVICE pointer (gt_offsets [N + 1] and gt_label included) and all work enqueued on
// `stream`. Nothing is copied to the host: the batch-wide normalizer (Options::normalization, e.g.
// max(total positives, 1)) is computed and applied on the device, so a launcher returns as soon as
// its kernels are enqueued.
//
// Decisions (match, target_class) are those of the CPU core: the same shared per-element math
// (box.h, softmax.h, mine.h), the same tie rules, and a build with --fmad=false. Loss sums are
// reduced in a fixed tree (deterministic run to run) instead of the CPU's sequential double sum,
// so the loss may differ from the CPU's in the last bits. See ssd_loss_kernels.cu.
//
// This header needs no Paddle and no CUDA headers beyond <cuda_runtime_api.h> (cudaError_t,
// cudaStream_t); it can be included from plain C++ translation units.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "ssd_loss/ssd_loss.h"

namespace ssd_loss {
namespace cuda {

// Bytes of device workspace that forward_cuda needs for a batch of these sizes holding `num_gt`
// gt rows in all (gt_offsets[N]). Any alignment of the workspace pointer to 256 bytes is fine
// (cudaMalloc's is). Enough for float and double.
size_t forward_workspace_bytes(const Sizes& sizes, int64_t num_gt);

// Forward pass: fills out.loss [N], out.normalizer [1] and out.saved (match, target_class,
// loc_target, softmax_stats), all on the device.
//
// Preconditions, as for the CPU core (check them on the host before the call, e.g. with
// check_gt_offsets / check_labels): Np > 0, C > 0, gt_offsets valid, labels in [0, C),
// background_label in [0, C). The kernels defend against bad offsets or a workspace too small for
// an image's gt rows (that image gets no match and a NaN loss), not against bad labels.
//
// Returns cudaErrorInvalidValue for bad sizes or a workspace smaller than
// forward_workspace_bytes(sizes, 0), otherwise the launch status (cudaGetLastError()).
template <typename T>
cudaError_t forward_cuda(const ForwardInputs<T>& in, const Sizes& sizes, const Options& opt,
                         const ForwardOutputs<T>& out, void* workspace, size_t workspace_bytes,
                         cudaStream_t stream);

// Backward pass: grad_location [N, Np, 4] and grad_confidence [N, Np, C] (either may be null),
// exactly zero where the prior has weight 0. Uses only opt.loc_loss_weight / conf_loss_weight.
template <typename T>
cudaError_t backward_cuda(const BackwardInputs<T>& in, const Sizes& sizes, const Options& opt,
                          const BackwardOutputs<T>& out, cudaStream_t stream);

}  // namespace cuda
}  // namespace ssd_loss
