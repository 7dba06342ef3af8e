#include "ssd_loss/parallel.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace ssd_loss {
namespace {

std::atomic<int> g_num_threads{0};  // 0 = not set by the user

int default_num_threads() {
  if (const char* env = std::getenv("PADDLE_SSD_OP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return std::min(n, kMaxThreads);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(std::min<unsigned>(hw, kMaxThreads)) : 1;
}

// Runs task(w) for every w in [first, last) and keeps the first exception thrown, so that none
// escapes a thread (an exception leaving a std::thread's function terminates the process).
class Tasks {
 public:
  explicit Tasks(const std::function<void(int)>& task) : task_(task) {}

  void run(int w) noexcept {
    try {
      task_(w);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
  // On the calling thread, once every task has run.
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  const std::function<void(int)>& task_;
  std::mutex mutex_;
  std::exception_ptr error_;
};

// Worker threads kept between calls: starting and joining a thread costs some 25 us here, twice per
// training step (forward, backward), a few percent of a step at N=32 on two cores. One call at a
// time uses the pool (a concurrent or nested call starts threads of its own). Never destroyed:
// its workers just wait at exit. After fork() the child, which has none of the parent's threads,
// starts a new pool (the parent's is abandoned there, unused).
//
// Where no thread can be started (a pids limit, RLIMIT_NPROC, no memory for a stack), the calling
// thread runs the tasks the missing threads would have run: same chunks, so the same bits.
class Pool {
 public:
  // Calls tasks.run(w) for w in [0, workers): on the calling thread and on pool threads; returns
  // when all are done. False, with nothing run, when the pool is busy.
  bool run(int workers, Tasks& tasks) {
    std::unique_lock<std::mutex> call(call_mutex_, std::try_to_lock);
    if (!call.owns_lock()) return false;
    int helpers;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      start_threads(workers - 1);
      helpers = std::min<int>(workers - 1, static_cast<int>(threads_.size()));
      tasks_ = &tasks;
      active_ = helpers + 1;
      pending_ = helpers;
      ++generation_;
    }
    wake_.notify_all();
    tasks.run(0);
    for (int w = helpers + 1; w < workers; ++w) tasks.run(w);  // threads that could not start
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    tasks_ = nullptr;
    active_ = 0;
    return true;
  }

  // Ends the pool threads beyond the first `keep` (after set_num_threads lowered the count), so a
  // large count once set does not hold its threads for the life of the process.
  void shrink(int keep) {
    std::lock_guard<std::mutex> call(call_mutex_);  // waits for a running call
    std::vector<std::thread> leaving;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (static_cast<int>(threads_.size()) <= keep) return;
      keep_ = keep;
      leaving.assign(std::make_move_iterator(threads_.begin() + keep),
                     std::make_move_iterator(threads_.end()));
      threads_.resize(keep);
      active_ = 0;  // this wake-up carries no task
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : leaving) t.join();
    std::lock_guard<std::mutex> lock(mutex_);
    keep_ = kMaxThreads;
  }

 private:
  // Under mutex_. Starts threads up to `count`; stops at the first that cannot be started.
  void start_threads(int count) {
    while (static_cast<int>(threads_.size()) < count) {
      const int index = static_cast<int>(threads_.size()) + 1;
      try {
        threads_.emplace_back([this, index] { work(index); });
      } catch (const std::system_error&) {
        return;
      }
    }
  }

  void work(int index) {
    uint64_t seen = 0;
    for (;;) {
      Tasks* tasks;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (index > keep_) return;
        if (index >= active_) continue;
        tasks = tasks_;
      }
      tasks->run(index);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex call_mutex_;  // held for a whole call, and while shrinking
  std::mutex mutex_;       // guards the fields below
  std::condition_variable wake_, done_;
  std::vector<std::thread> threads_;  // thread i - 1 runs the tasks of worker index i
  int keep_ = kMaxThreads;            // threads with a larger index end at their next wake-up
  Tasks* tasks_ = nullptr;
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

// Without the pool (it is busy): threads of this call only, joined before returning.
void run_on_own_threads(int workers, Tasks& tasks) {
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  int w = 1;
  for (; w < workers; ++w) {
    try {
      threads.emplace_back([&tasks, w] { tasks.run(w); });
    } catch (const std::system_error&) {
      break;
    }
  }
  tasks.run(0);
  for (; w < workers; ++w) tasks.run(w);  // threads that could not start
  for (auto& t : threads) t.join();
}

}  // namespace

int num_threads() {
  const int n = g_num_threads.load();
  return n > 0 ? n : default_num_threads();
}

void set_num_threads(int n) {
  g_num_threads.store(n > 0 ? std::min(n, kMaxThreads) : 0);
  if (Pool* p = g_pool.load()) p->shrink(num_threads() - 1);
}

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
  Tasks tasks(task);
  if (!pool().run(static_cast<int>(workers), tasks)) {
    run_on_own_threads(static_cast<int>(workers), tasks);
  }
  tasks.rethrow();
}

}  // namespace ssd_loss
