// CUDA launchers of the fused SSD loss: the same contract as the core API (ssd_loss.h), with every
// pointer a DEVICE pointer (gt_offsets [N + 1] and gt_label included) and all work enqueued on
// `stream`. Nothing is copied to the host: the batch-wide normalizer (Options::normalization, e.g.
// max(total positives, 1)) is computed and applied on the device, so a launcher returns as soon as
// its kernels are enqueued.
//
// Decisions (match, target_class) are those of the CPU core: the same shared per-element math
// (box.h, softmax.h, mine.h), the same tie rules, and a build with --fmad=false. Loss sums are
// reduced in a fixed tree (deterministic run to run) instead of the CPU's sequential double sum,
// so the loss may differ from the CPU's in the last bits. See forward.cu.
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
// Preconditions, as for the CPU core: Np > 0, C > 0, background_label in [0, C). gt_offsets and
// labels are best checked on the host before the call (check_gt_offsets / check_labels), but when
// they are only on the device the kernels defend against them: an image whose offsets are invalid
// or exceed the workspace's gt rows, or that holds a label outside [0, C), is rejected (no match,
// NaN loss, zero gradients); the other images are computed as if it had no gt.
//
// Returns cudaErrorInvalidValue for bad sizes or a workspace smaller than
// forward_workspace_bytes(sizes, 0), otherwise the launch status (cudaGetLastError()).
template <typename T>
cudaError_t forward_cuda(const ForwardInputs<T>& in, const Sizes& sizes, const Options& opt,
                         const ForwardOutputs<T>& out, void* workspace, size_t workspace_bytes,
                         cudaStream_t stream);

// dtypes of gt_label that the Paddle op accepts.
enum class LabelType { kInt32, kInt64, kFloat32, kFloat64 };

// gt_label [num_gt] of `type` (device) as the int64 class ids forward_cuda reads (device `out`):
// integers as they are, floats truncated toward zero when in (-1, C), else -1. Range errors are
// left to forward_cuda, which rejects the images holding them.
cudaError_t labels_to_int64_cuda(const void* labels, LabelType type, int64_t num_gt,
                                 int64_t num_classes, int64_t* out, cudaStream_t stream);

// gt_offsets [N + 1] (device) from per-image box counts [N] (device, int64 or int32). Counts that
// are negative or do not sum to num_gt make every offset -1, so forward_cuda rejects every image.
cudaError_t gt_offsets_from_lengths_cuda(const void* lengths, bool lengths_int64, int64_t n,
                                         int64_t num_gt, int64_t* offsets, cudaStream_t stream);

// Backward pass: grad_location [N, Np, 4] and grad_confidence [N, Np, C] (either may be null),
// exactly zero where the prior has weight 0. Uses only opt.loc_loss_weight / conf_loss_weight.
template <typename T>
cudaError_t backward_cuda(const BackwardInputs<T>& in, const Sizes& sizes, const Options& opt,
                          const BackwardOutputs<T>& out, cudaStream_t stream);

}  // namespace cuda
}  // namespace ssd_loss
