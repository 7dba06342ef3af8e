// Outputs must be bit-identical for any thread count (parallel.h): each image is computed by one
// thread in a fixed order, and the batch-wide steps run serially.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "problem.h"
#include "ssd_loss/parallel.h"

namespace {

// A batch of random images, 0 to 12 gts each (some empty), with quantized logits so that many
// mining losses tie exactly.
test::Problem<float> random_batch(uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> pos(0.f, 0.85f), size(0.05f, 0.4f), loc(-2.f, 2.f);
  std::uniform_int_distribution<int> num_gt(0, 12), logit(-4, 4), label(0, 5);
  test::Problem<float> pb;
  pb.sizes = {7, 300, 6};
  auto box = [&](std::vector<float>& out) {
    const float x = pos(rng), y = pos(rng);
    out.insert(out.end(), {x, y, x + size(rng), y + size(rng)});
  };
  for (int64_t p = 0; p < pb.sizes.num_priors; ++p) box(pb.prior_box);
  pb.prior_var = {.1f, .1f, .2f, .2f};
  pb.gt_offsets = {0};
  for (int64_t i = 0; i < pb.sizes.num_images; ++i) {
    const int n = i == 3 ? 0 : num_gt(rng);
    for (int g = 0; g < n; ++g) {
      box(pb.gt_box);
      pb.gt_label.push_back(label(rng));
    }
    pb.gt_offsets.push_back(pb.gt_offsets.back() + n);
  }
  const int64_t rows = pb.sizes.num_images * pb.sizes.num_priors;
  for (int64_t k = 0; k < rows * 4; ++k) pb.location.push_back(loc(rng));
  for (int64_t k = 0; k < rows * pb.sizes.num_classes; ++k) {
    pb.confidence.push_back(0.5f * static_cast<float>(logit(rng)));
  }
  for (int64_t i = 0; i < pb.sizes.num_images; ++i) pb.grad_loss.push_back(loc(rng));
  return pb;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

}  // namespace

TEST_CASE(determinism, one_thread_and_three_threads_agree_bit_for_bit) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    const test::Problem<float> pb = random_batch(seed);
    ssd_loss::set_num_threads(1);
    const test::Result<float> serial = test::run(pb);
    for (int threads : {3, 2, 16}) {  // 16 > N: more threads than images
      ssd_loss::set_num_threads(threads);
      CHECK_EQ(ssd_loss::num_threads(), threads);
      const test::Result<float> parallel = test::run(pb);
      CHECK(same_bits(serial.loss, parallel.loss));
      CHECK(same_bits(serial.normalizer, parallel.normalizer));
      CHECK(same_bits(serial.match, parallel.match));
      CHECK(same_bits(serial.target_class, parallel.target_class));
      CHECK(same_bits(serial.loc_target, parallel.loc_target));
      CHECK(same_bits(serial.softmax_stats, parallel.softmax_stats));
      CHECK(same_bits(serial.grad_location, parallel.grad_location));
      CHECK(same_bits(serial.grad_confidence, parallel.grad_confidence));
    }
    // Guard: the batch has positives and mined negatives, so the comparison means something.
    int positives = 0, negatives = 0;
    for (size_t k = 0; k < serial.match.size(); ++k) {
      positives += serial.match[k] >= 0 ? 1 : 0;
      negatives += serial.match[k] < 0 && serial.target_class[k] >= 0 ? 1 : 0;
    }
    CHECK(positives > 20);
    CHECK(negatives > 20);
  }
  ssd_loss::set_num_threads(0);  // back to the default for any later test
}

// The threads of parallel_for outlive a call (a pool); these cover what a pool can get wrong.
TEST_CASE(determinism, pool_serves_nested_concurrent_and_forked_calls) {
  const test::Problem<float> pb = random_batch(4);
  ssd_loss::set_num_threads(1);
  const test::Result<float> serial = test::run(pb);
  ssd_loss::set_num_threads(3);
  const auto same_as_serial = [&](const test::Result<float>& r) {
    return same_bits(r.loss, serial.loss) && same_bits(r.grad_confidence, serial.grad_confidence) &&
           same_bits(r.grad_location, serial.grad_location);
  };
  // Nested: a task that calls parallel_for itself (the pool is busy: threads of its own).
  std::vector<int64_t> visits(40, 0);
  ssd_loss::parallel_for(4, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      ssd_loss::parallel_for(10, [&](int64_t b, int64_t e, int) {
        for (int64_t j = b; j < e; ++j) ++visits[i * 10 + j];
      });
    }
  });
  for (int64_t v : visits) CHECK_EQ(v, 1);
  // Concurrent: two threads calling at once, repeatedly.
  bool concurrent_same = true;
  std::thread other([&] {
    for (int k = 0; k < 5; ++k) concurrent_same &= same_as_serial(test::run(pb));
  });
  for (int k = 0; k < 5; ++k) CHECK(same_as_serial(test::run(pb)));
  other.join();
  CHECK(concurrent_same);
  // fork(): the child has none of the pool's threads and must start its own (waiting for the
  // parent's would hang it: it gets 60 s).
  const pid_t child = fork();
  if (child == 0) _exit(same_as_serial(test::run(pb)) ? 0 : 1);
  CHECK(child > 0);
  int status = -1;
  pid_t waited = 0;
  for (int tenths = 0; tenths < 600 && waited == 0; ++tenths) {
    waited = waitpid(child, &status, WNOHANG);
    if (waited == 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (waited == 0) kill(child, SIGKILL), waitpid(child, &status, 0);
  CHECK_EQ(waited, child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(same_as_serial(test::run(pb)));
  ssd_loss::set_num_threads(0);
}

// An exception thrown on a pool thread must reach the caller (leaving a thread's function, it
// would end the process), after every other range has run; the pool serves the next call.
TEST_CASE(determinism, worker_exception_reaches_the_caller) {
  ssd_loss::set_num_threads(4);
  for (int64_t failing : {int64_t{0}, int64_t{5}}) {  // on the calling thread, on a pool thread
    std::vector<int> visits(8, 0);
    bool caught = false;
    try {
      ssd_loss::parallel_for(8, [&](int64_t begin, int64_t end, int) {
        for (int64_t i = begin; i < end; ++i) ++visits[i];
        if (begin <= failing && failing < end) throw std::runtime_error("range failed");
      });
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "range failed";
    }
    CHECK(caught);
    for (int v : visits) CHECK_EQ(v, 1);
  }
  std::vector<int> visits(8, 0);
  ssd_loss::parallel_for(8, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) ++visits[i];
  });
  for (int v : visits) CHECK_EQ(v, 1);
  ssd_loss::set_num_threads(0);
}

// Lowering the count ends the pool's threads beyond it; raising it again starts new ones.
TEST_CASE(determinism, lowering_the_thread_count_shrinks_the_pool) {
  const test::Problem<float> pb = random_batch(8);
  ssd_loss::set_num_threads(1);
  const test::Result<float> serial = test::run(pb);
  for (int threads : {8, 2, 6, 1, 3}) {
    ssd_loss::set_num_threads(threads);
    const test::Result<float> r = test::run(pb);
    CHECK(same_bits(r.loss, serial.loss) && same_bits(r.grad_confidence, serial.grad_confidence));
  }
  ssd_loss::set_num_threads(ssd_loss::kMaxThreads + 1);
  CHECK_EQ(ssd_loss::num_threads(), ssd_loss::kMaxThreads);
  ssd_loss::set_num_threads(0);
}
