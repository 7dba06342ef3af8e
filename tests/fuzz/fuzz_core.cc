// libFuzzer target over the core's entry points: arbitrary sizes, options and values (NaN, Inf,
// inverted and zero-area boxes, huge logits) must never crash, read out of bounds or hit UB, and
// the outputs must keep their invariants. Built with ASan + UBSan (scripts/fuzz_core.sh).
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ssd_loss/ssd_loss.h"

namespace {

// Reads typed values off the fuzzer's bytes; zeros once they run out.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  int64_t small(int64_t max) { return byte() % (max + 1); }
  float value() {
    switch (byte() % 8) {  // mostly ordinary boxes and logits, sometimes hostile values
      case 0: return NAN;
      case 1: return byte() % 2 ? INFINITY : -INFINITY;
      case 2: return (byte() - 128) * 10.f;
      default: return byte() / 255.f;
    }
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

#define FUZZ_CHECK(cond) \
  if (!(cond)) std::abort()

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Bytes in(data, size);
  const ssd_loss::Sizes sz{1 + in.small(3), 1 + in.small(40), 1 + in.small(9)};
  const int64_t n = sz.num_images, np = sz.num_priors, nc = sz.num_classes;

  ssd_loss::Options opt;
  opt.match_type = in.byte() % 2 ? ssd_loss::MatchType::kBipartite
                                 : ssd_loss::MatchType::kPerPrediction;
  opt.mining_type = in.byte() % 3 == 0 ? ssd_loss::MiningType::kHardExample
                                       : ssd_loss::MiningType::kMaxNegative;
  opt.sample_size = 1 + in.small(50);
  opt.normalization = static_cast<ssd_loss::Normalization>(in.small(3));
  opt.neg_overlap_mode = in.byte() % 2 ? ssd_loss::NegOverlapMode::kCaffe
                                       : ssd_loss::NegOverlapMode::kFluid;
  opt.min_negatives_per_image = in.small(5);
  opt.background_label = in.small(nc - 1);
  opt.overlap_threshold = in.byte() / 255.f;
  opt.neg_overlap = in.byte() / 255.f;
  opt.neg_pos_ratio = 0.1f + in.byte() / 16.f;

  std::vector<int64_t> offsets(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) offsets[i + 1] = offsets[i] + in.small(6);
  const int64_t ng = offsets[n];
  std::vector<int64_t> labels(ng);
  for (auto& l : labels) l = in.small(nc - 1);
  FUZZ_CHECK(ssd_loss::check_gt_offsets(offsets.data(), n, ng).empty());
  FUZZ_CHECK(ssd_loss::check_labels(labels.data(), ng, nc).empty());

  auto values = [&](int64_t count) {
    std::vector<float> v(count);
    for (auto& x : v) x = in.value();
    return v;
  };
  const std::vector<float> location = values(n * np * 4), confidence = values(n * np * nc),
                           gt_box = values(ng * 4), prior_box = values(np * 4),
                           prior_var = values(4);

  std::vector<float> loss(n), normalizer(1), loc_target(n * np * 4), stats(n * np * 2);
  std::vector<int32_t> match(n * np), target_class(n * np);
  ssd_loss::ForwardInputs<float> fin;
  fin.location = location.data();
  fin.confidence = confidence.data();
  fin.gt_box = gt_box.data();
  fin.gt_label = labels.data();
  fin.gt_offsets = offsets.data();
  fin.prior_box = prior_box.data();
  fin.prior_var = prior_var.data();
  fin.prior_var_shared = true;
  ssd_loss::ForwardOutputs<float> fout;
  fout.loss = loss.data();
  fout.normalizer = normalizer.data();
  fout.saved = {match.data(), target_class.data(), loc_target.data(), stats.data()};
  ssd_loss::forward(fin, sz, opt, fout);

  FUZZ_CHECK(normalizer[0] >= 1.f);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t num_gt = offsets[i + 1] - offsets[i];
    for (int64_t p = 0; p < np; ++p) {
      const int32_t m = match[i * np + p], t = target_class[i * np + p];
      FUZZ_CHECK(m >= -1 && m < num_gt);
      FUZZ_CHECK(t >= -1 && t < nc);
      if (m >= 0) FUZZ_CHECK(t == labels[offsets[i] + m]);
    }
  }

  std::vector<float> grad_loss(n, 1.f), grad_location(n * np * 4), grad_confidence(n * np * nc);
  ssd_loss::BackwardInputs<float> bin;
  bin.location = location.data();
  bin.confidence = confidence.data();
  bin.grad_loss = grad_loss.data();
  bin.normalizer = normalizer.data();
  bin.match = match.data();
  bin.target_class = target_class.data();
  bin.loc_target = loc_target.data();
  bin.softmax_stats = stats.data();
  ssd_loss::backward(bin, sz, opt, ssd_loss::BackwardOutputs<float>{grad_location.data(),
                                                                    grad_confidence.data()});
  // Priors outside the loss get exactly zero gradient.
  for (int64_t k = 0; k < n * np; ++k) {
    if (target_class[k] < 0) {
      for (int64_t c = 0; c < nc; ++c) FUZZ_CHECK(grad_confidence[k * nc + c] == 0.f);
    }
    if (match[k] < 0) {
      for (int c = 0; c < 4; ++c) FUZZ_CHECK(grad_location[k * 4 + c] == 0.f);
    }
  }
  return 0;
}
