// The op's GPU path (see ssd_loss_op_cuda.h).
//
// Everything is enqueued on the stream of `location`: the copies of inputs given on another
// place, the host-built gt offsets and labels (cudaMemcpyAsync from pageable memory, which stages
// the bytes and returns without waiting for the device), the conversion of device-resident
// gt_label / gt_lengths, and the kernels. Device-resident labels and box counts cannot be checked
// on the host without a device-to-host copy: the kernels reject the images they make invalid
// (NaN loss, zero gradients) instead of raising; see docs/errors.md.
#include "ssd_loss_op_cuda.h"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "op_inputs.h"
#include "ssd_loss_cuda.h"

namespace ssd_op {
namespace {

std::atomic<bool>& kernels_flag() {
  static std::atomic<bool> flag([] {
    const char* v = std::getenv("PADDLE_SSD_OP_CUDA_KERNELS");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }());
  return flag;
}

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    PADDLE_THROW(phi::errors::External("fused_ssd_loss: %s failed: %s (%s)", what,
                                       cudaGetErrorName(e), cudaGetErrorString(e)));
  }
}

// Makes the tensor's device current for the launches (Paddle does not promise it for custom ops
// on a multi-GPU machine), and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(const paddle::Place& place) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    const int device = place.GetDeviceId();
    if (device != previous_) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  ~DeviceGuard() {
    int current = previous_;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
};

// The tensor on `place`: as it is, or copied there without blocking.
paddle::Tensor on_place(const paddle::Tensor& t, const paddle::Place& place) {
  return t.place() == place ? t : t.copy_to(place, false);
}

constexpr size_t kAlign = 256;  // what forward_cuda's workspace needs
size_t align_up(size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

// One device allocation for the gt offsets, the int64 labels, the unit variances and the
// kernels' workspace, carved at 256-byte boundaries.
struct ForwardScratch {
  ForwardScratch(const ssd_loss::Sizes& sizes, int64_t num_gt, const paddle::Place& place) {
    const size_t offsets_bytes = align_up(static_cast<size_t>(sizes.num_images + 1) * 8);
    const size_t labels_bytes = align_up(static_cast<size_t>(num_gt) * 8);
    const size_t var_bytes = align_up(4 * sizeof(double));
    workspace_bytes = ssd_loss::cuda::forward_workspace_bytes(sizes, num_gt);
    // kAlign more: the allocator's alignment is not promised.
    const size_t total = kAlign + offsets_bytes + labels_bytes + var_bytes + workspace_bytes;
    buffer = paddle::empty({static_cast<int64_t>(total)}, paddle::DataType::UINT8, place);
    const uintptr_t base = reinterpret_cast<uintptr_t>(buffer.data<uint8_t>());
    char* p = reinterpret_cast<char*>(align_up(base));
    offsets = reinterpret_cast<int64_t*>(p);
    labels = reinterpret_cast<int64_t*>(p + offsets_bytes);
    unit_var = p + offsets_bytes + labels_bytes;
    workspace = p + offsets_bytes + labels_bytes + var_bytes;
  }

  paddle::Tensor buffer;
  int64_t* offsets;
  int64_t* labels;
  void* unit_var;
  void* workspace;
  size_t workspace_bytes;
};

ssd_loss::cuda::LabelType label_type(const paddle::Tensor& gt_label) {
  switch (gt_label.dtype()) {
    case paddle::DataType::INT32: return ssd_loss::cuda::LabelType::kInt32;
    case paddle::DataType::INT64: return ssd_loss::cuda::LabelType::kInt64;
    case paddle::DataType::FLOAT32: return ssd_loss::cuda::LabelType::kFloat32;
    case paddle::DataType::FLOAT64: return ssd_loss::cuda::LabelType::kFloat64;
    default:
      throw_invalid("gt_label: expected dtype int32, int64, float32 or float64, received ",
                    gt_label.dtype());
  }
}

// gt offsets into scratch.offsets: from a GPU gt_lengths tensor on the device, otherwise built
// and checked on the host (CPU gt_lengths, or the LoD) and copied.
void gt_offsets_to_device(const paddle::Tensor& gt_box, const paddle::Tensor& gt_label,
                          const paddle::optional<paddle::Tensor>& gt_lengths, int64_t n,
                          const paddle::Place& place, const ForwardScratch& scratch,
                          cudaStream_t stream) {
  const int64_t num_gt = gt_box.shape()[0];
  if (gt_lengths && !gt_lengths->is_cpu()) {
    const paddle::Tensor& len = *gt_lengths;
    SSD_CHECK(len.dtype() == paddle::DataType::INT64 || len.dtype() == paddle::DataType::INT32,
              "gt_lengths: expected dtype int32 or int64, received ", len.dtype());
    SSD_CHECK(len.numel() == n, "gt_lengths: expected one count per image (N = ", n,
              "), received ", len.numel(), " values");
    const paddle::Tensor on_device = on_place(len, place);
    const void* data = len.dtype() == paddle::DataType::INT64
                           ? static_cast<const void*>(on_device.data<int64_t>())
                           : static_cast<const void*>(on_device.data<int32_t>());
    check_cuda(ssd_loss::cuda::gt_offsets_from_lengths_cuda(
                   data, len.dtype() == paddle::DataType::INT64, n, num_gt, scratch.offsets,
                   stream),
               "gt_offsets_from_lengths_cuda");
    return;
  }
  const std::vector<int64_t> offsets = gt_offsets(gt_box, gt_label, gt_lengths, n);
  check_cuda(cudaMemcpyAsync(scratch.offsets, offsets.data(), offsets.size() * sizeof(int64_t),
                             cudaMemcpyHostToDevice, stream),
             "cudaMemcpyAsync (gt offsets)");
}

// int64 labels into scratch.labels: CPU labels checked on the host (ValueError, as on the CPU)
// and copied; GPU labels converted on the device, range errors left to the kernels.
void labels_to_device(const paddle::Tensor& gt_label, int64_t num_classes,
                      const paddle::Place& place, const ForwardScratch& scratch,
                      cudaStream_t stream) {
  const int64_t num_gt = gt_label.numel();
  if (gt_label.is_cpu()) {
    const std::vector<int64_t> labels = labels_as_int64(gt_label, num_classes);
    if (num_gt > 0) {
      check_cuda(cudaMemcpyAsync(scratch.labels, labels.data(), labels.size() * sizeof(int64_t),
                                 cudaMemcpyHostToDevice, stream),
                 "cudaMemcpyAsync (gt labels)");
    }
    return;
  }
  const ssd_loss::cuda::LabelType type = label_type(gt_label);
  if (num_gt == 0) return;  // nothing to convert (and an empty tensor may hold no memory)
  const paddle::Tensor on_device = on_place(gt_label, place);
  const void* data = nullptr;
  switch (type) {
    case ssd_loss::cuda::LabelType::kInt32: data = on_device.data<int32_t>(); break;
    case ssd_loss::cuda::LabelType::kInt64: data = on_device.data<int64_t>(); break;
    case ssd_loss::cuda::LabelType::kFloat32: data = on_device.data<float>(); break;
    case ssd_loss::cuda::LabelType::kFloat64: data = on_device.data<double>(); break;
  }
  check_cuda(ssd_loss::cuda::labels_to_int64_cuda(data, type, num_gt, num_classes, scratch.labels,
                                                  stream),
             "labels_to_int64_cuda");
}

}  // namespace

