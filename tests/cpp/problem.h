// Owns the arrays of one forward/backward call of the core API, so tests can build inputs as
// vectors and read every output back.
#pragma once

#include <cstdint>
#include <vector>

#include "ssd_loss/ssd_loss.h"

namespace test {

template <typename T>
struct Problem {
  ssd_loss::Sizes sizes;
  ssd_loss::Options options;
  std::vector<T> location;           // [N, Np, 4]
  std::vector<T> confidence;         // [N, Np, C]
  std::vector<T> gt_box;             // [Ng, 4]
  std::vector<int64_t> gt_label;     // [Ng]
  std::vector<int64_t> gt_offsets;   // [N + 1]
  std::vector<T> prior_box;          // [Np, 4]
  std::vector<T> prior_var;          // [Np, 4] or [4]
  std::vector<T> grad_loss;          // [N]; empty means ones (the gradient of sum(loss))
};

template <typename T>
struct Result {
  std::vector<T> loss, normalizer, loc_target, softmax_stats, grad_location, grad_confidence;
  std::vector<int32_t> match, target_class;
};

template <typename T>
Result<T> run(const Problem<T>& pb) {
  const int64_t n = pb.sizes.num_images, np = pb.sizes.num_priors, nc = pb.sizes.num_classes;
  Result<T> r;
  r.loss.assign(n, T(0));
  r.normalizer.assign(1, T(0));
  r.loc_target.assign(n * np * 4, T(0));
  r.softmax_stats.assign(n * np * 2, T(0));
  r.match.assign(n * np, 0);
  r.target_class.assign(n * np, 0);
  r.grad_location.assign(n * np * 4, T(0));
  r.grad_confidence.assign(n * np * nc, T(0));

  ssd_loss::ForwardInputs<T> in;
  in.location = pb.location.data();
  in.confidence = pb.confidence.data();
  in.gt_box = pb.gt_box.data();
  in.gt_label = pb.gt_label.data();
  in.gt_offsets = pb.gt_offsets.data();
  in.prior_box = pb.prior_box.data();
  in.prior_var = pb.prior_var.data();
  in.prior_var_shared = pb.prior_var.size() == 4 && np != 1;
  ssd_loss::ForwardOutputs<T> out;
  out.loss = r.loss.data();
  out.normalizer = r.normalizer.data();
  out.saved.match = r.match.data();
  out.saved.target_class = r.target_class.data();
  out.saved.loc_target = r.loc_target.data();
  out.saved.softmax_stats = r.softmax_stats.data();
  ssd_loss::forward(in, pb.sizes, pb.options, out);

  const std::vector<T> ones(n, T(1));
  ssd_loss::BackwardInputs<T> bin;
  bin.location = pb.location.data();
  bin.confidence = pb.confidence.data();
  bin.grad_loss = pb.grad_loss.empty() ? ones.data() : pb.grad_loss.data();
  bin.normalizer = r.normalizer.data();
  bin.match = r.match.data();
  bin.target_class = r.target_class.data();
  bin.loc_target = r.loc_target.data();
  bin.softmax_stats = r.softmax_stats.data();
  ssd_loss::BackwardOutputs<T> bout;
  bout.grad_location = r.grad_location.data();
  bout.grad_confidence = r.grad_confidence.data();
  ssd_loss::backward(bin, pb.sizes, pb.options, bout);
  return r;
}

}  // namespace test
