// CUDA backward of the fused SSD loss: the device twin of src/core/backward.cc, one thread per
// output element (grad_location, grad_confidence).
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "ssd_loss/box.h"
#include "ssd_loss/softmax.h"
#include "ssd_loss/ssd_loss.h"
#include "ssd_loss_cuda.h"

namespace ssd_loss {
namespace cuda {
namespace {

// ---- gradients ----------------------------------------------------------------------------------

template <typename T>
struct BackwardArgs {
  const T* location;
  const T* confidence;
  const T* grad_loss;
  const T* normalizer;
  const int32_t* match;
  const int32_t* target_class;
  const T* loc_target;
  const T* stats;
  int64_t num_images, num_priors, num_classes;
  T loc_loss_weight, conf_loss_weight;
  T* grad_location;
  T* grad_confidence;
};

template <typename T>
__global__ void __launch_bounds__(kElementThreads) grad_location_kernel(BackwardArgs<T> a) {
  const int64_t total = a.num_images * a.num_priors * 4;
  const T divisor = *a.normalizer;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ip = idx / 4, i = ip / a.num_priors;
    const T scale = a.grad_loss[i] / divisor;
    const T w = scale * a.loc_loss_weight;
    a.grad_location[idx] =
        a.match[ip] >= 0 ? w * smooth_l1_grad(a.location[idx] - a.loc_target[idx]) : T(0);
  }
}

template <typename T>
__global__ void __launch_bounds__(kElementThreads) grad_confidence_kernel(BackwardArgs<T> a) {
  const int64_t total = a.num_images * a.num_priors * a.num_classes;
  const T divisor = *a.normalizer;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t ip = idx / a.num_classes, c = idx - ip * a.num_classes, i = ip / a.num_priors;
    const int32_t label = a.target_class[ip];
    if (label < 0) {
      a.grad_confidence[idx] = T(0);
      continue;
    }
    const T scale = a.grad_loss[i] / divisor;
    const T w = scale * a.conf_loss_weight;
    const SoftmaxStats<T> s{a.stats[2 * ip], a.stats[2 * ip + 1]};
    const T q = softmax_prob(a.confidence[idx], s);
    a.grad_confidence[idx] = c == label ? w * (q - T(1)) : w * q;
  }
}

}  // namespace

// ---- launcher -----------------------------------------------------------------------------------

template <typename T>
cudaError_t backward_cuda(const BackwardInputs<T>& in, const Sizes& sz, const Options& opt,
                          const BackwardOutputs<T>& out, cudaStream_t stream) {
  const int64_t n = sz.num_images, np = sz.num_priors, nc = sz.num_classes;
  if (n < 0 || np < 0 || nc < 0) return cudaErrorInvalidValue;
  if (n == 0 || np == 0) return cudaSuccess;
  BackwardArgs<T> a;
  a.location = in.location;
  a.confidence = in.confidence;
  a.grad_loss = in.grad_loss;
  a.normalizer = in.normalizer;
  a.match = in.match;
  a.target_class = in.target_class;
  a.loc_target = in.loc_target;
  a.stats = in.softmax_stats;
  a.num_images = n;
  a.num_priors = np;
  a.num_classes = nc;
  a.loc_loss_weight = static_cast<T>(opt.loc_loss_weight);
  a.conf_loss_weight = static_cast<T>(opt.conf_loss_weight);
  a.grad_location = out.grad_location;
  a.grad_confidence = out.grad_confidence;
  if (out.grad_location) {
    grad_location_kernel<T><<<grid_for(n * np * 4, kElementThreads), kElementThreads, 0, stream>>>(a);
  }
  if (out.grad_confidence && nc > 0) {
    grad_confidence_kernel<T>
        <<<grid_for(n * np * nc, kElementThreads), kElementThreads, 0, stream>>>(a);
  }
  return cudaGetLastError();
}

template cudaError_t backward_cuda<float>(const BackwardInputs<float>&, const Sizes&,
                                          const Options&, const BackwardOutputs<float>&,
                                          cudaStream_t);
template cudaError_t backward_cuda<double>(const BackwardInputs<double>&, const Sizes&,
                                           const Options&, const BackwardOutputs<double>&,
                                           cudaStream_t);

}  // namespace cuda
}  // namespace ssd_loss
