// CPU backward of the fused SSD loss (spec §4): gradients for location and confidence only; the
// matches, mined negatives, targets and the normalizer are constants. The softmax is recomputed
// from the saved row statistics, only for the priors that are in the confidence loss.
#include <algorithm>

#include "ssd_loss/box.h"
#include "ssd_loss/parallel.h"
#include "ssd_loss/softmax.h"
#include "ssd_loss/ssd_loss.h"

namespace ssd_loss {

template <typename T>
void backward(const BackwardInputs<T>& in, const Sizes& sz, const Options& opt,
              const BackwardOutputs<T>& out) {
  const int64_t np = sz.num_priors, nc = sz.num_classes;
  const T divisor = *in.normalizer;
  parallel_for(sz.num_images, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      const T scale = in.grad_loss[i] / divisor;
      const int32_t* match = in.match + i * np;
      const int32_t* target_class = in.target_class + i * np;
      // Most priors carry no weight: zero the image's block once, then fill the weighted rows.
      if (out.grad_location) {
        const T a = scale * static_cast<T>(opt.loc_loss_weight);
        const T* loc = in.location + i * np * 4;
        const T* target = in.loc_target + i * np * 4;
        T* grad = out.grad_location + i * np * 4;
        std::fill(grad, grad + np * 4, T(0));
        for (int64_t p = 0; p < np; ++p) {
          if (match[p] < 0) continue;
          for (int k = 0; k < 4; ++k) {
            grad[4 * p + k] = a * smooth_l1_grad(loc[4 * p + k] - target[4 * p + k]);
          }
        }
      }
      if (out.grad_confidence) {
        const T a = scale * static_cast<T>(opt.conf_loss_weight);
        const T* conf = in.confidence + i * np * nc;
        const T* stats = in.softmax_stats + i * np * 2;
        T* grad = out.grad_confidence + i * np * nc;
        std::fill(grad, grad + np * nc, T(0));
        for (int64_t p = 0; p < np; ++p) {
          const int32_t label = target_class[p];
          if (label < 0) continue;
          const SoftmaxStats<T> s{stats[2 * p], stats[2 * p + 1]};
          const T* x = conf + p * nc;
          T* g = grad + p * nc;
          for (int64_t c = 0; c < nc; ++c) g[c] = a * softmax_prob(x[c], s);
          g[label] = a * (softmax_prob(x[label], s) - T(1));
        }
      }
    }
  });
}

template void backward<float>(const BackwardInputs<float>&, const Sizes&, const Options&,
                              const BackwardOutputs<float>&);
template void backward<double>(const BackwardInputs<double>&, const Sizes&, const Options&,
                               const BackwardOutputs<double>&);

}  // namespace ssd_loss
