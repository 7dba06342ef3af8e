// The gt inputs the Paddle op holds only on the device, converted there: the device twin of
// src/paddle/op_inputs.cc (labels of any dtype -> int64 class ids, box counts -> gt offsets), by
// the policies of include/ssd_loss/policy.h. Run before the forward on the same stream.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "ssd_loss/policy.h"
#include "ssd_loss_cuda.h"

namespace ssd_loss {
namespace cuda {
namespace {

// ---- kernels ------------------------------------------------------------------------------------

__device__ __forceinline__ int64_t label_as_int64(int32_t v, int64_t) { return v; }
__device__ __forceinline__ int64_t label_as_int64(int64_t v, int64_t) { return v; }
// As labels_as_int64 in the op: truncation toward zero, after a range check (truncating NaN or a
// huge value is undefined behaviour). Out of range -> -1, which match_kernel rejects.
__device__ __forceinline__ int64_t label_as_int64(double v, int64_t num_classes) {
  return float_label_in_range(v, num_classes) ? static_cast<int64_t>(v) : -1;
}
__device__ __forceinline__ int64_t label_as_int64(float v, int64_t num_classes) {
  return label_as_int64(static_cast<double>(v), num_classes);
}

template <typename L>
__global__ void __launch_bounds__(kElementThreads)
    labels_kernel(const L* __restrict__ labels, int64_t num_gt, int64_t num_classes,
                  int64_t* __restrict__ out) {
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < num_gt;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[g] = label_as_int64(labels[g], num_classes);
  }
}

// Thread 0 of one warp: N is a batch size, and a sequential running sum needs no scan tree.
template <typename L>
__global__ void gt_offsets_kernel(const L* __restrict__ lengths, int64_t n, int64_t num_gt,
                                  int64_t* __restrict__ offsets) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  if (offsets_from_lengths(lengths, n, num_gt, offsets) >= 0 || offsets[n] != num_gt) {
    for (int64_t i = 0; i <= n; ++i) offsets[i] = -1;
  }
}

}  // namespace

// ---- launchers ----------------------------------------------------------------------------------

cudaError_t labels_to_int64_cuda(const void* labels, LabelType type, int64_t num_gt,
                                 int64_t num_classes, int64_t* out, cudaStream_t stream) {
  if (num_gt < 0 || num_classes <= 0) return cudaErrorInvalidValue;
  if (num_gt == 0) return cudaSuccess;
  const unsigned grid = grid_for(num_gt, kElementThreads);
  switch (type) {
    case LabelType::kInt32:
      labels_kernel<int32_t><<<grid, kElementThreads, 0, stream>>>(
          static_cast<const int32_t*>(labels), num_gt, num_classes, out);
      break;
    case LabelType::kInt64:
      labels_kernel<int64_t><<<grid, kElementThreads, 0, stream>>>(
          static_cast<const int64_t*>(labels), num_gt, num_classes, out);
      break;
    case LabelType::kFloat32:
      labels_kernel<float><<<grid, kElementThreads, 0, stream>>>(
          static_cast<const float*>(labels), num_gt, num_classes, out);
      break;
    case LabelType::kFloat64:
      labels_kernel<double><<<grid, kElementThreads, 0, stream>>>(
          static_cast<const double*>(labels), num_gt, num_classes, out);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t gt_offsets_from_lengths_cuda(const void* lengths, bool lengths_int64, int64_t n,
                                         int64_t num_gt, int64_t* offsets, cudaStream_t stream) {
  if (n < 0 || num_gt < 0) return cudaErrorInvalidValue;
  if (lengths_int64) {
    gt_offsets_kernel<int64_t><<<1, kWarpSize, 0, stream>>>(static_cast<const int64_t*>(lengths), n,
                                                     num_gt, offsets);
  } else {
    gt_offsets_kernel<int32_t><<<1, kWarpSize, 0, stream>>>(static_cast<const int32_t*>(lengths), n,
                                                     num_gt, offsets);
  }
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace ssd_loss
