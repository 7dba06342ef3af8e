// Host emulation of the few CUDA features src/cuda uses, to check the kernels' LOGIC without a GPU
// (tests/gpu/emu/build.sh): kernels are compiled by the host C++ compiler, each block runs as
// blockDim.x cooperative fibers (ucontext) on the calling thread, __syncthreads and the *_sync
// warp intrinsics are barriers over the block / warp, blocks run one after another (so __shared__
// is a function-local static), and "device memory" is host memory filled with 0xFF bytes.
//
// What it checks: indexing, tie rules, reductions, the radix select, barrier placement (a barrier
// or shuffle not reached by every thread is reported as a deadlock; EMU_SCHED=reverse|random runs
// the fibers between barriers in another order, so a missing barrier changes results).
// What it cannot check: the CUDA memory model and real concurrency inside a warp, libdevice math
// (here log/exp are glibc's), --fmad=false (here -ffp-contract=off), performance, launch limits.
#pragma once

#include <ucontext.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

typedef int cudaError_t;
enum : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
};
typedef struct CUstream_st* cudaStream_t;
enum cudaMemcpyKind {
  cudaMemcpyHostToHost,
  cudaMemcpyHostToDevice,
  cudaMemcpyDeviceToHost,
  cudaMemcpyDeviceToDevice
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
};
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

namespace emu {

struct Barrier {
  int parties = 0, arrived = 0;
  unsigned long generation = 0;
};
struct Fiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
  Barrier* waiting = nullptr;
  unsigned long wait_gen = 0;
  uint3 tid;
};
struct Warp {
  Barrier bar;
  alignas(8) unsigned char buf[32][8];
};
struct Block {
  Barrier bar;
  std::vector<Warp> warps;
};
struct LaunchBase {
  virtual void run() = 0;
  virtual ~LaunchBase() = default;
};
template <typename K, typename... Args>
struct Launch : LaunchBase {
  K kernel;
  std::tuple<Args...> args;
  explicit Launch(K k, Args... a) : kernel(k), args(a...) {}
  void run() override { std::apply(kernel, args); }
};

inline thread_local Block* tl_block = nullptr;
inline thread_local Fiber* tl_fiber = nullptr;
inline thread_local LaunchBase* tl_launch = nullptr;
inline thread_local ucontext_t tl_scheduler;
inline thread_local int tl_last_error = cudaSuccess;

// Waits until all parties of `b` arrived (the last one to arrive goes on without switching).
inline void arrive(Barrier& b) {
  if (++b.arrived == b.parties) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  tl_fiber->waiting = &b;
  tl_fiber->wait_gen = b.generation;
  swapcontext(&tl_fiber->ctx, &tl_scheduler);
}

// Every lane of the warp publishes v, then reads the value of lane src_of_lane(lane).
template <typename V, typename F>
V exchange(V v, F src_of_lane) {
  static_assert(sizeof(V) <= 8, "a shuffle moves at most 8 bytes");
  const int lane = threadIdx.x % 32;
  Warp& w = tl_block->warps[threadIdx.x / 32];
  std::memcpy(w.buf[lane], &v, sizeof v);
  arrive(w.bar);
  V r;
  std::memcpy(&r, w.buf[src_of_lane(lane)], sizeof r);
  arrive(w.bar);
  return r;
}

inline void fiber_main() {
  tl_launch->run();
  tl_fiber->done = true;
  swapcontext(&tl_fiber->ctx, &tl_scheduler);
}

inline unsigned long long next_random() {
  static thread_local unsigned long long s = 88172645463325252ull;
  s ^= s << 13, s ^= s >> 7, s ^= s << 17;
  return s;
}