bool cuda_kernels_enabled() { return kernels_flag().load(std::memory_order_relaxed); }

void set_cuda_kernels_enabled(bool enabled) {
  kernels_flag().store(enabled, std::memory_order_relaxed);
}

std::vector<paddle::Tensor> forward_on_gpu(const paddle::Tensor& location,
                                           const paddle::Tensor& confidence,
                                           const paddle::Tensor& gt_box_in,
                                           const paddle::Tensor& gt_label,
                                           const paddle::Tensor& prior_box_in,
                                           const paddle::optional<paddle::Tensor>& prior_box_var,
                                           const paddle::optional<paddle::Tensor>& gt_lengths,
                                           const ssd_loss::Options& opt) {
  const paddle::Place place = location.place();
  const DeviceGuard device(place);
  const cudaStream_t stream = location.stream();
  const int64_t n = location.shape()[0], np = location.shape()[1], nc = confidence.shape()[2];
  const int64_t num_gt = gt_box_in.shape()[0];
  const ssd_loss::Sizes sizes{n, np, nc};
  const auto dtype = location.dtype();

  // The LoD lives on the tensors handed to the op, so it is read from them, not from copies.
  const paddle::Tensor conf = on_place(confidence, place);
  const paddle::Tensor gt_box = on_place(gt_box_in, place);
  const paddle::Tensor prior_box = on_place(prior_box_in, place);
  const ForwardScratch scratch(sizes, num_gt, place);
  gt_offsets_to_device(gt_box_in, gt_label, gt_lengths, n, place, scratch, stream);
  labels_to_device(gt_label, nc, place, scratch, stream);

  paddle::Tensor loss = paddle::empty({n, 1}, dtype, place);
  paddle::Tensor normalizer = paddle::empty({1}, dtype, place);
  paddle::Tensor match = paddle::empty({n, np}, paddle::DataType::INT32, place);
  paddle::Tensor target_class = paddle::empty({n, np}, paddle::DataType::INT32, place);
  paddle::Tensor loc_target = paddle::empty({n, np, 4}, dtype, place);
  paddle::Tensor softmax_stats = paddle::empty({n, np, 2}, dtype, place);

  PD_DISPATCH_FLOATING_TYPES(dtype, "fused_ssd_loss", ([&] {
    paddle::Tensor var;
    ssd_loss::ForwardInputs<data_t> in;
    in.location = location.data<data_t>();
    in.confidence = conf.data<data_t>();
    in.gt_box = gt_box.data<data_t>();
    in.gt_label = scratch.labels;
    in.gt_offsets = scratch.offsets;
    in.prior_box = prior_box.data<data_t>();
    if (prior_box_var) {
      var = on_place(*prior_box_var, place);
      in.prior_var = var.data<data_t>();
      in.prior_var_shared = var.numel() == 4 && np != 1;
    } else {
      const data_t unit_var[4] = {1, 1, 1, 1};
      check_cuda(cudaMemcpyAsync(scratch.unit_var, unit_var, sizeof(unit_var),
                                 cudaMemcpyHostToDevice, stream),
                 "cudaMemcpyAsync (unit variances)");
      in.prior_var = static_cast<const data_t*>(scratch.unit_var);
      in.prior_var_shared = true;
    }
    const auto out = forward_outputs<data_t>(loss, normalizer, match, target_class, loc_target,
                                             softmax_stats);
    check_cuda(ssd_loss::cuda::forward_cuda(in, sizes, opt, out, scratch.workspace,
                                            scratch.workspace_bytes, stream),
               "forward_cuda");
  }));
  return {loss, match, target_class, loc_target, softmax_stats, normalizer};
}

