// Thread control of the CPU kernels. Work is split by image, and every image's result is computed
// by one thread in a fixed order, so outputs are bit-identical for any thread count.
#pragma once

#include <cstdint>
#include <functional>

namespace ssd_loss {

// The largest thread count; larger requests are capped to it.
constexpr int kMaxThreads = 1024;

// Threads used by the CPU kernels: set_num_threads(n > 0) overrides; otherwise the environment
// variable PADDLE_SSD_OP_NUM_THREADS, otherwise the machine's hardware threads. Lowering the count
// ends the kept threads beyond it.
int num_threads();
void set_num_threads(int n);

// Calls fn(begin, end, worker) over disjoint ranges covering [0, n), on up to num_threads() threads.
// Threads that cannot be started leave their ranges to the calling thread (same ranges, same
// results). An exception thrown by fn is rethrown on the calling thread once every range is done
// (the first one thrown, if several are).
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

}  // namespace ssd_loss