template <typename K, typename... Args>
void launch(unsigned grid, unsigned block, size_t /*dynamic shared memory*/, cudaStream_t,
            K kernel, Args... args) {
  if (block == 0 || block % 32 != 0 || block > 1024 || grid == 0) {
    tl_last_error = cudaErrorInvalidValue;
    return;
  }
  Launch<K, Args...> launch_args(kernel, args...);
  tl_launch = &launch_args;
  static thread_local std::vector<Fiber> fibers(1024);
  const char* sched = std::getenv("EMU_SCHED");
  const int mode = !sched ? 0 : (std::strcmp(sched, "reverse") == 0 ? 1 :
                                 std::strcmp(sched, "random") == 0 ? 2 : 0);
  blockDim = dim3{block, 1, 1};
  gridDim = dim3{grid, 1, 1};
  std::vector<unsigned> order(block);
  for (unsigned b = 0; b < grid; ++b) {
    Block ctx;
    ctx.bar.parties = static_cast<int>(block);
    ctx.warps.resize(block / 32);
    for (auto& w : ctx.warps) w.bar.parties = 32;
    tl_block = &ctx;
    blockIdx = uint3{b, 0, 0};
    for (unsigned t = 0; t < block; ++t) {
      Fiber& f = fibers[t];
      if (f.stack.empty()) f.stack.resize(256 * 1024);
      f.done = false;
      f.waiting = nullptr;
      f.tid = uint3{t, 0, 0};
      getcontext(&f.ctx);
      f.ctx.uc_stack.ss_sp = f.stack.data();
      f.ctx.uc_stack.ss_size = f.stack.size();
      f.ctx.uc_link = nullptr;
      makecontext(&f.ctx, fiber_main, 0);
    }
    for (;;) {
      for (unsigned t = 0; t < block; ++t) order[t] = mode == 1 ? block - 1 - t : t;
      if (mode == 2) {
        for (unsigned t = block - 1; t > 0; --t) std::swap(order[t], order[next_random() % (t + 1)]);
      }
      bool all_done = true, progressed = false;
      for (unsigned k = 0; k < block; ++k) {
        Fiber& f = fibers[order[k]];
        if (f.done) continue;
        all_done = false;
        if (f.waiting && f.waiting->generation == f.wait_gen) continue;  // still blocked
        f.waiting = nullptr;
        tl_fiber = &f;
        threadIdx = f.tid;
        swapcontext(&tl_scheduler, &f.ctx);
        progressed = true;
      }
      if (all_done) break;
      if (!progressed) {
        std::fprintf(stderr, "cuda_emu: deadlock in block %u: a __syncthreads or warp shuffle "
                     "is not reached by every thread\n", b);
        std::abort();
      }
    }
  }
  tl_block = nullptr;
  tl_launch = nullptr;
}

}  // namespace emu

inline void __syncthreads() { emu::arrive(emu::tl_block->bar); }

template <typename V>
V __shfl_sync(unsigned, V v, int src, int width = 32) {
  return emu::exchange(v, [&](int lane) { return (lane & ~(width - 1)) + (src % width); });
}
template <typename V>
V __shfl_xor_sync(unsigned, V v, int mask, int width = 32) {
  return emu::exchange(v, [&](int lane) {
    const int s = lane ^ mask;
    return (s & ~(width - 1)) == (lane & ~(width - 1)) ? s : lane;
  });
}
template <typename V>
V __shfl_down_sync(unsigned, V v, unsigned delta, int width = 32) {
  return emu::exchange(v, [&](int lane) {
    const int s = lane + static_cast<int>(delta);
    return (s & ~(width - 1)) == (lane & ~(width - 1)) ? s : lane;
  });
}
template <typename V>
V __shfl_up_sync(unsigned, V v, unsigned delta, int width = 32) {
  return emu::exchange(v, [&](int lane) {
    const int s = lane - static_cast<int>(delta);
    return s >= 0 && (s & ~(width - 1)) == (lane & ~(width - 1)) ? s : lane;
  });
}
inline unsigned __ballot_sync(unsigned, int pred) {
  unsigned mask = 0;
  for (int l = 0; l < 32; ++l) {
    if (emu::exchange(pred ? 1 : 0, [&](int) { return l; })) mask |= 1u << l;
  }
  return mask;
}
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}
inline double __longlong_as_double(long long x) {
  double d;
  std::memcpy(&d, &x, sizeof d);
  return d;
}
inline long long __double_as_longlong(double d) {
  long long x;
  std::memcpy(&x, &d, sizeof x);
  return x;
}

inline cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes ? bytes : 1);
  if (!*p) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xFF, bytes);  // NaN / -1 patterns: reads of never-written outputs show up
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaGetLastError() {
  const int e = emu::tl_last_error;
  emu::tl_last_error = cudaSuccess;
  return e;
}
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaErrorInvalidValue ? "cudaErrorInvalidValue" : "cudaError (emulated)";
}
inline const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
// Streams and events: kernels run synchronously at launch, so an event is the host time of its
// record (what the GPU benchmark's timing function needs to run here at all).
inline cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
typedef std::chrono::steady_clock::time_point* cudaEvent_t;
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new std::chrono::steady_clock::time_point();
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = nullptr) {
  *e = std::chrono::steady_clock::now();
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(*end - *start).count();
  return cudaSuccess;
}