std::vector<paddle::Tensor> backward_on_gpu(
    const paddle::Tensor& location, const paddle::Tensor& confidence, const paddle::Tensor& match,
    const paddle::Tensor& target_class, const paddle::Tensor& loc_target,
    const paddle::Tensor& softmax_stats, const paddle::Tensor& normalizer,
    const paddle::Tensor& grad_loss, const ssd_loss::Options& opt) {
  const paddle::Place place = location.place();
  const DeviceGuard device(place);
  const cudaStream_t stream = location.stream();
  const int64_t n = location.shape()[0], np = location.shape()[1], nc = confidence.shape()[2];
  SSD_CHECK(grad_loss.numel() == n, "loss gradient: expected ", n, " values, received ",
            grad_loss.numel());
  const auto dtype = location.dtype();
  const paddle::Tensor conf = on_place(confidence, place);
  const paddle::Tensor d_match = on_place(match, place);
  const paddle::Tensor d_target_class = on_place(target_class, place);
  const paddle::Tensor d_loc_target = on_place(loc_target, place);
  const paddle::Tensor d_stats = on_place(softmax_stats, place);
  const paddle::Tensor d_normalizer = on_place(normalizer, place);
  const paddle::Tensor d_grad_loss = on_place(grad_loss, place);
  paddle::Tensor grad_location = paddle::empty(location.shape(), dtype, place);
  paddle::Tensor grad_confidence = paddle::empty(confidence.shape(), dtype, place);

  PD_DISPATCH_FLOATING_TYPES(dtype, "fused_ssd_loss_grad", ([&] {
    const auto in = backward_inputs<data_t>(location, conf, d_match, d_target_class,
                                            d_loc_target, d_stats, d_normalizer, d_grad_loss);
    check_cuda(ssd_loss::cuda::backward_cuda(in, {n, np, nc}, opt,
                                             backward_outputs<data_t>(grad_location,
                                                                      grad_confidence),
                                             stream),
               "backward_cuda");
  }));
  return {grad_location, grad_confidence};
}

}  // namespace ssd_op

// The kernels' switch for Python (paddle_ssd_op.cuda), via ctypes.
extern "C" {
__attribute__((visibility("default"))) int paddle_ssd_op_cuda_kernels_enabled() {
  return ssd_op::cuda_kernels_enabled() ? 1 : 0;
}
__attribute__((visibility("default"))) void paddle_ssd_op_set_cuda_kernels_enabled(int enabled) {
  ssd_op::set_cuda_kernels_enabled(enabled != 0);
}
}
