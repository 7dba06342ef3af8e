// CPU backward of the fused SSD loss (docs/semantics.md §4): gradients for location and
// confidence only; the matches, mined negatives, targets and the normalizer are constants. The
// softmax is recomputed from the saved row statistics, only for the priors that are in the
// confidence loss.
#include <vector>

#include "cpu_kernels.h"
#include "ssd_loss/box.h"
#include "ssd_loss/parallel.h"
#include "ssd_loss/ssd_loss.h"

namespace ssd_loss {
namespace {

// Most priors carry no weight: each gradient block of the image is zeroed once, then its weighted
// rows are written.
template <typename T>
SSD_CPU_CLONES void backward_image(const BackwardInputs<T>& in, const Sizes& sz,
                                   const Options& opt, int64_t i, std::vector<int32_t>& rows,
                                   const BackwardOutputs<T>& out) {
  const int64_t np = sz.num_priors, nc = sz.num_classes;
  const T scale = in.grad_loss[i] / *in.normalizer;
  const int32_t* match = in.match + i * np;
  const int32_t* target_class = in.target_class + i * np;
  if (out.grad_location) {
    const T a = scale * static_cast<T>(opt.loc_loss_weight);
    const T* loc = in.location + i * np * 4;
    const T* target = in.loc_target + i * np * 4;
    T* grad = out.grad_location + i * np * 4;
    cpu::zero_fill(grad, np * 4);
    cpu::for_each_at_least_zero(match, np, [&](int64_t p) {
      for (int k = 0; k < 4; ++k) {
        grad[4 * p + k] = a * smooth_l1_grad(loc[4 * p + k] - target[4 * p + k]);
      }
    });
  }
  if (out.grad_confidence) {
    rows.clear();
    cpu::for_each_at_least_zero(target_class, np,
                                [&](int64_t p) { rows.push_back(static_cast<int32_t>(p)); });
    T* grad = out.grad_confidence + i * np * nc;
    cpu::zero_fill(grad, np * nc);
    cpu::softmax_grad_rows(in.confidence + i * np * nc, nc, rows.data(),
                           static_cast<int64_t>(rows.size()), in.softmax_stats + i * np * 2,
                           target_class, scale * static_cast<T>(opt.conf_loss_weight), grad);
  }
}

}  // namespace

template <typename T>
void backward(const BackwardInputs<T>& in, const Sizes& sz, const Options& opt,
              const BackwardOutputs<T>& out) {
  parallel_for(sz.num_images, [&](int64_t begin, int64_t end, int) {
    std::vector<int32_t> rows;
    for (int64_t i = begin; i < end; ++i) backward_image(in, sz, opt, i, rows, out);
  });
}

template void backward<float>(const BackwardInputs<float>&, const Sizes&, const Options&,
                              const BackwardOutputs<float>&);
template void backward<double>(const BackwardInputs<double>&, const Sizes&, const Options&,
                               const BackwardOutputs<double>&);

}  // namespace ssd_loss
