#include "ssd_loss/parallel.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace ssd_loss {
namespace {

std::atomic<int> g_num_threads{0};  // 0 = not set by the user

int default_num_threads() {
  if (const char* env = std::getenv("PADDLE_SSD_OP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

// Worker threads kept between calls: starting and joining a thread costs some 25 us here, twice per
// training step (forward, backward), a few percent of a step at N=32 on two cores. One call at a
// time uses the pool (a concurrent or nested call starts threads of its own). Never destroyed:
// its workers just wait at exit. After fork() the child, which has none of the parent's threads,
// starts a new pool (the parent's is abandoned there, unused).
class Pool {
 public:
  // Calls task(w) for w in [0, workers): w = 0 on the calling thread, the others on pool threads;
  // returns when all are done. False, with nothing run, when the pool is busy.
  bool run(int workers, const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> call(call_mutex_, std::try_to_lock);
    if (!call.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (; started_ < workers - 1; ++started_) {
        std::thread([this, index = started_ + 1] { work(index); }).detach();
      }
      task_ = &task;
      active_ = workers;
      pending_ = workers - 1;
      ++generation_;
    }
    wake_.notify_all();
    task(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    task_ = nullptr;
    return true;
  }

 private:
  void work(int index) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (index >= active_) continue;
        task = task_;
      }
      (*task)(index);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex call_mutex_;  // held for a whole call
  std::mutex mutex_;       // guards the fields below
  std::condition_variable wake_, done_;
  int started_ = 0;  // pool threads, with indices 1 .. started_
  const std::function<void(int)>* task_ = nullptr;
  int active_ = 0;   // workers of the current call, the caller included
  int pending_ = 0;  // pool workers of the current call not yet done
  uint64_t generation_ = 0;
};

std::atomic<Pool*> g_pool{nullptr};

void abandon_pool_in_child() { g_pool.store(nullptr); }

Pool& pool() {
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, abandon_pool_in_child);
    return true;
  }();
  (void)registered;
  Pool* p = g_pool.load();
  if (!p) {
    Pool* fresh = new Pool;
    if (g_pool.compare_exchange_strong(p, fresh)) p = fresh;
    else delete fresh;  // another thread installed one first
  }
  return *p;
}

}  // namespace

int num_threads() {
  const int n = g_num_threads.load();
  return n > 0 ? n : default_num_threads();
}

void set_num_threads(int n) { g_num_threads.store(n > 0 ? n : 0); }

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  const int64_t workers = std::min<int64_t>(num_threads(), n);
  if (workers <= 1) {
    fn(0, n, 0);
    return;
  }
  // Worker w takes the w-th of `workers` equal chunks: the split depends on n and the thread
  // count only (each image is computed by one thread, whichever it is).
  const int64_t chunk = (n + workers - 1) / workers;
  const std::function<void(int)> task = [&](int w) {
    const int64_t begin = w * chunk, end = std::min(n, begin + chunk);
    if (begin < end) fn(begin, end, w);
  };
  if (pool().run(static_cast<int>(workers), task)) return;
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  for (int w = 1; w < workers; ++w) threads.emplace_back(task, w);
  task(0);
  for (auto& t : threads) t.join();
}

}  // namespace ssd_loss
